"""D8 of one tile with its flats resolved on dense per-tile arrays.

Same codes as the sparse path of :mod:`pipeline.kernels.hydro_d8`
(:func:`d8_steepest` + :func:`flat_cell_tables` + :func:`resolve_flats`), but
the flat cells are never gathered into a neighbour table: their same-elevation
neighbour bits, component labels and the two Barnes (2014) step distances live
in h x w arrays and the breadth-first searches walk the grid itself. On the
benchmark DEMs (elevations rounded to cm) half of all cells are flat after
filling, so the flat resolution is most of the D8 cost.

Step distances are shortest paths, so they do not depend on the order in which
the searches visit cells: the result is the sparse path's, cell for cell.

Flats that reach beyond the tile (a same-elevation flat neighbour in the
1-cell ring around it) cannot be resolved here; their cells keep
``D8_FLAT`` and are returned as the sparse tables the tiled resolver of
:mod:`pipeline.kernels.hydro_d8` continues from (distances within the tile,
labels numbered 0.. in row-major order of first cell).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from pipeline.kernels.hydro_common import CODES, D8_FLAT, DCOL, DROW
from pipeline.kernels.hydro_d8 import d8_steepest


@njit(cache=True, nogil=True)
def _flat_bits(zp, dr, h, w):
    """Dense ``same``, ``inner``, ``low`` bits and ``high`` flags of the flat cells of the tile.

    ``zp``: tile + 2-cell halo; ``dr``: codes of tile + 1-cell ring. Bits as in
    :func:`pipeline.kernels.hydro_d8.flat_cell_tables` (ring neighbours
    included); ``inner``: the ``same`` bits that point inside the tile, so the
    searches can step by flat index without bounds checks. Returns
    ``(same, inner, low, high, n_flat)``.
    """
    same = np.zeros((h, w), dtype=np.uint8)
    inner = np.zeros((h, w), dtype=np.uint8)
    low = np.zeros((h, w), dtype=np.uint8)
    high = np.zeros((h, w), dtype=np.bool_)
    n = 0
    for i in range(h):
        border = i == 0 or i == h - 1
        for j in range(w):
            if dr[i + 1, j + 1] != D8_FLAT:
                continue
            n += 1
            z = zp[i + 2, j + 2]
            s = 0
            lo = 0
            hi = False
            for k in range(8):
                zn = zp[i + 2 + DROW[k], j + 2 + DCOL[k]]
                if np.isnan(zn):
                    continue
                if zn > z:
                    hi = True
                elif zn == z:
                    if dr[i + 1 + DROW[k], j + 1 + DCOL[k]] == D8_FLAT:
                        s |= CODES[k]
                    else:
                        lo |= CODES[k]
            same[i, j] = s
            inside = s
            if s != 0 and (border or j == 0 or j == w - 1):
                for k in range(8):
                    if not _inside(i + DROW[k], j + DCOL[k], h, w):
                        inside &= ~CODES[k]
            inner[i, j] = inside
            low[i, j] = lo
            high[i, j] = hi
    return same, inner, low, high, n


@njit(cache=True, nogil=True)
def _inside(r, c, h, w):
    return 0 <= r < h and 0 <= c < w


@njit(cache=True, nogil=True)
def _label_flats(dr, same, inner, h, w, queue):
    """Component labels (row-major order of first cell) of the tile's flat cells.

    Returns ``(lab, nlab, exported)``: ``lab`` -1 off flats; ``exported[l]`` is
    True when component ``l`` has a same-elevation flat neighbour outside the
    tile (a ``same`` bit that is not an ``inner`` bit). The search walks flat
    indices (neighbour k at ``u + off[k]``) along ``inner`` bits only.
    """
    lab = np.full(h * w, -1, dtype=np.int32)
    sf = same.ravel()
    inf = inner.ravel()
    off = DROW * w + DCOL
    exported = np.zeros(queue.shape[0] + 1, dtype=np.bool_)
    nlab = 0
    for i in range(h):
        for j in range(w):
            start = i * w + j
            if dr[i + 1, j + 1] != D8_FLAT or lab[start] >= 0:
                continue
            lab[start] = nlab
            queue[0] = start
            head = 0
            tail = 1
            ext = False
            while head < tail:
                u = queue[head]
                head += 1
                s = inf[u]
                if s != sf[u]:
                    ext = True
                if s == 0:
                    continue
                for k in range(8):
                    if s & CODES[k]:
                        v = u + off[k]
                        if lab[v] < 0:
                            lab[v] = nlab
                            queue[tail] = v
                            tail += 1
            exported[nlab] = ext
            nlab += 1
    return lab.reshape(h, w), nlab, exported[:nlab]


@njit(cache=True, nogil=True)
def _bfs_dense(inner, seed, h, w, queue):
    """Step distances (seed = 1, 0 unreached) over same-elevation flat neighbours
    inside the tile (``inner`` bits), from the cells where ``seed`` is nonzero;
    walks flat indices as :func:`_label_flats` does."""
    n = h * w
    dist = np.zeros(n, dtype=np.int32)
    inf = inner.ravel()
    sd = seed.ravel()
    off = DROW * w + DCOL
    tail = 0
    for u in range(n):
        if sd[u]:
            dist[u] = 1
            queue[tail] = u
            tail += 1
    head = 0
    while head < tail:
        u = queue[head]
        head += 1
        s = inf[u]
        if s == 0:
            continue
        d = dist[u] + 1
        for k in range(8):
            if s & CODES[k]:
                v = u + off[k]
                if dist[v] == 0:
                    dist[v] = d
                    queue[tail] = v
                    tail += 1
    return dist.reshape(h, w)


@njit(cache=True, nogil=True)
def _resolve_local(d8, same, low, lab, exported, towards, away, nlab, h, w):
    """Codes of the flat cells of components inside the tile, in ``d8`` (as resolve_flats).

    The Barnes (2014) combined mask ``2 * towards + (height - away if away > 0)``
    is computed once per flat cell (``height``: the flat's maximum ``away``);
    each cell then drains to its neighbour of lowest mask (a low edge counts
    0), the first in neighbour order on ties, or gets 0 when none is lower.
    """
    height = np.zeros(nlab, dtype=np.int64)
    for i in range(h):
        for j in range(w):
            lb = lab[i, j]
            if lb >= 0 and away[i, j] > height[lb]:
                height[lb] = away[i, j]
    mask = np.zeros((h, w), dtype=np.int64)
    for i in range(h):
        for j in range(w):
            lb = lab[i, j]
            if lb < 0:
                continue
            m = 2 * np.int64(towards[i, j])
            if away[i, j] > 0:
                m += height[lb] - away[i, j]
            mask[i, j] = m
    for i in range(h):
        for j in range(w):
            lb = lab[i, j]
            if lb < 0 or exported[lb]:
                continue
            d8[i, j] = 0
            if towards[i, j] == 0:
                continue
            lo = low[i, j]
            s = same[i, j]
            best = mask[i, j]
            bk = -1
            for k in range(8):
                if lo & CODES[k]:
                    cand = np.int64(0)
                elif s & CODES[k]:
                    cand = mask[i + DROW[k], j + DCOL[k]]
                else:
                    continue
                if cand < best:
                    best = cand
                    bk = k
            if bk >= 0:
                d8[i, j] = CODES[bk]


@njit(cache=True, nogil=True)
def _exported_tables(same, low, lab, exported, towards, away, nlab, h, w):
    """Sparse tables (row-major) of the cells of exported flats, labels renumbered 0.."""
    n = 0
    for i in range(h):
        for j in range(w):
            if lab[i, j] >= 0 and exported[lab[i, j]]:
                n += 1
    rows = np.empty(n, dtype=np.int64)
    cols = np.empty(n, dtype=np.int64)
    s_out = np.empty(n, dtype=np.uint8)
    l_out = np.empty(n, dtype=np.uint8)
    ext = np.zeros(n, dtype=np.uint8)
    lab_out = np.empty(n, dtype=np.int32)
    tow = np.empty(n, dtype=np.int32)
    aw = np.empty(n, dtype=np.int32)
    renum = np.full(nlab, -1, dtype=np.int32)
    nnew = 0
    m = 0
    for i in range(h):
        for j in range(w):
            lb = lab[i, j]
            if lb < 0 or not exported[lb]:
                continue
            if renum[lb] < 0:
                renum[lb] = nnew
                nnew += 1
            rows[m] = i
            cols[m] = j
            s_out[m] = same[i, j]
            l_out[m] = low[i, j]
            for k in range(8):
                if (same[i, j] & CODES[k]) and not _inside(i + DROW[k], j + DCOL[k], h, w):
                    ext[m] |= CODES[k]
            lab_out[m] = renum[lb]
            tow[m] = towards[i, j]
            aw[m] = away[i, j]
            m += 1
    return rows, cols, s_out, l_out, ext, lab_out, nnew, tow, aw


@njit(cache=True, nogil=True)
def d8_tile(zp):
    """D8 codes of a tile, flats inside the tile resolved, from ``zp`` = tile + 2-cell halo.

    ``zp``: filled elevations (float32 or float64; compared in float64), NaN =
    nodata or outside the raster. Returns ``(d8, rows, cols, same, low, ext,
    lab, nlab, towards, away)``: the tile's uint8 codes (``D8_FLAT`` on flats
    that leave the tile) and, for the cells of those flats (row-major), the
    tables of the tiled resolver: block rows/cols, ``same``/``low`` bits,
    ``ext`` (same bits pointing outside the tile), labels 0..nlab-1 and the
    two step distances within the tile.
    """
    h = zp.shape[0] - 4
    w = zp.shape[1] - 4
    dr = d8_steepest(zp, 1, 1, h + 2, w + 2)
    d8 = np.ascontiguousarray(dr[1:-1, 1:-1])
    same, inner, low, high, nflat = _flat_bits(zp, dr, h, w)
    queue = np.empty(nflat, dtype=np.int32)
    lab, nlab, exported = _label_flats(dr, same, inner, h, w, queue)
    towards = _bfs_dense(inner, low, h, w, queue)
    away = _bfs_dense(inner, high, h, w, queue)
    _resolve_local(d8, same, low, lab, exported, towards, away, nlab, h, w)
    rows, cols, s_out, l_out, ext, lab_out, nexp, tow, aw = _exported_tables(
        same, low, lab, exported, towards, away, nlab, h, w)
    return d8, rows, cols, s_out, l_out, ext, lab_out, nexp, tow, aw
