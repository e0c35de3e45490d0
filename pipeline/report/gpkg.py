"""The analysts' GeoPackage: every layer of the run, the trace tables, default QGIS styles.

Styles live in the `layer_styles` table exactly as QGIS creates it (same DDL,
registered in gpkg_contents as an attributes table), one default style per
spatial layer (useAsDefault = 1) and a few alternative styles for the sites
(stage, each rating).  Timestamps (gpkg_contents.last_change, layer_styles.update_time)
are the assessment date, so the same run writes the same file.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio

from pipeline.errors import InputDataError
from pipeline.report import styles
from pipeline.report.model import (CELLS, FUNCTION_ZH, FUNCTIONS, SCALE_ZH, RunOutputs, atomic_path,
                                   project_totals, site_layer, validate_run)

log = logging.getLogger(__name__)

LAYER_STYLES_DDL = (
    'CREATE TABLE IF NOT EXISTS "layer_styles" ( "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, '
    '"f_table_catalog" TEXT(256), "f_table_schema" TEXT(256), "f_table_name" TEXT(256), '
    '"f_geometry_column" TEXT(256), "styleName" TEXT(30), "styleQML" TEXT, "styleSLD" TEXT, '
    '"useAsDefault" BOOLEAN, "description" TEXT, "owner" TEXT(30), "ui" TEXT(30), '
    "\"update_time\" DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"
)
_TRIGGERS = (
    'CREATE TRIGGER "trigger_insert_feature_count_layer_styles" AFTER INSERT ON "layer_styles" BEGIN '
    "UPDATE gpkg_ogr_contents SET feature_count = feature_count + 1 WHERE lower(table_name) = "
    "lower('layer_styles'); END",
    'CREATE TRIGGER "trigger_delete_feature_count_layer_styles" AFTER DELETE ON "layer_styles" BEGIN '
    "UPDATE gpkg_ogr_contents SET feature_count = feature_count - 1 WHERE lower(table_name) = "
    "lower('layer_styles'); END",
)

SITE_ALIASES: dict[str, str] = {
    "site_id": "场地编号", "project_id": "工程编号", "name": "名称", "kind": "场地类型",
    "project_type": "工程类型", "stage": "实施阶段", "tf": "时间因子", "area_ha": "面积（公顷）",
    "credit_total": "生态信用合计", "debit_total": "生态借记合计",
}
for _f in FUNCTIONS:
    SITE_ALIASES[f"{_f}_pre"] = f"{FUNCTION_ZH[_f]}得分（基期）"
    SITE_ALIASES[f"{_f}_post"] = f"{FUNCTION_ZH[_f]}得分（评估期）"
    SITE_ALIASES[f"credit_{_f}"] = f"{FUNCTION_ZH[_f]}信用"
    SITE_ALIASES[f"debit_{_f}"] = f"{FUNCTION_ZH[_f]}借记"
for _c in CELLS:
    _fn, _sc = _c.split("_")
    SITE_ALIASES[f"{_c}_pre"] = f"{FUNCTION_ZH[_fn]}-{SCALE_ZH[_sc]}（基期）"
    SITE_ALIASES[f"{_c}_post"] = f"{FUNCTION_ZH[_fn]}-{SCALE_ZH[_sc]}（评估期）"

STREAM_ALIASES = {"upstream_area_km2": "上游汇水面积（km²）"}


def _geom_kind(gdf: gpd.GeoDataFrame) -> str:
    types = set(gdf.geom_type.dropna().unique())
    if types and types <= {"Point", "MultiPoint"}:
        return "point"
    if types and types <= {"LineString", "MultiLineString"}:
        return "line"
    return "polygon"


def _clean_table(df: pd.DataFrame) -> pd.DataFrame:
    """GeoPackage-friendly column types (bool -> int, objects -> str)."""
    out = pd.DataFrame(index=range(len(df)))
    for col in df.columns:
        s = df[col].reset_index(drop=True)
        if s.dtype == bool:
            s = s.astype("int32")
        elif s.dtype == object or str(s.dtype) in ("str", "string"):
            s = s.map(lambda v: None if v is None or (isinstance(v, float) and pd.isna(v)) else str(v))
        out[str(col)] = s
    return out


def _style_rows(run: RunOutputs, written: dict[str, tuple[gpd.GeoDataFrame, str]],
                optional_names: dict[str, str]) -> list[tuple]:
    """(table, style name, qml, default, description) for every styled layer."""
    rows = []
    if "sites" in written:
        sites, _ = written["sites"]
        fields = [c for c in sites.columns if c != sites.geometry.name]
        label = ("\"name\" || '\\n' || CASE WHEN \"debit_total\" > 0 "
                 "THEN '借记 ' || format_number(\"debit_total\", 2) "
                 "ELSE '信用 ' || format_number(\"credit_total\", 2) END")
        rows.append(("sites", "生态信用（分级）",
                     styles.graduated_qml("polygon", "credit_total", styles.credit_ranges(sites["credit_total"]),
                                          fields=fields, aliases=SITE_ALIASES, label=label),
                     True, "各场地生态信用合计（分级设色）"))
        rows.append(("sites", "实施阶段",
                     styles.categorized_qml("polygon", "stage", styles.stage_categories(), fields=fields,
                                            aliases=SITE_ALIASES, label="\"name\""),
                     False, "按实施阶段分类"))
        for cell in CELLS:
            for suffix, when in (("post", "评估期"), ("pre", "基期")):
                col = f"{cell}_{suffix}"
                fn, sc = cell.split("_")
                rows.append(("sites", f"评级 {cell} {when}",
                             styles.categorized_qml("polygon", col, styles.rating_categories(), fields=fields,
                                                    aliases=SITE_ALIASES, label="\"name\""),
                             False, f"{FUNCTION_ZH[fn]}-{SCALE_ZH[sc]}评级（{when}，低/中/高）"))
    if "basin_boundary" in written:
        rows.append(("basin_boundary", "流域边界",
                     styles.single_qml("polygon", "0,0,0,0", fill_style="no", outline="30,30,30,255"),
                     True, "流域边界"))
    if "streams" in written:
        st, _ = written["streams"]
        ua = st["upstream_area_km2"].astype(float)
        qs = sorted({styles.nice_number(q) for q in ua.quantile([0.5, 0.8, 0.95]).tolist()})
        edges = [min(0.0, float(ua.min())), *[q for q in qs if 0 < q < ua.max()], float(ua.max()) + 1e-9]
        ranges = [styles.Range(edges[i], edges[i + 1], "31,120,180,255",
                               f"{edges[i]:g} – {edges[i + 1]:.4g} km²") for i in range(len(edges) - 1)]
        widths = [0.3 + 0.5 * i for i in range(len(ranges))]
        rows.append(("streams", "河网（按上游汇水面积）",
                     styles.graduated_qml("line", "upstream_area_km2", ranges, widths=widths,
                                          fields=[c for c in st.columns if c != st.geometry.name],
                                          aliases=STREAM_ALIASES),
                     True, "线宽随上游汇水面积增大"))
    for name, desc, colour in (("near_rings", "NEAR 近邻缓冲环", "255,127,0,255"),
                               ("ring1k", "RING1K 景观缓冲环", "106,61,154,255")):
        if name in written:
            rows.append((name, desc, styles.single_qml("polygon", "0,0,0,0", fill_style="no", outline=colour,
                                                       line_style="dash"), True, desc))
    palette = ["227,26,28,255", "51,160,44,255", "255,127,0,255", "31,120,180,255", "106,61,154,255"]
    for i, (name, source) in enumerate(sorted(optional_names.items())):
        if name not in written:
            continue
        gdf, _ = written[name]
        label_col = next((c for c in ("name", "名称", "section_name", "id") if c in gdf.columns), None)
        colour = palette[i % len(palette)]
        kind = _geom_kind(gdf)
        # polygons of inputs (protected areas, flood assets) translucent so the sites stay visible
        fill = colour.rsplit(",", 1)[0] + ",70" if kind == "polygon" else colour
        rows.append((name, source, styles.single_qml(kind, fill, fill_style="solid", outline=colour,
                                                     label=f'"{label_col}"' if label_col else None),
                     True, f"输入图层 {source}"))
    return rows


def _add_layer_styles(path: Path, rows: list[tuple], geom_cols: dict[str, str], stamp: str) -> None:
    con = sqlite3.connect(path)
    try:
        con.execute(LAYER_STYLES_DDL)
        for trig in _TRIGGERS:
            con.execute(trig)
        con.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier, description, last_change, "
                    "min_x, min_y, max_x, max_y, srs_id) VALUES ('layer_styles', 'attributes', 'layer_styles', "
                    "'', ?, NULL, NULL, NULL, NULL, 0)", (stamp,))
        has_ogr = con.execute("SELECT count(*) FROM sqlite_master WHERE name = 'gpkg_ogr_contents'").fetchone()[0]
        if has_ogr:
            con.execute("INSERT INTO gpkg_ogr_contents (table_name, feature_count) VALUES ('layer_styles', 0)")
        for table, name, qml, default, desc in rows:
            con.execute('INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, '
                        'f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, owner, '
                        'ui, update_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                        ("", "", table, geom_cols[table], name, qml, "", 1 if default else 0, desc, "", None,
                         stamp))
        con.commit()
    finally:
        con.close()


def write_geopackage(run: RunOutputs, path) -> Path:
    """Write `<basin>.gpkg`: layers, trace tables and default styles. Returns the path."""
    validate_run(run)
    path = Path(path)
    stamp = f"{run.assessment_date.isoformat()}T00:00:00.000Z"
    layers: dict[str, gpd.GeoDataFrame] = {
        "sites": site_layer(run),
        "basin_boundary": run.boundary,
        "streams": run.streams,
        "near_rings": run.near_rings,
        "ring1k": run.ring1k,
    }
    optional_names: dict[str, str] = {}
    for name, gdf in sorted(run.layers.items()):
        # an input layer named like a core layer (e.g. a supplied `streams` layer) is kept as input_<name>
        out_name = f"input_{name}" if name in layers else name
        if out_name in layers:
            raise InputDataError(f"optional layer name '{name}' clashes with the layer '{out_name}'",
                                 field=f"layers.{name}", fix="rename the optional layer in the configuration")
        layers[out_name] = gdf
        optional_names[out_name] = name
    tables: dict[str, pd.DataFrame] = {
        "site_scores": run.site_scores,
        "credits": run.credits,
        "ledger": run.ledger,
        "project_totals": project_totals(run),
        "history": run.history,
        "parameters": pd.DataFrame(run.parameters, columns=["name", "value", "unit", "source", "assumption"]),
        "inputs": pd.DataFrame(run.inputs, columns=["role", "path", "sha256", "source"]),
        "versions": pd.DataFrame(sorted(run.versions.items()), columns=["package", "version"]),
    }
    written: dict[str, tuple[gpd.GeoDataFrame, str]] = {}
    geom_cols: dict[str, str] = {}
    old = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": stamp})
    try:
        with atomic_path(path, suffix=".gpkg") as tmp:
            for name, gdf in layers.items():
                if gdf is None or len(gdf) == 0:
                    log.warning("layer %s is empty; not written to the GeoPackage", name)
                    continue
                if gdf.crs is None:
                    raise InputDataError(f"layer '{name}' has no CRS", field=name,
                                         fix="set the analysis CRS on the GeoDataFrame")
                attrs = _clean_table(pd.DataFrame(gdf.drop(columns=gdf.geometry.name)))
                out = gpd.GeoDataFrame(attrs, geometry=gdf.geometry.reset_index(drop=True).values, crs=gdf.crs)
                # GeoPackage 1.2: read without warnings by the GDAL of older QGIS LTRs (3.22 ships GDAL 3.6)
                pyogrio.write_dataframe(out, tmp, layer=name, driver="GPKG",
                                        dataset_options=None if written else {"VERSION": "1.2"})
                written[name] = (out, name)
                geom_cols[name] = "geom"
            for name, df in tables.items():
                if df is None:
                    continue
                pyogrio.write_dataframe(_clean_table(df), tmp, layer=name, driver="GPKG")
            con = sqlite3.connect(tmp)
            try:
                for t, g in con.execute("SELECT table_name, column_name FROM gpkg_geometry_columns"):
                    geom_cols[t] = g
            finally:
                con.close()
            _add_layer_styles(tmp, _style_rows(run, written, optional_names), geom_cols, stamp)
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": old})
    log.info("wrote GeoPackage %s (%d layers, %d tables)", path, len(written), len(tables))
    return path
