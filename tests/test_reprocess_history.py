"""History of credits over vintages (pipeline.history): hand-worked values and the chart."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from matplotlib.figure import Figure

from pipeline.history import HISTORY_COLUMNS, basin_history, history_figure, history_table
from pipeline.scoring.rulebook import load_rulebook

D = dt.date


def _scores() -> pd.DataFrame:
    # site R: restoration, 2 ha; site I: impact (road), 1 ha.
    rows = [
        ("R", "base", 4, 5, 3), ("R", "y2018", 6, 5, 5), ("R", "y2023", 7, 6, 7),
        ("I", "base", 8, 6, 7), ("I", "y2018", 5, 6, 4), ("I", "y2023", 5, 6, 4),
    ]
    return pd.DataFrame(rows, columns=["site_id", "vintage", "WQ", "HY", "HB"])


def _sites() -> pd.DataFrame:
    return pd.DataFrame([
        dict(site_id="R", project_id="P", kind="restoration", project_type="wetland",
             construction_start=D(2016, 3, 1), completion=D(2017, 10, 1), area_ha=2.0,
             compensation=None),
        dict(site_id="I", project_id="D", kind="impact", project_type="road",
             construction_start=D(2019, 5, 1), completion=D(2020, 6, 30), area_ha=1.0,
             compensation="concurrent"),
    ])


@pytest.fixture(scope="module")
def hist() -> pd.DataFrame:
    return history_table(_scores(), _sites(), [("base", 2015), ("y2018", 2018), ("y2023", 2023)],
                         "base", "y2023", D(2024, 6, 30), load_rulebook())


def test_columns_and_order(hist):
    assert tuple(hist.columns) == HISTORY_COLUMNS
    # 2 sites x 3 functions x 3 vintages, ordered by site_id, function (WQ, HY, HB), year
    assert len(hist) == 18
    assert hist["site_id"].tolist()[:9] == ["I"] * 9
    assert hist["function"].tolist()[:9] == ["WQ"] * 3 + ["HY"] * 3 + ["HB"] * 3
    assert hist["year"].tolist()[:3] == [2015, 2018, 2023]
    assert hist.loc[hist.vintage == "base", "role"].unique().tolist() == ["baseline"]
    assert hist.loc[hist.vintage == "y2023", "role"].unique().tolist() == ["assessment"]
    assert hist.loc[hist.vintage == "y2018", "role"].unique().tolist() == ["intermediate"]


def _row(hist, site, f, v) -> pd.Series:
    r = hist[(hist.site_id == site) & (hist.function == f) & (hist.vintage == v)]
    assert len(r) == 1
    return r.iloc[0]


def test_restoration_credits_by_hand(hist):
    # WQ of site R: baseline 4 -> y2018 6 -> y2023 7, area 2 ha, RF 1.0 (rulebook default).
    # y2018 is dated 2018-12-31: completed 2017-10-01, 1.25 years before -> "completed", TF 0.30
    #   credit = 2 x (6 - 4) x 0.30 x 1.0 = 1.2
    r = _row(hist, "R", "WQ", "y2018")
    assert r["date"] == "2018-12-31" and r["stage"] == "completed"
    assert r["score"] == 6 and r["score_baseline"] == 4
    assert r["stock"] == pytest.approx(12.0) and r["stock_baseline"] == pytest.approx(8.0)
    assert r["tf"] == pytest.approx(0.30) and r["rf"] == pytest.approx(1.0)
    assert r["credit"] == pytest.approx(1.2) and r["debit"] == 0 and r["net"] == pytest.approx(1.2)
    # y2023 is the assessment vintage: dated at the assessment date 2024-06-30, 6.75 years
    # after completion -> "long_term", TF 1.0: credit = 2 x (7 - 4) x 1.0 = 6.0
    r = _row(hist, "R", "WQ", "y2023")
    assert r["date"] == "2024-06-30" and r["tf"] == pytest.approx(1.0)
    assert r["credit"] == pytest.approx(6.0)
    # the baseline against itself: no change, no credit; 2015 is before the works: planned, TF 0
    r = _row(hist, "R", "HB", "base")
    assert r["delta_stock"] == 0 and r["credit"] == 0 and r["stage"] == "planned"


def test_impact_debits_by_hand(hist):
    # WQ of site I: 8 -> 5, 1 ha, concurrent compensation TLF 1.5: debit = 1 x 3 x 1.5 = 4.5,
    # in every vintage after the baseline (the debit does not carry a time factor)
    for v in ("y2018", "y2023"):
        r = _row(hist, "I", "WQ", v)
        assert r["debit"] == pytest.approx(4.5) and r["credit"] == 0
        assert r["net"] == pytest.approx(-4.5)
    # HY unchanged (6 -> 6): no debit
    assert _row(hist, "I", "HY", "y2023")["debit"] == 0


def test_assessment_rows_equal_official_credits(hist):
    from pipeline.scoring.credits import compute_credits

    official = compute_credits(_scores(), _sites(), "base", "y2023", D(2024, 6, 30), load_rulebook())
    mine = hist[hist.vintage == "y2023"].set_index(["site_id", "function"])
    for _, o in official.iterrows():
        m = mine.loc[(o["site_id"], o["function"])]
        assert m["credit"] == pytest.approx(o["credit"]) and m["debit"] == pytest.approx(o["debit"])
        assert m["stage"] == o["stage"]


def test_basin_totals_and_figure(hist):
    b = basin_history(hist)
    wq23 = b[(b.function == "WQ") & (b.vintage == "y2023")].iloc[0]
    # R credit 6.0, I debit 4.5 -> net 1.5
    assert wq23["credit"] == pytest.approx(6.0) and wq23["debit"] == pytest.approx(4.5)
    assert wq23["net"] == pytest.approx(1.5)
    fig = history_figure(hist, title="test")
    assert isinstance(fig, Figure)
    axes = fig.get_axes()
    assert [a.get_title() for a in axes] == ["WQ", "HY", "HB"]
    # per axis: one line per project (D, P) + the basin line (+ the zero line)
    assert len(axes[0].get_lines()) == 4
    basin_line = [ln for ln in axes[0].get_lines() if ln.get_label() == "basin"][0]
    assert list(basin_line.get_ydata()) == pytest.approx([0.0, 1.2 - 4.5, 1.5])


def test_figure_names_at_most_eight_projects_and_keeps_its_size():
    """150 projects (the 5e7-cell benchmark basin had 154) gave a legend taller than the
    page. Now the 8 projects with the largest net in the newest vintage are named, in one
    colour across the panels; the others are grey under one legend entry."""
    import io

    from pipeline.history import FUNCTIONS, MAX_NAMED_PROJECTS

    rows = []
    for i in range(150):
        for f in FUNCTIONS:
            for v, year in (("base", 2015), ("y2023", 2023)):
                net = 0.0 if v == "base" else float(i if f == "HB" else -i) / 10
                rows.append({"project_id": f"P{i:03d}", "function": f, "vintage": v, "year": year,
                             "credit": max(net, 0.0), "debit": max(-net, 0.0), "net": net})
    fig = history_figure(pd.DataFrame(rows))
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    # the largest |net| in 2023: P149, P148, ... (HB +14.9, WQ/HY -14.9)
    assert labels == [f"P{i:03d}" for i in range(150 - MAX_NAMED_PROJECTS, 150)] + ["142 other projects", "basin"]
    hb = fig.get_axes()[2]
    colours = {ln.get_label(): ln.get_color() for ln in hb.get_lines()}
    assert colours["P149"] == {ln.get_label(): ln.get_color() for ln in fig.get_axes()[0].get_lines()}["P149"]
    assert sum(ln.get_label() == "_other" for ln in hb.get_lines()) == 142
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    from PIL import Image

    w, h = Image.open(io.BytesIO(buf.getvalue())).size
    assert h < 400 and w < 1100, (w, h)       # 9 x 3.2 in at 100 dpi, legend beside the panels


def test_figure_turns_the_labels_of_close_years(hist):
    """2015, 2023, 2024 (the demo after a reprocess): upright labels ran into each other."""
    def rotation(h):
        return history_figure(h).get_axes()[0].get_xticklabels()[0].get_rotation()

    assert rotation(hist) == 0                                   # 2015, 2018, 2023
    close = hist.replace({"year": {2018: 2022}})
    assert rotation(close) == 60                                 # 2015, 2022, 2023
