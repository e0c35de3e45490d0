"""QML generation (pipeline/report/styles.py): structure and class breaks."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.report import styles


def _classify(ranges, v):
    """QGIS graduated renderer: first range is closed below, the others are (lower, upper]."""
    hits = [i for i, r in enumerate(ranges) if (r.lower < v <= r.upper) or (i == 0 and v == r.lower)]
    return hits


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-500, 500, allow_nan=False), min_size=1, max_size=40))
def test_every_credit_falls_in_exactly_one_range(values):
    ranges = styles.credit_ranges(values)
    for v in values:
        assert len(_classify(ranges, v)) == 1, (v, ranges)
    # contiguous and increasing
    for a, b in zip(ranges, ranges[1:]):
        assert a.upper == b.lower and a.lower < a.upper
    assert (ranges[0].colour == styles._NEG) == (min(values) < -1e-9)


def test_credit_ranges_hand_worked():
    # values 0, 1, 2, 3, 4, 10: one "no change" class, positive quintile breaks of (1,2,3,4,10):
    # quantiles at 0.2..0.8 = 1.8, 2.6, 3.4, 5.2 -> classes (0,1.8], (1.8,2.6], (2.6,3.4], (3.4,5.2], (5.2,10]
    r = styles.credit_ranges([0, 1, 2, 3, 4, 10])
    assert [x.label for x in r][0] == "0（无变化）"
    assert [round(x.upper, 6) for x in r[1:]] == [1.8, 2.6, 3.4, 5.2, 10.0]
    assert len({x.colour for x in r[1:]}) == 5


def test_graduated_qml_structure():
    qml = styles.graduated_qml("polygon", "credit_total", styles.credit_ranges([-2, 0, 5, 9]),
                               fields=["site_id", "credit_total"], aliases={"credit_total": "生态信用合计"},
                               label='"site_id"')
    assert qml.startswith("<!DOCTYPE qgis")
    root = ET.fromstring(qml.split("\n", 1)[1])
    r = root.find("renderer-v2")
    assert r.get("type") == "graduatedSymbol" and r.get("attr") == "credit_total"
    names = {s.get("name") for s in r.find("symbols")}
    assert {x.get("symbol") for x in r.find("ranges")} == names
    assert root.get("labelsEnabled") == "1"
    alias = root.find("aliases/alias")
    assert alias.get("field") == "credit_total" and alias.get("index") == "1" and alias.get("name") == "生态信用合计"


def test_categorized_rating_labels_are_chinese():
    root = ET.fromstring(styles.categorized_qml("polygon", "HB_S_post", styles.rating_categories()).split("\n", 1)[1])
    cats = root.findall("renderer-v2/categories/category")
    assert [(c.get("value"), c.get("label")) for c in cats] == [("1", "1 低"), ("2", "2 中"), ("3", "3 高")]


def test_single_line_symbol():
    root = ET.fromstring(styles.single_qml("line", "31,120,180,255", width=1.2).split("\n", 1)[1])
    lyr = root.find("renderer-v2/symbols/symbol/layer")
    assert lyr.get("class") == "SimpleLine"
    opts = {o.get("name"): o.get("value") for o in lyr.find("Option")}
    assert opts["line_width"] == "1.2" and opts["line_color"] == "31,120,180,255"


def test_raster_qml_linear_ramp():
    root = ET.fromstring(styles.raster_pseudocolor_qml(0.0, 4.0).split("\n", 1)[1])
    vals = [float(i.get("value")) for i in root.iter("item")]
    np.testing.assert_allclose(vals, [0, 1, 2, 3, 4])
    # degenerate range still gives a usable ramp
    root = ET.fromstring(styles.raster_pseudocolor_qml(2.0, 2.0).split("\n", 1)[1])
    vals = [float(i.get("value")) for i in root.iter("item")]
    assert vals[0] == 2.0 and vals[-1] == 3.0
