"""Single-source Dijkstra with a distance limit on a CSR graph, on plain arrays.

Why not ``scipy.sparse.csgraph.dijkstra`` for every source: it returns a dense
row of length n per source, so n sources cost O(n^2) time and memory even when a
``limit`` keeps each search local. These kernels keep one distance array for the
whole run and reset only the nodes a search touched, so a search costs
O(reached log reached). They are tested against scipy's dijkstra.

Row sum of a source s: R_s = sum_j a_j exp(-dist(s, j)) over nodes reached within
``limit`` (s itself has dist 0). Never import xarray or dask here.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from pipeline.kernels.heap import heap_pop, heap_push


@njit(cache=True, nogil=True)
def _search(indptr, indices, weights, src, removed, limit, dist, pred, done, touched, hk, hv):
    """Dijkstra from src skipping node ``removed``; returns the number of touched nodes."""
    nt = 0
    dist[src] = 0.0
    touched[nt] = src
    nt += 1
    hk, hv, size = heap_push(hk, hv, 0, 0.0, src)
    while size > 0:
        d, u, size = heap_pop(hk, hv, size)
        if done[u] or d > dist[u]:
            continue
        done[u] = True
        for e in range(indptr[u], indptr[u + 1]):
            v = indices[e]
            if v == removed or done[v]:
                continue
            nd = d + weights[e]
            if nd > limit:
                continue
            if nd < dist[v]:
                if dist[v] == np.inf:
                    touched[nt] = v
                    nt += 1
                dist[v] = nd
                pred[v] = u
                hk, hv, size = heap_push(hk, hv, size, nd, v)   # grows if ever full
    return nt


@njit(cache=True, nogil=True)
def row_sums(indptr, indices, weights, area, sources, removed, limit, record):
    """R_s for each source (skipping node ``removed``; -1 = none).

    With ``record``, also returns the interior nodes of each source's shortest-path
    tree: arrays (k, s, p*_sk) for every node k != s that is the predecessor of
    another reached node. Last output: total nodes reached by all searches (the work).
    """
    n = area.shape[0]
    dist = np.full(n, np.inf)
    pred = np.full(n, -1, np.int64)
    done = np.zeros(n, np.bool_)
    interior = np.zeros(n, np.bool_)
    touched = np.empty(n, np.int64)
    hk = np.empty(indices.shape[0] + 2, np.float64)
    hv = np.empty(indices.shape[0] + 2, np.int64)
    out = np.zeros(sources.shape[0])
    cap = 1024
    rk = np.empty(cap, np.int64)
    rs = np.empty(cap, np.int64)
    rp = np.empty(cap, np.float64)
    nrec = 0
    visits = 0
    for t in range(sources.shape[0]):
        s = sources[t]
        nt = _search(indptr, indices, weights, s, removed, limit, dist, pred, done, touched, hk, hv)
        visits += nt
        acc = 0.0
        for q in range(nt):
            v = touched[q]
            acc += area[v] * np.exp(-dist[v])
            if record and pred[v] >= 0 and pred[v] != s:
                interior[pred[v]] = True
        out[t] = acc
        if record:
            for q in range(nt):
                v = touched[q]
                if interior[v]:
                    if nrec >= cap:
                        cap *= 2
                        rk2 = np.empty(cap, np.int64)
                        rs2 = np.empty(cap, np.int64)
                        rp2 = np.empty(cap, np.float64)
                        rk2[:nrec] = rk[:nrec]
                        rs2[:nrec] = rs[:nrec]
                        rp2[:nrec] = rp[:nrec]
                        rk, rs, rp = rk2, rs2, rp2
                    rk[nrec] = v
                    rs[nrec] = s
                    rp[nrec] = np.exp(-dist[v])
                    nrec += 1
        for q in range(nt):
            v = touched[q]
            dist[v] = np.inf
            pred[v] = -1
            done[v] = False
            interior[v] = False
    return out, rk[:nrec], rs[:nrec], rp[:nrec], visits


@njit(cache=True, nogil=True)
def distances_from(indptr, indices, weights, n, src, limit):
    """Dense shortest distances from ``src`` (inf beyond ``limit``); for tests."""
    dist = np.full(n, np.inf)
    pred = np.full(n, -1, np.int64)
    done = np.zeros(n, np.bool_)
    touched = np.empty(n, np.int64)
    hk = np.empty(indices.shape[0] + 2, np.float64)
    hv = np.empty(indices.shape[0] + 2, np.int64)
    _search(indptr, indices, weights, src, -1, limit, dist, pred, done, touched, hk, hv)
    return dist
