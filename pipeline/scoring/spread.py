"""Per-project credit rasters: each site's credit spread over its cells by covered area.

A cell's share of a site's credit is its exact coverage fraction (exactextract)
divided by the site's total coverage, so the raster of a project sums to the
project's credits in the table (to floating-point rounding).

A project's raster spans the bounding box of its sites, but only the windows
around groups of nearby sites are computed and written: the file is a sparse
COG (GDAL ``SPARSE_OK``; blocks never written read as nodata) whose overviews are
averaged over those windows too (pipeline.io.rasters.sparse_cog), so time and
memory follow the sites' area, not the box (sites of one project can lie far
apart in a large basin).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import exactextract
import geopandas as gpd
import numpy as np
import pandas as pd
from affine import Affine
from exactextract.raster import NumPyRasterSource

from pipeline.io.grid import Grid

log = logging.getLogger(__name__)

FUNCTIONS = ("WQ", "HY", "HB")
BANDS = ("credit_total", "credit_WQ", "credit_HY", "credit_HB",
         "dscore_WQ", "dscore_HY", "dscore_HB", "landcover_change")
NODATA = -9999.0


@dataclass(frozen=True)
class Window:
    row0: int
    col0: int
    height: int
    width: int

    def transform(self, grid: Grid) -> Affine:
        return grid.transform @ Affine.translation(self.col0, self.row0)

    def slices(self) -> tuple[slice, slice]:
        return slice(self.row0, self.row0 + self.height), slice(self.col0, self.col0 + self.width)


def project_window(geoms: gpd.GeoSeries, grid: Grid, margin: int = 2) -> Window:
    x0, y0, x1, y1 = geoms.total_bounds
    r0, c0 = grid.rowcol(x0, y1)
    r1, c1 = grid.rowcol(x1, y0)
    r0, c0 = max(r0 - margin, 0), max(c0 - margin, 0)
    r1, c1 = min(r1 + margin + 1, grid.height), min(c1 + margin + 1, grid.width)
    return Window(r0, c0, r1 - r0, c1 - c0)


def coverage(geoms: gpd.GeoSeries, grid: Grid, win: Window) -> list[tuple[np.ndarray, np.ndarray]]:
    """(flat cell index within the window, coverage fraction) per geometry."""
    t = win.transform(grid)
    xmin, ymax = t.c, t.f
    xmax, ymin = xmin + t.a * win.width, ymax + t.e * win.height
    src = NumPyRasterSource(np.zeros((win.height, win.width), dtype=np.float32), xmin, ymin,
                            xmax, ymax, srs_wkt=grid.crs.to_wkt())
    gdf = gpd.GeoDataFrame({"i": np.arange(len(geoms))}, geometry=geoms.values, crs=grid.crs)
    df = exactextract.exact_extract(src, gdf, ["cell_id", "coverage"], output="pandas",
                                    include_cols=["i"])
    df = df.sort_values("i")
    return [(np.asarray(c, dtype=np.int64), np.asarray(f, dtype=np.float64))
            for c, f in zip(df["cell_id"], df["coverage"])]


def site_groups(geoms: gpd.GeoSeries, grid: Grid, margin: int = 2) -> list[tuple[Window, np.ndarray]]:
    """Groups of sites whose windows (bounding box + ``margin`` cells) overlap.

    Returns (window, positions) per group with disjoint windows, in order of the
    first site of each group: overlapping sites share cells, so they are spread
    together.
    """
    wins = [project_window(geoms.iloc[i:i + 1], grid, margin) for i in range(len(geoms))]
    groups = [([i], wins[i]) for i in range(len(geoms))]
    merged = True
    while merged:                   # merge until no two group windows overlap
        merged = False
        out: list[tuple[list[int], Window]] = []
        for members, w in groups:
            for q, (m2, w2) in enumerate(out):
                if _overlap(w, w2):
                    out[q] = (m2 + members, _union(w, w2))
                    merged = True
                    break
            else:
                out.append((members, w))
        groups = out
    return [(w, np.sort(np.asarray(m, dtype=np.int64))) for m, w in groups]


def _overlap(a: Window, b: Window) -> bool:
    return (a.row0 < b.row0 + b.height and b.row0 < a.row0 + a.height
            and a.col0 < b.col0 + b.width and b.col0 < a.col0 + a.width)


def _union(a: Window, b: Window) -> Window:
    r0, c0 = min(a.row0, b.row0), min(a.col0, b.col0)
    r1 = max(a.row0 + a.height, b.row0 + b.height)
    c1 = max(a.col0 + a.width, b.col0 + b.width)
    return Window(r0, c0, r1 - r0, c1 - c0)


def project_credit_arrays(sites: gpd.GeoDataFrame, credits: pd.DataFrame, grid: Grid,
                          canonical_pre: np.ndarray, canonical_post: np.ndarray,
                          win: Window | None = None) -> tuple[Window, np.ndarray]:
    """The 8-band array (see BANDS) of ``sites`` over ``win`` (default: their bounding box)."""
    win = win or project_window(sites.geometry, grid)
    out = np.full((len(BANDS), win.height, win.width), NODATA, dtype=np.float64)
    covered = np.zeros(win.height * win.width, dtype=bool)
    for (cells, frac), site_id in zip(coverage(sites.geometry, grid, win), sites["site_id"]):
        rows = credits[credits["site_id"] == site_id].set_index("function")
        total = frac.sum()
        if total <= 0:
            continue
        share = frac / total
        for b in range(7):
            flat = out[b].reshape(-1)
            flat[cells[~covered[cells]]] = 0.0
        for k, f in enumerate(FUNCTIONS):
            r = rows.loc[f]
            value = float(r["credit"]) - float(r["debit"])
            out[1 + k].reshape(-1)[cells] += value * share
            out[0].reshape(-1)[cells] += value * share
            out[4 + k].reshape(-1)[cells] = float(r["score_post"]) - float(r["score_pre"])
        covered[cells] = True
    rs, cs = win.slices()
    pre = canonical_pre[rs, cs].astype(np.int64)
    post = canonical_post[rs, cs].astype(np.int64)
    change = np.where(pre == post, 0, pre * 10 + post).astype(np.float64)
    change[(pre == 255) | (post == 255)] = NODATA
    change.reshape(-1)[~covered] = NODATA
    out[7] = change
    return win, out


def write_credit_rasters(sites: gpd.GeoDataFrame, credits: pd.DataFrame, grid: Grid,
                         canonical_pre: np.ndarray, canonical_post: np.ndarray,
                         path_for, memo=None) -> dict[str, Path]:
    """Write one multi-band COG per project; return {project_id: path}.

    The bands are written window by window into a sparse tiled GeoTIFF, which
    :func:`pipeline.io.rasters.sparse_cog` turns into the COG with overviews averaged
    over the same windows only.

    ``memo`` (pipeline.cache.StepCache.credit_raster, or None) is called as
    ``memo(inputs, path, write)``: it links the raster written before for the same
    ``inputs`` (everything the raster is made of, see :func:`project_inputs`) to
    ``path``, or calls ``write()`` and keeps the result. A new vintage then writes only
    the rasters of projects whose credits or land cover changed.
    """
    written = {}
    reused = 0
    for pid, group in sites.groupby("project_id", sort=True):
        path = Path(path_for(pid))

        def write(pid=pid, group=group, path=path):
            _write_project(pid, group, credits, grid, canonical_pre, canonical_post, path)

        if memo is None:
            write()
        else:
            reused += bool(memo(project_inputs(pid, group, credits, grid, canonical_pre, canonical_post),
                                path, write))
        written[str(pid)] = path
    if memo is not None:
        log.info("credit rasters: %d written, %d unchanged since an earlier run and reused",
                 len(written) - reused, reused)
    return written


def project_inputs(pid, group: gpd.GeoDataFrame, credits: pd.DataFrame, grid: Grid,
                   canonical_pre: np.ndarray, canonical_post: np.ndarray) -> dict:
    """What the credit raster of project `pid` is made of, as a JSON-able document of
    digests: its sites (ids, geometries), their credit rows, the grid and the baseline
    and assessment land cover under the project's window."""
    import hashlib

    from pipeline.cache import frame_digest

    win = project_window(group.geometry, grid)
    rs, cs = win.slices()
    rows = credits[credits["site_id"].isin(group["site_id"])]
    rows = rows[["site_id", "function", "credit", "debit", "score_pre", "score_post"]]
    cells = [hashlib.sha256(np.ascontiguousarray(a[rs, cs]).tobytes()).hexdigest()
             for a in (canonical_pre, canonical_post)]
    return {"project": str(pid), "sites": frame_digest(group[["site_id", "geometry"]]),
            "credits": frame_digest(rows.sort_values(["site_id", "function"]).reset_index(drop=True)),
            "grid": grid.describe(), "window": [win.row0, win.col0, win.height, win.width],
            "landcover": cells}


def _write_project(pid, group: gpd.GeoDataFrame, credits: pd.DataFrame, grid: Grid,
                   canonical_pre: np.ndarray, canonical_post: np.ndarray, path: Path) -> None:
    from rasterio.windows import Window as RioWindow

    from pipeline.io.rasters import GTIFF_OPTIONS, atomic_raster, sparse_cog

    win = project_window(group.geometry, grid)
    main = path.with_name(f".{path.stem}.main.tif")
    profile = dict(GTIFF_OPTIONS, width=win.width, height=win.height, count=len(BANDS),
                   dtype="float64", crs=grid.crs.to_wkt(), transform=win.transform(grid),
                   nodata=NODATA, predictor=3, blockxsize=256, blockysize=256, SPARSE_OK=True)
    if win.width < 256 or win.height < 256:
        profile.update(tiled=False)
        profile.pop("blockxsize")
        profile.pop("blockysize")
    groups = site_groups(group.geometry, grid)
    if len(groups) == 1 or not profile["tiled"]:
        groups = [(win, np.arange(len(group)))]
    try:
        with atomic_raster(main, profile) as dst:
            for gwin, members in groups:
                _, arr = project_credit_arrays(group.iloc[members], credits, grid, canonical_pre,
                                               canonical_post, gwin)
                dst.write(arr, window=RioWindow(gwin.col0 - win.col0, gwin.row0 - win.row0,
                                                gwin.width, gwin.height))
            for i, name in enumerate(BANDS, 1):
                dst.set_band_description(i, name)
            dst.update_tags(project_id=str(pid), sites=",".join(map(str, group["site_id"])),
                            landcover_change="0 unchanged; else baseline_code*10 + assessment_code "
                                             "(canonical codes 1 forest .. 9 other)")
        sparse_cog(main, [(g.row0 - win.row0, g.col0 - win.col0, g.height, g.width) for g, _ in groups], path)
    finally:
        main.unlink(missing_ok=True)
    log.debug("credit raster %s: %d x %d cells, %d site group(s)", path.name, win.width, win.height,
              len(groups))
