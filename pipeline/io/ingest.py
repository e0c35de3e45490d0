"""Ingestion: check every input the configuration names, then align it to one grid.

`check_inputs` reads headers, attributes and every raster block once and collects
*all* problems before raising, so an analyst fixes a configuration in one pass.
Nothing is written until it passes.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.windows
import shapely
from pyproj import CRS
from rasterio.warp import transform_bounds

from pipeline.config import Config
from pipeline.errors import InputDataError, PipelineError, ValidationFailed
from pipeline.io.grid import Grid
from pipeline.io.rasters import RasterInfo, align_raster, error_text, inspect_raster
from pipeline.io.scans import scanned
from pipeline.io.vectors import read_layer

log = logging.getLogger(__name__)

# Sentinels that agencies use for "no data" without always declaring it.
_SUSPECT_NODATA = (-9999.0, -32768.0, -32767.0, -3.4028234663852886e38, 32767.0, 65535.0)

POLYGON = ("Polygon", "MultiPolygon")
POINT = ("Point", "MultiPoint")
LINE = ("LineString", "MultiLineString")

LAYER_GEOMETRY = {
    "streams": LINE, "protected_areas": POLYGON, "wq_targets": POLYGON,
    "monitoring_sections": POINT, "point_sources": POINT, "flood_assets": POLYGON + POINT,
    "soil": POLYGON, "species": POINT + POLYGON,
}
GB3838_CLASSES = ("I", "II", "III", "IV", "V", "劣V")


@dataclass
class Ingested:
    """Everything the configuration names, checked, in the analysis CRS."""

    cfg: Config
    crs: CRS
    grid: Grid
    basin: gpd.GeoDataFrame | None          # boundary polygon(s); None when delineated
    outlets_xy: list[tuple[float, float, str]]
    sites: gpd.GeoDataFrame
    layers: dict[str, gpd.GeoDataFrame]
    dem: RasterInfo
    landcover: dict[str, RasterInfo]
    repaired: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    asbuilt: dict[str, RasterInfo] = field(default_factory=dict)   # vintage -> its as-built DEM


def check_inputs(cfg: Config) -> Ingested:
    """Check every input; raise ValidationFailed listing every problem found."""
    problems: list[PipelineError] = []
    notes: list[str] = []
    repaired: list[str] = []
    crs = CRS.from_user_input(cfg.crs)

    def attempt(fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except ValidationFailed as exc:
            problems.extend(exc.problems)
        except PipelineError as exc:
            problems.append(exc)
        return None

    rulebook = attempt(_check_rulebook, cfg)
    del rulebook
    dem = attempt(_check_dem, cfg, notes)

    basin = None
    outlets: list[tuple[float, float, str]] = []
    if cfg.boundary is not None:
        basin = attempt(read_layer, cfg.boundary.path, cfg.boundary.layer, "boundary", crs,
                        geom_types=POLYGON, repaired=repaired)
    else:
        outlets = attempt(_outlets_in_crs, cfg, crs) or []

    grid = None
    if dem is not None:
        grid = attempt(_make_grid, cfg, crs, dem, basin)

    landcover: dict[str, RasterInfo] = {}
    for v in cfg.landcover:
        info = attempt(_check_landcover, v, grid)
        if info is not None:
            landcover[v.name] = info
    asbuilt: dict[str, RasterInfo] = {}
    for v in cfg.landcover:
        if v.dem is not None:
            info = attempt(_check_asbuilt_dem, v, grid, notes)
            if info is not None:
                asbuilt[v.name] = info

    sites = attempt(_read_sites, cfg, crs, grid, basin, repaired)
    layers: dict[str, gpd.GeoDataFrame] = {}
    for name in LAYER_GEOMETRY:
        ref = getattr(cfg.layers, name)
        if ref is None:
            continue
        gdf = attempt(read_layer, ref.path, ref.layer, f"layers.{name}", crs,
                      geom_types=LAYER_GEOMETRY[name], repaired=repaired)
        if gdf is not None:
            gdf = attempt(_check_layer_fields, name, ref, gdf)
        if gdf is not None:
            layers[name] = gdf

    if problems:
        raise ValidationFailed(problems)
    return Ingested(cfg=cfg, crs=crs, grid=grid, basin=basin, outlets_xy=outlets, sites=sites,
                    layers=layers, dem=dem, landcover=landcover, repaired=repaired, notes=notes,
                    asbuilt=asbuilt)


# ---------------------------------------------------------------------------------
# Rasters


def _check_rulebook(cfg: Config):
    from pipeline.scoring.rulebook import load_rulebook

    book = load_rulebook(cfg.rulebook)
    return apply_parameter_overrides(book, cfg)


def _check_dem(cfg: Config, notes: list[str]) -> RasterInfo:
    return _check_elevations(cfg.dem.path, "dem", cfg.dem.nodata, notes)


def _check_asbuilt_dem(v, grid: Grid | None, notes: list[str]) -> RasterInfo:
    """The as-built DEM of vintage `v`: elevations as for the basin DEM, CRS and overlap.

    It may cover only part of the basin (a survey of the works): elsewhere the basin DEM
    is used (:func:`patch_dem`)."""
    role = f"landcover.{v.name}.dem"
    info = _check_elevations(v.dem, role, None, notes)
    if grid is not None:
        _check_overlap(info, grid, role, partial=True)
    return info


def _check_elevations(path: Path, role: str, cfg_nodata: float | None, notes: list[str]) -> RasterInfo:
    """A DEM: readable, nodata declared when sentinels occur, some valid cells, metres."""
    info = inspect_raster(path, role)
    nodata = info.nodata if info.nodata is not None else cfg_nodata
    where = "'dem: {nodata: %g}' in the configuration" if role == "dem" else None
    valid, nan_cells, suspects, vmin, vmax = scanned(
        "elevations", info.path, (nodata,), lambda: _elevation_stats(info.path, role, nodata))
    if suspects:
        s, n = max(suspects.items(), key=lambda kv: kv[1])
        raise InputDataError(
            f"{role}: no nodata value is declared but {n} cells hold {s:g}, a usual nodata "
            "sentinel; they would be taken as elevations", path=info.path, field="nodata",
            fix=f"declare it: gdal_edit.py -a_nodata {s:g} FILE" + (f", or set {where % s}" if where else ""))
    if valid == 0:
        raise InputDataError(f"{role}: every cell is nodata", path=info.path,
                             fix="check the file and its nodata value (gdalinfo -stats FILE)")
    if vmin < -500 or vmax > 9000:
        raise InputDataError(
            f"{role}: elevations from {vmin:g} to {vmax:g} m are outside -500..9000 m; "
            "the nodata value may be wrong or the units are not metres",
            path=info.path, field="nodata",
            fix="declare the right nodata (gdal_edit.py -a_nodata) or convert to metres")
    if nan_cells:
        notes.append(f"{role}: {nan_cells} NaN cells treated as nodata")
    if info.nodata is None and cfg_nodata is not None:
        notes.append(f"{role}: nodata {cfg_nodata:g} taken from the configuration")
    return info


def _blocks(path: Path, role: str) -> Iterator[np.ndarray]:
    """Every block of band 1, read once; a block that cannot be read is an InputDataError."""
    try:
        with rasterio.open(path) as src:
            for _, win in src.block_windows(1):
                yield src.read(1, window=win)
    except rasterio.errors.RasterioError as exc:
        raise InputDataError(f"{role}: the raster is truncated or corrupt ({error_text(exc)})",
                             path=path, fix="download or export the file again") from None


def _elevation_stats(path: Path, role: str, nodata: float | None) -> tuple:
    """(valid cells, NaN cells, {suspect sentinel: cells} when no nodata is declared, min, max)
    from one reading of every block."""
    valid = 0
    nan_cells = 0
    suspects: dict[float, int] = {}
    vmin, vmax = np.inf, -np.inf
    for a in _blocks(path, role):
        if a.dtype.kind == "f":
            nan = np.isnan(a)
            nan_cells += int(nan.sum())
        else:
            nan = np.zeros(a.shape, bool)
        ok = ~nan if nodata is None else (~nan & (a != nodata))
        if nodata is None:
            for s in _SUSPECT_NODATA:
                n = int((a == s).sum())
                if n:
                    suspects[s] = suspects.get(s, 0) + n
        valid += int(ok.sum())
        if ok.any():
            vmin = min(vmin, float(a[ok].min()))
            vmax = max(vmax, float(a[ok].max()))
    return valid, nan_cells, suspects, vmin, vmax


def _codes(path: Path, role: str) -> frozenset[int]:
    """The values of a class raster, from one reading of every block.

    8- and 16-bit integers are counted per value (``np.bincount`` of the block's bits as
    unsigned, no sorting: a demo land cover, 4.5e6 cells, 31 -> 19 ms with the reading);
    other types are sorted out (``np.unique``)."""
    codes: set[int] = set()
    seen = None         # seen[v]: value v (its bits, as unsigned) occurs
    for a in _blocks(path, role):
        if a.dtype.kind in "ui" and a.dtype.itemsize <= 2:
            bits = a.view(f"u{a.dtype.itemsize}").ravel()
            counts = np.bincount(bits, minlength=1 << (8 * a.dtype.itemsize))
            seen = counts > 0 if seen is None else seen | (counts > 0)
            signed = a.dtype.kind == "i"
        else:
            codes.update(np.unique(a).tolist())
    if seen is not None:
        values = np.flatnonzero(seen)
        if signed:      # two's complement: the upper half of the bit patterns are the negatives
            values = np.where(values >= seen.size // 2, values - seen.size, values)
        codes.update(values.tolist())
    return frozenset(codes)


def _check_landcover(v, grid: Grid | None) -> RasterInfo:
    from pipeline.io.classes import load_scheme

    role = f"landcover.{v.name}"
    info = inspect_raster(v.path, role)
    if info.dtype.startswith("float"):
        raise InputDataError(f"{role}: land cover must be an integer class raster, got {info.dtype}",
                             path=v.path, fix="export the classes as an integer GeoTIFF (Byte/UInt16)")
    scheme = load_scheme(v.scheme)
    known = set(int(c) for c in scheme.codes)
    if info.nodata is not None and int(info.nodata) in known:
        label = scheme.labels[list(scheme.codes).index(int(info.nodata))]
        raise InputDataError(
            f"{role}: the declared nodata value {int(info.nodata)} is also a class of the "
            f"'{v.scheme}' scheme ({label})", path=v.path, field="nodata",
            fix="set a nodata value that is not a class, e.g. gdal_edit.py -a_nodata 255 FILE")
    if grid is not None:
        _check_overlap(info, grid, role)
    codes = set(scanned("codes", info.path, (), lambda: _codes(info.path, role)))
    if info.nodata is not None:
        codes.discard(int(info.nodata))
    codes.difference_update(int(c) for c in scheme.nodata_codes)
    unknown = sorted(c for c in codes if c not in known)
    if unknown:
        raise InputDataError(
            f"{role}: codes {unknown[:20]} are not classes of the '{v.scheme}' scheme "
            f"(known: {sorted(known)})", path=v.path, field="scheme",
            fix="check that 'scheme' names the product the raster comes from, or declare the "
                "code as nodata (gdal_edit.py -a_nodata CODE FILE)")
    return info


def _check_overlap(info: RasterInfo, grid: Grid, role: str, partial: bool = False) -> None:
    """Raise when the raster misses the basin grid; warn when it covers only part of it
    (unless `partial`: an as-built survey covers the works only)."""
    bounds = transform_bounds(info.crs, grid.crs, *info.bounds, densify_pts=21)
    g = grid.bounds
    ix = min(bounds[2], g[2]) - max(bounds[0], g[0])
    iy = min(bounds[3], g[3]) - max(bounds[1], g[1])
    if ix <= 0 or iy <= 0:
        raise InputDataError(
            f"{role}: the raster does not overlap the basin (raster bounds in the analysis CRS "
            f"{tuple(round(b) for b in bounds)}, basin grid {tuple(round(b) for b in g)})",
            path=info.path, field="dem" if partial else None,
            fix="check the CRS assigned to the file (gdalinfo FILE) and that it covers "
                + ("the works" if partial else "the basin"))
    cover = ix * iy / ((g[2] - g[0]) * (g[3] - g[1]))
    if cover < 0.999 and not partial:
        log.warning("%s covers %.1f %% of the basin grid; the rest is nodata", role, 100 * cover)


def _outlets_in_crs(cfg: Config, crs: CRS) -> list[tuple[float, float, str]]:
    from pyproj import Transformer

    out = []
    for i, o in enumerate(cfg.outlets or []):
        try:
            tr = Transformer.from_crs(CRS.from_user_input(o.crs), crs, always_xy=True)
        except Exception as exc:
            raise InputDataError(f"outlets[{i}]: unknown CRS {o.crs!r} ({exc})", field=f"outlets.{i}.crs",
                                 path=cfg.source, fix="use e.g. EPSG:4326 with x = longitude") from None
        x, y = tr.transform(o.x, o.y)
        out.append((x, y, o.name))
    return out


def _make_grid(cfg: Config, crs: CRS, dem: RasterInfo, basin: gpd.GeoDataFrame | None) -> Grid:
    dem_bounds = transform_bounds(dem.crs, crs, *dem.bounds, densify_pts=21)
    if basin is not None:
        b = tuple(basin.total_bounds)
        ix = min(b[2], dem_bounds[2]) - max(b[0], dem_bounds[0])
        iy = min(b[3], dem_bounds[3]) - max(b[1], dem_bounds[1])
        if ix <= 0 or iy <= 0:
            raise InputDataError("dem: the DEM does not overlap the basin boundary",
                                 path=dem.path, fix="check the CRS of both files")
        # analysis extent = basin bounds, clipped to the DEM (the DEM defines the hydrology)
        bounds = (max(b[0], dem_bounds[0]), max(b[1], dem_bounds[1]),
                  min(b[2], dem_bounds[2]), min(b[3], dem_bounds[3]))
    else:
        bounds = dem_bounds
    grid = Grid.from_bounds(crs, bounds, cfg.resolution_m)
    if grid.size > 2_000_000_000:
        raise InputDataError(f"the analysis grid would have {grid.size:.3g} cells",
                             path=cfg.source, field="resolution_m",
                             fix="use a coarser resolution or a smaller basin")
    return grid


# ---------------------------------------------------------------------------------
# Sites and layers


def _read_sites(cfg: Config, crs: CRS, grid: Grid | None, basin, repaired: list[str]) -> gpd.GeoDataFrame:
    f = cfg.sites.fields
    path = cfg.sites.path
    gdf = read_layer(path, cfg.sites.layer, "sites", crs, geom_types=POLYGON, repaired=repaired,
                     id_field=f.site_id)
    problems: list[PipelineError] = []
    where = dict(path=path)

    required = {"site_id": f.site_id, "project_id": f.project_id, "kind": f.kind,
                "construction_start": f.construction_start, "completion": f.completion}
    optional = {k: getattr(f, k) for k in ("name", "project_type", "special_features", "in_wq_plan",
                                            "in_flood_plan", "in_habitat_plan", "compensation")}
    missing = [f"{k} -> '{col}'" for k, col in required.items() if col not in gdf.columns]
    missing += [f"{k} -> '{col}'" for k, col in optional.items()
                if col is not None and col not in gdf.columns and k not in ("name", "project_type")]
    if missing:
        raise InputDataError(
            f"sites: attribute(s) not in the layer: {missing}; columns are {list(gdf.columns[:-1])}",
            field="sites.fields", fix="map each field to a column name in 'sites: fields:'", **where)

    out = gpd.GeoDataFrame(geometry=gdf.geometry.values, crs=gdf.crs)
    ids = gdf[f.site_id]
    if ids.isna().any():
        rows = list(np.flatnonzero(ids.isna().to_numpy())[:10] + 1)
        problems.append(InputDataError(f"sites: empty {f.site_id} in feature(s) {rows}",
                                       field=f.site_id, fix="give every site an id", **where))
    ids = ids.astype(str)
    dup = sorted(ids[ids.duplicated()].unique())
    if dup:
        problems.append(InputDataError(f"sites: duplicate {f.site_id} values {dup[:10]}",
                                       field=f.site_id, fix="make site ids unique", **where))
    out["site_id"] = ids.to_numpy()
    out["project_id"] = gdf[f.project_id].astype(str).to_numpy()
    out["name"] = gdf[f.name].astype(str).to_numpy() if f.name in gdf else out["site_id"]
    out["project_type"] = (gdf[f.project_type].fillna("unspecified").astype(str).to_numpy()
                           if f.project_type in gdf else "unspecified")
    kinds = gdf[f.kind].astype(str).str.strip().str.lower()
    bad = ~kinds.isin(["restoration", "impact"])
    if bad.any():
        problems.append(InputDataError(
            f"sites: {f.kind} must be 'restoration' or 'impact'; sites {list(ids[bad])[:10]} have "
            f"{sorted(set(gdf[f.kind][bad].astype(str)))[:5]}", field=f.kind,
            fix="set kind to restoration or impact", **where))
    out["kind"] = kinds.to_numpy()

    starts, s_bad = _parse_dates(gdf[f.construction_start])
    ends, e_bad = _parse_dates(gdf[f.completion])
    for col, badmask in ((f.construction_start, s_bad), (f.completion, e_bad)):
        if badmask.any():
            sample = [f"{i}: {v!r}" for i, v in zip(ids[badmask], gdf[col][badmask])][:5]
            problems.append(InputDataError(
                f"sites: malformed date(s) in {col}: {sample}", field=col,
                fix="write dates as YYYY-MM-DD (leave completion empty if not completed)", **where))
    order = np.array([(s is not None and e is not None and e < s) for s, e in zip(starts, ends)])
    if order.any():
        problems.append(InputDataError(
            f"sites: completion before construction start for {list(ids[order])[:10]}",
            field=f.completion, fix="check the two dates of those sites", **where))
    nostart = np.array([s is None and e is not None for s, e in zip(starts, ends)])
    if nostart.any():
        problems.append(InputDataError(
            f"sites: completion date without a construction start for {list(ids[nostart])[:10]}",
            field=f.construction_start, fix="add the construction start date", **where))
    out["construction_start"] = starts
    out["completion"] = ends

    for key in ("in_wq_plan", "in_flood_plan", "in_habitat_plan"):
        col = getattr(f, key)
        out[key] = _flags(gdf[col]) if col else False
    if f.special_features:
        out["special_features"] = gdf[f.special_features].fillna("").astype(str).to_numpy()
    else:
        out["special_features"] = ""
    if f.compensation:
        comp = gdf[f.compensation].astype("string").str.strip().str.lower()
        badc = comp.notna() & ~comp.isin(["concurrent", "delayed"])
        if badc.any():
            problems.append(InputDataError(
                f"sites: {f.compensation} must be 'concurrent' or 'delayed' ({list(ids[badc])[:5]})",
                field=f.compensation, fix="use concurrent or delayed", **where))
        out["compensation"] = comp.astype(object).where(comp.notna(), None).to_numpy()
    else:   # the rulebook's temporal_loss_factor.default_compensation applies
        out["compensation"] = None

    out["area_ha"] = out.geometry.area / 1e4
    if grid is not None:
        cell_ha = grid.cell_area_m2 / 1e4
        tiny = out["area_ha"] < cell_ha
        if tiny.any():
            problems.append(InputDataError(
                f"sites: {list(out.site_id[tiny])[:10]} are smaller than one {grid.res:g} m cell",
                field=f.site_id, fix="check the geometry units/CRS of those sites", **where))
        gb = shapely.box(*grid.bounds)
        outside = ~out.geometry.within(gb)
        if basin is not None:
            outside |= ~out.geometry.intersects(shapely.union_all(basin.geometry.values))
        if outside.any():
            problems.append(InputDataError(
                f"sites: {list(out.site_id[outside])[:10]} lie (partly) outside the basin",
                field=f.site_id, fix="check the CRS of the site layer, or remove/clip those sites", **where))
    if len(out) > 1:
        idx_a, idx_b = out.sindex.query(out.geometry, predicate="intersects")
        inter = [(a, b) for a, b in zip(idx_a, idx_b) if a < b and
                 out.geometry.iloc[a].intersection(out.geometry.iloc[b]).area > 1.0]
        if inter:
            pairs = [f"{out.site_id.iloc[a]}/{out.site_id.iloc[b]}" for a, b in inter[:10]]
            problems.append(InputDataError(
                f"sites: overlapping sites {pairs} (each hectare may earn credit once)",
                field=f.site_id, fix="split the overlap between the sites or merge them", **where))
    if problems:
        raise ValidationFailed(problems)
    return out.sort_values("site_id", kind="stable").reset_index(drop=True)


def _parse_dates(col: pd.Series) -> tuple[list, np.ndarray]:
    values: list[dt.date | None] = []
    bad = []
    for v in col.tolist():
        if v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip()) \
                or v is pd.NaT:
            values.append(None)
            bad.append(False)
            continue
        if isinstance(v, (pd.Timestamp, dt.datetime)):
            values.append(v.date())
            bad.append(False)
            continue
        if isinstance(v, dt.date):
            values.append(v)
            bad.append(False)
            continue
        try:
            values.append(dt.date.fromisoformat(str(v).strip()[:10]))
            bad.append(False)
        except ValueError:
            values.append(None)
            bad.append(True)
    return values, np.array(bad, dtype=bool)


def _flags(col: pd.Series) -> np.ndarray:
    s = col.fillna(0)
    if s.dtype == object:
        return s.astype(str).str.strip().str.lower().isin(["1", "true", "yes", "y", "是"]).to_numpy()
    return s.astype(float).to_numpy() != 0


def _check_layer_fields(name: str, ref, gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    if name != "monitoring_sections":
        return gdf
    fields = {"name": "name", "target_class": "target_class", "observed_class": "observed_class"}
    fields.update(ref.fields)
    missing = [c for c in fields.values() if c not in gdf.columns]
    if missing:
        raise InputDataError(f"layers.monitoring_sections: columns {missing} not in the layer",
                             path=ref.path, field="fields",
                             fix="map name/target_class/observed_class in 'fields:'")
    out = gdf.rename(columns={v: k for k, v in fields.items()})
    for col in ("target_class", "observed_class"):
        vals = out[col].astype(str).str.strip()
        bad = ~vals.isin(GB3838_CLASSES)
        if bad.any():
            raise InputDataError(
                f"layers.monitoring_sections: {col} must be a GB 3838 class {GB3838_CLASSES}; "
                f"got {sorted(set(vals[bad]))[:5]}", path=ref.path, field=fields[col],
                fix="use Roman numerals I..V or 劣V")
        out[col] = vals
    return out


# ---------------------------------------------------------------------------------
# Alignment


def align_inputs(ing: Ingested, workdir: Path, chunk_rows: int = 1024, cache=None) -> dict[str, Path]:
    """Warp the DEM and every land-cover vintage onto the basin grid (GeoTIFFs in workdir).

    `cache` (a pipeline.cache.StepCache) reuses the aligned raster of a source file
    aligned before onto the same grid (a reprocess aligns only the new vintage).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    grid = ing.grid

    def align(src: Path, name: str, **kw) -> Path:
        kw["chunk_rows"] = chunk_rows
        if cache is not None:
            return cache.aligned(src, grid, workdir / name, kw, align_raster)
        return align_raster(src, grid, workdir / name, **kw)

    out = {}
    out["dem"] = align(ing.dem.path, "dem.tif", categorical=False, dtype="float32",
                       dst_nodata=np.float32(np.nan),
                       src_nodata=ing.dem.nodata if ing.dem.nodata is not None else ing.cfg.dem.nodata)
    for v in ing.cfg.landcover:
        info = ing.landcover[v.name]
        out[f"lc_{v.name}"] = align(info.path, f"landcover_{v.name}.tif", categorical=True, dtype="int32",
                                    dst_nodata=-1, src_nodata=info.nodata)
        if v.dem is not None:
            dinfo = ing.asbuilt[v.name]
            survey = align(dinfo.path, f"asbuilt_{v.name}.tif", categorical=False, dtype="float32",
                           dst_nodata=np.float32(np.nan), src_nodata=dinfo.nodata)
            out[f"dem_{v.name}"] = patch_dem(out["dem"], survey, workdir / f"dem_{v.name}.tif",
                                             f"landcover.{v.name}.dem", dinfo.path, chunk_rows)
    return out


def patch_dem(base: Path, survey: Path, dst: Path, role: str, source: Path | None = None,
              chunk_rows: int = 1024) -> Path:
    """The basin DEM with the as-built survey's elevations where both have data (a survey
    of the works usually covers only the sites), written to `dst`; `base` itself when the
    survey changes no cell (the vintage then shares the basin's hydrology)."""
    changed = covered = 0
    with rasterio.open(base) as b, rasterio.open(survey) as s:
        profile = b.profile
        tmp = dst.with_name(f".{dst.name}.tmp")
        with rasterio.open(tmp, "w", **profile) as out:
            for r0 in range(0, b.height, chunk_rows):
                win = rasterio.windows.Window(0, r0, b.width, min(chunk_rows, b.height - r0))
                z, a = b.read(1, window=win), s.read(1, window=win)
                use = np.isfinite(a) & np.isfinite(z)
                covered += int(use.sum())
                changed += int((use & (a != z)).sum())
                out.write(np.where(use, a, z).astype(z.dtype), 1, window=win)
    if covered == 0:
        tmp.unlink()
        raise InputDataError(f"{role}: the as-built DEM has no elevation on any cell of the basin grid "
                             "where the basin DEM has one", path=source or survey, field="dem",
                             fix="check the file's CRS and nodata value (gdalinfo -stats FILE)")
    if changed == 0:
        tmp.unlink()
        log.info("%s: the as-built DEM equals the basin DEM on the grid (%d cells compared); the "
                 "basin hydrology is used", role, covered)
        return Path(base)
    tmp.replace(dst)
    log.info("%s: as-built elevations on %d cells (%d differ from the basin DEM); the rest of the "
             "basin keeps the basin DEM", role, covered, changed)
    return dst


def apply_parameter_overrides(book, cfg: Config):
    """Return the rulebook with the configuration's `parameters:` overrides applied.

    Unknown names get a 'did you mean'; values outside a parameter's allowed range
    (declared in the rulebook) are errors.
    """
    import difflib

    from pipeline.errors import ConfigError

    problems: list[PipelineError] = []
    params = dict(book.parameters)
    for name, value in cfg.parameters.items():
        if name not in params:
            hint = difflib.get_close_matches(name, list(params), n=1)
            problems.append(ConfigError(
                f"unknown method parameter {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                path=cfg.source, field=f"parameters.{name}",
                fix=f"parameters are defined in {cfg.rulebook.name}: {', '.join(sorted(params))}"))
            continue
        p = params[name]
        if not p.min <= value <= p.max:
            problems.append(ConfigError(
                f"parameters.{name} = {value:g} {p.unit} is outside the allowed range "
                f"{p.min:g}..{p.max:g}", path=cfg.source, field=f"parameters.{name}",
                fix=f"use a value in range (the method's default is {p.value:g} {p.unit})"))
            continue
        params[name] = p.model_copy(update={"value": float(value)})
    if problems:
        raise ValidationFailed(problems)
    return book.model_copy(update={"parameters": params})
