"""Circular-window (disk) focal kernels on plain numpy arrays.

The disk sum at a cell is a sum over the disk's rows of chord sums, each taken
from a row-wise prefix sum in O(1): the cost per cell grows with the radius
(2r + 1 rows), not with its square. Never import xarray or dask here.
"""

from __future__ import annotations

import numpy as np
from numba import njit


def disk_half_widths(radius_m: float, cell_y: float, cell_x: float) -> np.ndarray:
    """Half chord widths (cells) of a disk of ``radius_m`` for row offsets -r..r.

    A cell is in the footprint when its centre lies within ``radius_m`` of the
    centre cell's centre: (dy * cell_y)^2 + (dx * cell_x)^2 <= radius_m^2.
    Returns int64 array of length 2r + 1 (r = floor(radius_m / cell_y)).
    """
    ry = int(np.floor(radius_m / cell_y + 1e-9))
    dy = np.arange(-ry, ry + 1, dtype=np.float64)
    rem = np.maximum(radius_m ** 2 - (dy * cell_y) ** 2, 0.0)
    return np.floor(np.sqrt(rem) / cell_x + 1e-9).astype(np.int64)


def disk_footprint(half_widths: np.ndarray) -> np.ndarray:
    """Boolean footprint (2r+1, 2w+1) of the disk described by ``half_widths``."""
    ry = (half_widths.shape[0] - 1) // 2
    wx = int(half_widths.max())
    fp = np.zeros((2 * ry + 1, 2 * wx + 1), dtype=bool)
    for k, w in enumerate(half_widths):
        fp[k, wx - w: wx + w + 1] = True
    return fp


@njit(cache=True, nogil=True)
def disk_share(padded, half_widths, depth_y, depth_x, mask_center):
    """Mean of the non-NaN values of ``padded`` over a disk around each interior cell.

    ``padded`` is the block with a halo of ``depth_y`` rows and ``depth_x`` columns
    (NaN where there is no data, including outside the raster). NaN cells count
    neither in the numerator nor in the denominator. The result (float64, shape of
    the interior) is NaN where no cell of the disk has data and, if
    ``mask_center``, where the centre cell itself is NaN.
    """
    ny, nx = padded.shape
    oy = ny - 2 * depth_y
    ox = nx - 2 * depth_x
    psum = np.zeros((ny, nx + 1), np.float64)
    pcnt = np.zeros((ny, nx + 1), np.float64)
    for y in range(ny):
        s = 0.0
        c = 0.0
        for x in range(nx):
            v = padded[y, x]
            if not np.isnan(v):
                s += v
                c += 1.0
            psum[y, x + 1] = s
            pcnt[y, x + 1] = c
    out = np.full((oy, ox), np.nan, np.float64)
    ry = (half_widths.shape[0] - 1) // 2
    for y in range(oy):
        for x in range(ox):
            if mask_center and np.isnan(padded[y + depth_y, x + depth_x]):
                continue
            s = 0.0
            c = 0.0
            for k in range(half_widths.shape[0]):
                w = half_widths[k]
                row = y + depth_y - ry + k
                a = x + depth_x - w
                b = x + depth_x + w + 1
                s += psum[row, b] - psum[row, a]
                c += pcnt[row, b] - pcnt[row, a]
            if c > 0:
                out[y, x] = s / c
    return out


def count_groups(tables: np.ndarray) -> np.ndarray:
    """Index of each table's count group: tables whose NaN codes agree share one group.

    Cells count in a share's denominator where its table is not NaN, so tables with
    the same NaN pattern have the same count prefix sums; :func:`disk_shares_coded`
    builds those once per group. Returns int64[K], groups numbered 0.. in order of
    first appearance.
    """
    patterns: list[bytes] = []
    group = np.empty(tables.shape[0], np.int64)
    for k in range(tables.shape[0]):
        key = np.isnan(tables[k]).tobytes()
        if key not in patterns:
            patterns.append(key)
        group[k] = patterns.index(key)
    return group


@njit(cache=True, nogil=True)
def _prefix_row(codes, y, tables, group, n_groups, psum, pcnt, slot):
    """Row-wise prefix sums of row ``y``: values per table, non-NaN counts per group.

    Written into ring slot ``slot``; the additions run left to right as in
    :func:`disk_share`, so the sums are the same float64 numbers.
    """
    nx = codes.shape[1]
    ntab = tables.shape[0]
    for k in range(ntab):
        s = 0.0
        for x in range(nx):
            v = tables[k, codes[y, x]]
            if not np.isnan(v):
                s += v
            psum[k, slot, x + 1] = s
    for g in range(n_groups):
        k0 = 0
        while group[k0] != g:
            k0 += 1
        c = 0.0
        for x in range(nx):
            if not np.isnan(tables[k0, codes[y, x]]):
                c += 1.0
            pcnt[g, slot, x + 1] = c


@njit(cache=True, nogil=True)
def disk_shares_coded(codes, tables, group, half_widths, depth_y, depth_x, mask_center):
    """K disk shares of one class raster at once: ``disk_share(tables[k][codes])`` for each k.

    ``codes`` is the uint8 block with a halo of ``depth_y`` rows and ``depth_x``
    columns (filled with a code that is NaN in every table); ``tables`` (K, 256)
    float64 maps a code to the value of share k (NaN = nodata for that share);
    ``group`` (:func:`count_groups`) lets tables with the same NaN codes share their
    count sums. Returns float32 (K, h, w), bit for bit ``disk_share(...)`` of the
    float64 values cast to float32: the same prefix sums, chord differences added
    in the same order. Only 2r + 1 rows of prefix sums are held (a ring), so the
    memory is O(K r w), not O(K h w).
    """
    ny, nx = codes.shape
    oy = ny - 2 * depth_y
    ox = nx - 2 * depth_x
    ntab = tables.shape[0]
    n_groups = 0
    for k in range(ntab):
        n_groups = max(n_groups, group[k] + 1)
    nrow = half_widths.shape[0]
    ry = (nrow - 1) // 2
    psum = np.zeros((ntab, nrow, nx + 1), np.float64)
    pcnt = np.zeros((n_groups, nrow, nx + 1), np.float64)
    ssum = np.empty((ntab, ox), np.float64)
    scnt = np.empty((n_groups, ox), np.float64)
    out = np.empty((ntab, oy, ox), np.float32)
    base = depth_y - ry   # the disk of output row y covers padded rows y + base .. y + base + 2r
    for r in range(base, base + nrow - 1):
        _prefix_row(codes, r, tables, group, n_groups, psum, pcnt, r % nrow)
    for y in range(oy):
        last = y + base + nrow - 1
        _prefix_row(codes, last, tables, group, n_groups, psum, pcnt, last % nrow)
        ssum[:, :] = 0.0
        scnt[:, :] = 0.0
        for k in range(nrow):
            w = half_widths[k]
            slot = (y + base + k) % nrow
            for t in range(ntab):
                for x in range(ox):
                    ssum[t, x] += psum[t, slot, x + depth_x + w + 1] - psum[t, slot, x + depth_x - w]
            for g in range(n_groups):
                for x in range(ox):
                    scnt[g, x] += pcnt[g, slot, x + depth_x + w + 1] - pcnt[g, slot, x + depth_x - w]
        for t in range(ntab):
            g = group[t]
            for x in range(ox):
                c = scnt[g, x]
                if c > 0 and not (mask_center and np.isnan(tables[t, codes[y + depth_y, x + depth_x]])):
                    out[t, y, x] = ssum[t, x] / c
                else:
                    out[t, y, x] = np.nan
    return out
