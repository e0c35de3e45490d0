"""Assemble what a run produced into `RunOutputs` and write the deliverables."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features
import shapely
import yaml

from pipeline.config import REPO_ROOT
from pipeline.io.ingest import Ingested
from pipeline.io.outputs import OutputLayout
from pipeline.runlog import settle_heap, sha256, versions

log = logging.getLogger(__name__)


def deliver(ing: Ingested, layout: OutputLayout, hyd, landscape: dict, result, credit_paths: dict,
            book, history=None, asbuilt: dict | None = None) -> None:
    """Publish rasters as COGs with styles, the GeoPackage and the report; `asbuilt` is the
    hydrology of each vintage that has its own as-built DEM (published beside its indicators)."""
    from pipeline.report.cog import convert_to_cog, write_raster_styles
    from pipeline.report.document import write_report
    from pipeline.report.gpkg import write_geopackage
    from pipeline.report.model import RunOutputs

    settle_heap()     # the report modules are loaded

    rasters = raster_index(hyd, landscape, credit_paths, asbuilt)
    for path in rasters.values():          # hydrology and credit rasters are plain tiled GeoTIFFs
        convert_to_cog(path)
    write_raster_styles(rasters, keep=True)   # sidecars restored with cached rasters are theirs

    run = RunOutputs(
        basin_name=ing.cfg.basin.name,
        basin_title=ing.cfg.basin.title or ing.cfg.basin.name,
        out_dir=layout.root,
        assessment_date=ing.cfg.assessment_date,
        baseline=(ing.cfg.baseline_name, ing.cfg.vintage(ing.cfg.baseline_name).year),
        assessment=(ing.cfg.assessment_name, ing.cfg.vintage(ing.cfg.assessment_name).year),
        vintages=[(v.name, v.year) for v in ing.cfg.landcover],
        crs=ing.grid.crs.to_wkt(),
        resolution_m=ing.grid.res,
        boundary=basin_polygon(ing, hyd),
        streams=streams_vector(ing, hyd),
        sites=site_layer(ing, result),
        near_rings=rings(ing, book, "near_buffer_m"),
        ring1k=rings(ing, book, "landscape_buffer_m"),
        site_scores=result.site_scores,
        credits=result.credits,
        ledger=result.ledger,
        project_totals=result.project_totals,
        history=history,
        layers=dict(ing.layers),
        rasters=rasters,
        parameters=assumption_list(book),
        versions=versions(),
        inputs=input_list(ing),
    )
    # the GeoPackage is written while the second figure process draws (0.7 s of the demo's
    # report step; pyogrio holds the GIL, so a thread would not overlap it)
    write_report(run, layout.report, reuse_figures_from=previous_figures(layout),
                 meanwhile=lambda: write_geopackage(run, layout.geopackage))


def previous_figures(layout: OutputLayout) -> Path | None:
    """The figures folder of the outputs this run will replace (read only), or None.

    A run is staged in ``<parent>/.<name>.staging-<pid>`` (pipeline.io.outputs.Publisher)
    and published as ``<parent>/<name>``; the published folder still holds the previous
    report while this one is written. Its PNGs carry their figure keys, so only
    figures whose inputs are unchanged are taken from it.
    """
    m = re.fullmatch(r"\.(.+)\.staging-\d+", layout.root.name)
    if m is None:
        return None
    folder = layout.root.parent / m.group(1) / layout.report.relative_to(layout.root) / "figures"
    return folder if folder.is_dir() else None


def basin_polygon(ing: Ingested, hyd) -> gpd.GeoDataFrame:
    if ing.basin is not None:
        return gpd.GeoDataFrame({"name": [ing.cfg.basin.title or ing.cfg.basin.name]},
                                geometry=[shapely.union_all(ing.basin.geometry.values)], crs=ing.crs)
    shapes = rasterio.features.shapes(hyd.basin_mask.astype("uint8"), mask=hyd.basin_mask,
                                      transform=ing.grid.transform)
    geom = shapely.union_all([shapely.geometry.shape(s) for s, _ in shapes])
    return gpd.GeoDataFrame({"name": [ing.cfg.basin.title or ing.cfg.basin.name]}, geometry=[geom],
                            crs=ing.crs)


def streams_vector(ing: Ingested, hyd) -> gpd.GeoDataFrame:
    from pipeline.indicators.streams import stream_reaches

    with rasterio.open(hyd.paths["d8"]) as a, rasterio.open(hyd.paths["streams"]) as b, \
            rasterio.open(hyd.paths["upstream_area_km2"]) as c:
        streams = b.read(1)
        streams = np.where(hyd.basin_mask & (streams == 1), 1, 0).astype("uint8")
        return stream_reaches(a.read(1), streams, c.read(1), ing.grid)


def site_layer(ing: Ingested, result) -> gpd.GeoDataFrame:
    sites = ing.sites.copy()
    first = result.credits.drop_duplicates("site_id").set_index("site_id")
    sites["stage"] = sites["site_id"].map(first["stage"])
    sites["tf"] = sites["site_id"].map(first["tf"])
    for col in ("construction_start", "completion"):
        sites[col] = sites[col].map(lambda d: d.isoformat() if d is not None else None)
    return sites


def rings(ing: Ingested, book, param: str) -> gpd.GeoDataFrame:
    dist = float(book.parameters[param].value)
    geoms = ing.sites.geometry.values
    ring = shapely.difference(shapely.buffer(geoms, dist, quad_segs=16), geoms)
    return gpd.GeoDataFrame({"site_id": ing.sites["site_id"].values, "buffer_m": dist},
                            geometry=ring, crs=ing.crs)


def raster_index(hyd, landscape: dict, credit_paths: dict, asbuilt: dict | None = None) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for k, p in hyd.paths.items():
        out[k] = Path(p)
    for vintage, h in sorted((asbuilt or {}).items()):
        for k, p in h.paths.items():
            out[f"{vintage}/hydrology/{k}"] = Path(p)
    for vintage, paths in landscape.items():
        for k, p in paths.items():
            if str(p).endswith(".tif"):
                out[f"{vintage}/{k}"] = Path(p)
    for pid, p in credit_paths.items():
        out[f"credits_{pid}"] = Path(p)
    return out


def assumption_list(book) -> list[dict]:
    """Every method number with its source; `assumption` marks the project's own choices."""
    out = []
    for name, p in book.parameters.items():
        out.append({"name": name, "value": p.value, "unit": p.unit, "source": p.source,
                    "assumption": bool(p.assumption)})
    for name in ("planned", "under_construction", "completed", "established", "long_term"):
        s = getattr(book.stages, name)
        out.append({"name": f"time factor: {name}", "value": s.tf, "unit": "-", "source": s.source,
                    "assumption": bool(s.assumption)})
    for table in sorted((REPO_ROOT / "configs" / "landcover").glob("*.yaml")):
        data = yaml.safe_load(table.read_text(encoding="utf-8"))
        for path, entry in _walk_assumptions(data, table.stem):
            out.append({"name": path, "value": entry.get("value", ""), "unit": entry.get("unit", ""),
                        "source": entry.get("source", entry.get("note", "")), "assumption": True})
    return out


def _walk_assumptions(node, path: str):
    if isinstance(node, dict):
        if node.get("assumption") is True:
            yield path, node
        for k, v in node.items():
            yield from _walk_assumptions(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk_assumptions(v, f"{path}[{i}]")


def input_list(ing: Ingested) -> list[dict]:
    out = []
    for role, path in ing.cfg.input_files():
        p = Path(path)
        source = ""
        if p.suffix.lower() in (".tif", ".tiff") and p.exists():
            with rasterio.open(p) as src:
                tags = src.tags()
            source = "; ".join(v for k, v in tags.items() if k.upper() in ("SOURCE", "LICENSE", "DESCRIPTION"))
        out.append({"role": role, "path": str(p), "sha256": sha256(p) if p.is_file() else "",
                    "source": source})
    return out
