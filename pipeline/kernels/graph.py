"""Single-source Dijkstra with a distance limit on a CSR graph, on plain arrays.

Why not ``scipy.sparse.csgraph.dijkstra`` for every source: it returns a dense
row of length n per source, so n sources cost O(n^2) time and memory even when a
``limit`` keeps each search local. These kernels keep one distance array for the
whole run and reset only the nodes a search touched, so a search costs
O(reached log reached). They are tested against scipy's dijkstra.

Row sum of a source s: R_s = sum_j a_j exp(-dist(s, j)) over nodes reached within
``limit`` (s itself has dist 0).

Connector losses (``connector_losses``): for a source s and an interior node k of
s's shortest-path tree, removing k can only lengthen the paths of the nodes in
k's subtree; every other reached node keeps a best path that avoids k. So the
search without k is repaired inside the subtree only: each subtree node starts
from its best link to a node outside the subtree (not k), then Dijkstra runs on
the subtree nodes. The loss of s is sum over the subtree of
a_j (exp(-dist_j) - exp(-dist'_j)). Cost per source: the sum over its tree of
(node depth x degree), instead of one whole search per interior node.

Never import xarray or dask here.
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
def _row_sum(area, dist, touched, nt):
    """sum_j a_j exp(-dist_j) over the nt nodes a search touched."""
    acc = 0.0
    for q in range(nt):
        v = touched[q]
        acc += area[v] * np.exp(-dist[v])
    return acc


@njit(cache=True, nogil=True)
def _reset(touched, nt, dist, pred, done):
    """Undo a search on the nodes it touched, so the buffers serve the next source."""
    for q in range(nt):
        v = touched[q]
        dist[v] = np.inf
        pred[v] = -1
        done[v] = False


@njit(cache=True, nogil=True)
def _preorder(s, touched, nt, pred, nchild, cstart, children, order, tin, sub, stack):
    """Preorder of s's shortest-path tree over its nt touched nodes.

    After the call order[tin[v]:tin[v] + sub[v]] is v's subtree (v first).
    """
    for q in range(nt):
        nchild[touched[q]] = 0
    for q in range(nt):
        v = touched[q]
        if v != s:
            nchild[pred[v]] += 1
    pos = 0
    for q in range(nt):
        v = touched[q]
        cstart[v] = pos
        pos += nchild[v]
        nchild[v] = 0           # refilled below as a cursor
    for q in range(nt):
        v = touched[q]
        if v != s:
            u = pred[v]
            children[cstart[u] + nchild[u]] = v
            nchild[u] += 1
    top = 1
    stack[0] = s
    t = 0
    while top > 0:
        top -= 1
        u = stack[top]
        order[t] = u
        tin[u] = t
        t += 1
        for c in range(cstart[u], cstart[u] + nchild[u]):
            stack[top] = children[c]
            top += 1
    for q in range(nt):
        sub[touched[q]] = 1
    for q in range(nt - 1, 0, -1):     # reverse preorder: children before parents
        v = order[q]
        sub[pred[v]] += sub[v]
    return t


@njit(cache=True, nogil=True)
def row_sums(indptr, indices, weights, area, sources, removed, limit):
    """R_s for each source (skipping node ``removed``; -1 = none) and the nodes reached."""
    n = area.shape[0]
    dist = np.full(n, np.inf)
    pred = np.full(n, -1, np.int64)
    done = np.zeros(n, np.bool_)
    touched = np.empty(n, np.int64)
    hk = np.empty(indices.shape[0] + 2, np.float64)
    hv = np.empty(indices.shape[0] + 2, np.int64)
    out = np.zeros(sources.shape[0])
    visits = 0
    for t in range(sources.shape[0]):
        s = sources[t]
        nt = _search(indptr, indices, weights, s, removed, limit, dist, pred, done, touched, hk, hv)
        visits += nt
        out[t] = _row_sum(area, dist, touched, nt)
        _reset(touched, nt, dist, pred, done)
    return out, visits


@njit(cache=True, nogil=True)
def _tree_buffers(n):
    """Per-node work arrays of a search and its tree (reset per source through ``touched``)."""
    return (np.full(n, np.inf), np.full(n, -1, np.int64), np.zeros(n, np.bool_), np.empty(n, np.int64),
            np.zeros(n, np.int64), np.zeros(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64),
            np.zeros(n, np.int64), np.zeros(n, np.int64), np.empty(n, np.int64))


@njit(cache=True, nogil=True)
def tree_terms(indptr, indices, weights, area, sources, limit):
    """One search per source: R_s, and per node k the connector bound and repair cost.

    Returns (R, bsum, cost, visits): R[t] the row sum of sources[t]; bsum[k] = sum over
    sources s whose tree has k as an interior node (k != s, k has children) of
    a_s p*_sk; cost[k] = sum over those sources of the degrees of the nodes below k
    (the edge scans a repair of k would take).
    """
    n = area.shape[0]
    dist, pred, done, touched, nchild, cstart, children, order, tin, sub, stack = _tree_buffers(n)
    subdeg = np.zeros(n, np.int64)
    hk = np.empty(indices.shape[0] + 2, np.float64)
    hv = np.empty(indices.shape[0] + 2, np.int64)
    R = np.zeros(sources.shape[0])
    bsum = np.zeros(n)
    cost = np.zeros(n)
    visits = 0
    for t in range(sources.shape[0]):
        s = sources[t]
        nt = _search(indptr, indices, weights, s, -1, limit, dist, pred, done, touched, hk, hv)
        visits += nt
        R[t] = _row_sum(area, dist, touched, nt)
        _preorder(s, touched, nt, pred, nchild, cstart, children, order, tin, sub, stack)
        for q in range(nt):
            v = touched[q]
            subdeg[v] = indptr[v + 1] - indptr[v]
        for q in range(nt - 1, 0, -1):
            v = order[q]
            subdeg[pred[v]] += subdeg[v]
        for q in range(1, nt):
            k = order[q]
            if sub[k] > 1:
                bsum[k] += area[s] * np.exp(-dist[k])
                cost[k] += subdeg[k] - (indptr[k + 1] - indptr[k])
        _reset(touched, nt, dist, pred, done)
    return R, bsum, cost, visits


@njit(cache=True, nogil=True)
def connector_losses(indptr, indices, weights, area, sources, limit, selected):
    """Per node k (where ``selected[k]``): sum over sources s of a_s * loss_s(k).

    loss_s(k) = sum_{j != k} a_j (p*_sj - p*_sj without k): the row-sum loss of s when k
    is removed, by repairing s's search inside k's subtree only (module doc).
    Returns (losses, edge scans).
    """
    n = area.shape[0]
    dist, pred, done, touched, nchild, cstart, children, order, tin, sub, stack = _tree_buffers(n)
    nd = np.full(n, np.inf)
    mark = np.zeros(n, np.int64)       # == stamp: node is in the subtree being repaired
    fixed = np.zeros(n, np.int64)      # == stamp: repaired distance is final
    hk = np.empty(indices.shape[0] + 2, np.float64)
    hv = np.empty(indices.shape[0] + 2, np.int64)
    out = np.zeros(n)
    stamp = 0
    scans = 0
    for t in range(sources.shape[0]):
        s = sources[t]
        nt = _search(indptr, indices, weights, s, -1, limit, dist, pred, done, touched, hk, hv)
        _preorder(s, touched, nt, pred, nchild, cstart, children, order, tin, sub, stack)
        for q in range(1, nt):
            k = order[q]
            if sub[k] <= 1 or not selected[k]:
                continue
            stamp += 1
            lo = tin[k] + 1
            hi = tin[k] + sub[k]
            for r in range(lo, hi):
                v = order[r]
                mark[v] = stamp
                nd[v] = np.inf
            size = 0
            # start: best link from outside the subtree (k excluded)
            for r in range(lo, hi):
                v = order[r]
                best = np.inf
                for e in range(indptr[v], indptr[v + 1]):
                    u = indices[e]
                    if u == k or mark[u] == stamp:
                        continue
                    c = dist[u] + weights[e]        # inf when u was not reached
                    if c < best:
                        best = c
                scans += indptr[v + 1] - indptr[v]
                if best <= limit:
                    nd[v] = best
                    hk, hv, size = heap_push(hk, hv, size, best, v)
            while size > 0:
                d, v, size = heap_pop(hk, hv, size)
                if fixed[v] == stamp or d > nd[v]:
                    continue
                fixed[v] = stamp
                for e in range(indptr[v], indptr[v + 1]):
                    x = indices[e]
                    if mark[x] != stamp or fixed[x] == stamp:
                        continue
                    c = d + weights[e]
                    if c <= limit and c < nd[x]:
                        nd[x] = c
                        hk, hv, size = heap_push(hk, hv, size, c, x)
                scans += indptr[v + 1] - indptr[v]
            loss = 0.0
            for r in range(lo, hi):
                v = order[r]
                loss += area[v] * (np.exp(-dist[v]) - np.exp(-nd[v]))
            out[k] += area[s] * loss
        _reset(touched, nt, dist, pred, done)
    return out, scans


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
