"""Every rating rule of METHOD.md §4, at its band boundaries, through the shipped rulebook.

Each case starts from a hand-built "zero" indicator row (every item 0 points except
where noted) and changes only the indicators of the item under test. Expected
points are read off METHOD.md §4; the comment says which band is hit.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.indicators.catalog import INDICATORS
from pipeline.scoring.points import alt_column, pts_column, score_table
from pipeline.scoring.rulebook import load_rulebook

NAN = math.nan


@pytest.fixture(scope="module")
def book():
    return load_rulebook()


def zero_row(**overrides) -> dict:
    """An indicator row that scores 0 on every item except WQ-L3 (cb_area_ratio 500 >= 10
    gives 1) - with ratio 500 HY-S3 (> 100) gives 0; both cannot be 0 at once."""
    row = {"site_id": "s1", "vintage": "v", "year": 2020}
    for ind in INDICATORS:
        row[ind.name] = False if ind.unit == "bool" else 0.0
    row.update(mean_slope_deg=10.0, clay_organic_share=NAN, cb_area_ha=1000.0,
               cb_area_ratio=500.0, riparian_natural_share=NAN, path_wq_target_km=NAN,
               area_ha=2.0)
    row.update(overrides)
    return row


def points(book, rule_id: str, **overrides) -> int:
    table, _ = score_table(pd.DataFrame([zero_row(**overrides)]), book)
    return int(table[pts_column(rule_id)].iloc[0])


CASES = [
    # WQ-S1 depression share: >=50 % 3; >=10 % 2; >0 1; else 0
    ("WQ-S1", {"depression_share": 0.50}, 3),    # exactly 50 % is in the top band (>=)
    ("WQ-S1", {"depression_share": 0.4999}, 2),
    ("WQ-S1", {"depression_share": 0.10}, 2),    # exactly 10 % (>=)
    ("WQ-S1", {"depression_share": 0.0999}, 1),
    ("WQ-S1", {"depression_share": 1e-9}, 1),    # any depression > 0
    ("WQ-S1", {"depression_share": 0.0}, 0),
    ("WQ-S1", {"depression_share": NAN}, 0),     # missing -> nan_points 0
    # WQ-S2 with a soil layer: clay/organic >= 50 % 4 else 0 (slope then ignored)
    ("WQ-S2", {"clay_organic_share": 0.50, "mean_slope_deg": 30.0}, 4),
    ("WQ-S2", {"clay_organic_share": 0.4999, "mean_slope_deg": 0.5}, 0),  # soil wins over a flat slope
    # WQ-S2 without soil (NaN): slope <= 2 deg 4; <= 5 deg 2; else 0
    ("WQ-S2", {"mean_slope_deg": 2.0}, 4),
    ("WQ-S2", {"mean_slope_deg": 2.0001}, 2),
    ("WQ-S2", {"mean_slope_deg": 5.0}, 2),
    ("WQ-S2", {"mean_slope_deg": 5.0001}, 0),
    ("WQ-S2", {"mean_slope_deg": NAN}, 0),       # neither -> nan_points
    # WQ-S3 persistent vegetation: >95 % 5; >50 % 3; >10 % 1 (all strict)
    ("WQ-S3", {"persistent_veg_share": 0.9501}, 5),
    ("WQ-S3", {"persistent_veg_share": 0.95}, 3),   # exactly 95 % is not > 95 %
    ("WQ-S3", {"persistent_veg_share": 0.5001}, 3),
    ("WQ-S3", {"persistent_veg_share": 0.50}, 1),
    ("WQ-S3", {"persistent_veg_share": 0.1001}, 1),
    ("WQ-S3", {"persistent_veg_share": 0.10}, 0),
    # WQ-S4 wetland + water: >50 % 4; >25 % 2
    ("WQ-S4", {"wetland_water_share": 0.5001}, 4),
    ("WQ-S4", {"wetland_water_share": 0.50}, 2),
    ("WQ-S4", {"wetland_water_share": 0.2501}, 2),
    ("WQ-S4", {"wetland_water_share": 0.25}, 0),
    # WQ-L1 pollutant land use > 10 % of NEAR
    ("WQ-L1", {"near_pollutant_share": 0.1001}, 1),
    ("WQ-L1", {"near_pollutant_share": 0.10}, 0),
    # WQ-L2 intensive > 25 % of CB
    ("WQ-L2", {"cb_intensive_share": 0.2501}, 1),
    ("WQ-L2", {"cb_intensive_share": 0.25}, 0),
    # WQ-L3 CB >= 10 x A_S
    ("WQ-L3", {"cb_area_ratio": 10.0}, 1),
    ("WQ-L3", {"cb_area_ratio": 9.999}, 0),
    # WQ-L4 point source (bool; no layer -> NaN -> 0)
    ("WQ-L4", {"point_source_near": True}, 1),
    ("WQ-L4", {"point_source_near": False}, 0),
    ("WQ-L4", {"point_source_near": NAN}, 0),
    # WQ-V1 target within 1.6 km along PATH (threshold from parameters.wq_target_path_km)
    ("WQ-V1", {"path_wq_target_km": 1.6}, 1),
    ("WQ-V1", {"path_wq_target_km": 1.6001}, 0),
    ("WQ-V1", {"path_wq_target_km": 0.0}, 1),
    ("WQ-V1", {"path_wq_target_km": NAN}, 0),     # no target on PATH
    # WQ-V2 failing section, WQ-V3 plan (2)
    ("WQ-V2", {"path_failing_section": True}, 1),
    ("WQ-V2", {"path_failing_section": False}, 0),
    ("WQ-V3", {"in_wq_plan": True}, 2),
    ("WQ-V3", {"in_wq_plan": False}, 0),
    # HY-S1 depression share: >=50 % 4; >=10 % 2; >0 1
    ("HY-S1", {"depression_share": 0.50}, 4),
    ("HY-S1", {"depression_share": 0.4999}, 2),
    ("HY-S1", {"depression_share": 0.10}, 2),
    ("HY-S1", {"depression_share": 0.0999}, 1),
    ("HY-S1", {"depression_share": 0.0}, 0),
    # HY-S2 mean depression depth: >=0.9 7; >=0.6 5; >=0.15 3
    ("HY-S2", {"mean_depression_depth_m": 0.9}, 7),
    ("HY-S2", {"mean_depression_depth_m": 0.8999}, 5),
    ("HY-S2", {"mean_depression_depth_m": 0.6}, 5),
    ("HY-S2", {"mean_depression_depth_m": 0.5999}, 3),
    ("HY-S2", {"mean_depression_depth_m": 0.15}, 3),
    ("HY-S2", {"mean_depression_depth_m": 0.1499}, 0),
    # HY-S3 CB / A_S: <10 5; 10-100 3; >100 0
    ("HY-S3", {"cb_area_ratio": 9.999}, 5),
    ("HY-S3", {"cb_area_ratio": 10.0}, 3),        # 10 is in 10-100
    ("HY-S3", {"cb_area_ratio": 100.0}, 3),       # 100 is in 10-100
    ("HY-S3", {"cb_area_ratio": 100.001}, 0),
    ("HY-S3", {"cb_area_ratio": 0.0}, 5),         # nothing drains in
    # HY-S4 natural share: >80 % 2; >50 % 1
    ("HY-S4", {"natural_share": 0.8001}, 2),
    ("HY-S4", {"natural_share": 0.80}, 1),
    ("HY-S4", {"natural_share": 0.5001}, 1),
    ("HY-S4", {"natural_share": 0.50}, 0),
    # HY-L1..L3
    ("HY-L1", {"near_runoff_share": 0.1001}, 1),
    ("HY-L1", {"near_runoff_share": 0.10}, 0),
    ("HY-L2", {"cb_intensive_share": 0.2501}, 1),
    ("HY-L2", {"cb_intensive_share": 0.25}, 0),
    ("HY-L3", {"cb_impervious_share": 0.1001}, 1),
    ("HY-L3", {"cb_impervious_share": 0.10}, 0),
    # HY-V1 assets >= 5 % within 200 m of first 5 km: 2; else any in first 20 km: 1
    ("HY-V1", {"path_assets_share_5km": 0.05}, 2),
    ("HY-V1", {"path_assets_share_5km": 0.05, "path_assets_any_20km": True}, 2),
    ("HY-V1", {"path_assets_share_5km": 0.0499, "path_assets_any_20km": True}, 1),
    ("HY-V1", {"path_assets_share_5km": 0.0499, "path_assets_any_20km": False}, 0),
    ("HY-V1", {"path_assets_share_5km": NAN, "path_assets_any_20km": True}, 0),  # no PATH
    # HY-V2 flood plan
    ("HY-V2", {"in_flood_plan": True}, 2),
    ("HY-V2", {"in_flood_plan": False}, 0),
    # HB-S1 structure classes: >=4 4; 3 2; 2 1; else 0
    ("HB-S1", {"n_structure_classes": 5}, 4),
    ("HB-S1", {"n_structure_classes": 4}, 4),
    ("HB-S1", {"n_structure_classes": 3}, 2),
    ("HB-S1", {"n_structure_classes": 2}, 1),
    ("HB-S1", {"n_structure_classes": 1}, 0),
    # HB-S2 habitat quality: >=60 3; >=40 2; >=20 1
    ("HB-S2", {"habitat_quality": 60.0}, 3),
    ("HB-S2", {"habitat_quality": 59.999}, 2),
    ("HB-S2", {"habitat_quality": 40.0}, 2),
    ("HB-S2", {"habitat_quality": 39.999}, 1),
    ("HB-S2", {"habitat_quality": 20.0}, 1),
    ("HB-S2", {"habitat_quality": 19.999}, 0),
    # HB-S3 Shannon: >=1.2 3; >=0.8 2; >=0.4 1
    ("HB-S3", {"shannon_natural": 1.2}, 3),
    ("HB-S3", {"shannon_natural": 1.1999}, 2),
    ("HB-S3", {"shannon_natural": 0.8}, 2),
    ("HB-S3", {"shannon_natural": 0.7999}, 1),
    ("HB-S3", {"shannon_natural": 0.4}, 1),
    ("HB-S3", {"shannon_natural": 0.3999}, 0),
    # HB-S4 largest patch: >=10 ha 3; >=2 2; >=0.5 1
    ("HB-S4", {"largest_patch_ha": 10.0}, 3),
    ("HB-S4", {"largest_patch_ha": 9.999}, 2),
    ("HB-S4", {"largest_patch_ha": 2.0}, 2),
    ("HB-S4", {"largest_patch_ha": 1.999}, 1),
    ("HB-S4", {"largest_patch_ha": 0.5}, 1),
    ("HB-S4", {"largest_patch_ha": 0.4999}, 0),
    # HB-S5 special features: 1 each, max 5
    ("HB-S5", {"n_special_features": 0}, 0),
    ("HB-S5", {"n_special_features": 3}, 3),
    ("HB-S5", {"n_special_features": 5}, 5),
    ("HB-S5", {"n_special_features": 7}, 5),     # capped
    ("HB-S5", {"n_special_features": NAN}, 0),
    # HB-L1 accessible habitat: >33.3 % 3; 20-33.3 % 2; 10-20 % 1
    ("HB-L1", {"ring_accessible_pct": 33.31}, 3),
    ("HB-L1", {"ring_accessible_pct": 33.3}, 2),  # 33.3 itself is in 20-33.3
    ("HB-L1", {"ring_accessible_pct": 20.0}, 2),
    ("HB-L1", {"ring_accessible_pct": 19.99}, 1),
    ("HB-L1", {"ring_accessible_pct": 10.0}, 1),
    ("HB-L1", {"ring_accessible_pct": 9.99}, 0),
    # HB-L2 undisturbed: >50 % 3; 10-50 % in <=3 patches 2; in >3 patches 1
    ("HB-L2", {"ring_undisturbed_pct": 50.01, "ring_undisturbed_patches": 12}, 3),
    ("HB-L2", {"ring_undisturbed_pct": 50.0, "ring_undisturbed_patches": 3}, 2),
    ("HB-L2", {"ring_undisturbed_pct": 50.0, "ring_undisturbed_patches": 4}, 1),
    ("HB-L2", {"ring_undisturbed_pct": 10.0, "ring_undisturbed_patches": 1}, 2),
    ("HB-L2", {"ring_undisturbed_pct": 10.0, "ring_undisturbed_patches": 4}, 1),
    ("HB-L2", {"ring_undisturbed_pct": 9.99, "ring_undisturbed_patches": 1}, 0),
    ("HB-L2", {"ring_undisturbed_pct": 30.0, "ring_undisturbed_patches": NAN}, 1),  # patches unknown: not <= 3
    # HB-L3 high intensity > 50 %: -2
    ("HB-L3", {"ring_high_intensity_share": 0.5001}, -2),
    ("HB-L3", {"ring_high_intensity_share": 0.50}, 0),
    # HB-L4 dPC >= 0.5 %
    ("HB-L4", {"site_dpc_pct": 0.5}, 1),
    ("HB-L4", {"site_dpc_pct": 0.4999}, 0),
    # HB-L5 riparian natural share > 75 % (NaN: no stream)
    ("HB-L5", {"riparian_natural_share": 0.7501}, 1),
    ("HB-L5", {"riparian_natural_share": 0.75}, 0),
    ("HB-L5", {"riparian_natural_share": NAN}, 0),
    # HB-V1 protected: inside or >= 3 within 100 m 2; 1-2 within 100 m 1
    ("HB-V1", {"protected_inside": True}, 2),
    ("HB-V1", {"protected_within_100m": 3}, 2),
    ("HB-V1", {"protected_within_100m": 2}, 1),
    ("HB-V1", {"protected_within_100m": 1}, 1),
    ("HB-V1", {"protected_within_100m": 0}, 0),
    ("HB-V1", {"protected_inside": NAN, "protected_within_100m": NAN}, 0),  # no layer
    # HB-V2 species, HB-V3 plan
    ("HB-V2", {"species_within_1km": True}, 2),
    ("HB-V2", {"species_within_1km": False}, 0),
    ("HB-V3", {"in_habitat_plan": True}, 2),
    ("HB-V3", {"in_habitat_plan": False}, 0),
]


@pytest.mark.parametrize(("rule_id", "overrides", "expected"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_rule_band(book, rule_id, overrides, expected):
    assert points(book, rule_id, **overrides) == expected


def test_every_rule_has_cases(book):
    assert {r.id for r in book.rules} == {c[0] for c in CASES}


def test_zero_row_points(book):
    """The baseline row really scores 0 everywhere but WQ-L3 (=1)."""
    table, _ = score_table(pd.DataFrame([zero_row()]), book)
    for r in book.rules:
        assert int(table[r.column].iloc[0]) == (1 if r.id == "WQ-L3" else 0), r.id


def test_wq_s2_reports_the_alternative_used(book):
    df = pd.DataFrame([zero_row(site_id="soil", clay_organic_share=0.6),
                       zero_row(site_id="slope", mean_slope_deg=1.0),
                       zero_row(site_id="none", mean_slope_deg=NAN)])
    table, trace = score_table(df, book)
    alt = dict(zip(table["site_id"], table[alt_column("WQ-S2")]))
    assert alt == {"soil": "soil", "slope": "slope", "none": "missing"}
    t = trace[trace["rule"] == "WQ-S2"].set_index("site_id")
    assert t.loc["slope", "indicator"] == "mean_slope_deg"
    assert "clay_organic_share is NaN" in t.loc["slope", "note"]
    assert t.loc["none", "points"] == 0 and "neither a soil layer" in t.loc["none", "note"]
    assert t.loc["soil", "matched"] == "clay_organic_share >= 0.5"


def test_trace_names_missing_optional_layers(book):
    _, trace = score_table(pd.DataFrame([zero_row(point_source_near=NAN)]), book)
    t = trace.set_index("rule")
    assert t.loc["WQ-L4", "missing"] == "point_source_near"
    assert "no point-source layer" in t.loc["WQ-L4", "note"]
    assert t.loc["HB-L5", "missing"] == "riparian_natural_share"
    assert t.loc["WQ-S1", "missing"] == ""
    # one trace row per rule, in rulebook order
    assert list(trace["rule"]) == [r.id for r in book.rules]


def test_hb_value_points_summed_and_capped_at_2(book):
    # V1 2 + V2 2 + V3 2 = 6 points -> capped at 2 -> High
    row = zero_row(protected_inside=True, species_within_1km=True, in_habitat_plan=True)
    table, _ = score_table(pd.DataFrame([row]), book)
    assert table["HB_V_pts"].iloc[0] == 2 and table["HB_V"].iloc[0] == 3
    # one area within 100 m only: 1 point -> Medium
    table, _ = score_table(pd.DataFrame([zero_row(protected_within_100m=1)]), book)
    assert table["HB_V_pts"].iloc[0] == 1 and table["HB_V"].iloc[0] == 2


def test_hb_landscape_negative_points_rate_low(book):
    # HB-L3 -2 alone: -2 points (<= 0) -> Low; with HB-L1 3 + HB-L2 3: 4 -> High
    table, _ = score_table(pd.DataFrame([zero_row(ring_high_intensity_share=0.9)]), book)
    assert table["HB_L_pts"].iloc[0] == -2 and table["HB_L"].iloc[0] == 1
    row = zero_row(ring_high_intensity_share=0.9, ring_accessible_pct=40.0,
                   ring_undisturbed_pct=60.0)
    table, _ = score_table(pd.DataFrame([row]), book)
    assert table["HB_L_pts"].iloc[0] == 4 and table["HB_L"].iloc[0] == 3


# METHOD.md §4 rating bands, typed in from the text: (function, scale) -> (H from, M from)
METHOD_BANDS = {
    ("WQ", "S"): (12, 6), ("WQ", "L"): (3, 1), ("WQ", "V"): (2, 1),
    ("HY", "S"): (12, 6), ("HY", "L"): (3, 1), ("HY", "V"): (2, 1),
    ("HB", "S"): (15, 7), ("HB", "L"): (4, 1), ("HB", "V"): (2, 1),
}


@pytest.mark.parametrize("cell", sorted(METHOD_BANDS))
def test_rating_bands_match_method(book, cell):
    high, medium = METHOD_BANDS[cell]
    rt = book.rating(*cell)
    assert rt.rate(high) == 3 and rt.rate(high - 1) == 2
    assert rt.rate(medium) == 2 and rt.rate(medium - 1) == 1
    assert rt.rate(-2) == 1


def test_site_scale_ratings_through_the_table(book):
    # WQ S: S1 0.5 -> 3, S3 0.96 -> 5, S4 0.6 -> 4: 12 points -> High (12-16)
    row = zero_row(depression_share=0.5, persistent_veg_share=0.96, wetland_water_share=0.6)
    table, _ = score_table(pd.DataFrame([row]), book)
    assert table["WQ_S_pts"].iloc[0] == 12 and table["WQ_S"].iloc[0] == 3
    # drop S1 to 0.4999 -> 2: 11 points -> Medium
    row["depression_share"] = 0.4999
    table, _ = score_table(pd.DataFrame([row]), book)
    assert table["WQ_S_pts"].iloc[0] == 11 and table["WQ_S"].iloc[0] == 2
    # the zero row: WQ L has 1 point (WQ-L3) -> Medium; every other cell Low
    table, _ = score_table(pd.DataFrame([zero_row()]), book)
    got = {c: int(table[c].iloc[0]) for c in ("WQ", "HY", "HB", "total")}
    assert got == {"WQ": 4, "HY": 3, "HB": 3, "total": 10}


def test_points_columns_are_integers(book):
    table, _ = score_table(pd.DataFrame([zero_row(n_special_features=2)]), book)
    for r in book.rules:
        assert np.issubdtype(table[r.column].dtype, np.integer)


def test_nullable_and_object_columns(book):
    # nullable booleans (pd.NA where the layer is missing) score like True/False/NaN
    df = pd.DataFrame([zero_row(site_id="a"), zero_row(site_id="b"), zero_row(site_id="c")])
    df["point_source_near"] = pd.array([True, None, False], dtype="boolean")
    table, _ = score_table(df, book)
    assert list(table["pts_WQ_L4"]) == [1, 0, 0]


def test_non_numeric_indicator_is_an_input_error(book):
    from pipeline.errors import InputDataError
    with pytest.raises(InputDataError, match="non-numeric value 'high'"):
        score_table(pd.DataFrame([zero_row(habitat_quality="high")]), book)
    with pytest.raises(InputDataError, match="bool indicator 'in_wq_plan' holds 2.0"):
        score_table(pd.DataFrame([zero_row(in_wq_plan=2)]), book)
    with pytest.raises(InputDataError, match="whole numbers"):
        score_table(pd.DataFrame([zero_row(n_special_features=1.5)]), book)


def test_missing_required_indicator_is_logged(book, caplog):
    # habitat_quality comes from land cover (not an optional layer): NaN is logged
    with caplog.at_level("WARNING", logger="pipeline.scoring.points"):
        score_table(pd.DataFrame([zero_row(habitat_quality=NAN)]), book)
    assert any("HB-S2" in r.getMessage() for r in caplog.records)
    caplog.clear()
    # a missing optional layer (no point sources, no stream, no target) is normal: silent
    with caplog.at_level("WARNING", logger="pipeline.scoring.points"):
        score_table(pd.DataFrame([zero_row(point_source_near=NAN)]), book)
    assert not caplog.records
