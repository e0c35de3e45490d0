"""Tiling helpers (pipeline.ops.tiles): tile grids, halo reads, the on-disk chunk store,
and the file-level hydrology running on dask workers in other processes."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ops import hydrology as H
from pipeline.ops.hydrology import _perimeter
from pipeline.ops.tiles import (ArrayReader, ChunkStore, RasterReader, read_halo, tile_grid)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(1, 12), st.integers(1, 12),
       st.integers(0, 2**32 - 1))
def test_store_reader_windows_and_halo(h, w, ch, cw, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 1000, (h, w)).astype(np.int32)
    tiles, grid = tile_grid(a.shape, (ch, cw))
    # tiles cover the raster exactly once
    cover = np.zeros(a.shape, int)
    for t in tiles:
        cover[t.r0:t.r1, t.c0:t.c1] += 1
    assert np.all(cover == 1) and len(tiles) == grid[0] * grid[1]
    store = ChunkStore()
    for t in tiles:
        store.put("a", t, a[t.r0:t.r1, t.c0:t.c1])
    reader = store.reader("a", tiles, a.shape, a.dtype)
    r0, c0 = rng.integers(0, h), rng.integers(0, w)
    r1, c1 = rng.integers(r0 + 1, h + 1), rng.integers(c0 + 1, w + 1)
    assert np.array_equal(reader.read(r0, r1, c0, c1), a[r0:r1, c0:c1])
    # a halo read pads outside the raster with the fill value
    t = tiles[rng.integers(0, len(tiles))]
    got = read_halo(reader, t, 2, -7)
    padded = np.pad(a, 2, constant_values=-7)
    assert np.array_equal(got, padded[t.r0:t.r1 + 4, t.c0:t.c1 + 4])
    assert np.array_equal(read_halo(ArrayReader(a), t, 2, -7), got)
    # the store pickles as its folder: a copy reads the same tiles, never deletes them
    copy = pickle.loads(pickle.dumps(store))
    assert np.array_equal(copy.get("a", t), a[t.r0:t.r1, t.c0:t.c1])
    copy.close()
    assert store.root.exists()
    store.close()
    assert not store.root.exists()


@pytest.mark.parametrize("h,w", [(1, 1), (1, 5), (5, 1), (2, 2), (4, 6)])
def test_perimeter_cells_each_once(h, w):
    r, c = _perimeter(h, w)
    cells = set(zip(r.tolist(), c.tolist()))
    expect = {(i, j) for i in range(h) for j in range(w) if i in (0, h - 1) or j in (0, w - 1)}
    assert cells == expect and len(cells) == r.size


def test_hydrology_to_files_on_process_workers(tmp_path):
    # Tasks and the chunk store must survive pickling to dask workers in other
    # processes (the CLI may pass a distributed scheduler).
    distributed = pytest.importorskip("distributed")
    rng = np.random.default_rng(5)
    z = rng.integers(0, 50, (40, 45)).astype(np.float32)
    dem = tmp_path / "dem.tif"
    with rasterio.open(dem, "w", driver="GTiff", height=40, width=45, count=1,
                       dtype="float32", nodata=-9999, crs="EPSG:32650",
                       transform=Affine(30, 0, 0, 0, -30, 0)) as ds:
        ds.write(z, 1)
    ref = H.hydrology_to_files(dem, tmp_path / "threads", chunk_size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as cluster, \
                distributed.Client(cluster) as client:
            got = H.hydrology_to_files(dem, tmp_path / "procs", chunk_size=16, scheduler=client)
    for key in ref:
        with rasterio.open(ref[key]) as a, rasterio.open(got[key]) as b:
            assert np.array_equal(a.read(1), b.read(1), equal_nan=True)
    assert RasterReader(dem).shape == (40, 45)


def test_stale_stores_of_killed_processes_are_removed(tmp_path):
    """A run killed with SIGKILL cannot remove its tile folder (gigabytes on a large basin);
    the next run does: folders whose owner pid is gone go, live ones and foreign names stay."""
    import os
    import signal
    import subprocess
    import sys

    from pipeline.ops.tiles import remove_stale_stores

    code = ("import sys, numpy as np; from pipeline.ops.tiles import ChunkStore, Tile; "
            "s = ChunkStore(parent=sys.argv[1], prefix='pipeline-acc-'); "
            "s.put('a', Tile(0, 0, 0, 2, 0, 2), np.ones((2, 2))); print(s.root, flush=True); "
            "import time; time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    dead = proc.stdout.readline().strip()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    proc.stdout.close()
    assert os.path.basename(dead).startswith(f"pipeline-acc-{proc.pid}-") and os.path.isdir(dead)
    live = ChunkStore(parent=tmp_path, prefix="pipeline-acc-")
    other = tmp_path / "pipeline-acc-notapid-x"           # not a store name: never touched
    other.mkdir()
    assert remove_stale_stores(tmp_path) == 1
    assert not os.path.exists(dead) and live.root.is_dir() and other.is_dir()
    live.close()
    # work folders (pipeline.assess): basin "a" never takes basin "a-4242"'s folder for its own
    from pipeline.io.outputs import remove_orphans

    mine, theirs = tmp_path / f".work-a-{proc.pid}-x1", tmp_path / f".work-a-4242-{proc.pid}-x2"
    mine.mkdir()
    theirs.mkdir()
    assert remove_orphans(tmp_path, ".work-a-") == [mine]
    assert theirs.is_dir()
