"""Bounded-memory site indicators (issue 8): the CB walk without a grid-sized buffer,
site indicators read from GeoTIFFs window by window equal the whole-array answer,
and only D8 and the class rasters are ever read whole."""

from __future__ import annotations

import shutil

import geopandas as gpd
import numpy as np
import pandas as pd
import pyflwdir
import pytest
import rasterio
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from pipeline.indicators import sites as S
from pipeline.indicators.geometry import D8_NODATA, path_line
from pipeline.kernels import sites as K

E, SE, SO, SW, W, NW, N, NE = 1, 2, 4, 8, 16, 32, 64, 128


def _cb(d8, sites_seeds, values, acc=None, cells=()):
    """CB sizes, class counts and point-source membership of several seed sets, the
    way _DemPart takes them: lowest seeds, their upstream totals, the D8 path below
    the query cells."""
    grid = S.as_grid((Affine(1, 0, 0, 0, -1, d8.shape[0]), "EPSG:32650", d8.shape))
    part = S._DemPart.__new__(S._DemPart)
    part.seeds = [np.unique(np.asarray(s, dtype=np.int64)) for s in sites_seeds]
    part.seeds = [s[d8.ravel()[s] != D8_NODATA] for s in part.seeds]
    lowest, lowest_acc = [], []
    for s in part.seeds:
        if s.size:
            r0, c0, mask = S._box_mask(s, d8.shape[1])
            low = s[K.lowest_seeds(d8, s, r0, c0, mask, D8_NODATA)]
        else:
            low = s
        lowest.append(low)
        lowest_acc.append(np.zeros(low.size) if acc is None else acc.ravel()[low].astype(float))
    n, counts = part._cb_counts(d8, values, lowest, lowest_acc)
    inside = part._cells_in_cb(d8, np.unique(np.asarray(cells, dtype=np.int64)), grid)
    return n, counts, inside


def test_cb_by_hand():
    # 3 x 4 grid, every cell flows east into column 3, which flows south to the
    # outlet (2,3). Site A = {(1,2)}: CB = (1,0), (1,1) -> 2 cells.
    # Site B = {(0,3), (2,3)}: (0,3) drains into (1,3) -> (2,3), so CB(B) is
    # everything but its two seeds: 12 - 2 = 10 cells, (1,3) between two seeds included.
    d8 = np.full((3, 4), E, np.uint8)
    d8[:2, 3] = SO
    d8[2, 3] = 0
    vals = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    n, counts, inside = _cb(d8, [[6], [3, 11]], vals, cells=[4])
    assert n == [2, 10]
    assert counts[0][0].nonzero()[0].tolist() == [4, 5]
    assert counts[1][0, [3, 11]].tolist() == [0, 0] and counts[1][0].sum() == 10 and counts[1][0, 7] == 1
    assert inside.tolist() == [True, True]          # (1,0) drains through (1,2) and (2,3)
    # a point source on a seed of B is not in CB(B), but it is in CB of a site below
    assert _cb(d8, [[6], [3, 11], [10]], vals, cells=[3])[2].tolist() == [False, False, False]
    assert _cb(d8, [[7], [3]], vals, cells=[3])[2].tolist() == [True, False]
    # a nodata cell never drains anywhere; a site with no cell has an empty CB
    d8[1, 0] = D8_NODATA
    assert _cb(d8, [[6], []], vals)[0] == [1, 0]


def _random_d8(seed, shape=(40, 50)):
    rng = np.random.default_rng(seed)
    dem = ndimage.gaussian_filter(rng.random(shape), 2) * 50 + np.linspace(10, 0, shape[0])[:, None]
    flw = pyflwdir.from_dem(dem.astype(np.float32), latlon=False)
    d8 = flw.to_array("d8")
    acc = flw.upstream_area("cell")
    d8[rng.random(shape) < 0.02] = D8_NODATA
    return d8, acc, rng


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), nsites=st.integers(1, 6), nq=st.integers(0, 20),
       by_acc=st.booleans())
def test_cb_equals_the_bfs_with_a_visited_grid(seed, nsites, nq, by_acc):
    # reference: upstream_cells (BFS with a grid-sized visited buffer) per site, then
    # counts and isin. Sites are random blobs, nested and overlapping ones included;
    # the order the upstream areas are done in must not matter (by_acc False: none).
    d8, acc, rng = _random_d8(seed)
    size = d8.size
    sites = []
    for _ in range(nsites):
        r, c, h, w = rng.integers(0, 40), rng.integers(0, 50), rng.integers(1, 6), rng.integers(1, 6)
        rr, cc = np.mgrid[r:min(40, r + h), c:min(50, c + w)]
        cells = (rr * 50 + cc).ravel()
        sites.append(cells[rng.random(cells.size) < 0.8])
    vals = rng.integers(0, 12, (2, *d8.shape)).astype(np.uint8)
    q = np.unique(rng.integers(0, size, nq))
    n, counts, inside = _cb(d8, sites, vals, acc if by_acc else None, q)
    for i, s in enumerate(sites):
        s = np.unique(s)
        s = s[d8.ravel()[s] != D8_NODATA]
        cb = K.upstream_cells(d8, s, D8_NODATA, np.zeros(size, np.uint8))
        assert n[i] == cb.size
        for k in range(2):
            np.testing.assert_array_equal(counts[i][k], np.bincount(vals[k].ravel()[cb], minlength=256))
        assert inside[i] == np.isin(q, cb).any()


def test_a_d8_loop_is_reported_not_walked_forever():
    # (0,0) E -> (0,1) S -> (1,1) W -> (1,0) N -> (0,0): a loop, which no D8 derived
    # from a DEM has; (2,0) drains N into it.
    d8 = np.zeros((3, 2), np.uint8)
    d8[0, 0], d8[0, 1], d8[1, 1], d8[1, 0] = E, SO, W, N
    d8[2, 0] = N
    vals = np.ones((1, 3, 2), np.uint8)
    n, _ = K.upstream_totals(d8, np.array([0], np.int64), np.array([0], np.int64), D8_NODATA, vals,
                             np.zeros(256, np.int64), 1)
    assert n[0] == -1


def test_histogram_u8():
    a = np.random.default_rng(3).integers(0, 256, (37, 41)).astype(np.uint8)
    np.testing.assert_array_equal(K.histogram_u8(a), np.bincount(a.ravel(), minlength=256))


@pytest.mark.parametrize("far_m", [0.0, 45.0, 300.0, 1e9])
def test_path_head_keeps_the_buffered_lines(far_m):
    # PATH is kept up to the first cell past the longest buffered length; the lines
    # path_line draws (first L metres) are then the same as from the whole PATH
    grid = (Affine(30, 0, 0, 0, -30, 3000), "EPSG:32650", (100, 100))
    # codes E, SE or S at random: a staircase path with straight and diagonal runs
    # that leaves the grid after 100..200 cells
    d8 = np.random.default_rng(5).choice(np.array([E, SE, SO], np.uint8), (100, 100))
    start = 0
    pidx, cum = K.downstream_path(d8, np.int64(start), D8_NODATA, 30.0, 30.0)
    assert cum[-1] > 300
    hi, hc = S._path_head(pidx, cum, far_m)
    assert hi.size <= pidx.size and (hi == pidx[:hi.size]).all()
    for L in {0.0, far_m / 2, far_m}:
        if L > 0:
            assert shapely.equals_exact(path_line(pidx, cum, grid, L), path_line(hi, hc, grid, L), 0.0)


# ------------------------------------------------------------- files vs arrays

CRS = "EPSG:32650"
NROWS, NCOLS, CELL = 120, 110, 30.0
X0, Y1 = 500_000.0, 4_000_000.0
TR = Affine(CELL, 0, X0, 0, -CELL, Y1)
GRID = (TR, CRS, (NROWS, NCOLS))
ATTRS = {code: dict(zip(("natural", "intensity", "pollutant", "runoff", "impervious", "hq_weight",
                         "persistent_veg"), v)) for code, v in {
    1: (True, "undisturbed", False, False, 0.0, 0.21, True),
    2: (True, "undisturbed", False, False, 0.0, 0.0875, True),
    3: (True, "undisturbed", False, False, 0.0, 0.063, True),
    4: (True, "undisturbed", False, False, 0.0, 0.168, True),
    5: (True, "undisturbed", False, False, 0.0, 0.084, False),
    6: (False, "moderate", True, True, 0.0, 0.044, False),
    7: (False, "high", True, True, 0.8, 0.012, False),
    8: (False, "low", False, True, 0.0, 0.002, False),
    9: (False, "low", False, False, 0.0, 0.001, False)}.items()}
PARAMS = dict(landscape_buffer_m=300, near_buffer_m=50, riparian_buffer_m=60,
              path_assets_near_km=0.5, path_assets_far_km=1.0)


def _basin(seed: int):
    """A random basin as the pipeline's steps write it: uint32 accumulation with
    nodata 0, float32 slope / depth / distances, int32 patch ids, 0/1/255 streams."""
    rng = np.random.default_rng(seed)
    dem = ndimage.gaussian_filter(rng.random((NROWS, NCOLS)), 3) * 100 + np.linspace(60, 0, NROWS)[:, None]
    flw = pyflwdir.from_dem(dem.astype(np.float32), latlon=False)
    d8 = flw.to_array("d8")
    d8[:, :2] = D8_NODATA                          # outside the basin
    acc = flw.accuflux(np.ones((NROWS, NCOLS))).astype(np.uint32)
    acc[d8 == D8_NODATA] = 0
    field = ndimage.gaussian_filter(rng.random((NROWS, NCOLS)), 2)
    lc = (np.digitize(field, np.quantile(field, np.linspace(0, 1, 10)[1:-1])) + 1).astype(np.uint8)
    lc[rng.random((NROWS, NCOLS)) < 0.01] = 255
    patch, npatch = ndimage.label(np.isin(lc, (1, 2, 3, 4, 5)), structure=np.ones((3, 3)))
    streams = (acc >= 80).astype(np.uint8)
    streams[d8 == D8_NODATA] = 255
    dist = ndimage.distance_transform_edt(streams != 1, sampling=CELL).astype(np.float32)
    rasters = dict(
        d8=d8, accumulation=acc, canonical=lc, patch_id=patch.astype(np.int32), streams=streams,
        slope_deg=(rng.random((NROWS, NCOLS)) * 15).astype(np.float32),
        depression_depth_m=np.where(rng.random((NROWS, NCOLS)) < 0.2, 0.3, 0.0).astype(np.float32),
        dist_to_stream_m=dist,
        hq_weight=np.where(rng.random((NROWS, NCOLS)) < 0.05, np.nan,
                           rng.random((NROWS, NCOLS))).astype(np.float32))
    areas = np.bincount(patch.ravel()) * CELL * CELL / 1e4
    dpc = rng.random(npatch + 1)
    geoms = [shapely.Point(X0 + rng.uniform(300, NCOLS * CELL - 300),
                           Y1 - rng.uniform(300, NROWS * CELL - 300)).buffer(rng.uniform(20, 200), quad_segs=5)
             for _ in range(8)]
    geoms.append(shapely.box(X0 + 1201, Y1 - 1209, X0 + 1210, Y1 - 1201))    # smaller than a cell
    geoms.append(shapely.box(X0 - 500, Y1 - 900, X0 + 200, Y1 - 600))       # partly off the grid
    sites = gpd.GeoDataFrame({"site_id": [f"s{i}" for i in range(len(geoms))]}, geometry=geoms, crs=CRS)
    pts = gpd.GeoDataFrame(geometry=[shapely.Point(X0 + 1000 + 300 * k, Y1 - 700 - 250 * k) for k in range(8)],
                           crs=CRS)
    layers = dict(point_sources=pts, wq_targets=gpd.GeoDataFrame(
        geometry=[shapely.box(X0, Y1 - NROWS * CELL, X0 + NCOLS * CELL, Y1 - 3000)], crs=CRS))
    return rasters, areas, dpc, sites, layers


def _write(folder, rasters):
    paths = {}
    for name, a in rasters.items():
        p = folder / f"{name}.tif"
        with rasterio.open(p, "w", driver="GTiff", width=NCOLS, height=NROWS, count=1, dtype=a.dtype,
                           crs=CRS, transform=TR, tiled=True, blockxsize=32, blockysize=32,
                           compress="deflate") as dst:
            dst.write(a, 1)
        paths[name] = p
    return paths


def _changed(lc):
    """The second vintage: a block built over."""
    lc2 = lc.copy()
    lc2[40:70, 30:60] = 7
    return lc2


def _inputs(r, areas, dpc, as_file):
    """dem_stats and two vintages (the second with changed classes) from arrays or files."""
    if "canonical2" not in r:
        r = dict(r, canonical2=_changed(r["canonical"]))
    src = (lambda k: S.RasterFile(r[k])) if as_file else (lambda k: r[k])
    streams = S.RasterFile(r["streams"], equals=1) if as_file else r["streams"] == 1
    dem = {k: src(k) for k in ("d8", "accumulation", "slope_deg", "depression_depth_m")}
    v = dict(patch_id=src("patch_id"), patch_area_ha=areas, patch_dpc=dpc, stream_mask=streams,
             dist_to_stream_m=src("dist_to_stream_m"))
    return dem, {2015: dict(v, canonical=src("canonical"), hq_weight=src("hq_weight")),
                 2023: dict(v, canonical=src("canonical2"))}


@pytest.mark.parametrize("seed", [0, 1])
def test_geotiffs_read_in_windows_give_the_whole_array_table(seed, tmp_path):
    r, areas, dpc, sites, layers = _basin(seed)
    paths = _write(tmp_path, dict(r, canonical2=_changed(r["canonical"])))
    whole = S.site_indicators(sites, GRID, *_inputs(r, areas, dpc, False), layers, ATTRS, PARAMS)
    windowed = S.site_indicators(sites, GRID, *_inputs(paths, areas, dpc, True), layers, ATTRS, PARAMS)
    pd.testing.assert_frame_equal(whole, windowed, check_exact=True)
    # the table is not trivial: CB, PATH, patches, riparian and point sources all answer
    assert (whole.cb_area_ha > 0).sum() >= 5 and whole.path_wq_target_km.notna().any()
    assert whole.riparian_natural_share.notna().any() and (whole.largest_patch_ha > 0).any()
    assert whole.point_source_near.fillna(False).any()
    assert (whole[whole.vintage == 2023].cb_intensive_share.to_numpy()
            != whole[whole.vintage == 2015].cb_intensive_share.to_numpy()).any()


@pytest.mark.parametrize("seed", [0, 1])
def test_stream_distances_computed_around_each_site_equal_the_basin_wide_ones(seed):
    # without dist_to_stream_m, distances come from an EDT of a window grown by the
    # riparian buffer; same answer as scipy's EDT of the whole grid
    r, areas, dpc, sites, layers = _basin(seed)
    dem, lcs = _inputs(r, areas, dpc, False)
    full = S.site_indicators(sites, GRID, dem, lcs, layers, ATTRS, PARAMS)
    for v in lcs.values():
        v["dist_to_stream_m"] = None
    local = S.site_indicators(sites, GRID, dem, lcs, layers, ATTRS, PARAMS)
    pd.testing.assert_frame_equal(full, local, check_exact=True)
    assert full.riparian_natural_share.notna().sum() >= 3


def test_only_d8_and_class_rasters_are_read_whole(tmp_path, monkeypatch):
    r, areas, dpc, sites, layers = _basin(0)
    lc2 = r["canonical"].copy()
    paths = _write(tmp_path, dict(r, canonical2=lc2))
    whole_reads, windows = [], []
    read_into, window = S._Source.read_into, S._Source.window

    def spy_read_into(self, out):
        whole_reads.append(self.name)
        return read_into(self, out)

    def spy_window(self, r0, r1, c0, c1):
        windows.append((self.name, (r1 - r0) * (c1 - c0)))
        return window(self, r0, r1, c0, c1)

    monkeypatch.setattr(S._Source, "read_into", spy_read_into)
    monkeypatch.setattr(S._Source, "window", spy_window)
    small = sites.iloc[:8]
    S.site_indicators(small, GRID, *_inputs(paths, areas, dpc, True), layers, ATTRS,
                      dict(PARAMS, landscape_buffer_m=150))
    assert sorted(whole_reads) == ["dem_stats.d8", "landcover[2015].canonical", "landcover[2023].canonical"]
    # every other read is a window around one site's RING1K (r = 150 m + 200 m site
    # radius: at most 26 x 26 cells with the cells cut by the edge)
    other = [a for name, a in windows if "canonical" not in name and "d8" not in name]
    assert other and max(other) <= 26 * 26 < NROWS * NCOLS / 15


def test_a_raster_on_another_grid_is_refused(tmp_path):
    r, areas, dpc, sites, layers = _basin(0)
    paths = _write(tmp_path, r)
    with rasterio.open(paths["slope_deg"], "r+") as ds:
        ds.transform = Affine(CELL, 0, X0 + 15, 0, -CELL, Y1)
    dem, lcs = _inputs(dict(paths, canonical2=paths["canonical"]), areas, dpc, True)
    with pytest.raises(S.InputDataError, match="not on the basin grid"):
        S.site_indicators(sites, GRID, dem, lcs, layers, ATTRS, PARAMS)


# ------------------------------------------------- the tiny demo basin, end to end

@pytest.fixture(scope="module")
def tiny_out(tiny_template, tmp_path_factory):
    from conftest import run_cli

    base = tmp_path_factory.mktemp("sites_windowed")
    shutil.copytree(tiny_template, base / "basin")
    res = run_cli("assess", str(base / "basin" / "tiny.yaml"), "--out", str(base / "out"))
    assert res.returncode == 0, res.stderr
    return base / "basin" / "tiny.yaml", base / "out"


def test_run_site_indicators_from_files_equals_whole_arrays_on_the_tiny_basin(tiny_out):
    from pipeline.config import load_config
    from pipeline.io.ingest import apply_parameter_overrides, check_inputs
    from pipeline.run import (_SITE_LAYER_NAMES, _SITE_PARAM_NAMES, Hydrology, _canonical_attrs, _patch_lookup,
                              _read, run_site_indicators)
    from pipeline.scoring.rulebook import load_rulebook

    cfg_path, out = tiny_out
    cfg = load_config(cfg_path)
    ing = check_inputs(cfg)
    params = {k: p.value for k, p in apply_parameter_overrides(load_rulebook(cfg.rulebook), cfg).parameters.items()}
    hyd = Hydrology({p.stem: p for p in (out / "hydrology").glob("*.tif")}, None)
    land = {v.name: {p.stem: p for p in (out / "indicators" / v.name).glob("*.tif")}
            | {"patch_table": out / "indicators" / v.name / "patches.csv"} for v in cfg.landcover}
    got = run_site_indicators(ing, {v.name: hyd for v in cfg.landcover}, land, params)
    # the same inputs as whole numpy arrays (what run_site_indicators handed over before)
    streams = _read(hyd.paths["streams"]) == 1
    dem = {k: _read(hyd.paths[k]) for k in ("slope_deg", "depression_depth_m", "d8", "accumulation")}
    lcs = {}
    for v in cfg.landcover:
        t = pd.read_csv(land[v.name]["patch_table"])
        lcs[v.name] = dict(year=v.year, canonical=_read(land[v.name]["canonical"]),
                           patch_id=_read(land[v.name]["patch_id"]), patch_area_ha=_patch_lookup(t, "area_ha"),
                           patch_dpc=_patch_lookup(t, "dpc"), stream_mask=streams,
                           dist_to_stream_m=_read(land[v.name]["dist_to_stream_m"]))
    want = S.site_indicators(ing.sites, (ing.grid.transform, ing.grid.crs, ing.grid.shape), dem, lcs,
                             layers={_SITE_LAYER_NAMES.get(k, k): v for k, v in ing.layers.items()},
                             attrs=_canonical_attrs(),
                             params={d: params[s] for s, d in _SITE_PARAM_NAMES.items() if s in params})
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    # and the published table was made from these rows
    table = pd.read_csv(out / "tables" / "sites.csv")
    assert set(table["site_id"]) == set(got["site_id"])
