"""Flow accumulation on D8 codes, whole-array and tile-wise.

Tile-wise scheme: Barnes (2017) "Parallel non-divergent flow accumulation for
trillion cell digital elevation models on desktops or clusters".

1. per tile (:func:`accumulate_block` + :func:`perimeter_links`): accumulate
   inside the tile only, and for every perimeter cell record the *exit* cell of
   the tile its flow path reaches (or -1 when the path ends in the tile), and
   for exit cells the cell of the neighbouring tile they flow into;
2. central (:func:`solve_perimeter_flow`): one topological pass over the
   perimeter cells of all tiles gives the flow entering each tile from outside;
3. per tile: accumulate again with that inflow added at the entry cells.

A path ends at a 0 code (pit/outlet), at the raster edge, or where the target is
nodata (255). Each cell counts itself (weight 1, or its weight).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from pipeline.kernels.hydro_common import DCOL, DROW, code_to_k


@njit(cache=True, nogil=True)
def accumulate_block(dp, weights, add_idx, add_val, out):
    """Accumulate inside the block ``dp[1:-1, 1:-1]`` (dp has a 1-cell halo, 255 outside).

    ``weights``: block-shaped, or size 0 for "each cell counts 1"; ``add_idx``,
    ``add_val``: extra inflow at block linear indices; ``out``: block-shaped
    int64 or float64, overwritten (0 at nodata). Flow leaving the block is
    dropped. Returns the number of valid cells not reached (cells on cycles).
    """
    h = dp.shape[0] - 2
    w = dp.shape[1] - 2
    indeg = np.zeros((h, w), dtype=np.uint8)
    nvalid = 0
    for r in range(h):
        for c in range(w):
            code = dp[r + 1, c + 1]
            if code == 255:
                out[r, c] = 0
                continue
            nvalid += 1
            if weights.size == 0:
                out[r, c] = 1
            else:
                out[r, c] = weights[r, c]
            k = code_to_k(code)
            if k < 0:
                continue
            rr = r + DROW[k]
            cc = c + DCOL[k]
            if 0 <= rr < h and 0 <= cc < w and dp[rr + 1, cc + 1] != 255:
                indeg[rr, cc] += 1
    for i in range(add_idx.shape[0]):
        rr = add_idx[i] // w
        cc = add_idx[i] - rr * w
        out[rr, cc] += add_val[i]
    stack = np.empty(nvalid, dtype=np.int64)
    top = 0
    for r in range(h):
        for c in range(w):
            if dp[r + 1, c + 1] != 255 and indeg[r, c] == 0:
                stack[top] = r * w + c
                top += 1
    done = 0
    while top > 0:
        top -= 1
        idx = stack[top]
        done += 1
        r = idx // w
        c = idx - r * w
        k = code_to_k(dp[r + 1, c + 1])
        if k < 0:
            continue
        rr = r + DROW[k]
        cc = c + DCOL[k]
        if 0 <= rr < h and 0 <= cc < w and dp[rr + 1, cc + 1] != 255:
            out[rr, cc] += out[r, c]
            indeg[rr, cc] -= 1
            if indeg[rr, cc] == 0:
                stack[top] = rr * w + cc
                top += 1
    return nvalid - done


@njit(cache=True, nogil=True)
def perimeter_links(dp, prow, pcol):
    """For each perimeter cell (prow, pcol): the exit cell its path reaches.

    Returns ``(link, trow, tcol, ncycle)``: ``link[i]`` = block linear index of
    the exit cell (a cell whose code points to a valid cell outside the block),
    -1 when the path ends inside; ``trow, tcol`` = halo coordinates relative to
    the block (may be -1 or h / w) of the cell an exit perimeter cell flows
    into (-9 when cell i is not itself an exit); ``ncycle`` = cycles met.
    """
    h = dp.shape[0] - 2
    w = dp.shape[1] - 2
    state = np.full((h, w), -2, dtype=np.int64)   # -2 unknown, -3 on current path
    buf = np.empty(h * w if h * w < 1 << 20 else 1 << 20, dtype=np.int64)
    n = prow.shape[0]
    link = np.full(n, -1, dtype=np.int64)
    trow = np.full(n, -9, dtype=np.int64)
    tcol = np.full(n, -9, dtype=np.int64)
    ncycle = 0
    for i in range(n):
        r = prow[i]
        c = pcol[i]
        if dp[r + 1, c + 1] == 255:
            continue
        k0 = code_to_k(dp[r + 1, c + 1])
        if k0 >= 0:
            rr = r + DROW[k0]
            cc = c + DCOL[k0]
            outside = rr < 0 or cc < 0 or rr >= h or cc >= w
            if outside and dp[rr + 1, cc + 1] != 255:
                trow[i] = rr
                tcol[i] = cc
        nb = 0
        cur = r * w + c
        result = np.int64(-1)
        while True:
            cr = cur // w
            cc0 = cur - cr * w
            s = state[cr, cc0]
            if s == -3:
                ncycle += 1
                result = -1
                break
            if s != -2:
                result = s
                break
            state[cr, cc0] = -3
            if nb == buf.shape[0]:
                nbuf = np.empty(buf.shape[0] * 2, dtype=np.int64)
                nbuf[:nb] = buf[:nb]
                buf = nbuf
            buf[nb] = cur
            nb += 1
            k = code_to_k(dp[cr + 1, cc0 + 1])
            if k < 0:
                result = -1
                break
            rr = cr + DROW[k]
            cc = cc0 + DCOL[k]
            if dp[rr + 1, cc + 1] == 255:
                result = -1
                break
            if rr < 0 or cc < 0 or rr >= h or cc >= w:
                result = cur
                break
            cur = rr * w + cc
        for j in range(nb):
            q = buf[j]
            qr = q // w
            state[qr, q - qr * w] = result
        link[i] = result
    return link, trow, tcol, ncycle


@njit(cache=True, nogil=True)
def solve_perimeter_flow(local, link, target):
    """Central pass over the perimeter cells of all tiles.

    ``local[i]``: in-tile accumulation of perimeter node i; ``link[i]``: node of
    the exit its path reaches in its own tile (-1 none; i itself for an exit);
    ``target[i]``: node of the neighbouring tile an exit flows into (-1 none).
    Returns ``(inflow, unresolved)``: flow entering each node from other tiles,
    and the number of nodes left on cycles.
    """
    n = local.shape[0]
    indeg = np.zeros(n, dtype=np.int64)
    for i in range(n):
        if link[i] >= 0 and link[i] != i:
            indeg[link[i]] += 1
        if target[i] >= 0:
            indeg[target[i]] += 1
    inflow = np.zeros_like(local)
    via = np.zeros_like(local)   # inflow of same-tile entries reaching this exit
    stack = np.empty(n, dtype=np.int64)
    top = 0
    for i in range(n):
        if indeg[i] == 0:
            stack[top] = i
            top += 1
    done = 0
    while top > 0:
        top -= 1
        u = stack[top]
        done += 1
        lk = link[u]
        if lk == u:
            via[u] += inflow[u]
        elif lk >= 0:
            via[lk] += inflow[u]
            indeg[lk] -= 1
            if indeg[lk] == 0:
                stack[top] = lk
                top += 1
        t = target[u]
        if t >= 0:
            inflow[t] += local[u] + via[u]
            indeg[t] -= 1
            if indeg[t] == 0:
                stack[top] = t
                top += 1
    return inflow, n - done



# --------------------------------------------------------------------------- several weights
#
# K weight layers accumulated over one topological order: each layer sees the
# same additions in the same order as a separate :func:`accumulate_block` /
# :func:`solve_perimeter_flow` run on it, so every layer is bit-identical to it.


@njit(cache=True, nogil=True)
def accumulate_block_many(dp, weights, add_idx, add_val, out):
    """:func:`accumulate_block` for K weight layers at once.

    ``weights`` and ``out``: (K, h, w) float64; ``add_val``: (m, K). Returns the
    number of valid cells not reached (cells on cycles).
    """
    nk = weights.shape[0]
    h = dp.shape[0] - 2
    w = dp.shape[1] - 2
    indeg = np.zeros((h, w), dtype=np.uint8)
    nvalid = 0
    for r in range(h):
        for c in range(w):
            code = dp[r + 1, c + 1]
            if code == 255:
                for q in range(nk):
                    out[q, r, c] = 0.0
                continue
            nvalid += 1
            for q in range(nk):
                out[q, r, c] = weights[q, r, c]
            k = code_to_k(code)
            if k < 0:
                continue
            rr = r + DROW[k]
            cc = c + DCOL[k]
            if 0 <= rr < h and 0 <= cc < w and dp[rr + 1, cc + 1] != 255:
                indeg[rr, cc] += 1
    for i in range(add_idx.shape[0]):
        rr = add_idx[i] // w
        cc = add_idx[i] - rr * w
        for q in range(nk):
            if add_val[i, q] != 0:          # as the one-layer callers, which drop zero inflows
                out[q, rr, cc] += add_val[i, q]
    stack = np.empty(nvalid, dtype=np.int64)
    top = 0
    for r in range(h):
        for c in range(w):
            if dp[r + 1, c + 1] != 255 and indeg[r, c] == 0:
                stack[top] = r * w + c
                top += 1
    done = 0
    while top > 0:
        top -= 1
        idx = stack[top]
        done += 1
        r = idx // w
        c = idx - r * w
        k = code_to_k(dp[r + 1, c + 1])
        if k < 0:
            continue
        rr = r + DROW[k]
        cc = c + DCOL[k]
        if 0 <= rr < h and 0 <= cc < w and dp[rr + 1, cc + 1] != 255:
            for q in range(nk):
                out[q, rr, cc] += out[q, r, c]
            indeg[rr, cc] -= 1
            if indeg[rr, cc] == 0:
                stack[top] = rr * w + cc
                top += 1
    return nvalid - done


@njit(cache=True, nogil=True)
def solve_perimeter_flow_many(local, link, target):
    """:func:`solve_perimeter_flow` for K layers: ``local`` (n, K) -> inflow (n, K)."""
    n = local.shape[0]
    nk = local.shape[1]
    indeg = np.zeros(n, dtype=np.int64)
    for i in range(n):
        if link[i] >= 0 and link[i] != i:
            indeg[link[i]] += 1
        if target[i] >= 0:
            indeg[target[i]] += 1
    inflow = np.zeros_like(local)
    via = np.zeros_like(local)
    stack = np.empty(n, dtype=np.int64)
    top = 0
    for i in range(n):
        if indeg[i] == 0:
            stack[top] = i
            top += 1
    done = 0
    while top > 0:
        top -= 1
        u = stack[top]
        done += 1
        lk = link[u]
        if lk == u:
            for q in range(nk):
                via[u, q] += inflow[u, q]
        elif lk >= 0:
            for q in range(nk):
                via[lk, q] += inflow[u, q]
            indeg[lk] -= 1
            if indeg[lk] == 0:
                stack[top] = lk
                top += 1
        t = target[u]
        if t >= 0:
            for q in range(nk):
                inflow[t, q] += local[u, q] + via[u, q]
            indeg[t] -= 1
            if indeg[t] == 0:
                stack[top] = t
                top += 1
    return inflow, n - done
