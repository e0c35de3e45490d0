"""The steps of one assessment, from checked inputs to published files.

Called by `pipeline.assess.assess` inside a staging folder. Each step reads what
the previous wrote (GeoTIFFs on the basin grid) and logs its wall time.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import rasterio.features
import rioxarray
import xarray as xr

from pipeline.io.ingest import Ingested, align_inputs, apply_parameter_overrides
from pipeline.io.outputs import OutputLayout
from pipeline.io.rasters import write_array
from pipeline.parallel import local_scheduler
from pipeline.runlog import Timings, settle_heap

log = logging.getLogger(__name__)

# Rulebook parameter -> name used by the site-indicator module (pipeline.indicators.sites).
_SITE_PARAM_NAMES = {
    "near_buffer_m": "near_buffer_m",
    "landscape_buffer_m": "landscape_buffer_m",
    "riparian_buffer_m": "riparian_buffer_m",
    "point_source_buffer_m": "point_source_extra_m",
    "protected_buffer_m": "protected_near_m",
    "species_buffer_m": "species_m",
    "flood_corridor_m": "path_assets_buffer_m",
    "flood_path_near_km": "path_assets_near_km",
    "flood_path_far_km": "path_assets_far_km",
    "min_depression_depth_m": "min_depression_depth_m",
    "structure_min_share": "structure_min_share",
    "structure_min_ha": "structure_min_ha",
}
# Config layer name -> name used by the site-indicator module.
_SITE_LAYER_NAMES = {"soil": "soils"}


@dataclass
class Hydrology:
    paths: dict[str, Path]
    basin_mask: np.ndarray


def open_da(path: Path, chunk: int) -> xr.DataArray:
    """A GeoTIFF as a dask-backed (y, x) DataArray with CRS and nodata kept."""
    da = rioxarray.open_rasterio(path, chunks={"y": chunk, "x": chunk}, masked=False,
                                 lock=False).squeeze("band", drop=True)
    return da


class Uncached:
    """Runs every step afresh: the interface of pipeline.cache.StepCache without reuse.

    Each method takes the step's arguments followed by the step function.
    """

    @staticmethod
    def _run(*args, **kw):
        return args[-1](*args[:-1], **kw)

    hydrology = landscape = site_indicators = _run


def run_steps(ing: Ingested, layout: OutputLayout, work: Path, timings: Timings,
              cache=None) -> dict:
    """Run every step; `cache` (a pipeline.cache.StepCache) reuses unchanged results."""
    from pipeline.scoring.rulebook import load_rulebook

    steps = cache if cache is not None else Uncached()

    cfg = ing.cfg
    grid = ing.grid
    chunk = cfg.processing.chunk_size
    book = apply_parameter_overrides(load_rulebook(cfg.rulebook), cfg)
    params = {name: p.value for name, p in book.parameters.items()}
    notes: list[str] = []
    settle_heap()     # the geospatial stack and the inputs are loaded

    with timings.step("align inputs to the basin grid"):
        aligned = align_inputs(ing, work / "aligned", chunk_rows=chunk, cache=cache)

    with timings.step("hydrology (fill, D8, accumulation, slope, depressions, streams)"):
        hyd = steps.hydrology(ing, aligned, layout, params, chunk, notes, run_hydrology)

    # a vintage with an as-built DEM (changing some cell) has its own hydrology, which its
    # land-cover and site indicators use (METHOD.md: ratings from the vintage's land cover
    # and, where given, its as-built DEM); the basin outline and stream map stay the basin's
    hyd_of: dict[str, Hydrology] = {}
    for v in cfg.landcover:
        if aligned.get(f"dem_{v.name}", aligned["dem"]) == aligned["dem"]:
            hyd_of[v.name] = hyd
            continue
        with timings.step(f"hydrology of the as-built DEM of {v.name}"):
            mine: list[str] = []
            hyd_of[v.name] = steps.hydrology(ing, aligned, layout, params, chunk, mine, run_hydrology,
                                             vintage=v.name)
            notes.extend(f"{v.name} (as-built DEM): {n}" for n in mine)

    canon: dict[str, Path] = {}
    landscape: dict[str, dict] = {}
    for v in cfg.landcover:
        with timings.step(f"land-cover indicators {v.name} ({v.year})"):
            canon[v.name], landscape[v.name] = steps.landscape(ing, v, aligned, hyd_of[v.name], layout,
                                                               params, chunk, run_landscape)

    # the report's second figure process starts now: its start (~1.4 s of one CPU) overlaps
    # the mostly single-threaded steps below instead of delaying the report
    from pipeline.report import figures

    figures.start_helper()
    try:
        with timings.step("site indicators"):
            indicators = steps.site_indicators(ing, hyd_of, landscape, params, run_site_indicators)

        with timings.step("ratings, credits and ledger"):
            from pipeline.scoring.score import score_sites

            sites_df = pd.DataFrame(ing.sites.drop(columns="geometry"))
            result = score_sites(indicators, sites_df, cfg.baseline_name, cfg.assessment_name,
                                 cfg.assessment_date, book)
            write_tables(result, layout)
            from pipeline.history import write_history

            history = write_history(result.site_scores, sites_df, cfg, book, layout)
            log.info("basin ledger: %s", result.verdict)
            for _, row in result.ledger.iterrows():
                log.info("  %-4s credits %10.2f  debits %10.2f  net %10.2f  %s", row["function"],
                         row["credits"], row["debits"], row["net"], row["verdict"])

        with timings.step("credit rasters"):
            from pipeline.scoring.spread import write_credit_rasters

            pre = _read(canon[cfg.baseline_name])
            post = _read(canon[cfg.assessment_name])
            credit_paths = write_credit_rasters(ing.sites, result.credits, grid, pre, post,
                                                layout.credit_raster,
                                                memo=cache.credit_raster if cache is not None else None)
            del pre, post

        with timings.step("GeoPackage and report"):
            from pipeline.deliver import deliver

            asbuilt = {name: h for name, h in hyd_of.items() if h is not hyd}
            deliver(ing, layout, hyd, landscape, result, credit_paths, book, history, asbuilt)
    finally:
        figures.stop_helper()

    return {"notes": notes, "verdict": result.verdict}


# ---------------------------------------------------------------------------------
# steps


def run_hydrology(ing: Ingested, aligned: dict, layout: OutputLayout, params: dict, chunk: int,
                  notes: list[str], vintage: str | None = None) -> Hydrology:
    """Hydrology of the basin DEM, or with `vintage` of that vintage's as-built DEM
    (``aligned["dem_<vintage>"]``, written to ``layout.hydrology_of(vintage)``)."""
    from pipeline.ops import hydrology as H

    out = layout.hydrology_of(vintage)
    dem_path = aligned["dem"] if vintage is None else aligned[f"dem_{vintage}"]
    paths = dict(H.hydrology_to_files(dem_path, out, chunk_size=chunk, scheduler=current_client()))
    dem = open_da(dem_path, chunk)
    filled = open_da(paths["filled"], chunk)
    slope = H.slope_horn(dem)
    depth = H.depression_depth(dem, filled)
    up = open_da(paths["upstream_area_km2"], chunk)
    streams = H.stream_mask(up, params["stream_threshold_km2"])
    grid = ing.grid
    paths["slope_deg"] = write_array(out / "slope_deg.tif", slope.values.astype("float32"), grid, np.nan)
    paths["depression_depth_m"] = write_array(out / "depression_depth_m.tif",
                                              depth.values.astype("float32"), grid, np.nan)
    smask = streams.values.astype("uint8")
    if "streams" in ing.layers:
        burned = rasterio.features.rasterize(
            ((g, 1) for g in ing.layers["streams"].geometry.values), out_shape=grid.shape,
            transform=grid.transform, fill=0, dtype="uint8")
        valid = smask != 255
        smask = np.where(valid & (burned == 1), 1, smask).astype("uint8")
        notes.append(f"streams: {int(burned.sum())} cells of the supplied stream layer added to "
                     "the threshold streams")
    paths["streams"] = write_array(out / "streams.tif", smask, grid, 255)
    d8 = _read(paths["d8"])
    if ing.basin is not None:
        mask = rasterio.features.rasterize(
            ((g, 1) for g in ing.basin.geometry.values), out_shape=grid.shape,
            transform=grid.transform, fill=0, dtype="uint8")
    else:
        rc = [grid.rowcol(x, y) for x, y, _ in ing.outlets_xy]
        mask = H.basin_mask(open_da(paths["d8"], chunk), rc).values.astype("uint8")
        notes.append(f"basin delineated from {len(rc)} outlet(s): {int(mask.sum())} cells")
    mask[d8 == 255] = 0
    paths["basin_mask"] = write_array(out / "basin_mask.tif", mask, grid, None)
    log.info("basin: %d cells (%.1f km2); streams: %d cells", int(mask.sum()),
             mask.sum() * grid.cell_area_m2 / 1e6, int((smask == 1).sum()))
    return Hydrology(paths=paths, basin_mask=mask.astype(bool))


def current_client():
    """The dask.distributed client of this run (set by --scheduler), or None for local threads."""
    if "distributed" not in sys.modules:    # no client without it; importing it costs 0.1-0.2 s
        return None
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def run_landscape(ing: Ingested, v, aligned: dict, hyd: Hydrology, layout: OutputLayout,
                  params: dict, chunk: int, memo=None) -> tuple[Path, dict]:
    """Land-cover indicator rasters of vintage `v`; `memo` (a pipeline.cache.BlockMemo, given
    only when the run uses the cache) reuses the chunk results of earlier vintages."""
    from pipeline.indicators.landscape import compute_landscape_indicators
    from pipeline.io.classes import load_scheme, reclassify

    scheme = load_scheme(v.scheme)
    raw = open_da(aligned[f"lc_{v.name}"], chunk)
    raw = raw.rio.write_nodata(-1)
    canonical = reclassify(raw, scheme, path=v.path)
    d8 = open_da(hyd.paths["d8"], chunk)
    if current_client() is None:
        # the class and D8 rasters (one byte a cell) are read once and kept in memory: a
        # dozen passes use them (weights, shares, patches, memo keys), and each would
        # otherwise decode the GeoTIFF and reclassify it again (on 5e7 cells 10-17 s of the
        # 64 s step). Not on a dask.distributed cluster: the tiled passes read blocks with
        # the synchronous scheduler, which cannot fetch blocks held by its workers.
        threads = local_scheduler("threads")
        canonical, d8 = canonical.persist(scheduler=threads), d8.persist(scheduler=threads)
    acc = open_da(hyd.paths["accumulation"], chunk)
    streams = open_da(hyd.paths["streams"], chunk) == 1
    out = compute_landscape_indicators(canonical, d8, acc, streams, params, layout.indicators(v.name),
                                       memo=memo)
    return Path(out["canonical"]), dict(out)


def run_site_indicators(ing: Ingested, hyd_of: dict[str, Hydrology], landscape: dict[str, dict],
                        params: dict) -> pd.DataFrame:
    """Site indicators from the rasters the earlier steps wrote; `hyd_of` is the hydrology
    of each vintage (the basin's, or that of its as-built DEM).

    The rasters are handed over as files (``RasterFile``): the site indicators read
    D8 and the class rasters whole (uint8, CB is basin-wide) and everything else
    only in windows around the sites and their flow paths.
    """
    from pipeline.indicators.sites import RasterFile, site_indicators

    grid = ing.grid
    stats: dict[int, tuple[dict, RasterFile]] = {}    # one set of files per distinct hydrology

    def dem_stats_of(h: Hydrology) -> tuple[dict, RasterFile]:
        if id(h) not in stats:
            stats[id(h)] = ({name: RasterFile(Path(h.paths[name]))
                             for name in ("slope_deg", "depression_depth_m", "d8", "accumulation")},
                            RasterFile(Path(h.paths["streams"]), equals=1))
        return stats[id(h)]

    vintages = ing.cfg.landcover
    dem_stats, _ = dem_stats_of(hyd_of[vintages[0].name])
    landcover = {}
    for v in vintages:
        paths = landscape[v.name]
        patch_table = pd.read_csv(paths["patch_table"])
        own, streams = dem_stats_of(hyd_of[v.name])
        landcover[v.name] = {
            "year": v.year,
            "dem_stats": own,
            "canonical": RasterFile(Path(paths["canonical"])),
            "patch_id": RasterFile(Path(paths["patch_id"])),
            "patch_area_ha": _patch_lookup(patch_table, "area_ha"),
            "patch_dpc": _patch_lookup(patch_table, "dpc"),
            "stream_mask": streams,
            "dist_to_stream_m": RasterFile(Path(paths["dist_to_stream_m"])),
        }
    layers = {_SITE_LAYER_NAMES.get(k, k): v for k, v in ing.layers.items()}
    attrs = _canonical_attrs()
    p = {dst: params[src] for src, dst in _SITE_PARAM_NAMES.items() if src in params}
    return site_indicators(ing.sites, (grid.transform, grid.crs, grid.shape), dem_stats, landcover,
                           layers=layers, attrs=attrs, params=p)


def _canonical_attrs() -> dict:
    """The canonical class attribute table in the form the site indicators read."""
    from pipeline.io.classes import load_canonical

    table = load_canonical()
    out = {}
    for name, c in table.classes.items():
        out[c.code] = {
            "natural": bool(c.natural), "intensity": c.intensity,
            "pollutant": bool(c.pollutant_generating), "runoff": bool(c.runoff_generating),
            "impervious": float(c.impervious_fraction),
            "hq_weight": float(table.sub_class_weight(c.hj192_default_sub_class)),
            "persistent_veg": bool(c.persistent_vegetation), "name": name,
        }
    return out


def _patch_lookup(table: pd.DataFrame, column: str) -> np.ndarray:
    """Per-patch values as an array indexed by patch id (0 = no patch)."""
    n = int(table["patch_id"].max()) + 1 if len(table) else 1
    out = np.zeros(n, dtype=np.float64)
    if len(table):
        out[table["patch_id"].to_numpy(dtype=np.int64)] = table[column].to_numpy(dtype=np.float64)
    return out


def write_tables(result, layout: OutputLayout) -> None:
    from pipeline.io.tables import write_csv, write_parquet

    write_csv(result.site_scores, layout.table("sites.csv"))
    write_parquet(result.site_scores, layout.table("sites.parquet"))
    write_csv(result.credits, layout.table("credits.csv"))
    write_csv(result.ledger, layout.table("ledger.csv"))
    write_csv(result.project_totals, layout.table("project_totals.csv"))
    write_csv(result.traces, layout.table("traces.csv"))


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)
