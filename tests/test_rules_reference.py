"""The config-driven rulebook against an independent, hand-written reading of METHOD.md §4.

`reference_points` below is METHOD.md §4 typed in as plain if/else, without looking at
configs/scoring.yaml. Hypothesis draws indicator rows (values clustered on the band
boundaries, NaNs for optional layers) and the two must agree on every item, every
rating and every score; ratings must stay in {1,2,3} and scores in 3..9.
"""

from __future__ import annotations

import math

import hypothesis.strategies as st
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings

from pipeline.indicators.catalog import INDICATORS
from pipeline.scoring.points import pts_column, score_table
from pipeline.scoring.rulebook import FUNCTIONS, SCALES, load_rulebook

BOOK = load_rulebook()


def nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def reference_points(r: dict) -> dict[str, int]:
    """METHOD.md §4, item by item."""
    p: dict[str, int] = {}
    d = r["depression_share"]
    p["WQ-S1"] = 0 if nan(d) else 3 if d >= 0.5 else 2 if d >= 0.1 else 1 if d > 0 else 0
    if not nan(r["clay_organic_share"]):
        p["WQ-S2"] = 4 if r["clay_organic_share"] >= 0.5 else 0
    elif not nan(r["mean_slope_deg"]):
        s = r["mean_slope_deg"]
        p["WQ-S2"] = 4 if s <= 2 else 2 if s <= 5 else 0
    else:
        p["WQ-S2"] = 0
    v = r["persistent_veg_share"]
    p["WQ-S3"] = 0 if nan(v) else 5 if v > 0.95 else 3 if v > 0.5 else 1 if v > 0.1 else 0
    w = r["wetland_water_share"]
    p["WQ-S4"] = 0 if nan(w) else 4 if w > 0.5 else 2 if w > 0.25 else 0
    gt = lambda x, t: (not nan(x)) and x > t  # noqa: E731
    yes = lambda x: (not nan(x)) and bool(x)  # noqa: E731
    p["WQ-L1"] = int(gt(r["near_pollutant_share"], 0.10))
    p["WQ-L2"] = int(gt(r["cb_intensive_share"], 0.25))
    p["WQ-L3"] = int((not nan(r["cb_area_ratio"])) and r["cb_area_ratio"] >= 10)
    p["WQ-L4"] = int(yes(r["point_source_near"]))
    p["WQ-V1"] = int((not nan(r["path_wq_target_km"])) and r["path_wq_target_km"] <= 1.6)
    p["WQ-V2"] = int(yes(r["path_failing_section"]))
    p["WQ-V3"] = 2 * yes(r["in_wq_plan"])
    p["HY-S1"] = 0 if nan(d) else 4 if d >= 0.5 else 2 if d >= 0.1 else 1 if d > 0 else 0
    z = r["mean_depression_depth_m"]
    p["HY-S2"] = 0 if nan(z) else 7 if z >= 0.9 else 5 if z >= 0.6 else 3 if z >= 0.15 else 0
    c = r["cb_area_ratio"]
    p["HY-S3"] = 0 if nan(c) else 5 if c < 10 else 3 if c <= 100 else 0
    n = r["natural_share"]
    p["HY-S4"] = 0 if nan(n) else 2 if n > 0.8 else 1 if n > 0.5 else 0
    p["HY-L1"] = int(gt(r["near_runoff_share"], 0.10))
    p["HY-L2"] = int(gt(r["cb_intensive_share"], 0.25))
    p["HY-L3"] = int(gt(r["cb_impervious_share"], 0.10))
    a5 = r["path_assets_share_5km"]
    p["HY-V1"] = 0 if nan(a5) else 2 if a5 >= 0.05 else 1 if yes(r["path_assets_any_20km"]) else 0
    p["HY-V2"] = 2 * yes(r["in_flood_plan"])
    k = r["n_structure_classes"]
    p["HB-S1"] = 0 if nan(k) else 4 if k >= 4 else 2 if k == 3 else 1 if k == 2 else 0
    h = r["habitat_quality"]
    p["HB-S2"] = 0 if nan(h) else 3 if h >= 60 else 2 if h >= 40 else 1 if h >= 20 else 0
    sh = r["shannon_natural"]
    p["HB-S3"] = 0 if nan(sh) else 3 if sh >= 1.2 else 2 if sh >= 0.8 else 1 if sh >= 0.4 else 0
    lp = r["largest_patch_ha"]
    p["HB-S4"] = 0 if nan(lp) else 3 if lp >= 10 else 2 if lp >= 2 else 1 if lp >= 0.5 else 0
    sf = r["n_special_features"]
    p["HB-S5"] = 0 if nan(sf) else min(int(sf), 5)
    ac = r["ring_accessible_pct"]
    p["HB-L1"] = 0 if nan(ac) else 3 if ac > 33.3 else 2 if ac >= 20 else 1 if ac >= 10 else 0
    un, npch = r["ring_undisturbed_pct"], r["ring_undisturbed_patches"]
    if nan(un) or un < 10:
        p["HB-L2"] = 0
    elif un > 50:
        p["HB-L2"] = 3
    else:
        p["HB-L2"] = 2 if (not nan(npch)) and npch <= 3 else 1
    p["HB-L3"] = -2 if gt(r["ring_high_intensity_share"], 0.5) else 0
    p["HB-L4"] = int((not nan(r["site_dpc_pct"])) and r["site_dpc_pct"] >= 0.5)
    p["HB-L5"] = int(gt(r["riparian_natural_share"], 0.75))
    inside, near = r["protected_inside"], r["protected_within_100m"]
    if nan(inside):
        p["HB-V1"] = 0
    elif inside or ((not nan(near)) and near >= 3):
        p["HB-V1"] = 2
    else:
        p["HB-V1"] = 1 if (not nan(near)) and near >= 1 else 0
    p["HB-V2"] = 2 * yes(r["species_within_1km"])
    p["HB-V3"] = 2 * yes(r["in_habitat_plan"])
    return p


def reference_ratings(p: dict[str, int]) -> dict[str, int]:
    def s(prefix):
        return sum(v for k, v in p.items() if k.startswith(prefix))

    def band(x, high, med):
        return 3 if x >= high else 2 if x >= med else 1

    out = {
        "WQ_S": band(s("WQ-S"), 12, 6), "WQ_L": band(s("WQ-L"), 3, 1), "WQ_V": band(s("WQ-V"), 2, 1),
        "HY_S": band(s("HY-S"), 12, 6), "HY_L": band(s("HY-L"), 3, 1), "HY_V": band(s("HY-V"), 2, 1),
        "HB_S": band(s("HB-S"), 15, 7), "HB_L": band(s("HB-L"), 4, 1),
        "HB_V": band(min(s("HB-V"), 2), 2, 1),
    }
    for f in ("WQ", "HY", "HB"):
        out[f] = out[f + "_S"] + out[f + "_L"] + out[f + "_V"]
        for sc in "SLV":
            out[f"{f}_{sc}_pts"] = s(f"{f}-{sc}")
    out["HB_V_pts"] = min(out["HB_V_pts"], 2)  # value points summed and capped at 2
    return out


# Values near each boundary of its indicator (plus anywhere in range, plus NaN).
EDGES = {
    "fraction": [0.0, 1e-9, 0.05, 0.0999, 0.1, 0.1001, 0.25, 0.2501, 0.5, 0.5001, 0.75, 0.7501,
                 0.8, 0.8001, 0.95, 0.9501, 1.0],
    "percent": [0.0, 0.4999, 0.5, 9.99, 10.0, 19.99, 20.0, 33.3, 33.31, 50.0, 50.01, 100.0],
    "count": [0, 1, 2, 3, 4, 5, 6, 9],
    "degree": [0.0, 2.0, 2.0001, 5.0, 5.0001, 30.0],
    "m": [0.0, 0.1499, 0.15, 0.5999, 0.6, 0.8999, 0.9, 3.0],
    "ratio": [0.0, 9.999, 10.0, 100.0, 100.001, 1e4],
    "km": [0.0, 1.6, 1.6001, 30.0],
    "ha": [0.0, 0.4999, 0.5, 1.999, 2.0, 9.999, 10.0, 500.0],
    "index 0-100": [0.0, 19.999, 20.0, 39.999, 40.0, 59.999, 60.0, 100.0],
    "nats": [0.0, 0.3999, 0.4, 0.7999, 0.8, 1.1999, 1.2, 1.6],
}
HIGH = {"fraction": 1.0, "percent": 100.0, "degree": 60.0, "m": 5.0, "ratio": 1e5, "km": 50.0,
        "ha": 1e4, "index 0-100": 100.0, "nats": 2.2}


def _value(unit: str):
    if unit == "bool":
        return st.sampled_from([True, False])
    if unit == "count":
        return st.sampled_from(EDGES["count"]).map(float)
    return st.one_of(st.sampled_from(EDGES[unit]),
                     st.floats(0.0, HIGH[unit], allow_nan=False, allow_infinity=False))


@st.composite
def indicator_rows(draw):
    row = {}
    for ind in INDICATORS:
        v = draw(_value(ind.unit))
        if ind.source in ("layer", "site") or ind.name in ("riparian_natural_share", "mean_slope_deg"):
            if draw(st.integers(0, 4)) == 0:  # optional layer missing
                v = math.nan
        row[ind.name] = v
    return row


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(indicator_rows(), min_size=1, max_size=8))
def test_rulebook_equals_reference_reading_of_method(rows):
    df = pd.DataFrame([{"site_id": f"s{i}", "vintage": "v", "year": 2020, **r}
                       for i, r in enumerate(rows)])
    table, trace = score_table(df, BOOK)
    table = table.set_index("site_id")
    for i, r in enumerate(rows):
        got = table.loc[f"s{i}"]
        ref = reference_points(r)
        for rule in BOOK.rules:
            assert int(got[pts_column(rule.id)]) == ref[rule.id], (rule.id, r)
        ratings = reference_ratings(ref)
        for key, want in ratings.items():
            assert int(got[key]) == want, (key, r)
        for f in FUNCTIONS:
            assert 3 <= int(got[f]) <= 9
            for s in SCALES:
                assert int(got[f"{f}_{s}"]) in (1, 2, 3)
        assert int(got["total"]) == ratings["WQ"] + ratings["HY"] + ratings["HB"]
    assert len(trace) == len(rows) * len(BOOK.rules)


def test_reference_agrees_on_a_hand_checked_row():
    """Guard the reference itself: a row worked by hand from METHOD.md §4."""
    r = {ind.name: 0.0 for ind in INDICATORS}
    r.update(depression_share=0.3, clay_organic_share=math.nan, mean_slope_deg=1.0,
             persistent_veg_share=0.6, wetland_water_share=0.3, cb_area_ratio=50.0,
             mean_depression_depth_m=0.7, natural_share=0.9, n_structure_classes=3,
             habitat_quality=45.0, ring_undisturbed_pct=30.0, ring_undisturbed_patches=5,
             protected_within_100m=2, riparian_natural_share=math.nan,
             path_wq_target_km=math.nan)
    p = reference_points(r)
    # WQ S: 2 (>=10 %) + 4 (slope <= 2) + 3 (>50 %) + 2 (>25 %) = 11 -> M
    assert [p[k] for k in ("WQ-S1", "WQ-S2", "WQ-S3", "WQ-S4")] == [2, 4, 3, 2]
    # HY S: 2 + 5 (depth >= 0.6) + 3 (ratio 10-100) + 2 (>80 %) = 12 -> H
    assert [p[k] for k in ("HY-S1", "HY-S2", "HY-S3", "HY-S4")] == [2, 5, 3, 2]
    # HB: S1 3 classes -> 2; S2 45 -> 2; L2 30 % in 5 patches -> 1; V1 2 areas -> 1
    assert (p["HB-S1"], p["HB-S2"], p["HB-L2"], p["HB-V1"]) == (2, 2, 1, 1)
    ratings = reference_ratings(p)
    assert (ratings["WQ_S"], ratings["HY_S"], ratings["HB_S"]) == (2, 3, 1)
    df = pd.DataFrame([{"site_id": "x", "vintage": "v", "year": 2020, **r}])
    table, _ = score_table(df, BOOK)
    assert int(table["WQ_S_pts"].iloc[0]) == 11 and int(table["HY_S_pts"].iloc[0]) == 12


@pytest.mark.parametrize("seed", [0, 1])
def test_random_rows_order_independent(seed):
    """Scoring a shuffled table gives the same table (rows are sorted by site)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(30):
        r = {"site_id": f"s{i:02d}", "vintage": "v", "year": 2020}
        for ind in INDICATORS:
            r[ind.name] = bool(rng.integers(2)) if ind.unit == "bool" else float(
                rng.choice(EDGES.get(ind.unit, [0.0, 1.0])))
        rows.append(r)
    df = pd.DataFrame(rows)
    a, ta = score_table(df, BOOK)
    b, tb = score_table(df.sample(frac=1.0, random_state=seed), BOOK)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(ta, tb)
