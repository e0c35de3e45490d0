"""Site indicators on a random basin: invariants, site-order independence and
independence of the other sites (each site alone gives the same row)."""

from __future__ import annotations

import functools
import math

import geopandas as gpd
import numpy as np
import pandas as pd
import pyflwdir
import pytest
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from pipeline.indicators.catalog import INDICATORS
from pipeline.indicators.sites import site_indicators

# METHOD.md §3 class attributes (the same table as tests/test_sites.py; repeated so
# this module does not import another test module)
_A = ("natural", "intensity", "pollutant", "runoff", "impervious", "hq_weight", "persistent_veg")
ATTRS = {code: dict(zip(_A, v)) for code, v in {
    1: (True, "undisturbed", False, False, 0.0, 0.35 * 0.6, True),
    2: (True, "undisturbed", False, False, 0.0, 0.35 * 0.25, True),
    3: (True, "undisturbed", False, False, 0.0, 0.21 * 0.3, True),
    4: (True, "undisturbed", False, False, 0.0, 0.28 * 0.6, True),
    5: (True, "undisturbed", False, False, 0.0, 0.28 * 0.3, False),
    6: (False, "moderate", True, True, 0.0, 0.11 * 0.4, False),
    7: (False, "high", True, True, 0.8, 0.04 * 0.3, False),
    8: (False, "low", False, True, 0.0, 0.01 * 0.2, False),
    9: (False, "low", False, False, 0.0, 0.01 * 0.1, False),
}.items()}

CRS = "EPSG:32650"
NROWS, NCOLS, CELL = 90, 80, 30.0
GRID = (Affine(CELL, 0, 500_000, 0, -CELL, 4_000_000), CRS, (NROWS, NCOLS))
PARAMS = dict(landscape_buffer_m=300, near_buffer_m=50, riparian_buffer_m=60,
              path_assets_near_km=0.5, path_assets_far_km=1.0)


@functools.lru_cache(maxsize=4)
def basin(seed: int):
    rng = np.random.default_rng(seed)
    dem = ndimage.gaussian_filter(rng.random((NROWS, NCOLS)), 3) * 100
    dem += np.linspace(50, 0, NROWS)[:, None]
    flw = pyflwdir.from_dem(dem.astype(np.float32), latlon=False)
    d8 = flw.to_array("d8")
    acc = flw.accuflux(np.ones((NROWS, NCOLS), dtype=np.float64))
    # land cover: smooth random field cut into the 9 classes, some nodata
    field = ndimage.gaussian_filter(rng.random((NROWS, NCOLS)), 2)
    q = np.quantile(field, np.linspace(0, 1, 10)[1:-1])
    lc = (np.digitize(field, q) + 1).astype(np.uint8)
    lc[rng.random((NROWS, NCOLS)) < 0.01] = 255
    natural = np.isin(lc, (1, 2, 3, 4, 5))
    patch, npatch = ndimage.label(natural, structure=np.ones((3, 3)))
    areas = np.bincount(patch.ravel()) * CELL * CELL / 1e4
    dpc = rng.random(npatch + 1)
    dpc[0] = 0
    stream = acc >= 60
    dist = ndimage.distance_transform_edt(~stream, sampling=CELL)
    x0, y1 = 500_000, 4_000_000
    geoms = []
    for _ in range(7):
        cx = x0 + rng.uniform(200, NCOLS * CELL - 200)
        cy = y1 - rng.uniform(200, NROWS * CELL - 200)
        geoms.append(shapely.Point(cx, cy).buffer(rng.uniform(20, 150), quad_segs=4))
    # a multipolygon site, and a site smaller than a cell
    geoms.append(shapely.MultiPolygon([shapely.box(x0 + 600, y1 - 700, x0 + 700, y1 - 650),
                                       shapely.box(x0 + 760, y1 - 700, x0 + 800, y1 - 600)]))
    geoms.append(shapely.box(x0 + 1201, y1 - 1209, x0 + 1210, y1 - 1201))
    sites = gpd.GeoDataFrame({"site_id": [f"s{i}" for i in range(len(geoms))],
                              "special_features": [i % 3 for i in range(len(geoms))]},
                             geometry=geoms, crs=CRS)
    dem_stats = dict(d8=d8, accumulation=acc, slope_deg=rng.random((NROWS, NCOLS)) * 15,
                     depression_depth_m=np.where(rng.random((NROWS, NCOLS)) < 0.2, 0.3, 0.0))
    lcs = {2015: dict(canonical=lc, patch_id=patch, patch_area_ha=areas, patch_dpc=dpc,
                      stream_mask=stream, dist_to_stream_m=dist)}
    pts = gpd.GeoDataFrame(geometry=[shapely.Point(x0 + 1000, y1 - 1000), shapely.Point(x0 + 2000, y1 - 300)],
                           crs=CRS)
    layers = dict(point_sources=pts, species=pts,
                  protected_areas=gpd.GeoDataFrame(geometry=[shapely.box(x0 + 500, y1 - 1500, x0 + 1500, y1 - 500)], crs=CRS),
                  wq_targets=gpd.GeoDataFrame(geometry=[shapely.box(x0, y1 - NROWS * CELL, x0 + NCOLS * CELL, y1 - 2000)], crs=CRS))
    return sites, dem_stats, lcs, layers


@functools.lru_cache(maxsize=4)
def reference(seed: int) -> pd.DataFrame:
    sites, dem, lcs, layers = basin(seed)
    return site_indicators(sites, GRID, dem, lcs, layers, ATTRS, PARAMS)


def _same(a: pd.DataFrame, b: pd.DataFrame):
    a = a.sort_values("site_id").reset_index(drop=True)
    b = b.sort_values("site_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12, atol=1e-12)


@settings(max_examples=8, deadline=None)
@given(seed=st.sampled_from([0, 1]), perm=st.permutations(range(9)))
def test_result_does_not_depend_on_site_order(seed, perm):
    sites, dem, lcs, layers = basin(seed)
    shuffled = sites.iloc[list(perm)].reset_index(drop=True)
    _same(reference(seed), site_indicators(shuffled, GRID, dem, lcs, layers, ATTRS, PARAMS))


@pytest.mark.parametrize("seed", [0, 1])
def test_each_site_alone_gives_the_same_row(seed):
    sites, dem, lcs, layers = basin(seed)
    ref = reference(seed)
    rows = [site_indicators(sites.iloc[[i]], GRID, dem, lcs, layers, ATTRS, PARAMS) for i in range(len(sites))]
    _same(ref, pd.concat(rows, ignore_index=True))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_invariants(seed):
    df = reference(seed)
    sites, dem, lcs, layers = basin(seed)
    assert len(df) == len(sites)
    for ind in INDICATORS:
        v = df[ind.name].to_numpy(dtype=float)
        ok = v[~np.isnan(v)]
        if ind.unit == "fraction":
            assert np.all((ok >= 0) & (ok <= 1 + 1e-12)), ind.name
        if ind.unit == "percent":
            assert np.all((ok >= 0) & (ok <= 100 + 1e-9)), ind.name
    # (NaN compares False, so each check first says which values may be missing)
    assert df[["ring_accessible_pct", "ring_undisturbed_pct", "natural_share",
               "habitat_quality", "n_structure_classes"]].notna().all().all()
    assert np.all(df.ring_accessible_pct <= df.ring_undisturbed_pct + 1e-9)
    assert np.all(df.persistent_veg_share <= df.natural_share + 1e-12)
    assert np.all(df.wetland_water_share <= df.natural_share + 1e-12)
    assert np.all((df.habitat_quality >= 0) & (df.habitat_quality <= 100))
    # Shannon is NaN exactly where S has no natural cover
    assert not df.shannon_natural.isna().any()
    assert (df.shannon_natural[df.natural_share == 0] == 0).all()
    assert np.all(df.shannon_natural.dropna().between(0, math.log(5) + 1e-12))
    assert np.all(df.n_structure_classes.between(0, 5))
    # largest patch is NaN exactly where no natural cell is touched, else >= a cell
    touching = df.largest_patch_ha > 0          # 0 = no natural patch touches the site
    assert np.all(df.largest_patch_ha[touching] >= CELL * CELL / 1e4 - 1e-12)
    assert (df.site_dpc_pct[~touching] == 0).all()
    cells = df.cb_area_ha / (CELL * CELL / 1e4)
    np.testing.assert_allclose(cells, np.round(cells))
    np.testing.assert_allclose(df.cb_area_ratio, df.cb_area_ha / df.area_ha)
    np.testing.assert_allclose(df.area_ha, shapely.area(sites.geometry.to_numpy()) / 1e4)
    # every site, even the one smaller than a cell, has an outlet and a PATH buffer
    assert df.path_assets_share_5km.notna().all()
    # the wq target band (the south of the basin) is reached by PATH of some sites
    assert (df.path_wq_target_km.dropna() >= 0).all()


@pytest.mark.parametrize("chunks", [(7, 11), (90, 3), (13, 80)])
def test_dask_backed_inputs_with_odd_chunks_give_the_same_table(chunks):
    import xarray as xr

    sites, dem, lcs, layers = basin(0)

    def lazy(a):
        return xr.DataArray(a, dims=("y", "x")).chunk({"y": chunks[0], "x": chunks[1]})

    dem_l = {k: lazy(v) for k, v in dem.items()}
    lcs_l = {v: {k: (lazy(a) if isinstance(a, np.ndarray) and a.ndim == 2 else a)
                 for k, a in d.items()} for v, d in lcs.items()}
    pd.testing.assert_frame_equal(reference(0),
                                  site_indicators(sites, GRID, dem_l, lcs_l, layers, ATTRS, PARAMS))
