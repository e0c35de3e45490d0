"""The bad-input catalogue: each case runs the real CLI on a broken copy of a basin.

Every case asserts a non-zero exit, a message naming the file (and field) and how
to fix it, no Python traceback, and an output folder left exactly as it was.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import yaml

from conftest import run_cli


def _load(cfg: Path) -> dict:
    return yaml.safe_load(cfg.read_text(encoding="utf-8"))


def _save(cfg: Path, data: dict) -> None:
    cfg.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


def _edit(cfg: Path, fn) -> None:
    data = _load(cfg)
    fn(data)
    _save(cfg, data)


def _rewrite_raster(path: Path, fn, **profile_updates) -> None:
    with rasterio.open(path) as src:
        arr = src.read(1)
        prof = src.profile
    arr = fn(arr)
    prof.update(dtype=str(arr.dtype), **profile_updates)
    path.unlink()
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(arr, 1)


def _edit_sites(cfg: Path, fn) -> None:
    path = cfg.parent / "data" / "sites.gpkg"
    gdf = gpd.read_file(path, layer="sites")
    gdf = fn(gdf)
    path.unlink()
    gdf.to_file(path, layer="sites", driver="GPKG")


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# --- the cases: (id, mutation, expected fragments in stderr) ------------------------

def case_missing_config(cfg):
    cfg.unlink()


def case_missing_dem(cfg):
    (cfg.parent / "data" / "dem.tif").unlink()


def case_truncated_geotiff(cfg):
    _truncate(cfg.parent / "data" / "lc_2023.tif", 0.4)


def case_truncated_dem(cfg):
    _truncate(cfg.parent / "data" / "dem.tif", 0.7)


def case_garbage_geotiff(cfg):
    (cfg.parent / "data" / "dem.tif").write_bytes(b"<html>404 Not Found</html>")


def case_truncated_geopackage(cfg):
    _truncate(cfg.parent / "data" / "sites.gpkg", 0.3)


def case_missing_crs(cfg):
    _rewrite_raster(cfg.parent / "data" / "dem.tif", lambda a: a, crs=None)


def case_geographic_analysis_crs(cfg):
    _edit(cfg, lambda d: d.update(crs="EPSG:4326"))


def case_no_overlap(cfg):
    path = cfg.parent / "data" / "lc_2023.tif"
    with rasterio.open(path) as src:
        t = src.transform
    _rewrite_raster(path, lambda a: a, transform=rasterio.Affine(t.a, 0, t.c + 500_000, 0, t.e, t.f))


def case_undeclared_nodata(cfg):
    def f(a):
        a = a.copy()
        a[:5, :] = -9999.0
        return a
    _rewrite_raster(cfg.parent / "data" / "dem.tif", f, nodata=None)


def case_nodata_is_a_class(cfg):
    _rewrite_raster(cfg.parent / "data" / "lc_2015.tif", lambda a: a, nodata=1)


def case_dem_all_nodata(cfg):
    _rewrite_raster(cfg.parent / "data" / "dem.tif", lambda a: np.full_like(a, -9999.0))


def case_dem_wrong_units(cfg):
    _rewrite_raster(cfg.parent / "data" / "dem.tif", lambda a: a * 1000.0)


def case_codes_outside_scheme(cfg):
    def f(a):
        a = a.copy()
        a[10:12, 10:12] = 42
        return a
    _rewrite_raster(cfg.parent / "data" / "lc_2023.tif", f)


def case_float_landcover(cfg):
    _rewrite_raster(cfg.parent / "data" / "lc_2023.tif", lambda a: a.astype("float32"))


def case_unknown_scheme(cfg):
    _edit(cfg, lambda d: d["landcover"][1].update(scheme="clcdd"))


def case_empty_geometry(cfg):
    def f(g):
        g.loc[1, "geometry"] = shapely.Polygon()
        return g
    _edit_sites(cfg, f)


def case_unrepairable_geometry(cfg):
    def f(g):
        g.loc[0, "geometry"] = shapely.Polygon([(116.0, 40.0), (116.0, 40.0), (116.0, 40.0), (116.0, 40.0)])
        return g
    _edit_sites(cfg, f)


def case_point_sites(cfg):
    def f(g):
        g["geometry"] = shapely.centroid(g.geometry.values)
        return g
    _edit_sites(cfg, f)


def case_duplicate_ids(cfg):
    def f(g):
        g.loc[2, "site_id"] = g.loc[0, "site_id"]
        return g
    _edit_sites(cfg, f)


def case_sites_outside_basin(cfg):
    def f(g):
        g["geometry"] = g.geometry.translate(2.0, 0.0)
        return g
    _edit_sites(cfg, f)


def case_overlapping_sites(cfg):
    def f(g):
        g.loc[1, "geometry"] = g.geometry[0].buffer(0.0005)
        return g
    _edit_sites(cfg, f)


def case_malformed_date(cfg):
    def f(g):
        g.loc[0, "start_date"] = "2016/13/45"
        return g
    _edit_sites(cfg, f)


def case_completion_without_start(cfg):
    def f(g):
        g.loc[1, "start_date"] = None
        return g
    _edit_sites(cfg, f)


def case_completion_before_start(cfg):
    def f(g):
        g.loc[0, "end_date"] = "2015-01-01"
        return g
    _edit_sites(cfg, f)


def case_bad_kind(cfg):
    def f(g):
        g.loc[3, "kind"] = "offset"
        return g
    _edit_sites(cfg, f)


def case_missing_site_field(cfg):
    _edit(cfg, lambda d: d["sites"]["fields"].update(site_id="site_code"))


def case_missing_layer(cfg):
    _edit(cfg, lambda d: d["layers"]["protected_areas"].update(layer="reserves"))


def case_assessment_before_baseline(cfg):
    _edit(cfg, lambda d: d.update(assessment_date="2014-12-31"))


def case_yaml_syntax(cfg):
    text = cfg.read_text(encoding="utf-8").replace("resolution_m: 30", "resolution_m: [30", 1)
    cfg.write_text(text, encoding="utf-8")


def case_unknown_key(cfg):
    _edit(cfg, lambda d: d.update(resolutoin_m=30))


def case_unknown_nested_key(cfg):
    _edit(cfg, lambda d: d["processing"].update(chunksize=128))


def case_out_of_range_parameter(cfg):
    _edit(cfg, lambda d: d.update(parameters={"near_buffer_m": -5}))


def case_unknown_parameter(cfg):
    _edit(cfg, lambda d: d.update(parameters={"near_bufer_m": 60}))


def case_negative_resolution(cfg):
    _edit(cfg, lambda d: d.update(resolution_m=-30))


def case_boundary_and_outlets(cfg):
    _edit(cfg, lambda d: d.update(outlets=[{"x": 116.2, "y": 39.9}]))


def case_duplicate_vintage(cfg):
    _edit(cfg, lambda d: d["landcover"][1].update(name="baseline"))


def case_vintages_out_of_order(cfg):
    _edit(cfg, lambda d: d["landcover"][1].update(year=2010))


def case_bad_monitoring_class(cfg):
    path = cfg.parent / "data" / "layers.gpkg"
    g = gpd.read_file(path, layer="monitoring_sections")
    g.loc[0, "observed_class"] = "3"
    g.to_file(path, layer="monitoring_sections", driver="GPKG", mode="w")


def case_path_traversal_basin_name(cfg):
    _edit(cfg, lambda d: d["basin"].update(name="../../etc"))


def case_not_a_mapping(cfg):
    cfg.write_text("- just\n- a list\n", encoding="utf-8")


CASES = [
    # (case, fragments expected in stderr; each fragment lower-cased)
    (case_missing_config, ["tiny.yaml", "not found"]),
    (case_missing_dem, ["dem.tif", "file not found", "how to fix"]),
    (case_truncated_geotiff, ["lc_2023.tif", "how to fix"]),
    (case_truncated_dem, ["dem.tif", "how to fix"]),
    (case_garbage_geotiff, ["dem.tif", "cannot open", "how to fix"]),
    (case_truncated_geopackage, ["sites.gpkg", "how to fix"]),
    (case_missing_crs, ["dem.tif", "no crs", "gdal_edit"]),
    (case_geographic_analysis_crs, ["field 'crs'", "geographic", "projected"]),
    (case_no_overlap, ["lc_2023.tif", "does not overlap"]),
    (case_undeclared_nodata, ["dem.tif", "-9999", "nodata"]),
    (case_nodata_is_a_class, ["lc_2015.tif", "nodata value 1", "cropland"]),
    (case_dem_all_nodata, ["dem.tif", "every cell is nodata"]),
    (case_dem_wrong_units, ["dem.tif", "outside -500..9000"]),
    (case_codes_outside_scheme, ["lc_2023.tif", "[42]", "clcd"]),
    (case_float_landcover, ["lc_2023.tif", "integer"]),
    (case_unknown_scheme, ["field 'landcover.1.scheme'", "did you mean 'clcd'"]),
    (case_empty_geometry, ["sites.gpkg", "empty geometry", "t-02"]),
    (case_unrepairable_geometry, ["sites.gpkg", "cannot be repaired", "t-01"]),
    (case_point_sites, ["sites.gpkg", "polygon"]),
    (case_duplicate_ids, ["sites.gpkg", "duplicate", "t-01"]),
    (case_sites_outside_basin, ["sites.gpkg", "outside the basin"]),
    (case_overlapping_sites, ["sites.gpkg", "overlapping", "t-01/t-02"]),
    (case_malformed_date, ["sites.gpkg", "field 'start_date'", "2016/13/45", "yyyy-mm-dd"]),
    (case_completion_without_start, ["sites.gpkg", "without a construction start", "t-02"]),
    (case_completion_before_start, ["sites.gpkg", "completion before construction start", "t-01"]),
    (case_bad_kind, ["sites.gpkg", "field 'kind'", "offset"]),
    (case_missing_site_field, ["sites.gpkg", "site_code", "sites.fields"]),
    (case_missing_layer, ["layers.gpkg", "reserves", "layers in the file"]),
    (case_assessment_before_baseline, ["tiny.yaml", "not after the baseline year"]),
    (case_yaml_syntax, ["tiny.yaml", "yaml syntax error at line"]),
    (case_unknown_key, ["tiny.yaml", "unknown key 'resolutoin_m'", "did you mean 'resolution_m'"]),
    (case_unknown_nested_key, ["unknown key 'chunksize'", "did you mean 'chunk_size'"]),
    (case_out_of_range_parameter, ["parameters.near_buffer_m", "outside the allowed range"]),
    (case_unknown_parameter, ["near_bufer_m", "did you mean 'near_buffer_m'"]),
    (case_negative_resolution, ["field 'resolution_m'", "greater than 0"]),
    (case_boundary_and_outlets, ["exactly one of 'boundary'"]),
    (case_duplicate_vintage, ["vintage names must be unique"]),
    (case_vintages_out_of_order, ["oldest first"]),
    (case_bad_monitoring_class, ["layers.gpkg", "gb 3838", "observed_class"]),
    (case_path_traversal_basin_name, ["field 'basin.name'", "../../etc"]),
    (case_not_a_mapping, ["tiny.yaml", "mapping"]),
]


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case,fragments", CASES, ids=[c.__name__[5:] for c, _ in CASES])
def test_bad_input_case(tiny, tmp_path, case, fragments):
    out = tmp_path / "published"
    out.mkdir()
    (out / "previous-result.csv").write_text("site_id,credit\nX,1.0\n", encoding="utf-8")
    before = _snapshot(tmp_path / "published")
    case(tiny)
    res = run_cli("assess", str(tiny), "--out", str(out))
    err = res.stderr.lower()
    assert res.returncode == 1, (res.returncode, res.stderr)
    assert "traceback" not in err, res.stderr
    assert err.startswith("error:"), res.stderr
    for frag in fragments:
        assert frag.lower() in err, f"{frag!r} not in:\n{res.stderr}"
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["basin", "published"], \
        "a failed run left files beside the output folder"


def test_validate_reports_every_problem_at_once(tiny):
    _edit(tiny, lambda d: d.update(resolutoin_m=30, crs="EPSG:4326"))
    _edit(tiny, lambda d: d["processing"].update(chunksize=128))
    res = run_cli("validate", str(tiny))
    assert res.returncode == 1
    assert "3 problem(s) found" in res.stderr, res.stderr
    assert "line " in res.stderr


def test_debug_flag_shows_traceback(tiny):
    (tiny.parent / "data" / "dem.tif").unlink()
    res = run_cli("--debug", "validate", str(tiny))
    assert res.returncode != 0
    assert "Traceback" in res.stderr


def test_repairable_geometry_is_repaired_with_warning(tiny):
    def bowtie(g):
        x0, y0, x1, y1 = g.geometry[2].bounds
        g.loc[2, "geometry"] = shapely.Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1), (x0, y0)])
        return g
    _edit_sites(tiny, bowtie)
    res = run_cli("validate", str(tiny))
    assert res.returncode == 0, res.stderr
    assert "repaired 1 invalid geometry" in res.stderr and "T-03" in res.stderr


def test_layers_in_other_crs_are_reprojected(tiny):
    """A DEM in UTM and sites in EPSG:4326 are reprojected to the analysis CRS, not refused."""
    from rasterio.warp import calculate_default_transform, reproject

    path = tiny.parent / "data" / "dem.tif"
    with rasterio.open(path) as src:
        dst_crs = "EPSG:32650"
        t, w, h = calculate_default_transform(src.crs, dst_crs, src.width, src.height, *src.bounds)
        prof = src.profile | dict(crs=dst_crs, transform=t, width=w, height=h)
        data = np.full((h, w), -9999.0, dtype="float32")
        reproject(rasterio.band(src, 1), data, dst_transform=t, dst_crs=dst_crs, dst_nodata=-9999.0)
    path.unlink()
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data, 1)
    res = run_cli("validate", str(tiny))
    assert res.returncode == 0, res.stderr
    assert "grid" in res.stderr


def test_dem_with_nan_holes_is_accepted(tiny):
    def holes(a):
        a = a.astype("float32").copy()
        a[50:53, 50:53] = np.nan
        return a
    _rewrite_raster(tiny.parent / "data" / "dem.tif", holes, nodata=None)
    res = run_cli("validate", str(tiny))
    assert res.returncode == 0, res.stderr
    assert "9 nan cells treated as nodata" in res.stderr.lower()


def test_yaml_is_safe_loaded(tiny):
    text = tiny.read_text(encoding="utf-8") + "\nexploit: !!python/object/apply:os.system ['touch pwned']\n"
    tiny.write_text(text, encoding="utf-8")
    res = run_cli("validate", str(tiny), cwd=tiny.parent)
    assert res.returncode == 1
    assert not (tiny.parent / "pwned").exists()
    assert "yaml" in res.stderr.lower()
