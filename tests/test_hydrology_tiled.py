"""Tile-wise hydrology ops: equal to the one-array kernels for any chunking; xarray and
file-level API (metadata kept, nodata in -> nodata out, atomic GeoTIFF outputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import InputDataError
from pipeline.kernels import hydrology as K
from pipeline.ops import hydrology as H

DATA = Path(__file__).parent / "data" / "reference_dems"
N = np.nan


def _da(a, transform=None, crs="EPSG:32650", **attrs):
    h, w = a.shape
    tr = transform or Affine(30.0, 0, 500000.0, 0, -30.0, 4400000.0)
    x = tr.c + tr.a * (np.arange(w) + 0.5)
    y = tr.f + tr.e * (np.arange(h) + 0.5)
    out = xr.DataArray(a, dims=("y", "x"), coords={"y": y, "x": x}, attrs=dict(attrs))
    out = out.rio.write_transform(tr).rio.write_crs(crs)
    return out


@st.composite
def chunked_dems(draw, min_side=20, max_side=80):
    h = draw(st.integers(min_side, max_side))
    w = draw(st.integers(min_side, max_side))
    seed = draw(st.integers(0, 2**32 - 1))
    levels = draw(st.sampled_from([2, 4, 50, 10000]))   # few levels -> large flats
    holes = draw(st.sampled_from([0.0, 0.0, 0.03, 0.25]))
    rng = np.random.default_rng(seed)
    z = rng.integers(0, levels, (h, w)).astype(np.float64)
    if draw(st.booleans()):
        # a smooth trend makes long paths and big flats that cross many tiles
        z = np.floor(z / 4 + np.add.outer(np.arange(h), np.arange(w)) / 9.0)
    z[rng.random((h, w)) < holes] = np.nan

    def sizes(n):
        if draw(st.booleans()):                      # uniform chunks
            return draw(st.integers(3, 40))
        out = []                                     # odd, non-uniform chunks
        left = n
        while left > 0:
            s = min(left, draw(st.integers(3, 40)))
            out.append(s)
            left -= s
        return tuple(out)

    return z, {"y": sizes(h), "x": sizes(w)}


def _one_array(z):
    f = K.priority_flood_fill(z)
    d8 = K.flow_directions_d8(f)
    acc, bad = K.accumulate(d8)
    assert bad == 0
    return f, d8, acc


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunked_dems())
def test_tiled_fill_d8_acc_equal_one_array(case):
    z, chunks = case
    f, d8, acc = _one_array(z)
    dem = _da(z).chunk(chunks)
    ft = H.fill_depressions(dem)
    assert ft.chunks == dem.chunks
    assert np.array_equal(ft.values, f, equal_nan=True)
    dt = H.flow_directions_d8(ft)
    assert np.array_equal(dt.values, d8)
    at = H.flow_accumulation(dt)
    assert np.array_equal(at.values, np.where(d8 == 255, -1, acc))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunked_dems(), st.integers(0, 2**32 - 1))
def test_tiled_weighted_accumulation(case, seed):
    z, chunks = case
    _, d8, _ = _one_array(z)
    rng = np.random.default_rng(seed)
    # dyadic weights: every partial sum is exact in float64, so the tiled sum
    # (another summation order) must be bit-identical
    w = rng.integers(-64, 65, z.shape) / 16.0
    ref, _ = K.accumulate(d8, w)
    got = H.flow_accumulation(_da(d8).chunk(chunks), weights=_da(w).chunk(chunks)).values
    assert np.array_equal(got, np.where(d8 == 255, np.nan, ref), equal_nan=True)
    # arbitrary float weights: equal up to summation order
    w2 = rng.random(z.shape)
    ref2, _ = K.accumulate(d8, w2)
    got2 = H.flow_accumulation(_da(d8).chunk(chunks), weights=_da(w2).chunk(chunks)).values
    ok = d8 != 255
    assert np.allclose(got2[ok], ref2[ok], rtol=1e-12, atol=0)


def test_flat_crossing_many_tiles():
    # 60x60 plateau at 5 with one notch (0, 30) at 4: a single flat crossing 100
    # tiles of 6x6 is resolved tile by tile; it must equal the one-array result.
    z = np.full((60, 60), 5.0)
    z[0, 30] = 4.0
    z[20:40, 20:40] = 7.0            # an island of higher ground inside the flat
    f, d8, acc = _one_array(z)
    dt = H.flow_directions_d8(_da(f).chunk(6))
    assert np.array_equal(dt.values, d8)
    assert not np.any(d8[1:-1, 1:-1] == 0)


@pytest.mark.parametrize("name", ["fortworth_3arcsec.tif", "luxembourg_30arcsec.tif"])
def test_reference_dem_tiled(name, tmp_path):
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} missing (copy it from ../shared/data/reference_dems)")
    with rasterio.open(path) as src:
        raw = src.read(1)
        z = raw.astype(np.float64)
        z[raw == src.nodata] = np.nan
    f, d8, acc = _one_array(z)
    paths = H.hydrology_to_files(path, tmp_path, chunk_size=37)
    with rasterio.open(paths["filled"]) as s:
        assert s.dtypes[0] == "float32" and np.isnan(s.nodata)
        assert np.array_equal(s.read(1), f.astype(np.float32), equal_nan=True)
        assert s.crs is not None and s.transform == rasterio.open(path).transform
    with rasterio.open(paths["d8"]) as s:
        assert s.nodata == 255 and s.profile["tiled"]
        assert np.array_equal(s.read(1), d8)
    with rasterio.open(paths["accumulation"]) as s:
        assert s.nodata == 0
        assert np.array_equal(s.read(1).astype(np.int64), np.where(d8 == 255, 0, acc))
    with rasterio.open(paths["upstream_area_km2"]) as s:
        up = s.read(1)
        tr = s.transform
    # geographic grid: each cell's own area is the ellipsoidal row area; the
    # cells at the top row with acc 1 carry exactly that area
    area = H.cell_area_rows_m2(rasterio.open(path).crs, tr, z.shape[0]) / 1e6
    ones = (acc == 1) & (d8 != 255)
    rr, _ = np.nonzero(ones)
    assert np.allclose(up[ones], area[rr], rtol=1e-6)
    assert np.array_equal(np.isnan(up), d8 == 255)
    # 3 arcsec near 32.8N: ~ 92.6 m x 77.9 m = 0.0072 km2 per cell
    if name.startswith("fortworth"):
        assert 0.0070 < area[0] < 0.0074
    assert not list(tmp_path.glob(".*"))      # no temporary files left behind


def test_accumulate_to_file_and_nodata(tmp_path):
    # D8 with a nodata border and a hole: paths entering nodata end there.
    rng = np.random.default_rng(3)
    z = rng.integers(0, 30, (45, 52)).astype(np.float64)
    z[:2, :] = np.nan
    z[20:25, 10:14] = np.nan
    f, d8, acc = _one_array(z)
    src = tmp_path / "d8.tif"
    with rasterio.open(src, "w", driver="GTiff", height=45, width=52, count=1, dtype="uint8",
                       nodata=255, crs="EPSG:32650",
                       transform=Affine(30, 0, 0, 0, -30, 0)) as ds:
        ds.write(d8, 1)
    out = H.accumulate_to_file(src, tmp_path / "acc.tif", chunk_size=11)
    with rasterio.open(out) as s:
        got = s.read(1)
        assert s.nodata == 0
    assert np.array_equal(got.astype(np.int64), np.where(d8 == 255, 0, acc))
    assert got[:2].max() == 0                         # nodata in -> nodata out


def test_bad_d8_is_a_typed_error(tmp_path):
    d8 = np.array([[1, 3], [0, 0]], dtype=np.uint8)
    with pytest.raises(InputDataError, match="not ESRI codes"):
        H.flow_accumulation(_da(d8))
    cyc = np.array([[1, 16], [0, 0]], dtype=np.uint8)
    with pytest.raises(InputDataError, match="cycles"):
        H.flow_accumulation(_da(cyc).chunk(1 + 0 * 2))
    with pytest.raises(InputDataError, match="cannot open raster"):
        H.hydrology_to_files(tmp_path / "missing.tif", tmp_path)


def test_ops_keep_coords_attrs_crs_and_nodata():
    rng = np.random.default_rng(7)
    raw = rng.integers(100, 130, (30, 33)).astype(np.int16)
    raw[5, 5] = -32768
    dem = _da(raw, long_name="elevation", source="test").chunk(10)
    dem = dem.rio.write_nodata(-32768)
    filled = H.fill_depressions(dem)
    assert filled.dims == dem.dims
    assert np.array_equal(filled.x, dem.x) and np.array_equal(filled.y, dem.y)
    assert filled.rio.crs == dem.rio.crs
    assert filled.rio.transform() == dem.rio.transform()
    assert filled.attrs["source"] == "test"
    assert np.isnan(filled.values[5, 5]) and np.isnan(filled.rio.nodata)
    assert filled.dtype == np.float32              # int16 fits float32 exactly
    d8 = H.flow_directions_d8(filled)
    assert d8.rio.nodata == 255 and d8.values[5, 5] == 255 and d8.rio.crs == dem.rio.crs
    acc = H.flow_accumulation(d8)
    assert acc.rio.nodata == -1 and acc.values[5, 5] == -1
    up = H.upstream_area_km2(d8)
    # projected 30 m cells: 900 m2 = 0.0009 km2 per cell
    assert np.allclose(up.values[acc.values > 0], acc.values[acc.values > 0] * 0.0009)
    depth = H.depression_depth(dem, filled)
    assert np.nanmin(depth.values) >= 0 and np.isnan(depth.values[5, 5])
    streams = H.stream_mask(up, threshold_km2=0.0045)   # >= 5 cells
    sv = streams.values
    assert sv[5, 5] == 255
    assert np.array_equal(sv[acc.values > 0] == 1, acc.values[acc.values > 0] >= 5)
    for out in (filled, d8, acc, up, depth, streams):
        assert out.chunks == dem.chunks


def test_slope_geographic_uses_metres_per_row():
    # lon/lat grid of 0.001 deg at ~40N; z rises 1 m per column eastward.
    # Cell width in metres is 0.001 * metres-per-degree-of-longitude at the
    # row's latitude, so the slope must be atan(1 / width_m), never atan(1/0.001).
    tr = Affine(0.001, 0, 116.0, 0, -0.001, 40.01)
    z = np.tile(np.arange(12, dtype=np.float64), (10, 1))
    dem = _da(z, transform=tr, crs="EPSG:4326").chunk({"y": 4, "x": 5})
    s = H.slope_horn(dem).values
    from pyproj import Geod

    lat = 40.01 - 0.001 * 3.5
    _, _, width = Geod(ellps="WGS84").inv(116.0, lat, 116.001, lat)
    assert s[3, 4] == pytest.approx(np.degrees(np.arctan(1.0 / width)), rel=1e-6)
    # same result whatever the chunking
    s2 = H.slope_horn(dem.chunk({"y": 10, "x": 12})).values
    assert np.array_equal(s, s2, equal_nan=True)


def test_basin_mask_upstream_mask_and_path():
    rng = np.random.default_rng(11)
    z = rng.integers(0, 40, (25, 30)).astype(np.float64)
    f, d8, acc = _one_array(z)
    d8da = _da(d8).chunk(7)
    r, c = np.unravel_index(np.argmax(acc), acc.shape)
    basin = H.basin_mask(d8da, [(r, c)]).values
    # the basin of the cell with the largest accumulation has exactly acc cells
    assert basin.sum() == acc[r, c]
    # upstream of a seed set = union of the basins of its cells
    seed = np.zeros(z.shape, dtype=bool)
    seed[10:13, 10:13] = True
    up = H.upstream_mask(d8da, _da(seed)).values
    union = np.zeros(z.shape, dtype=bool)
    for rr, cc in zip(*np.nonzero(seed)):
        union |= H.basin_mask(d8da, [(rr, cc)]).values
    assert np.array_equal(up, union)
    path = H.downstream_path(d8da, 10, 10)
    assert path["length_m"][0] == 0.0
    steps = np.hypot(np.diff(path["rows"]), np.diff(path["cols"])) * 30.0
    assert np.allclose(np.diff(path["length_m"]), steps)
    last = (path["rows"][-1], path["cols"][-1])
    assert d8[last] == 0 or K.outlet_mask(f)[last]
    with pytest.raises(InputDataError, match="outside the grid"):
        H.basin_mask(d8da, [(100, 0)])


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunked_dems(), st.integers(0, 2**32 - 1), st.integers(1, 4))
def test_flow_accumulation_many_equals_separate_runs(case, seed, n_layers):
    # arbitrary float weights (summation order matters), NaNs, signed zeros and
    # a dask-chunked D8: every layer must be bit-identical to its own run
    z, chunks = case
    _, d8, _ = _one_array(z)
    rng = np.random.default_rng(seed)
    layers = []
    for _ in range(n_layers):
        w = rng.normal(size=z.shape) * 10.0 ** rng.integers(-3, 4)
        w[rng.random(z.shape) < 0.1] = np.nan
        w[rng.random(z.shape) < 0.1] = -0.0
        w[rng.random(z.shape) < 0.1] = 0.0
        layers.append(_da(w).chunk(chunks))
    d8da = _da(d8).chunk(chunks)
    got = H.flow_accumulation_many(d8da, layers)
    assert len(got) == n_layers
    for g, w in zip(got, layers):
        ref = H.flow_accumulation(d8da, weights=w)
        assert g.dims == ref.dims and g.chunks == ref.chunks and g.rio.crs == ref.rio.crs
        assert np.isnan(g.rio.nodata)
        assert np.array_equal(g.values.view(np.int64), ref.values.view(np.int64))


def test_flow_accumulation_many_by_hand():
    # a 1 x 4 row draining east (codes 1) into an outlet (0): sums run left to right
    d8 = np.array([[1, 1, 1, 0]], dtype=np.uint8)
    a = np.array([[1.0, 2.0, 3.0, 4.0]])
    b = np.array([[N, 10.0, 0.0, 1.0]])
    got = H.flow_accumulation_many(_da(d8).chunk(2), [_da(a).chunk(2), _da(b).chunk(2)])
    assert got[0].values.tolist() == [[1.0, 3.0, 6.0, 10.0]]
    assert got[1].values.tolist() == [[0.0, 10.0, 10.0, 11.0]]
    assert H.flow_accumulation_many(_da(d8), []) == []
