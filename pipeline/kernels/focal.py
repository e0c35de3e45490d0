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
