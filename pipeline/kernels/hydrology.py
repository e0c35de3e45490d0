"""Hydrology kernels on plain numpy arrays (no xarray, no dask).

The global algorithms live in ``hydro_fill`` (priority-flood), ``hydro_d8``
(D8 + flats) and ``hydro_acc`` (accumulation); this module holds the local and
path kernels (Horn slope, cell sizes on the ellipsoid, upstream mask,
downstream path) and re-exports the rest.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from pipeline.kernels.hydro_acc import (accumulate_block, accumulate_block_many, perimeter_links,
                                        solve_perimeter_flow, solve_perimeter_flow_many)
from pipeline.kernels.hydro_common import (CODES, D8_FLAT, D8_NODATA, D8_OUTLET, DCOL, DIST,
                                           DROW, code_to_k, count_invalid_codes, outlet_mask)
from pipeline.kernels.hydro_d8 import (d8_steepest, edge_candidates, edge_links,
                                       flat_cell_tables, flat_components, flat_mask,
                                       flow_directions_d8, label_max, neighbour_index,
                                       neighbour_index_dense, relax_steps, resolve_flats,
                                       resolve_flats_tiled)
from pipeline.kernels.hydro_d8_tile import d8_tile
from pipeline.kernels.hydro_fill import (apply_spill_levels, fill_tile_labels,
                                         priority_flood_fill, solve_spill_graph)

__all__ = [
    "CODES", "D8_FLAT", "D8_NODATA", "D8_OUTLET", "DCOL", "DIST", "DROW", "code_to_k",
    "count_invalid_codes", "outlet_mask", "accumulate_block", "perimeter_links",
    "solve_perimeter_flow", "accumulate_block_many", "solve_perimeter_flow_many",
    "d8_steepest", "flat_cell_tables", "flow_directions_d8",
    "neighbour_index", "neighbour_index_dense", "resolve_flats", "flat_components",
    "relax_steps", "edge_candidates", "edge_links", "label_max", "flat_mask",
    "resolve_flats_tiled", "d8_tile",
    "apply_spill_levels", "fill_tile_labels", "priority_flood_fill", "solve_spill_graph",
    "accumulate", "slope_horn", "ellipsoid_cell_area_m2", "ellipsoid_metres_per_degree",
    "upstream_mask", "downstream_cells",
]


def accumulate(d8, weights=None):
    """Whole-array accumulation: int64 cells, or float64 sums of ``weights``.

    Returns ``(acc, n_on_cycles)``; nodata cells (255) get 0.
    """
    d8 = np.asarray(d8, dtype=np.uint8)
    h, w = d8.shape
    dp = np.full((h + 2, w + 2), D8_NODATA, dtype=np.uint8)
    dp[1:-1, 1:-1] = d8
    none_i = np.empty(0, dtype=np.int64)
    if weights is None:
        out = np.empty((h, w), dtype=np.int64)
        bad = accumulate_block(dp, np.empty((0, 0), dtype=np.int64), none_i,
                               np.empty(0, dtype=np.int64), out)
    else:
        out = np.empty((h, w), dtype=np.float64)
        bad = accumulate_block(dp, np.ascontiguousarray(weights, dtype=np.float64), none_i,
                               np.empty(0, dtype=np.float64), out)
    return out, bad


# --------------------------------------------------------------------------- grid geometry

def ellipsoid_cell_area_m2(lat_top, lat_bottom, dlon_deg, a, f):
    """Area (m2) of a lon/lat cell on an ellipsoid (semi-major ``a``, flattening ``f``).

    Exact band area between two latitudes (authalic ``q`` function), times the
    cell's share of the full circle. Vectorised over the latitude arrays.
    """
    e2 = f * (2.0 - f)
    e = math.sqrt(e2)
    b2 = (a * (1.0 - f)) ** 2

    def q(lat_deg):
        s = np.sin(np.radians(lat_deg))
        return s / (1.0 - e2 * s * s) + np.log((1.0 + e * s) / (1.0 - e * s)) / (2.0 * e)

    band = 0.5 * b2 * np.abs(q(np.asarray(lat_top, dtype=np.float64))
                             - q(np.asarray(lat_bottom, dtype=np.float64)))
    return band * np.radians(abs(dlon_deg))


def ellipsoid_metres_per_degree(lat_deg, a, f):
    """(metres per degree of longitude, metres per degree of latitude) at ``lat_deg``."""
    e2 = f * (2.0 - f)
    phi = np.radians(np.asarray(lat_deg, dtype=np.float64))
    s2 = np.sin(phi) ** 2
    n_rad = a / np.sqrt(1.0 - e2 * s2)                     # prime vertical radius
    m_rad = a * (1.0 - e2) / (1.0 - e2 * s2) ** 1.5        # meridional radius
    return np.radians(1.0) * n_rad * np.cos(phi), np.radians(1.0) * m_rad


# --------------------------------------------------------------------------- local ops

@njit(cache=True, nogil=True)
def slope_horn(zp, dx, dy):
    """Horn (1981) slope in degrees of ``zp[1:-1, 1:-1]``.

    ``zp``: elevations with a 1-cell halo (NaN = nodata/outside; a missing
    neighbour takes the centre value). ``dx``, ``dy``: cell width and height in
    metres for each output row (they vary by row on geographic grids).
    """
    h = zp.shape[0] - 2
    w = zp.shape[1] - 2
    out = np.empty((h, w), dtype=np.float64)
    win = np.empty(9, dtype=np.float64)
    for i in range(h):
        for j in range(w):
            z0 = zp[i + 1, j + 1]
            if np.isnan(z0):
                out[i, j] = np.nan
                continue
            t = 0
            for di in range(3):
                for dj in range(3):
                    v = zp[i + di, j + dj]
                    win[t] = z0 if np.isnan(v) else v
                    t += 1
            # a b c / d e f / g h i
            gx = ((win[2] + 2.0 * win[5] + win[8]) - (win[0] + 2.0 * win[3] + win[6])) / (8.0 * dx[i])
            gy = ((win[6] + 2.0 * win[7] + win[8]) - (win[0] + 2.0 * win[1] + win[2])) / (8.0 * dy[i])
            out[i, j] = math.degrees(math.atan(math.sqrt(gx * gx + gy * gy)))
    return out


# --------------------------------------------------------------------------- paths

@njit(cache=True, nogil=True)
def upstream_mask(d8, seed):
    """Cells whose D8 path reaches a seed cell (seeds included); bool array.

    Each cell is visited once (path memo), so the cost is linear in the cells.
    Cycles (invalid D8) are treated as not reaching a seed.
    """
    h, w = d8.shape
    state = np.zeros((h, w), dtype=np.uint8)  # 0 unknown, 1 yes, 2 no, 3 on path
    buf = np.empty(1024, dtype=np.int64)
    for r0 in range(h):
        for c0 in range(w):
            if state[r0, c0] != 0:
                continue
            nb = 0
            r = r0
            c = c0
            result = np.uint8(2)
            while True:
                s = state[r, c]
                if s == 1 or s == 2:
                    result = s
                    break
                if s == 3:
                    result = 2
                    break
                if d8[r, c] == 255:
                    result = 2
                    break
                if seed[r, c]:
                    state[r, c] = 1
                    result = 1
                    break
                state[r, c] = 3
                if nb == buf.shape[0]:
                    nbuf = np.empty(2 * nb, dtype=np.int64)
                    nbuf[:nb] = buf[:nb]
                    buf = nbuf
                buf[nb] = r * w + c
                nb += 1
                k = code_to_k(d8[r, c])
                if k < 0:
                    break
                rr = r + DROW[k]
                cc = c + DCOL[k]
                if rr < 0 or cc < 0 or rr >= h or cc >= w:
                    break
                r = rr
                c = cc
            for j in range(nb):
                q = buf[j]
                qr = q // w
                state[qr, q - qr * w] = result
            if state[r0, c0] == 0:   # nodata start cell
                state[r0, c0] = 2
    out = np.zeros((h, w), dtype=np.bool_)
    for r in range(h):
        for c in range(w):
            out[r, c] = state[r, c] == 1
    return out


@njit(cache=True, nogil=True)
def downstream_cells(d8, row, col, max_steps):
    """Rows and cols of the D8 path from (row, col) to where it ends (start included)."""
    h, w = d8.shape
    rows = np.empty(max_steps + 1, dtype=np.int64)
    cols = np.empty(max_steps + 1, dtype=np.int64)
    n = 0
    r = row
    c = col
    while n <= max_steps:
        if d8[r, c] == 255:
            break
        rows[n] = r
        cols[n] = c
        n += 1
        k = code_to_k(d8[r, c])
        if k < 0:
            break
        rr = r + DROW[k]
        cc = c + DCOL[k]
        if rr < 0 or cc < 0 or rr >= h or cc >= w or d8[rr, cc] == 255:
            break
        r = rr
        c = cc
    return rows[:n], cols[:n], n > max_steps
