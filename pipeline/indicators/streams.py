"""Stream network as vector reaches (for the GeoPackage and the report maps)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely

from pipeline.io.grid import Grid
from pipeline.kernels.streams import trace_reaches


def stream_reaches(d8: np.ndarray, streams: np.ndarray, upstream_area_km2: np.ndarray,
                   grid: Grid) -> gpd.GeoDataFrame:
    """LineString reaches through the centres of stream cells, with upstream area at their end."""
    reach, cell = trace_reaches(np.ascontiguousarray(d8), np.ascontiguousarray(streams.astype(np.uint8)))
    if len(reach) == 0:
        return gpd.GeoDataFrame({"reach_id": [], "upstream_area_km2": [], "length_m": []},
                                geometry=[], crs=grid.crs)
    rows, cols = np.divmod(cell, grid.width)
    xs = grid.transform.c + (cols + 0.5) * grid.transform.a
    ys = grid.transform.f + (rows + 0.5) * grid.transform.e
    counts = np.bincount(reach)
    keep = counts[reach] >= 2                      # a one-cell reach has no length
    ids = np.unique(reach[keep])
    remap = np.full(reach.max() + 1, -1)
    remap[ids] = np.arange(len(ids))
    lines = shapely.linestrings(np.column_stack([xs[keep], ys[keep]]), indices=remap[reach[keep]])
    kept_reach, kept_cell = reach[keep], cell[keep]
    is_end = np.append(kept_reach[1:] != kept_reach[:-1], True)   # reaches are contiguous
    up = upstream_area_km2.reshape(-1)[kept_cell[is_end]]
    return gpd.GeoDataFrame({"reach_id": np.arange(1, len(ids) + 1),
                             "upstream_area_km2": np.round(up.astype(float), 4),
                             "length_m": np.round(shapely.length(lines), 1)},
                            geometry=lines, crs=grid.crs)
