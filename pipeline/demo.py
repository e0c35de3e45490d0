"""A tiny but complete generated basin, written to a folder: real GeoTIFFs and a GeoPackage.

120 x 100 cells of 30 m in China Albers; a valley draining south-east; CLCD land
cover for 2015 and 2023 (restoration sites greened, the impact site built over);
sites delivered in EPSG:4326 as agencies do. Used to compile the kernels after
installing (`pipeline.warmup`) and by the tests; building it takes under a second.
Everything in it is synthetic.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
import yaml
from affine import Affine

ALBERS = "+proj=aea +lat_0=0 +lon_0=105 +lat_1=25 +lat_2=47 +x_0=0 +y_0=0 +datum=WGS84 +units=m +no_defs"
RES = 30.0
X0, Y0 = 930_000.0, 4_560_000.0      # upper-left corner (near Beijing in China Albers)
H, W = 100, 120


def _dem(rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W].astype(float)
    valley = np.abs(y - (0.6 * x + 20)) * 0.8           # valley line running to the SE
    plane = 300.0 - 0.9 * x - 0.6 * y                   # general slope to the SE
    noise = rng.normal(0, 0.8, (H, W))
    dem = plane + valley + noise
    dem[40:44, 30:34] -= 3.0                            # a closed depression
    return dem.astype("float32")


def _landcover(rng: np.random.Generator, dem: np.ndarray) -> np.ndarray:
    lc = np.full((H, W), 4, dtype="uint8")              # grassland
    lc[dem > 260] = 2                                   # forest upslope
    lc[(dem > 240) & (dem <= 260)] = 3                  # shrub
    y, x = np.mgrid[0:H, 0:W]
    lc[np.abs(y - (0.6 * x + 20)) <= 1] = 5              # river
    lc[(x > 80) & (y > 60)] = 1                         # cropland plain
    lc[(x > 100) & (y > 80)] = 8                        # town
    lc[(rng.random((H, W)) < 0.02)] = 7                 # scattered barren
    return lc


def site_polygons() -> list[dict]:
    """Sites in grid cells (row0, row1, col0, col1) with attributes."""
    return [
        dict(site_id="T-01", project_id="P1", name="河岸湿地", kind="restoration",
             project_type="riparian_wetland", start_date="2016-03-01", end_date="2017-10-01",
             cells=(62, 72, 62, 74), special_features="islands", wq_plan=1, flood_plan=0, habitat_plan=1),
        dict(site_id="T-02", project_id="P1", name="缓冲带", kind="restoration",
             project_type="buffer_planting", start_date="2021-04-01", end_date="2022-11-30",
             cells=(80, 88, 86, 98), special_features="", wq_plan=0, flood_plan=1, habitat_plan=0),
        dict(site_id="T-03", project_id="P2", name="造林", kind="restoration",
             project_type="afforestation", start_date="2023-09-01", end_date="",
             cells=(10, 20, 20, 34), special_features="snags,large woody debris", wq_plan=0,
             flood_plan=0, habitat_plan=0),
        dict(site_id="T-04", project_id="D1", name="物流园", kind="impact",
             project_type="road", start_date="2019-05-01", end_date="2020-06-30",
             cells=(30, 38, 70, 82), special_features="", wq_plan=0, flood_plan=0, habitat_plan=0),
    ]


def build_tiny_basin(folder: Path, *, seed: int = 7) -> Path:
    """Write the tiny basin into `folder`; return the path of its configuration."""
    folder = Path(folder)
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    transform = Affine(RES, 0, X0, 0, -RES, Y0)
    dem = _dem(rng)
    lc15 = _landcover(rng, dem)
    lc23 = lc15.copy()
    sites = site_polygons()
    change = {"riparian_wetland": 9, "buffer_planting": 3, "afforestation": 2, "road": 8}
    for s in sites:
        r0, r1, c0, c1 = s["cells"]
        if s["end_date"]:                                  # only completed works change cover
            lc23[r0:r1, c0:c1] = change[s["project_type"]]
    lc23[90:100, 60:80] = 8                                # some urban growth elsewhere

    prof = dict(driver="GTiff", width=W, height=H, count=1, crs=ALBERS, transform=transform,
                tiled=True, blockxsize=64, blockysize=64, compress="deflate")
    with rasterio.open(data / "dem.tif", "w", dtype="float32", nodata=-9999.0, **prof) as d:
        d.write(dem, 1)
    for year, lc in ((2015, lc15), (2023, lc23)):
        with rasterio.open(data / f"lc_{year}.tif", "w", dtype="uint8", nodata=0, **prof) as d:
            d.write(lc, 1)

    polys = []
    for s in sites:
        r0, r1, c0, c1 = s["cells"]
        polys.append(shapely.box(X0 + c0 * RES + 5, Y0 - r1 * RES + 5, X0 + c1 * RES - 5, Y0 - r0 * RES - 5))
    attrs = [{k: v for k, v in s.items() if k != "cells"} for s in sites]
    gdf = gpd.GeoDataFrame(attrs, geometry=polys, crs=ALBERS).to_crs("EPSG:4326")
    gdf.to_file(data / "sites.gpkg", layer="sites", driver="GPKG")
    boundary = gpd.GeoDataFrame({"name": ["tiny"]}, geometry=[shapely.box(
        X0 + 2 * RES, Y0 - (H - 2) * RES, X0 + (W - 2) * RES, Y0 - 2 * RES)], crs=ALBERS)
    boundary.to_file(data / "layers.gpkg", layer="boundary", driver="GPKG")
    protected = gpd.GeoDataFrame({"name": ["湿地公园"], "kind": ["wetland_park"]},
                                 geometry=[shapely.box(X0 + 55 * RES, Y0 - 80 * RES, X0 + 80 * RES, Y0 - 58 * RES)],
                                 crs=ALBERS)
    protected.to_file(data / "layers.gpkg", layer="protected_areas", driver="GPKG")
    sections = gpd.GeoDataFrame(
        {"name": ["三家店", "卢沟桥"], "target_class": ["II", "III"], "observed_class": ["II", "IV"]},
        geometry=[shapely.Point(X0 + 80.5 * RES, Y0 - 68.5 * RES), shapely.Point(X0 + 110.5 * RES, Y0 - 86.5 * RES)],
        crs=ALBERS)
    sections.to_file(data / "layers.gpkg", layer="monitoring_sections", driver="GPKG")

    cfg = {
        "basin": {"name": "tiny", "title": "测试流域"},
        "crs": ALBERS,
        "resolution_m": 30,
        "assessment_date": "2024-06-30",
        "dem": {"path": "data/dem.tif"},
        "boundary": {"path": "data/layers.gpkg", "layer": "boundary"},
        "landcover": [
            {"name": "baseline", "year": 2015, "path": "data/lc_2015.tif", "scheme": "clcd"},
            {"name": "y2023", "year": 2023, "path": "data/lc_2023.tif", "scheme": "clcd"},
        ],
        "sites": {"path": "data/sites.gpkg", "layer": "sites",
                  "fields": {"site_id": "site_id", "project_id": "project_id", "name": "name",
                             "kind": "kind", "project_type": "project_type",
                             "construction_start": "start_date", "completion": "end_date",
                             "special_features": "special_features", "in_wq_plan": "wq_plan",
                             "in_flood_plan": "flood_plan", "in_habitat_plan": "habitat_plan"}},
        "layers": {
            "protected_areas": {"path": "data/layers.gpkg", "layer": "protected_areas"},
            "monitoring_sections": {"path": "data/layers.gpkg", "layer": "monitoring_sections"},
        },
        "processing": {"chunk_size": 64},
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path
