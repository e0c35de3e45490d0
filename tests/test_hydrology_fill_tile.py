"""The per-tile pass of the tiled fill (Barnes 2016 labels, slope queue of Zhou et al. 2016).

Checked against the one-array priority-flood (which has no slope queue: an
independent code path) and, by brute force over all pairs of touching cells,
for the spill edges the central graph needs.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.kernels import hydrology as K
from pipeline.kernels.hydro_fill import OCEAN


@st.composite
def tiles(draw):
    h = draw(st.integers(1, 40))
    w = draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["noise", "slopes", "levels"]))
    if kind == "noise":
        z = rng.random((h + 2, w + 2)) * 100
    elif kind == "slopes":
        # long ramps with small pits: most cells are climbed by the slope queue
        z = np.add.outer(np.arange(h + 2) * draw(st.floats(-3, 3)),
                         np.arange(w + 2) * draw(st.floats(-3, 3)))
        z = z + rng.random(z.shape) * draw(st.sampled_from([0.0, 0.5, 5.0]))
    else:
        z = rng.integers(0, 4, (h + 2, w + 2)).astype(np.float64)
    z = np.round(z, 1)
    holes = draw(st.sampled_from([0.0, 0.0, 0.05, 0.3]))
    z[rng.random(z.shape) < holes] = np.nan
    if draw(st.booleans()):
        z = z.astype(np.float32)
    return z


def _spill_edges_brute(filled, labels):
    """min over touching cell pairs (8-neighbours) with different non-zero labels
    of max(filled_a, filled_b), keyed by (low label, high label)."""
    h, w = labels.shape
    out = {}
    for r in range(h):
        for c in range(w):
            for dr, dc in ((0, 1), (1, -1), (1, 0), (1, 1)):
                rr, cc = r + dr, c + dc
                if not (0 <= rr < h and 0 <= cc < w):
                    continue
                a, b = labels[r, c], labels[rr, cc]
                if a == 0 or b == 0 or a == b:
                    continue
                k = (min(a, b), max(a, b))
                v = max(filled[r, c], filled[rr, cc])
                out[k] = min(out.get(k, np.inf), v)
    return out


@settings(max_examples=80, deadline=None)
@given(tiles())
def test_tile_fill_equals_priority_flood_and_edges_are_exact(zp):
    filled, labels, n_labels, eu, ev, ew = K.fill_tile_labels(zp)
    inner = zp[1:-1, 1:-1]
    # flooding the tile from its own edge and nodata = one-array fill of the tile
    ref = K.priority_flood_fill(inner.astype(np.float64))
    assert np.array_equal(filled, ref, equal_nan=True)
    # labels: 0 exactly on nodata; cells next to nodata (halo included) are ocean
    # seeds, so they (and what they flood) carry the ocean label
    nan_p = np.isnan(zp.astype(np.float64))
    assert np.array_equal(labels == 0, np.isnan(inner))
    near_nan = np.zeros(inner.shape, dtype=bool)
    for k in range(8):
        near_nan |= nan_p[1 + K.DROW[k]:nan_p.shape[0] - 1 + K.DROW[k],
                          1 + K.DCOL[k]:nan_p.shape[1] - 1 + K.DCOL[k]]
    assert np.all(labels[near_nan & ~np.isnan(inner)] == OCEAN)
    if not near_nan.any():
        assert not np.any(labels == OCEAN)
    assert labels.max(initial=0) < n_labels
    # every label region holds its seed on the tile edge (or touches nodata)
    edge = np.zeros(inner.shape, dtype=bool)
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
    for lab in np.unique(labels[labels > OCEAN]):
        assert np.any((labels == lab) & edge)
    # spill edges: exactly the brute-force minimum over touching pairs
    got = {(int(a), int(b)): float(x) for a, b, x in zip(eu, ev, ew)}
    assert got == _spill_edges_brute(filled, labels)


def test_slope_queue_by_hand():
    # a ramp rising to the east with a pit at (2, 3): interior cells are reached
    # from below, the pit is filled to its lowest rim (the cell west of it, 2.0)
    zp = np.array([[0, 1, 2, 3, 4, 5, 6],
                   [0, 1, 2, 3, 4, 5, 6],
                   [0, 1, 2, 0.5, 4, 5, 6],
                   [0, 1, 2, 3, 4, 5, 6],
                   [0, 1, 2, 3, 4, 5, 6]], dtype=np.float64)
    filled, labels, *_ = K.fill_tile_labels(zp)
    exp = zp[1:-1, 1:-1].copy()
    exp[1, 2] = 2.0
    assert np.array_equal(filled, exp)


@settings(max_examples=60, deadline=None)
@given(tiles())
def test_float32_bit_keys_order_as_float64_ranks(zp):
    # float32 tiles are ordered by their monotone bit pattern (computed in the
    # kernel), float64 tiles by dense ranks; on the same values (negative ones
    # too) both must flood in the same order: same labels, edges and levels
    z32 = (zp - 50.0).astype(np.float32)
    a = K.fill_tile_labels(z32)
    b = K.fill_tile_labels(z32.astype(np.float64))
    assert a[0].dtype == np.float32 and b[0].dtype == np.float64
    assert np.array_equal(a[0], b[0], equal_nan=True)
    for x, y in zip(a[1:], b[1:]):
        assert np.array_equal(x, y)
