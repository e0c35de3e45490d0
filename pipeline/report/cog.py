"""Cloud-Optimized GeoTIFF writer (GDAL COG driver through rasterio).

DEFLATE, internal overviews, explicit nodata, no timestamps: writing the same
array twice gives byte-identical files.  Class rasters carry a colour table;
continuous rasters get a QGIS `.qml` sidecar (QGIS loads `<name>.qml` beside a
raster as its default style).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import rasterio
from rasterio.io import MemoryFile
from rasterio.shutil import copy as rio_copy

from pipeline.errors import InputDataError
from pipeline.indicators.catalog import CLASS_CODES
from pipeline.io.rasters import cog_blocksize
from pipeline.report.model import atomic_path, write_text
from pipeline.report.styles import CANONICAL_CLASS_COLOURS, raster_paletted_qml, raster_pseudocolor_qml

log = logging.getLogger(__name__)

_GDAL_ENV = {"GDAL_PAM_ENABLED": "NO", "GTIFF_WRITE_TOWGS84": "NO", "GDAL_NUM_THREADS": "1"}


def write_cog(array: np.ndarray, transform, crs, nodata, path, colormap: dict | None = None,
              qml: str | None = None) -> Path:
    """Write a 2-D (y, x) array as a COG at `path` (atomically).

    nodata: the sentinel stored in the file (NaN allowed for float arrays).
    colormap: {value: (r, g, b[, a])} for uint8 class rasters (written as a colour table).
    qml: QGIS style text written to `<path>.qml` (stem + .qml) for continuous rasters.
    """
    path = Path(path)
    arr = np.asarray(array)
    if arr.ndim != 2:
        raise InputDataError(f"raster for {path.name} must be 2-D (y, x), got shape {arr.shape}", path=path,
                             fix="pass one band at a time")
    if nodata is None:
        raise InputDataError(f"raster {path.name} has no nodata value", path=path,
                             fix="give nodata explicitly (NaN for float, 255 for class rasters)")
    if colormap is not None and arr.dtype != np.uint8:
        raise InputDataError(f"colour table on {path.name} needs a uint8 raster, got {arr.dtype}", path=path,
                             fix="cast the class raster to uint8 with nodata 255")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    is_class = np.issubdtype(arr.dtype, np.integer)
    profile = dict(driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=1, dtype=arr.dtype,
                   crs=crs, transform=transform, nodata=nodata)
    copy_opts = dict(driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=cog_blocksize(arr.shape), OVERVIEWS="AUTO",
                     RESAMPLING="NEAREST" if is_class else "AVERAGE", NUM_THREADS=1,
                     PREDICTOR="YES" if not is_class else "NO")
    with rasterio.Env(**_GDAL_ENV), atomic_path(path, suffix=".tif") as tmp:
        with MemoryFile() as mem:
            with mem.open(**profile) as ds:
                if colormap is not None:  # before the pixels: the TIFF photometric tag is set once
                    ds.write_colormap(1, {int(k): tuple(int(c) for c in v) for k, v in colormap.items()})
                ds.write(arr, 1)
            with mem.open() as src:
                rio_copy(src, str(tmp), **copy_opts)
    if qml is not None:
        write_text(path.with_suffix(".qml"), qml)
    log.debug("wrote COG %s (%d x %d, %s)", path, arr.shape[1], arr.shape[0], arr.dtype)
    return path


CLASS_LABELS = {"forest": "林地 forest", "shrub": "灌木林 shrub", "grassland": "草地 grassland",
                "wetland": "湿地 wetland", "water": "水域 water", "cropland": "耕地 cropland",
                "built_up": "建设用地 built-up", "bare": "裸地 bare", "other": "其他 other"}
_LOG_SCALE = ("upstream_area", "accumulation", "patch_area")


def raster_style_qml(name: str, path) -> str | None:
    """The QGIS sidecar style a published raster should get, or None.

    Canonical land cover without a colour table -> paletted with class names;
    float rasters -> interpolated ramp over the 2nd-98th percentile (log for areas);
    other integer rasters (D8 codes, masks, patch ids) and rasters with a colour table -> None.
    Only the last part of `name` counts (``y2023/canonical`` styles as ``canonical``): a
    vintage name never changes a style, and a step can style its rasters by their own keys.
    """
    name = name.rsplit("/", 1)[-1]
    with rasterio.Env(**_GDAL_ENV), rasterio.open(path) as ds:
        try:
            has_table = bool(ds.colormap(1))
        except ValueError:
            has_table = False
        dtype = np.dtype(ds.dtypes[0])
        if np.issubdtype(dtype, np.integer):
            if "canonical" in name and not has_table:
                names = {v: k for k, v in CLASS_CODES.items()}
                return raster_paletted_qml([(v, CANONICAL_CLASS_COLOURS[v], CLASS_LABELS[names[v]])
                                            for v in sorted(names)])
            return None
        f = max(1, int(np.ceil(max(ds.width, ds.height) / 1024)))
        a = ds.read(1, out_shape=(max(1, ds.height // f), max(1, ds.width // f)), masked=True)
    v = np.asarray(a.compressed(), dtype="float64")
    v = v[np.isfinite(v)]
    if v.size == 0:
        return raster_pseudocolor_qml(0.0, 1.0)
    log_scale = any(k in name for k in _LOG_SCALE) and (v > 0).any()
    if log_scale:
        v = v[v > 0]
    lo, hi = (float(x) for x in np.percentile(v, [2, 98]))
    if hi <= lo:
        lo, hi = float(v.min()), float(v.max())
    return raster_pseudocolor_qml(lo, hi, log_scale=log_scale)


def write_raster_styles(rasters: dict[str, Path], keep: bool = False) -> list[Path]:
    """Write `<raster>.qml` beside every published raster that needs one (see raster_style_qml);
    return the sidecars beside the rasters.

    ``keep``: a sidecar already there is kept as it is: the step cache (pipeline.cache)
    stores each raster with the sidecar computed from it, so a restored raster brings its
    own and its percentiles are not read again.
    """
    written, kept = [], 0
    for name, path in sorted(rasters.items()):
        side = Path(path).with_suffix(".qml")
        if keep and side.is_file():
            written.append(side)
            kept += 1
            continue
        qml = raster_style_qml(name, path)
        if qml is not None:
            written.append(write_text(side, qml))
    log.info("wrote %d raster style sidecar(s)%s", len(written) - kept,
             f", {kept} came with cached rasters" if kept else "")
    return written


def convert_to_cog(path: Path) -> Path:
    """Rewrite a tiled GeoTIFF in place as a COG (streamed by GDAL; memory stays small).

    Already-COG files are left alone. Class (integer) rasters get nearest-neighbour
    overviews, continuous ones averaged overviews; band descriptions and tags are kept.
    """
    path = Path(path)
    with rasterio.open(path) as src:
        if src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG":
            return path
        is_class = np.issubdtype(np.dtype(src.dtypes[0]), np.integer)
        shape = (src.height, src.width)
    # LEVEL 1: half the time of the default 6 for ~4 % larger files (2e7-cell float raster:
    # 2.4 s vs 5.1 s). Blocks are compressed independently, so the bytes do not depend
    # on NUM_THREADS. SPARSE_OK: all-nodata blocks are not stored (sparse credit rasters).
    opts = dict(driver="COG", COMPRESS="DEFLATE", LEVEL=1, BLOCKSIZE=cog_blocksize(shape), OVERVIEWS="AUTO",
                RESAMPLING="NEAREST" if is_class else "AVERAGE", NUM_THREADS="ALL_CPUS",
                SPARSE_OK="YES", PREDICTOR="NO" if is_class else "YES", BIGTIFF="IF_SAFER")
    # GDAL computes the overviews on threads too; the bytes do not depend on the thread count
    with rasterio.Env(**dict(_GDAL_ENV, GDAL_NUM_THREADS="ALL_CPUS")), atomic_path(path, suffix=".tif") as tmp:
        rio_copy(str(path), str(tmp), **opts)
    log.debug("converted %s to COG", path)
    return path
