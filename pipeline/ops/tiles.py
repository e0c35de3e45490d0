"""Tiling helpers shared by the tile-wise ops.

- :func:`tile_grid`: the tiles of a raster for given chunk sizes (dask style);
- block readers for numpy/dask arrays and GeoTIFFs (:class:`ArrayReader`,
  :class:`RasterReader`) and :func:`read_halo`, which reads a tile plus a halo
  and pads outside the raster with a fill value;
- :class:`ChunkStore`: an on-disk store of per-tile ``.npy`` arrays, so that
  intermediate results of a multi-pass op never have to be held in memory;
- :class:`TiledGeoTIFFWriter`: writes tiles into a tiled, DEFLATE-compressed
  GeoTIFF under a temporary name and renames it into place on success;
- :func:`run_parallel`: runs one function per tile through dask.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np

from pipeline.errors import InputDataError, OutputError
from pipeline.parallel import local_scheduler

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 2


@dataclass(frozen=True)
class Tile:
    """One tile: position ``(ty, tx)`` in the tile grid and its row/col window."""

    ty: int
    tx: int
    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.r1 - self.r0, self.c1 - self.c0


def normalize_chunks(shape: tuple[int, int], chunks) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Chunk sizes per axis from an int, a (rows, cols) pair of ints, or dask chunks."""
    if isinstance(chunks, (int, np.integer)):
        chunks = (int(chunks), int(chunks))
    out = []
    for n, ch in zip(shape, chunks):
        if isinstance(ch, (int, np.integer)):
            ch = int(ch)
            if ch < 1:
                raise ValueError(f"chunk size must be >= 1, got {ch}")
            sizes = tuple([ch] * (n // ch) + ([n % ch] if n % ch else []))
        else:
            sizes = tuple(int(c) for c in ch)
        if sum(sizes) != n:
            raise ValueError(f"chunks {sizes} do not cover an axis of length {n}")
        out.append(sizes)
    return out[0], out[1]


def tile_grid(shape: tuple[int, int], chunks) -> tuple[list[Tile], tuple[int, int]]:
    """All tiles (row-major) and the tile-grid shape (n_tile_rows, n_tile_cols)."""
    rch, cch = normalize_chunks(shape, chunks)
    rb = np.concatenate([[0], np.cumsum(rch)]).astype(int)
    cb = np.concatenate([[0], np.cumsum(cch)]).astype(int)
    tiles = [Tile(i, j, int(rb[i]), int(rb[i + 1]), int(cb[j]), int(cb[j + 1]))
             for i in range(len(rch)) for j in range(len(cch))]
    return tiles, (len(rch), len(cch))


class ArrayReader:
    """Reads windows of an in-memory numpy array or a dask array."""

    def __init__(self, array):
        self.array = array
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        block = self.array[r0:r1, c0:c1]
        if hasattr(block, "compute"):
            block = block.compute(scheduler=local_scheduler("synchronous"))
        return np.asarray(block)


class RasterReader:
    """Reads windows of band 1 of a raster file; a dataset is opened per thread."""

    def __init__(self, path):
        import rasterio

        self.path = str(path)
        try:
            with rasterio.open(self.path) as src:
                self.shape = (src.height, src.width)
                self.dtype = np.dtype(src.dtypes[0])
                self.nodata = src.nodata
                self.profile = src.profile.copy()
                self.transform = src.transform
                self.crs = src.crs
        except rasterio.errors.RasterioIOError as exc:
            raise InputDataError(f"cannot open raster: {exc}", path=self.path,
                                 fix="check that the file exists and is a GeoTIFF") from exc
        self._local = threading.local()

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_local")
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()

    def _dataset(self):
        import rasterio

        ds = getattr(self._local, "ds", None)
        if ds is None:
            ds = rasterio.open(self.path)
            self._local.ds = ds
        return ds

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        from rasterio.windows import Window

        return self._dataset().read(1, window=Window(c0, r0, c1 - c0, r1 - r0))


def read_halo(reader, tile: Tile, halo: int, fill, dtype=None) -> np.ndarray:
    """The tile plus ``halo`` cells each side; cells outside the raster get ``fill``."""
    nr, nc = reader.shape
    r0, r1, c0, c1 = tile.r0 - halo, tile.r1 + halo, tile.c0 - halo, tile.c1 + halo
    dtype = np.dtype(dtype or reader.dtype)
    out = np.full((r1 - r0, c1 - c0), fill, dtype=dtype)
    rr0, rr1, cc0, cc1 = max(r0, 0), min(r1, nr), max(c0, 0), min(c1, nc)
    if rr1 > rr0 and cc1 > cc0:
        out[rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] = reader.read(rr0, rr1, cc0, cc1)
    return out


def remove_stale_stores(parent: str | os.PathLike | None = None) -> int:
    """Remove the folders of :class:`ChunkStore` s whose process is gone; return how many.

    A store removes its folder when closed, but a run killed with SIGKILL (or by the
    out-of-memory killer, or a reboot of a scheduled job's machine) cannot, and the
    tiles of a large basin take gigabytes. Folders are named ``<prefix><pid>-<random>``
    (in ``parent``, default the system temporary folder); those of live processes and
    of other users are left alone.
    """
    from pipeline.io.outputs import remove_orphans

    n = len(remove_orphans(Path(parent or tempfile.gettempdir()), "pipeline-*-"))
    if n:
        log.info("removed %d temporary tile folder(s) of killed runs from %s", n,
                 parent or tempfile.gettempdir())
    return n


class ChunkStore:
    """Per-tile arrays kept as small self-describing binary files in a temporary folder.

    File layout: 16 bytes of dtype string, 8 bytes ndim, 8 bytes per dimension,
    then the raw C-ordered data. (Not ``.npy``: its header is parsed with
    ``ast``, which is not thread-safe in CPython 3.11.) The store pickles as
    its folder path, so dask workers in other processes on the same machine
    can use it; only the creating process removes the folder, on :meth:`close`
    or when the store is garbage collected.
    """

    def __init__(self, parent: str | os.PathLike | None = None, prefix: str = "pipeline-tiles-"):
        # the owner's pid in the name: a killed run's folder is found by remove_stale_stores
        self.root = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.root), True)

    def __getstate__(self):
        return {"root": str(self.root)}

    def __setstate__(self, state):
        self.root = Path(state["root"])
        self._finalizer = None           # a copy never deletes the owner's folder

    def _path(self, name: str, tile: Tile) -> Path:
        return self.root / f"{name}_{tile.ty}_{tile.tx}.bin"

    def put(self, name: str, tile: Tile, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        head = np.zeros(1, dtype=[("dtype", "S16"), ("ndim", "<i8")])
        head["dtype"] = array.dtype.str.encode()
        head["ndim"] = array.ndim
        try:
            with open(self._path(name, tile), "wb") as fh:
                fh.write(head.tobytes())
                fh.write(np.asarray(array.shape, dtype="<i8").tobytes())
                fh.write(array.tobytes())
        except OSError as exc:
            raise OutputError(f"cannot write a temporary tile: {exc}", path=str(self.root),
                              fix=f"free disk space in {self.root.parent}, or point TMPDIR to a "
                                  "folder on a larger disk") from exc

    def get(self, name: str, tile: Tile, mmap: bool = False) -> np.ndarray:
        path = self._path(name, tile)
        with open(path, "rb") as fh:
            head = np.frombuffer(fh.read(24), dtype=[("dtype", "S16"), ("ndim", "<i8")])
            ndim = int(head["ndim"][0])
            shape = tuple(int(v) for v in np.frombuffer(fh.read(8 * ndim), dtype="<i8"))
            dtype = np.dtype(head["dtype"][0].decode())
            offset = 24 + 8 * ndim
            if not mmap or int(np.prod(shape)) == 0:
                return np.fromfile(fh, dtype=dtype).reshape(shape)
        return np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=offset)

    def reader(self, name: str, tiles: list[Tile], shape: tuple[int, int], dtype) -> "StoreReader":
        return StoreReader(self, name, tiles, shape, dtype)

    def write_geotiff(self, name: str, tiles: list[Tile], writer: "TiledGeoTIFFWriter",
                      convert=None) -> None:
        """Copy the tiles of ``name`` into ``writer`` (in this process, tile by tile)."""
        for t in tiles:
            a = self.get(name, t)
            writer.write(t, a if convert is None else convert(t, a))

    def drop(self, name: str) -> None:
        """Delete every tile of ``name`` (frees disk space once a pass no longer needs it)."""
        for path in self.root.glob(f"{name}_*.bin"):
            path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()


class StoreReader:
    """Reads arbitrary windows of a raster kept tile by tile in a :class:`ChunkStore`."""

    def __init__(self, store: ChunkStore, name: str, tiles: list[Tile], shape, dtype):
        self.store, self.name, self.tiles = store, name, tiles
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self._rb = sorted({t.r0 for t in tiles})
        self._cb = sorted({t.c0 for t in tiles})
        self._by_pos = {(t.r0, t.c0): t for t in tiles}

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        out = np.empty((r1 - r0, c1 - c0), dtype=self.dtype)
        i0 = int(np.searchsorted(self._rb, r0, side="right")) - 1
        j0 = int(np.searchsorted(self._cb, c0, side="right")) - 1
        for tr0 in self._rb[i0:]:
            if tr0 >= r1:
                break
            for tc0 in self._cb[j0:]:
                if tc0 >= c1:
                    break
                t = self._by_pos[(tr0, tc0)]
                a = self.store.get(self.name, t, mmap=True)
                ar0, ar1 = max(r0, t.r0), min(r1, t.r1)
                ac0, ac1 = max(c0, t.c0), min(c1, t.c1)
                if ar1 > ar0 and ac1 > ac0:
                    out[ar0 - r0:ar1 - r0, ac0 - c0:ac1 - c0] = \
                        a[ar0 - t.r0:ar1 - t.r0, ac0 - t.c0:ac1 - t.c0]
        return out


class TiledGeoTIFFWriter:
    """Write tiles into a tiled DEFLATE GeoTIFF; atomically renamed on :meth:`commit`.

    Layout is COG-compatible (internal 512x512 tiles, no overviews). Writes from
    several threads are serialised by a lock.
    """

    def __init__(self, path, shape, dtype, crs, transform, nodata, block: int = 512):
        import rasterio

        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        profile = dict(driver="GTiff", height=shape[0], width=shape[1], count=1,
                       dtype=np.dtype(dtype).name, crs=crs, transform=transform,
                       nodata=nodata, tiled=True, blockxsize=block, blockysize=block,
                       compress="deflate", zlevel=1,
                       predictor=2 if np.dtype(dtype).kind in "iu" else 3,
                       BIGTIFF="IF_SAFER", interleave="band")
        if min(shape) < block:
            profile.update(blockxsize=256, blockysize=256)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._ds = rasterio.open(self.tmp, "w", **profile)
        except (OSError, rasterio.errors.RasterioIOError) as exc:
            raise OutputError(f"cannot create output raster: {exc}", path=str(self.path),
                              fix="check that the output folder is writable and has space") from exc
        self._lock = threading.Lock()

    def write(self, tile: Tile, array: np.ndarray) -> None:
        from rasterio.windows import Window

        with self._lock:
            self._ds.write(array, 1, window=Window(tile.c0, tile.r0, tile.c1 - tile.c0,
                                                   tile.r1 - tile.r0))

    def commit(self) -> Path:
        self._ds.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._ds.close()
        finally:
            if self.tmp.exists():
                self.tmp.unlink()


def run_parallel(func, items, scheduler=None, num_workers: int = DEFAULT_WORKERS) -> list:
    """``[func(item) for item in items]`` as dask tasks (threads, 2 workers by default).

    ``scheduler`` is passed to :func:`dask.compute` ("threads", "synchronous",
    a distributed Client, ...). Kernels release the GIL, so threads run in parallel.
    """
    tasks = [dask.delayed(func, pure=False)(it) for it in items]
    if scheduler is None:
        scheduler = "threads"
    kwargs = {"scheduler": scheduler}
    if scheduler in ("threads", "processes"):
        kwargs["num_workers"] = num_workers
    if scheduler in ("threads", "synchronous"):
        kwargs["scheduler"] = local_scheduler(scheduler)
    return list(dask.compute(*tasks, **kwargs))
