"""Credits, debits, ledger and project totals (METHOD.md §6, §7), end to end via score_sites."""

from __future__ import annotations

import copy
import datetime as dt
import math

import hypothesis.strategies as st
import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from pipeline.errors import InputDataError, ValidationFailed
from pipeline.indicators.catalog import INDICATORS
from pipeline.scoring import score_sites
from pipeline.scoring.credits import CREDIT_COLUMNS, compute_credits
from pipeline.scoring.ledger import NET_LOSS, NO_NET_LOSS, basin_ledger, holds, project_totals
from pipeline.scoring.points import score_table
from pipeline.scoring.rulebook import DEFAULT_PATH, from_dict, load_rulebook

NAN = math.nan
BOOK = load_rulebook()
WHEN = dt.date(2025, 6, 30)


def zero_row(site_id="s1", vintage="base", year=2017, **overrides) -> dict:
    """Scores WQ 4 (only WQ L is Medium, from WQ-L3: CB ratio 500 >= 10), HY 3, HB 3."""
    row = {"site_id": site_id, "vintage": vintage, "year": year}
    for ind in INDICATORS:
        row[ind.name] = False if ind.unit == "bool" else 0.0
    row.update(mean_slope_deg=10.0, clay_organic_share=NAN, cb_area_ha=1000.0,
               cb_area_ratio=500.0, riparian_natural_share=NAN, path_wq_target_km=NAN,
               area_ha=2.0)
    row.update(overrides)
    return row


# Ratings WQ (M,H,L), HY (L,H,L), HB (L,M,L) - the Washington worked check, METHOD.md §7.
WA_CHECK = dict(
    persistent_veg_share=0.6,     # WQ-S3 > 50 % -> 3
    wetland_water_share=0.3,      # WQ-S4 > 25 % -> 2
    mean_slope_deg=4.0,           # WQ-S2 (no soil) <= 5 deg -> 2; WQ S = 7 -> M
    near_pollutant_share=0.2,     # WQ-L1 1
    cb_intensive_share=0.3,       # WQ-L2 1, HY-L2 1
    # WQ-L3 1 (ratio 500) -> WQ L = 3 -> H; WQ V 0 -> L
    near_runoff_share=0.2,        # HY-L1 1
    cb_impervious_share=0.15,     # HY-L3 1 -> HY L = 3 -> H
    natural_share=0.6,            # HY-S4 1 (HY-S3 ratio 500 > 100 -> 0) -> HY S = 1 -> L
    n_structure_classes=2,        # HB-S1 1
    habitat_quality=30.0,         # HB-S2 1
    shannon_natural=0.5,          # HB-S3 1
    largest_patch_ha=1.0,         # HB-S4 1 -> HB S = 4 -> L
    ring_accessible_pct=25.0,     # HB-L1 2 -> HB L = 2 -> M
)

# pre (4,4,3): the zero row plus HY-L1 1 (HY L = M)
PRE = dict(near_runoff_share=0.2)
# post (7,6,7)
POST = dict(
    persistent_veg_share=0.6, wetland_water_share=0.3, mean_slope_deg=4.0,   # WQ S 7 M
    near_pollutant_share=0.2, cb_intensive_share=0.3,                         # WQ L 3 H
    path_failing_section=True,                                                # WQ V 1 M -> WQ 7
    near_runoff_share=0.2, cb_impervious_share=0.15,                          # HY L 3 H
    path_assets_share_5km=0.01, path_assets_any_20km=True,                    # HY V 1 M -> HY 6
    n_structure_classes=4, habitat_quality=45.0, shannon_natural=0.5,         # HB S 4+2+1 = 7 M
    ring_accessible_pct=40.0, ring_undisturbed_pct=30.0,                      # HB L 3 + 2
    ring_undisturbed_patches=2,                                               #  = 5 H
    protected_within_100m=1,                                                  # HB V 1 M -> HB 7
)


def site_table(rows: list[dict]) -> pd.DataFrame:
    base = {"name": "", "kind": "restoration", "project_type": "wetland_restoration",
            "construction_start": pd.Timestamp("2017-03-01"),
            "completion": pd.Timestamp("2018-10-01"), "area_ha": 2.0}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_washington_worked_check_ratings():
    table, _ = score_table(pd.DataFrame([zero_row(**WA_CHECK)]), BOOK)
    t = table.iloc[0]
    assert [t["WQ_S"], t["WQ_L"], t["WQ_V"]] == [2, 3, 1]   # M, H, L
    assert [t["HY_S"], t["HY_L"], t["HY_V"]] == [1, 3, 1]   # L, H, L
    assert [t["HB_S"], t["HB_L"], t["HB_V"]] == [1, 2, 1]   # L, M, L
    assert (t["WQ"], t["HY"], t["HB"], t["total"]) == (6, 5, 4, 15)


def _wa_book():
    data = copy.deepcopy(yaml.safe_load(DEFAULT_PATH.read_text(encoding="utf-8")))
    data["risk_factors"]["by_project_type"] = {
        "young_forest": {"value": 0.5, "source": "WA worked example", "assumption": False}}
    return from_dict(data)


def test_washington_worked_check_credits():
    ind = pd.DataFrame([zero_row("wa", "base", 2017, **PRE), zero_row("wa", "now", 2025, **POST)])
    # completed 2019-06-01, assessed 2025-06-30: >= 5 years -> long_term, TF = 1
    sites = site_table([{"site_id": "wa", "project_id": "P", "project_type": "young_forest",
                         "construction_start": dt.date(2018, 4, 1),
                         "completion": dt.date(2019, 6, 1), "area_ha": 2.0}])
    res = score_sites(ind, sites, "base", "now", WHEN, _wa_book())
    c = res.credits.set_index("function")
    assert list(c.loc[["WQ", "HY", "HB"], "score_pre"]) == [4, 4, 3]
    assert list(c.loc[["WQ", "HY", "HB"], "score_post"]) == [7, 6, 7]
    assert (c["tf"] == 1.0).all() and (c["rf"] == 0.5).all() and (c["stage"] == "long_term").all()
    # credits = 2.0 x (3, 2, 4) x 1 x 0.5 = (3.0, 2.0, 4.0)
    assert list(c.loc[["WQ", "HY", "HB"], "credit"]) == pytest.approx([3.0, 2.0, 4.0])
    assert list(c.loc[["WQ", "HY", "HB"], "stock_pre"]) == pytest.approx([8.0, 8.0, 6.0])
    assert list(c.loc[["WQ", "HY", "HB"], "stock_post"]) == pytest.approx([14.0, 12.0, 14.0])
    assert (c["debit"] == 0).all() and c["tlf"].isna().all()
    assert list(res.credits.columns[:17]) == ["project_id", "site_id", "kind", "project_type",
                                              "function", "area_ha", "score_pre", "score_post",
                                              "stock_pre", "stock_post", "delta_stock", "stage",
                                              "tf", "rf", "tlf", "credit", "debit"]
    assert res.project_totals.loc[0, "credit_total"] == pytest.approx(9.0)
    assert res.verdict == NO_NET_LOSS


def _scores(rows):
    """A site_scores stand-in with given function scores: [(site, vintage, WQ, HY, HB)]."""
    return pd.DataFrame([{"site_id": s, "vintage": v, "WQ": a, "HY": b, "HB": c, "area_ha": NAN}
                         for s, v, a, b, c in rows])


def test_time_factor_scales_credits():
    sc = _scores([("r", "base", 4, 4, 3), ("r", "now", 7, 6, 7)])
    sites = site_table([{"site_id": "r", "project_id": "P", "completion": pd.NaT}])
    out = compute_credits(sc, sites, "base", "now", WHEN, BOOK).set_index("function")
    # under construction: 2.0 ha x (3, 2, 4) x 0.14 x RF 1
    assert (out["stage"] == "under_construction").all()
    assert list(out["credit"]) == pytest.approx([0.84, 0.56, 1.12])


def test_impact_debits_use_tlf_not_tf():
    sc = _scores([("d", "base", 7, 6, 7), ("d", "now", 4, 4, 3)])
    for comp, tlf in (("concurrent", 1.5), ("delayed", 3.0), (None, 1.5)):
        sites = site_table([{"site_id": "d", "project_id": "Dev", "kind": "impact",
                             "completion": pd.NaT, "area_ha": 1.5, "compensation": comp}])
        out = compute_credits(sc, sites, "base", "now", WHEN, BOOK).set_index("function")
        # 1.5 ha x (3, 2, 4) x TLF; under construction, yet TF is not applied to debits
        assert list(out["debit"]) == pytest.approx([1.5 * 3 * tlf, 1.5 * 2 * tlf, 1.5 * 4 * tlf])
        assert (out["credit"] == 0).all() and out["tf"].isna().all() and out["rf"].isna().all()
        assert (out["tlf"] == tlf).all() and (out["compensation"] == (comp or "concurrent")).all()


def test_negative_credit_kept_and_flagged():
    sc = _scores([("r", "base", 7, 6, 7), ("r", "now", 4, 6, 7)])
    sites = site_table([{"site_id": "r", "project_id": "P"}])
    out = compute_credits(sc, sites, "base", "now", WHEN, BOOK).set_index("function")
    # completed 2018-10-01 -> long_term by 2025-06-30: 2 x (4 - 7) x 1.0 = -6
    assert out.loc["WQ", "credit"] == pytest.approx(-6.0)
    assert out.loc["WQ", "flag"].startswith("negative credit")
    assert out.loc["HY", "flag"] == "" and out.loc["HY", "credit"] == 0.0
    led = basin_ledger(out.reset_index()).set_index("function")
    assert led.loc["WQ", "credits"] == pytest.approx(-6.0)
    assert led.loc["WQ", "verdict"] == NET_LOSS and led.loc["all", "verdict"] == NET_LOSS


def _credit_rows(values):
    """A credits table with given (function, credit, debit) rows."""
    return pd.DataFrame([{"project_id": p, "site_id": s, "function": f, "area_ha": 1.0,
                          "credit": c, "debit": d} for p, s, f, c, d in values])


def test_ledger_verdicts():
    # WQ: 3 credits vs 3 debits (equal -> holds); HY: 2 vs 1; HB: 4 vs 0
    rows = [("A", "r1", "WQ", 3.0, 0.0), ("A", "r1", "HY", 2.0, 0.0), ("A", "r1", "HB", 4.0, 0.0),
            ("B", "d1", "WQ", 0.0, 3.0), ("B", "d1", "HY", 0.0, 1.0), ("B", "d1", "HB", 0.0, 0.0)]
    led = basin_ledger(_credit_rows(rows)).set_index("function")
    assert list(led["verdict"]) == [NO_NET_LOSS] * 4
    assert led.loc["HY", "net"] == pytest.approx(1.0) and led.loc["all", "net"] == pytest.approx(5.0)
    # HB short by 0.5 while the total surplus is large: overall 'net loss'
    rows.append(("B", "d2", "HB", 0.0, 4.5))
    led = basin_ledger(_credit_rows(rows)).set_index("function")
    assert led.loc["HB", "verdict"] == NET_LOSS and led.loc["all", "verdict"] == NET_LOSS
    assert led.loc["WQ", "verdict"] == NO_NET_LOSS
    assert led.loc["all", "net"] == pytest.approx(0.5)   # sums positive, verdict still loss


def test_ledger_float_tie_is_equal():
    # 0.1 + 0.2 != 0.3 in floats; the tie must still count as credits >= debits
    assert 0.1 + 0.2 > 0.3 or 0.1 + 0.2 < 0.3
    assert holds(0.3, 0.1 + 0.2) and holds(0.1 + 0.2, 0.3)
    assert not holds(0.3, 0.3001)


def test_empty_basin_ledger():
    led = basin_ledger(pd.DataFrame(columns=list(CREDIT_COLUMNS)))
    assert list(led["verdict"]) == [NO_NET_LOSS] * 4 and (led["net"] == 0).all()
    assert project_totals(pd.DataFrame(columns=list(CREDIT_COLUMNS))).empty


def test_project_totals_sum_sites():
    rows = [("A", "r1", "WQ", 3.0, 0.0), ("A", "r1", "HY", 2.0, 0.0), ("A", "r1", "HB", 4.0, 0.0),
            ("A", "r2", "WQ", 1.0, 0.0), ("A", "r2", "HY", 0.5, 0.0), ("A", "r2", "HB", 0.0, 0.0),
            ("B", "d1", "WQ", 0.0, 2.0), ("B", "d1", "HY", 0.0, 1.0), ("B", "d1", "HB", 0.0, 0.5)]
    t = project_totals(_credit_rows(rows)).set_index("project_id")
    assert t.loc["A", "n_sites"] == 2 and t.loc["A", "area_ha"] == 2.0
    assert t.loc["A", "credit_WQ"] == 4.0 and t.loc["A", "credit_total"] == pytest.approx(10.5)
    assert t.loc["B", "debit_total"] == pytest.approx(3.5)
    assert t.loc["B", "net_total"] == pytest.approx(-3.5)


def _basin(n_sites: int, seed: int):
    rng = np.random.default_rng(seed)
    rows, sites = [], []
    for i in range(n_sites):
        sid = f"s{i:02d}"
        for vintage, year in (("base", 2016), ("now", 2024)):
            over = {}
            for ind in INDICATORS:
                if ind.unit == "bool":
                    over[ind.name] = bool(rng.integers(2))
                elif ind.unit == "count":
                    over[ind.name] = float(rng.integers(0, 7))
                elif ind.unit == "percent":
                    over[ind.name] = float(rng.uniform(0, 100))
                elif ind.unit == "fraction":
                    over[ind.name] = float(rng.uniform(0, 1))
                else:
                    over[ind.name] = float(rng.uniform(0, 30))
            rows.append(zero_row(sid, vintage, year, **over))
        start = dt.date(2015, 1, 1) + dt.timedelta(days=int(rng.integers(0, 3650)))
        sites.append({"site_id": sid, "project_id": f"P{i % 3}",
                      "kind": "impact" if i % 4 == 0 else "restoration",
                      "construction_start": start,
                      "completion": start + dt.timedelta(days=int(rng.integers(30, 900))),
                      "area_ha": float(rng.uniform(0.5, 20)),
                      "compensation": ["concurrent", "delayed", None][i % 3]})
    return pd.DataFrame(rows), site_table(sites)


@pytest.mark.parametrize("seed", [3, 4])
def test_results_independent_of_row_order(seed):
    ind, sites = _basin(12, seed)
    a = score_sites(ind, sites, "base", "now", WHEN, BOOK)
    b = score_sites(ind.sample(frac=1, random_state=seed), sites.sample(frac=1, random_state=seed + 1),
                    "base", "now", WHEN, BOOK)
    for name in ("site_scores", "credits", "ledger", "project_totals", "traces"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), obj=name)
    assert len(a.credits) == 12 * 3
    # the ledger is the sum of the table
    led = a.ledger.set_index("function")
    for f in ("WQ", "HY", "HB"):
        sel = a.credits["function"] == f
        assert led.loc[f, "credits"] == pytest.approx(a.credits.loc[sel, "credit"].sum())
        assert led.loc[f, "debits"] == pytest.approx(a.credits.loc[sel, "debit"].sum())
    assert a.project_totals["credit_total"].sum() == pytest.approx(a.credits["credit"].sum())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(1, 6),
       when=st.dates(dt.date(2014, 1, 1), dt.date(2035, 1, 1)))
def test_identical_pre_and_post_give_zero(seed, n, when):
    ind, sites = _basin(n, seed)
    pre = ind[ind["vintage"] == "base"]
    same = pd.concat([pre, pre.assign(vintage="now", year=2024)], ignore_index=True)
    res = score_sites(same, sites, "base", "now", when, BOOK)
    assert (res.credits["credit"] == 0).all() and (res.credits["debit"] == 0).all()
    assert (res.credits["delta_stock"] == 0).all() and (res.credits["flag"] == "").all()
    assert res.verdict == NO_NET_LOSS
    assert res.site_scores[["WQ", "HY", "HB"]].isin(range(3, 10)).all().all()


def test_input_errors():
    ind = pd.DataFrame([zero_row("a", "base"), zero_row("a", "now", 2024)])
    ok = site_table([{"site_id": "a", "project_id": "P"}])
    with pytest.raises(InputDataError, match="baseline vintage 'pre'"):
        score_sites(ind, ok, "pre", "now", WHEN, BOOK)
    with pytest.raises(InputDataError, match="no indicator row"):
        score_sites(ind, site_table([{"site_id": "b", "project_id": "P"}]), "base", "now", WHEN, BOOK)
    with pytest.raises(InputDataError, match="unknown site kind"):
        score_sites(ind, site_table([{"site_id": "a", "project_id": "P", "kind": "offset"}]),
                    "base", "now", WHEN, BOOK)
    with pytest.raises(InputDataError, match="no area_ha"):
        score_sites(ind.assign(area_ha=NAN), site_table([{"site_id": "a", "project_id": "P",
                                                          "area_ha": NAN}]),
                    "base", "now", WHEN, BOOK)
    with pytest.raises(ValidationFailed):   # duplicate id and bad compensation at once
        score_sites(ind, site_table([{"site_id": "a", "project_id": "P", "compensation": "later"},
                                     {"site_id": "a", "project_id": "P"}]),
                    "base", "now", WHEN, BOOK)
    with pytest.raises(InputDataError, match="lacks column"):
        score_sites(ind.drop(columns=["habitat_quality"]), ok, "base", "now", WHEN, BOOK)
    with pytest.raises(InputDataError, match="several rows"):
        score_sites(pd.concat([ind, ind]), ok, "base", "now", WHEN, BOOK)


def test_area_falls_back_to_indicator_area():
    ind = pd.DataFrame([zero_row("a", "base", area_ha=3.0),
                        zero_row("a", "now", 2024, area_ha=3.0, **POST)])
    res = score_sites(ind, site_table([{"site_id": "a", "project_id": "P", "area_ha": NAN}]),
                      "base", "now", WHEN, BOOK)
    assert (res.credits["area_ha"] == 3.0).all()
    # WQ 4 -> 7 on 3 ha, long_term: 9 credits
    assert res.credits.set_index("function").loc["WQ", "credit"] == pytest.approx(9.0)


def test_docs_list_every_output_column():
    """docs/outputs.md documents every column the tables carry."""
    from pathlib import Path

    from pipeline.scoring.ledger import LEDGER_COLUMNS
    from pipeline.scoring.points import TRACE_COLUMNS
    doc = (Path(__file__).resolve().parents[1] / "docs" / "outputs.md").read_text(encoding="utf-8")
    ind, sites = _basin(2, 0)
    res = score_sites(ind, sites, "base", "now", WHEN, BOOK)
    cols = (set(CREDIT_COLUMNS) | set(LEDGER_COLUMNS) | set(TRACE_COLUMNS)
            | set(res.project_totals.columns)
            | {c for c in res.site_scores.columns if c not in {i.name for i in INDICATORS}
               and not c.startswith("pts_") and not c.endswith("_pts")})
    undocumented = sorted(c for c in cols if f"`{c}`" not in doc)
    assert undocumented == []
    assert list(res.credits.columns) == list(CREDIT_COLUMNS)
    assert list(res.ledger.columns) == list(LEDGER_COLUMNS)
    assert list(res.traces.columns) == list(TRACE_COLUMNS)
