"""Reading and checking vector layers (pyogrio / geopandas)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import shapely
from pyproj import CRS

from pipeline.errors import InputDataError

log = logging.getLogger(__name__)


def read_layer(path: Path, layer: str | None, role: str, target_crs: CRS,
               geom_types: tuple[str, ...] | None = None,
               repaired: list[str] | None = None, id_field: str | None = None) -> gpd.GeoDataFrame:
    """Read a vector layer, check it and return it in `target_crs`.

    Invalid but repairable geometries are repaired (shapely.make_valid) and listed in
    `repaired`; empty geometries and wrong geometry types are errors.
    """
    path = Path(path)
    if not path.exists():
        raise InputDataError(f"{role}: file not found", path=path,
                             fix="check the path in the configuration")
    try:
        layers = [name for name, _ in pyogrio.list_layers(path)]
    except Exception as exc:  # pyogrio raises DataSourceError and friends
        raise InputDataError(f"{role}: GDAL cannot open it as a vector dataset ({_short(exc)})",
                             path=path, fix="re-export it as GeoPackage (ogr2ogr out.gpkg in)") from None
    if layer is not None and layer not in layers:
        raise InputDataError(f"{role}: layer {layer!r} not found; layers in the file: {layers}",
                             path=path, field="layer", fix="set 'layer:' to one of them")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            gdf = gpd.read_file(path, layer=layer, engine="pyogrio")
    except Exception as exc:
        raise InputDataError(f"{role}: the layer cannot be read ({_short(exc)})", path=path,
                             field=layer, fix="re-export the layer; the file may be truncated") from None
    where = f"{path.name}" + (f" layer {layer!r}" if layer else "")
    if gdf.crs is None:
        raise InputDataError(f"{role}: {where} has no CRS", path=path, field=layer,
                             fix="assign it, e.g. ogr2ogr -a_srs EPSG:4326 out.gpkg in.gpkg")
    if len(gdf) == 0:
        raise InputDataError(f"{role}: {where} has no features", path=path, field=layer,
                             fix="check that the right layer is named")
    ids = gdf[id_field].astype(str).tolist() if id_field and id_field in gdf else [str(i) for i in gdf.index]
    empty = gdf.geometry.isna() | gdf.geometry.is_empty
    if empty.any():
        bad = [ids[i] for i in np.flatnonzero(empty.to_numpy())][:10]
        raise InputDataError(f"{role}: {int(empty.sum())} feature(s) with empty geometry: {bad}",
                             path=path, field=layer, fix="delete or redraw those features")
    if geom_types:
        kinds = gdf.geometry.geom_type.to_numpy()
        wrong = ~np.isin(kinds, geom_types)
        if wrong.any():
            bad = sorted(set(kinds[wrong]))
            raise InputDataError(f"{role}: expected {'/'.join(geom_types)} geometries, found {bad}",
                                 path=path, field=layer, fix="export the layer with the right geometry type")
    invalid = ~gdf.geometry.is_valid
    if invalid.any():
        fixed = shapely.make_valid(gdf.geometry.to_numpy()[invalid.to_numpy()], method="structure")
        if geom_types and any("Polygon" in g for g in geom_types):
            fixed = np.array([_polygonal(g) for g in fixed], dtype=object)
        bad_ids = [ids[i] for i in np.flatnonzero(invalid.to_numpy())]
        still = np.array([g is None or g.is_empty for g in fixed])
        if still.any():
            raise InputDataError(
                f"{role}: invalid geometries that cannot be repaired: "
                f"{[b for b, s in zip(bad_ids, still) if s]}", path=path, field=layer,
                fix="redraw them in QGIS (Vector > Geometry Tools > Check Validity)")
        gdf.loc[invalid, gdf.geometry.name] = fixed
        log.warning("%s: repaired %d invalid geometr%s in %s: %s", role, len(bad_ids),
                    "y" if len(bad_ids) == 1 else "ies", where, bad_ids)
        if repaired is not None:
            repaired.extend(f"{role}:{b}" for b in bad_ids)
    return gdf.to_crs(target_crs)


def _polygonal(geom):
    """Keep the polygonal part of a repaired geometry (make_valid may add lines/points)."""
    if geom is None:
        return None
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [g for g in getattr(geom, "geoms", [geom]) if g.geom_type in ("Polygon", "MultiPolygon")]
    if not parts:
        return None
    return shapely.union_all(parts)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]
