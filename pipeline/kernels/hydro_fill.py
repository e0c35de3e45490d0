"""Depression filling by priority-flood, whole-array and tile-wise.

Whole array: Barnes, Lehman & Mulla (2014) "Priority-Flood", improved variant
(Algorithm 3): a priority queue for cells above the current water level and a
plain FIFO ("pit queue") for cells inside a depression, which are raised to the
level of the cell that reached them. No epsilon: flats stay flat.

Tiles: Barnes (2016) "Parallel priority-flood depression filling for trillion
cell digital elevation models". Each tile is flooded from its own perimeter and
from its outlet cells; every perimeter seed starts a watershed label (label 1 =
the "ocean": cells that drain out of the raster). Where two labels touch, the
lowest spill elevation is kept. A minimax shortest path over the global label
graph (:func:`solve_spill_graph`) gives each label the level water must reach
before it can leave; a last per-tile pass raises each cell to
``max(tile_filled, label_level)``.

Outlets (water leaves the raster there): valid cells on the raster edge or with
a nodata (NaN) 8-neighbour. Their filled elevation is their own elevation.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba import types
from numba.typed import Dict

from pipeline.kernels.heap import heap_new, heap_pop, heap_push
from pipeline.kernels.hydro_common import DCOL, DROW, heap64_pop, heap64_push, orderable_key

OCEAN = 1  #: tile-local label of cells connected to an outlet of the raster


def priority_flood_fill(z):
    """Filled elevations of ``z`` (float, NaN = nodata); float64 result, NaN kept."""
    z = np.ascontiguousarray(z)
    if z.dtype.kind != "f":
        z = z.astype(np.float64)
    if z.size >= 2**32:
        raise ValueError("more than 2**32 cells: use the tiled fill")
    return _priority_flood_fill(z, orderable_key(z))


@njit(cache=True, nogil=True)
def _priority_flood_fill(z, key):
    nr, nc = z.shape
    n = nr * nc
    filled = np.empty((nr, nc), dtype=np.float64)
    closed = np.zeros((nr, nc), dtype=np.bool_)
    hp = np.empty(max(16, 2 * (nr + nc)), dtype=np.uint64)
    hsize = 0
    pit = np.empty(n, dtype=np.int64)   # FIFO; every cell enters at most once
    phead = 0
    ptail = 0
    for r in range(nr):
        for c in range(nc):
            v = z[r, c]
            if np.isnan(v):
                filled[r, c] = np.nan
                closed[r, c] = True
                continue
            filled[r, c] = v
            is_outlet = r == 0 or c == 0 or r == nr - 1 or c == nc - 1
            if not is_outlet:
                for k in range(8):
                    if np.isnan(z[r + DROW[k], c + DCOL[k]]):
                        is_outlet = True
                        break
            if is_outlet:
                closed[r, c] = True
                hp, hsize = heap64_push(hp, hsize, (np.uint64(key[r, c]) << np.uint64(32))
                                        | np.uint64(r * nc + c))
    while hsize > 0 or phead < ptail:
        if phead < ptail:
            idx = pit[phead]
            phead += 1
        else:
            top, hsize = heap64_pop(hp, hsize)
            idx = np.int64(top & np.uint64(0xFFFFFFFF))
        r = idx // nc
        c = idx - r * nc
        level = filled[r, c]
        for k in range(8):
            rr = r + DROW[k]
            cc = c + DCOL[k]
            if rr < 0 or cc < 0 or rr >= nr or cc >= nc or closed[rr, cc]:
                continue
            closed[rr, cc] = True
            if z[rr, cc] <= level:
                filled[rr, cc] = level
                pit[ptail] = rr * nc + cc
                ptail += 1
            else:
                hp, hsize = heap64_push(hp, hsize, (np.uint64(key[rr, cc]) << np.uint64(32))
                                        | np.uint64(rr * nc + cc))
    return filled


def fill_tile_labels(zp):
    """First tile pass of the tiled fill; see :func:`_fill_tile_labels`."""
    if zp.size >= 2**31:
        raise ValueError("a fill tile (with its halo) must have fewer than 2**31 cells")
    zp = np.ascontiguousarray(zp)
    if zp.dtype == np.float32:
        return _fill_tile_labels(zp, zp.view(np.uint32), True)
    if zp.dtype.kind != "f":
        zp = zp.astype(np.float64)
    return _fill_tile_labels(zp, orderable_key(zp), False)


@njit(cache=True, nogil=True)
def _sort_key(key, idx, raw_bits):
    """The heap's elevation key of cell ``idx``: ``key[idx]``, or, with ``raw_bits``, the
    float32 bit pattern made monotone as :func:`orderable_key` does (computed only
    for the cells that are pushed)."""
    u = np.uint64(key[idx])
    if raw_bits:
        if u >> np.uint64(31):
            u = ~u & np.uint64(0xFFFFFFFF)
        else:
            u = u | np.uint64(0x80000000)
    return u


@njit(cache=True, nogil=True)
def _fill_tile_labels(zp, key, raw_bits):
    """First tile pass of the tiled fill (Barnes 2016).

    ``zp``: the tile with a 1-cell halo, NaN outside the raster and at nodata;
    ``key``: its orderable keys, or its float32 bits with ``raw_bits``.
    Returns ``(filled, labels, n_labels, eu, ev, ew)``: the tile flooded from
    its own perimeter (tile shape, dtype of ``zp``: filled values are input
    values), int32 watershed labels (1 = ocean, 2.. = one per perimeter seed,
    0 = nodata), the number of labels used + 1, and the label graph edges
    (u < v, spill elevation w = lowest max of the two cells' tile-filled levels
    over all touching cell pairs).

    Besides the priority queue and the pit queue, slopes are climbed with a
    third, plain FIFO queue (Zhou, Sun & Fu 2016, "An efficient variant of the
    Priority-Flood algorithm"): a cell reached from below with a higher
    elevation keeps its own elevation whatever the order, and it may be expanded
    at once when none of its open neighbours is as low as itself (expanding it
    then only closes higher cells at their own elevation); otherwise it waits in
    the priority queue for the water level. Same filled values, far fewer heap
    operations. Every closed cell is expanded exactly once, so every pair of
    touching cells either shares a label or records a spill edge.

    The arrays are padded by the halo and walked by flat index (neighbour k
    at ``idx + off[k]``), so the inner loops need no bounds checks and no
    divisions; the padded index orders cells as the row-major tile index does,
    so heap ties break the same way. ``labels`` also holds the closed state:
    -1 = open; halo and nodata cells are closed with label 0, and so are
    perimeter seeds until they are expanded.
    """
    h = zp.shape[0] - 2
    w = zp.shape[1] - 2
    wp = w + 2
    z = zp.ravel()
    kf = key.ravel()
    off = DROW * wp + DCOL
    filled = np.empty_like(z)
    labels = np.zeros(z.shape[0], dtype=np.int32)
    hp = np.empty(max(16, 2 * (h + w)), dtype=np.uint64)
    hsize = 0
    queue = np.empty(h * w, dtype=np.int32)   # pit queue (FIFO); each cell enters at most once
    phead = 0
    ptail = 0
    for r in range(1, h + 1):
        for c in range(1, w + 1):
            idx = r * wp + c
            v = z[idx]
            filled[idx] = v
            if np.isnan(v):
                continue
            ocean = False
            for k in range(8):
                if np.isnan(z[idx + off[k]]):
                    ocean = True
                    break
            if ocean:
                labels[idx] = OCEAN
            if ocean or r == 1 or c == 1 or r == h or c == w:
                hp, hsize = heap64_push(hp, hsize, (_sort_key(kf, idx, raw_bits) << np.uint64(32))
                                        | np.uint64(idx))
            else:
                labels[idx] = -1
    slope = np.empty(max(16, 2 * (h + w)), dtype=np.int64)   # FIFO ring, grows
    shead = 0
    ssize = 0
    next_label = 2
    lmax = np.int64(2 * (h + w) + 4)
    edges = Dict.empty(key_type=types.int64, value_type=types.float64)
    while hsize > 0 or phead < ptail or ssize > 0:
        if phead < ptail:
            idx = queue[phead]
            phead += 1
        elif ssize > 0:
            idx = slope[shead]
            shead += 1
            if shead == slope.shape[0]:
                shead = 0
            ssize -= 1
            # expand now only if no open neighbour is as low as this cell
            zc = z[idx]
            defer = False
            for k in range(8):
                nb = idx + off[k]
                if labels[nb] < 0 and z[nb] <= zc:
                    defer = True
                    break
            if defer:
                hp, hsize = heap64_push(hp, hsize, (_sort_key(kf, idx, raw_bits) << np.uint64(32))
                                        | np.uint64(idx))
                continue
        else:
            top, hsize = heap64_pop(hp, hsize)
            idx = np.int64(top & np.uint64(0xFFFFFFFF))
        if labels[idx] == 0:
            labels[idx] = next_label
            next_label += 1
        lab = labels[idx]
        level = filled[idx]
        for k in range(8):
            nb = idx + off[k]
            ln = labels[nb]
            if ln >= 0:
                if ln != 0 and ln != lab:
                    a = min(ln, lab)
                    b = max(ln, lab)
                    ekey = np.int64(a) * lmax + b
                    spill = max(level, filled[nb])
                    if ekey in edges:
                        if spill < edges[ekey]:
                            edges[ekey] = spill
                    else:
                        edges[ekey] = spill
                continue
            labels[nb] = lab
            if z[nb] <= level:
                filled[nb] = level
                queue[ptail] = nb
                ptail += 1
            else:
                if ssize == slope.shape[0]:
                    ns = np.empty(slope.shape[0] * 2, dtype=np.int64)
                    for q in range(ssize):
                        ns[q] = slope[(shead + q) % slope.shape[0]]
                    slope = ns
                    shead = 0
                tail = shead + ssize
                if tail >= slope.shape[0]:
                    tail -= slope.shape[0]
                slope[tail] = nb
                ssize += 1
    m = len(edges)
    eu = np.empty(m, dtype=np.int64)
    ev = np.empty(m, dtype=np.int64)
    ew = np.empty(m, dtype=np.float64)
    i = 0
    for ekey, val in edges.items():
        eu[i] = ekey // lmax
        ev[i] = ekey - eu[i] * lmax
        ew[i] = val
        i += 1
    filled_t = np.ascontiguousarray(filled.reshape(h + 2, wp)[1:-1, 1:-1])
    labels_t = np.ascontiguousarray(labels.reshape(h + 2, wp)[1:-1, 1:-1])
    return filled_t, labels_t, next_label, eu, ev, ew


@njit(cache=True, nogil=True)
def solve_spill_graph(n_nodes, eu, ev, ew, source):
    """Minimax path levels from ``source`` over an undirected weighted graph.

    ``level[v] = min over paths source..v of the max edge weight`` (``-inf`` at
    the source, ``+inf`` where unreachable). Dijkstra with max instead of +.
    """
    m = eu.shape[0]
    deg = np.zeros(n_nodes + 1, dtype=np.int64)
    for i in range(m):
        deg[eu[i] + 1] += 1
        deg[ev[i] + 1] += 1
    for i in range(n_nodes):
        deg[i + 1] += deg[i]
    adj = np.empty(2 * m, dtype=np.int64)
    adjw = np.empty(2 * m, dtype=np.float64)
    fillp = deg[:-1].copy()
    for i in range(m):
        adj[fillp[eu[i]]] = ev[i]
        adjw[fillp[eu[i]]] = ew[i]
        fillp[eu[i]] += 1
        adj[fillp[ev[i]]] = eu[i]
        adjw[fillp[ev[i]]] = ew[i]
        fillp[ev[i]] += 1
    level = np.full(n_nodes, np.inf)
    done = np.zeros(n_nodes, dtype=np.bool_)
    level[source] = -np.inf
    kv, ki = heap_new(1024)
    hsize = 0
    kv, ki, hsize = heap_push(kv, ki, hsize, -np.inf, source)
    while hsize > 0:
        g, u, hsize = heap_pop(kv, ki, hsize)
        if done[u]:
            continue
        done[u] = True
        for j in range(deg[u], deg[u + 1]):
            v = adj[j]
            cand = max(g, adjw[j])
            if cand < level[v]:
                level[v] = cand
                kv, ki, hsize = heap_push(kv, ki, hsize, cand, v)
    return level


@njit(cache=True, nogil=True)
def apply_spill_levels(filled, labels, label_offset, level):
    """Last tile pass: ``max(tile_filled, level[global label])`` in place.

    Global label of a cell: 0 for the ocean, ``label_offset + local - 2`` else.
    """
    h, w = filled.shape
    for r in range(h):
        for c in range(w):
            lab = labels[r, c]
            if lab == 0:
                continue
            g = 0 if lab == OCEAN else label_offset + lab - 2
            lv = level[g]
            if lv > filled[r, c]:
                filled[r, c] = lv
    return filled
