"""Land-cover scheme tables (configs/landcover/) and reclassification (pipeline.io.classes)."""

from __future__ import annotations

import shutil

import dask.array as dsa
import numpy as np
import pytest
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import ConfigError, InputDataError, PipelineError
from pipeline.indicators.catalog import CLASS_CODES, CLASS_NODATA
from pipeline.io import classes as C

# Codes typed from each product's own documentation (not read from our tables):
#   CLCD: Yang & Huang 2021 ESSD Table 1 (1 cropland .. 9 wetland)
#   ESA WorldCover PUM v2 legend: 10,20,...,100 and 95 mangroves
#   GlobeLand30 product description: 10..100 by tens
#   MCD12Q1 LC_Type1 (IGBP): 1..17 (17 water); MCD12C1 Majority_Land_Cover_Type_1: 0..16 (0 water)
#   CAS RESDC CNLUCC level-2 codes
PRODUCT_CODES = {
    "clcd": [1, 2, 3, 4, 5, 6, 7, 8, 9],
    "esa_worldcover": [10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100],
    "globeland30": [10, 20, 30, 40, 50, 60, 70, 80, 90, 100],
    "modis_igbp_q1": list(range(1, 18)),
    "modis_igbp_c1": list(range(0, 17)),
    "cn_landuse": [11, 12, 21, 22, 23, 24, 31, 32, 33, 41, 42, 43, 44, 45, 46,
                   51, 52, 53, 61, 62, 63, 64, 65, 66, 67, 99],
}

F, S, G, WE, WA, CR, B, BA, OT = (CLASS_CODES[k] for k in
                                 ("forest", "shrub", "grassland", "wetland", "water", "cropland",
                                  "built_up", "bare", "other"))
# Canonical classes typed from LANDCOVER.md, code by code.
EXPECTED_CANONICAL = {
    "clcd": {1: CR, 2: F, 3: S, 4: G, 5: WA, 6: OT, 7: BA, 8: B, 9: WE},
    "esa_worldcover": {10: F, 20: S, 30: G, 40: CR, 50: B, 60: BA, 70: OT, 80: WA, 90: WE, 95: WE, 100: G},
    "globeland30": {10: CR, 20: F, 30: G, 40: S, 50: WE, 60: WA, 70: G, 80: B, 90: BA, 100: OT},
    "modis_igbp_q1": {17: WA, 1: F, 2: F, 3: F, 4: F, 5: F, 6: S, 7: S, 8: F, 9: G, 10: G, 11: WE,
                      12: CR, 13: B, 14: CR, 15: OT, 16: BA},
    "modis_igbp_c1": {0: WA, 1: F, 2: F, 3: F, 4: F, 5: F, 6: S, 7: S, 8: F, 9: G, 10: G, 11: WE,
                      12: CR, 13: B, 14: CR, 15: OT, 16: BA},
    "cn_landuse": {11: CR, 12: CR, 21: F, 22: S, 23: F, 24: F, 31: G, 32: G, 33: G, 41: WA, 42: WA,
                   43: WA, 44: OT, 45: WE, 46: WE, 51: B, 52: B, 53: B, 61: BA, 62: BA, 63: BA,
                   64: WE, 65: BA, 66: BA, 67: BA, 99: WA},
}


def test_all_six_schemes_ship():
    assert set(C.available_schemes()) == set(PRODUCT_CODES)


@pytest.mark.parametrize("name", sorted(PRODUCT_CODES))
def test_table_maps_every_product_code(name):
    s = C.load_scheme(name)
    assert s.codes.tolist() == sorted(PRODUCT_CODES[name])
    assert s.code_map() == EXPECTED_CANONICAL[name]


@pytest.mark.parametrize("name", sorted(PRODUCT_CODES))
def test_every_entry_has_provenance(name):
    raw = yaml.safe_load((C.LANDCOVER_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
    for code, entry in raw["classes"].items():
        assert entry.get("source") or entry.get("assumption"), (name, code)
    assert raw["nodata_codes"].get("source") or raw["nodata_codes"].get("assumption")


def test_canonical_attributes_and_hj192_weights():
    t = C.load_canonical()
    nat = t.lut("natural")
    # natural: forest, shrub, grassland, wetland, water (METHOD.md §3)
    assert [int(nat[c]) for c in range(1, 10)] == [1, 1, 1, 1, 1, 0, 0, 0, 0]
    assert [int(v) for v in t.lut("intensive")[1:10]] == [0, 0, 0, 0, 0, 1, 1, 0, 0]
    assert [int(v) for v in t.lut("runoff")[1:10]] == [0, 0, 0, 0, 0, 1, 1, 1, 0]
    assert [int(v) for v in t.lut("pollutant")[1:10]] == [0, 0, 0, 0, 0, 1, 1, 0, 0]
    assert [int(v) for v in t.lut("persistent_vegetation")[1:10]] == [1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert t.lut("impervious")[B] == pytest.approx(0.8)
    assert np.isnan(t.lut("natural")[CLASS_NODATA])
    # forest -> 有林地: 0.6 x 0.35 = 0.21; shrub -> 灌木林地: 0.25 x 0.35 = 0.0875
    w = t.lut("hj192_weight")
    assert w[F] == pytest.approx(0.21)
    assert w[S] == pytest.approx(0.0875)
    # built-up -> 城镇 0.3 x 0.04 = 0.012; other -> 其他未利用地 0.1 x 0.01 = 0.001
    assert w[B] == pytest.approx(0.012)
    assert w[OT] == pytest.approx(0.001)


def test_habitat_quality_hand_worked():
    t = C.load_canonical()
    s = C.load_scheme("cn_landuse", t)
    # 2 cells 有林地 (0.6*0.35=0.21), 1 cell 水田 (0.6*0.11=0.066), 1 cell 城镇 (0.3*0.04=0.012)
    # mean = (0.42+0.066+0.012)/4 = 0.1245 ; HQ = 511.2642131067*0.1245 = 63.6523945...
    arr = np.array([[21, 21], [11, 51]])
    w = C.hj192_weight_array(arr, s)
    assert C.habitat_quality(w, t) == pytest.approx(511.2642131067 * 0.1245, rel=1e-6)
    # an all-forest area: 511.26*0.21 = 107.4 -> capped at 100
    assert C.habitat_quality(np.full(3, 0.21), t) == 100.0


def test_unknown_code_names_code_scheme_and_file():
    s = C.load_scheme("modis_igbp_q1")
    arr = np.array([[1, 0, 17], [255, 18, 5]])      # 0 is C1 water, 18 is nothing; 255 is nodata
    with pytest.raises(InputDataError) as ei:
        C.reclassify_array(arr, s, path="data/lc_2019.tif")
    msg = str(ei.value)
    assert "0, 18" in msg and "modis_igbp_q1" in msg and "data/lc_2019.tif" in msg


def test_unknown_code_in_dask_dataarray_is_found_before_work():
    s = C.load_scheme("clcd")
    a = np.ones((20, 30), np.uint8)
    a[17, 29] = 12
    da = xr.DataArray(dsa.from_array(a, chunks=(7, 11)), dims=("y", "x"))
    with pytest.raises(InputDataError, match=r"code\(s\) 12 .*'clcd'"):
        C.reclassify(da, s, path="clcd_2020.tif")


def test_reclassify_dataarray_keeps_grid_and_sets_nodata():
    s = C.load_scheme("esa_worldcover")
    a = np.array([[10, 20, 0], [95, 100, 50]], np.uint8)
    da = xr.DataArray(dsa.from_array(a, chunks=(1, 2)), dims=("y", "x"),
                      coords={"y": [1.5, 0.5], "x": [0.5, 1.5, 2.5]}, attrs={"long_name": "lc"})
    da = da.rio.write_crs("EPSG:32650")
    out = C.reclassify(da, s)
    assert isinstance(out.data, dsa.Array)
    np.testing.assert_array_equal(out.values, [[F, S, 255], [WE, G, B]])
    assert out.rio.crs.to_epsg() == 32650 and out.rio.nodata == CLASS_NODATA
    assert out.attrs["long_name"] == "lc"
    np.testing.assert_array_equal(out.x, da.x)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(sorted(PRODUCT_CODES)), st.data())
def test_reclassify_equals_dictionary_lookup(name, data):
    s = C.load_scheme(name)
    allowed = PRODUCT_CODES[name] + list(s.nodata_codes)
    vals = data.draw(st.lists(st.sampled_from(allowed), min_size=1, max_size=60))
    arr = np.array(vals, dtype=np.int64)
    out = C.reclassify_array(arr, s)
    expected = [EXPECTED_CANONICAL[name].get(v, CLASS_NODATA) for v in vals]
    assert out.dtype == np.uint8 and out.tolist() == expected


def test_float_raster_with_nan_nodata():
    s = C.load_scheme("clcd")
    out = C.reclassify_array(np.array([1.0, np.nan, 9.0]), s)
    assert out.tolist() == [CR, 255, WE]
    with pytest.raises(InputDataError, match="2.5"):
        C.reclassify_array(np.array([1.0, 2.5]), s)


def test_bad_table_reports_every_problem(tmp_path):
    src = C.LANDCOVER_DIR / "clcd.yaml"
    raw = yaml.safe_load(src.read_text(encoding="utf-8"))
    raw["classes"][1]["canonical"] = "farmland"
    raw["classes"][2]["hj192_sub_class"] = "jungle"
    shutil.copy(C.LANDCOVER_DIR / "canonical.yaml", tmp_path / "canonical.yaml")
    p = tmp_path / "clcd.yaml"
    p.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    with pytest.raises(PipelineError) as ei:
        C.load_scheme(p)
    assert "farmland" in str(ei.value) and "jungle" in str(ei.value)


def test_entry_without_source_rejected(tmp_path):
    raw = yaml.safe_load((C.LANDCOVER_DIR / "clcd.yaml").read_text(encoding="utf-8"))
    del raw["classes"][3]["source"]
    p = tmp_path / "clcd.yaml"
    p.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError, match="source"):
        C.load_scheme(p)


def test_modis_file_codes_are_all_known():
    """The real MCD12C1 clip (SOURCES.md) reclassifies without unknown codes."""
    from pathlib import Path

    import rasterio
    p = Path("/work/shared/data/yongding/landcover_modis_mcd12c1_2019_igbp.tif")
    if not p.exists():
        pytest.skip("shared reference data not present (/work/shared/data)")
    with rasterio.open(p) as src:
        a = src.read(1)
        nod = src.nodata
    out = C.reclassify_array(a, C.load_scheme("modis_igbp_c1"), nodata=nod, path=p)
    assert set(np.unique(out)) <= set(CLASS_CODES.values()) | {255}


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["uint8", "int8", "uint16", "int16", "int32", "float32"]), st.integers(0, 2**31 - 1),
       st.integers(1, 9))
def test_present_codes_equals_numpy_unique(dtype, seed, chunk):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    lo, hi = (int(info.min), int(info.max)) if info else (-5, 5)
    a = rng.integers(lo, hi, size=(7, 11), endpoint=True).astype(dtype)
    got = C.present_codes(dsa.from_array(a, chunks=chunk))
    np.testing.assert_array_equal(got, np.unique(a))
    assert got.dtype == a.dtype


@pytest.mark.parametrize("nodata", [None, 0, 255, -1])
def test_lookup_table_path_equals_general_path(nodata):
    """Integer rasters are mapped through a table (256/65536 entries for 8/16-bit, the
    block's [min, max] range otherwise, e.g. the aligned int32 rasters with nodata -1);
    the result equals the general path (searchsorted) for every scheme, with codes,
    nodata codes and unknown values mixed."""
    from pipeline.io import classes as C

    for name in C.available_schemes():
        sch = C.load_scheme(name)
        for dt in (np.uint8, np.uint16, np.int32, np.int64):
            if dt == np.uint8 and max(sch.codes) > 255:
                continue
            extra = [0, 250, 254, 255] + ([-1, -9999] if np.dtype(dt).kind == "i" else [])
            pool = np.concatenate([sch.codes, sch.nodata_codes, extra]).astype(np.int64)
            pool = pool[(pool >= np.iinfo(dt).min) & (pool < np.iinfo(dt).max)]
            arr = np.random.default_rng(1).choice(pool, size=(60, 70)).astype(dt)
            for vals, fill, od in ((sch.canonical, 255, np.uint8), (sch.weight, np.nan, np.float32)):
                fast = C._apply(arr, sch, vals, fill, nodata, od)
                slow = C._apply(arr.astype(np.float64), sch, vals, fill, nodata, od)   # general path
                assert fast.dtype == slow.dtype
                np.testing.assert_array_equal(fast, slow)
