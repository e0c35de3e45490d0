"""A binary min-heap on parallel arrays, for the numba kernels (plain arrays only).

Used by priority-flood filling (pipeline/kernels/hydro_fill.py) and by the
Dijkstra searches of the connectivity graph (pipeline/kernels/graph.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit


# A binary min-heap on parallel arrays keyed by (value, index).  Ties on the
# value are broken by the cell index so every run pops cells in the same order.

@njit(cache=True, nogil=True)
def heap_new(capacity):
    cap = max(capacity, 16)
    return np.empty(cap, dtype=np.float64), np.empty(cap, dtype=np.int64)


@njit(cache=True, nogil=True)
def _less(kv, ki, i, j):
    if kv[i] < kv[j]:
        return True
    if kv[i] > kv[j]:
        return False
    return ki[i] < ki[j]


@njit(cache=True, nogil=True)
def heap_push(kv, ki, size, value, index):
    """Push; returns (kv, ki, size) because the arrays may be reallocated."""
    if size == kv.shape[0]:
        nkv = np.empty(kv.shape[0] * 2, dtype=np.float64)
        nki = np.empty(kv.shape[0] * 2, dtype=np.int64)
        nkv[:size] = kv[:size]
        nki[:size] = ki[:size]
        kv = nkv
        ki = nki
    i = size
    kv[i] = value
    ki[i] = index
    size += 1
    while i > 0:
        p = (i - 1) // 2
        if _less(kv, ki, i, p):
            kv[i], kv[p] = kv[p], kv[i]
            ki[i], ki[p] = ki[p], ki[i]
            i = p
        else:
            break
    return kv, ki, size


@njit(cache=True, nogil=True)
def heap_pop(kv, ki, size):
    """Pop the smallest; returns (value, index, new_size)."""
    value = kv[0]
    index = ki[0]
    size -= 1
    if size > 0:
        kv[0] = kv[size]
        ki[0] = ki[size]
        i = 0
        while True:
            left = 2 * i + 1
            if left >= size:
                break
            m = left
            right = left + 1
            if right < size and _less(kv, ki, right, left):
                m = right
            if _less(kv, ki, m, i):
                kv[i], kv[m] = kv[m], kv[i]
                ki[i], ki[m] = ki[m], ki[i]
                i = m
            else:
                break
    return value, index, size
