"""COG writing of the land-cover indicators (pipeline.indicators.landscape.write_cogs_tiled):
K rasters written together give the bytes of K separate writes, deterministically,
whatever the temporary file's compression; work shared by the K rasters runs once."""

from __future__ import annotations

import threading

import numpy as np
import rasterio

from pipeline.indicators import landscape as LS
from tests.test_landcover import as_da


def _rasters(ny=300, nx=260, ch=(97, 113)):
    rng = np.random.default_rng(1)
    f = rng.random((ny, nx)).astype(np.float32)
    f[rng.random((ny, nx)) < 0.1] = np.nan
    ids = rng.integers(0, 50, (ny, nx)).astype(np.int32)
    codes = rng.integers(0, 12, (ny, nx)).astype(np.uint8)
    return [as_da(f, ch), as_da(ids, ch), as_da(codes, ch)], [np.nan, 0, 255]


def _write(tmp, tag, das, nodatas, together=True):
    paths = [tmp / f"{tag}_{i}.tif" for i in range(len(das))]
    if together:
        LS.write_cogs_tiled(das, paths, nodatas, das[0])
    else:
        for da, p, nd in zip(das, paths, nodatas):
            LS.write_cog_tiled(da, p, nd, das[0])
    return [p.read_bytes() for p in paths]


def test_written_together_equals_separate_and_is_deterministic(tmp_path):
    das, nodatas = _rasters()
    together = _write(tmp_path, "a", das, nodatas)
    assert together == _write(tmp_path, "b", das, nodatas, together=False)
    assert together == _write(tmp_path, "c", das, nodatas)     # the same bytes every time
    for i, da in enumerate(das):
        with rasterio.open(tmp_path / f"a_{i}.tif") as src:
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            np.testing.assert_array_equal(src.read(1), da.values)
    assert not list(tmp_path.glob(".*"))                       # no temporary file left behind


def test_temporary_file_compression_does_not_change_the_cog(tmp_path, monkeypatch):
    das, nodatas = _rasters()
    plain = _write(tmp_path, "plain", das, nodatas)
    monkeypatch.setattr(LS, "TMP_UNCOMPRESSED_BYTES", 0)      # every temporary file DEFLATE
    assert _write(tmp_path, "deflate", das, nodatas) == plain


def test_shared_work_runs_once_per_block(tmp_path):
    # two rasters sliced from one (2, y, x) block function: written together, it runs
    # once per block (3 x 3 chunks), not once per block and raster
    calls = []
    lock = threading.Lock()

    def both(b):
        with lock:
            calls.append(b.shape)
        return np.stack([b, 2 * b]).astype(np.float32)

    base = as_da(np.arange(90 * 80, dtype=np.float32).reshape(90, 80), (30, 27))
    stack = base.data.map_blocks(both, new_axis=0, chunks=((2,),) + base.data.chunks, dtype=np.float32,
                                 meta=np.empty((0, 0, 0), np.float32))
    das = [base.copy(data=stack[0]), base.copy(data=stack[1])]
    paths = LS.write_cogs_tiled(das, [tmp_path / "a.tif", tmp_path / "b.tif"], [np.nan, np.nan], base)
    assert len(calls) == 9
    with rasterio.open(paths[1]) as src:
        np.testing.assert_array_equal(src.read(1), 2 * base.values)


def test_rasters_with_different_row_chunks(tmp_path):
    # the second raster is rechunked to the first one's rows; both are written whole
    a = np.arange(50 * 40, dtype=np.float32).reshape(50, 40)
    das = [as_da(a, (17, 40)), as_da(a * 3, (23, 11))]
    paths = LS.write_cogs_tiled(das, [tmp_path / "a.tif", tmp_path / "b.tif"], [np.nan, np.nan], das[0])
    for p, da in zip(paths, das):
        with rasterio.open(p) as src:
            np.testing.assert_array_equal(src.read(1), da.values)


def test_cog_writer_groups_equal_one_by_one(tmp_path):
    # three groups through the pipelined writer: the bytes of write_cogs_tiled called per
    # group, the paths of each group returned in order, no temporary file left
    das, nodatas = _rasters()
    groups = [([das[0]], [nodatas[0]]), ([das[1], das[2]], nodatas[1:]), ([das[2]], [nodatas[2]])]
    with LS.CogWriter() as writer:
        for g, (d, nd) in enumerate(groups):
            writer.write(d, [tmp_path / f"w{g}_{i}.tif" for i in range(len(d))], nd, das[0])
        written = writer.wait()
    assert [[p.name for p in ps] for ps in written] == [["w0_0.tif"], ["w1_0.tif", "w1_1.tif"], ["w2_0.tif"]]
    for g, (d, nd) in enumerate(groups):
        one = LS.write_cogs_tiled(d, [tmp_path / f"s{g}_{i}.tif" for i in range(len(d))], nd, das[0])
        assert [p.read_bytes() for p in one] == [p.read_bytes() for p in written[g]]
    assert not list(tmp_path.glob(".*"))


def test_cog_writer_copy_error_is_an_output_error_and_leaves_nothing(tmp_path, monkeypatch):
    import pytest

    from pipeline.errors import OutputError

    das, nodatas = _rasters()
    real = LS._cog_copy

    def failing(src, dst, block, levels):
        if "bad" in dst.name:
            raise OSError(28, "No space left on device")
        real(src, dst, block, levels)

    monkeypatch.setattr(LS, "_cog_copy", failing)
    with pytest.raises(OutputError, match="bad_0.tif.*No space left"):
        with LS.CogWriter() as writer:
            writer.write([das[0]], [tmp_path / "good_0.tif"], [nodatas[0]], das[0])
            writer.write([das[1]], [tmp_path / "bad_0.tif"], [nodatas[1]], das[0])
            writer.write([das[2]], [tmp_path / "after_0.tif"], [nodatas[2]], das[0])
            writer.wait()
    assert not (tmp_path / "bad_0.tif").exists()
    assert not list(tmp_path.glob(".*"))                       # parts, levels, copies: all gone


def test_cog_writer_stage_error_waits_for_the_copy_and_cleans_up(tmp_path, monkeypatch):
    # the rows of the second group fail while the first group's copy may still run: the
    # error propagates, the first copy completes or is dropped, no temporary file remains
    import pytest

    das, nodatas = _rasters()

    def broken(b):
        raise RuntimeError("kernel failed")

    bad = das[0].copy(data=das[0].data.map_blocks(broken, dtype=np.float32))
    with pytest.raises(RuntimeError, match="kernel failed"):
        with LS.CogWriter() as writer:
            writer.write([das[1]], [tmp_path / "first.tif"], [nodatas[1]], das[0])
            writer.write([bad], [tmp_path / "second.tif"], [np.nan], das[0])
    assert not (tmp_path / "second.tif").exists()
    assert not list(tmp_path.glob(".*"))
