"""Reading, checking, aligning and writing rasters (rasterio / GDAL).

Every layer is aligned once, at ingestion, to the basin's one target grid:
nearest (or mode when coarsening) for classes, bilinear for continuous values.
Aligned rasters are written chunk by chunk to tiled GeoTIFFs, so memory depends
on the chunk size, not on the raster size.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.windows
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.vrt import WarpedVRT

from pipeline.errors import InputDataError, OutputError
from pipeline.io.grid import Grid

log = logging.getLogger(__name__)

# Creation options for every GeoTIFF the pipeline writes. No timestamps are written
# (GDAL writes none for GTiff unless asked), so identical data give identical bytes.
# zlevel 1: intermediates are written once and read a few times; level 6 took twice
# the time for ~4 % smaller files
GTIFF_OPTIONS = dict(driver="GTiff", tiled=True, blockxsize=512, blockysize=512,
                     compress="DEFLATE", zlevel=1, BIGTIFF="IF_SAFER")


@dataclass(frozen=True)
class RasterInfo:
    path: Path
    crs: object
    transform: object
    width: int
    height: int
    dtype: str
    nodata: float | None
    bounds: tuple


def inspect_raster(path: Path, role: str) -> RasterInfo:
    """Open a raster header; raise InputDataError for missing/unreadable/CRS-less files."""
    path = Path(path)
    if not path.exists():
        raise InputDataError(f"{role}: file not found", path=path,
                             fix="check the path in the configuration (relative paths are "
                                 "resolved against the configuration file's folder)")
    try:
        with rasterio.open(path) as src:
            info = RasterInfo(path, src.crs, src.transform, src.width, src.height,
                              src.dtypes[0], src.nodata, tuple(src.bounds))
    except RasterioIOError as exc:
        raise InputDataError(f"{role}: GDAL cannot open it as a raster ({error_text(exc)})",
                             path=path, fix="re-download or re-export the file as GeoTIFF "
                                            "(gdal_translate in.tif out.tif)") from None
    if info.crs is None:
        raise InputDataError(f"{role}: the raster has no CRS", path=path,
                             fix="assign the CRS it was produced in, e.g. "
                                 "gdal_edit.py -a_srs EPSG:4326 FILE")
    return info


def error_text(exc: Exception) -> str:
    """The first line of a GDAL/rasterio error, for a message to the analyst."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def align_raster(src_path: Path, grid: Grid, out_path: Path, *, categorical: bool,
                 dtype: str, dst_nodata: float, src_nodata: float | None = None,
                 chunk_rows: int = 1024) -> Path:
    """Warp `src_path` onto `grid`, writing a tiled GeoTIFF chunk by chunk.

    Classes use 'mode' when the source cells are clearly smaller than the target
    cells (coarsening) and 'nearest' otherwise; continuous data use 'bilinear'.
    """
    with rasterio.open(src_path) as src:
        if categorical:
            src_res = _approx_res_m(src, grid)
            resampling = Resampling.mode if src_res < 0.75 * grid.res else Resampling.nearest
        else:
            resampling = Resampling.bilinear
        vrt_opts = dict(crs=grid.crs.to_wkt(), transform=grid.transform, width=grid.width,
                        height=grid.height, resampling=resampling, nodata=dst_nodata,
                        dtype=dtype)
        if src_nodata is not None:
            vrt_opts["src_nodata"] = src_nodata
        profile = dict(GTIFF_OPTIONS, width=grid.width, height=grid.height, count=1,
                       dtype=dtype, crs=grid.crs.to_wkt(), transform=grid.transform,
                       nodata=dst_nodata)
        with WarpedVRT(src, **vrt_opts) as vrt, atomic_raster(out_path, profile) as dst:
            for row in range(0, grid.height, chunk_rows):
                h = min(chunk_rows, grid.height - row)
                win = rasterio.windows.Window(0, row, grid.width, h)
                dst.write(vrt.read(1, window=win), 1, window=win)
    log.debug("aligned %s -> %s (%s)", src_path, out_path, resampling.name)
    return out_path


def _approx_res_m(src, grid: Grid) -> float:
    """Source cell size expressed in the grid's metres (approximate for geographic)."""
    res = abs(src.transform.a)
    if src.crs.is_geographic:
        return res * 111_320.0
    return res * (src.crs.linear_units_factor[1] if src.crs.linear_units_factor else 1.0)


@contextmanager
def atomic_raster(path: Path, profile: dict):
    """Open a GeoTIFF for writing under a temporary name; rename into place on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            yield dst
        verify_written(tmp, path)
        os.replace(tmp, path)
    except (OSError, rasterio.errors.RasterioError) as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write raster ({getattr(exc, 'strerror', None) or error_text(exc)})",
                          path=path,
                          fix="check free disk space and write permission") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def verify_written(tmp: Path, final: Path | None = None) -> None:
    """Read back the last rows of every band of a just-written GeoTIFF.

    GDAL reports a failed block write (disk full, file-size limit) only on its own
    error stream; the truncated file then fails to read here, and the run stops
    with an OutputError instead of publishing a broken raster.
    """
    try:
        with rasterio.open(tmp) as src:
            h = min(src.height, src.block_shapes[0][0] if src.block_shapes else 1)
            win = rasterio.windows.Window(0, src.height - h, src.width, h)
            for b in range(1, src.count + 1):
                src.read(b, window=win)
    except (OSError, rasterio.errors.RasterioError) as exc:
        raise OutputError(f"the raster could not be written completely ({error_text(exc)}); "
                          "the disk may be full", path=final or tmp,
                          fix="free disk space (or raise the quota) and run again") from None


def write_array(path: Path, array: np.ndarray, grid: Grid, nodata: float | None,
                tags: dict | None = None) -> Path:
    """Write a 2-D array on `grid` atomically as a tiled, compressed GeoTIFF."""
    profile = dict(GTIFF_OPTIONS, width=grid.width, height=grid.height, count=1,
                   dtype=str(array.dtype), crs=grid.crs.to_wkt(), transform=grid.transform,
                   nodata=nodata)
    if array.dtype.kind == "f":
        profile["predictor"] = 3
    with atomic_raster(path, profile) as dst:
        dst.write(array, 1)
        if tags:
            dst.update_tags(**tags)
    return Path(path)


def read_array(path: Path, masked_nan: bool = False) -> np.ndarray:
    with rasterio.open(path) as src:
        arr = src.read(1)
        if masked_nan and src.nodata is not None and arr.dtype.kind == "f":
            arr = np.where(arr == src.nodata, np.nan, arr)
    return arr


# --------------------------------------------------------------------------- sparse COG
def cog_blocksize(shape: tuple[int, int]) -> int:
    """Largest of 512/256/128 that still leaves room for an overview (GDAL's COG minimum is 128)."""
    small = min(shape)
    for b in (512, 256):
        if small >= 2 * b:
            return b
    return 128


def cog_levels(height: int, width: int, blocksize: int) -> list[int]:
    """Overview factors 2, 4, ... until the level fits in one block (GDAL COG ``OVERVIEWS=AUTO``)."""
    out, f = [], 1
    while max(-(-height // f), -(-width // f)) > blocksize:
        f *= 2
        out.append(f)
    return out


def _average_2x2(block: np.ndarray, nodata: float) -> np.ndarray:
    """(bands, h, w) -> (bands, ceil(h/2), ceil(w/2)): mean of the valid cells of each 2 x 2
    group (GDAL AVERAGE with nodata); nodata where a group has none.

    For the float64 credit rasters of :func:`sparse_cog`. Its numpy sum order agrees
    with GDAL's within 1e-12 relative (tests/test_spread.py). The row-major sums of
    pipeline.kernels.overview.average_2x2 missed that on one cell of that test, by
    1.2e-12. The kernel is for the float32 indicators, where sums of four float32
    values in float64 are exact.
    """
    b, h, w = block.shape
    ph, pw = h + h % 2, w + w % 2
    valid = np.zeros((b, ph, pw), bool)
    vals = np.zeros((b, ph, pw), np.float64)
    ok = block != nodata
    if block.dtype.kind == "f":
        ok &= ~np.isnan(block)
    valid[:, :h, :w] = ok
    vals[:, :h, :w] = np.where(ok, block, 0.0)
    s = vals.reshape(b, ph // 2, 2, pw // 2, 2).sum(axis=(2, 4))
    n = valid.reshape(b, ph // 2, 2, pw // 2, 2).sum(axis=(2, 4))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), nodata).astype(block.dtype)


def sparse_cog(src: Path, windows: list[tuple[int, int, int, int]], dst: Path) -> Path:
    """Copy a sparse tiled float GeoTIFF to a COG, building overviews over ``windows`` only.

    ``windows`` (row0, col0, height, width) cover every cell of ``src`` that holds data;
    everything else is nodata (blocks never written). GDAL's COG driver would average
    the whole extent for each overview level - minutes for a project raster spanning a
    large basin - so the levels are averaged here window by window (2 x 2 mean of the
    valid cells, level k from level k-1, as GDAL's AVERAGE), written as sparse GeoTIFFs,
    attached to ``src`` through a VRT and copied with ``OVERVIEWS=FORCE_USE_EXISTING``.
    ``dst`` is written atomically; band descriptions and tags are kept.
    """
    src, dst = Path(src), Path(dst)
    with rasterio.open(src) as ds:
        prof = ds.profile.copy()
        nodata, dtype = ds.nodata, np.dtype(ds.dtypes[0])
        height, width, transform = ds.height, ds.width, ds.transform
    blocksize = cog_blocksize((height, width))
    if dtype.kind != "f" or nodata is None:
        raise ValueError("sparse_cog needs a float raster with a nodata value")
    stem = dst.with_name(f".{dst.stem}.{os.getpid()}")
    level_paths: list[Path] = []
    prev, h, w = src, height, width
    wins = [(r0, c0, r0 + hh, c0 + ww) for r0, c0, hh, ww in windows]
    try:
        for f in cog_levels(height, width, blocksize):
            h2, w2 = -(-h // 2), -(-w // 2)
            path = Path(f"{stem}.ovr{f}.tif")
            lp = dict(prof, width=w2, height=h2, transform=transform * rasterio.Affine.scale(f), tiled=True,
                      blockxsize=256, blockysize=256, compress="DEFLATE", zlevel=1, SPARSE_OK=True)
            wins = [(r0 // 2, c0 // 2, -(-r1 // 2), -(-c1 // 2)) for r0, c0, r1, c1 in wins]
            with rasterio.open(prev) as rd, rasterio.open(path, "w", **lp) as wr:
                for r0, c0, r1, c1 in wins:
                    rwin = rasterio.windows.Window(2 * c0, 2 * r0, min(2 * c1, w) - 2 * c0, min(2 * r1, h) - 2 * r0)
                    wr.write(_average_2x2(rd.read(window=rwin), nodata),
                             window=rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0))
            level_paths.append(path)
            prev, h, w = path, h2, w2
        tmp = Path(f"{stem}.cog.tif")
        with rasterio.Env(GDAL_PAM_ENABLED="NO", GTIFF_WRITE_TOWGS84="NO"):
            cog_with_levels(src, level_paths, tmp, blocksize, COMPRESS="DEFLATE", LEVEL=1, NUM_THREADS="ALL_CPUS",
                            SPARSE_OK="YES", PREDICTOR="YES", BIGTIFF="IF_SAFER")
        verify_written(tmp, dst)
        os.replace(tmp, dst)
    except (OSError, rasterio.errors.RasterioError) as exc:
        raise OutputError(f"cannot write raster ({error_text(exc)})", path=dst,
                          fix="check free disk space and write permission") from None
    finally:
        for p in [*level_paths, Path(f"{stem}.cog.tif")]:
            p.unlink(missing_ok=True)
    return dst


def _overview_vrt(src: Path, prof: dict, levels: list[Path], descriptions, tags: dict) -> str:
    """VRT of ``src`` (with its band descriptions and tags) whose bands list ``levels`` as overviews."""
    from xml.sax.saxutils import escape, quoteattr

    gdal_type = {"float32": "Float32", "float64": "Float64"}[str(np.dtype(prof["dtype"]))]
    parts = [f'<VRTDataset rasterXSize="{prof["width"]}" rasterYSize="{prof["height"]}">',
             f"<SRS>{escape(prof['crs'].to_wkt())}</SRS>",
             f"<GeoTransform>{', '.join(repr(v) for v in prof['transform'].to_gdal())}</GeoTransform>",
             "<Metadata>", *(f"<MDI key={quoteattr(str(k))}>{escape(str(v))}</MDI>" for k, v in tags.items()),
             "</Metadata>"]
    for b, desc in enumerate(descriptions, 1):
        parts.append(f'<VRTRasterBand dataType="{gdal_type}" band="{b}">'
                     f"<Description>{escape(desc or '')}</Description>"
                     f"<NoDataValue>{prof['nodata']!r}</NoDataValue>"
                     f'<SimpleSource><SourceFilename relativeToVRT="0">{escape(str(src))}</SourceFilename>'
                     f"<SourceBand>{b}</SourceBand></SimpleSource>")
        for p in levels:
            parts.append(f'<Overview><SourceFilename relativeToVRT="0">{escape(str(p))}</SourceFilename>'
                         f"<SourceBand>{b}</SourceBand></Overview>")
        parts.append("</VRTRasterBand>")
    parts.append("</VRTDataset>")
    return "".join(parts)


class OverviewLevels:
    """A float raster's COG overview levels, built while its rows are written.

    GDAL's COG driver (``OVERVIEWS=AUTO``) reads the written raster again and averages
    it level by level: at 1.75e8 cells ~4 of the ~8 s of a land-cover indicator's copy.
    Here each row band is averaged as it is written (:func:`add`, rows in order, any
    heights): level k is the 2 x 2 mean of the valid cells of level k-1
    (pipeline.kernels.overview.average_2x2), a row waiting for its pair is carried to
    the next band, and :func:`close` averages the rows left over. Levels go to
    uncompressed tiled GeoTIFFs ``<stem>.ovr<factor>.tif`` that :func:`cog_with_levels`
    attaches to the raster (the factors of ``cog_levels``, as ``OVERVIEWS=AUTO``).
    Where every level halves exactly the values are GDAL's AVERAGE, bit for bit
    (tests/test_overviews.py); an odd last row or column is the mean of its valid
    cells (GDAL weights it by the fraction of the source cell it covers).
    """

    def __init__(self, stem: Path, height: int, width: int, dtype, nodata: float, crs, transform,
                 blocksize: int) -> None:
        self.dtype, self.nodata = np.dtype(dtype), float(nodata)
        if self.dtype.kind != "f":
            raise ValueError("OverviewLevels averages float rasters only")
        self.factors = cog_levels(height, width, blocksize)
        self.paths = [Path(f"{stem}.ovr{f}.tif") for f in self.factors]
        self._carry: list[np.ndarray | None] = [None] * len(self.factors)
        self._next_row = [0] * len(self.factors)
        self._dsts = []
        try:
            for f, p in zip(self.factors, self.paths):
                self._dsts.append(rasterio.open(
                    p, "w", driver="GTiff", width=-(-width // f), height=-(-height // f), count=1,
                    dtype=self.dtype, crs=crs, transform=transform * rasterio.Affine.scale(f), nodata=nodata,
                    tiled=True, blockxsize=256, blockysize=256, BIGTIFF="IF_SAFER"))
        except BaseException:
            self.discard()
            raise

    def add(self, band: np.ndarray) -> None:
        """The next rows of the full-resolution raster (top to bottom)."""
        self._cascade(np.asarray(band, dtype=self.dtype), final=False)

    def close(self) -> list[Path]:
        """Average the carried rows, close the level files and return their paths."""
        self._cascade(None, final=True)
        for d in self._dsts:
            d.close()
        return self.paths

    def discard(self) -> None:
        for d in self._dsts:
            d.close()
        for p in self.paths:
            p.unlink(missing_ok=True)

    def _cascade(self, x: np.ndarray | None, final: bool) -> None:
        from pipeline.kernels.overview import average_2x2

        for k, dst in enumerate(self._dsts):
            carry = self._carry[k]
            if carry is not None:
                x = carry if x is None else np.concatenate([carry, x])
                self._carry[k] = None
            if x is None or x.shape[0] == 0:
                if not final:
                    return
                x = None
                continue
            n = x.shape[0] if final else x.shape[0] // 2 * 2
            if n < x.shape[0]:
                self._carry[k] = x[n:].copy()
            if n == 0:
                return
            out = np.empty((-(-n // 2), -(-x.shape[1] // 2)), dtype=self.dtype)
            average_2x2(np.ascontiguousarray(x[:n]), self.nodata, out)
            dst.write(out, 1, window=rasterio.windows.Window(0, self._next_row[k], out.shape[1], out.shape[0]))
            self._next_row[k] += out.shape[0]
            x = out


def cog_with_levels(src: Path, levels: list[Path], dst: Path, blocksize: int, **options) -> None:
    """GDAL COG copy of the float GeoTIFF ``src`` with the overview ``levels`` given
    (:class:`OverviewLevels`), through a VRT and ``OVERVIEWS=FORCE_USE_EXISTING``;
    ``options``: further COG creation options (compression, predictor, threads)."""
    from rasterio.shutil import copy as rio_copy

    with rasterio.open(src) as ds:
        prof, tags, descs = ds.profile.copy(), ds.tags(), ds.descriptions
    vrt = Path(dst).with_name(f".{Path(dst).stem}.{os.getpid()}.levels.vrt")
    try:
        vrt.write_text(_overview_vrt(Path(src), prof, levels, descs, tags), encoding="utf-8")
        rio_copy(str(vrt), str(dst), driver="COG", BLOCKSIZE=blocksize,
                 OVERVIEWS="FORCE_USE_EXISTING" if levels else "NONE", **options)
    finally:
        vrt.unlink(missing_ok=True)
