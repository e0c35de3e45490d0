"""Basin-wide land-cover indicator rasters of one vintage (METHOD.md §5.2-5.5).

:func:`compute_landscape_indicators` writes, tile by tile, one COG per indicator:

=========================== ======= ===========================================================
name                        dtype   meaning (nodata)
=========================== ======= ===========================================================
canonical                   uint8   canonical class code (255)
natural                     uint8   1 natural cover, 0 not (255)
upstream_intensive_share    float32 cropland + built-up share of the contributing area (NaN)
upstream_impervious_share   float32 impervious share of the contributing area (NaN)
upstream_pollutant_share    float32 pollutant-generating share of the contributing area (NaN)
patch_id                    int32   natural patch id 1..n, numbered by first cell (0)
patch_area_ha               float32 area of the cell's natural patch (NaN off patches)
patch_dpc                   float32 dPC (%) of the cell's patch (NaN off patches)
dist_to_stream_m            float32 distance to the nearest stream cell, capped (NaN)
riparian_natural_share      float32 at stream cells: natural share within riparian_buffer_m (NaN)
local_natural_share         float32 natural share within landscape_buffer_m (NaN)
local_intensive_share       float32 intensive share within landscape_buffer_m (NaN)
local_undisturbed_share     float32 undisturbed share within landscape_buffer_m (NaN)
=========================== ======= ===========================================================

Plus ``patches.csv`` (patch_id, area_ha, component, dpc and its parts) and
``connectivity.json`` (PC, ECA, basin area, counts).

Parameters (``params``; defaults in :data:`DEFAULTS`):
``dispersal_distance_m`` 1000, ``connectivity_p_min`` 1e-6, ``connectivity_max_work`` 2.5e9
(see pipeline.indicators.connectivity), ``riparian_buffer_m`` 100,
``landscape_buffer_m`` 1000, ``stream_distance_max_m`` (cap of dist_to_stream_m and the
halo of its tiles; default max(riparian_buffer_m, landscape_buffer_m)).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from pathlib import Path

import dask
import numpy as np
import rasterio
import xarray as xr
from rasterio.shutil import copy as rio_copy
from rasterio.windows import Window

from pipeline.errors import ConfigError, OutputError
from pipeline.indicators.catalog import CLASS_NODATA
from pipeline.indicators.connectivity import compute_connectivity
from pipeline.io.classes import CanonicalTable, attribute_raster, load_canonical
from pipeline.io.rasters import OverviewLevels, cog_blocksize, cog_with_levels
from pipeline.ops import landcover as ops

log = logging.getLogger(__name__)

DEFAULTS: dict[str, float] = {
    "dispersal_distance_m": 1000.0,
    "connectivity_p_min": 1e-6,
    "connectivity_max_work": 2.5e9,
    "riparian_buffer_m": 100.0,
    "landscape_buffer_m": 1000.0,
}

# temporary GeoTIFFs up to this size are written uncompressed (see _open_part)
TMP_UNCOMPRESSED_BYTES = 2 * 2**30

NAMES: tuple[str, ...] = (
    "canonical", "natural", "upstream_intensive_share", "upstream_impervious_share",
    "upstream_pollutant_share", "patch_id", "patch_area_ha", "patch_dpc", "dist_to_stream_m",
    "riparian_natural_share", "local_natural_share", "local_intensive_share", "local_undisturbed_share",
)


class LandscapeOutputs(dict):
    """``{name: Path}`` of the written rasters, plus the patch table and basin indices."""

    def __init__(self, paths: dict, patch_table, pc: float, eca_ha: float, landscape_area_ha: float):
        super().__init__(paths)
        self.patch_table = patch_table
        self.pc = pc
        self.eca_ha = eca_ha
        self.landscape_area_ha = landscape_area_ha


def resolve_params(params: dict | None) -> dict[str, float]:
    """Defaults + ``params``; every problem reported as a ConfigError naming the field."""
    p = dict(DEFAULTS)
    p.update({k: v for k, v in (params or {}).items() if k in DEFAULTS or k == "stream_distance_max_m"})
    p.setdefault("stream_distance_max_m", max(p["riparian_buffer_m"], p["landscape_buffer_m"]))
    for k in ("dispersal_distance_m", "riparian_buffer_m", "landscape_buffer_m", "stream_distance_max_m"):
        if not (isinstance(p[k], (int, float)) and math.isfinite(p[k]) and p[k] > 0):
            raise ConfigError(f"{k} must be a positive number of metres, got {p[k]!r}", field=k)
    if not (0 <= p["connectivity_p_min"] < 0.5):
        raise ConfigError(f"connectivity_p_min must be in [0, 0.5), got {p['connectivity_p_min']!r}",
                          field="connectivity_p_min", fix="use e.g. 1e-6 (0 = no cut-off)")
    if p["stream_distance_max_m"] < p["riparian_buffer_m"]:
        raise ConfigError("stream_distance_max_m must be >= riparian_buffer_m", field="stream_distance_max_m")
    return p


# --------------------------------------------------------------------------- the indicators (lazy)
def landscape_rasters(canonical: xr.DataArray, d8: xr.DataArray | None, accumulation: xr.DataArray | None,
                      streams: xr.DataArray | None, params: dict | None = None,
                      table: CanonicalTable | None = None, memo=None) -> tuple[dict[str, xr.DataArray], object]:
    """The indicator DataArrays (dask-lazy except the patch graph) and the connectivity result.

    ``memo`` (pipeline.cache.BlockMemo, or None) serves the chunk-local block functions
    (patch labelling passes, distance to streams, disk shares) from earlier runs.
    """
    p = resolve_params(params)
    table = table or load_canonical()
    cy, cx = ops.cell_size(canonical)
    valid = canonical != CLASS_NODATA
    out: dict[str, xr.DataArray] = {"canonical": canonical}
    natural = attribute_raster(canonical, "natural", table)
    out["natural"] = ops._like(canonical, natural.fillna(CLASS_NODATA).astype(np.uint8).data, "natural",
                               CLASS_NODATA)
    if d8 is not None:
        names = ("upstream_intensive_share", "upstream_impervious_share", "upstream_pollutant_share")
        luts = np.stack([table.lut(attr) for attr in ("intensive", "impervious", "pollutant")])
        out.update(zip(names, ops.upstream_shares_of_classes(d8, canonical, luts, list(names), accumulation)))
    # patches and connectivity
    patches = ops.label_patches(natural, memo=memo)
    landscape_ha = float(valid.sum().compute()) * cy * cx / 1e4
    conn = compute_connectivity(patches.labels, patches.cells, cy, cx, landscape_ha,
                                p["dispersal_distance_m"], p["connectivity_p_min"],
                                max_work=p["connectivity_max_work"])
    out["patch_id"] = patches.labels
    area = np.concatenate([[np.nan], conn.table["area_ha"].to_numpy()]).astype(np.float32)
    dpc = np.concatenate([[np.nan], conn.table["dpc"].to_numpy()]).astype(np.float32)
    out["patch_area_ha"] = ops.lookup(patches.labels, area, "patch_area_ha")
    out["patch_dpc"] = ops.lookup(patches.labels, dpc, "patch_dpc")
    # streams
    if streams is not None:
        st = streams.fillna(0).astype(np.uint8) if streams.dtype.kind == "f" else streams.astype(np.uint8)
        out["dist_to_stream_m"] = ops.distance_to(st, p["stream_distance_max_m"], valid=valid,
                                                  name="dist_to_stream_m", memo=memo)
        rip = ops.disk_share(natural, p["riparian_buffer_m"], "riparian_natural_share", memo=memo)
        out["riparian_natural_share"] = rip.where(st.astype(bool))
        out["riparian_natural_share"].attrs = rip.attrs
    # local shares: one pass over the class raster for the three (same disk)
    names = ("local_natural_share", "local_intensive_share", "local_undisturbed_share")
    luts = np.stack([table.lut(attr) for attr in ("natural", "intensive", "undisturbed")])
    out.update(zip(names, ops.disk_shares(canonical, luts, p["landscape_buffer_m"], list(names), memo=memo)))
    return out, conn


def compute_landscape_indicators(landcover_canonical: xr.DataArray, d8: xr.DataArray, accumulation: xr.DataArray,
                                 streams: xr.DataArray, params: dict, out_dir: Path,
                                 memo=None) -> LandscapeOutputs:
    """Write every indicator of :data:`NAMES` as ``out_dir/<name>.tif`` (COG); see the module doc.

    ``memo``: see :func:`landscape_rasters` (the files are the same with or without it).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rasters, conn = landscape_rasters(landcover_canonical, d8, accumulation, streams, params, memo=memo)
    paths: dict[str, Path] = {}
    groups = _write_groups(rasters)
    with CogWriter() as writer:
        for group in groups:
            das = [rasters[name] for name in group]
            nodatas = [{np.dtype(np.uint8): CLASS_NODATA, np.dtype(np.int32): 0}.get(np.dtype(da.dtype), np.nan)
                       for da in das]
            writer.write(das, [out_dir / f"{name}.tif" for name in group], nodatas, landcover_canonical)
        written = writer.wait()
    for group, group_paths in zip(groups, written):
        for name, path in zip(group, group_paths):
            paths[name] = path
            log.info("wrote %s", path)
    tab_path = out_dir / "patches.csv"
    _atomic_text(tab_path, conn.table.to_csv(index=False))
    summary = {"pc": conn.pc, "eca_ha": conn.eca_ha, "landscape_area_ha": conn.landscape_area_ha,
               "n_patches": int(len(conn.table)), "n_edges": conn.n_edges,
               "params": resolve_params(params)}
    _atomic_text(out_dir / "connectivity.json", json.dumps(summary, indent=2))
    paths["patch_table"] = tab_path
    paths["connectivity_summary"] = out_dir / "connectivity.json"
    return LandscapeOutputs(paths, conn.table, conn.pc, conn.eca_ha, conn.landscape_area_ha)


# --------------------------------------------------------------------------- writing
# rasters that share most of their work, written from one computation per row of chunks:
# the three local shares come from one kernel call per block, the patch rasters from one relabel
SHARED_WORK: tuple[tuple[str, ...], ...] = (
    ("patch_id", "patch_area_ha", "patch_dpc"),
    ("local_natural_share", "local_intensive_share", "local_undisturbed_share"),
)


def _write_groups(rasters: dict) -> list[tuple[str, ...]]:
    """The rasters of :data:`NAMES` present in ``rasters``, in order, grouped by :data:`SHARED_WORK`."""
    groups: list[tuple[str, ...]] = []
    for name in NAMES:
        if name not in rasters or any(name in g for g in groups):
            continue
        shared = next((g for g in SHARED_WORK if name in g), (name,))
        groups.append(tuple(n for n in shared if n in rasters))
    return groups


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path.name}: {exc}", path=path) from None


def write_cog_tiled(da: xr.DataArray, path: Path, nodata, grid: xr.DataArray | None = None) -> Path:
    """Write a (dask) DataArray as a COG (DEFLATE, overviews, nodata, CRS) atomically;
    :func:`write_cogs_tiled` of one raster."""
    return write_cogs_tiled([da], [path], [nodata], grid)[0]


def write_cogs_tiled(das: list[xr.DataArray], paths: list[Path], nodatas: list,
                     grid: xr.DataArray | None = None) -> list[Path]:
    """Write K (dask) DataArrays of one grid as COGs (DEFLATE, overviews, nodata, CRS) atomically.

    Each row of chunks is computed for the K rasters in one dask computation (work
    they share, e.g. one kernel call for several outputs or one read of their
    input, is done once) into K tiled temporary GeoTIFFs, which GDAL's COG driver
    then copies; each result replaces its path with ``os.replace``. Overviews: a float
    raster's levels are averaged from each row as it is written
    (pipeline.io.rasters.OverviewLevels; GDAL would read the raster again to do it);
    integer rasters get GDAL's nearest. :class:`CogWriter` does the same for several
    groups, each group's COG copies overlapping the next group's rows.
    """
    return _finish(_stage(das, paths, nodatas, grid))


class CogWriter:
    """Groups of rasters written as by :func:`write_cogs_tiled`, the GDAL COG copies of one
    group in a background thread while the caller computes the next group's rows.

    The copies (GDAL, without the GIL) use the CPU time the row computations leave
    idle: reading memoised blocks, Python between dask tasks. The files are the same
    bytes as written one group after the other (compression is per block)::

        with CogWriter() as writer:
            for das, paths, nodatas in groups:
                writer.write(das, paths, nodatas, grid)
            written = writer.wait()        # the paths of each group, in order

    An error of a copy is raised by :meth:`wait` (or the next :meth:`write`) as the
    OutputError it is; leaving the block on any error waits for the copy under way,
    drops the groups not yet copied and removes their temporary files.
    """

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cog-copy")
        self._jobs: list[tuple[object, _Staged]] = []

    def write(self, das: list[xr.DataArray], paths: list[Path], nodatas: list,
              grid: xr.DataArray | None = None) -> None:
        for future, _ in self._jobs:
            if future.done() and future.exception() is not None:
                raise future.exception()
        staged = _stage(das, paths, nodatas, grid)
        self._jobs.append((self._pool.submit(_finish, staged), staged))

    def wait(self) -> list[list[Path]]:
        return [future.result() for future, _ in self._jobs]

    def __enter__(self) -> "CogWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            for future, staged in self._jobs:
                if future.cancel():
                    staged.discard()
        self._pool.shutdown(wait=True)


class _Staged:
    """The temporary GeoTIFFs of one group of rasters, their overview levels and final paths."""

    def __init__(self, paths: list[Path], block: int) -> None:
        pid = os.getpid()
        self.paths = paths
        self.block = block
        self.parts = [p.with_name(f".{p.stem}.{pid}.part.tif") for p in paths]
        self.cogs = [p.with_name(f".{p.stem}.{pid}.cog.tif") for p in paths]
        self.pyramids: list[OverviewLevels | None] = []
        self.levels: list[list[Path] | None] = [None] * len(paths)

    def discard(self) -> None:
        for p in self.parts + self.cogs:
            p.unlink(missing_ok=True)
        for pyr in self.pyramids:
            if pyr is not None:
                pyr.discard()

    def error(self, exc: Exception) -> OutputError:
        names = ", ".join(p.name for p in self.paths)
        return OutputError(f"cannot write {names}: {exc}", path=self.paths[0],
                           fix="check free disk space and write permission of the output folder")


def _stage(das: list[xr.DataArray], paths: list[Path], nodatas: list,
           grid: xr.DataArray | None) -> _Staged:
    """Compute the rasters' rows into temporary GeoTIFFs and their float overview levels."""
    ref = grid if grid is not None else das[0]
    datas = [_row_aligned(da.data, das[0].data) for da in das]
    dtypes = [np.dtype(da.dtype) for da in das]
    # largest block size that still leaves room for an overview level (GDAL's COG minimum is 128)
    st = _Staged([Path(p) for p in paths], cog_blocksize((min(datas[0].shape),) * 2))
    try:
        with rasterio.Env(GDAL_PAM_ENABLED="NO"):
            with contextlib.ExitStack() as stack:
                dsts = [stack.enter_context(_open_part(t, d.shape, dt, nd, ref))
                        for t, d, dt, nd in zip(st.parts, datas, dtypes, nodatas)]
                for t, d, dt, nd in zip(st.parts, datas, dtypes, nodatas):
                    st.pyramids.append(OverviewLevels(t.with_suffix(""), *d.shape, dt, nd, ref.rio.crs,
                                                      ref.rio.transform(), st.block) if dt.kind == "f" else None)
                _write_rows(datas, dtypes, dsts, st.pyramids)
            st.levels = [pyr.close() if pyr is not None else None for pyr in st.pyramids]
    except (OSError, rasterio.errors.RasterioError) as exc:
        st.discard()
        raise st.error(exc) from None
    except BaseException:
        st.discard()
        raise
    return st


def _finish(st: _Staged) -> list[Path]:
    """GDAL's COG copies of a staged group, each replacing its path; the temporary files go."""
    try:
        with rasterio.Env(GDAL_PAM_ENABLED="NO"):
            for part, cog, levels in zip(st.parts, st.cogs, st.levels):
                _cog_copy(part, cog, st.block, levels)
        for cog, path in zip(st.cogs, st.paths):
            os.replace(cog, path)
    except (OSError, rasterio.errors.RasterioError) as exc:
        raise st.error(exc) from None
    finally:
        st.discard()
    return st.paths


def _row_aligned(data, first):
    """``data`` with the row chunks of ``first`` (dask), so one band row of each is computed together."""
    if hasattr(data, "blocks") and hasattr(first, "blocks") and data.chunks[0] != first.chunks[0]:
        return data.rechunk({0: first.chunks[0]})
    return data


def _open_part(path: Path, shape, dtype: np.dtype, nodata, ref: xr.DataArray):
    """The tiled temporary GeoTIFF that the COG copy reads once.

    Uncompressed up to TMP_UNCOMPRESSED_BYTES (DEFLATE would compress every
    raster twice and decompress it once); DEFLATE level 1 beyond, to bound the disk.
    """
    ny, nx = shape
    comp = dict(compress="DEFLATE", zlevel=1) if ny * nx * dtype.itemsize > TMP_UNCOMPRESSED_BYTES else {}
    return rasterio.open(path, "w", driver="GTiff", width=nx, height=ny, count=1, dtype=dtype,
                         crs=ref.rio.crs, transform=ref.rio.transform(), nodata=nodata, tiled=True,
                         blockxsize=256, blockysize=256, BIGTIFF="IF_SAFER", **comp)


def _write_rows(datas: list, dtypes: list[np.dtype], dsts: list, pyramids: list) -> None:
    """Compute the rasters row of chunks by row of chunks (all K in one computation) and write
    them, and their overview levels where ``pyramids`` has them."""
    if not all(hasattr(d, "blocks") for d in datas):
        for data, dtype, dst, pyr in zip(datas, dtypes, dsts, pyramids):
            band = np.asarray(data).astype(dtype, copy=False)
            dst.write(band, 1)
            if pyr is not None:
                pyr.add(band)
        return
    nx = datas[0].shape[1]
    row = 0
    for i in range(datas[0].numblocks[0]):
        bands = dask.compute(*[d.blocks[i] for d in datas])
        for band, dtype, dst, pyr in zip(bands, dtypes, dsts, pyramids):
            band = np.asarray(band).astype(dtype, copy=False)
            dst.write(band, 1, window=Window(0, row, nx, band.shape[0]))
            if pyr is not None:
                pyr.add(band)
        row += bands[0].shape[0]


def _cog_copy(src: Path, dst: Path, block: int, levels: list[Path] | None) -> None:
    """GDAL COG copy: DEFLATE level 1 (as pipeline.report.cog.convert_to_cog) on all CPUs;
    overviews: the float ``levels`` given, else GDAL's nearest (integer rasters).

    Compression is per block, so the bytes do not depend on the thread count.
    """
    opts = dict(COMPRESS="DEFLATE", LEVEL=1, NUM_THREADS="ALL_CPUS", SPARSE_OK="YES", BIGTIFF="IF_SAFER")
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
        if levels is not None:
            cog_with_levels(src, levels, dst, block, PREDICTOR="YES", **opts)
        else:
            rio_copy(str(src), str(dst), driver="COG", OVERVIEWS="AUTO", RESAMPLING="NEAREST", BLOCKSIZE=block,
                     PREDICTOR="NO", **opts)
