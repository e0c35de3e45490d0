"""The dense one-tile D8 kernel (kernels/hydro_d8_tile) equals the sparse path it replaces.

Reference: the separate kernels of kernels/hydro_d8 (d8_steepest,
flat_cell_tables, neighbour tables, flat_components, resolve_flats,
relax_steps), combined as the tiled D8 used them before the dense kernel: local
flats resolved, flats that leave the tile returned as sparse tables with their
in-tile step distances.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.kernels import hydrology as K


def _sparse_reference(zp):
    """Codes and exported-flat tables of the tile ``zp[2:-2, 2:-2]`` from the sparse kernels."""
    h, w = zp.shape[0] - 4, zp.shape[1] - 4
    zp = zp.astype(np.float64)
    dr = K.d8_steepest(zp, 1, 1, h + 2, w + 2)
    z1 = zp[1:-1, 1:-1]
    rows, cols, same, low, high = K.flat_cell_tables(z1, dr, 1, 1, h, w)
    d8 = np.ascontiguousarray(dr[1:-1, 1:-1])
    inside = np.zeros(rows.size, dtype=np.uint8)
    for k in range(8):
        rr, cc = rows + K.DROW[k], cols + K.DCOL[k]
        ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        inside |= np.where(ok, K.CODES[k], 0).astype(np.uint8)
    ext = same & ~inside
    lab, _ = K.flat_components(K.neighbour_index_dense(rows, cols, same, h, w))
    exported = np.isin(lab, np.unique(lab[ext != 0]))
    loc = ~exported
    if loc.any():
        nbr = K.neighbour_index_dense(rows[loc], cols[loc], same[loc], h, w)
        d8[rows[loc], cols[loc]] = K.resolve_flats(nbr, low[loc], high[loc])
    rows, cols, same, low, high, ext = (a[exported] for a in (rows, cols, same, low, high, ext))
    nbr = K.neighbour_index_dense(rows, cols, same, h, w)
    lab, nlab = K.flat_components(nbr)
    towards = np.zeros(rows.size, dtype=np.int32)
    away = np.zeros(rows.size, dtype=np.int32)
    seed = np.flatnonzero(low != 0)
    K.relax_steps(nbr, towards, seed, np.ones(seed.size, dtype=np.int32))
    seed = np.flatnonzero(high)
    K.relax_steps(nbr, away, seed, np.ones(seed.size, dtype=np.int32))
    return d8, rows, cols, same, low, ext, lab, nlab, towards, away


@st.composite
def tiles_with_flats(draw):
    """A filled DEM with large flats and holes, and a tile window (+2 halo) inside it."""
    h = draw(st.integers(6, 45))
    w = draw(st.integers(6, 45))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    levels = draw(st.sampled_from([2, 3, 6, 40]))
    coarse = rng.random((h // 5 + 2, w // 5 + 2))
    z = np.floor(np.kron(coarse, np.ones((5, 5)))[:h, :w] * levels + rng.random((h, w)) * 0.3)
    z[rng.random((h, w)) < draw(st.sampled_from([0.0, 0.0, 0.05]))] = np.nan
    f = K.priority_flood_fill(z).astype(np.float32)
    pad = np.full((h + 4, w + 4), np.nan, dtype=np.float32)
    pad[2:-2, 2:-2] = f
    r0 = draw(st.integers(0, h - 1))
    c0 = draw(st.integers(0, w - 1))
    r1 = draw(st.integers(r0 + 1, h))
    c1 = draw(st.integers(c0 + 1, w))
    return np.ascontiguousarray(pad[r0:r1 + 4, c0:c1 + 4])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tiles_with_flats())
def test_d8_tile_equals_sparse_kernels(zp):
    ref = _sparse_reference(zp)
    for z in (zp, zp.astype(np.float64)):       # float32 tiles give the float64 result
        got = K.d8_tile(z)
        assert len(got) == len(ref)
        for g, r in zip(got, ref):
            if isinstance(r, np.ndarray):
                assert g.dtype == r.dtype
                assert np.array_equal(g, r)
            else:
                assert g == r


def test_d8_tile_flat_by_hand():
    # 5 x 5 tile: a flat at 5 with one low exit at its west edge (row 2, col 0
    # of the tile flows out through the halo cell at 4). Every flat cell must
    # drain, and the cell next to the exit points west (code 16).
    zp = np.full((9, 9), 9.0)
    zp[2:7, 2:7] = 5.0
    zp[4, 1] = 4.0                     # ring cell lower than the flat
    zp[4, 0] = 3.0
    zp[:, 0] = np.nan
    d8, rows, *_ = K.d8_tile(zp)
    assert rows.size == 0              # nothing leaves the tile through same-level cells
    assert d8[2, 0] == 16
    assert np.all(d8 != 0) and np.all(d8 != K.D8_FLAT)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tiles_with_flats())
def test_inner_bits_are_the_same_bits_inside_the_tile(zp):
    # the searches step by flat index along `inner` without bounds checks: an
    # `inner` bit pointing outside the tile would read another row's cell
    from pipeline.kernels.hydro_d8_tile import _flat_bits

    h, w = zp.shape[0] - 4, zp.shape[1] - 4
    dr = K.d8_steepest(zp, 1, 1, h + 2, w + 2)
    same, inner, _, _, _ = _flat_bits(zp, dr, h, w)
    rows, cols = np.mgrid[0:h, 0:w]
    inside = np.zeros((h, w), dtype=np.uint8)
    for k in range(8):
        rr, cc = rows + K.DROW[k], cols + K.DCOL[k]
        ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        inside |= np.where(ok, K.CODES[k], 0).astype(np.uint8)
    assert np.array_equal(inner, same & inside)


def test_flat_leaving_through_a_corner_only():
    # 3 x 3 tile on a ramp 30 - row - col (halo included); its north-west cell
    # (tile 0, 0) sits at 5 with one same-level neighbour: the ring cell to its
    # north-west (code 32); both are walled in by 40s and the ramp (> 5). That flat
    # leaves the tile through the corner only, so the cell is exported with
    # same = ext = 32 and keeps D8_FLAT.
    r, c = np.mgrid[0:7, 0:7]
    zp = 30.0 - r - c
    zp[2, 2] = 5.0
    zp[1, 1] = 5.0
    zp[0, :2] = zp[:2, 0] = 40.0          # higher around the ring cell
    zp[0, 2] = zp[2, 0] = 40.0
    zp[1, 2] = zp[2, 1] = zp[1, 0] = zp[0, 1] = 40.0
    d8, rows, cols, same, low, ext, lab, nlab, towards, away = K.d8_tile(zp)
    m = np.flatnonzero((rows == 0) & (cols == 0))
    assert m.size == 1
    assert same[m[0]] == 32 and ext[m[0]] == 32
    assert d8[0, 0] == K.D8_FLAT
