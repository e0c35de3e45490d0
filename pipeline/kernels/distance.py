"""Exact Euclidean distance transform (Felzenszwalb & Huttenlocher 2012).

Two separable passes of the lower envelope of parabolas: along columns with
spacing ``cell_y``, then along rows with spacing ``cell_x``. Result in the units
of the spacings (metres). Never import xarray or dask here.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _envelope_1d(f, spacing, out, v, z):
    """out[p] = min_q f[q] + (spacing * (p - q))^2 over finite f[q]; inf if none."""
    n = f.shape[0]
    k = -1
    sp2 = spacing * spacing
    for q in range(n):
        fq = f[q]
        if not np.isfinite(fq):
            continue
        if k < 0:
            k = 0
            v[0] = q
            z[0] = -np.inf
            z[1] = np.inf
            continue
        s = 0.0
        while k >= 0:
            r = v[k]
            s = ((fq + sp2 * q * q) - (f[r] + sp2 * r * r)) / (2.0 * sp2 * (q - r))
            if s <= z[k]:
                k -= 1
            else:
                break
        if k < 0:
            k = 0
            v[0] = q
            z[0] = -np.inf
            z[1] = np.inf
        else:
            k += 1
            v[k] = q
            z[k] = s
            z[k + 1] = np.inf
    if k < 0:
        for p in range(n):
            out[p] = np.inf
        return
    j = 0
    for p in range(n):
        while z[j + 1] < p:
            j += 1
        d = p - v[j]
        out[p] = sp2 * d * d + f[v[j]]


@njit(cache=True, nogil=True)
def edt(features, cell_y, cell_x):
    """Euclidean distance (float64) from every cell to the nearest nonzero cell of
    ``features``; inf where there is none."""
    ny, nx = features.shape
    g = np.empty((ny, nx), np.float64)
    n = max(ny, nx)
    f = np.empty(n, np.float64)
    o = np.empty(n, np.float64)
    v = np.empty(n, np.int64)
    z = np.empty(n + 1, np.float64)
    for x in range(nx):
        for y in range(ny):
            f[y] = 0.0 if features[y, x] != 0 else np.inf
        _envelope_1d(f[:ny], cell_y, o[:ny], v, z)
        for y in range(ny):
            g[y, x] = o[y]
    out = np.empty((ny, nx), np.float64)
    for y in range(ny):
        for x in range(nx):
            f[x] = g[y, x]
        _envelope_1d(f[:nx], cell_x, o[:nx], v, z)
        for x in range(nx):
            out[y, x] = np.sqrt(o[x])
    return out
