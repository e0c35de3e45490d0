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

import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import rasterio
import xarray as xr
from rasterio.shutil import copy as rio_copy
from rasterio.windows import Window

from pipeline.errors import ConfigError, OutputError
from pipeline.indicators.catalog import CLASS_NODATA
from pipeline.indicators.connectivity import compute_connectivity
from pipeline.io.classes import CanonicalTable, attribute_raster, load_canonical
from pipeline.ops import landcover as ops

log = logging.getLogger(__name__)

DEFAULTS: dict[str, float] = {
    "dispersal_distance_m": 1000.0,
    "connectivity_p_min": 1e-6,
    "connectivity_max_work": 2.5e9,
    "riparian_buffer_m": 100.0,
    "landscape_buffer_m": 1000.0,
}

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
        for name, attr in (("upstream_intensive_share", "intensive"), ("upstream_impervious_share", "impervious"),
                           ("upstream_pollutant_share", "pollutant")):
            out[name] = ops.upstream_share(d8, attribute_raster(canonical, attr, table), name, accumulation)
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
    # local shares
    for name, attr in (("local_natural_share", "natural"), ("local_intensive_share", "intensive"),
                       ("local_undisturbed_share", "undisturbed")):
        out[name] = ops.disk_share(attribute_raster(canonical, attr, table), p["landscape_buffer_m"], name,
                                   memo=memo)
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
    for name in NAMES:
        if name not in rasters:
            continue
        da = rasters[name]
        nodata = {np.dtype(np.uint8): CLASS_NODATA, np.dtype(np.int32): 0}.get(np.dtype(da.dtype), np.nan)
        paths[name] = write_cog_tiled(da, out_dir / f"{name}.tif", nodata, landcover_canonical)
        log.info("wrote %s", paths[name])
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
def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path.name}: {exc}", path=path) from None


def write_cog_tiled(da: xr.DataArray, path: Path, nodata, grid: xr.DataArray | None = None) -> Path:
    """Write a (dask) DataArray as a COG (DEFLATE, overviews, nodata, CRS) atomically.

    Rows of chunks are computed one band at a time into a tiled temporary GeoTIFF
    (uncompressed below 256 MB: it is read once),
    which GDAL's COG driver then copies (overviews: nearest for integer rasters,
    average for float); the result replaces ``path`` with ``os.replace``.
    """
    path = Path(path)
    ref = grid if grid is not None else da
    transform = ref.rio.transform()
    crs = ref.rio.crs
    data = da.data
    dtype = np.dtype(da.dtype)
    ny, nx = data.shape
    tmp_gt = path.with_name(f".{path.stem}.{os.getpid()}.part.tif")
    tmp_cog = path.with_name(f".{path.stem}.{os.getpid()}.cog.tif")
    is_int = dtype.kind in "iub"
    # the temporary file is read once by the COG copy: uncompressed unless it would be large
    tmp_comp = dict(compress="DEFLATE", zlevel=1) if ny * nx * dtype.itemsize > 256 * 2**20 else {}
    # largest block size that still leaves room for at least one overview level
    block = next((b for b in (512, 256, 128, 64) if min(ny, nx) >= 2 * b), 64)
    try:
        with rasterio.Env(GDAL_PAM_ENABLED="NO"):
            with rasterio.open(tmp_gt, "w", driver="GTiff", width=nx, height=ny, count=1, dtype=dtype,
                               crs=crs, transform=transform, nodata=nodata, tiled=True, blockxsize=256,
                               blockysize=256, BIGTIFF="IF_SAFER", **tmp_comp) as dst:
                if hasattr(data, "blocks"):
                    row = 0
                    for i in range(data.numblocks[0]):
                        band = np.asarray(data.blocks[i].compute())
                        dst.write(band.astype(dtype, copy=False), 1, window=Window(0, row, nx, band.shape[0]))
                        row += band.shape[0]
                else:
                    dst.write(np.asarray(data).astype(dtype, copy=False), 1)
            # DEFLATE level 1 and threads: as pipeline.report.cog.convert_to_cog
            rio_copy(str(tmp_gt), str(tmp_cog), driver="COG", COMPRESS="DEFLATE", LEVEL=1, OVERVIEWS="AUTO",
                     RESAMPLING="NEAREST" if is_int else "AVERAGE", BLOCKSIZE=block, NUM_THREADS="ALL_CPUS",
                     SPARSE_OK="YES", PREDICTOR="NO" if is_int else "YES", BIGTIFF="IF_SAFER")
        os.replace(tmp_cog, path)
    except (OSError, rasterio.errors.RasterioError) as exc:
        tmp_cog.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path.name}: {exc}", path=path,
                          fix="check free disk space and write permission of the output folder") from None
    finally:
        tmp_gt.unlink(missing_ok=True)
    return path
