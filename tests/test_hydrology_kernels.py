"""Hydrology kernels on plain arrays: hand-worked cases, invariants, pyflwdir/pyproj checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyflwdir
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.kernels import hydrology as K

DATA = Path(__file__).parent / "data" / "reference_dems"
N = np.nan


def _downstream(d8):
    """(row, col) targets of each cell, -1 where the path ends (independent numpy code)."""
    h, w = d8.shape
    tr = np.full((h, w), -1)
    tc = np.full((h, w), -1)
    for k, code in enumerate([1, 2, 4, 8, 16, 32, 64, 128]):
        rr, cc = np.nonzero(d8 == code)
        r2, c2 = rr + K.DROW[k], cc + K.DCOL[k]
        ok = (r2 >= 0) & (r2 < h) & (c2 >= 0) & (c2 < w)
        ok[ok] &= d8[r2[ok], c2[ok]] != 255
        tr[rr[ok], cc[ok]] = r2[ok]
        tc[rr[ok], cc[ok]] = c2[ok]
    return tr, tc


def _pyflwdir_acc(d8):
    """pyflwdir upstream area in cells on our D8 (pyflwdir nodata is 247, not 255)."""
    fd = pyflwdir.from_array(np.where(d8 == 255, 247, d8).astype(np.uint8), ftype="d8")
    return fd.upstream_area(unit="cell")


def _pyflwdir_fill(z):
    zz = np.where(np.isnan(z), -9999.0, z)
    filled, _ = pyflwdir.dem.fill_depressions(zz, outlets="edge", nodata=-9999.0, max_depth=-1.0)
    return np.where(np.isnan(z), np.nan, filled)


def _check_drains(z, filled, d8):
    """Every valid cell drains; 0 codes only on outlet cells; no cycles; downhill or flat."""
    valid = ~np.isnan(z)
    assert np.array_equal(d8 == 255, ~valid)
    assert not np.any(d8 == K.D8_FLAT)
    outlets = K.outlet_mask(filled)
    assert not np.any((d8 == 0) & ~outlets), "interior pit left after flat resolution"
    tr, tc = _downstream(d8)
    has = tr >= 0
    # never uphill on the filled surface
    assert np.all(filled[tr[has], tc[has]] <= filled[has])
    acc, on_cycles = K.accumulate(d8)
    assert on_cycles == 0
    return acc


# --------------------------------------------------------------------------- hand-worked

# A closed basin: rim 9, floor 5, pit 1; the only low rim cell is (4, 2) at 8.
BOWL = np.array([[9, 9, 9, 9, 9],
                 [9, 5, 5, 5, 9],
                 [9, 5, 1, 5, 9],
                 [9, 5, 5, 5, 9],
                 [9, 9, 8, 9, 9]], dtype=np.float64)


def test_fill_bowl_by_hand():
    # Water inside the rim leaves over the lowest rim cell (4, 2) at 8, so the
    # whole 3x3 interior fills to 8 (no epsilon); rim cells are outlets and keep
    # their elevation.
    f = K.priority_flood_fill(BOWL)
    expect = BOWL.copy()
    expect[1:4, 1:4] = 8
    assert np.array_equal(f, expect)
    # depression depth: 3 on the floor, 7 at the pit
    assert np.array_equal((f - BOWL)[1:4, 1:4], [[3, 3, 3], [3, 7, 3], [3, 3, 3]])


def test_d8_bowl_flat_by_hand():
    # The filled interior is one flat at 8. Its low edge is the outlet (4, 2)
    # (same elevation, code 0). towards-lower steps: row 3 -> 1, row 2 -> 2,
    # row 1 -> 3. Away-from-higher: the ring touches the 9 rim (1), the centre
    # does not (2); flat height 2. Mask = 2*towards + (2 - away):
    #   row 1: 7 7 7 / row 2: 5 4 5 / row 3: 3 3 3.
    # Each cell takes the first neighbour (E, SE, S, SW, W, NW, N, NE) with the
    # lowest mask below its own; row 3 drains into the low edge directly.
    f = K.priority_flood_fill(BOWL)
    d8 = K.flow_directions_d8(f)
    assert d8[4, 2] == 0                     # outlet: no lower neighbour
    assert list(d8[3, 1:4]) == [2, 4, 8]     # SE, S, SW into (4, 2)
    assert list(d8[2, 1:4]) == [2, 2, 4]     # (2,1)->SE (3,2); centre->SE (3,3); (2,3)->S
    assert list(d8[1, 1:4]) == [2, 4, 8]     # all into the centre (mask 4)
    # rim cells of 9 all have a lower (8) neighbour: e.g. corner (0,0) -> SE,
    # (0,1) -> S (drop 1 beats 1/sqrt 2), (4,1) -> E onto the outlet.
    assert d8[0, 0] == 2 and d8[0, 1] == 4 and d8[4, 1] == 1 and d8[4, 0] == 128
    acc, bad = K.accumulate(d8)
    assert bad == 0
    # everything (25 cells) leaves through (4, 2)
    assert acc[4, 2] == 25
    # Into the centre (2,2): (1,1) [with (0,0), (0,1), (1,0)] = 4, (1,2) [with
    # (0,2)] = 2, (1,3) [with (0,3), (0,4), (1,4)] = 4, so acc(2,2) = 11.
    # Into (3,3): the centre (11), (2,3) [with (2,4)] = 2, (3,4) = 1, (4,4) = 1
    # ((4,3) goes W to the outlet: W comes before N), so acc(3,3) = 16.
    assert acc[2, 2] == 11
    assert acc[3, 3] == 16
    tr, tc = _downstream(d8)
    into_33 = [(r, c) for r in range(5) for c in range(5) if (tr[r, c], tc[r, c]) == (3, 3)]
    assert acc[3, 3] == 1 + sum(acc[r, c] for r, c in into_33)


def test_nan_hole_cells_are_outlets():
    # The NaN in the middle makes its 8 neighbours outlets: they keep 3 and,
    # having no lower valid neighbour, get code 0. The 5-rim drains inwards.
    z = np.array([[5, 5, 5, 5, 5],
                  [5, 3, 3, 3, 5],
                  [5, 3, N, 3, 5],
                  [5, 3, 3, 3, 5],
                  [5, 5, 5, 5, 5]], dtype=np.float64)
    f = K.priority_flood_fill(z)
    assert np.array_equal(f, z, equal_nan=True)
    d8 = K.flow_directions_d8(f)
    assert d8[2, 2] == 255
    ring = [(1, 1), (1, 2), (1, 3), (2, 1), (2, 3), (3, 1), (3, 2), (3, 3)]
    assert all(d8[r, c] == 0 for r, c in ring)
    acc, _ = K.accumulate(d8)
    assert acc[2, 2] == 0
    assert sum(acc[r, c] for r, c in ring) == 24    # conservation: 24 valid cells


def test_accumulation_by_hand():
    # 3x3, every cell flows east then the right column flows south:
    #   1 1 4        acc:  1 2 3
    #   1 1 4              1 2 6
    #   1 1 0              1 2 9
    d8 = np.array([[1, 1, 4], [1, 1, 4], [1, 1, 0]], dtype=np.uint8)
    acc, bad = K.accumulate(d8)
    assert bad == 0
    assert np.array_equal(acc, [[1, 2, 3], [1, 2, 6], [1, 2, 9]])
    # weighted: weight = column index + 1 -> col sums 1, 2, 3 per row
    wts = np.tile(np.array([1.0, 2.0, 3.0]), (3, 1))
    wacc, _ = K.accumulate(d8, wts)
    assert np.array_equal(wacc, [[1, 3, 6], [1, 3, 12], [1, 3, 18]])


def test_accumulation_paths_end_at_nodata_and_edge():
    # (0,0) flows W off the grid; (0,1) flows E into a nodata cell; (1,*) flow N.
    d8 = np.array([[16, 1, 255], [64, 64, 64]], dtype=np.uint8)
    acc, _ = K.accumulate(d8)
    # (1,2) points N into nodata: path ends, it counts only itself.
    assert np.array_equal(acc, [[2, 2, 0], [1, 1, 1]])


def test_accumulation_detects_cycles():
    d8 = np.array([[1, 8], [0, 0]], dtype=np.uint8)   # (0,0) E -> (0,1) SW -> (1,0): fine
    assert K.accumulate(d8)[1] == 0
    cyc = np.array([[1, 16]], dtype=np.uint8)          # E <-> W
    assert K.accumulate(cyc)[1] == 2


# --------------------------------------------------------------------------- pyflwdir

def _reference(name):
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} missing (copy it from ../shared/data/reference_dems)")
    with rasterio.open(path) as src:
        z = src.read(1).astype(np.float64)
        z[z == src.nodata] = np.nan
    return z


@pytest.mark.parametrize("name", ["fortworth_3arcsec.tif", "luxembourg_30arcsec.tif"])
def test_reference_dems_against_pyflwdir(name):
    z = _reference(name)
    f = K.priority_flood_fill(z)
    assert np.array_equal(f, _pyflwdir_fill(z), equal_nan=True)
    d8 = K.flow_directions_d8(f)
    acc = _check_drains(z, f, d8)
    ua = _pyflwdir_acc(d8)
    assert np.array_equal(np.where(d8 == 255, -9999, acc), ua.astype(np.int64))
    # conservation: the accumulations at the path ends sum to the valid cells
    tr, _ = _downstream(d8)
    ends = (tr < 0) & (d8 != 255)
    assert acc[ends].sum() == np.count_nonzero(~np.isnan(z))


@st.composite
def dems(draw):
    h = draw(st.integers(3, 40))
    w = draw(st.integers(3, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    levels = draw(st.sampled_from([3, 10, 1000]))      # few levels = many flats
    hole_frac = draw(st.sampled_from([0.0, 0.0, 0.05, 0.3]))
    rng = np.random.default_rng(seed)
    z = rng.integers(0, levels, (h, w)).astype(np.float64)
    z[rng.random((h, w)) < hole_frac] = np.nan
    return z


@settings(max_examples=40, deadline=None)
@given(dems())
def test_random_dems_against_pyflwdir_and_invariants(z):
    f = K.priority_flood_fill(z)
    # integer-valued input: pyflwdir's float32 queue is exact, so equality is exact
    assert np.array_equal(f, _pyflwdir_fill(z), equal_nan=True)
    assert np.all(f[~np.isnan(z)] >= z[~np.isnan(z)])
    d8 = K.flow_directions_d8(f)
    acc = _check_drains(z, f, d8)
    assert np.array_equal(np.where(d8 == 255, -9999, acc), _pyflwdir_acc(d8).astype(np.int64))
    # acc = 1 + sum of the acc of the neighbours flowing in
    tr, tc = _downstream(d8)
    inflow = np.zeros_like(acc)
    has = tr >= 0
    np.add.at(inflow, (tr[has], tc[has]), acc[has])
    valid = d8 != 255
    assert np.array_equal(acc[valid], 1 + inflow[valid])
    ends = (tr < 0) & valid
    assert acc[ends].sum() == valid.sum()


@settings(max_examples=20, deadline=None)
@given(dems(), st.integers(0, 2**32 - 1))
def test_weighted_accumulation_is_linear(z, seed):
    f = K.priority_flood_fill(z)
    d8 = K.flow_directions_d8(f)
    rng = np.random.default_rng(seed)
    w = rng.integers(-8, 9, z.shape) / 8.0        # dyadic: float sums are exact
    wacc, _ = K.accumulate(d8, w)
    ones, _ = K.accumulate(d8, np.ones(z.shape))
    acc, _ = K.accumulate(d8)
    assert np.array_equal(ones, acc.astype(np.float64))
    tr, tc = _downstream(d8)
    inflow = np.zeros(z.shape)
    has = tr >= 0
    np.add.at(inflow, (tr[has], tc[has]), wacc[has])
    valid = d8 != 255
    assert np.array_equal(wacc[valid], w[valid] + inflow[valid])


# --------------------------------------------------------------------------- flats

def test_flat_plateau_drains_to_single_low_cell():
    # A 7x7 plateau at 2 with one lower cell (0,3) at 1 on the top edge: all
    # 48 cells of the flat must reach it and it must collect all 49.
    z = np.full((7, 7), 2.0)
    z[0, 3] = 1.0
    f = K.priority_flood_fill(z)
    d8 = K.flow_directions_d8(f)
    acc = _check_drains(z, f, d8)
    # edge cells of the plateau are outlets themselves (code 0) unless they
    # have a lower neighbour; interior flat cells must not be pits.
    assert acc.max() >= 1
    assert np.all(d8[1:-1, 1:-1] != 0)


# --------------------------------------------------------------------------- geometry

def test_ellipsoid_cell_area_matches_pyproj_geod():
    from pyproj import Geod

    g = Geod(ellps="WGS84")
    for lat in (0.0, 39.9, 41.5, 70.0):
        d = 0.05
        # the cell's north and south sides are parallels, not geodesics:
        # densify them so the geodesic polygon follows them (error ~ 1/n^2)
        t = np.linspace(116.0, 116.0 + d, 400)
        lons = np.concatenate([t, t[::-1]])
        lats = np.concatenate([np.full(t.size, lat), np.full(t.size, lat + d)])
        ref, _ = g.polygon_area_perimeter(lons, lats)
        ours = K.ellipsoid_cell_area_m2(lat + d, lat, d, g.a, g.f)
        assert ours == pytest.approx(abs(ref), rel=1e-9)


def test_metres_per_degree_matches_geodesic():
    from pyproj import Geod

    g = Geod(ellps="WGS84")
    mlon, mlat = K.ellipsoid_metres_per_degree(40.0, g.a, g.f)
    _, _, dx = g.inv(116.0, 40.0, 116.001, 40.0)
    _, _, dy = g.inv(116.0, 39.9995, 116.0, 40.0005)
    assert mlon * 0.001 == pytest.approx(dx, rel=1e-6)
    assert mlat * 0.001 == pytest.approx(dy, rel=1e-6)


def test_slope_horn_plane_by_hand():
    # z = 0.2 * x_m on 10 m cells: +2 m per column -> slope atan(0.2) = 11.30993 deg.
    # Rows also rise 1 m per row southward (dz/dy = 0.1): atan(hypot(.2, .1)).
    rr, cc = np.mgrid[0:5, 0:6]
    z = 2.0 * cc + 1.0 * rr
    zp = np.full((7, 8), np.nan)
    zp[1:-1, 1:-1] = z
    s = K.slope_horn(zp, np.full(5, 10.0), np.full(5, 10.0))
    expect = np.degrees(np.arctan(np.hypot(0.2, 0.1)))
    assert np.allclose(s[1:-1, 1:-1], expect, rtol=0, atol=1e-12)
    # edge cells: missing neighbours take the centre value. Cell (2, 0), z0 = 2:
    #   a b c   2 1 3
    #   d e f = 2 2 4      gx = ((3 + 2*4 + 5) - (2 + 2*2 + 2)) / 80 = 0.1
    #   g h i   2 3 5      gy = ((2 + 2*3 + 5) - (2 + 2*1 + 3)) / 80 = 0.075
    # hypot = 0.125 -> atan(0.125) = 7.12502 deg
    assert s[2, 0] == pytest.approx(np.degrees(np.arctan(0.125)), rel=1e-12)


def test_upstream_mask_and_path():
    d8 = np.array([[1, 1, 4], [1, 1, 4], [1, 1, 0]], dtype=np.uint8)
    seed = np.zeros((3, 3), dtype=bool)
    seed[1, 2] = True
    m = K.upstream_mask(d8, seed)
    # (1,2) gets (0,*) via (0,2), (1,0), (1,1) and itself; row 2 flows past it.
    assert np.array_equal(m, [[1, 1, 1], [1, 1, 1], [0, 0, 0]])
    rows, cols, looped = K.downstream_cells(d8, 0, 0, 9)
    assert not looped
    assert list(zip(rows, cols)) == [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2)]
