"""Fused land-cover passes: K disk shares of one class raster in one pass
(pipeline.kernels.focal.disk_shares_coded, pipeline.ops.landcover.disk_shares) equal,
bit for bit, the separate disk_share of each reclassified raster; the memo serves them;
computed together they run the kernel once per block."""

from __future__ import annotations

import dask
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.cache import BlockMemo
from pipeline.io.classes import load_canonical
from pipeline.kernels import focal as kfocal
from pipeline.ops import landcover as L
from tests.test_landcover import as_da, chunkings

N_CODES = 12

# the accumulation engine's cost grows with the tile count (Python per tile and per
# perimeter node): 1-cell tiles (576 on 24 x 24, six accumulations per example) made the
# upstream-share tests 100 s; tiled == untiled down to 1-cell tiles is tested in
# test_hydrology_tiled, here 2-25 cells still cut every raster into odd tiles
acc_chunkings = st.tuples(st.integers(2, 25), st.integers(2, 25))


def _tables(rng, k, shared_nan):
    """K random (256,) tables over codes 0..N_CODES-1 (NaN elsewhere, code 255 included):
    0/1 or fractional values; NaN codes shared by all tables or drawn per table."""
    tabs = np.full((k, 256), np.nan)
    common = rng.random(N_CODES) < 0.2
    for t in range(k):
        vals = rng.integers(0, 2, N_CODES).astype(float) if t % 2 == 0 else rng.random(N_CODES)
        nan = common if shared_nan else rng.random(N_CODES) < 0.25
        tabs[t, :N_CODES] = np.where(nan, np.nan, vals)
    return tabs


def _codes(rng, ny, nx):
    c = rng.integers(0, N_CODES, (ny, nx)).astype(np.uint8)
    c[rng.random((ny, nx)) < 0.1] = 255
    return c


def _separate(codes, tabs, ch, radius, cells, mask_center):
    """The reference: one disk_share per table on its float32 reclassified raster."""
    out = []
    for t in tabs:
        vals = t.astype(np.float32)[codes]
        da = as_da(vals, ch, cell=cells[0], cell_x=cells[1])
        out.append(L.disk_share(da, radius, mask_center=mask_center).values)
    return out


def _bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 45), st.integers(1, 45), st.integers(0, 2**31 - 1), chunkings,
       st.sampled_from([30.0, 45.0, 100.0, 151.0]), st.sampled_from([(30.0, 30.0), (20.0, 30.0)]),
       st.integers(1, 4), st.booleans(), st.booleans())
def test_disk_shares_bit_identical_to_separate_disk_share(ny, nx, seed, ch, radius, cells, k, shared_nan,
                                                          mask_center):
    rng = np.random.default_rng(seed)
    codes = _codes(rng, ny, nx)
    tabs = _tables(rng, k, shared_nan).astype(np.float32)
    names = [f"s{i}" for i in range(k)]
    da = as_da(codes, ch, cell=cells[0], cell_x=cells[1])
    got = L.disk_shares(da, tabs, radius, names, mask_center=mask_center)
    ref = _separate(codes, tabs, ch, radius, cells, mask_center)
    for g, r, name in zip(got, ref, names):
        assert g.name == name and g.dtype == np.float32 and g.shape == codes.shape
        np.testing.assert_array_equal(_bits(g.values), _bits(r))
        assert g.rio.crs.to_epsg() == 32650 and g.attrs["note"] == "kept"
        np.testing.assert_array_equal(g.x.values, da.x.values)


def test_count_groups_follow_nan_patterns():
    # tables 0 and 2 have NaN at the same codes (their values differ): one count group
    tabs = np.full((3, 256), np.nan)
    tabs[0, :3] = [1, 0, 1]
    tabs[1, :2] = [0.5, 0.25]
    tabs[2, :3] = [0, 0, 1]
    assert kfocal.count_groups(tabs).tolist() == [0, 1, 0]


def test_kernel_equals_disk_share_kernel_on_a_canonical_block():
    # the three local shares of the landscape step, on one padded block of real class codes
    table = load_canonical()
    tabs = np.stack([table.lut(a) for a in ("natural", "intensive", "undisturbed")]).astype(np.float64)
    rng = np.random.default_rng(5)
    codes = rng.choice(np.flatnonzero(~np.isnan(tabs[0])), size=(60, 70)).astype(np.uint8)
    codes[rng.random(codes.shape) < 0.05] = 255
    hw = kfocal.disk_half_widths(150.0, 30.0, 30.0)
    dy, dx = (hw.size - 1) // 2, int(hw.max())
    padded = np.pad(codes, ((dy, dy), (dx, dx)), constant_values=255)
    for mask_center in (True, False):
        got = kfocal.disk_shares_coded(padded, tabs, kfocal.count_groups(tabs), hw, dy, dx, mask_center)
        for t in range(3):
            ref = kfocal.disk_share(tabs[t][padded], hw, dy, dx, mask_center).astype(np.float32)
            np.testing.assert_array_equal(_bits(got[t]), _bits(ref))


class Counter(BlockMemo):
    """BlockMemo that counts the kernel calls (misses) per function name."""

    def __init__(self, root):
        super().__init__(root)
        self.calls: dict[str, int] = {}

    def __call__(self, name, fn, blocks, params=()):
        before = self.misses
        out = super().__call__(name, fn, blocks, params)
        if self.misses > before:
            self.calls[name] = self.calls.get(name, 0) + 1
        return out


def test_memoised_shares_equal_plain_and_run_once_per_block(tmp_path):
    rng = np.random.default_rng(11)
    codes = _codes(rng, 50, 40)
    tabs = _tables(rng, 3, True)
    memo = Counter(tmp_path)
    plain = [s.values for s in L.disk_shares(as_da(codes, (20, 15)), tabs, 100.0, ["a", "b", "c"])]
    with dask.config.set(scheduler="synchronous"):
        for _ in range(2):      # cold memo, then warm: both equal the plain result
            got = dask.compute(*[s.data for s in L.disk_shares(as_da(codes, (20, 15)), tabs, 100.0,
                                                                ["a", "b", "c"], memo=memo)])
            for g, p in zip(got, plain):
                assert g.tobytes() == p.tobytes()
    # 3 x 3 chunks: the kernel ran once per block for the three shares, then was served
    assert memo.calls == {"focal.disk_shares_coded/f32": 9}
    assert memo.hits == 9


def test_disk_shares_needs_a_halo_code():
    tabs = np.zeros((1, 256))
    with pytest.raises(ValueError, match="NaN in every table"):
        L.disk_shares(as_da(np.zeros((4, 4), np.uint8), (2, 2)), tabs, 30.0, ["s"])


# --------------------------------------------------------------------------- upstream shares
def _separate_upstream_share(d8, w, acc):
    """The former upstream_share: one flow_accumulation per numerator and denominator."""
    from pipeline.ops.hydrology import flow_accumulation

    d8valid = d8 != 255
    num = flow_accumulation(d8, w.fillna(0.0).astype(np.float64))
    missing = acc is None or bool((w.isnull() & d8valid).any())
    den = flow_accumulation(d8, w.notnull().astype(np.float64)) if missing else acc
    return ((num / den.where(den > 0)).where(d8valid & w.notnull())).values.astype(np.float32)


@settings(max_examples=10, deadline=None)
@given(st.integers(2, 24), st.integers(2, 24), st.integers(0, 2**31 - 1), acc_chunkings,
       st.sampled_from([0.0, 0.2]), st.booleans())
def test_upstream_shares_bit_identical_to_separate_accumulations(ny, nx, seed, ch, nodata_share, with_acc):
    from pipeline.ops.hydrology import flow_accumulation
    from tests.test_landcover import random_d8

    rng = np.random.default_rng(seed)
    d8 = random_d8(rng, ny, nx)
    d8[rng.random((ny, nx)) < 0.05] = 255
    d8da = as_da(d8, ch)
    acc = flow_accumulation(d8da) if with_acc else None
    ws = []
    for k in range(3):      # nodata in some rasters only: each needs its own denominator
        a = rng.random((ny, nx)) * (k != 1)
        if k != 0:
            a[rng.random((ny, nx)) < nodata_share] = np.nan
        ws.append(as_da(a, ch))
    got = L.upstream_shares(d8da, ws, ["a", "b", "c"], acc)
    for g, w, name in zip(got, ws, ["a", "b", "c"]):
        assert g.name == name and g.dtype == np.float32
        np.testing.assert_array_equal(_bits(g.values), _bits(_separate_upstream_share(d8da, w, acc)))


@settings(max_examples=12, deadline=None)
@given(st.integers(2, 24), st.integers(2, 24), st.integers(0, 2**31 - 1), acc_chunkings, st.integers(1, 4),
       st.booleans(), st.booleans(), st.booleans(), st.booleans())
def test_upstream_shares_of_classes_bit_identical_to_weight_rasters(ny, nx, seed, ch, k, shared_nan, with_acc,
                                                                    d8_chunks_differ, complete):
    # the class-table path (weights looked up per tile, codes present found in one pass)
    # gives the shares of the weight rasters lut[classes], bit for bit, with or without
    # nodata codes (own denominators) and with class and D8 rasters chunked differently
    from pipeline.ops.hydrology import flow_accumulation
    from tests.test_landcover import random_d8

    rng = np.random.default_rng(seed)
    d8 = random_d8(rng, ny, nx)
    d8[rng.random((ny, nx)) < 0.05] = 255
    codes = _codes(rng, ny, nx)
    tabs = _tables(rng, k, shared_nan).astype(np.float32)
    if complete:    # every cell has a weight in every table: all layers use the given accumulation
        codes[codes == 255] = 0
        tabs[:, :N_CODES] = np.nan_to_num(tabs[:, :N_CODES], nan=0.25)
    d8da = as_da(d8, ch)
    cls = as_da(codes, 5 if d8_chunks_differ else ch)
    acc = flow_accumulation(d8da) if with_acc else None
    names = [f"s{i}" for i in range(k)]
    got = L.upstream_shares_of_classes(d8da, cls, tabs, names, acc)
    weights = [as_da(tabs[i][codes], ch) for i in range(k)]
    want = L.upstream_shares(d8da, weights, names, acc)
    for g, w, name in zip(got, want, names):
        assert g.name == name and g.dtype == np.float32 and np.isnan(g.rio.nodata)
        np.testing.assert_array_equal(_bits(g.values), _bits(w.values))


def test_upstream_shares_of_classes_by_hand():
    # a 1 x 4 row draining east into an outlet; codes 1 (weight 1), 2 (weight 0.5),
    # 255 nodata (counts in neither sum): shares 1, 1, 2/3... worked by hand
    d8 = np.array([[1, 1, 1, 0]], dtype=np.uint8)
    codes = np.array([[1, 255, 2, 1]], dtype=np.uint8)
    lut = np.full((1, 256), np.nan, np.float32)
    lut[0, 1], lut[0, 2] = 1.0, 0.5
    acc = np.array([[1, 2, 3, 4]], dtype=np.int64)
    from tests.test_landcover import as_da as _as

    got = L.upstream_shares_of_classes(_as(d8, 2), _as(codes, 2), lut, ["s"], _as(acc, 2))[0].values
    # cell 0: 1/1; cell 1: nodata; cell 2: (1 + 0.5) / 2; cell 3: (1 + 0.5 + 1) / 3
    np.testing.assert_allclose(got, [[1.0, np.nan, 0.75, 2.5 / 3]], rtol=1e-7)
    with pytest.raises(ValueError, match=r"\(1, 256\)"):
        L.upstream_shares_of_classes(_as(d8, 2), _as(codes, 2), lut[:, :10], ["s"], None)
