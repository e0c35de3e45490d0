"""Per-project credit rasters (pipeline.scoring.spread): sparse windows == dense box."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import rasterio.windows
from shapely.geometry import box

from pipeline.io.grid import Grid
from pipeline.scoring.spread import BANDS, NODATA, project_credit_arrays, site_groups, write_credit_rasters

CRS = "EPSG:32650"


def _case():
    # 30 m grid of 2000 x 2000 cells. Project P1: two overlapping sites in the north-west
    # and one site 50 km away in the south-east (its box is 1800 x 1800 cells, almost all
    # empty); project P2: one small site.
    grid = Grid.from_bounds(CRS, (400_000.0, 4_440_000.0, 460_000.0, 4_500_000.0), 30.0)
    x0, y1 = 400_000.0, 4_500_000.0
    geoms = [box(x0 + 3000, y1 - 3600, x0 + 3900, y1 - 3000),       # S1
             box(x0 + 3600, y1 - 3300, x0 + 4515, y1 - 2700),       # S2 overlaps S1
             box(x0 + 54000, y1 - 55000, x0 + 54610, y1 - 54405),   # S3 far away
             box(x0 + 20000, y1 - 20000, x0 + 20300, y1 - 19700)]   # S4 (P2)
    sites = gpd.GeoDataFrame({"site_id": ["S1", "S2", "S3", "S4"], "project_id": ["P1", "P1", "P1", "P2"]},
                             geometry=geoms, crs=CRS)
    rows = []
    for sid, base in zip(sites.site_id, (10.0, 5.0, 7.0, 3.0)):
        for k, fn in enumerate(("WQ", "HY", "HB")):
            rows.append(dict(site_id=sid, function=fn, credit=base + k, debit=0.5 * k,
                             score_pre=1.0 + k, score_post=2.0 + 2 * k))
    credits = pd.DataFrame(rows)
    rng = np.random.default_rng(5)
    pre = rng.integers(1, 10, size=grid.shape).astype(np.uint8)
    post = np.where(rng.random(grid.shape) < 0.3, rng.integers(1, 10, size=grid.shape), pre).astype(np.uint8)
    return grid, sites, credits, pre, post


def test_site_groups_merge_overlapping_windows_only():
    grid, sites, *_ = _case()
    groups = site_groups(sites[sites.project_id == "P1"].geometry, grid)
    assert [m.tolist() for _, m in groups] == [[0, 1], [2]]


def test_sparse_project_raster_equals_dense_box_and_sums_to_table(tmp_path):
    grid, sites, credits, pre, post = _case()
    paths = write_credit_rasters(sites, credits, grid, pre, post, lambda pid: tmp_path / f"credits_{pid}.tif")
    p1 = sites[sites.project_id == "P1"]
    win, dense = project_credit_arrays(p1, credits, grid, pre, post)      # whole box in memory
    with rasterio.open(paths["P1"]) as src:
        assert (src.height, src.width) == (win.height, win.width)
        assert list(src.descriptions) == list(BANDS)
        got = src.read()
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.overviews(1)
        # the empty middle of the box is not stored: the block at the centre has no offset
        bs = src.block_shapes[0][0]
        mid = win.height // 2 // bs
        assert src.get_tag_item(f"BLOCK_OFFSET_{mid}_{mid}", "TIFF", bidx=1) is None
        assert src.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1) is not None
    np.testing.assert_array_equal(got, dense)
    assert (got[0] != NODATA).sum() > 0
    t = credits[credits.site_id.isin(p1.site_id)]
    total = got[0][got[0] != NODATA].sum()
    assert total == pytest.approx(float(t.credit.sum() - t.debit.sum()), rel=1e-9)


def _sparse_file(path, shape, windows, seed):
    h, w = shape
    prof = dict(driver="GTiff", width=w, height=h, count=3, dtype="float64", crs=CRS,
                transform=rasterio.Affine(30, 0, 500_000, 0, -30, 4_000_000), nodata=NODATA, tiled=True,
                blockxsize=256, blockysize=256, compress="DEFLATE", SPARSE_OK=True)
    rng = np.random.default_rng(seed)
    with rasterio.open(path, "w", **prof) as dst:
        for r0, c0, wh, ww in windows:
            a = rng.normal(size=(3, wh, ww))
            a[rng.random(a.shape) < 0.3] = NODATA        # nodata inside the windows too
            dst.write(a, window=rasterio.windows.Window(c0, r0, ww, wh))
        dst.set_band_description(2, "second")
        dst.update_tags(project_id="P9")


def test_sparse_cog_equals_gdal_cog_on_even_sizes(tmp_path):
    """Overviews averaged window by window == GDAL's COG driver over the whole extent, where
    every level halves exactly (GDAL resamples odd sizes by a ratio slightly off 2)."""
    from rasterio.shutil import copy as rio_copy

    from pipeline.io.rasters import sparse_cog

    windows = [(5, 7, 301, 203), (1700, 2500, 211, 517), (999, 1, 3, 3)]
    _sparse_file(tmp_path / "s.tif", (2048, 3072), windows, 1)
    sparse_cog(tmp_path / "s.tif", windows, tmp_path / "ours.tif")
    rio_copy(str(tmp_path / "s.tif"), str(tmp_path / "gdal.tif"), driver="COG", COMPRESS="DEFLATE",
             BLOCKSIZE=512, OVERVIEWS="AUTO", RESAMPLING="AVERAGE", PREDICTOR="YES", SPARSE_OK="YES")
    with rasterio.open(tmp_path / "ours.tif") as a, rasterio.open(tmp_path / "gdal.tif") as b:
        assert a.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert a.overviews(1) == b.overviews(1) == [2, 4, 8]
        assert a.descriptions == (None, "second", None) and a.tags()["project_id"] == "P9"
        np.testing.assert_array_equal(a.read(), b.read())
        for f in a.overviews(1):
            shp = (3, 2048 // f, 3072 // f)
            np.testing.assert_allclose(a.read(out_shape=shp), b.read(out_shape=shp), rtol=1e-12)


def test_sparse_cog_overviews_are_2x2_means_on_odd_sizes(tmp_path):
    from pipeline.io.rasters import sparse_cog

    windows = [(0, 0, 9, 9), (1290, 1530, 11, 7)]        # windows touching both far edges
    _sparse_file(tmp_path / "s.tif", (1301, 1537), windows, 2)
    sparse_cog(tmp_path / "s.tif", windows, tmp_path / "ours.tif")
    with rasterio.open(tmp_path / "s.tif") as src:
        level = src.read()
    with rasterio.open(tmp_path / "ours.tif") as out:
        np.testing.assert_array_equal(out.read(), level)
        for f in out.overviews(1):
            b, h, w = level.shape
            padded = np.full((b, h + h % 2, w + w % 2), NODATA)
            padded[:, :h, :w] = level
            q = padded.reshape(b, padded.shape[1] // 2, 2, padded.shape[2] // 2, 2)
            ok = q != NODATA
            n = ok.sum(axis=(2, 4))
            want = np.where(n > 0, np.where(ok, q, 0).sum(axis=(2, 4)) / np.maximum(n, 1), NODATA)
            got = out.read(out_shape=want.shape)
            np.testing.assert_allclose(got, want, rtol=1e-12)
            level = want
