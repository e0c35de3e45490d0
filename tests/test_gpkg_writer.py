"""The analysts' GeoPackage: layers, trace tables, QGIS layer_styles, determinism."""

from __future__ import annotations

import hashlib
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest

from fixtures_run import build_run
from pipeline.errors import InputDataError
from pipeline.report.gpkg import write_geopackage

DATA = Path(__file__).parent / "data" / "report"


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpkg")
    run = build_run(d)
    return run, write_geopackage(run, d / "testbasin.gpkg")


def _q(path, sql, args=()):
    con = sqlite3.connect(path)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def test_layers_and_tables(written):
    run, p = written
    layers = dict(pyogrio.list_layers(p))
    assert {k: layers[k] for k in ("sites", "basin_boundary", "streams", "near_rings", "ring1k",
                                   "monitoring_sections")} == {
        "sites": "Polygon", "basin_boundary": "Polygon", "streams": "LineString", "near_rings": "Polygon",
        "ring1k": "Polygon", "monitoring_sections": "Point"}
    for t in ("site_scores", "credits", "ledger", "project_totals", "parameters", "inputs", "versions",
              "layer_styles"):
        assert layers[t] is None, t
    assert len(gpd.read_file(p, layer="credits")) == len(run.credits)
    assert _q(p, "PRAGMA user_version")[0][0] == 10200  # GeoPackage 1.2 for older QGIS/GDAL


def test_sites_layer_carries_ratings_scores_credits(written):
    run, p = written
    sites = gpd.read_file(p, layer="sites").set_index("site_id")
    assert sites.crs.to_epsg() == 32650
    # worked check site (METHOD.md §7): credits (3, 2, 4), total 9
    assert sites.loc["P1-A", ["credit_WQ", "credit_HY", "credit_HB", "credit_total"]].tolist() == [3.0, 2.0, 4.0, 9.0]
    assert sites.loc["P1-A", ["WQ_pre", "HY_pre", "HB_pre", "WQ_post", "HY_post", "HB_post"]].tolist() == \
        [4, 4, 3, 7, 6, 7]
    assert sites.loc["D1-A", "debit_total"] == pytest.approx(
        run.credits.loc[run.credits.site_id == "D1-A", "debit"].sum())
    for col in ("stage", "tf", "area_ha", "kind", "project_type", "name"):
        assert col in sites.columns
    assert sites.loc["P1-A", "name"] == "永定河湿地修复A区"
    streams = gpd.read_file(p, layer="streams")
    assert streams["upstream_area_km2"].tolist() == [4.2, 1.3, 18.7]


def test_layer_styles_table_is_created_exactly_as_qgis_does(written):
    _, p = written
    con = sqlite3.connect(p)
    try:
        ours = [r[0] for r in con.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name = 'layer_styles' AND sql IS NOT NULL ORDER BY type DESC, name")]
    finally:
        con.close()
    # DDL dumped from a GeoPackage in which QGIS 3.22 itself saved a style (tests/data/report/README.md)
    qgis = (DATA / "qgis_layer_styles.sql").read_text(encoding="utf-8").strip().splitlines()
    assert sorted(ours) == sorted(qgis)
    assert _q(p, "SELECT data_type FROM gpkg_contents WHERE table_name = 'layer_styles'") == [("attributes",)]
    n = _q(p, "SELECT count(*) FROM layer_styles")[0][0]
    assert _q(p, "SELECT feature_count FROM gpkg_ogr_contents WHERE table_name = 'layer_styles'") == [(n,)]


def test_one_default_style_per_spatial_layer(written):
    _, p = written
    spatial = {t for (t,) in _q(p, "SELECT table_name FROM gpkg_geometry_columns")}
    rows = _q(p, "SELECT f_table_name, f_geometry_column, styleName, styleQML, useAsDefault, update_time "
                 "FROM layer_styles")
    defaults = [r[0] for r in rows if r[4] == 1]
    assert sorted(defaults) == sorted(spatial)
    geom = dict(_q(p, "SELECT table_name, column_name FROM gpkg_geometry_columns"))
    for table, gcol, name, qml, _, stamp in rows:
        assert gcol == geom[table]
        assert stamp == "2024-06-30T00:00:00.000Z"  # the assessment date: deterministic
        ET.fromstring(qml.split("\n", 1)[1])      # well-formed
    site_styles = {r[2]: r for r in rows if r[0] == "sites"}
    assert len(site_styles) == 2 + 18  # credits, stage, 9 ratings x 2 vintages
    default = ET.fromstring(site_styles["生态信用（分级）"][3].split("\n", 1)[1])
    assert default.find("renderer-v2").get("type") == "graduatedSymbol"
    assert default.find("renderer-v2").get("attr") == "credit_total"
    aliases = {a.get("field"): a.get("name") for a in default.iter("alias")}
    assert aliases["credit_total"] == "生态信用合计" and aliases["HB_S_post"] == "生境保护-场地效力（评估期）"
    rating = ET.fromstring(site_styles["评级 HB_S 评估期"][3].split("\n", 1)[1])
    assert rating.find("renderer-v2").get("attr") == "HB_S_post"


def test_same_run_same_bytes(written, tmp_path):
    run, p = written
    again = write_geopackage(run, tmp_path / "again.gpkg")
    assert hashlib.md5(p.read_bytes()).hexdigest() == hashlib.md5(again.read_bytes()).hexdigest()
    assert [x.name for x in tmp_path.iterdir()] == ["again.gpkg"]


def test_input_layer_named_like_a_core_layer_is_kept_as_input(written, tmp_path):
    run, _ = written
    supplied = run.streams.assign(source="supplied")
    p = write_geopackage(type(run)(**{**run.__dict__, "layers": {"streams": supplied}}), tmp_path / "x.gpkg")
    layers = dict(pyogrio.list_layers(p))
    assert layers["streams"] == "LineString" and layers["input_streams"] == "LineString"
    assert "upstream_area_km2" in gpd.read_file(p, layer="streams").columns
    assert (gpd.read_file(p, layer="input_streams")["source"] == "supplied").all()
    assert _q(p, "SELECT styleName, useAsDefault FROM layer_styles WHERE f_table_name = 'input_streams'") == [
        ("streams", 1)]


def test_layer_name_clash_after_renaming_is_an_error(written, tmp_path):
    run, _ = written
    gdf = run.layers["monitoring_sections"]
    bad = type(run)(**{**run.__dict__, "layers": {"sites": gdf, "input_sites": gdf}})
    with pytest.raises(InputDataError, match="clashes"):
        write_geopackage(bad, tmp_path / "x.gpkg")
    assert not (tmp_path / "x.gpkg").exists()


def test_empty_optional_layer_is_skipped(written, tmp_path):
    run, _ = written
    empty = run.layers["monitoring_sections"].iloc[0:0]
    p = write_geopackage(type(run)(**{**run.__dict__, "layers": {"point_sources": empty}}), tmp_path / "y.gpkg")
    assert "point_sources" not in dict(pyogrio.list_layers(p))
    assert not _q(p, "SELECT * FROM layer_styles WHERE f_table_name = 'point_sources'")
