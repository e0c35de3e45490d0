"""Flats crossing tile edges, resolved tile by tile (kernels/hydro_d8 "tiled flats").

The tiled resolver must give exactly the one-array Barnes (2014) result. Its
pieces are checked on their own: ``relax_steps`` against scipy's Dijkstra (an
independent shortest-path implementation) and for the property the tiling
relies on (relaxing with seed sets one after the other = relaxing with all of
them at once); the whole resolver on flats built to cross many tiles many times.
"""

from __future__ import annotations

import logging

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from pipeline.kernels import hydrology as K
from pipeline.ops import hydrology as H
from tests.test_hydrology_tiled import _da, _one_array


def _flat_graph(mask):
    """Neighbour table of the True cells of ``mask`` (8-connected), row-major order."""
    rows, cols = np.nonzero(mask)
    h, w = mask.shape
    same = np.zeros(rows.size, dtype=np.uint8)
    for k in range(8):
        rr, cc = rows + K.DROW[k], cols + K.DCOL[k]
        ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        ok[ok] = mask[rr[ok], cc[ok]]
        same |= np.where(ok, K.CODES[k], 0).astype(np.uint8)
    return rows, cols, K.neighbour_index_dense(rows, cols, same, h, w)


def _reference_steps(nbr, seed_idx, seed_val):
    """Independent: Dijkstra from a super source joined to each seed by its value - 1
    (unit edges between flat neighbours); 0 where unreached, as the kernels."""
    n = nbr.shape[0]
    i, k = np.nonzero(nbr >= 0)
    best = np.full(n, np.inf)               # coo_matrix sums duplicates: keep the best seed
    np.minimum.at(best, seed_idx, seed_val.astype(np.float64))
    s = np.flatnonzero(np.isfinite(best))
    src = np.concatenate([i, np.full(s.size, n)])
    dst = np.concatenate([nbr[i, k], s])
    # value - 1 + 1e-9 keeps zero-weight seed edges (scipy drops explicit zeros)
    wgt = np.concatenate([np.ones(i.size), best[s] - 1 + 1e-9])
    g = coo_matrix((wgt, (src, dst)), shape=(n + 1, n + 1)).tocsr()
    d = dijkstra(g, directed=True, indices=n)[:n]
    out = np.where(np.isinf(d), 0, np.round(d + 1)).astype(np.int64)
    return out


@st.composite
def graphs_and_seeds(draw):
    h = draw(st.integers(1, 25))
    w = draw(st.integers(1, 25))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mask = rng.random((h, w)) < draw(st.sampled_from([0.4, 0.7, 1.0]))
    rows, cols, nbr = _flat_graph(mask)
    n = rows.size
    m = draw(st.integers(0, max(n, 1) * 2))
    seed_idx = rng.integers(0, max(n, 1), m) if n else np.zeros(0, np.int64)
    seed_val = rng.integers(1, 30, seed_idx.size).astype(np.int32)
    split = draw(st.integers(0, seed_idx.size))
    return nbr, seed_idx.astype(np.int64), seed_val, split


@settings(max_examples=60, deadline=None)
@given(graphs_and_seeds())
def test_relax_steps_equals_dijkstra_and_is_incremental(case):
    nbr, seed_idx, seed_val, split = case
    n = nbr.shape[0]
    ref = _reference_steps(nbr, seed_idx, seed_val)
    d = np.zeros(n, dtype=np.int32)
    K.relax_steps(nbr, d, seed_idx, seed_val)
    assert np.array_equal(d, ref)
    # two rounds (what the tiling does): first seeds, then the rest on the result
    d2 = np.zeros(n, dtype=np.int32)
    K.relax_steps(nbr, d2, seed_idx[:split], seed_val[:split])
    K.relax_steps(nbr, d2, seed_idx[split:], seed_val[split:])
    assert np.array_equal(d2, ref)


def test_relax_steps_by_hand():
    # a 1 x 5 corridor: cells 0..4. Seed cell 0 with 1 and cell 4 with 2:
    # distances 1,2,3 from the left, 2,3 from the right -> [1, 2, 3, 3, 2]
    _, _, nbr = _flat_graph(np.ones((1, 5), dtype=bool))
    d = np.zeros(5, dtype=np.int32)
    changed = K.relax_steps(nbr, d, np.array([0, 4]), np.array([1, 2], dtype=np.int32))
    assert d.tolist() == [1, 2, 3, 3, 2]
    assert changed == 5
    # a worse seed changes nothing; a better one lowers only what it reaches first
    assert K.relax_steps(nbr, d, np.array([2]), np.array([9], dtype=np.int32)) == 0
    K.relax_steps(nbr, d, np.array([3]), np.array([1], dtype=np.int32))
    assert d.tolist() == [1, 2, 2, 1, 2]


def test_edge_tables_by_hand():
    # grid of 4 columns; edge cells at keys 1 (row 0, col 1) and 6 (row 1, col 2):
    # 6 is the SE neighbour (k = 1) of 1, and 1 the NW neighbour (k = 5) of 6.
    keys = np.array([1, 6], dtype=np.int64)
    ext = np.array([K.CODES[1], K.CODES[5]], dtype=np.uint8)
    dist = np.array([4, 0], dtype=np.int32)
    assert K.edge_candidates(keys, ext, dist, 4).tolist() == [0, 5]
    a, b = K.edge_links(keys, ext, 4)
    assert a.tolist() == [0] and b.tolist() == [1]
    # label maxima and the combined mask 2 * towards + (height - away)
    assert K.label_max(np.array([0, 1, 0], np.int32), 3, np.array([3, 1, 5])).tolist() == [5, 1, 0]
    m = K.flat_mask(np.array([1, 2, 3], np.int32), np.array([0, 2, 1], np.int32),
                    np.array([4, 4, 4], np.int64))
    assert m.tolist() == [2, 4 + 2, 6 + 3]


def _spiral(n):
    """A flat spiral corridor (elevation 5) in walls at 9, draining at its outer end:
    the shortest flat paths wind across the tile grid many times."""
    z = np.full((n, n), 9.0)
    top, left, bottom, right = 1, 1, n - 2, n - 2
    while top <= bottom and left <= right:
        z[top, left:right + 1] = 5.0
        z[top:bottom + 1, right] = 5.0
        z[bottom, left:right + 1] = 5.0
        z[top + 2:bottom + 1, left] = 5.0
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
        if top <= bottom:
            z[top, left - 1] = 5.0           # connect to the next (inner) ring
    z[1, 0] = 4.0                           # the only exit, at the outer end
    return z


def test_spiral_flat_many_rounds(caplog):
    z = _spiral(41)
    f, d8, _ = _one_array(z)
    assert np.count_nonzero(f == 5.0) > 500
    with caplog.at_level(logging.DEBUG, logger="pipeline.ops.hydrology"):
        dt = H.flow_directions_d8(_da(f).chunk(5))
    assert np.array_equal(dt.values, d8)
    rounds = [r.getMessage() for r in caplog.records if "converged in" in r.getMessage()]
    assert rounds and int(rounds[0].split("converged in ")[1].split()[0]) > 5
    # every flat cell drains (no 0 codes inside the raster)
    assert not np.any(d8[1:-1, 1:-1] == 0)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.integers(2, 9), st.integers(4, 13), st.integers(4, 13))
def test_large_flats_any_chunking(seed, levels, ch_y, ch_x):
    # smooth, coarsely quantised terrain: after filling, lakes and terraces are
    # large flats that cross many small tiles; islands of higher ground inside
    # them make the "away" gradient matter
    rng = np.random.default_rng(seed)
    h, w = rng.integers(15, 50, 2)
    coarse = rng.random((h // 6 + 2, w // 6 + 2))
    z = np.kron(coarse, np.ones((6, 6)))[:h, :w]
    z = np.floor(z * levels + rng.random((h, w)) * 0.3)
    f, d8, _ = _one_array(z)
    dt = H.flow_directions_d8(_da(f).chunk({"y": int(ch_y), "x": int(ch_x)}))
    assert np.array_equal(dt.values, d8)
