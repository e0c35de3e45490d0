"""COG overview levels built while rows are written (pipeline.io.rasters.OverviewLevels,
pipeline.kernels.overview): GDAL's AVERAGE bit for bit where every level halves exactly,
the 2 x 2 mean of the valid cells anywhere, whatever the row bands; and the indicator
COGs written with them (pipeline.indicators.landscape.write_cogs_tiled)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.shutil import copy as rio_copy
from rasterio.transform import from_origin

from pipeline.indicators import landscape as LS
from pipeline.io.rasters import OverviewLevels, cog_blocksize, cog_levels
from tests.test_landcover import as_da

CRS = "EPSG:32650"
T = from_origin(500_000, 4_400_000, 30, 30)


def _field(h, w, seed=0, holes=0.15, nodata=np.nan):
    rng = np.random.default_rng(seed)
    a = (rng.random((h, w)) * 1000).astype(np.float32)
    a[rng.random((h, w)) < holes] = nodata
    a[: h // 5, : w // 3] = nodata                      # a corner with no data at all
    return a


def _reference_levels(a, factors, nodata=np.nan):
    """The definition: level k = mean of the valid cells of each 2 x 2 group of level k-1
    (odd last row/column: of the cells there are), in float64, rounded to float32; the
    next level averages the rounded level (as GDAL's cascade does)."""
    out, cur = [], a.astype(np.float64)
    for _ in factors:
        h, w = cur.shape
        pad = np.full((h + h % 2, w + w % 2), np.nan)
        pad[:h, :w] = np.where(cur == nodata, np.nan, cur) if not np.isnan(nodata) else cur
        g = pad.reshape(pad.shape[0] // 2, 2, pad.shape[1] // 2, 2)
        n = (~np.isnan(g)).sum(axis=(1, 3))
        s = np.nansum(g, axis=(1, 3))
        with np.errstate(invalid="ignore", divide="ignore"):
            lev = np.where(n > 0, s / n, np.nan)
        out.append(np.where(np.isnan(lev), nodata, lev).astype(np.float32))
        cur = out[-1].astype(np.float64)
    return out


def _build(tmp_path, a, cuts, blocksize, nodata=np.nan):
    lv = OverviewLevels(tmp_path / "x", *a.shape, np.float32, nodata, CRS, T, blocksize)
    for r0, r1 in zip([0, *cuts], [*cuts, a.shape[0]]):
        lv.add(a[r0:r1])
    paths = lv.close()
    levels = []
    for p in paths:
        with rasterio.open(p) as ds:
            levels.append(ds.read(1))
    return lv.factors, levels


def _gdal_levels(tmp_path, a, blocksize, nodata=np.nan):
    src, cog = tmp_path / "src.tif", tmp_path / "gdal_cog.tif"
    with rasterio.open(src, "w", driver="GTiff", width=a.shape[1], height=a.shape[0], count=1, dtype="float32",
                       crs=CRS, transform=T, nodata=nodata) as d:
        d.write(a, 1)
    rio_copy(str(src), str(cog), driver="COG", OVERVIEWS="AUTO", RESAMPLING="AVERAGE", BLOCKSIZE=blocksize)
    out = []
    with rasterio.open(cog) as ds:
        n = len(ds.overviews(1))
    for k in range(n):
        with rasterio.open(cog, overview_level=k) as ds:
            out.append(ds.read(1))
    return out


@pytest.mark.parametrize("nodata", [np.nan, -9999.0])
def test_levels_are_gdal_average_where_every_level_halves(tmp_path, nodata):
    a = _field(1024, 768, seed=2, nodata=nodata)
    factors, ours = _build(tmp_path, a, [100, 357, 358, 801], 128, nodata)   # odd band heights
    gdal = _gdal_levels(tmp_path, a, 128, nodata)
    assert factors == [2, 4, 8] and len(gdal) == 3
    for mine, theirs in zip(ours, gdal):
        np.testing.assert_array_equal(mine, theirs)     # NaN == NaN here; bit for bit otherwise


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 140), w=st.integers(1, 140), seed=st.integers(0, 99),
       cuts=st.lists(st.integers(1, 139), max_size=6))
def test_levels_are_the_valid_mean_for_any_size_and_row_bands(tmp_path_factory, h, w, seed, cuts):
    tmp = tmp_path_factory.mktemp("lv")
    a = _field(h, w, seed)
    cuts = sorted({c for c in cuts if c < h})
    factors, ours = _build(tmp, a, cuts, 16)
    assert factors == cog_levels(h, w, 16)
    ref = _reference_levels(a, factors)
    assert len(ours) == len(ref)
    for f, mine, want in zip(factors, ours, ref):
        assert mine.shape == (-(-h // f), -(-w // f))
        np.testing.assert_array_equal(mine, want)


def test_indicator_cog_carries_the_levels(tmp_path):
    a = _field(1024, 768, seed=4)
    da = as_da(a, (300, 257))                           # row bands of 300: levels carry odd rows
    (path,) = LS.write_cogs_tiled([da], [tmp_path / "share.tif"], [np.nan], da)
    block = cog_blocksize(a.shape)                      # what the writer picks (256 here)
    gdal = _gdal_levels(tmp_path, a, block)
    with rasterio.open(path) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.overviews(1) == cog_levels(*a.shape, block) == [2, 4] and np.isnan(ds.nodata)
        assert ds.block_shapes[0] == (block, block)
        np.testing.assert_array_equal(ds.read(1), a)
    for k, want in enumerate(gdal):
        with rasterio.open(path, overview_level=k) as ds:
            np.testing.assert_array_equal(ds.read(1), want)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gdal_cog.tif", "share.tif", "src.tif"]
