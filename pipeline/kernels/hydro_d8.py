"""D8 flow directions (ESRI codes) with flats resolved, whole-array and tile-wise.

Steepest descent: the neighbour with the largest ``(z - z_n) / d`` (d = 1, or
sqrt(2) on diagonals, in cell units); ties go to the first neighbour in the
order E, SE, S, SW, W, NW, N, NE.

Cells without a strictly lower neighbour:
- outlet cells (raster edge, or next to nodata) get 0: water leaves the raster
  there (pyflwdir marks the same cells as pits);
- every other such cell is a *flat* cell and is resolved with Barnes, Lehman &
  Mulla (2014) "An efficient assignment of drainage direction over flat
  surfaces": a gradient towards lower terrain (breadth-first step distance from
  the low edges) combined with a gradient away from higher terrain; the
  combined mask ``2 * towards + (flat_height - away)`` strictly decreases along
  the chosen directions, so every flat cell drains and no cycle is possible.

Low edges are same-elevation neighbours that already drain (they have a lower
neighbour, or are outlets). On a depression-filled DEM every flat has one.

The flat resolver works on a sparse list of flat cells (a neighbour table): it
resolves the flats of one array and, tile by tile, the flats that span several
tiles. The tiled D8 resolves the flats inside one tile with the dense per-tile
kernel of :mod:`pipeline.kernels.hydro_d8_tile` (same codes, tested against
this module). The result depends only on the flat's geometry, never on the
tiling.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from pipeline.kernels.hydro_common import CODES, D8_FLAT, D8_NODATA, DCOL, DIST, DROW


@njit(cache=True, nogil=True)
def d8_steepest(zp, r0, c0, h, w):
    """Codes for cells ``zp[r0:r0+h, c0:c0+w]``; zp must extend 1 cell beyond them.

    NaN = nodata or outside the raster. Returns uint8: ESRI code, 0 (outlet),
    255 (nodata) or D8_FLAT (254, to be resolved). Drops are computed in float64
    whatever the dtype of ``zp``, so a float32 tile gives the float64 result.
    """
    out = np.empty((h, w), dtype=np.uint8)
    for i in range(h):
        r = r0 + i
        for j in range(w):
            c = c0 + j
            z = np.float64(zp[r, c])
            if np.isnan(z):
                out[i, j] = D8_NODATA
                continue
            best = 0.0
            bk = -1
            outlet = False
            for k in range(8):
                zn = np.float64(zp[r + DROW[k], c + DCOL[k]])
                if np.isnan(zn):
                    outlet = True
                    continue
                drop = (z - zn) / DIST[k]
                if drop > best:
                    best = drop
                    bk = k
            if bk >= 0:
                out[i, j] = CODES[bk]
            elif outlet:
                out[i, j] = 0
            else:
                out[i, j] = D8_FLAT
    return out


@njit(cache=True, nogil=True)
def flat_cell_tables(zp, dp, r0, c0, h, w):
    """Neighbour tables of the flat cells of the block ``[r0:r0+h, c0:c0+w]``.

    ``zp``: filled elevations, ``dp``: codes from :func:`d8_steepest`; both must
    cover the block plus 1 cell. Returns for every flat cell of the block (row
    major): ``rows, cols`` (block-relative), ``same`` (bit k: neighbour k is a
    flat cell of the same elevation), ``low`` (bit k: neighbour k has the same
    elevation and already drains: a low edge) and ``high`` (a valid neighbour is
    higher).
    """
    n = 0
    for i in range(h):
        for j in range(w):
            if dp[r0 + i, c0 + j] == D8_FLAT:
                n += 1
    rows = np.empty(n, dtype=np.int64)
    cols = np.empty(n, dtype=np.int64)
    same = np.zeros(n, dtype=np.uint8)
    low = np.zeros(n, dtype=np.uint8)
    high = np.zeros(n, dtype=np.bool_)
    m = 0
    for i in range(h):
        for j in range(w):
            r = r0 + i
            c = c0 + j
            if dp[r, c] != D8_FLAT:
                continue
            rows[m] = i
            cols[m] = j
            z = zp[r, c]
            for k in range(8):
                rr = r + DROW[k]
                cc = c + DCOL[k]
                zn = zp[rr, cc]
                if np.isnan(zn):
                    continue
                if zn > z:
                    high[m] = True
                elif zn == z:
                    if dp[rr, cc] == D8_FLAT:
                        same[m] |= CODES[k]
                    else:
                        low[m] |= CODES[k]
            m += 1
    return rows, cols, same, low, high


@njit(cache=True, nogil=True)
def neighbour_index(keys, same, ncols):
    """Positions of same-elevation flat neighbours in the sorted ``keys`` (-1 = none).

    ``keys`` are linear indices ``row * ncols + col`` in one consistent grid.
    int32 positions (4 bytes x 8 per flat cell): fewer than 2**31 flat cells.
    """
    n = keys.shape[0]
    nbr = np.full((n, 8), -1, dtype=np.int32)
    for i in range(n):
        if same[i] == 0:
            continue
        r = keys[i] // ncols
        c = keys[i] - r * ncols
        for k in range(8):
            if same[i] & CODES[k]:
                key = (r + DROW[k]) * ncols + (c + DCOL[k])
                p = np.searchsorted(keys, key)
                if p < n and keys[p] == key:
                    nbr[i, k] = np.int32(p)
    return nbr


@njit(cache=True, nogil=True)
def neighbour_index_dense(rows, cols, same, h, w):
    """As :func:`neighbour_index` for cells of one h x w block, with a dense position map.

    Bits of ``same`` pointing outside the block are ignored.
    """
    n = rows.shape[0]
    pos = np.full((h, w), -1, dtype=np.int32)
    for i in range(n):
        pos[rows[i], cols[i]] = i
    nbr = np.full((n, 8), -1, dtype=np.int32)
    for i in range(n):
        if same[i] == 0:
            continue
        for k in range(8):
            if same[i] & CODES[k]:
                rr = rows[i] + DROW[k]
                cc = cols[i] + DCOL[k]
                if 0 <= rr < h and 0 <= cc < w:
                    nbr[i, k] = pos[rr, cc]
    return nbr


@njit(cache=True, nogil=True)
def flat_components(nbr):
    """Connected components (labels 0..) of the flat-cell neighbour graph."""
    n = nbr.shape[0]
    lab = np.full(n, -1, dtype=np.int32)
    queue = np.empty(n, dtype=np.int32)
    nlab = 0
    for s in range(n):
        if lab[s] >= 0:
            continue
        lab[s] = nlab
        head = 0
        tail = 0
        queue[tail] = s
        tail += 1
        while head < tail:
            u = queue[head]
            head += 1
            for k in range(8):
                v = nbr[u, k]
                if v >= 0 and lab[v] < 0:
                    lab[v] = nlab
                    queue[tail] = v
                    tail += 1
        nlab += 1
    return lab, nlab


@njit(cache=True, nogil=True)
def _bfs_steps(nbr, seed):
    """Breadth-first step count from seed cells (seed = 1); 0 where unreached."""
    n = nbr.shape[0]
    dist = np.zeros(n, dtype=np.int32)
    queue = np.empty(n, dtype=np.int32)
    head = 0
    tail = 0
    for i in range(n):
        if seed[i]:
            dist[i] = 1
            queue[tail] = i
            tail += 1
    while head < tail:
        u = queue[head]
        head += 1
        for k in range(8):
            v = nbr[u, k]
            if v >= 0 and dist[v] == 0:
                dist[v] = dist[u] + 1
                queue[tail] = v
                tail += 1
    return dist


@njit(cache=True, nogil=True)
def resolve_flats(nbr, low, high):
    """Barnes et al. (2014) flat resolution on a sparse flat-cell graph.

    ``nbr[i, k]``: position of the same-elevation flat neighbour k of cell i or
    -1; ``low[i]``: bit k set when neighbour k is a same-elevation low edge;
    ``high[i]``: cell i touches higher terrain. Returns the ESRI code of every
    flat cell, or 0 for a flat cell with no way out (cannot happen after
    filling; callers treat any 0 as an error).
    """
    n = nbr.shape[0]
    towards = _bfs_steps(nbr, low != 0)
    away = _bfs_steps(nbr, high)
    lab, nlab = flat_components(nbr)
    height = np.zeros(nlab, dtype=np.int64)
    for i in range(n):
        if away[i] > height[lab[i]]:
            height[lab[i]] = away[i]
    mask = np.empty(n, dtype=np.int64)
    for i in range(n):
        mask[i] = 2 * towards[i]
        if away[i] > 0:
            mask[i] += height[lab[i]] - away[i]
    out = np.zeros(n, dtype=np.uint8)
    for i in range(n):
        if towards[i] == 0:
            continue
        best = mask[i]
        bk = -1
        for k in range(8):
            if low[i] & CODES[k]:
                cand = np.int64(0)
            elif nbr[i, k] >= 0:
                cand = mask[nbr[i, k]]
            else:
                continue
            if cand < best:
                best = cand
                bk = k
        if bk >= 0:
            out[i] = CODES[bk]
    return out


# --------------------------------------------------------------------------- tiled flats
#
# Flats that cross tile edges are resolved tile by tile with the same result as
# :func:`resolve_flats` on the whole flat: the two step distances (towards low
# edges, away from higher terrain) are shortest paths on the flat-cell graph, so
# they are the fixed point of per-tile relaxations that exchange the distances of
# the cells on tile edges (:func:`relax_steps`, :func:`edge_candidates`). The
# per-flat height (maximum ``away``) is a maximum over the tiles' parts of the
# flat, joined across edges; the final choice (:func:`resolve_flats_tiled`) looks
# up the masks of neighbours in other tiles in a table of edge cells. Only the
# edge cells are ever gathered centrally.


@njit(cache=True, nogil=True)
def relax_steps(nbr, dist, seed_idx, seed_val):
    """Lower ``dist`` (in place) to ``min(dist, seed + steps)`` over the graph ``nbr``.

    ``dist`` is a step distance with 0 = unreached (= infinity); ``seed_idx`` /
    ``seed_val`` are cells with a candidate distance. Cells are settled in
    increasing distance (sorted seeds merged with a FIFO queue), so each cell is
    expanded at most twice. Returns the number of cells whose distance changed.
    """
    n = nbr.shape[0]
    order = np.argsort(seed_val, kind="mergesort")
    ns = order.shape[0]
    queue = np.empty(n, dtype=np.int32)
    head = 0
    tail = 0
    changed = 0
    for q in range(ns):
        i = seed_idx[order[q]]
        v = seed_val[order[q]]
        if dist[i] == 0 or v < dist[i]:
            dist[i] = v
            changed += 1
    sp = 0
    while sp < ns or head < tail:
        if sp < ns and (head >= tail or seed_val[order[sp]] <= dist[queue[head]]):
            u = seed_idx[order[sp]]
            d = seed_val[order[sp]]
            sp += 1
            if dist[u] != d:
                continue                      # improved meanwhile, or a duplicate seed
        else:
            u = queue[head]
            head += 1
            d = dist[u]
        for k in range(8):
            v = nbr[u, k]
            if v >= 0 and (dist[v] == 0 or dist[v] > d + 1):
                dist[v] = d + 1
                changed += 1
                if tail >= n:                 # cannot happen: each cell is queued once
                    return -1
                queue[tail] = v
                tail += 1
    return changed


@njit(cache=True, nogil=True)
def edge_candidates(keys, ext, dist, ncols):
    """For edge cells (sorted global ``keys``), ``min(dist[j] + 1)`` over the neighbours
    ``j`` in other tiles (bits ``ext``) that are reached; 0 when none is."""
    n = keys.shape[0]
    out = np.zeros(n, dtype=np.int32)
    for i in range(n):
        if ext[i] == 0:
            continue
        r = keys[i] // ncols
        c = keys[i] - r * ncols
        best = 0
        for k in range(8):
            if ext[i] & CODES[k]:
                key = (r + DROW[k]) * ncols + (c + DCOL[k])
                p = np.searchsorted(keys, key)
                if p < n and keys[p] == key and dist[p] > 0:
                    cand = dist[p] + 1
                    if best == 0 or cand < best:
                        best = cand
        out[i] = best
    return out


@njit(cache=True, nogil=True)
def edge_links(keys, ext, ncols):
    """Pairs (i, j), i < j, of edge cells in different tiles that are flat neighbours."""
    n = keys.shape[0]
    m = 0
    for i in range(n):
        for k in range(8):
            if ext[i] & CODES[k]:
                m += 1
    a = np.empty(m, dtype=np.int64)
    b = np.empty(m, dtype=np.int64)
    m = 0
    for i in range(n):
        r = keys[i] // ncols
        c = keys[i] - r * ncols
        for k in range(8):
            if ext[i] & CODES[k]:
                key = (r + DROW[k]) * ncols + (c + DCOL[k])
                p = np.searchsorted(keys, key)
                if p < n and keys[p] == key and p > i:
                    a[m] = i
                    b[m] = p
                    m += 1
    return a[:m], b[:m]


@njit(cache=True, nogil=True)
def label_max(lab, nlab, values):
    """Maximum of ``values`` per label (0 for empty labels)."""
    out = np.zeros(nlab, dtype=np.int64)
    for i in range(lab.shape[0]):
        if values[i] > out[lab[i]]:
            out[lab[i]] = values[i]
    return out


@njit(cache=True, nogil=True)
def flat_mask(towards, away, height):
    """Barnes (2014) combined mask ``2 * towards + (height - away if away > 0)``."""
    n = towards.shape[0]
    mask = np.empty(n, dtype=np.int64)
    for i in range(n):
        mask[i] = 2 * np.int64(towards[i])
        if away[i] > 0:
            mask[i] += height[i] - away[i]
    return mask


@njit(cache=True, nogil=True)
def resolve_flats_tiled(nbr, low, ext, mask, towards, rows, cols, r0, c0, ncols,
                        edge_keys, edge_mask):
    """Codes of a tile's flat cells, as :func:`resolve_flats`; neighbours in other
    tiles (bits ``ext``) are looked up in the sorted ``edge_keys`` / ``edge_mask``."""
    n = nbr.shape[0]
    ne = edge_keys.shape[0]
    out = np.zeros(n, dtype=np.uint8)
    for i in range(n):
        if towards[i] == 0:
            continue
        best = mask[i]
        bk = -1
        for k in range(8):
            if low[i] & CODES[k]:
                cand = np.int64(0)
            elif nbr[i, k] >= 0:
                cand = mask[nbr[i, k]]
            elif ext[i] & CODES[k]:
                key = (r0 + rows[i] + DROW[k]) * ncols + (c0 + cols[i] + DCOL[k])
                p = np.searchsorted(edge_keys, key)
                if p >= ne or edge_keys[p] != key:
                    continue                  # cannot happen: ext neighbours are edge cells
                cand = edge_mask[p]
            else:
                continue
            if cand < best:
                best = cand
                bk = k
        if bk >= 0:
            out[i] = CODES[bk]
    return out


def flow_directions_d8(filled):
    """D8 codes of a whole depression-filled array (NaN = nodata); uint8.

    Plain-numpy driver around the kernels (pads by one NaN cell so raster-edge
    cells are outlets).
    """
    filled = np.asarray(filled, dtype=np.float64)
    h, w = filled.shape
    zp = np.full((h + 2, w + 2), np.nan)
    zp[1:-1, 1:-1] = filled
    d8 = d8_steepest(zp, 1, 1, h, w)
    dp = np.full((h + 2, w + 2), D8_NODATA, dtype=np.uint8)
    dp[1:-1, 1:-1] = d8
    rows, cols, same, low, high = flat_cell_tables(zp, dp, 1, 1, h, w)
    if rows.size:
        nbr = neighbour_index_dense(rows, cols, same, h, w)
        codes = resolve_flats(nbr, low, high)
        d8[rows, cols] = codes
    return d8
