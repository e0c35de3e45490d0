"""Tile-wise hydrology on xarray/dask rasters and on GeoTIFF files.

Every global op follows the same shape (STYLE.md "Kernels and tiles"): a
per-tile kernel run in parallel, a small perimeter/graph problem solved once
centrally, then one more per-tile pass. Intermediate tiles live in an on-disk
:class:`~pipeline.ops.tiles.ChunkStore`, so peak memory depends on the chunk
size, not on the raster size. Results are identical for any chunking.

What is tiled:
- fill: Barnes (2016) labels + spill graph (exact);
- D8: steepest descent per tile with a 2-cell halo; flats entirely inside one
  tile are resolved in that tile (on dense per-tile arrays); flats that cross
  tile edges are resolved tile by tile too: their Barnes (2014) step distances
  are relaxed per tile, only the distances of flat cells on tile edges are
  exchanged centrally, until nothing changes (exact: the distances are
  shortest paths on the flat-cell graph);
- accumulation: Barnes (2017) perimeter links (exact for cell counts; weighted
  sums are equal up to float summation order).
Not tiled (whole D8 grid in memory, 1 byte per cell): upstream_mask,
basin_mask, downstream_path.

Conventions: float rasters use NaN for nodata, D8 uint8 uses 255, cell
accumulation int64 uses -1 in the array API.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import dask.array as da
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from pipeline.errors import InputDataError
from pipeline.kernels import hydrology as K
from pipeline.ops.tiles import (ArrayReader, ChunkStore, RasterReader, Tile,
                                TiledGeoTIFFWriter, read_halo, run_parallel, tile_grid)

log = logging.getLogger(__name__)

ACC_NODATA = -1


# =========================================================================== helpers

def _work_dtype(dtype) -> np.dtype:
    """float32 when it holds the input exactly, else float64 (filled values are input values)."""
    dtype = np.dtype(dtype)
    if dtype == np.float32 or (dtype.kind in "iub" and dtype.itemsize <= 2):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


class _FloatView:
    """A reader returning floats with NaN where the raw value equals ``nodata``."""

    def __init__(self, reader, nodata, dtype):
        self.reader = reader
        self.shape = reader.shape
        self.dtype = np.dtype(dtype)
        self.nodata = nodata

    def read(self, r0, r1, c0, c1):
        raw = self.reader.read(r0, r1, c0, c1)
        out = raw.astype(self.dtype)
        if self.nodata is not None and not (isinstance(self.nodata, float) and math.isnan(self.nodata)):
            out[raw == self.nodata] = np.nan
        return out


def _perimeter(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and cols of the perimeter cells of an h x w block, each once."""
    rows = [np.zeros(w, np.int64)]
    cols = [np.arange(w, dtype=np.int64)]
    if h > 1:
        rows.append(np.full(w, h - 1, np.int64))
        cols.append(np.arange(w, dtype=np.int64))
    if h > 2:
        mid = np.arange(1, h - 1, dtype=np.int64)
        rows.append(mid)
        cols.append(np.zeros(h - 2, np.int64))
        if w > 1:
            rows.append(mid)
            cols.append(np.full(h - 2, w - 1, np.int64))
    return np.concatenate(rows), np.concatenate(cols)


# =========================================================================== fill

def _fill_engine(zreader, tiles, store: ChunkStore, scheduler, work_dtype, sink=None):
    """Barnes (2016) tiled priority-flood. Writes tile "filled" into the store.

    ``sink(tile, filled)``, when given, also receives each final tile inside
    the parallel pass (e.g. to write it to a GeoTIFF while the tile is in memory).
    """

    def pass1(t: Tile):
        zp = read_halo(zreader, t, 1, np.nan, work_dtype)
        filled, labels, nl, eu, ev, ew = K.fill_tile_labels(zp)
        store.put("fill_tf", t, filled)
        store.put("fill_lab", t, labels)
        z = zp[1:-1, 1:-1]
        # copies, not views: a view would keep the whole tile's arrays alive
        # until the spill graph is solved (O(raster) memory)
        sides = {"top": (labels[0].copy(), z[0].copy()),
                 "bottom": (labels[-1].copy(), z[-1].copy()),
                 "left": (labels[:, 0].copy(), z[:, 0].copy()),
                 "right": (labels[:, -1].copy(), z[:, -1].copy())}
        return nl, eu, ev, ew, sides

    res = run_parallel(pass1, tiles, scheduler)
    offsets = {}
    nxt = 1
    for t, r in zip(tiles, res):
        offsets[(t.ty, t.tx)] = nxt
        nxt += r[0] - 2
    n_nodes = nxt

    def glab(t, loc):
        loc = np.asarray(loc, dtype=np.int64)
        return np.where(loc == 1, 0, offsets[(t.ty, t.tx)] + loc - 2)

    us, vs, ws = [], [], []
    by_pos = {}
    for t, r in zip(tiles, res):
        by_pos[(t.ty, t.tx)] = (t, r)
        _, eu, ev, ew, _ = r
        us.append(glab(t, eu))
        vs.append(glab(t, ev))
        ws.append(ew)

    def link_sides(ta, la, za, tb, lb, zb, shifts):
        for s in shifts:
            if s >= 0:
                a_l, a_z, b_l, b_z = la[:len(la) - s], za[:len(za) - s], lb[s:], zb[s:]
            else:
                a_l, a_z, b_l, b_z = la[-s:], za[-s:], lb[:len(lb) + s], zb[:len(zb) + s]
            n = min(len(a_l), len(b_l))
            a_l, a_z, b_l, b_z = a_l[:n], a_z[:n], b_l[:n], b_z[:n]
            ok = (a_l != 0) & (b_l != 0)
            if ok.any():
                us.append(glab(ta, a_l[ok]))
                vs.append(glab(tb, b_l[ok]))
                ws.append(np.maximum(a_z[ok], b_z[ok]).astype(np.float64))

    for (ty, tx), (t, r) in by_pos.items():
        sides = r[4]
        if (ty, tx + 1) in by_pos:          # right neighbour
            t2, r2 = by_pos[(ty, tx + 1)]
            link_sides(t, *sides["right"], t2, *r2[4]["left"], (-1, 0, 1))
        if (ty + 1, tx) in by_pos:          # lower neighbour
            t2, r2 = by_pos[(ty + 1, tx)]
            link_sides(t, *sides["bottom"], t2, *r2[4]["top"], (-1, 0, 1))
        if (ty + 1, tx + 1) in by_pos:      # lower-right corner
            t2, r2 = by_pos[(ty + 1, tx + 1)]
            link_sides(t, sides["bottom"][0][-1:], sides["bottom"][1][-1:],
                       t2, r2[4]["top"][0][:1], r2[4]["top"][1][:1], (0,))
        if (ty + 1, tx - 1) in by_pos:      # lower-left corner
            t2, r2 = by_pos[(ty + 1, tx - 1)]
            link_sides(t, sides["bottom"][0][:1], sides["bottom"][1][:1],
                       t2, r2[4]["top"][0][-1:], r2[4]["top"][1][-1:], (0,))
    eu = np.concatenate(us) if us else np.empty(0, np.int64)
    ev = np.concatenate(vs) if vs else np.empty(0, np.int64)
    ew = np.concatenate(ws) if ws else np.empty(0, np.float64)
    level = K.solve_spill_graph(n_nodes, eu.astype(np.int64), ev.astype(np.int64),
                                ew.astype(np.float64), 0)
    log.debug("fill: %d tiles, %d labels, %d spill edges", len(tiles), n_nodes, eu.size)

    def pass2(t: Tile):
        filled = store.get("fill_tf", t)       # work dtype: levels are filled values too
        labels = store.get("fill_lab", t)
        K.apply_spill_levels(filled, labels, offsets[(t.ty, t.tx)], level)
        store.put("filled", t, filled)
        if sink is not None:
            sink(t, filled)
        return None

    run_parallel(pass2, tiles, scheduler)
    store.drop("fill_tf")
    store.drop("fill_lab")


# =========================================================================== D8

def _d8_engine(freader, tiles, ncols: int, store: ChunkStore, scheduler, sink=None):
    """Tiled D8 with flats resolved. Writes tile "d8" into the store (and to
    ``sink(tile, d8)`` when given, inside the parallel pass).

    Flats entirely inside a tile are resolved in pass 1. Flats that cross tile
    edges keep their cells in the store (tile by tile); their two step distances
    are relaxed tile by tile, exchanging only the distances of cells on tile
    edges, until nothing changes; then the flat heights are joined across edges
    and pass 2 chooses the directions. Central memory: a few arrays over the flat
    cells on tile edges.
    """
    by_index = {(t.ty, t.tx): i for i, t in enumerate(tiles)}

    def put_d8(t, d8):
        store.put("d8", t, d8)
        if sink is not None:
            sink(t, d8)

    def pass1(t: Tile):
        zp = read_halo(freader, t, 2, np.nan)
        d8, rows, cols, same, low, ext, lab, nlab, towards, away = K.d8_tile(zp)
        del zp
        store.put("d8_p1", t, d8)
        del d8
        if rows.size == 0:
            return None
        # the neighbour table is built once here, not in every relaxation round
        nbr = K.neighbour_index_dense(rows, cols, same, *t.shape)
        for name, a in (("fl_rows", rows), ("fl_cols", cols), ("fl_nbr", nbr),
                        ("fl_low", low), ("fl_ext", ext), ("fl_lab", lab),
                        ("fl_tow", towards), ("fl_away", away)):
            store.put(name, t, a)
        del nbr
        e = np.flatnonzero(ext)
        gkeys = (t.r0 + rows[e]) * ncols + (t.c0 + cols[e])
        return (gkeys, ext[e], e, lab[e], nlab, towards[e], away[e],
                K.label_max(lab, nlab, away))

    res = run_parallel(pass1, tiles, scheduler)
    flat_tiles = [i for i, r in enumerate(res) if r is not None]
    if not flat_tiles:
        run_parallel(lambda t: put_d8(t, store.get("d8_p1", t)), tiles, scheduler)
        store.drop("d8_p1")
        return

    # ---- central tables over the flat cells on tile edges (sorted by global key)
    lab_off = {}
    nxt = 0
    for i in flat_tiles:
        lab_off[i] = nxt
        nxt += res[i][4]
    n_labels = nxt
    comp_max = np.zeros(n_labels, dtype=np.int64)
    parts = {"key": [], "ext": [], "tile": [], "loc": [], "node": [], "tow": [], "away": []}
    for i in flat_tiles:
        gk, ex, e, lb, nlab, tw, aw, cm = res[i]
        parts["key"].append(gk)
        parts["ext"].append(ex)
        parts["tile"].append(np.full(gk.size, i, dtype=np.int64))
        parts["loc"].append(e.astype(np.int64))
        parts["node"].append(lb.astype(np.int64) + lab_off[i])
        parts["tow"].append(tw)
        parts["away"].append(aw)
        comp_max[lab_off[i]:lab_off[i] + nlab] = cm
    del res
    order = np.argsort(np.concatenate(parts["key"]), kind="stable")
    edge = {k: np.concatenate(v)[order] for k, v in parts.items()}
    del parts, order
    ekeys, eext = edge["key"], edge["ext"]
    # per tile: positions of its edge cells in the central tables
    tile_rows = {i: np.flatnonzero(edge["tile"] == i) for i in flat_tiles}
    log.debug("d8: %d flat labels in %d tiles cross tile edges; %d edge cells",
              n_labels, len(flat_tiles), ekeys.size)

    def relax(item):
        i, seeds_t, vals_t, seeds_a, vals_a = item
        t = tiles[i]
        nbr = store.get("fl_nbr", t)
        towards = store.get("fl_tow", t)
        away = store.get("fl_away", t)
        ct = K.relax_steps(nbr, towards, seeds_t, vals_t) if seeds_t.size else 0
        ca = K.relax_steps(nbr, away, seeds_a, vals_a) if seeds_a.size else 0
        if ct:
            store.put("fl_tow", t, towards)
        if ca:
            store.put("fl_away", t, away)
        cm = None
        if ca:
            lab = store.get("fl_lab", t)
            cm = K.label_max(lab, int(lab.max()) + 1 if lab.size else 0, away)
        loc = edge["loc"][tile_rows[i]]
        return i, towards[loc], away[loc], cm

    rounds = 0
    while True:
        cand_t = K.edge_candidates(ekeys, eext, edge["tow"], ncols)
        cand_a = K.edge_candidates(ekeys, eext, edge["away"], ncols)
        better_t = (cand_t > 0) & ((edge["tow"] == 0) | (cand_t < edge["tow"]))
        better_a = (cand_a > 0) & ((edge["away"] == 0) | (cand_a < edge["away"]))
        if not (better_t.any() or better_a.any()):
            break
        rounds += 1
        work = []
        for i in flat_tiles:
            rr = tile_rows[i]
            bt, ba = better_t[rr], better_a[rr]
            if bt.any() or ba.any():
                work.append((i, edge["loc"][rr[bt]], cand_t[rr[bt]].astype(np.int32),
                             edge["loc"][rr[ba]], cand_a[rr[ba]].astype(np.int32)))
        for i, tw, aw, cm in run_parallel(relax, work, scheduler):
            rr = tile_rows[i]
            edge["tow"][rr] = tw
            edge["away"][rr] = aw
            if cm is not None:
                comp_max[lab_off[i]:lab_off[i] + cm.size] = cm
    log.debug("d8: flat distances across tiles converged in %d rounds", rounds)

    # ---- flat heights: maximum of "away" over each flat, joined across tile edges
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    a, b = K.edge_links(ekeys, eext, ncols)
    g = coo_matrix((np.ones(a.size, dtype=np.int8), (edge["node"][a], edge["node"][b])),
                   shape=(n_labels, n_labels))
    ncomp, comp = connected_components(g, directed=False)
    height = np.zeros(ncomp, dtype=np.int64)
    np.maximum.at(height, comp, comp_max)
    node_height = height[comp]
    edge_mask = K.flat_mask(edge["tow"], edge["away"], node_height[edge["node"]])
    del g, a, b, comp, height

    def pass2(t: Tile):
        i = by_index[(t.ty, t.tx)]
        d8 = store.get("d8_p1", t)
        if i in lab_off:
            rows, cols, nbr, low, ext, lab, towards, away = (
                store.get(n, t) for n in ("fl_rows", "fl_cols", "fl_nbr", "fl_low", "fl_ext",
                                          "fl_lab", "fl_tow", "fl_away"))
            hgt = node_height[lab_off[i] + lab.astype(np.int64)]
            mask = K.flat_mask(towards, away, hgt)
            d8[rows, cols] = K.resolve_flats_tiled(nbr, low, ext, mask, towards, rows, cols,
                                                   t.r0, t.c0, ncols, ekeys, edge_mask)
        put_d8(t, d8)
        return None

    run_parallel(pass2, tiles, scheduler)
    for name in ("d8_p1", "fl_rows", "fl_cols", "fl_nbr", "fl_low", "fl_ext", "fl_lab",
                 "fl_tow", "fl_away"):
        store.drop(name)


# =========================================================================== accumulation

def _acc_engine(dreader, tiles, ncols: int, scheduler, weights_fn=None, sink=None,
                layers: int | None = None):
    """Barnes (2017) tiled accumulation; ``sink(tile, acc, nodata_mask)`` receives each
    final tile.

    ``weights_fn(tile)`` -> float64 block or None for cell counts (int64). With
    ``layers=K``, ``weights_fn`` returns K stacked blocks (K, h, w) and the K
    sums are carried over one topological order per tile (each layer
    bit-identical to its own run); ``acc`` is then (K, h, w).
    """
    out_dtype = np.int64 if weights_fn is None else np.float64
    empty_w = np.empty((0, 0), dtype=out_dtype)
    shape = (lambda t: t.shape) if layers is None else (lambda t: (layers,) + t.shape)
    block_kernel = K.accumulate_block if layers is None else K.accumulate_block_many

    def run_block(t, dp, add_idx, add_val):
        out = np.empty(shape(t), dtype=out_dtype)
        w = empty_w if weights_fn is None else np.ascontiguousarray(weights_fn(t), dtype=np.float64)
        bad = block_kernel(dp, w, add_idx, add_val.astype(out_dtype), out)
        if bad:
            raise InputDataError(f"the D8 grid has cycles ({bad} cells in tile rows "
                                 f"{t.r0}-{t.r1}, cols {t.c0}-{t.c1} never drain)",
                                 fix="recompute flow directions from a depression-filled DEM")
        return out

    def pass1(t: Tile):
        h, w = t.shape
        dp = read_halo(dreader, t, 1, 255, np.uint8)
        acc = run_block(t, dp, np.empty(0, np.int64),
                        np.empty((0,) if layers is None else (0, layers), out_dtype))
        prow, pcol = _perimeter(h, w)
        valid = dp[prow + 1, pcol + 1] != 255
        prow, pcol = prow[valid], pcol[valid]
        link, trow, tcol, ncyc = K.perimeter_links(dp, prow, pcol)
        if ncyc:
            raise InputDataError("the D8 grid has cycles",
                                 fix="recompute flow directions from a depression-filled DEM")
        keys = (t.r0 + prow) * ncols + (t.c0 + pcol)
        lr = link // w
        lkeys = np.where(link >= 0, (t.r0 + lr) * ncols + (t.c0 + link - lr * w), -1)
        tkeys = np.where(trow != -9, (t.r0 + trow) * ncols + (t.c0 + tcol), -1)
        local = acc[prow, pcol] if layers is None else acc[:, prow, pcol].T
        return keys, local, lkeys, tkeys

    res = run_parallel(pass1, tiles, scheduler)
    keys = np.concatenate([r[0] for r in res])
    order = np.argsort(keys)
    keys = keys[order]
    local = np.concatenate([r[1] for r in res])[order]
    lkeys = np.concatenate([r[2] for r in res])[order]
    tkeys = np.concatenate([r[3] for r in res])[order]

    def to_node(k):
        if keys.size == 0:
            return np.full(k.shape, -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(keys, k), keys.size - 1)
        return np.where((k >= 0) & (keys[pos] == k), pos, -1).astype(np.int64)

    link = to_node(lkeys)
    target = to_node(tkeys)
    if layers is None:
        inflow, unresolved = K.solve_perimeter_flow(local.astype(out_dtype), link, target)
    else:
        local = np.ascontiguousarray(local.reshape(-1, layers), dtype=np.float64)
        inflow, unresolved = K.solve_perimeter_flow_many(local, link, target)
    if unresolved:
        raise InputDataError(f"the D8 grid has cycles across tiles ({unresolved} perimeter cells)",
                             fix="recompute flow directions from a depression-filled DEM")

    def pass2(t: Tile):
        h, w = t.shape
        dp = read_halo(dreader, t, 1, 255, np.uint8)
        lo = np.searchsorted(keys, t.r0 * ncols)
        hi = np.searchsorted(keys, (t.r1 - 1) * ncols + ncols)
        k = keys[lo:hi]
        r = k // ncols
        c = k - r * ncols
        nonzero = inflow[lo:hi] != 0
        sel = (c >= t.c0) & (c < t.c1) & (nonzero if layers is None else nonzero.any(axis=1))
        add_idx = ((r[sel] - t.r0) * w + (c[sel] - t.c0)).astype(np.int64)
        add_val = np.ascontiguousarray(inflow[lo:hi][sel])
        acc = run_block(t, dp, add_idx, add_val)
        sink(t, acc, dp[1:-1, 1:-1] == 255)
        return None

    run_parallel(pass2, tiles, scheduler)


# =========================================================================== grid geometry

def _grid_info(crs, transform):
    if transform.b != 0 or transform.d != 0:
        raise InputDataError("rotated grids are not supported",
                             fix="warp the raster to a north-up grid first")
    if crs is None:
        raise InputDataError("the raster has no CRS; cell areas and lengths are unknown",
                             fix="assign the CRS (e.g. gdal_edit.py -a_srs EPSG:32650)")
    return crs


def _ellipsoid(crs):
    from pyproj import CRS

    ell = CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs).ellipsoid
    inv_f = ell.inverse_flattening
    return ell.semi_major_metre, (1.0 / inv_f if inv_f else 0.0)


def cell_area_rows_m2(crs, transform, nrows: int) -> np.ndarray:
    """Area in m2 of the cells of each row (ellipsoidal bands on geographic grids)."""
    from pyproj import CRS

    _grid_info(crs, transform)
    pcrs = CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
    if pcrs.is_geographic:
        a, f = _ellipsoid(crs)
        rows = np.arange(nrows)
        top = transform.f + transform.e * rows
        return K.ellipsoid_cell_area_m2(top, top + transform.e, transform.a, a, f)
    unit = pcrs.axis_info[0].unit_conversion_factor if pcrs.axis_info else 1.0
    return np.full(nrows, abs(transform.a * transform.e) * unit * unit)


def cell_size_rows_m(crs, transform, nrows: int) -> tuple[np.ndarray, np.ndarray]:
    """(cell width, cell height) in metres for each row."""
    from pyproj import CRS

    _grid_info(crs, transform)
    pcrs = CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
    if pcrs.is_geographic:
        a, f = _ellipsoid(crs)
        lat = transform.f + transform.e * (np.arange(nrows) + 0.5)
        mlon, mlat = K.ellipsoid_metres_per_degree(lat, a, f)
        return mlon * abs(transform.a), mlat * abs(transform.e)
    unit = pcrs.axis_info[0].unit_conversion_factor if pcrs.axis_info else 1.0
    return (np.full(nrows, abs(transform.a) * unit), np.full(nrows, abs(transform.e) * unit))


# =========================================================================== xarray API

def _chunks_of(arr: xr.DataArray, chunks):
    if chunks is not None:
        return chunks
    if arr.chunks is not None:
        return arr.chunks
    return arr.shape


def _nodata_of(arr: xr.DataArray):
    nd = arr.rio.nodata if hasattr(arr, "rio") else None
    if nd is None:
        nd = arr.attrs.get("_FillValue", arr.encoding.get("_FillValue"))
    return nd


def _wrap(template: xr.DataArray, data, nodata, name: str) -> xr.DataArray:
    attrs = {k: v for k, v in template.attrs.items()
             if k not in ("_FillValue", "nodata", "scale_factor", "add_offset", "units",
                          "long_name")}
    out = xr.DataArray(data, coords=template.coords, dims=template.dims, attrs=attrs, name=name)
    crs = template.rio.crs
    if crs is not None:
        out = out.rio.write_crs(crs)
    out = out.rio.write_nodata(nodata, encoded=False)
    return out


def _store_array(store, name, tiles, grid, dtype):
    blocks = []
    for i in range(grid[0]):
        row = []
        for j in range(grid[1]):
            t = tiles[i * grid[1] + j]
            row.append(da.from_delayed(_delayed_get(store, name, t), shape=t.shape, dtype=dtype))
        blocks.append(row)
    return da.block(blocks)


def _delayed_get(store, name, t):
    import dask

    return dask.delayed(store.get, pure=True)(name, t)


def _check_2d(arr, what):
    if not isinstance(arr, xr.DataArray) or arr.ndim != 2:
        raise InputDataError(f"{what} must be a 2-D xarray.DataArray (y, x)",
                             fix="select one band, e.g. da.squeeze('band', drop=True)")


def fill_depressions(dem: xr.DataArray, chunks=None, scheduler=None) -> xr.DataArray:
    """Depression-filled DEM (priority-flood, no epsilon); float, NaN = nodata."""
    _check_2d(dem, "the DEM")
    work = _work_dtype(dem.dtype)
    zreader = _FloatView(ArrayReader(dem.data), _nodata_of(dem), work)
    tiles, grid = tile_grid(dem.shape, _chunks_of(dem, chunks))
    store = ChunkStore(prefix="pipeline-fill-")
    _fill_engine(zreader, tiles, store, scheduler, work)
    return _wrap(dem, _store_array(store, "filled", tiles, grid, work), np.nan, "filled")


def flow_directions_d8(filled: xr.DataArray, chunks=None, scheduler=None) -> xr.DataArray:
    """D8 ESRI codes (uint8; 0 outlet/pit, 255 nodata) of a filled DEM, flats resolved."""
    _check_2d(filled, "the filled DEM")
    freader = _FloatView(ArrayReader(filled.data), _nodata_of(filled),
                         _work_dtype(filled.dtype))
    tiles, grid = tile_grid(filled.shape, _chunks_of(filled, chunks))
    store = ChunkStore(prefix="pipeline-d8-")
    _d8_engine(freader, tiles, filled.shape[1], store, scheduler)
    return _wrap(filled, _store_array(store, "d8", tiles, grid, np.uint8), 255, "d8")


def _check_d8(d8: xr.DataArray):
    _check_2d(d8, "the D8 grid")
    if d8.dtype != np.uint8:
        raise InputDataError(f"D8 grid must be uint8 ESRI codes, got {d8.dtype}",
                             fix="use the output of flow_directions_d8")


def _checked_d8_reader(d8: xr.DataArray, tiles) -> ArrayReader:
    """A block reader of ``d8`` after checking that every cell is an ESRI code, 0 or 255."""
    dreader = ArrayReader(d8.data)
    bad = sum(int(K.count_invalid_codes(np.ascontiguousarray(dreader.read(t.r0, t.r1, t.c0, t.c1))))
              for t in tiles)
    if bad:
        raise InputDataError(f"the D8 grid has {bad} cells that are not ESRI codes, 0 or 255",
                             fix="use ESRI D8 codes 1,2,4,...,128; 0 pit; 255 nodata")
    return dreader


def _weight_blocks(weights: xr.DataArray, d8: xr.DataArray):
    """``tile -> float64 block`` of a weight raster aligned to ``d8`` (NaN read as 0)."""
    _check_2d(weights, "the weights")
    if weights.shape != d8.shape:
        raise InputDataError(f"weights shape {weights.shape} differs from D8 {d8.shape}",
                             fix="align the weight raster to the D8 grid")
    wreader = ArrayReader(weights.data)

    def wfn(t):
        w = np.asarray(wreader.read(t.r0, t.r1, t.c0, t.c1), dtype=np.float64)
        return np.nan_to_num(w, nan=0.0)

    return wfn


def flow_accumulation(d8: xr.DataArray, weights: xr.DataArray | None = None, chunks=None,
                      scheduler=None) -> xr.DataArray:
    """Cells draining through each cell, itself included (int64, -1 = nodata); or the
    sum of ``weights`` over them (float64, NaN = nodata; NaN weights count as 0)."""
    _check_d8(d8)
    tiles, grid = tile_grid(d8.shape, _chunks_of(d8, chunks))
    dreader = _checked_d8_reader(d8, tiles)
    wfn = None if weights is None else _weight_blocks(weights, d8)
    return _acc_xr(d8, dreader, tiles, grid, scheduler, wfn)


def flow_accumulation_many(d8: xr.DataArray, weights: list[xr.DataArray], chunks=None,
                           scheduler=None) -> list[xr.DataArray]:
    """``[flow_accumulation(d8, w) for w in weights]``, bit for bit, in one tiled pass.

    The K weight rasters are accumulated together (Barnes 2017, one topological
    order per tile carrying K float64 sums), so the D8 grid is read, checked and
    ordered once instead of K times.
    """
    _check_d8(d8)
    if not weights:
        return []
    fns = [_weight_blocks(w, d8) for w in weights]

    def wfn(t):
        return np.stack([f(t) for f in fns])

    return _accumulate_layers(d8, wfn, len(fns), chunks, scheduler)


def flow_accumulation_of_classes(d8: xr.DataArray, classes: xr.DataArray, luts: np.ndarray, chunks=None,
                                 scheduler=None) -> list[xr.DataArray]:
    """``flow_accumulation_many(d8, [lut[classes] for lut in luts])`` (NaN read as 0), bit
    for bit, with each tile's K weight blocks made in one lookup of its class block.

    ``classes``: a uint8 class raster on the D8 grid; ``luts``: (K, 256) weights per
    class code. The weights come from the table, so they need no finiteness check
    and no K separate reads of their raster (on 5e7 cells the stacked and checked
    weight rasters of :func:`flow_accumulation_many` cost about 8 s of CPU).
    """
    _check_d8(d8)
    _check_2d(classes, "the class raster")
    if classes.shape != d8.shape:
        raise InputDataError(f"class raster shape {classes.shape} differs from D8 {d8.shape}",
                             fix="align the class raster to the D8 grid")
    table = np.nan_to_num(np.asarray(luts, dtype=np.float64), nan=0.0)
    if table.ndim != 2 or table.shape[1] != 256:
        raise ValueError(f"luts must be (K, 256), got {table.shape}")
    if table.shape[0] == 0:
        return []
    creader = ArrayReader(classes.data)

    def wfn(t):
        # np.take along the code axis gives a C-ordered (K, h, w) block; table[:, codes] would
        # give a (h, w, K)-strided one that the kernel's contiguous copy then re-orders
        # (1.8 s against 0.36 s for 3 x 4096 x 4096 cells)
        return np.take(table, np.asarray(creader.read(t.r0, t.r1, t.c0, t.c1), dtype=np.uint8), axis=1)

    return _accumulate_layers(d8, wfn, table.shape[0], chunks, scheduler)


def _accumulate_layers(d8: xr.DataArray, wfn, n: int, chunks, scheduler) -> list[xr.DataArray]:
    """The K = `n` float64 accumulations of the stacked weight blocks ``wfn(tile)``."""
    tiles, grid = tile_grid(d8.shape, _chunks_of(d8, chunks))
    dreader = _checked_d8_reader(d8, tiles)
    store = ChunkStore(prefix="pipeline-acc-")

    def sink(t, acc, nd):
        acc[:, nd] = np.nan
        for k in range(n):
            store.put(f"acc{k}", t, acc[k])

    _acc_engine(dreader, tiles, d8.shape[1], scheduler, wfn, sink, layers=n)
    return [_wrap(d8, _store_array(store, f"acc{k}", tiles, grid, np.float64), np.nan,
                  "accumulation") for k in range(n)]


def _acc_xr(d8, dreader, tiles, grid, scheduler, wfn, name="accumulation"):
    store = ChunkStore(prefix="pipeline-acc-")
    weighted = wfn is not None
    nodata = np.nan if weighted else ACC_NODATA

    def sink(t, acc, nd):
        acc[nd] = nodata
        store.put("acc", t, acc)

    _acc_engine(dreader, tiles, d8.shape[1], scheduler, wfn, sink)
    dtype = np.float64 if weighted else np.int64
    return _wrap(d8, _store_array(store, "acc", tiles, grid, dtype), nodata, name)


def upstream_area_km2(d8: xr.DataArray, chunks=None, scheduler=None) -> xr.DataArray:
    """Upstream area in km2 (float64, NaN = nodata), ellipsoidal cell areas on lon/lat grids."""
    _check_d8(d8)
    area = cell_area_rows_m2(d8.rio.crs, d8.rio.transform(), d8.shape[0]) / 1e6
    tiles, grid = tile_grid(d8.shape, _chunks_of(d8, chunks))

    def wfn(t):
        return np.repeat(area[t.r0:t.r1, None], t.c1 - t.c0, axis=1)

    out = _acc_xr(d8, ArrayReader(d8.data), tiles, grid, scheduler, wfn, "upstream_area_km2")
    out.attrs["units"] = "km2"
    return out


def slope_horn(dem: xr.DataArray) -> xr.DataArray:
    """Horn slope in degrees (float64, NaN = nodata); metres per row on geographic grids."""
    _check_2d(dem, "the DEM")
    dx, dy = cell_size_rows_m(dem.rio.crs, dem.rio.transform(), dem.shape[0])
    nd = _nodata_of(dem)
    z = dem.data if isinstance(dem.data, da.Array) else da.from_array(np.asarray(dem.data),
                                                                      chunks=dem.shape)
    z = z.astype(np.float64)
    if nd is not None and not (isinstance(nd, float) and math.isnan(nd)):
        z = da.where(z == nd, np.nan, z)

    row_starts = np.concatenate([[0], np.cumsum(z.chunks[0])])

    def block(zp, block_id=None):
        r0 = row_starts[block_id[0]]
        h = zp.shape[0] - 2
        return K.slope_horn(zp, dx[r0:r0 + h], dy[r0:r0 + h])

    zo = da.overlap.overlap(z, depth=1, boundary=np.nan)
    s = da.map_blocks(block, zo, chunks=z.chunks, dtype=np.float64,
                      meta=np.array((), dtype=np.float64))
    out = _wrap(dem, s, np.nan, "slope_deg")
    out.attrs["units"] = "degree"
    return out


def depression_depth(dem: xr.DataArray, filled: xr.DataArray) -> xr.DataArray:
    """filled - dem (>= 0, float64, NaN = nodata)."""
    nd = _nodata_of(dem)
    z = dem.astype(np.float64)
    if nd is not None and not (isinstance(nd, float) and math.isnan(nd)):
        z = z.where(dem != nd)
    data = filled.astype(np.float64).data - z.data
    out = _wrap(dem, data, np.nan, "depression_depth")
    out.attrs["units"] = "m"
    return out


def stream_mask(upstream_area: xr.DataArray, threshold_km2: float = 1.0) -> xr.DataArray:
    """1 where upstream area >= threshold, 0 elsewhere, 255 nodata (uint8)."""
    a = upstream_area.data
    data = da.where(np.isnan(a), 255, (a >= threshold_km2).astype(np.uint8)).astype(np.uint8) \
        if isinstance(a, da.Array) else \
        np.where(np.isnan(a), 255, (a >= threshold_km2)).astype(np.uint8)
    return _wrap(upstream_area, data, 255, "streams")


def upstream_mask(d8: xr.DataArray, seed_mask: xr.DataArray) -> xr.DataArray:
    """Cells whose D8 path reaches a seed cell, seeds included (bool; whole grid in memory)."""
    _check_d8(d8)
    d = np.ascontiguousarray(np.asarray(d8.data if not isinstance(d8.data, da.Array)
                                        else d8.data.compute()))
    s = np.asarray(seed_mask.data.compute() if isinstance(seed_mask.data, da.Array)
                   else seed_mask.data).astype(bool)
    out = xr.DataArray(K.upstream_mask(d, np.ascontiguousarray(s)), coords=d8.coords,
                       dims=d8.dims, attrs={}, name="upstream_mask")
    if d8.rio.crs is not None:
        out = out.rio.write_crs(d8.rio.crs)
    return out


def basin_mask(d8: xr.DataArray, outlets) -> xr.DataArray:
    """All cells draining to the outlet cell(s): a list of (row, col) or a bool DataArray."""
    if isinstance(outlets, xr.DataArray):
        seed = outlets
    else:
        s = np.zeros(d8.shape, dtype=bool)
        for r, c in outlets:
            if not (0 <= r < d8.shape[0] and 0 <= c < d8.shape[1]):
                raise InputDataError(f"outlet cell ({r}, {c}) is outside the grid {d8.shape}",
                                     field="outlet", fix="give the outlet inside the basin grid")
            s[r, c] = True
        seed = xr.DataArray(s, dims=d8.dims)
    out = upstream_mask(d8, seed)
    return out.rename("basin_mask")


def downstream_path(d8: xr.DataArray, row: int, col: int) -> dict:
    """D8 path from (row, col) downstream: rows, cols and cumulative length in metres."""
    from pyproj import CRS, Geod

    _check_d8(d8)
    d = np.asarray(d8.data.compute() if isinstance(d8.data, da.Array) else d8.data)
    rows, cols, truncated = K.downstream_cells(np.ascontiguousarray(d), int(row), int(col), d.size)
    if truncated:
        raise InputDataError("the D8 path loops", fix="recompute flow directions")
    tr = d8.rio.transform()
    crs = _grid_info(d8.rio.crs, tr)
    x = tr.c + tr.a * (cols + 0.5)
    y = tr.f + tr.e * (rows + 0.5)
    pcrs = CRS.from_user_input(crs.to_wkt())
    if rows.size < 2:
        seg = np.zeros(0)
    elif pcrs.is_geographic:
        a, f = _ellipsoid(crs)
        _, _, seg = Geod(a=a, f=f).inv(x[:-1], y[:-1], x[1:], y[1:])
    else:
        unit = pcrs.axis_info[0].unit_conversion_factor if pcrs.axis_info else 1.0
        seg = np.hypot(np.diff(x), np.diff(y)) * unit
    length = np.concatenate([[0.0], np.cumsum(seg)])
    return {"rows": rows, "cols": cols, "length_m": length}


# =========================================================================== file API

def _out_paths(out_dir: Path) -> dict:
    return {"filled": out_dir / "filled.tif", "d8": out_dir / "d8.tif",
            "accumulation": out_dir / "accumulation.tif",
            "upstream_area_km2": out_dir / "upstream_area_km2.tif"}


class _Outputs:
    """Where the parallel passes of :func:`hydrology_to_files` hand their final tiles.

    With the local threaded (or synchronous) scheduler each task writes its
    tile into the GeoTIFF itself, while the tile is in memory, so compression
    overlaps the other worker's computing. Tasks in other processes (a dask
    cluster) cannot share a GDAL dataset: their tiles go to the store and are
    copied into the GeoTIFF here, in this process, by :meth:`flush`.
    """

    def __init__(self, writers: dict, store: ChunkStore, scheduler):
        self.writers = writers
        self.store = store
        self.in_process = scheduler in (None, "threads", "synchronous")

    def sink(self, name: str):
        if self.in_process:
            return self.writers[name].write
        store, key = self.store, f"out_{name}"      # not self: the writers do not pickle
        return lambda t, a: store.put(key, t, a)

    def flush(self, name: str, tiles) -> None:
        if not self.in_process:
            self.store.write_geotiff(f"out_{name}", tiles, self.writers[name])
            self.store.drop(f"out_{name}")


def hydrology_to_files(dem_path, out_dir, chunk_size: int = 2048, scheduler=None) -> dict:
    """DEM GeoTIFF -> filled.tif, d8.tif, accumulation.tif, upstream_area_km2.tif.

    Streams tile by tile (peak memory ~ a few chunk-sized arrays per worker).
    Accumulation is uint32 with nodata 0 (int64 with nodata -1 above 2**32 - 1
    cells). Float outputs use NaN as nodata. Each file is written to a
    temporary name and renamed into place at the end.
    """
    out_dir = Path(out_dir)
    src = RasterReader(dem_path)
    if src.profile.get("count", 1) != 1:
        log.warning("%s has %d bands; band 1 is used", dem_path, src.profile["count"])
    crs, tr = src.crs, src.transform
    _grid_info(crs, tr)
    shape = src.shape
    work = _work_dtype(src.dtype)
    tiles, grid = tile_grid(shape, chunk_size)
    paths = _out_paths(out_dir)
    acc_dtype, acc_nd = (np.uint32, 0) if shape[0] * shape[1] < 2 ** 32 - 1 else (np.int64, -1)
    writers = {
        "filled": TiledGeoTIFFWriter(paths["filled"], shape, work, crs, tr, np.nan),
        "d8": TiledGeoTIFFWriter(paths["d8"], shape, np.uint8, crs, tr, 255),
        "accumulation": TiledGeoTIFFWriter(paths["accumulation"], shape, acc_dtype, crs, tr, acc_nd),
        "upstream_area_km2": TiledGeoTIFFWriter(paths["upstream_area_km2"], shape, np.float32,
                                                crs, tr, np.nan),
    }
    store = ChunkStore(parent=out_dir, prefix=".hydro-tmp-")
    out = _Outputs(writers, store, scheduler)
    try:
        zreader = _FloatView(src, src.nodata, work)
        log.info("fill: %d x %d cells, %d tiles of %d", shape[0], shape[1], len(tiles), chunk_size)
        _fill_engine(zreader, tiles, store, scheduler, work, sink=out.sink("filled"))
        out.flush("filled", tiles)
        log.info("flow directions")
        freader = store.reader("filled", tiles, shape, work)
        _d8_engine(freader, tiles, shape[1], store, scheduler, sink=out.sink("d8"))
        out.flush("d8", tiles)
        store.drop("filled")
        log.info("flow accumulation")
        dreader = store.reader("d8", tiles, shape, np.uint8)
        area = cell_area_rows_m2(crs, tr, shape[0]) / 1e6
        geographic = not np.all(area == area[0])
        cell_km2 = float(area[0])

        acc_out, up_out = out.sink("accumulation"), out.sink("upstream_area_km2")

        def acc_sink(t, acc, nd):
            a = acc.astype(acc_dtype)
            a[nd] = acc_nd
            acc_out(t, a)
            if not geographic:
                up = (acc * cell_km2).astype(np.float32)
                up[nd] = np.nan
                up_out(t, up)

        _acc_engine(dreader, tiles, shape[1], scheduler, None, acc_sink)
        if geographic:
            def wfn(t):
                return np.repeat(area[t.r0:t.r1, None], t.c1 - t.c0, axis=1)

            def up_sink(t, acc, nd):
                up = acc.astype(np.float32)
                up[nd] = np.nan
                up_out(t, up)

            _acc_engine(dreader, tiles, shape[1], scheduler, wfn, up_sink)
        out.flush("accumulation", tiles)
        out.flush("upstream_area_km2", tiles)
        for w in writers.values():
            w.commit()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    finally:
        store.close()
    return paths


def accumulate_to_file(d8_path, out_path, chunk_size: int = 2048, scheduler=None) -> Path:
    """Accumulate a D8 GeoTIFF (ESRI codes, 255 nodata) into a cell-count GeoTIFF.

    Paths end at 0 codes, at the raster edge and where they enter nodata.
    """
    src = RasterReader(d8_path)
    if src.dtype != np.uint8:
        raise InputDataError(f"D8 raster must be uint8, got {src.dtype}", path=str(d8_path),
                             fix="use ESRI D8 codes stored as Byte")
    shape = src.shape
    tiles, _ = tile_grid(shape, chunk_size)
    bad = sum(int(K.count_invalid_codes(src.read(t.r0, t.r1, t.c0, t.c1))) for t in tiles)
    if bad:
        raise InputDataError(f"{bad} cells are not ESRI D8 codes, 0 or 255", path=str(d8_path),
                             fix="use ESRI D8 codes 1,2,4,...,128; 0 pit; 255 nodata")
    nd_in = src.nodata
    reader = src
    if nd_in is not None and nd_in != 255:
        log.warning("%s declares nodata %s; D8 nodata is taken as 255", d8_path, nd_in)
    acc_dtype, acc_nd = (np.uint32, 0) if shape[0] * shape[1] < 2 ** 32 - 1 else (np.int64, -1)
    writer = TiledGeoTIFFWriter(out_path, shape, acc_dtype, src.crs, src.transform, acc_nd)
    store = ChunkStore(parent=Path(out_path).parent, prefix=".acc-tmp-")

    def sink(t, acc, nd):
        a = acc.astype(acc_dtype)
        a[nd] = acc_nd
        store.put("acc", t, a)

    try:
        _acc_engine(reader, tiles, shape[1], scheduler, None, sink)
        store.write_geotiff("acc", tiles, writer)
        return writer.commit()
    except BaseException:
        writer.abort()
        raise
    finally:
        store.close()


__all__ = ["fill_depressions", "flow_directions_d8", "flow_accumulation", "flow_accumulation_many",
           "flow_accumulation_of_classes",
           "upstream_area_km2", "slope_horn", "depression_depth", "stream_mask", "basin_mask",
           "downstream_path", "upstream_mask", "hydrology_to_files", "accumulate_to_file",
           "cell_area_rows_m2", "cell_size_rows_m"]
