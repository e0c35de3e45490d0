"""Stream reaches traced on a D8 grid (plain arrays; numba)."""

from __future__ import annotations

import numpy as np
from numba import njit

# ESRI D8 codes and their (drow, dcol)
_CODES = np.array([1, 2, 4, 8, 16, 32, 64, 128], dtype=np.int64)
_DR = np.array([0, 1, 1, 1, 0, -1, -1, -1], dtype=np.int64)
_DC = np.array([1, 1, 0, -1, -1, -1, 0, 1], dtype=np.int64)


@njit(cache=True, nogil=True)
def _downstream(d8, r, c):
    code = d8[r, c]
    for k in range(8):
        if code == _CODES[k]:
            rr = r + _DR[k]
            cc = c + _DC[k]
            if 0 <= rr < d8.shape[0] and 0 <= cc < d8.shape[1]:
                return rr, cc
            return -1, -1
    return -1, -1


@njit(cache=True, nogil=True)
def trace_reaches(d8, stream):
    """Split the stream cells into reaches between sources and confluences.

    d8: uint8 ESRI codes (0 pit, 255 nodata); stream: uint8, 1 = stream cell.
    Returns (reach, cell): for each vertex its reach number and flat cell index,
    vertices of a reach in downstream order. A reach ends where the next cell is
    a confluence (that cell is repeated as its last vertex, so reaches join), a
    non-stream cell, a pit or the edge of the grid.
    """
    h, w = d8.shape
    n_up = np.zeros((h, w), dtype=np.int64)
    for r in range(h):
        for c in range(w):
            if stream[r, c] == 1:
                rr, cc = _downstream(d8, r, c)
                if rr >= 0 and stream[rr, cc] == 1:
                    n_up[rr, cc] += 1
    n_stream = 0
    for r in range(h):
        for c in range(w):
            if stream[r, c] == 1:
                n_stream += 1
    reach = np.empty(2 * n_stream + 1, dtype=np.int64)
    cell = np.empty(2 * n_stream + 1, dtype=np.int64)
    k = 0
    rid = 0
    for r in range(h):
        for c in range(w):
            if stream[r, c] != 1 or n_up[r, c] == 1:
                continue
            cr, cc = r, c
            while True:
                reach[k] = rid
                cell[k] = cr * w + cc
                k += 1
                nr, nc = _downstream(d8, cr, cc)
                if nr < 0 or stream[nr, nc] != 1:
                    break
                if n_up[nr, nc] != 1:          # a confluence: close the reach on it
                    reach[k] = rid
                    cell[k] = nr * w + nc
                    k += 1
                    break
                cr, cc = nr, nc
            rid += 1
    return reach[:k], cell[:k]
