"""Patch labelling kernels (8-connected components) on plain numpy arrays.

Used by ``pipeline.ops.landcover.label_patches`` in three steps (Barnes-style,
no iteration to a fixed point):

1. :func:`label_block` labels one chunk; labels are numbered 1..n in the order
   of each component's first cell in row-major order.
2. :func:`seam_pairs` lists label pairs touching across a chunk seam and
   :func:`union_pairs` joins them centrally with a union-find.
3. a per-chunk lookup (local label -> final label) is applied.

Also the 4-boundary cells of patches (for edge-to-edge distances) and per-label
counts. Never import xarray or dask here.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _find(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@njit(cache=True, nogil=True)
def label_block(mask):
    """8-connected labels of ``mask`` (2-D, nonzero = in a patch).

    Returns (labels int32 (0 = background), n_labels). Labels are numbered by the
    first cell of each component in row-major order, so the result is unique.
    """
    ny, nx = mask.shape
    prov = np.zeros((ny, nx), np.int32)
    parent = np.zeros(ny * nx // 2 + 2, np.int32)
    nprov = 0
    for y in range(ny):
        for x in range(nx):
            if mask[y, x] == 0:
                continue
            cur = 0
            # already-visited neighbours: W, NW, N, NE
            for k in range(4):
                if k == 0:
                    yy, xx = y, x - 1
                elif k == 1:
                    yy, xx = y - 1, x - 1
                elif k == 2:
                    yy, xx = y - 1, x
                else:
                    yy, xx = y - 1, x + 1
                if yy < 0 or xx < 0 or xx >= nx:
                    continue
                lab = prov[yy, xx]
                if lab == 0:
                    continue
                if cur == 0:
                    cur = _find(parent, lab)
                else:
                    ra = _find(parent, lab)
                    if ra != cur:
                        if ra < cur:
                            parent[cur] = ra
                            cur = ra
                        else:
                            parent[ra] = cur
            if cur == 0:
                nprov += 1
                if nprov >= parent.shape[0]:  # cannot happen for 8-connectivity, but stay safe
                    grown = np.zeros(parent.shape[0] * 2, np.int32)
                    grown[: parent.shape[0]] = parent
                    parent = grown
                parent[nprov] = nprov
                cur = nprov
            prov[y, x] = cur
    final = np.zeros(nprov + 1, np.int32)
    n = 0
    for y in range(ny):
        for x in range(nx):
            p = prov[y, x]
            if p == 0:
                continue
            r = _find(parent, p)
            if final[r] == 0:
                n += 1
                final[r] = n
            prov[y, x] = final[r]
    return prov, n


@njit(cache=True, nogil=True)
def label_counts_first(labels, n, row0, col0, ncols_total):
    """Per label 1..n: cell count and global row-major index of its first cell.

    ``row0``/``col0`` place the block in the full raster of ``ncols_total`` columns.
    Index 0 of both outputs is unused.
    """
    ny, nx = labels.shape
    counts = np.zeros(n + 1, np.int64)
    first = np.full(n + 1, -1, np.int64)
    for y in range(ny):
        for x in range(nx):
            lab = labels[y, x]
            if lab == 0:
                continue
            counts[lab] += 1
            if first[lab] < 0:
                first[lab] = (row0 + y) * np.int64(ncols_total) + col0 + x
    return counts, first


@njit(cache=True, nogil=True)
def seam_pairs(a, b):
    """Pairs (a[i], b[j]) with |i - j| <= 1 and both nonzero: two facing 1-cell strips.

    ``a`` and ``b`` hold global piece ids along the two sides of a straight seam.
    """
    n = a.shape[0]
    pa = np.empty(3 * n, np.int64)
    pb = np.empty(3 * n, np.int64)
    k = 0
    for i in range(n):
        if a[i] == 0:
            continue
        for d in range(-1, 2):
            j = i + d
            if j < 0 or j >= n or b[j] == 0:
                continue
            pa[k] = a[i]
            pb[k] = b[j]
            k += 1
    return pa[:k], pb[:k]


@njit(cache=True, nogil=True)
def union_pairs(n_nodes, pa, pb):
    """Union-find over nodes 0..n_nodes-1 joined by (pa, pb); returns each node's root."""
    parent = np.arange(n_nodes).astype(np.int64)
    for k in range(pa.shape[0]):
        ra = _find(parent, pa[k])
        rb = _find(parent, pb[k])
        if ra != rb:
            if ra < rb:
                parent[rb] = ra
            else:
                parent[ra] = rb
    for i in range(n_nodes):
        parent[i] = _find(parent, i)
    return parent


@njit(cache=True, nogil=True)
def apply_lut(labels, lut, out):
    """out[y, x] = lut[labels[y, x]] (lut[0] is the background value)."""
    ny, nx = labels.shape
    for y in range(ny):
        for x in range(nx):
            out[y, x] = lut[labels[y, x]]
    return out


@njit(cache=True, nogil=True)
def boundary_cells(labels, y0, y1, x0, x1):
    """4-boundary cells of patches inside the window [y0:y1, x0:x1] of ``labels``.

    A cell is on the boundary when one of its 4 neighbours (inside ``labels``)
    carries another value. The closest pair of cells of two patches is always
    found among such cells (a step towards the other patch never increases the
    distance). Returns (rows, cols, labels) relative to ``labels``.
    """
    ny, nx = labels.shape
    cap = (y1 - y0) * (x1 - x0)
    rr = np.empty(cap, np.int64)
    cc = np.empty(cap, np.int64)
    ll = np.empty(cap, np.int64)
    k = 0
    for y in range(y0, y1):
        for x in range(x0, x1):
            lab = labels[y, x]
            if lab == 0:
                continue
            edge = False
            if y > 0 and labels[y - 1, x] != lab:
                edge = True
            elif y < ny - 1 and labels[y + 1, x] != lab:
                edge = True
            elif x > 0 and labels[y, x - 1] != lab:
                edge = True
            elif x < nx - 1 and labels[y, x + 1] != lab:
                edge = True
            if edge:
                rr[k] = y
                cc[k] = x
                ll[k] = lab
                k += 1
    return rr[:k], cc[:k], ll[:k]


def gap_offsets(max_gap_m: float, cell_y: float, cell_x: float):
    """Forward cell offsets (dy > 0, or dy == 0 and dx > 0) whose cell squares lie within
    ``max_gap_m`` edge to edge, sorted by that gap:
    gap = hypot(max(0, |dy| - 1) cell_y, max(0, |dx| - 1) cell_x).
    Forward offsets visit every unordered pair of cells once (from the earlier one
    in row-major order)."""
    ry = int(np.floor(max_gap_m / cell_y + 1e-9)) + 1
    rx = int(np.floor(max_gap_m / cell_x + 1e-9)) + 1
    dy, dx = np.meshgrid(np.arange(-ry, ry + 1), np.arange(-rx, rx + 1), indexing="ij")
    gap = np.hypot(np.maximum(np.abs(dy) - 1, 0) * cell_y, np.maximum(np.abs(dx) - 1, 0) * cell_x)
    keep = (gap <= max_gap_m + 1e-9) & ((dy > 0) | ((dy == 0) & (dx > 0)))
    order = np.argsort(gap[keep], kind="stable")
    return (dy[keep][order].astype(np.int64), dx[keep][order].astype(np.int64),
            gap[keep][order].astype(np.float64), ry, rx)


@njit(cache=True, nogil=True)
def pair_gaps(labels, y0, y1, x0, x1, offy, offx, offg, n_labels):
    """Edge-to-edge gaps between patches, scanned from the 4-boundary cells inside the
    window [y0:y1, x0:x1] of ``labels`` (which must carry a halo of the offsets' reach).

    Some pair of closest cells of two patches are both 4-boundary cells (a step
    towards the other patch never increases the gap), and the forward offsets of
    :func:`gap_offsets` meet every such pair once, from the earlier cell. Offsets are
    visited in increasing gap, so the first cell met of another patch b gives the
    smallest forward gap from that cell to b. Emits (min(a, b), max(a, b), gap), one
    row per boundary cell and patch met; ``n_labels`` bounds the label values.
    """
    ny, nx = labels.shape
    seen = np.zeros(n_labels + 1, np.int64)
    cap = 1024
    oa = np.empty(cap, np.int64)
    ob = np.empty(cap, np.int64)
    og = np.empty(cap, np.float64)
    k = 0
    stamp = 0
    for y in range(y0, y1):
        for x in range(x0, x1):
            la = labels[y, x]
            if la == 0:
                continue
            if not ((y > 0 and labels[y - 1, x] != la) or (y < ny - 1 and labels[y + 1, x] != la)
                    or (x > 0 and labels[y, x - 1] != la) or (x < nx - 1 and labels[y, x + 1] != la)):
                continue
            stamp += 1
            for t in range(offy.shape[0]):
                yy = y + offy[t]
                xx = x + offx[t]
                if yy < 0 or yy >= ny or xx < 0 or xx >= nx:
                    continue
                lb = labels[yy, xx]
                if lb == 0 or lb == la or seen[lb] == stamp:
                    continue
                seen[lb] = stamp
                if True:
                    if k >= cap:
                        cap *= 2
                        oa2 = np.empty(cap, np.int64)
                        ob2 = np.empty(cap, np.int64)
                        og2 = np.empty(cap, np.float64)
                        oa2[:k] = oa[:k]
                        ob2[:k] = ob[:k]
                        og2[:k] = og[:k]
                        oa, ob, og = oa2, ob2, og2
                    oa[k] = min(la, lb)
                    ob[k] = max(la, lb)
                    og[k] = offg[t]
                    k += 1
    return oa[:k], ob[:k], og[:k]
