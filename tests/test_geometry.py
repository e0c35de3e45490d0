"""Site geometry: CB, o, PATH kernels and zone / coverage helpers.

Hand-made D8 grids with expected cells worked out in the comments, plus
comparison with pyflwdir (an independent D8 implementation) on random DEMs.
"""

from __future__ import annotations

import math

import numpy as np
import pyflwdir
import pytest
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import InputDataError
from pipeline.indicators import geometry as G
from pipeline.kernels import sites as K

E, SE, S, SW, W, NW, N, NE = 1, 2, 4, 8, 16, 32, 64, 128
ND = 255
CRS = "EPSG:32650"


def flat(rc, ncols):
    return np.array(sorted(r * ncols + c for r, c in rc), dtype=np.int64)


# ----------------------------------------------------------------------- CB

def test_cb_path_that_leaves_s_and_reenters():
    # S = {(1,1), (3,1)}. (1,1) drains S to (2,1), which is NOT in S, and (2,1)
    # drains S into (3,1), which is: the flow leaves S and re-enters it.
    d8 = np.array([
        [E,  S, E,  S, S],    # (0,0)->(0,1)->S(1,1); (0,2)->(0,3) elsewhere
        [SE, S, NE, S, S],    # (1,0)->(2,1); (1,2)->(0,3) elsewhere
        [E,  S, W,  S, S],    # (2,0)->(2,1); (2,1)->S(3,1); (2,2)->(2,1)
        [NE, S, NW, S, S],    # (3,0)->(2,1); (3,2)->(2,1)
        [ND, 0, 0,  0, 0],    # outlets; (4,0) nodata
    ], dtype=np.uint8)
    seeds = flat([(1, 1), (3, 1)], 5)
    # Cells draining into S, S excluded:
    #   (2,1) drains into (3,1); (0,1) into (1,1); (0,0) -> (0,1);
    #   (1,0), (2,0), (2,2), (3,0), (3,2) -> (2,1).  8 cells; (4,1) is downstream.
    expected = flat([(0, 0), (0, 1), (1, 0), (2, 0), (2, 1), (2, 2), (3, 0), (3, 2)], 5)
    scratch = np.zeros(d8.size, dtype=np.uint8)
    got = np.sort(K.upstream_cells(d8, seeds, ND, scratch))
    np.testing.assert_array_equal(got, expected)
    assert not scratch.any(), "scratch must be reset for the next site"
    # the scratch buffer is reusable: same answer the second time
    np.testing.assert_array_equal(np.sort(K.upstream_cells(d8, seeds, ND, scratch)), expected)
    # per-class counts over CB with class = column index + 1
    classes = np.tile(np.arange(1, 6, dtype=np.uint8), (5, 1))
    # CB columns: col 0 -> (0,0),(1,0),(2,0),(3,0) = 4; col 1 -> (0,1),(2,1) = 2; col 2 -> (2,2),(3,2) = 2
    counts = K.count_values(classes, got, 8)
    np.testing.assert_array_equal(counts, [0, 4, 2, 2, 0, 0, 0, 0])
    # CB as a mask window: rows 0..3, cols 0..2
    r0, c0, mask = G.cells_window(got, d8.shape)
    assert (r0, c0) == (0, 0)
    np.testing.assert_array_equal(mask, [[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 1]])
    assert G.cells_window(np.empty(0, np.int64), d8.shape) is None


def test_cb_ignores_nodata_and_seeds_on_edge():
    # a nodata cell whose byte happens to equal a direction is still nodata: 255 only.
    d8 = np.array([
        [S, S, ND],
        [S, S, W],     # (1,2) -> (1,1)
        [0, 0, 0],
    ], dtype=np.uint8)
    seeds = flat([(1, 1)], 3)
    got = np.sort(G.contributing_basin(d8, seeds))
    # (0,1) -> (1,1); (1,2) -> (1,1); (0,2) is nodata; (0,0),(1,0) go to (2,0).
    np.testing.assert_array_equal(got, flat([(0, 1), (1, 2)], 3))
    # no seeds -> empty
    assert G.contributing_basin(d8, np.empty(0, np.int64)).size == 0


def _random_d8(seed, nrows, ncols):
    rng = np.random.default_rng(seed)
    dem = rng.random((nrows, ncols)).astype(np.float32) * 10
    dem += np.linspace(0, 5, nrows, dtype=np.float32)[::-1, None]  # a general slope to the south
    flw = pyflwdir.from_dem(dem, latlon=False)
    return flw, flw.to_array("d8")


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), nrows=st.integers(3, 30), ncols=st.integers(3, 30),
       nseed=st.integers(1, 12))
def test_cb_equals_pyflwdir_subbasins(seed, nrows, ncols, nseed):
    flw, d8 = _random_d8(seed, nrows, ncols)
    rng = np.random.default_rng(seed + 1)
    seeds = np.unique(rng.integers(0, d8.size, nseed)).astype(np.int64)
    # pyflwdir: sub-basins draining to each seed (each includes its seed cell);
    # their union minus the seeds is CB.
    basins = flw.basins(idxs=seeds)
    expected = np.flatnonzero(basins.ravel() > 0)
    expected = np.setdiff1d(expected, seeds)
    got = np.sort(G.contributing_basin(d8, seeds))
    np.testing.assert_array_equal(got, expected)


# ----------------------------------------------------------------------- o

def test_outlet_largest_accumulation_ties_row_major():
    acc = np.array([[1, 9, 3],
                    [9, 2, np.nan],
                    [4, 9, 9]], dtype=float)
    # candidates given in reverse order: ties at 9 go to the first in row-major
    # order, (0,1) = index 1, whatever the order of the seeds.
    assert G.outlet(acc, np.array([8, 7, 3, 1, 0], dtype=np.int64)) == 1
    assert G.outlet(acc, np.array([0, 2, 5], dtype=np.int64)) == 2     # 3 > 1, NaN ignored
    assert G.outlet(acc, np.array([5], dtype=np.int64)) == -1          # only NaN
    assert G.outlet(acc, np.empty(0, dtype=np.int64)) == -1


# ----------------------------------------------------------------------- PATH

def test_path_length_cardinal_and_diagonal_steps():
    d8 = np.full((6, 6), S, dtype=np.uint8)
    d8[0, 0] = E     # (0,0) -> (0,1)          + dx
    d8[0, 1] = SE    # (0,1) -> (1,2)          + sqrt(dx^2 + dy^2)
    d8[1, 2] = S     # (1,2) -> (2,2)          + dy
    d8[2, 2] = SW    # (2,2) -> (3,1)          + diag
    d8[3, 1] = W     # (3,1) -> (3,0)          + dx
    d8[3, 0] = 0     # outlet
    # non-square cells: dx = 10 m, dy = 20 m -> diagonal sqrt(500) = 22.3607 m
    grid = G.as_grid((Affine(10, 0, 0, 0, -20, 120), CRS, (6, 6)))
    idx, cum = G.flow_path(d8, 0, grid)
    np.testing.assert_array_equal(idx, [0, 1, 8, 14, 19, 18])
    d = math.sqrt(500.0)
    np.testing.assert_allclose(cum, [0, 10, 10 + d, 30 + d, 30 + 2 * d, 40 + 2 * d])


def test_path_stops_at_grid_edge_nodata_and_pit():
    d8 = np.array([[E, E, E],       # (0,2) points E, off the grid: path ends there
                   [S, ND, W],      # (1,0) -> (2,0); (1,2) -> nodata: ends at (1,2)
                   [0, W, W]], dtype=np.uint8)
    grid = G.as_grid((Affine(5, 0, 0, 0, -5, 15), CRS, (3, 3)))
    idx, cum = G.flow_path(d8, 0, grid)
    np.testing.assert_array_equal(idx, [0, 1, 2])
    np.testing.assert_allclose(cum, [0, 5, 10])
    idx, cum = G.flow_path(d8, 5, grid)
    np.testing.assert_array_equal(idx, [5])
    idx, cum = G.flow_path(d8, 8, grid)
    np.testing.assert_array_equal(idx, [8, 7, 6])   # ends at the pit (2,0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), nrows=st.integers(2, 40), ncols=st.integers(2, 40))
def test_path_equals_pyflwdir_downstream_and_length(seed, nrows, ncols):
    flw, d8 = _random_d8(seed, nrows, ncols)
    start = int(np.random.default_rng(seed).integers(0, d8.size))
    grid = G.as_grid((Affine(30, 0, 500000, 0, -30, 4_400_000), CRS, (nrows, ncols)))
    idx, cum = G.flow_path(d8, start, grid)
    # pyflwdir's own downstream index array, followed to its pit
    ds = flw.idxs_ds
    exp = [start]
    while ds[exp[-1]] != exp[-1]:
        exp.append(int(ds[exp[-1]]))
    np.testing.assert_array_equal(idx, exp)
    # length: the polyline through the cell centres (shapely), independent of the kernel
    x, y = grid.centres(idx)
    length = shapely.LineString(np.column_stack([x, y])).length if len(idx) > 1 else 0.0
    assert cum[-1] == pytest.approx(length, rel=1e-12, abs=1e-9)
    assert np.all(np.diff(cum) > 0)


# ----------------------------------------------------------------------- zones / cells

def test_zone_areas_by_hand():
    # 100 m square, NEAR 50 m, RING1K 1000 m. A buffer of a square adds 4 side
    # strips (4 x 100 x d) and 4 rounded corners that together form a regular
    # 64-gon inscribed in a circle of radius d (quad_segs = 16 per quarter):
    # area 32 d^2 sin(pi/32).
    sq = shapely.box(0, 0, 100, 100)
    z = G.site_zones([sq], near_m=50, landscape_m=1000)
    poly = lambda d: 32 * d * d * math.sin(math.pi / 32)   # noqa: E731
    assert shapely.area(z.near[0]) == pytest.approx(4 * 100 * 50 + poly(50), rel=1e-9)
    assert shapely.area(z.ring[0]) == pytest.approx(4 * 100 * 1000 + poly(1000), rel=1e-9)
    assert shapely.area(z.near_plus[0]) == pytest.approx(1e4 + 4 * 100 * 300 + poly(300), rel=1e-9)
    assert shapely.area(z.buf_protected[0]) == pytest.approx(1e4 + 4e4 + poly(100), rel=1e-9)
    # the rings exclude S and NEAR lies inside RING1K
    assert shapely.area(shapely.intersection(z.ring[0], sq)) == pytest.approx(0, abs=1e-6)
    assert shapely.area(shapely.difference(z.near[0], z.ring[0])) == pytest.approx(0, abs=1e-6)


def test_coverage_of_polygon_cutting_cells_in_half():
    # 4x4 grid of 10 m cells, x 0..40, y 0..40, row 0 north.
    grid = G.as_grid((Affine(10, 0, 0, 0, -10, 40), CRS, (4, 4)))
    # x 5..25 covers col 0 half, col 1 whole, col 2 half; y 20..40 = rows 0 and 1.
    (ids, cov), = G.polygon_cells([shapely.box(5, 20, 25, 40)], grid)
    got = dict(zip(ids.tolist(), cov.tolist()))
    assert got == pytest.approx({0: 0.5, 1: 1.0, 2: 0.5, 4: 0.5, 5: 1.0, 6: 0.5})
    # triangle with corners at cell corners: the diagonal halves cells (0,0) and (1,1)
    (ids, cov), = G.polygon_cells([shapely.Polygon([(0, 40), (20, 40), (20, 20)])], grid)
    got = dict(zip(ids.tolist(), cov.tolist()))
    assert got == pytest.approx({0: 0.5, 1: 1.0, 5: 0.5})
    # empty geometry -> no cells; the coverage of the whole grid sums to its cell count
    out = G.polygon_cells([None, shapely.box(0, 0, 40, 40)], grid)
    assert out[0][0].size == 0
    assert out[1][1].sum() == pytest.approx(16.0)


def test_site_cells_centre_rule_and_small_site_fallback():
    grid = G.as_grid((Affine(10, 0, 0, 0, -10, 40), CRS, (4, 4)))
    # x 6..26 holds the centres x = 15, 25 (cols 1, 2); y 14..36 holds y = 35, 25, 15
    # (rows 0, 1, 2); cells whose square is only partly covered (col 0, col 3) are out.
    cells = G.site_cells(shapely.box(6, 14, 26, 36), grid)
    np.testing.assert_array_equal(cells, [1, 2, 5, 6, 9, 10])
    # a 2 m square holds no centre: falls back to the cell of its representative point
    cells = G.site_cells(shapely.box(31, 1, 33, 3), grid)
    np.testing.assert_array_equal(cells, [15])


def test_path_buffers_and_targets():
    grid = G.as_grid((Affine(10, 0, 0, 0, -10, 100), CRS, (10, 10)))
    idx = np.array([0, 10, 20, 30], dtype=np.int64)        # straight south along col 0
    cum = np.array([0.0, 10.0, 20.0, 30.0])
    line = G.path_line(idx, cum, grid, 15.0)
    # centres (5,95) -> (5,85) -> (5,75); the first 15 m end at (5, 80)
    assert line.equals(shapely.LineString([(5, 95), (5, 85), (5, 80)]))
    assert G.path_line(idx[:1], cum[:1], grid, 15.0).equals(shapely.Point(5, 95))
    # polygon target: centre rule; line target: cell footprint touched
    hit = G.cells_in_polygons(grid, idx, [shapely.box(0, 70, 10, 80)])
    np.testing.assert_array_equal(hit, [False, False, True, False])  # centre (5,75) only
    hit = G.cells_in_polygons(grid, idx, [shapely.LineString([(9, 88), (20, 88)])])
    np.testing.assert_array_equal(hit, [False, True, False, False])


def test_grid_must_be_projected_and_north_up():
    with pytest.raises(InputDataError, match="projected"):
        G.as_grid((Affine(0.1, 0, 0, 0, -0.1, 0), "EPSG:4326", (3, 3)))
    with pytest.raises(InputDataError, match="north-up"):
        G.as_grid((Affine(10, 0, 0, 0, 10, 0), CRS, (3, 3)))
    with pytest.raises(InputDataError, match="no CRS"):
        G.as_grid((Affine(10, 0, 0, 0, -10, 0), None, (3, 3)))
    with pytest.raises(InputDataError, match="metres"):   # US survey feet
        G.as_grid((Affine(10, 0, 0, 0, -10, 0), "EPSG:2227", (3, 3)))


REAL_DEM = "/work/shared/data/reference_dems/fortworth_3arcsec.tif"


def test_cb_and_path_on_a_real_dem_match_pyflwdir():
    import os

    if not os.path.exists(REAL_DEM):
        pytest.skip(f"reference DEM {REAL_DEM} not available (read-only shared data)")
    import rasterio

    with rasterio.open(REAL_DEM) as src:
        dem = src.read(1).astype(np.float32)
        nodata = src.nodata
    # D8 from pyflwdir (its own priority-flood + D8); only the topology is compared,
    # so the geographic grid is replaced by a 90 m projected one for the lengths.
    flw = pyflwdir.from_dem(dem, nodata=-9999.0 if nodata is None else float(nodata), latlon=False)
    d8 = flw.to_array("d8")
    d8[d8 == 247] = ND
    grid = G.as_grid((Affine(90, 0, 0, 0, -90, 0), CRS, dem.shape))
    acc = flw.accuflux(np.ones(dem.shape))
    rng = np.random.default_rng(5)
    for _ in range(5):
        # a 6x6 block of cells as the "site"
        r, c = rng.integers(0, dem.shape[0] - 6), rng.integers(0, dem.shape[1] - 6)
        rr, cc = np.mgrid[r:r + 6, c:c + 6]
        seeds = (rr * dem.shape[1] + cc).ravel().astype(np.int64)
        seeds = seeds[d8.ravel()[seeds] != ND]
        basins = flw.basins(idxs=seeds)
        expected = np.setdiff1d(np.flatnonzero(basins.ravel() > 0), seeds)
        np.testing.assert_array_equal(np.sort(G.contributing_basin(d8, seeds)), expected)
        o = G.outlet(acc, seeds)
        idx, cum = G.flow_path(d8, o, grid)
        ds = flw.idxs_ds
        exp = [o]
        while ds[exp[-1]] != exp[-1]:
            exp.append(int(ds[exp[-1]]))
        np.testing.assert_array_equal(idx, exp)


@settings(max_examples=25, deadline=None)
@given(x=st.floats(20, 180), y=st.floats(20, 180), r=st.floats(3, 60), ring=st.booleans(),
       segs=st.integers(1, 8))
def test_coverage_equals_shapely_cell_intersections(x, y, r, ring, segs):
    # independent check of exactextract's coverage fractions: the area of the
    # polygon inside each cell square (shapely) / cell area, for discs and rings
    grid = G.as_grid((Affine(10, 0, 0, 0, -10, 200), CRS, (20, 20)))
    poly = shapely.Point(x, y).buffer(r, quad_segs=segs)
    if ring:
        poly = poly.difference(shapely.Point(x, y).buffer(r / 2, quad_segs=segs))
    (ids, cov), = G.polygon_cells([poly], grid)
    allc = np.arange(400, dtype=np.int64)
    cx, cy = grid.centres(allc)
    boxes = shapely.box(cx - 5, cy - 5, cx + 5, cy + 5)
    expected = shapely.area(shapely.intersection(boxes, poly)) / 100.0
    got = np.zeros(400)
    got[ids] = cov
    np.testing.assert_allclose(got, expected, atol=1e-6)
