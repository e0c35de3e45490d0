"""The per-chunk block memo (pipeline.cache.BlockMemo) and its use by the land-cover ops:
memoised results are byte-identical to unmemoised ones, and a new vintage that differs
in one chunk recomputes only the blocks whose (halo-padded) input changed."""

from __future__ import annotations

import os

import dask
import numpy as np
import pytest
import rasterio
import scipy.ndimage as ndi
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.cache import BlockMemo, StepCache
from pipeline.ops import landcover as L
from tests.test_landcover import as_da, brute_accumulation, random_d8

EIGHT = np.ones((3, 3), bool)


class Counting:
    """A block function that counts its calls (thread-safe enough under the sync scheduler)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *blocks):
        self.calls += 1
        return self.fn(*blocks)


# --------------------------------------------------------------------------- the memo itself
def test_array_and_dict_results_round_trip(tmp_path):
    m = BlockMemo(tmp_path / "blocks")
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    a[1, 1] = np.nan
    f = Counting(lambda x: x * 2)
    r1 = m("double", f, (a,), {"p": 1})
    r2 = m("double", f, (a.copy(),), {"p": 1})            # same content, another object: a hit
    assert f.calls == 1 and (m.hits, m.misses) == (1, 1)
    assert r2.dtype == np.float32 and r2.tobytes() == r1.tobytes()

    g = Counting(lambda x: {"n": 7, "s": 0.5, "top": x[0].copy(), "flag": True})
    d1 = m("summary", g, (a,))
    d2 = m("summary", g, (a,))
    assert g.calls == 1
    assert d2["n"] == 7 and isinstance(d2["n"], int) and d2["s"] == 0.5 and d2["flag"] is True
    np.testing.assert_array_equal(d2["top"], d1["top"])
    # nothing but finished entries in the memo folder
    assert not [p for p in (tmp_path / "blocks").rglob(".*")]


def test_key_covers_name_params_dtype_shape_and_bytes():
    m = BlockMemo("unused")
    a = np.zeros((2, 3), np.uint8)
    k = m.key("f", (a,), {"r": 1})
    assert m.key("f", (a.copy(),), {"r": 1}) == k
    assert m.key("g", (a,), {"r": 1}) != k                         # another function
    assert m.key("f", (a,), {"r": 2}) != k                         # another parameter
    assert m.key("f", (a.astype(np.int8),), {"r": 1}) != k          # same bytes, other dtype
    assert m.key("f", (a.reshape(3, 2),), {"r": 1}) != k            # same bytes, other shape
    b = a.copy()
    b[1, 2] = 1
    assert m.key("f", (b,), {"r": 1}) != k                         # one byte differs
    assert m.key("f", (a, a), {"r": 1}) != k                       # a second input


def test_damaged_entry_is_recomputed_and_replaced(tmp_path):
    m = BlockMemo(tmp_path)
    a = np.ones((4, 4))
    m("f", lambda x: x + 1, (a,))
    (p,) = list(tmp_path.glob("*/*.npy"))
    p.write_bytes(b"not an npy file")
    f = Counting(lambda x: x + 1)
    np.testing.assert_array_equal(m("f", f, (a,)), a + 1)
    assert f.calls == 1
    np.testing.assert_array_equal(np.load(p), a + 1)


def test_prune_drops_least_recently_used(tmp_path):
    m = BlockMemo(tmp_path, max_bytes=0)
    for i in range(3):
        m("f", lambda x: x, (np.full((10, 10), i, np.float64),))
    files = sorted(tmp_path.glob("*/*.npy"))
    assert len(files) == 3
    size = files[0].stat().st_size
    for i, p in enumerate(files):               # distinct ages: oldest first in this order
        os.utime(p, ns=(10**18 + i * 10**9, 10**18 + i * 10**9))
    m.max_bytes = 2 * size
    assert m.prune() == 1
    assert not files[0].exists() and files[1].exists() and files[2].exists()
    # a hit touches the file: it becomes the most recently used
    got = np.load(files[1])
    m("f", lambda x: pytest.fail("must be served from the memo"), (got,))
    m.max_bytes = size
    assert m.prune() == 1
    assert files[1].exists() and not files[2].exists()


def test_step_cache_prunes_blocks_on_close(tmp_path):
    c = StepCache(tmp_path / "cache")
    memo = c.block_memo()
    assert memo is c.block_memo() and memo.root == tmp_path / "cache" / "blocks"
    memo("f", lambda x: x, (np.zeros((50, 50)),))
    memo.max_bytes = 0
    c.close()
    assert not list(memo.root.glob("*/*.npy"))


# --------------------------------------------------------------------------- memoised ops
def _sync():
    return dask.config.set(scheduler="synchronous")


class Recorder(BlockMemo):
    """BlockMemo that records which function names were computed (misses) and served (hits)."""

    def __init__(self, root):
        super().__init__(root)
        self.computed: list[str] = []
        self.served: list[str] = []

    def __call__(self, name, fn, blocks, params=()):
        before = self.misses
        out = super().__call__(name, fn, blocks, params)
        (self.computed if self.misses > before else self.served).append(name)
        return out


def _field(rng, ny, nx):
    return (ndi.gaussian_filter(rng.random((ny, nx)), 2) > 0.5).astype(np.float64)


@settings(max_examples=10, deadline=None)
@given(ny=st.integers(20, 70), nx=st.integers(20, 70), seed=st.integers(0, 10**6),
       ch=st.tuples(st.integers(8, 30), st.integers(8, 30)))
def test_memoised_ops_equal_unmemoised_for_any_chunking(tmp_path_factory, ny, nx, seed, ch):
    rng = np.random.default_rng(seed)
    a = _field(rng, ny, nx)
    a[rng.random((ny, nx)) < 0.05] = np.nan
    feats = (rng.random((ny, nx)) < 0.02).astype(np.uint8)
    valid = ~np.isnan(a)
    memo = BlockMemo(tmp_path_factory.mktemp("memo"))
    with _sync():
        for _ in range(2):      # cold memo, then warm memo: both equal the plain result
            plain = L.disk_share(as_da(a, ch), 95.0).values
            got = L.disk_share(as_da(a, ch), 95.0, memo=memo).values
            assert got.dtype == plain.dtype and got.tobytes() == plain.tobytes()
            plain = L.distance_to(as_da(feats, ch), 100.0, valid=as_da(valid, ch)).values
            got = L.distance_to(as_da(feats, ch), 100.0, valid=as_da(valid, ch), memo=memo).values
            assert got.tobytes() == plain.tobytes()
            p0 = L.label_patches(as_da(a, ch))
            p1 = L.label_patches(as_da(a, ch), memo=memo)
            assert p1.labels.values.tobytes() == p0.labels.values.tobytes()
            np.testing.assert_array_equal(p1.cells, p0.cells)
            np.testing.assert_array_equal(p1.first_index, p0.first_index)
        assert memo.hits > 0
    ref, _ = ndi.label(np.nan_to_num(a) == 1, structure=EIGHT)
    np.testing.assert_array_equal(p1.labels.values, ref)


def test_one_changed_chunk_recomputes_only_blocks_that_see_it(tmp_path):
    """4 x 4 chunks of 25 cells; a 100 m disk at 30 m cells has a 3-cell halo, so a change
    strictly inside chunk (1, 1) (rows/cols 30..44, more than 3 cells from its edges)
    changes the padded input of that chunk only: 1 of 16 disk blocks is recomputed.
    Patch labelling: the summary pass sees the chunk alone (1 recomputed); the relabel
    pass recomputes the changed chunk and those whose lookup table changed (the new
    patch ids shift every later id, so the count is checked against the labels, not fixed)."""
    rng = np.random.default_rng(3)
    a = _field(rng, 100, 100)
    b = a.copy()
    b[30:45, 30:45] = 1.0 - b[30:45, 30:45]
    memo = Recorder(tmp_path)
    with _sync():
        L.disk_share(as_da(a, 25), 100.0, memo=memo).values
        L.label_patches(as_da(a, 25), memo=memo).labels.values
        assert memo.served == [] and len(memo.computed) == 16 * 3
        memo.computed.clear()
        share = L.disk_share(as_da(b, 25), 100.0, memo=memo).values
        assert memo.computed == ["focal.disk_share/f32"]
        memo.computed.clear()
        p = L.label_patches(as_da(b, 25), memo=memo)
        assert memo.computed == ["patches.block_summary"]
        labels = p.labels.values
        assert "patches.relabel_block" in memo.computed and memo.served.count("patches.relabel_block") >= 1
    np.testing.assert_array_equal(share.tobytes(), L.disk_share(as_da(b, 25), 100.0).values.tobytes())
    ref, _ = ndi.label(b == 1, structure=EIGHT)
    np.testing.assert_array_equal(labels, ref)


def test_landscape_files_identical_with_and_without_memo(tmp_path):
    """compute_landscape_indicators writes the same bytes with a cold memo, a warm memo
    and none; a second vintage differing in one chunk also matches its uncached run."""
    from pipeline.indicators import landscape as LS

    rng = np.random.default_rng(7)
    ny, nx, ch = 90, 100, (40, 45)
    field = ndi.gaussian_filter(rng.random((ny, nx)), 3)
    lc = (np.searchsorted(np.quantile(field, np.linspace(0, 1, 10)[1:-1]), field) + 1).astype(np.uint8)
    lc[:3, :4] = 255
    lc2 = lc.copy()
    lc2[50:70, 55:80] = 1                     # a forest planted inside chunk (1, 1)
    d8 = random_d8(rng, ny, nx)
    acc = brute_accumulation(d8, np.ones((ny, nx)))
    streams = np.zeros((ny, nx), bool)
    streams[45, 5:95] = True
    params = {"dispersal_distance_m": 150.0, "landscape_buffer_m": 120.0, "riparian_buffer_m": 60.0}
    accda = xr.DataArray(acc, dims=("y", "x"), coords=as_da(d8, ch).coords)
    memo = Recorder(tmp_path / "memo")

    def run(cover, folder, m):
        return LS.compute_landscape_indicators(as_da(cover, ch), as_da(d8, ch), accda, as_da(streams, ch),
                                               params, tmp_path / folder, memo=m)

    def same(o1, o2):
        for name in LS.NAMES:
            assert o1[name].read_bytes() == o2[name].read_bytes(), name
        assert o1["patch_table"].read_bytes() == o2["patch_table"].read_bytes()

    plain = run(lc, "plain", None)
    same(plain, run(lc, "cold", memo))
    n_cold = len(memo.computed)
    memo.computed.clear()
    same(plain, run(lc, "warm", memo))
    assert memo.computed == [] and len(memo.served) >= n_cold
    memo.computed.clear()
    same(run(lc2, "plain2", None), run(lc2, "memo2", memo))
    assert 0 < len(memo.computed) < n_cold
    with rasterio.open(tmp_path / "memo2" / "canonical.tif") as src:
        np.testing.assert_array_equal(src.read(1), lc2)
    # a plain run writes nothing outside its output folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cold", "memo", "memo2", "plain", "plain2", "warm"]


# --------------------------------------------------------------------------- hydrology entries
def test_hydrology_entry_holds_cogs_equal_to_the_computed_rasters(tmp_path, monkeypatch):
    """The cache converts the hydrology rasters to COG before storing them (the published
    files are COGs anyway): the entry and the run folder hold COGs with the computed pixels,
    and a run restoring the entry has nothing left to convert."""
    from rasterio.transform import from_origin

    from pipeline.io.outputs import OutputLayout

    from pipeline.report.cog import convert_to_cog
    from pipeline.run import Hydrology

    rng = np.random.default_rng(0)
    a = rng.random((300, 280)).astype(np.float32)
    mask = (rng.random((300, 280)) > 0.1).astype(np.uint8)

    def compute(ing, aligned, layout, params, chunk, notes, vintage=None):
        layout.hydrology.mkdir(parents=True, exist_ok=True)
        prof = dict(driver="GTiff", width=280, height=300, count=1, crs="EPSG:32650",
                    transform=from_origin(5e5, 1e5, 30, 30), tiled=True, blockxsize=128, blockysize=128)
        paths = {"slope_deg": layout.hydrology / "slope_deg.tif", "basin_mask": layout.hydrology / "basin_mask.tif"}
        for arr, p, nodata in ((a, paths["slope_deg"], np.nan), (mask, paths["basin_mask"], None)):
            with rasterio.open(p, "w", dtype=arr.dtype, nodata=nodata, **prof) as dst:
                dst.write(arr, 1)
        notes.append("computed")
        return Hydrology(paths=paths, basin_mask=mask.astype(bool))

    c = StepCache(tmp_path / "cache")
    monkeypatch.setattr(StepCache, "hydrology_key", lambda self, *args: "k" * 64)
    layout = OutputLayout(tmp_path / "run1", "b")
    notes: list[str] = []
    c.hydrology(None, {}, layout, {}, 64, notes, compute)
    layout2 = OutputLayout(tmp_path / "run2", "b")
    hyd2 = c.hydrology(None, {}, layout2, {}, 64, notes, lambda *x: pytest.fail("must be restored"))
    assert notes == ["computed", "computed"]
    for folder in (layout.hydrology, c.entry("hydrology", "k" * 64), layout2.hydrology):
        with rasterio.open(folder / "slope_deg.tif") as src:
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            np.testing.assert_array_equal(src.read(1), a)
        with rasterio.open(folder / "basin_mask.tif") as src:
            np.testing.assert_array_equal(src.read(1), mask)
    before = (layout2.hydrology / "slope_deg.tif").stat().st_ino
    convert_to_cog(hyd2.paths["slope_deg"])            # deliver's conversion: nothing to do
    assert (layout2.hydrology / "slope_deg.tif").stat().st_ino == before
    np.testing.assert_array_equal(hyd2.basin_mask, mask.astype(bool))
