"""Shared pieces of the hydrology kernels: D8 neighbour tables and an array heap.

Plain numpy + numba only (no xarray, no dask).

Neighbour k (0..7) has the ESRI D8 code ``1 << k``::

    32 64 128        NW  N  NE
    16  .   1         W  .  E
     8  4   2        SW  S  SE

Rasters are (y, x) with row 0 north, so "S" is row + 1.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: row offset of neighbour k (E, SE, S, SW, W, NW, N, NE)
DROW = np.array([0, 1, 1, 1, 0, -1, -1, -1], dtype=np.int64)
#: column offset of neighbour k
DCOL = np.array([1, 1, 0, -1, -1, -1, 0, 1], dtype=np.int64)
#: ESRI code of neighbour k
CODES = np.array([1, 2, 4, 8, 16, 32, 64, 128], dtype=np.uint8)
#: distance to neighbour k in cell units (diagonals sqrt(2))
DIST = np.array([1.0, np.sqrt(2.0), 1.0, np.sqrt(2.0), 1.0, np.sqrt(2.0), 1.0, np.sqrt(2.0)])

D8_OUTLET = np.uint8(0)      #: pit / outlet: the path ends here
D8_NODATA = np.uint8(255)    #: no data
D8_FLAT = np.uint8(254)      #: internal only: flat cell whose direction is not yet resolved


@njit(cache=True, nogil=True)
def code_to_k(code):
    """Neighbour index 0..7 of an ESRI code; -1 for 0/255/anything else."""
    if code == 1:
        return 0
    if code == 2:
        return 1
    if code == 4:
        return 2
    if code == 8:
        return 3
    if code == 16:
        return 4
    if code == 32:
        return 5
    if code == 64:
        return 6
    if code == 128:
        return 7
    return -1


@njit(cache=True, nogil=True)
def count_invalid_codes(d8):
    """Number of cells whose value is not a D8 code, 0 or 255."""
    bad = 0
    for v in d8.ravel():
        if v != 0 and v != 255 and code_to_k(v) < 0:
            bad += 1
    return bad


# --------------------------------------------------------------------------- heap
# The (value, index) min-heap is in pipeline/kernels/heap.py (shared with the graph kernels).


# A binary min-heap of packed uint64 keys: (32-bit orderable elevation key << 32)
# | cell index. One integer comparison per step; cells must number < 2**32.

@njit(cache=True, nogil=True)
def heap64_push(hp, size, key):
    """Push; returns (hp, size) because the array may be reallocated."""
    if size == hp.shape[0]:
        nhp = np.empty(hp.shape[0] * 2, dtype=np.uint64)
        nhp[:size] = hp[:size]
        hp = nhp
    i = size
    while i > 0:
        p = (i - 1) >> 1
        if key < hp[p]:
            hp[i] = hp[p]
            i = p
        else:
            break
    hp[i] = key
    return hp, size + 1


@njit(cache=True, nogil=True)
def heap64_pop(hp, size):
    """Pop the smallest; returns (key, new_size)."""
    top = hp[0]
    size -= 1
    if size > 0:
        last = hp[size]
        i = 0
        while True:
            c = 2 * i + 1
            if c >= size:
                break
            if c + 1 < size and hp[c + 1] < hp[c]:
                c += 1
            if hp[c] < last:
                hp[i] = hp[c]
                i = c
            else:
                break
        hp[i] = last
    return top, size


def orderable_key(z: np.ndarray) -> np.ndarray:
    """uint32 keys ordered like the elevations (equal keys iff equal values; NaN: any).

    float32: the IEEE bit pattern made monotone; other dtypes: dense ranks.
    """
    z = np.ascontiguousarray(z)
    if z.dtype == np.float32:
        u = z.view(np.uint32)
        return np.where(u >> np.uint32(31), ~u, u | np.uint32(0x80000000)).astype(np.uint32)
    key = np.zeros(z.shape, dtype=np.uint32)
    ok = ~np.isnan(z)
    if ok.any():
        _, inv = np.unique(z[ok], return_inverse=True)
        if inv.max(initial=0) >= 2**32:
            raise ValueError("more than 2**32 distinct elevations in one tile")
        key[ok] = inv.astype(np.uint32)
    return key


@njit(cache=True, nogil=True)
def outlet_mask(z):
    """Valid cells on the array edge or with a NaN 8-neighbour (water leaves there)."""
    nr, nc = z.shape
    out = np.zeros((nr, nc), dtype=np.bool_)
    for r in range(nr):
        for c in range(nc):
            if np.isnan(z[r, c]):
                continue
            if r == 0 or c == 0 or r == nr - 1 or c == nc - 1:
                out[r, c] = True
                continue
            for k in range(8):
                if np.isnan(z[r + DROW[k], c + DCOL[k]]):
                    out[r, c] = True
                    break
    return out
