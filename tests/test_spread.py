"""Per-project credit rasters (pipeline.scoring.spread): sparse windows == dense box."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
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
        # the empty middle of the box is not stored: block (3, 3) of 256 x 256 has no offset
        assert src.get_tag_item("BLOCK_OFFSET_3_3", "TIFF", bidx=1) is None
        assert src.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1) is not None
    np.testing.assert_array_equal(got, dense)
    assert (got[0] != NODATA).sum() > 0
    t = credits[credits.site_id.isin(p1.site_id)]
    total = got[0][got[0] != NODATA].sum()
    assert total == pytest.approx(float(t.credit.sum() - t.debit.sum()), rel=1e-9)
