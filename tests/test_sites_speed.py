"""The cheaper paths of the site indicators give what the code they replace gave:
the PATH head equals shapely.ops.substring vertex for vertex, and polygon cells
handed to exactextract as WKB equal those handed over as a GeoDataFrame (the RING1K
components come from pipeline.kernels.patches.label_block, tested in
test_landcover.py). No test here times anything."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine
from exactextract import exact_extract
from shapely.ops import substring

from pipeline.indicators import geometry as G

GRID = G.as_grid((Affine(30, 0, 500000, 0, -30, 4000000), "EPSG:32650", (60, 70)))


def _staircase(seed, n=400):
    """A D8-like path: cell centres of random E / SE / S steps."""
    steps = np.random.default_rng(seed).choice(3, n - 1)
    dr = np.concatenate([[0], np.cumsum(steps >= 1)])
    dc = np.concatenate([[0], np.cumsum(steps <= 1)])
    x = GRID.transform.c + (dc + 0.5) * GRID.dx
    y = GRID.transform.f - (dr + 0.5) * GRID.dy
    return x, y


@pytest.mark.parametrize("seed", range(6))
def test_line_head_equals_shapely_substring(seed):
    x, y = _staircase(seed)
    line = shapely.LineString(np.column_stack([x, y]))
    # lengths at, just off and between vertices, and past the end
    cum = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    lengths = [0.0, 1e-9, 15.0, cum[7], np.nextafter(cum[7], 0), np.nextafter(cum[7], np.inf),
               5000.0, cum[-1], line.length, line.length * 2]
    for L in lengths:
        got = G._line_head(line, x, y, float(L))
        want = substring(line, 0.0, float(L))
        assert shapely.to_wkb(got) == shapely.to_wkb(want), L


def test_polygon_cells_from_wkb_equal_the_geodataframe_route():
    rng = np.random.default_rng(2)
    pts = shapely.points(rng.uniform(500100, 502000, 12), rng.uniform(3998300, 3999900, 12))
    geoms = np.concatenate([shapely.buffer(pts, rng.uniform(5, 300, 12), quad_segs=16),
                            [None, shapely.Polygon(), shapely.box(0, 0, 1, 1)]])
    got = G.polygon_cells(geoms, GRID)
    # the previous route: a GeoDataFrame, its features as GeoJSON
    ok = [k for k, g in enumerate(geoms) if g is not None and not shapely.is_empty(g)]
    gdf = gpd.GeoDataFrame({"k_": ok}, geometry=list(geoms[ok]), crs=GRID.crs)
    res = exact_extract(G._GridCells(GRID), gdf, ["cell_id", "coverage"], include_cols=["k_"],
                        output="pandas")
    want = {int(k): (np.asarray(i, np.int64), np.asarray(c, np.float64))
            for k, i, c in zip(res["k_"], res["cell_id"], res["coverage"])}
    assert len(got) == len(geoms)
    for k, (ids, cov) in enumerate(got):
        if k not in want:
            assert ids.size == 0 and cov.size == 0
            continue
        wi, wc = want[k]
        np.testing.assert_array_equal(ids, wi[wc > 0])
        np.testing.assert_array_equal(cov, wc[wc > 0])
    assert sum(ids.size for ids, _ in got) > 100
