"""Checks on the shipped demo basins (data_samples/) and on their generator.

Everything here reads the shipped files; only the determinism test runs
scripts/make_demo_basin.py (small Xixian basin) and needs ../shared/data.
Expected values are typed from the assignment and the specs, not read from the
generator: the IGBP -> CLCD table (LANDCOVER.md), the stage table (METHOD.md 6),
the transitions each project type may cause, the GB 3838 class order.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyflwdir
import pyogrio
import pytest
import rasterio
import shapely
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import CRS, Transformer
from rasterio import features

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data_samples"
SHARED = REPO.parent / "shared" / "data"
ALBERS = CRS.from_proj4("+proj=aea +lat_0=0 +lon_0=105 +lat_1=25 +lat_2=47 +x_0=0 +y_0=0 "
                        "+datum=WGS84 +units=m +no_defs")
ASSESSMENT = date(2024, 6, 30)
BASINS = ["yongding", "xixian"]
# cell-count ranges from the assignment: Yongding about 3-5 million, Xixian 0.5-1 million
CELLS = {"yongding": (3_000_000, 5_000_000), "xixian": (500_000, 1_000_000)}
# MCD12C1 IGBP -> CLCD, typed from LANDCOVER.md (IGBP -> canonical -> CLCD code):
# 0 water->5; 1-5 forests->2; 6-7 shrublands->3; 8 woody savanna->forest 2; 9 savanna->grass 4;
# 10 grassland->4; 11 wetland->9; 12 cropland->1; 13 urban->8; 14 mosaic->cropland 1;
# 15 snow->6; 16 barren->7
IGBP_CLCD = {0: 5, 1: 2, 2: 2, 3: 2, 4: 2, 5: 2, 6: 3, 7: 3, 8: 2, 9: 4, 10: 4, 11: 9, 12: 1, 13: 8,
             14: 1, 15: 6, 16: 7}
CLCD = set(range(1, 10))
NATURAL = {2, 3, 4, 5, 9}
# to-classes each project type may produce inside its site (assignment text)
ALLOWED_TO = {
    "riparian_wetland": {9, 5},          # cropland/bare -> wetland/water
    "buffer_planting": {4, 3},           # cropland -> grassland/shrub
    "afforestation": {2},                # grassland/bare -> forest
    "mine_rehabilitation": {4, 3},       # bare -> grassland/shrub
    "riverbank_greening": {4, 2},        # bare/built-up -> grassland/forest
    "road": {8, 7},                      # impact: natural/crop -> built-up/bare
    "quarry": {7, 8},
}
# background change allowed outside all sites: urban growth (crop/grass -> built-up), greening
BACKGROUND = {(1, 8), (4, 8), (4, 2), (3, 2)}
GB3838 = ["I", "II", "III", "IV", "V", "劣V"]


def stage(start: str, end: str, at: date = ASSESSMENT) -> str:
    """METHOD.md section 6, written independently of the generator."""
    s = date.fromisoformat(start)
    if at < s:
        return "planned"
    if end == "" or end is None or date.fromisoformat(end) > at:
        return "under_construction"
    e = date.fromisoformat(end)
    # whole years after completion, by calendar (2 y = same day two years later; 29 Feb -> 1 Mar)
    if at < _anniversary(e, 2):
        return "completed"
    if at < _anniversary(e, 5):
        return "established"
    return "long_term"


def _anniversary(d: date, years: int) -> date:
    try:
        return d.replace(year=d.year + years)
    except ValueError:
        return date(d.year + years, 3, 1)


def need(basin: str) -> Path:
    d = DATA / basin
    if not (d / "dem.tif").exists():
        pytest.fail(f"{d} missing: run .venv/bin/python scripts/make_demo_basin.py")
    return d


def read(path):
    with rasterio.open(path) as src:
        return src.read(1), src.profile, src.tags()


def site_masks(basin):
    d = need(basin)
    with rasterio.open(d / "dem.tif") as src:
        shape, transform = src.shape, src.transform
    sites = gpd.read_file(d / "sites.gpkg", layer="sites").to_crs(ALBERS)
    masks = {}
    for _, r in sites.iterrows():
        masks[r.site_id] = features.rasterize([(r.geometry, 1)], out_shape=shape, transform=transform,
                                              dtype="uint8").astype(bool)
    return sites, masks


# ----------------------------------------------------------------------------- files and rasters
def test_total_size_under_20_mb():
    total = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    assert 0 < total < 20 * 1024 * 1024, f"data_samples/ is {total / 2**20:.1f} MiB"


@pytest.mark.parametrize("basin", BASINS)
def test_rasters_grid_crs_metadata(basin):
    d = need(basin)
    dem, pdem, tags = read(d / "dem.tif")
    assert CRS.from_user_input(pdem["crs"]).equals(ALBERS)
    t = pdem["transform"]
    assert (t.a, t.e, t.b, t.d) == (30.0, -30.0, 0.0, 0.0)
    assert t.c % 30 == 0 and t.f % 30 == 0                 # snapped to multiples of 30 m
    lo, hi = CELLS[basin]
    assert lo <= dem.size <= hi
    assert pdem["dtype"] == "float32" and pdem["nodata"] == -9999.0
    assert np.isfinite(dem).all() and (dem > -100).all()
    # rounded to 0.1 m: value*10 is an integer to float32 precision
    assert np.abs(dem.astype("float64") * 10 - np.round(dem.astype("float64") * 10)).max() < 1e-3
    for name in ("dem.tif", "landcover_2015_clcd.tif", "landcover_2023_clcd.tif"):
        with rasterio.open(d / name) as src:
            assert src.shape == dem.shape and src.transform == t and src.crs == pdem["crs"]
            assert src.profile["tiled"] and src.compression is not None
            tg = src.tags()
            for k in ("DESCRIPTION", "SOURCE", "LICENSE"):
                assert tg.get(k), f"{name} lacks tag {k}"
            assert "SYNTHETIC" in tg["SOURCE"].upper()
            assert "TIFFTAG_DATETIME" not in tg                # no timestamps
    lc, plc, _ = read(d / "landcover_2015_clcd.tif")
    assert plc["dtype"] == "uint8" and plc["nodata"] == 255


@pytest.mark.parametrize("basin", BASINS)
def test_landcover_codes_valid(basin):
    d = need(basin)
    for y in (2015, 2023):
        lc, _, tags = read(d / f"landcover_{y}_clcd.tif")
        assert set(np.unique(lc).tolist()) <= CLCD
        assert tags["YEAR"] == str(y)


def modis_shares(basin):
    """Target shares recomputed here: the MODIS cell containing each 30 m cell centre."""
    d = need(basin)
    with rasterio.open(d / "dem.tif") as src:
        h, w, t = src.height, src.width, src.transform
    xs = t.c + (np.arange(w) + 0.5) * t.a
    ys = t.f + (np.arange(h) + 0.5) * t.e
    X, Y = np.meshgrid(xs, ys)
    lon, lat = Transformer.from_crs(ALBERS, "EPSG:4326", always_xy=True).transform(X, Y)
    with rasterio.open(d / "anchors" / "landcover_modis_mcd12c1_2019_igbp.tif") as src:
        igbp = src.read(1)
        mt = src.transform
    r = np.floor((lat - mt.f) / mt.e).astype(int)
    c = np.floor((lon - mt.c) / mt.a).astype(int)
    assert r.min() >= 0 and c.min() >= 0 and r.max() < igbp.shape[0] and c.max() < igbp.shape[1]
    lut = np.zeros(256, np.int64)
    for k, v in IGBP_CLCD.items():
        lut[k] = v
    cl = lut[igbp[r, c]]
    assert (cl > 0).all(), "MODIS nodata inside the demo extent"
    return {k: float((cl == k).mean()) for k in CLCD}


@pytest.mark.parametrize("basin", BASINS)
def test_class_shares_match_modis(basin):
    target = modis_shares(basin)
    summary = json.loads((DATA / basin / "summary.json").read_text("utf-8"))
    names = {1: "cropland", 2: "forest", 3: "shrub", 4: "grassland", 5: "water", 6: "snow/ice", 7: "barren",
             8: "impervious", 9: "wetland"}
    for y in (2015, 2023):
        lc, _, _ = read(DATA / basin / f"landcover_{y}_clcd.tif")
        got = {k: float((lc == k).mean()) for k in CLCD}
        for k in CLCD:
            assert abs(got[k] - target[k]) <= 0.02, (y, names[k], got[k], target[k])
            # the shares reported in summary.json (and README) are the real ones
            assert summary[f"shares_{y}"][names[k]] == pytest.approx(got[k], abs=1e-5)
            assert summary["shares_target_modis"][names[k]] == pytest.approx(target[k], abs=1e-5)


# ----------------------------------------------------------------------------- sites
@pytest.mark.parametrize("basin", BASINS)
def test_site_attributes_complete(basin):
    d = need(basin)
    info = pyogrio.read_info(d / "sites.gpkg", layer="sites")
    assert CRS.from_user_input(info["crs"]).equals(CRS.from_epsg(4326))
    assert info["layer_metadata"] and "SYNTHETIC" in info["layer_metadata"]["SOURCE"].upper()
    sites = gpd.read_file(d / "sites.gpkg", layer="sites")
    cols = ["site_id", "project_id", "name", "kind", "project_type", "start_date", "end_date",
            "special_features", "wq_plan", "flood_plan", "habitat_plan"]
    assert set(cols) <= set(sites.columns)
    assert sites.site_id.is_unique and sites.site_id.str.len().gt(0).all()
    assert sites.name.str.len().gt(0).all() and sites.project_id.str.len().gt(0).all()
    assert set(sites.kind) == {"restoration", "impact"}
    for c in ("wq_plan", "flood_plan", "habitat_plan"):
        assert set(sites[c].astype(int)) <= {0, 1}
    assert sites.geometry.is_valid.all() and not sites.geometry.is_empty.any()
    assert set(sites.geom_type) <= {"Polygon", "MultiPolygon"}
    area_ha = sites.to_crs(ALBERS).area / 1e4
    assert area_ha.between(2.0, 150.0).all(), area_ha.to_dict()     # a few ha to ~100 ha
    for _, r in sites.iterrows():
        s = date.fromisoformat(r.start_date)
        if r.end_date:
            assert date.fromisoformat(r.end_date) > s
        assert s.year >= 2016, "works must start after the 2015 baseline"
        assert r.project_type in ALLOWED_TO
        assert (r.kind == "impact") == (r.project_type in ("road", "quarry"))
        for f in (r.special_features or "").split(","):
            assert f == "" or f.strip() == f and f.isidentifier()
    n_rest = (sites.kind == "restoration").sum()
    n_imp = (sites.kind == "impact").sum()
    if basin == "yongding":
        assert n_rest >= 10 and n_imp >= 2
        assert set(sites[sites.kind == "restoration"].project_type) == {
            "riparian_wetland", "buffer_planting", "afforestation", "mine_rehabilitation", "riverbank_greening"}
    else:
        assert n_rest >= 4 and n_imp >= 1
    assert sites.groupby("project_id").size().max() >= 2


@pytest.mark.parametrize("basin", BASINS)
def test_every_stage_covered(basin):
    sites = gpd.read_file(need(basin) / "sites.gpkg", layer="sites")
    rest = sites[sites.kind == "restoration"]
    stages = {stage(r.start_date, r.end_date) for _, r in rest.iterrows()}
    assert stages == {"planned", "under_construction", "completed", "established", "long_term"}
    # unfinished works carry no completion date
    for _, r in rest.iterrows():
        if stage(r.start_date, r.end_date) in ("planned", "under_construction"):
            assert r.end_date in ("", None)


def test_stage_hand_cases():
    # hand-worked against the 2024-06-30 assessment date
    assert stage("2024-09-01", "") == "planned"
    assert stage("2023-04-10", "") == "under_construction"
    assert stage("2021-09-01", "2023-05-20") == "completed"        # 1.1 y after completion
    assert stage("2019-04-01", "2022-06-30") == "established"      # exactly 2 y
    assert stage("2016-03-15", "2019-06-30") == "long_term"        # exactly 5 y
    assert stage("2016-03-15", "2019-07-01") == "established"      # one day short of 5 y


_CACHE: dict = {}


def _generator():
    """The generator module, imported once (its OGR_CURRENT_DATE setting is undone here)."""
    if "gen" not in _CACHE:
        import os
        before = os.environ.get("OGR_CURRENT_DATE")
        spec = importlib.util.spec_from_file_location("make_demo_basin", REPO / "scripts" / "make_demo_basin.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["make_demo_basin"] = mod          # dataclasses look their module up here
        spec.loader.exec_module(mod)
        if before is None:
            os.environ.pop("OGR_CURRENT_DATE", None)
        else:
            os.environ["OGR_CURRENT_DATE"] = before
        _CACHE["gen"] = mod
    return _CACHE["gen"]


@settings(max_examples=200, deadline=None)
@given(st.dates(date(2016, 1, 1), date(2026, 12, 31)), st.integers(0, 4000), st.booleans())
def test_generator_stage_agrees_with_method(start, days, finished):
    """The generator's stage (which decides how far each site has changed) follows METHOD.md."""
    from datetime import timedelta
    gen = _generator()
    end = (start + timedelta(days=days + 1)).isoformat() if finished else ""
    assert gen.stage_of(start.isoformat(), end) == stage(start.isoformat(), end)


@pytest.mark.parametrize("basin", BASINS)
def test_changes_only_where_expected(basin):
    d = need(basin)
    lc0, _, _ = read(d / "landcover_2015_clcd.tif")
    lc1, _, _ = read(d / "landcover_2023_clcd.tif")
    sites, masks = site_masks(basin)
    union = np.zeros(lc0.shape, bool)
    for _, r in sites.iterrows():
        m = masks[r.site_id]
        union |= m
        a, b = lc0[m], lc1[m]
        ch = a != b
        st_ = stage(r.start_date, r.end_date)
        if st_ == "planned":
            assert not ch.any(), f"{r.site_id} is planned but changed"
            continue
        assert set(np.unique(b[ch]).tolist()) <= ALLOWED_TO[r.project_type], r.site_id
        frac = ch.mean()
        if st_ == "under_construction":
            assert 0.1 < frac < 0.7, (r.site_id, frac)               # partly done
        else:
            assert frac > 0.5, (r.site_id, frac)                      # the works show
        if r.kind == "impact":
            assert np.isin(a[ch], list(NATURAL | {1})).all()          # natural/crop lost
        else:
            # restoration gains natural cover and never loses it
            assert np.isin(b[ch], list(NATURAL)).all()
    # outside the sites (one cell of slack for rasterisation at the edges): background only
    from scipy import ndimage
    outside = ~ndimage.binary_dilation(union, iterations=1)
    ch = outside & (lc0 != lc1)
    pairs = set(zip(lc0[ch].tolist(), lc1[ch].tolist()))
    assert pairs <= BACKGROUND, pairs - BACKGROUND
    assert ch.mean() < 0.02                                              # small background change
    assert ((lc0 == 1) & (lc1 == 8) & outside).sum() > 0                 # some urban growth


# ----------------------------------------------------------------------------- context layers
@pytest.mark.parametrize("basin", BASINS)
def test_context_layers(basin):
    d = need(basin)
    layers = {name for name, _ in pyogrio.list_layers(d / "context.gpkg")}
    assert {"streams", "protected_areas", "wq_targets", "monitoring_sections", "point_sources",
            "flood_assets"} <= layers
    for layer in layers:
        info = pyogrio.read_info(d / "context.gpkg", layer=layer)
        assert info["layer_metadata"] and info["layer_metadata"].get("SOURCE")
        g = gpd.read_file(d / "context.gpkg", layer=layer)
        assert "synthetic" in g.columns and len(g) >= 1
        assert all(v is not None for v in g.geometry) and not g.geometry.is_empty.any(), layer
        assert g.geometry.is_valid.all(), layer
    streams = gpd.read_file(d / "context.gpkg", layer="streams").to_crs(ALBERS)
    assert set(streams.geom_type) == {"LineString"}
    pa = gpd.read_file(d / "context.gpkg", layer="protected_areas")
    assert len(pa) >= 2 and set(pa.geom_type) <= {"Polygon", "MultiPolygon"} and pa.name.str.len().gt(0).all()
    wq = gpd.read_file(d / "context.gpkg", layer="wq_targets")
    assert "kind" in wq.columns and wq.kind.str.len().gt(0).all()
    ps = gpd.read_file(d / "context.gpkg", layer="point_sources")
    assert {"name", "kind"} <= set(ps.columns) and set(ps.geom_type) == {"Point"}
    ms = gpd.read_file(d / "context.gpkg", layer="monitoring_sections").to_crs(ALBERS)
    assert set(ms.target_class) | set(ms.observed_class) <= set(GB3838)
    worse = [GB3838.index(o) > GB3838.index(t) for t, o in zip(ms.target_class, ms.observed_class)]
    assert any(worse), "at least one section must fail its target"
    lines = streams.union_all()
    assert (ms.distance(lines) < 1.0).all(), "sections must lie on the river line"
    if basin == "yongding":
        names = set(ms.name)
        assert {"官厅水库坝下", "三家店", "卢沟桥"} <= names and names & {"雁翅", "珠窝"}
        assert (wq.kind == "drinking_water_source").any()
        # real Natural Earth lines: the Yongding crosses the extent
        assert "Yongding" in set(streams.name)


@pytest.mark.parametrize("basin", BASINS)
def test_boundary_outlet_and_sites_inside(basin):
    d = need(basin)
    b = gpd.read_file(d / "boundary.gpkg", layer="boundary").to_crs(ALBERS)
    o = gpd.read_file(d / "boundary.gpkg", layer="outlet").to_crs(ALBERS)
    assert len(b) == 1 and b.geometry.iloc[0].is_valid and len(o) == 1
    poly = b.geometry.iloc[0]
    assert poly.buffer(30.0).contains(o.geometry.iloc[0])
    sites = gpd.read_file(d / "sites.gpkg", layer="sites").to_crs(ALBERS)
    assert sites.within(poly).all(), list(sites.site_id[~sites.within(poly)])
    if basin == "yongding":
        # outlet near Lugouqiao (116.213 E, 39.849 N); NE river line is generalised, so <= 2 km
        lx, ly = Transformer.from_crs("EPSG:4326", ALBERS, always_xy=True).transform(116.213, 39.849)
        assert o.geometry.iloc[0].distance(gpd.points_from_xy([lx], [ly])[0]) < 2000
    with rasterio.open(d / "dem.tif") as src:
        bounds = src.bounds
    area = poly.area
    frame = (bounds.right - bounds.left) * (bounds.top - bounds.bottom)
    assert 0.15 * frame < area <= frame


@pytest.mark.parametrize("basin", BASINS)
def test_dem_drains_to_outlet(basin):
    """Independent delineation (pyflwdir D8 with priority-flood) reproduces the shipped boundary,
    and the D8 path from the upstream end of the river reaches the outlet along the river."""
    d = need(basin)
    dem, prof, _ = read(d / "dem.tif")
    t = prof["transform"]
    o = gpd.read_file(d / "boundary.gpkg", layer="outlet").to_crs(ALBERS).geometry.iloc[0]
    orow, ocol = int((t.f - o.y) // 30), int((o.x - t.c) // 30)
    flw = pyflwdir.from_dem(dem, nodata=-9999.0, transform=tuple(t)[:6], latlon=False, outlets="edge")
    idx = orow * dem.shape[1] + ocol
    mask = flw.basins(idxs=np.array([idx])) > 0
    shipped = features.rasterize(gpd.read_file(d / "boundary.gpkg", layer="boundary").to_crs(ALBERS).geometry,
                                 out_shape=dem.shape, transform=t, dtype="uint8").astype(bool)
    iou = (mask & shipped).sum() / (mask | shipped).sum()
    assert iou > 0.98, iou
    # the D8 path from the most upstream cell of the streams layer reaches the outlet
    streams = gpd.read_file(d / "context.gpkg", layer="streams").to_crs(ALBERS)
    main = streams.loc[streams.length.idxmax()].geometry
    if basin == "yongding":       # start on the Sanggan above Guanting reservoir
        main = streams[streams.name == "Sanggan"].geometry.union_all()
        start = min((g for g in getattr(main, "geoms", [main])), key=lambda g: g.coords[0][0]).coords[0]
    else:
        start = main.coords[0]
    r, c = int((t.f - start[1]) // 30), int((start[0] - t.c) // 30)
    r, c = min(max(r, 0), dem.shape[0] - 1), min(max(c, 0), dem.shape[1] - 1)
    i = r * dem.shape[1] + c
    ds = flw.idxs_ds
    steps = 0
    while ds[i] != i and i != idx and steps < dem.size:
        i = ds[i]
        steps += 1
    assert i == idx, "D8 path from the upstream river end does not reach the outlet"


@pytest.mark.parametrize("basin", BASINS)
def test_channel_never_rises_downstream(basin):
    """Along the carved river (downstream of Guanting dam for Yongding), the DEM never rises
    downstream in any cell the river line runs through for at least a third of a cell.

    Every metre of the line is checked.  Cells the line only clips at a corner (< 10 m of it)
    are left out: where the carved 8-connected channel takes a diagonal step, the straight
    line cuts the corner of a bank cell, which is meant to stand above the channel."""
    d = need(basin)
    dem, prof, _ = read(d / "dem.tif")
    t = prof["transform"]
    streams = gpd.read_file(d / "context.gpkg", layer="streams").to_crs(ALBERS)
    if basin == "yongding":
        line = streams[streams.name == "Yongding"].geometry.iloc[0]
    else:
        line = streams[streams.name.str.startswith("Wei")].geometry.iloc[0]
    along = np.arange(0.0, line.length, 1.0)
    xy = shapely.get_coordinates(shapely.line_interpolate_point(line, along))
    r = ((t.f - xy[:, 1]) // 30).astype(int)
    c = ((xy[:, 0] - t.c) // 30).astype(int)
    inside = (r >= 0) & (r < dem.shape[0]) & (c >= 0) & (c < dem.shape[1])
    r, c, along = r[inside], c[inside], along[inside]
    assert len(r) > 0.9 * line.length, "river line mostly outside the DEM"
    first = np.r_[True, (r[1:] != r[:-1]) | (c[1:] != c[:-1])]   # first sample in each visited cell
    starts = np.flatnonzero(first)
    metres = np.diff(np.r_[starts, len(r)])
    held = starts[metres >= 10]
    assert len(held) > 0.8 * len(starts), (len(held), len(starts))
    z = dem[r[held], c[held]].astype("float64")
    rise = z - np.minimum.accumulate(z)
    worst = int(np.argmax(rise))
    assert rise[worst] <= 1e-3, (f"DEM rises {rise[worst]:.2f} m at {along[held[worst]]:.0f} m along the river "
                                 f"(row {r[held[worst]]}, col {c[held[worst]]})")


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize("basin", BASINS)
def test_config_points_at_shipped_files(basin):
    cfg_path = REPO / "configs" / f"{basin}.yaml"
    cfg = yaml.safe_load(cfg_path.read_text("utf-8"))
    assert cfg["basin"]["name"] == basin and cfg["resolution_m"] == 30
    assert CRS.from_user_input(cfg["crs"]).equals(ALBERS)
    assert str(cfg["assessment_date"]) == "2024-06-30"
    base = cfg_path.parent
    assert (base / cfg["dem"]["path"]).resolve().exists()
    assert [lc["year"] for lc in cfg["landcover"]] == [2015, 2023]
    for lc in cfg["landcover"]:
        assert (base / lc["path"]).resolve().exists() and lc["scheme"] == "clcd"
    items = [cfg["boundary"], cfg["sites"], *cfg["layers"].values()]
    for it in items:
        p = (base / it["path"]).resolve()
        assert p.exists(), p
        assert it["layer"] in {n for n, _ in pyogrio.list_layers(p)}
    cols = set(gpd.read_file(base / cfg["sites"]["path"], layer="sites").columns)
    assert set(cfg["sites"]["fields"].values()) <= cols
    ms = cfg["layers"]["monitoring_sections"]
    cols = set(gpd.read_file(base / ms["path"], layer=ms["layer"]).columns)
    assert set(ms["fields"].values()) <= cols


# ----------------------------------------------------------------------------- determinism
def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_generator_is_deterministic(tmp_path):
    if not (SHARED / "SOURCES.md").exists():
        pytest.skip(f"real anchors not found at {SHARED} (the generator needs ../shared/data)")
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "make_demo_basin.py"), "--basin", "xixian",
                          "--shared", str(SHARED), "--out", str(out)], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    shipped = sorted(p.relative_to(DATA / "xixian") for p in (DATA / "xixian").rglob("*") if p.is_file())
    built = sorted(p.relative_to(out / "xixian") for p in (out / "xixian").rglob("*") if p.is_file())
    assert shipped == built
    for rel in shipped:
        assert _sha(DATA / "xixian" / rel) == _sha(out / "xixian" / rel), f"{rel} differs from a fresh build"


@pytest.mark.parametrize("basin", BASINS)
def test_geopackages_carry_no_build_timestamp(basin):
    """GDAL stamps the write time into gpkg_contents / gpkg_metadata_reference unless
    OGR_CURRENT_DATE is fixed; the shipped files must carry the fixed date only."""
    import sqlite3
    for p in sorted((DATA / basin).glob("*.gpkg")):
        con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        try:
            stamps = [r[0] for r in con.execute("SELECT last_change FROM gpkg_contents")]
            stamps += [r[0] for r in con.execute("SELECT timestamp FROM gpkg_metadata_reference")]
        finally:
            con.close()
        assert stamps and set(stamps) == {"2024-01-01T00:00:00Z"}, (p.name, set(stamps))


@pytest.mark.parametrize("basin", BASINS)
def test_readme_reports_the_shipped_shares(basin):
    """data_samples/README.md reports target vs achieved shares; they must be the shipped ones."""
    text = (DATA / "README.md").read_text("utf-8")
    head = {"yongding": "## Yongding", "xixian": "## Xixian"}[basin]
    section = text.split(head, 1)[1].split("\n## ", 1)[0]
    summary = json.loads((DATA / basin / "summary.json").read_text("utf-8"))
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].endswith(")") and cells[0][-2].isdigit():
            rows[cells[0].rsplit(" (", 1)[0]] = [float(v) for v in cells[1:]]
    assert set(rows) == set(summary["shares_2015"]), rows.keys()
    for k, (t, a, b) in rows.items():
        assert t == pytest.approx(100 * summary["shares_target_modis"][k], abs=0.006)
        assert a == pytest.approx(100 * summary["shares_2015"][k], abs=0.006)
        assert b == pytest.approx(100 * summary["shares_2023"][k], abs=0.006)
