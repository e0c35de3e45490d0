"""xarray/dask wrappers for the land-cover kernels: tiled patch labelling, disk
shares, distance to features, upstream shares.

Every op keeps the input's coords, dims, attrs and rioxarray CRS, and gives the
same values for any chunking as on one array (tests/test_landcover*.py).

The chunk-local ops take an optional ``memo``: a callable ``memo(name, fn, blocks,
params)`` returning ``fn(*blocks)`` (pipeline.cache.BlockMemo serves it from earlier
runs by the content of the padded input blocks). Every block function is pure, so
a memoised run gives the same bytes as an unmemoised one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import dask
import dask.array as dsa
import numpy as np
import xarray as xr

from pipeline.errors import InputDataError
from pipeline.kernels import distance as kdist
from pipeline.kernels import focal as kfocal
from pipeline.kernels import patches as kpatch

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- helpers
def cell_size(da: xr.DataArray) -> tuple[float, float]:
    """(cell_y, cell_x) in CRS units (metres) from the rioxarray transform or coords."""
    try:
        t = da.rio.transform()
        cy, cx = abs(t.e), abs(t.a)
    except Exception:  # noqa: BLE001 - fall back to coordinate spacing
        cy = abs(float(da.y[1] - da.y[0])) if da.sizes["y"] > 1 else float("nan")
        cx = abs(float(da.x[1] - da.x[0])) if da.sizes["x"] > 1 else float("nan")
    crs = da.rio.crs if hasattr(da, "rio") else None
    if crs is not None and crs.is_geographic:
        raise InputDataError("land-cover grid is in a geographic CRS; distances and areas need metres",
                             field="grid.crs", fix="align the inputs to a projected metre CRS (e.g. UTM)")
    if not (np.isfinite(cy) and np.isfinite(cx)) or cy <= 0 or cx <= 0:
        raise InputDataError("cannot determine the cell size of the land-cover grid", field="grid",
                             fix="write a transform with rioxarray (da.rio.write_transform)")
    return cy, cx


def _as_dask(data) -> dsa.Array:
    return data if isinstance(data, dsa.Array) else dsa.from_array(np.asarray(data), chunks=-1)


def _min_chunks(chunks: tuple[int, ...], minimum: int) -> tuple[int, ...]:
    """Merge neighbouring chunks so that none is smaller than ``minimum`` (unless the axis is)."""
    if minimum <= 0 or all(c >= minimum for c in chunks):
        return tuple(chunks)
    out: list[int] = []
    acc = 0
    for c in chunks:
        acc += c
        if acc >= minimum:
            out.append(acc)
            acc = 0
    if acc:
        if out:
            out[-1] += acc
        else:
            out.append(acc)
    return tuple(out)


def _like(template: xr.DataArray, data, name: str, nodata) -> xr.DataArray:
    out = xr.DataArray(data, coords=template.coords, dims=template.dims, attrs=dict(template.attrs), name=name)
    out.attrs.pop("_FillValue", None)
    out.attrs.pop("landcover_scheme", None)
    if hasattr(out, "rio"):
        if template.rio.crs is not None:
            out = out.rio.write_crs(template.rio.crs)
        out = out.rio.write_nodata(nodata, encoded=False)
    return out


def _memoised(memo, name: str, fn, params: dict):
    """``fn`` itself without a memo, else a function of the same blocks served by ``memo``."""
    if memo is None:
        return fn

    def call(*blocks):
        return memo(name, fn, blocks, params)

    return call


def _overlap(data: dsa.Array, depth_y: int, depth_x: int) -> tuple[dsa.Array, tuple]:
    """Float64 array with a NaN halo of (depth_y, depth_x); chunks never smaller than the depth."""
    # cast before padding: NaN halo needs a float dtype
    return _overlap_filled(data.astype(np.float64), depth_y, depth_x, np.nan)


def _overlap_filled(data: dsa.Array, depth_y: int, depth_x: int, fill) -> tuple[dsa.Array, tuple]:
    """``data`` with a halo of (depth_y, depth_x) cells holding ``fill``; chunks never smaller
    than the depth. Returns the padded array and the chunks of the unpadded one."""
    if data.shape[0] < depth_y or data.shape[1] < depth_x:
        # the whole array is smaller than the halo: one chunk, padded directly
        one = data.rechunk(-1)
        padded = dsa.pad(one, ((depth_y, depth_y), (depth_x, depth_x)), mode="constant",
                         constant_values=fill).rechunk(-1)
        return padded, one.chunks
    chunks = (_min_chunks(data.chunks[0], depth_y), _min_chunks(data.chunks[1], depth_x))
    if chunks != data.chunks:
        data = data.rechunk(chunks)
    padded = dsa.overlap.overlap(data, depth={0: depth_y, 1: depth_x}, boundary={0: fill, 1: fill})
    return padded, chunks


# --------------------------------------------------------------------------- disk shares
def disk_share(values: xr.DataArray, radius_m: float, name: str = "share",
               mask_center: bool = True, memo=None) -> xr.DataArray:
    """Mean of ``values`` (e.g. a 0/1 class indicator, NaN = nodata) over a disk of
    ``radius_m`` around each cell; NaN cells excluded from numerator and denominator.

    Equals ``convolve(nan_to_num(v), disk) / convolve(valid, disk)`` (scipy.ndimage,
    zero padding) with the disk of cells whose centres lie within ``radius_m``.
    """
    cy, cx = cell_size(values)
    hw = kfocal.disk_half_widths(radius_m, cy, cx)
    dy, dx = (hw.shape[0] - 1) // 2, int(hw.max())
    padded, chunks = _overlap(_as_dask(values.data), dy, dx)

    def block(p):
        return kfocal.disk_share(p, hw, dy, dx, mask_center).astype(np.float32)

    fn = _memoised(memo, "focal.disk_share/f32", block,
                   {"half_widths": hw.tolist(), "dy": dy, "dx": dx, "mask_center": bool(mask_center)})
    out = padded.map_blocks(fn, chunks=chunks, dtype=np.float32, meta=np.empty((0, 0), np.float32))
    return _like(values, out, name, np.nan)


def disk_shares(codes: xr.DataArray, tables: np.ndarray, radius_m: float, names: list[str],
                mask_center: bool = True, memo=None) -> list[xr.DataArray]:
    """``[disk_share(tables[k][codes], radius_m, names[k]) for k]``, bit for bit, in one pass.

    ``codes`` is a uint8 class raster, ``tables`` (K, 256) the value of each code for
    share k (NaN = nodata for that share; e.g. CanonicalTable.lut). The padded class
    block is read and reclassified once for the K shares (pipeline.kernels.focal
    .disk_shares_coded) and the count sums are shared by tables with the same NaN
    codes. The K DataArrays are slices of one (K, y, x) dask array: computed
    together, every block runs the kernel once.
    """
    tabs = np.ascontiguousarray(np.asarray(tables, dtype=np.float64).reshape(-1, 256))
    if len(names) != tabs.shape[0]:
        raise ValueError(f"{len(names)} names for {tabs.shape[0]} tables")
    empty = np.flatnonzero(np.isnan(tabs).all(axis=0))
    if empty.size == 0:
        raise ValueError("disk_shares needs a code that is NaN in every table (it fills the halo)")
    fill = int(empty[-1])
    cy, cx = cell_size(codes)
    hw = kfocal.disk_half_widths(radius_m, cy, cx)
    dy, dx = (hw.shape[0] - 1) // 2, int(hw.max())
    group = kfocal.count_groups(tabs)
    padded, chunks = _overlap_filled(_as_dask(codes.data).astype(np.uint8), dy, dx, np.uint8(fill))

    def block(p):
        return kfocal.disk_shares_coded(p, tabs, group, hw, dy, dx, mask_center)

    fn = _memoised(memo, "focal.disk_shares_coded/f32", block,
                   {"tables": tabs, "half_widths": hw.tolist(), "dy": dy, "dx": dx,
                    "mask_center": bool(mask_center)})
    k = tabs.shape[0]
    stack = padded.map_blocks(fn, chunks=((k,),) + tuple(chunks), new_axis=0, dtype=np.float32,
                              meta=np.empty((0, 0, 0), np.float32))
    return [_like(codes, stack[i], name, np.nan) for i, name in enumerate(names)]


# --------------------------------------------------------------------------- distance
def _edt_block(padded, dy, dx, cy, cx, cap, valid):
    feat = ~np.isnan(padded) & (padded != 0)
    d = kdist.edt(feat, cy, cx)[dy: padded.shape[0] - dy, dx: padded.shape[1] - dx]
    d = np.minimum(d, cap)
    if valid is not None:
        d[~valid] = np.nan
    return d.astype(np.float32)


def distance_to(features: xr.DataArray, max_distance_m: float, valid: xr.DataArray | None = None,
                name: str = "distance_m", memo=None) -> xr.DataArray:
    """Exact Euclidean distance (m) to the nearest nonzero cell of ``features``, capped.

    Tiled with a halo of ceil(max_distance_m / cell) cells: every feature within
    ``max_distance_m`` of a cell lies in its padded chunk, so ``min(d, max_distance_m)``
    equals ``min(edt, max_distance_m)`` of the whole array (scipy.ndimage
    .distance_transform_edt) for any chunking; farther cells hold the cap value.
    ``valid`` (bool) sets NaN outside the basin.
    """
    cy, cx = cell_size(features)
    dy = int(np.ceil(max_distance_m / cy - 1e-9))
    dx = int(np.ceil(max_distance_m / cx - 1e-9))
    padded, chunks = _overlap(_as_dask(features.data), dy, dx)
    params = {"dy": dy, "dx": dx, "cy": cy, "cx": cx, "cap": float(max_distance_m)}
    if valid is not None:
        v = _as_dask(valid.data).astype(bool).rechunk(chunks)
        fn = _memoised(memo, "distance.edt_block/valid",
                       lambda p, m: _edt_block(p, dy, dx, cy, cx, max_distance_m, m), params)
        out = dsa.map_blocks(fn, padded, v, chunks=chunks, dtype=np.float32,
                             meta=np.empty((0, 0), np.float32))
    else:
        fn = _memoised(memo, "distance.edt_block",
                       lambda p: _edt_block(p, dy, dx, cy, cx, max_distance_m, None), params)
        out = padded.map_blocks(fn, chunks=chunks, dtype=np.float32, meta=np.empty((0, 0), np.float32))
    res = _like(features, out, name, np.nan)
    res.attrs["distance_cap_m"] = float(max_distance_m)
    return res


# --------------------------------------------------------------------------- patch labelling
@dataclass
class Patches:
    """Result of :func:`label_patches`."""

    labels: xr.DataArray      # int32, 0 = not in a patch, ids 1..n
    cells: np.ndarray         # int64 [n + 1]: cell count per id (index 0 unused)
    first_index: np.ndarray   # int64 [n + 1]: row-major index of each patch's first cell

    @property
    def n(self) -> int:
        return int(self.cells.shape[0] - 1)


def _block_summary(block, row0, col0, ncols):
    m = np.asarray(block)
    m = (~np.isnan(m) & (m != 0)) if m.dtype.kind == "f" else (m != 0)
    lab, n = kpatch.label_block(m.view(np.uint8) if m.dtype == np.bool_ else m.astype(np.uint8))
    counts, first = kpatch.label_counts_first(lab, n, row0, col0, ncols)
    return dict(n=n, counts=counts, first=first, top=lab[0].copy(), bottom=lab[-1].copy(),
                left=lab[:, 0].copy(), right=lab[:, -1].copy())


def _relabel_block(block, lut):
    m = np.asarray(block)
    m = (~np.isnan(m) & (m != 0)) if m.dtype.kind == "f" else (m != 0)
    lab, _ = kpatch.label_block(m.view(np.uint8) if m.dtype == np.bool_ else m.astype(np.uint8))
    return kpatch.apply_lut(lab, lut, np.empty(lab.shape, np.int32))


def label_patches(mask: xr.DataArray, memo=None) -> Patches:
    """8-connected components of ``mask`` (nonzero, non-NaN = in a patch), across chunks.

    1. each chunk labelled by :func:`pipeline.kernels.patches.label_block` (chunk
       summaries: counts, first cells, edge strips - computed in one dask pass);
    2. seams (edges and the diagonal corners of the chunk grid) joined centrally
       with a union-find over the chunks' labels;
    3. one relabel pass (the chunk is labelled again and mapped through its lookup).
    Final ids are numbered by each patch's first cell in row-major order, so any
    chunking gives identical labels, equal to ``scipy.ndimage.label(mask,
    structure=ones((3, 3)))``.
    """
    data = _as_dask(mask.data)
    ncols = data.shape[1]
    yoff = np.concatenate([[0], np.cumsum(data.chunks[0])])
    xoff = np.concatenate([[0], np.cumsum(data.chunks[1])])
    blocks = data.to_delayed()
    nby, nbx = blocks.shape

    def summary(block, row0, col0):
        fn = _memoised(memo, "patches.block_summary", lambda b: _block_summary(b, row0, col0, ncols),
                       {"row0": row0, "col0": col0, "ncols": int(ncols)})
        return fn(block)

    tasks = [dask.delayed(summary)(blocks[i, j], int(yoff[i]), int(xoff[j]))
             for i in range(nby) for j in range(nbx)]
    summ = dask.compute(*tasks)
    S = [[summ[i * nbx + j] for j in range(nbx)] for i in range(nby)]
    # global piece id = offset of the chunk + local label (0 stays background)
    offs = np.zeros((nby, nbx), np.int64)
    total = 0
    for i in range(nby):
        for j in range(nbx):
            offs[i, j] = total
            total += S[i][j]["n"]

    def gid(i, j, strip):
        s = S[i][j][strip].astype(np.int64)
        return np.where(s > 0, s + offs[i, j], 0)

    pa, pb = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for i in range(nby):
        for j in range(nbx):
            if j + 1 < nbx:   # vertical seam: right column | left column of the east chunk
                a, b = kpatch.seam_pairs(gid(i, j, "right"), gid(i, j + 1, "left"))
                pa.append(a), pb.append(b)
            if i + 1 < nby:   # horizontal seam: bottom row / top row of the south chunk
                a, b = kpatch.seam_pairs(gid(i, j, "bottom"), gid(i + 1, j, "top"))
                pa.append(a), pb.append(b)
            if i + 1 < nby and j + 1 < nbx:   # the two diagonals at a chunk corner
                a, b = gid(i, j, "bottom")[-1], gid(i + 1, j + 1, "top")[0]
                if a and b:
                    pa.append(np.array([a])), pb.append(np.array([b]))
                a, b = gid(i, j + 1, "bottom")[0], gid(i + 1, j, "top")[-1]
                if a and b:
                    pa.append(np.array([a])), pb.append(np.array([b]))
    root = kpatch.union_pairs(total + 1, np.concatenate(pa), np.concatenate(pb))
    first = np.full(total + 1, np.iinfo(np.int64).max, np.int64)
    counts = np.zeros(total + 1, np.int64)
    for i in range(nby):
        for j in range(nbx):
            n = S[i][j]["n"]
            if n:
                first[offs[i, j] + 1: offs[i, j] + n + 1] = S[i][j]["first"][1:]
                counts[offs[i, j] + 1: offs[i, j] + n + 1] = S[i][j]["counts"][1:]
    # component key = smallest first-cell index of its pieces
    comp_first = np.full(total + 1, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(comp_first, root[1:], first[1:])
    roots = np.unique(root[1:])
    order = np.argsort(comp_first[roots], kind="stable")
    final_of_root = np.zeros(total + 1, np.int32)
    final_of_root[roots[order]] = np.arange(1, roots.size + 1, dtype=np.int32)
    final = final_of_root[root]
    final[0] = 0
    n_final = int(roots.size)
    cells = np.bincount(final[1:], weights=counts[1:], minlength=n_final + 1).astype(np.int64)
    cells[0] = 0
    first_final = np.full(n_final + 1, -1, np.int64)
    first_final[1:] = comp_first[roots[order]]
    luts = {(i, j): final[offs[i, j]: offs[i, j] + S[i][j]["n"] + 1].copy() for i in range(nby) for j in range(nbx)}
    for lut in luts.values():
        lut[0] = 0

    relabel_fn = _memoised(memo, "patches.relabel_block", _relabel_block, {})

    def relabel(block, block_info=None):
        loc = tuple(block_info[0]["chunk-location"])
        return relabel_fn(block, luts[loc])

    labels = data.map_blocks(relabel, dtype=np.int32, meta=np.empty((0, 0), np.int32))
    log.debug("labelled %d patches from %d chunk pieces over %d x %d chunks", n_final, total, nby, nbx)
    return Patches(labels=_like(mask, labels, "patch_id", 0), cells=cells, first_index=first_final)


def lookup(labels: xr.DataArray, table: np.ndarray, name: str, nodata=np.nan) -> xr.DataArray:
    """Per-cell value ``table[label]`` (table[0] is the background value)."""
    tab = np.asarray(table)
    out = _as_dask(labels.data).map_blocks(lambda b: tab[b], dtype=tab.dtype, meta=np.empty((0, 0), tab.dtype))
    return _like(labels, out, name, nodata)


# --------------------------------------------------------------------------- upstream shares
def upstream_share(d8: xr.DataArray, weights: xr.DataArray, name: str,
                   accumulation: xr.DataArray | None = None) -> xr.DataArray:
    """Share of ``weights`` (0..1 per cell, NaN = nodata) in each cell's contributing area.

    share = flow_accumulation(d8, w) / flow_accumulation(d8, valid), where cells with
    nodata land cover count in neither (w = 0, valid = 0). When the land cover has no
    nodata inside the D8 grid, the denominator equals the plain ``accumulation``
    (passed in) and no second accumulation is run.
    """
    return upstream_shares(d8, [weights], [name], accumulation)[0]


def upstream_shares(d8: xr.DataArray, weights: list[xr.DataArray], names: list[str],
                    accumulation: xr.DataArray | None = None) -> list[xr.DataArray]:
    """``[upstream_share(d8, w, name, accumulation) for w, name]``, bit for bit, with one
    accumulation pass (pipeline.ops.hydrology.flow_accumulation_many) for every
    numerator and every denominator that is needed, and one pass over the weights
    to find which are (nodata land cover inside the D8 grid)."""
    from pipeline.ops.hydrology import flow_accumulation_many

    d8valid = d8 != 255
    if accumulation is None:
        missing = [True] * len(weights)
    else:
        missing = [bool(m) for m in dask.compute(*[(w.isnull() & d8valid).any().data for w in weights])]
    own_den = [w.notnull().astype(np.float64) for w, m in zip(weights, missing) if m]
    accs = flow_accumulation_many(d8, [w.fillna(0.0).astype(np.float64) for w in weights] + own_den)
    dens = iter(accs[len(weights):])
    out = []
    for w, name, num, m in zip(weights, names, accs, missing):
        den = next(dens) if m else accumulation
        share = (num / den.where(den > 0)).where(d8valid & w.notnull())
        out.append(_like(w, share.data.astype(np.float32), name, np.nan))
    return out


def upstream_shares_of_classes(d8: xr.DataArray, classes: xr.DataArray, luts: np.ndarray, names: list[str],
                               accumulation: xr.DataArray | None = None) -> list[xr.DataArray]:
    """``upstream_shares(d8, [lut[classes] for lut in luts], names, accumulation)``, bit for
    bit, with the weights looked up per tile from the uint8 ``classes`` raster.

    ``luts``: (K, 256) float32 weights per class code, NaN where a code has no value
    (nodata 255 and unused codes), as :meth:`pipeline.io.classes.CanonicalTable.lut`.
    The weight rasters are never materialised: one pass over ``classes`` finds the
    codes present inside the D8 grid (which layers need their own denominator), and the
    accumulation looks up all K layers of a tile at once
    (:func:`pipeline.ops.hydrology.flow_accumulation_of_classes`).
    """
    from pipeline.ops.hydrology import flow_accumulation_of_classes

    luts = np.asarray(luts, dtype=np.float32)
    if luts.ndim != 2 or luts.shape[1] != 256 or luts.shape[0] != len(names):
        raise ValueError(f"luts must be ({len(names)}, 256), got {luts.shape}")
    d8valid = d8 != 255
    known = ~np.isnan(luts)                              # (K, 256): the weight is not NaN
    if accumulation is None:
        missing = [True] * len(names)
    else:
        present = _codes_present(classes, d8valid)
        missing = [bool((~known[k][present]).any()) for k in range(len(names))]
    dens = [known[k].astype(np.float64) for k, m in enumerate(missing) if m]
    accs = flow_accumulation_of_classes(d8, classes, np.vstack([luts.astype(np.float64), *dens]))
    own = iter(accs[len(names):])
    out = []
    for k, (name, num, m) in enumerate(zip(names, accs, missing)):
        den = next(own) if m else accumulation
        ok = known[k]
        has = _like(classes, _as_dask(classes.data).map_blocks(lambda b, ok=ok: ok[b], dtype=bool,
                                                               meta=np.empty((0, 0), bool)), name, None)
        share = (num / den.where(den > 0)).where(d8valid & has)
        out.append(_like(classes, share.data.astype(np.float32), name, np.nan))
    return out


def _codes_present(classes: xr.DataArray, where: xr.DataArray) -> np.ndarray:
    """The uint8 codes of ``classes`` at cells where ``where`` is true (one pass, per block)."""
    def block(c, w):
        return (np.bincount(c[w].ravel(), minlength=256) > 0)[None, None, :]

    c = _as_dask(classes.data)
    flags = dsa.map_blocks(block, c, _as_dask(where.data).rechunk(c.chunks), new_axis=2,
                           chunks=(1, 1, 256), dtype=bool, meta=np.empty((0, 0, 0), bool))
    # numblocks x numblocks x 256 flags -> any over blocks
    return np.nonzero(flags.any(axis=(0, 1)).compute())[0]
