"""Tiled land-cover ops (pipeline.ops.landcover) and the basin-wide indicator rasters
(pipeline.indicators.landscape): each equals its one-array reference (scipy.ndimage)
for any chunking, plus hand-worked cases."""

from __future__ import annotations

import sys
import types

import dask.array as dsa
import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401
import scipy.ndimage as ndi
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.transform import from_origin

from pipeline.errors import ConfigError, InputDataError
from pipeline.indicators.catalog import CLASS_CODES
from pipeline.kernels import distance as kdist
from pipeline.kernels import focal as kfocal
from pipeline.kernels import patches as kpatch
from pipeline.ops import landcover as L

EIGHT = np.ones((3, 3), bool)
D8 = {1: (0, 1), 2: (1, 1), 4: (1, 0), 8: (1, -1), 16: (0, -1), 32: (-1, -1), 64: (-1, 0), 128: (-1, 1)}


def as_da(a, chunks, cell=30.0, cell_x=None, crs="EPSG:32650"):
    """Dask-backed (y, x) DataArray on a projected grid with `cell` metre cells."""
    cx = cell if cell_x is None else cell_x
    da = xr.DataArray(dsa.from_array(a, chunks=chunks), dims=("y", "x"),
                      coords={"y": 1e5 - cell * (np.arange(a.shape[0]) + 0.5),
                              "x": 5e5 + cx * (np.arange(a.shape[1]) + 0.5)}, attrs={"note": "kept"})
    return da.rio.write_crs(crs).rio.write_transform(from_origin(5e5, 1e5, cx, cell))


def disk_reference(a, radius, cy, cx):
    """Direct convolution with the disk footprint, NaN excluded from both sums."""
    hw = kfocal.disk_half_widths(radius, cy, cx)
    fp = kfocal.disk_footprint(hw).astype(float)
    valid = ~np.isnan(a)
    num = ndi.convolve(np.where(valid, a, 0.0), fp, mode="constant", cval=0.0)
    den = ndi.convolve(valid.astype(float), fp, mode="constant", cval=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[~valid | (den == 0)] = np.nan
    return out


def brute_accumulation(d8, w):
    """Each valid cell adds its weight to itself and every cell downstream of it."""
    ny, nx = d8.shape
    acc = np.zeros((ny, nx))
    for y in range(ny):
        for x in range(nx):
            if d8[y, x] == 255:
                continue
            yy, xx = y, x
            while True:
                acc[yy, xx] += w[y, x]
                c = int(d8[yy, xx])
                if c == 0:
                    break
                dy, dx = D8[c]
                yy, xx = yy + dy, xx + dx
                if not (0 <= yy < ny and 0 <= xx < nx) or d8[yy, xx] == 255:
                    break
    return acc


def _fake_flow_accumulation(d8, weights=None):
    a = np.asarray(d8.values)
    w = np.ones(a.shape) if weights is None else np.asarray(weights.values, dtype=float)
    return xr.DataArray(brute_accumulation(a, w), coords=d8.coords, dims=d8.dims)


@pytest.fixture
def hydrology(monkeypatch):
    """The hydrology engineer's flow_accumulation if present, else a brute-force stand-in."""
    try:
        from pipeline.ops import hydrology as real  # noqa: F401
        return "real"
    except ImportError:
        mod = types.ModuleType("pipeline.ops.hydrology")
        mod.flow_accumulation = _fake_flow_accumulation
        monkeypatch.setitem(sys.modules, "pipeline.ops.hydrology", mod)
        return "stand-in"


def random_d8(rng, ny, nx):
    """D8 of a random DEM: steepest drop to a lower neighbour, 0 at pits."""
    z = rng.random((ny, nx))
    d8 = np.zeros((ny, nx), np.uint8)
    for y in range(ny):
        for x in range(nx):
            best, code = 0.0, 0
            for c, (dy, dx) in D8.items():
                yy, xx = y + dy, x + dx
                if 0 <= yy < ny and 0 <= xx < nx:
                    drop = (z[y, x] - z[yy, xx]) / np.hypot(dy, dx)
                    if drop > best:
                        best, code = drop, c
            d8[y, x] = code
    return d8


chunkings = st.tuples(st.integers(1, 25), st.integers(1, 25))


# --------------------------------------------------------------------------- patches
def test_label_hand_worked():
    # (0,0) and (1,1) touch diagonally: one patch (8-connectivity). Ids follow each
    # patch's first cell in row-major order: (0,0) -> 1, (0,3) -> 2, (2,3) -> 3;
    # first-cell indices 0, 3 and 2*4+3 = 11.
    m = np.array([[1, 0, 0, 1],
                  [0, 1, 0, 0],
                  [0, 0, 0, 1]], np.uint8)
    p = L.label_patches(as_da(m, (2, 2)))
    np.testing.assert_array_equal(p.labels.values, [[1, 0, 0, 2], [0, 1, 0, 0], [0, 0, 0, 3]])
    assert p.cells.tolist() == [0, 2, 1, 1]
    assert p.first_index.tolist() == [-1, 0, 3, 11]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 50), st.integers(1, 50), st.integers(0, 2**31 - 1), st.floats(0.2, 0.8), chunkings)
def test_labels_equal_scipy_for_any_chunking(ny, nx, seed, frac, ch):
    rng = np.random.default_rng(seed)
    m = ndi.uniform_filter(rng.random((ny, nx)), 3) < frac      # clumpy
    ref, n = ndi.label(m, structure=EIGHT)
    p = L.label_patches(as_da(m.astype(np.uint8), ch))
    np.testing.assert_array_equal(p.labels.values, ref)
    assert p.n == n
    np.testing.assert_array_equal(p.cells[1:], np.bincount(ref.ravel(), minlength=n + 1)[1:])


def test_labels_snake_across_many_chunks():
    # one serpentine patch that crosses every seam many times: union-find must join all
    m = np.zeros((40, 40), np.uint8)
    m[::4, :39] = 1
    m[2::4, 1:] = 1
    m[1::4, 38] = 1
    m[3::4, 1] = 1
    m[1::4, 39] = 0
    p = L.label_patches(as_da(m, (3, 5)))
    assert p.n == 1 and p.cells[1] == m.sum()


def test_labels_keep_grid_and_nan_is_background():
    a = np.array([[1.0, np.nan], [0.0, 1.0]], np.float32)
    p = L.label_patches(as_da(a, (1, 1)))
    assert p.labels.values.tolist() == [[1, 0], [0, 1]]
    assert p.labels.rio.crs.to_epsg() == 32650 and p.labels.attrs["note"] == "kept"
    assert p.labels.dtype == np.int32


def test_label_kernel_parent_growth_worst_case():
    m = np.zeros((9, 9), np.uint8)
    m[::2, ::2] = 1                                            # 25 isolated cells
    lab, n = kpatch.label_block(m)
    assert n == 25 and lab[8, 8] == 25


def test_label_kernel_by_hand():
    # two diagonal cells touch (8-connected): one component; the lone cell at the
    # right is a second, numbered after the first in row-major order
    m = np.array([[1, 0, 0, 0],
                  [0, 1, 0, 1],
                  [0, 0, 0, 0]], dtype=bool)
    lab, n = kpatch.label_block(m)
    assert n == 2
    assert lab.tolist() == [[1, 0, 0, 0], [0, 1, 0, 2], [0, 0, 0, 0]]
    assert kpatch.label_block(np.zeros((3, 5), dtype=bool))[1] == 0
    assert kpatch.label_block(np.zeros((0, 4), dtype=bool))[1] == 0


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 40), cols=st.integers(1, 40),
       p=st.floats(0.05, 0.95))
def test_label_kernel_equals_ndimage_label(seed, rows, cols, p):
    m = np.random.default_rng(seed).random((rows, cols)) < p
    got, n = kpatch.label_block(m)
    want, nw = ndi.label(m, structure=np.ones((3, 3), dtype=bool))
    assert n == nw
    np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------- disk shares
def test_disk_hand_worked():
    # radius 30 m on 30 m cells: the footprint is the cross (centre + 4 neighbours).
    # Centre cell (1,1) of [[1,0,1],[0,1,0],[1,NaN,1]]: cross values 1 (centre), 0 (N),
    # 0 (W), 0 (E), NaN (S) -> 1 / 4 = 0.25. Corner (0,0): 1, 0 (E), 0 (S) -> 1/3.
    a = np.array([[1, 0, 1], [0, 1, 0], [1, np.nan, 1]])
    out = L.disk_share(as_da(a, (2, 2)), 30.0).values
    assert out[1, 1] == pytest.approx(0.25)
    assert out[0, 0] == pytest.approx(1 / 3)
    assert np.isnan(out[2, 1])                                  # nodata centre -> NaN
    assert kfocal.disk_half_widths(30.0, 30.0, 30.0).tolist() == [0, 1, 0]
    # radius 100 m on 30 m cells: rows -3..3, half widths floor(sqrt(100^2 - (30 dy)^2) / 30)
    assert kfocal.disk_half_widths(100.0, 30.0, 30.0).tolist() == [1, 2, 3, 3, 3, 2, 1]


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 45), st.integers(1, 45), st.integers(0, 2**31 - 1), chunkings,
       st.sampled_from([30.0, 45.0, 100.0, 151.0]), st.sampled_from([(30.0, 30.0), (20.0, 30.0)]))
def test_disk_share_equals_convolution_for_any_chunking(ny, nx, seed, ch, radius, cells):
    rng = np.random.default_rng(seed)
    a = (rng.random((ny, nx)) < 0.5).astype(float)
    a[rng.random((ny, nx)) < 0.15] = np.nan
    out = L.disk_share(as_da(a, ch, cell=cells[0], cell_x=cells[1]), radius)
    ref = disk_reference(a, radius, *cells)
    np.testing.assert_allclose(out.values, ref, rtol=1e-6, atol=1e-7)
    assert out.dtype == np.float32 and out.rio.crs.to_epsg() == 32650
    np.testing.assert_array_equal(out.x.values, as_da(a, ch, cell=cells[0], cell_x=cells[1]).x.values)


def test_disk_share_rechunks_chunks_smaller_than_depth():
    a = np.random.default_rng(0).random((30, 30))
    da = as_da(a, (2, 3))
    out = L.disk_share(da, 150.0)                   # depth 5 > chunk 2
    assert min(out.data.chunks[0]) >= 5 and min(out.data.chunks[1]) >= 5
    np.testing.assert_allclose(out.values, disk_reference(a, 150.0, 30.0, 30.0), rtol=1e-6)


def test_geographic_grid_rejected():
    da = as_da(np.ones((3, 3)), (3, 3), cell=0.01, crs="EPSG:4326")
    with pytest.raises(InputDataError, match="geographic"):
        L.disk_share(da, 100.0)


# --------------------------------------------------------------------------- distance
def test_distance_hand_worked():
    # one stream cell at (0,0), 30 m cells: (0,1) 30 m, (1,1) 42.43 m, (0,3) 90 m -> capped at 60
    f = np.zeros((2, 4), np.uint8)
    f[0, 0] = 1
    out = L.distance_to(as_da(f, (1, 2)), 60.0).values
    np.testing.assert_allclose(out, [[0, 30, 60, 60], [30, np.hypot(30, 30), 60, 60]], rtol=1e-6)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 50), st.integers(1, 50), st.integers(0, 2**31 - 1), chunkings,
       st.sampled_from([50.0, 100.0, 250.0]), st.sampled_from([(30.0, 30.0), (20.0, 30.0)]))
def test_distance_equals_scipy_edt_within_cap(ny, nx, seed, ch, cap, cells):
    rng = np.random.default_rng(seed)
    f = rng.random((ny, nx)) < 0.02
    out = L.distance_to(as_da(f.astype(np.uint8), ch, cell=cells[0], cell_x=cells[1]), cap).values
    if f.any():
        ref = np.minimum(ndi.distance_transform_edt(~f, sampling=cells), cap)
    else:
        ref = np.full(f.shape, cap)
    np.testing.assert_allclose(out, ref, rtol=1e-6)


def test_edt_kernel_uncapped():
    rng = np.random.default_rng(5)
    f = rng.random((37, 23)) < 0.05
    f[0, 0] = True
    np.testing.assert_allclose(kdist.edt(f, 10.0, 25.0),
                               ndi.distance_transform_edt(~f, sampling=(10.0, 25.0)), rtol=1e-12)


# --------------------------------------------------------------------------- upstream shares
def test_upstream_share_hand_worked(hydrology):
    # D8 (ESRI codes)         land cover                 flow
    #   4   4   4             cropland forest forest     (0,0)->(1,0)->(1,1); (0,1)->(1,1)
    #   1   4  16             forest   forest forest     (0,2)->(1,2)->(1,1); (1,1)->(2,1)
    #   1   0  16             forest   forest built-up   (2,0)->(2,1) outlet <-(2,2)
    # upstream of (1,1): itself,(1,0),(0,0),(0,1),(1,2),(0,2) = 6 cells, 1 intensive -> 1/6
    # upstream of (2,1): all 9 cells, 2 intensive -> 2/9; impervious 0.8/9; of (1,0): 1/2
    d8 = np.array([[4, 4, 4], [1, 4, 16], [1, 0, 16]], np.uint8)
    F, CR, B = CLASS_CODES["forest"], CLASS_CODES["cropland"], CLASS_CODES["built_up"]
    lc = np.array([[CR, F, F], [F, F, F], [F, F, B]], np.uint8)
    from pipeline.io.classes import attribute_raster
    d8da = as_da(d8, (2, 2))
    acc = xr.DataArray(brute_accumulation(d8, np.ones((3, 3))), dims=("y", "x"), coords=d8da.coords)
    intensive = L.upstream_share(d8da, attribute_raster(as_da(lc, (2, 2)), "intensive"), "s", acc).values
    assert intensive[1, 1] == pytest.approx(1 / 6)
    assert intensive[2, 1] == pytest.approx(2 / 9)
    assert intensive[1, 0] == pytest.approx(1 / 2)
    imp = L.upstream_share(d8da, attribute_raster(as_da(lc, (2, 2)), "impervious"), "s", acc).values
    assert imp[2, 1] == pytest.approx(0.8 / 9)


def test_upstream_share_nodata_cover_counts_in_neither(hydrology):
    # 1-row chain flowing east; cell 1 has no land cover: share at the outlet = 1 / 2
    d8 = np.array([[1, 1, 0]], np.uint8)
    w = xr.DataArray(np.array([[1.0, np.nan, 0.0]]), dims=("y", "x"))
    d8da = as_da(d8, (1, 3))
    w = w.assign_coords(d8da.coords)
    out = L.upstream_share(d8da, w, "s").values
    assert out[0, 2] == pytest.approx(0.5) and np.isnan(out[0, 1])


# --------------------------------------------------------------------------- end to end
def test_landscape_indicators_end_to_end(tmp_path, hydrology):
    from pipeline.indicators import landscape as LS

    rng = np.random.default_rng(42)
    ny, nx, cell = 260, 300, 30.0
    # clumpy classes 1..9 with some nodata
    field = ndi.gaussian_filter(rng.random((ny, nx)), 4)
    q = np.quantile(field, np.linspace(0, 1, 10)[1:-1])
    lc = (np.searchsorted(q, field) + 1).astype(np.uint8)
    lc[:5, :7] = 255
    d8 = random_d8(rng, ny, nx)
    streams = np.zeros((ny, nx), bool)
    streams[130, 20:280] = True
    streams[40:200, 150] = True
    ch = (97, 113)
    params = {"dispersal_distance_m": 150.0, "landscape_buffer_m": 120.0, "riparian_buffer_m": 60.0}
    acc = brute_accumulation(d8, np.ones((ny, nx)))
    out = LS.compute_landscape_indicators(as_da(lc, ch), as_da(d8, ch),
                                          xr.DataArray(acc, dims=("y", "x"), coords=as_da(d8, ch).coords),
                                          as_da(streams, ch), params, tmp_path)
    assert set(LS.NAMES) <= set(out)

    def read(name):
        with rasterio.open(out[name]) as src:
            assert src.crs.to_epsg() == 32650
            assert src.transform == from_origin(5e5, 1e5, cell, cell)
            assert src.nodata is not None
            assert src.compression.name.lower() == "deflate"
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            assert len(src.overviews(1)) >= 1
            a = src.read(1)
        return a

    valid = lc != 255
    from pipeline.io.classes import load_canonical
    t = load_canonical()
    nat = np.where(valid, t.lut("natural")[lc], np.nan)
    np.testing.assert_array_equal(read("canonical"), lc)
    np.testing.assert_array_equal(read("natural"), np.where(valid, nat, 255).astype(np.uint8))
    ref_lab, n = ndi.label(nat == 1, structure=EIGHT)
    np.testing.assert_array_equal(read("patch_id"), ref_lab)
    area = np.bincount(ref_lab.ravel()) * cell * cell / 1e4
    pa = read("patch_area_ha")
    np.testing.assert_allclose(pa[ref_lab > 0], area[ref_lab[ref_lab > 0]], rtol=1e-6)
    assert np.isnan(pa[ref_lab == 0]).all()
    dpc = read("patch_dpc")
    np.testing.assert_allclose(dpc[ref_lab > 0], out.patch_table.dpc.to_numpy()[ref_lab[ref_lab > 0] - 1],
                               rtol=1e-6)
    assert len(out.patch_table) == n
    # shares
    for name, attr in (("local_natural_share", "natural"), ("local_intensive_share", "intensive"),
                       ("local_undisturbed_share", "undisturbed")):
        a = np.where(valid, t.lut(attr)[lc], np.nan)
        np.testing.assert_allclose(read(name), disk_reference(a, 120.0, cell, cell), rtol=1e-5, atol=1e-6)
    rip = read("riparian_natural_share")
    np.testing.assert_allclose(rip[streams], disk_reference(nat, 60.0, cell, cell)[streams], rtol=1e-5)
    assert np.isnan(rip[~streams]).all()
    dist = read("dist_to_stream_m")
    cap = 120.0    # default stream_distance_max_m = max(riparian, landscape buffer)
    ref = np.minimum(ndi.distance_transform_edt(~streams, sampling=cell), cap)
    np.testing.assert_allclose(dist[valid], ref[valid], rtol=1e-6)
    assert np.isnan(dist[~valid]).all()
    # upstream shares against the brute-force upstream sums
    inten = np.where(valid, t.lut("intensive")[lc], np.nan)
    num = brute_accumulation(d8, np.nan_to_num(inten))
    den = brute_accumulation(d8, valid.astype(float))
    up = read("upstream_intensive_share")
    with np.errstate(invalid="ignore", divide="ignore"):
        ref_up = num / den
    np.testing.assert_allclose(up[valid], ref_up[valid], rtol=1e-5)
    assert (out.patch_table.dpc >= 0).all() and out.pc > 0
    assert out["patch_table"].exists() and out["connectivity_summary"].exists()
    assert not list(tmp_path.glob(".*"))          # no temp files left behind


def test_bad_params_rejected():
    from pipeline.indicators.landscape import resolve_params
    with pytest.raises(ConfigError, match="riparian_buffer_m"):
        resolve_params({"riparian_buffer_m": -5})
    with pytest.raises(ConfigError, match="connectivity_p_min"):
        resolve_params({"connectivity_p_min": 0.7})
