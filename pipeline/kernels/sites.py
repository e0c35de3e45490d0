"""Numba kernels for site geometry on a D8 grid (plain numpy arrays only).

D8 codes are ESRI's: 1 E, 2 SE, 4 S, 8 SW, 16 W, 32 NW, 64 N, 128 NE; 0 is an
outlet/pit and `nodata` (255) is outside the basin. Row 0 is north, so "S" is
row + 1. A cell whose code points outside the grid or into a nodata cell ends
its flow path there (it is treated as an outlet), as pyflwdir does.

Cell indices are row-major flat indices (``row * ncols + col``) in int64.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Offsets (drow, dcol) of the 8 neighbours and the D8 code a cell at that offset
# must carry to drain into the centre cell (it points back, i.e. the opposite way).
_NB_DR = np.array([0, 1, 1, 1, 0, -1, -1, -1], dtype=np.int64)
_NB_DC = np.array([1, 1, 0, -1, -1, -1, 0, 1], dtype=np.int64)
# neighbour at E (0,+1) drains into the centre when its code is W (16), etc.
_NB_CODE_INTO = np.array([16, 32, 64, 128, 1, 2, 4, 8], dtype=np.int64)


@njit(cache=True, nogil=True)
def _d8_offset(code):
    """(drow, dcol) of a D8 code; (0, 0) for anything that is not a direction."""
    if code == 1:
        return 0, 1
    if code == 2:
        return 1, 1
    if code == 4:
        return 1, 0
    if code == 8:
        return 1, -1
    if code == 16:
        return 0, -1
    if code == 32:
        return -1, -1
    if code == 64:
        return -1, 0
    if code == 128:
        return -1, 1
    return 0, 0


@njit(cache=True, nogil=True)
def upstream_cells(d8, seeds, nodata, scratch):
    """Every cell draining (D8, transitively) into any seed cell, seeds excluded.

    d8      : 2-D uint8 D8 codes.
    seeds   : 1-D int64 flat indices of the seed cells (e.g. the site's cells).
    nodata  : D8 nodata code (255); such cells never drain anywhere.
    scratch : uint8 array of d8.size, all zero on entry; it is used to mark
              visited cells and is reset to all zero before returning, so one
              scratch buffer serves many sites without re-allocating a grid.

    Returns the flat indices (int64) of the contributing cells in BFS order.
    Seeds are walked through (a path that leaves the seed set and re-enters it
    is handled: the cells in between drain into a seed and so belong to the
    result), but never returned.
    """
    nrows, ncols = d8.shape
    flat = d8.ravel()
    n_seed = seeds.shape[0]
    queue = np.empty(max(16, 2 * n_seed), dtype=np.int64)
    head = 0
    tail = 0
    for k in range(n_seed):
        s = seeds[k]
        if scratch[s] == 0:
            scratch[s] = 2  # 2 = seed
            queue[tail] = s
            tail += 1
    n_out = 0
    while head < tail:
        cur = queue[head]
        head += 1
        r = cur // ncols
        c = cur - r * ncols
        for k in range(8):
            rr = r + _NB_DR[k]
            cc = c + _NB_DC[k]
            if rr < 0 or rr >= nrows or cc < 0 or cc >= ncols:
                continue
            nb = rr * ncols + cc
            if scratch[nb] != 0:
                continue
            code = np.int64(flat[nb])
            if code == nodata or code != _NB_CODE_INTO[k]:
                continue
            scratch[nb] = 1
            n_out += 1
            if tail == queue.shape[0]:
                bigger = np.empty(2 * queue.shape[0], dtype=np.int64)
                bigger[:tail] = queue[:tail]
                queue = bigger
            queue[tail] = nb
            tail += 1
    out = np.empty(n_out, dtype=np.int64)
    j = 0
    for i in range(tail):
        idx = queue[i]
        if scratch[idx] == 1:
            out[j] = idx
            j += 1
        scratch[idx] = 0
    return out


@njit(cache=True, nogil=True)
def count_values(values, idxs, nbins):
    """Histogram of ``values.ravel()[idxs]`` over 0..nbins-1 (others ignored)."""
    flat = values.ravel()
    counts = np.zeros(nbins, dtype=np.int64)
    for i in range(idxs.shape[0]):
        v = np.int64(flat[idxs[i]])
        if 0 <= v < nbins:
            counts[v] += 1
    return counts


@njit(cache=True, nogil=True)
def outlet_cell(acc, idxs):
    """Cell of ``idxs`` with the largest accumulation (NaN ignored).

    Ties go to the first cell in row-major order whatever the order of idxs.
    Returns -1 when idxs is empty or every accumulation is NaN.
    """
    flat = acc.ravel()
    best = -1
    best_v = -np.inf
    for i in range(idxs.shape[0]):
        idx = idxs[i]
        v = np.float64(flat[idx])
        if np.isnan(v):
            continue
        if best == -1 or v > best_v or (v == best_v and idx < best):
            best = idx
            best_v = v
    return best


@njit(cache=True, nogil=True)
def _downstream(flat, cur, nrows, ncols, nodata):
    """Flat index of the cell ``cur`` drains to, or -1 where its D8 path ends: ``cur``
    coded nodata or 0 (outlet/pit), pointing off the grid or into nodata."""
    code = np.int64(flat[cur])
    if code == nodata:
        return -1
    dr, dc = _d8_offset(code)
    if dr == 0 and dc == 0:
        return -1
    r = cur // ncols
    rr = r + dr
    cc = cur - r * ncols + dc
    if rr < 0 or rr >= nrows or cc < 0 or cc >= ncols:
        return -1
    nxt = rr * ncols + cc
    if np.int64(flat[nxt]) == nodata:
        return -1
    return nxt


@njit(cache=True, nogil=True)
def downstream_path(d8, start, nodata, dx, dy):
    """D8 flow path from ``start`` down to the basin outlet.

    Returns (idxs, cum_len): flat indices of the path cells, starting with
    ``start``, and the cumulative length (metres) along the path at each cell
    (0 at start). A step adds dx (E/W), dy (N/S) or sqrt(dx^2 + dy^2)
    (diagonal). The path ends at a cell coded 0 (outlet/pit) or nodata, a cell
    pointing off the grid or into nodata, or - defensively, against a D8 loop,
    which a valid D8 grid cannot contain - after as many steps as the grid has
    cells.
    """
    nrows, ncols = d8.shape
    flat = d8.ravel()
    diag = np.sqrt(dx * dx + dy * dy)
    cap = 64
    idxs = np.empty(cap, dtype=np.int64)
    cum = np.empty(cap, dtype=np.float64)
    idxs[0] = start
    cum[0] = 0.0
    n = 1
    cur = start
    limit = flat.shape[0]
    while n <= limit:
        nxt = _downstream(flat, cur, nrows, ncols, nodata)
        if nxt < 0:
            break
        if nxt // ncols != cur // ncols and nxt % ncols != cur % ncols:
            step = diag
        elif nxt // ncols != cur // ncols:
            step = dy
        else:
            step = dx
        if n == cap:
            cap *= 2
            bi = np.empty(cap, dtype=np.int64)
            bc = np.empty(cap, dtype=np.float64)
            bi[:n] = idxs[:n]
            bc[:n] = cum[:n]
            idxs = bi
            cum = bc
        idxs[n] = nxt
        cum[n] = cum[n - 1] + step
        n += 1
        cur = nxt
    return idxs[:n].copy(), cum[:n].copy()


@njit(cache=True, nogil=True)
def lowest_seeds(d8, seeds, seed_r0, seed_c0, seed_mask, nodata):
    """For each seed, whether the D8 path below it (the seed itself excluded) meets
    no other seed: the "lowest" seeds, whose upstream areas are disjoint and
    together hold every seed and the whole CB of the seed set (on an acyclic D8).

    seeds      : 1-D int64 flat indices, unique.
    seed_r0, seed_c0, seed_mask : the seeds as a bool mask of a window whose
                 top-left cell is (seed_r0, seed_c0).
    The path ends as in ``downstream_path`` (outlet, nodata, off the grid, into
    nodata); a seed inside the seed set ends its walk after one step.
    """
    nrows, ncols = d8.shape
    flat = d8.ravel()
    mr, mc = seed_mask.shape
    out = np.zeros(seeds.shape[0], dtype=np.bool_)
    limit = flat.shape[0]
    for k in range(seeds.shape[0]):
        cur = seeds[k]
        lowest = True
        for _ in range(limit):
            nxt = _downstream(flat, cur, nrows, ncols, nodata)
            if nxt < 0:
                break
            lr = nxt // ncols - seed_r0
            lc = nxt % ncols - seed_c0
            if 0 <= lr < mr and 0 <= lc < mc and seed_mask[lr, lc]:
                lowest = False
                break
            cur = nxt
        out[k] = lowest
    return out


@njit(cache=True, nogil=True)
def upstream_totals(d8, keys, order, nodata, values, binlut, nbins):
    """Size and class histograms of the upstream area (the cell itself included) of
    every key cell, each walked once, reusing the keys already done.

    d8     : 2-D uint8 D8 codes (acyclic).
    keys   : 1-D int64 sorted unique flat indices.
    order  : the order to do the keys in (a permutation of 0..len(keys)-1); any
             order gives the same result, upstream keys first (ascending
             accumulation) is the fast one: a walk stops at a key already done and
             adds its totals, so nested areas are walked once, not once per key.
    values : 3-D uint8 (n_layers, rows, cols) class rasters; binlut maps a value to
             its bin 0..nbins-1.

    Returns (n, hist): n[j] cells upstream of keys[j] (itself included) and
    hist[j, layer, bin]. n[j] = -1 flags a D8 loop (the walk came back round).
    The done keys are marked in a bitmap of one bit per cell; the walk needs no
    other grid-sized buffer (each cell has one downstream neighbour, so it is
    reached once).
    """
    nrows, ncols = d8.shape
    flat = d8.ravel()
    size = flat.shape[0]
    nv = values.shape[0]
    nk = keys.shape[0]
    key_n = np.zeros(nk, dtype=np.int64)
    key_hist = np.zeros((nk, nv, nbins), dtype=np.int64)
    done = np.zeros((size + 7) // 8, dtype=np.uint8)
    stack = np.empty(1024, dtype=np.int64)
    for o in range(nk):
        j = order[o]
        start = keys[j]
        sr = start // ncols
        sc = start - sr * ncols
        n = 1
        for v in range(nv):
            key_hist[j, v, binlut[values[v, sr, sc]]] += 1
        stack[0] = start
        top = 1
        while top > 0 and n <= size:
            top -= 1
            cur = stack[top]
            r = cur // ncols
            c = cur - r * ncols
            for k in range(8):
                rr = r + _NB_DR[k]
                cc = c + _NB_DC[k]
                if rr < 0 or rr >= nrows or cc < 0 or cc >= ncols:
                    continue
                nb = rr * ncols + cc
                code = np.int64(flat[nb])
                if code == nodata or code != _NB_CODE_INTO[k]:
                    continue
                if (done[nb >> 3] >> (nb & 7)) & 1:
                    i = np.searchsorted(keys, nb)
                    n += key_n[i]
                    for v in range(nv):
                        for b in range(nbins):
                            key_hist[j, v, b] += key_hist[i, v, b]
                    continue
                n += 1
                for v in range(nv):
                    key_hist[j, v, binlut[values[v, rr, cc]]] += 1
                if top == stack.shape[0]:
                    bigger = np.empty(2 * stack.shape[0], dtype=np.int64)
                    bigger[:top] = stack[:top]
                    stack = bigger
                stack[top] = nb
                top += 1
        key_n[j] = n if n <= size else -1
        done[start >> 3] |= np.uint8(1 << (start & 7))
    return key_n, key_hist


@njit(cache=True, nogil=True)
def histogram_u8(values):
    """Counts of each value 0..255 of a uint8 array (any shape), without a widened copy."""
    flat = values.ravel()
    counts = np.zeros(256, dtype=np.int64)
    for i in range(flat.shape[0]):
        counts[flat[i]] += 1
    return counts

