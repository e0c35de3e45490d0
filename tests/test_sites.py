"""Site indicators on a hand-built basin with every expected value worked out.

Grid: 40 x 40 cells of 10 m, x 0..400, y 0..400, row 0 north; cell (r, c)
covers x 10c..10c+10 and y 390-10r..400-10r. The site S = box(150,150,250,250)
covers rows 15..24 and cols 15..24 exactly (100 cells, 1 ha).
"""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from affine import Affine

from pipeline.errors import InputDataError
from pipeline.indicators.catalog import NAMES
from pipeline.indicators.sites import gb3838_rank, count_special_features, site_indicators

CRS = "EPSG:32650"
FOREST, SHRUB, GRASS, WETLAND, WATER, CROP, BUILT, BARE, OTHER = range(1, 10)
E, SE, S, SW, W, NW, N, NE = 1, 2, 4, 8, 16, 32, 64, 128


def _a(natural, intensity, pollutant, runoff, impervious, hq, persistent):
    return dict(natural=natural, intensity=intensity, pollutant=pollutant, runoff=runoff,
                impervious=impervious, hq_weight=hq, persistent_veg=persistent)


# METHOD.md §3 attributes; HQ weights = HJ 192 top-level weight x sub-class weight
# (forest 有林地 0.35x0.6, shrub 灌木林地 0.35x0.25, grass 中覆盖 0.21x0.3,
# wetland 滩涂 0.28x0.6, water 湖泊 0.28x0.3, cropland 旱地 0.11x0.4, built 城镇 0.04x0.3,
# bare 裸土地 0.01x0.2, other 0.01x0.1).
ATTRS = {
    FOREST: _a(True, "undisturbed", False, False, 0.0, 0.35 * 0.6, True),
    SHRUB: _a(True, "undisturbed", False, False, 0.0, 0.35 * 0.25, True),
    GRASS: _a(True, "undisturbed", False, False, 0.0, 0.21 * 0.3, True),
    WETLAND: _a(True, "undisturbed", False, False, 0.0, 0.28 * 0.6, True),
    WATER: _a(True, "undisturbed", False, False, 0.0, 0.28 * 0.3, False),
    CROP: _a(False, "moderate", True, True, 0.0, 0.11 * 0.4, False),
    BUILT: _a(False, "high", True, True, 0.8, 0.04 * 0.3, False),
    BARE: _a(False, "low", False, True, 0.0, 0.01 * 0.2, False),
    OTHER: _a(False, "low", False, False, 0.0, 0.01 * 0.1, False),
}

GRID = (Affine(10, 0, 0, 0, -10, 400), CRS, (40, 40))
SITE = shapely.box(150, 150, 250, 250)
PARAMS = dict(near_buffer_m=20, landscape_buffer_m=100, riparian_buffer_m=10,
              point_source_extra_m=50, species_m=100, path_assets_near_km=0.1,
              path_assets_far_km=0.2, path_assets_buffer_m=20)


def polygon_64(r):
    """Area of the 4 rounded corners of a buffer (quad_segs=16): a regular 64-gon."""
    return 32 * r * r * math.sin(math.pi / 32)


def build_basin():
    lc = np.full((40, 40), FOREST, dtype=np.uint8)
    # --- S (rows 15..24, cols 15..24): built 5, crop 10, water 7, wetland 8,
    # grass 10, shrub 20, forest 40 cells
    lc[15, 15:20] = BUILT
    lc[15, 20:25] = CROP
    lc[16, 15:20] = CROP
    lc[16, 20:25] = WATER
    lc[17, 15:17] = WATER
    lc[17, 17:25] = WETLAND
    lc[18, 15:25] = GRASS
    lc[19:21, 15:25] = SHRUB
    # rows 21..24 stay forest
    # --- NEAR (20 m): built strip north of S (rows 13-14, y 250..270), bare strip
    # east of S (cols 25-26, x 250..270)
    lc[13:15, 15:25] = BUILT
    lc[15:25, 25:27] = BARE
    # --- RING1K (100 m): a built wall (rows 16..23, cols 28..34, x 280..350,
    # y 160..240) enclosing a forest pocket (rows 17..22, cols 29..33) that is not
    # connected to S; a cropland row north of S; two built cells on PATH
    lc[16:24, 28:35] = BUILT
    lc[17:23, 29:34] = FOREST
    lc[7, 15:25] = CROP
    lc[30:32, 15] = BUILT

    d8 = np.full((40, 40), S, dtype=np.uint8)
    d8[39, :] = 0
    # PATH from o = (24,15): south to (34,15), then SE, SE, S, S, S to (39,17)
    d8[34, 15] = SE
    d8[35, 16] = SE
    acc = np.repeat(np.arange(1, 41, dtype=float)[:, None], 40, axis=1)  # all-south flow

    slope = np.full((40, 40), 20.0)
    slope[15:25, 15:25] = 3.0
    slope[15, 15:25] = 9.0
    depth = np.full((40, 40), 2.0)
    depth[15:25, 15:25] = 0.0
    depth[17:19, 15:25] = 0.5
    depth[19, 15:20] = 0.05

    patch = np.full((40, 40), 9, dtype=np.int64)   # everything outside S: patch 9
    patch[15:25, 15:25] = 0
    patch[21:25, 15:25] = 3
    patch[19:21, 15:25] = 5
    patch[17:19, 15:25] = 7
    patch[16, 20:25] = 7

    stream = np.zeros((40, 40), dtype=bool)
    stream[8, 15:25] = True
    dist = np.full((40, 40), 999.0)
    dist[8, 15:25] = 0.0
    dist[7, 15:25] = 10.0
    dist[9, 15:25] = 10.0

    dem = dict(d8=d8, accumulation=acc, slope_deg=slope, depression_depth_m=depth)
    vint = dict(canonical=lc, patch_id=patch,
                patch_area_ha={3: 12.5, 5: 0.2, 7: 1.1, 9: 50.0},
                patch_dpc={3: 0.8, 5: 0.1, 7: 0.05, 9: 10.0},
                stream_mask=stream, dist_to_stream_m=dist, year=2019)
    sites = gpd.GeoDataFrame({"site_id": ["s1"], "in_wq_plan": [True],
                              "special_features": ["snags; islands、large woody debris"]},
                             geometry=[SITE], crs=CRS)
    layers = dict(
        point_sources=gpd.GeoDataFrame(geometry=[shapely.Point(205, 395)], crs=CRS),
        wq_targets=gpd.GeoDataFrame(geometry=[shapely.box(168, 18, 182, 32)], crs=CRS),
        monitoring_sections=gpd.GeoDataFrame(
            {"observed_class": ["Ⅳ", "II", "劣V"], "target_class": ["III", "III", "III"]},
            geometry=[shapely.Point(190, 25), shapely.Point(160, 100), shapely.Point(300, 380)],
            crs=CRS),
        protected_areas=gpd.GeoDataFrame(
            geometry=[shapely.box(100, 100, 300, 300), shapely.box(300, 0, 400, 100),
                      shapely.box(0, 360, 40, 400)], crs=CRS),
        species=gpd.GeoDataFrame(geometry=[shapely.Point(330, 200)], crs=CRS),
        soils=gpd.GeoDataFrame({"clay_organic": [True, False]},
                               geometry=[shapely.box(150, 150, 200, 250),
                                         shapely.box(200, 150, 250, 250)], crs=CRS),
        flood_plan_zones=gpd.GeoDataFrame(geometry=[shapely.box(100, 100, 210, 300)], crs=CRS),
        habitat_plan_zones=gpd.GeoDataFrame(geometry=[shapely.box(100, 100, 190, 300)], crs=CRS),
    )
    return sites, dem, {"baseline": vint}, layers


def run(sites=None, dem=None, lc=None, layers=None, params=None):
    s0, d0, l0, y0 = build_basin()
    return site_indicators(s0 if sites is None else sites, GRID, d0 if dem is None else dem,
                           l0 if lc is None else lc, y0 if layers is None else layers,
                           ATTRS, {**PARAMS, **(params or {})})


def test_columns_are_the_catalogue():
    df = run()
    assert list(df.columns) == ["site_id", "vintage", "year", *NAMES]
    assert len(df) == 1


def test_every_indicator_by_hand():
    r = run().iloc[0]
    assert r.site_id == "s1" and r.vintage == "baseline" and r.year == 2019
    assert r.area_ha == pytest.approx(1.0)
    # depth >= 0.1 m on rows 17, 18 (20 cells); row 19 cols 15..19 at 0.05 m don't count
    assert r.depression_share == pytest.approx(0.20)
    # (20 x 0.5 + 5 x 0.05) / 100
    assert r.mean_depression_depth_m == pytest.approx(0.1025)
    # 90 cells at 3 deg + 10 at 9 deg (the slope outside S, 20 deg, must not leak in)
    assert r.mean_slope_deg == pytest.approx(3.6)
    # the clay polygon covers the western half of S
    assert r.clay_organic_share == pytest.approx(0.5)
    # CB = the 15 rows x 10 cols above S = 150 cells x 0.01 ha
    assert r.cb_area_ha == pytest.approx(1.5)
    assert r.cb_area_ratio == pytest.approx(1.5)
    # S classes: forest 40, shrub 20, grass 10, wetland 8, water 7, crop 10, built 5
    assert r.persistent_veg_share == pytest.approx(0.78)   # 40+20+10+8
    assert r.wetland_water_share == pytest.approx(0.15)    # 8+7
    assert r.natural_share == pytest.approx(0.85)
    # forest 40 %, shrub 20 %, grass 10 % qualify; wetland 8 % (0.08 ha) and water 7 % don't
    assert r.n_structure_classes == 3
    hq = 511.2642131067 * (0.40 * 0.21 + 0.20 * 0.0875 + 0.10 * 0.063 + 0.08 * 0.168
                           + 0.07 * 0.084 + 0.10 * 0.044 + 0.05 * 0.012)   # 0.13212 -> 67.548
    assert r.habitat_quality == pytest.approx(hq)
    assert r.habitat_quality == pytest.approx(67.5482, abs=1e-4)
    p = np.array([40, 20, 10, 8, 7]) / 85
    assert r.shannon_natural == pytest.approx(-(p * np.log(p)).sum())   # 1.3750 nats
    # patches 3, 5, 7 touch S (patch 9 only borders it): max area 12.5, dPC 0.8+0.1+0.05
    assert r.largest_patch_ha == pytest.approx(12.5)
    assert r.site_dpc_pct == pytest.approx(0.95)
    assert r.n_special_features == 3
    # NEAR = 4 x 100 x 20 + 64-gon(20) = 9254.62 m2; built strip 2000 m2 (pollutant and
    # runoff), bare strip 2000 m2 (runoff only)
    near = 4 * 100 * 20 + polygon_64(20)
    assert r.near_pollutant_share == pytest.approx(2000 / near)
    assert r.near_runoff_share == pytest.approx(4000 / near)
    # CB: built 20 cells (rows 13-14), crop 10 (row 7), forest 120
    assert r.cb_intensive_share == pytest.approx(30 / 150)
    assert r.cb_impervious_share == pytest.approx(20 * 0.8 / 150)
    # the point source at (205, 395) is 145 m from S (> 20 + 50) but in CB
    assert bool(r.point_source_near) is True
    # RING1K = 4 x 100 x 100 + 64-gon(100) = 71365.48 m2:
    #   built 2000 (NEAR strip) + 2600 (wall) + 200 (PATH cells) = 4800  high
    #   bare 2000 (low) + crop 1000 (moderate)                     = 3000  half weight
    #   pocket forest 3000, walled off from S
    #   other forest R - 10800, connected to S
    R = 4 * 100 * 100 + polygon_64(100)
    assert r.ring_high_intensity_share == pytest.approx(4800 / R)
    assert r.ring_undisturbed_pct == pytest.approx(100 * (R - 10800 + 3000 + 1500) / R)
    assert r.ring_accessible_pct == pytest.approx(100 * (R - 10800 + 1500) / R)
    # the forest annulus around S and the walled pocket
    assert r.ring_undisturbed_patches == 2
    # riparian cells (dist <= 10 m): rows 7..9 x cols 15..24; row 7 is cropland
    assert r.riparian_natural_share == pytest.approx(20 / 30)
    # PATH: (24,15) 10 x S to (34,15) = 100 m, SE, SE = 2 x 14.142, S to (37,17) = 10 m;
    # the target holds the centre of (37,17) only: 138.284 m
    assert r.path_wq_target_km == pytest.approx((110 + 2 * math.sqrt(200)) / 1000)
    # the failing section (IV vs III) is 15 m from (37,17): within 2 cells
    assert bool(r.path_failing_section) is True
    assert bool(r.in_wq_plan) is True
    # first 100 m of PATH: (155,155) -> (155,55); buffer 20 m = 40 x 100 + 64-gon(20);
    # 2 built cells (200 m2) on it
    assert r.path_assets_share_5km == pytest.approx(200 / (4000 + polygon_64(20)))
    assert bool(r.path_assets_any_20km) is True
    assert bool(r.in_flood_plan) is True          # zone covers 60 % of S
    assert bool(r.protected_inside) is True       # S lies in the first area
    assert r.protected_within_100m == 2           # 1st contains S, 2nd is 70.7 m away, 3rd 155.6 m
    assert bool(r.species_within_1km) is True     # 80 m away, species_m = 100 here
    assert bool(r.in_habitat_plan) is False       # zone covers only 40 % of S


def test_alternative_layers_flip_the_layer_flags():
    sites, dem, lc, layers = build_basin()
    # point source 145 m away and outside CB (col 37): no; 45 m south of S: yes
    layers["point_sources"] = gpd.GeoDataFrame(geometry=[shapely.Point(375, 375)], crs=CRS)
    layers["species"] = gpd.GeoDataFrame(geometry=[shapely.Point(390, 390)], crs=CRS)  # 198 m
    layers["protected_areas"] = gpd.GeoDataFrame(geometry=[shapely.box(100, 100, 190, 300)], crs=CRS)
    # only the far failing section, the passing one and one without an observation
    # (skipped, with a warning) remain: none on PATH fails
    sec = layers["monitoring_sections"].copy()
    sec.loc[0, "observed_class"] = None
    layers["monitoring_sections"] = sec
    # flood assets replace built-up: 300 m2 inside the first-100 m buffer
    layers["flood_assets"] = gpd.GeoDataFrame(geometry=[shapely.box(140, 60, 170, 70)], crs=CRS)
    layers["wq_targets"] = None
    layers["soils"] = None
    r = run(layers=layers).iloc[0]
    assert bool(r.point_source_near) is False
    assert bool(r.species_within_1km) is False
    assert bool(r.protected_inside) is False       # 40 % of S
    assert r.protected_within_100m == 1
    assert bool(r.path_failing_section) is False
    assert r.path_assets_share_5km == pytest.approx(300 / (4000 + polygon_64(20)))
    assert bool(r.path_assets_any_20km) is True
    assert math.isnan(r.path_wq_target_km)
    assert math.isnan(r.clay_organic_share)
    layers["point_sources"] = gpd.GeoDataFrame(geometry=[shapely.Point(205, 105)], crs=CRS)
    assert bool(run(layers=layers).iloc[0].point_source_near) is True    # 45 m < 70 m


def test_second_vintage_and_as_built_dem():
    sites, dem, lc, layers = build_basin()
    v2 = dict(lc["baseline"])
    c = v2["canonical"].copy()
    c[15:25, 15:25] = WETLAND            # S restored to wetland
    v2["canonical"] = c
    v2["year"] = 2024
    # as-built DEM: PATH runs straight south along col 15, missing the target at (37,17)
    d2 = dict(dem)
    d8 = dem["d8"].copy()
    d8[34, 15] = S
    d8[35, 16] = S
    d2["d8"] = d8
    v2["dem_stats"] = d2
    df = run(lc={"baseline": lc["baseline"], "post": v2})
    a, b = df.iloc[0], df.iloc[1]
    assert list(df.vintage) == ["baseline", "post"] and b.year == 2024
    assert b.wetland_water_share == pytest.approx(1.0)
    assert b.shannon_natural == pytest.approx(0.0)
    assert b.n_structure_classes == 1
    assert b.habitat_quality == pytest.approx(511.2642131067 * 0.168)   # 85.89
    assert a.path_wq_target_km == pytest.approx(0.1382843, abs=1e-6)
    assert math.isnan(b.path_wq_target_km)
    # vintage-independent values are the same in both rows
    assert a.cb_area_ha == b.cb_area_ha and a.protected_within_100m == b.protected_within_100m


def test_coverage_weighted_shares_for_a_site_cutting_cells_in_half():
    # site x 105..135, y 100..120: col 10 half, cols 11, 12 whole, col 13 half; rows 28, 29
    lc = np.full((40, 40), FOREST, dtype=np.uint8)
    lc[:, 12] = CROP
    lc[:, 13] = BUILT
    lc[:, 14:] = GRASS
    dem = dict(d8=np.full((40, 40), 0, np.uint8), accumulation=np.ones((40, 40)),
               slope_deg=np.zeros((40, 40)), depression_depth_m=np.zeros((40, 40)))
    sites = gpd.GeoDataFrame({"site_id": [7]}, geometry=[shapely.box(105, 100, 135, 120)], crs=CRS)
    r = site_indicators(sites, GRID, dem, {2020: dict(canonical=lc)}, {}, ATTRS, PARAMS).iloc[0]
    # coverage per row: forest 0.5 + 1 = 1.5, crop 1, built 0.5 -> total 3
    # natural share = 1.5 / 3 = 0.5 (counting whole cells by centre would give 2/3)
    assert r.area_ha == pytest.approx(0.06)
    assert r.natural_share == pytest.approx(0.5)
    assert r.habitat_quality == pytest.approx(511.2642131067 * (1.5 * 0.21 + 0.044 + 0.5 * 0.012) / 3)
    assert r.year == 2020
    r = site_indicators(sites, GRID, dem, {"2021": dict(canonical=lc)}, {}, ATTRS, PARAMS).iloc[0]
    assert r.vintage == "2021" and r.year == 2021
    # no patch or stream rasters given: NaN, not a silent zero
    assert math.isnan(r.largest_patch_ha) and math.isnan(r.riparian_natural_share)


def test_structure_classes_area_rule_and_shannon_two_classes():
    # the whole 16 ha grid is the site: wetland 26 cells = 0.26 ha (1.6 %) counts by
    # area; water 24 cells = 0.24 ha (1.5 %) does not
    lc = np.full((40, 40), CROP, dtype=np.uint8)
    lc[0, :26] = WETLAND
    lc[1, :24] = WATER
    dem = dict(d8=np.zeros((40, 40), np.uint8), accumulation=np.ones((40, 40)),
               slope_deg=np.zeros((40, 40)), depression_depth_m=np.zeros((40, 40)))
    sites = gpd.GeoDataFrame({"site_id": ["all"]}, geometry=[shapely.box(0, 0, 400, 400)], crs=CRS)
    r = site_indicators(sites, GRID, dem, {1: dict(canonical=lc)}, None, ATTRS, PARAMS).iloc[0]
    assert r.n_structure_classes == 1
    p = np.array([26, 24]) / 50
    assert r.shannon_natural == pytest.approx(-(p * np.log(p)).sum())   # 0.6923
    # RING1K lies off the grid: no cells -> NaN shares and no patch count
    assert math.isnan(r.ring_high_intensity_share) and pd.isna(r.ring_undisturbed_patches)
    assert math.isnan(r.ring_accessible_pct) and math.isnan(r.near_pollutant_share)
    # nodata (255) cells drop out of the denominator
    lc[2:, :] = 255
    r = site_indicators(sites, GRID, dem, {1: dict(canonical=lc)}, None, ATTRS, PARAMS).iloc[0]
    assert r.natural_share == pytest.approx(50 / 80)
    # HQ is capped at 100: weights 0.35 everywhere would give 178.9
    attrs = {k: {**v, "hq_weight": 0.35} for k, v in ATTRS.items()}
    r = site_indicators(sites, GRID, dem, {1: dict(canonical=lc)}, None, attrs, PARAMS).iloc[0]
    assert r.habitat_quality == 100.0


def test_errors_are_typed():
    sites, dem, lc, layers = build_basin()
    bad = dict(dem, slope_deg=np.zeros((39, 40)))
    with pytest.raises(InputDataError, match="shape"):
        run(dem=bad)
    c = lc["baseline"]["canonical"].copy()
    c[0, 0] = 42
    with pytest.raises(InputDataError, match="42"):
        run(lc={"x": dict(lc["baseline"], canonical=c)})
    two = pd.concat([sites, sites], ignore_index=True)
    with pytest.raises(InputDataError, match="duplicate"):
        run(sites=two)
    with pytest.raises(InputDataError, match="unknown"):
        run(params={"near_bufer_m": 3})
    with pytest.raises(InputDataError, match="canonical class"):
        run(params={"intensive_classes": ["cropland", "urban"]})
    with pytest.raises(InputDataError, match="analysis CRS"):
        run(sites=sites.set_crs("EPSG:32651", allow_override=True))
    with pytest.raises(InputDataError, match="analysis CRS"):
        run(sites=gpd.GeoDataFrame(sites.drop(columns="geometry"), geometry=list(sites.geometry)))
    with pytest.raises(InputDataError, match="species"):
        run(layers={"species": gpd.GeoDataFrame(geometry=[shapely.Point(0, 0)], crs="EPSG:4326")})
    with pytest.raises(InputDataError, match="observed_class"):
        run(layers={"monitoring_sections": gpd.GeoDataFrame(geometry=[shapely.Point(0, 0)], crs=CRS)})
    with pytest.raises(InputDataError, match="GB 3838"):
        gb3838_rank("VI")


def test_small_parsers():
    assert [gb3838_rank(v) for v in ("I", "Ⅱ", "III类", "iv", 5, "劣Ⅴ", "劣V")] == [1, 2, 3, 4, 5, 6, 6]
    assert math.isnan(count_special_features(None))      # nothing listed: NaN, not 0
    assert math.isnan(count_special_features(float("nan")))
    assert math.isnan(count_special_features(" ; "))
    assert count_special_features(4) == 4
    assert count_special_features(["snag", "island"]) == 2
    assert count_special_features("snag;;island, ") == 2


def test_missing_inputs_give_missing_values_not_zeros():
    sites, dem, lc, layers = build_basin()
    sites = sites.drop(columns=["in_wq_plan", "special_features"])
    v = dict(lc["baseline"])
    c = v["canonical"].copy()
    c[15:25, 15:25] = CROP               # no natural cover in S, no patch touches it
    v["canonical"] = c
    p = v["patch_id"].copy()
    p[15:25, 15:25] = 0
    v["patch_id"] = p
    df = run(sites=sites, lc={"b": v}, layers={})
    r = df.iloc[0]
    # no layer supplied -> <NA> (the rulebook reports "not assessed"), never False
    for name in ("point_source_near", "path_failing_section", "protected_inside",
                 "protected_within_100m", "species_within_1km", "in_wq_plan", "in_flood_plan",
                 "in_habitat_plan", "n_special_features"):
        assert pd.isna(r[name]), name
    assert math.isnan(r.path_wq_target_km) and math.isnan(r.clay_organic_share)
    assert r.shannon_natural == 0.0                       # no natural cover in S: no diversity
    assert r.n_structure_classes == 0
    assert r.largest_patch_ha == 0.0 and r.site_dpc_pct == 0.0  # patches given, none touch S
    # nullable dtypes: bools "boolean", counts "Int64", the rest float64
    assert str(df.point_source_near.dtype) == "boolean"
    assert str(df.protected_within_100m.dtype) == "Int64"
    assert df.area_ha.dtype == np.float64
    # an empty layer is an answer: False / 0
    empty = gpd.GeoDataFrame(geometry=[], crs=CRS)
    r = run(sites=sites, lc={"b": v}, layers={"point_sources": empty, "species": empty,
                                              "protected_areas": empty}).iloc[0]
    assert bool(r.point_source_near) is False and bool(r.species_within_1km) is False
    assert bool(r.protected_inside) is False and r.protected_within_100m == 0


def test_per_cell_hq_weights_and_yaml_style_attributes():
    sites, dem, lc, layers = build_basin()
    v = dict(lc["baseline"])
    w = np.full((40, 40), 0.2)
    w[15:20, 15:25] = 0.1                  # half of S at 0.1, half at 0.2 -> mean 0.15
    w[24, 24] = np.nan                     # a nodata weight drops out
    v["hq_weight"] = w
    r = run(lc={"b": v}).iloc[0]
    assert r.habitat_quality == pytest.approx(511.2642131067 * (50 * 0.1 + 49 * 0.2) / 99)
    # the attribute names of configs/landcover/canonical.yaml are accepted
    alias = {k: {"natural": a["natural"], "intensity": a["intensity"],
                 "pollutant_generating": a["pollutant"], "runoff_generating": a["runoff"],
                 "impervious_fraction": a["impervious"], "hq_weight": a["hq_weight"],
                 "persistent_vegetation": a["persistent_veg"]} for k, a in ATTRS.items()}
    s0, d0, l0, y0 = build_basin()
    a = site_indicators(s0, GRID, d0, l0, y0, ATTRS, PARAMS)
    b = site_indicators(s0, GRID, d0, l0, y0, alias, PARAMS)
    pd.testing.assert_frame_equal(a, b)


def test_the_shipped_canonical_table_is_accepted():
    classes = pytest.importorskip("pipeline.io.classes", reason="canonical-table loader not in this tree")
    from pipeline.indicators.sites import ClassLookup

    shipped = ClassLookup(classes.load_canonical())
    mine = ClassLookup(ATTRS)   # METHOD.md §3 by hand, CLCD-style default sub-classes
    for name in ("valid", "natural", "intensity", "pollutant", "runoff", "impervious",
                 "hq_weight", "persistent"):
        np.testing.assert_allclose(getattr(shipped, name), getattr(mine, name), err_msg=name)


def test_patch_values_as_per_cell_rasters_like_the_landscape_outputs():
    # pipeline.indicators.landscape writes patch_area_ha / patch_dpc as rasters where
    # every cell carries its patch's value (NaN off patches); same answer as a table.
    sites, dem, lc, layers = build_basin()
    v = dict(lc["baseline"])
    pid = v["patch_id"]
    area = np.full(pid.shape, np.nan)
    dpc = np.full(pid.shape, np.nan)
    for k in (3, 5, 7, 9):
        area[pid == k] = v["patch_area_ha"][k]
        dpc[pid == k] = v["patch_dpc"][k]
    v["patch_area_ha"], v["patch_dpc"] = area, dpc
    r = run(lc={"b": v}).iloc[0]
    assert r.largest_patch_ha == pytest.approx(12.5) and r.site_dpc_pct == pytest.approx(0.95)
    # and as 1-D arrays indexed by patch id
    v["patch_area_ha"] = np.array([np.nan, 0, 0, 12.5, 0, 0.2, 0, 1.1, 0, 50.0])
    v["patch_dpc"] = np.array([np.nan, 0, 0, 0.8, 0, 0.1, 0, 0.05, 0, 10.0])
    r = run(lc={"b": v}).iloc[0]
    assert r.largest_patch_ha == pytest.approx(12.5) and r.site_dpc_pct == pytest.approx(0.95)
