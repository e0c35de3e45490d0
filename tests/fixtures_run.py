"""A small but complete fake run output for the report/GeoPackage/client tests.

`build_run(out_dir)` returns a `RunOutputs` for a 6 km x 6 km basin in
EPSG:32650 (30 m grid, 200 x 200) with 3 projects / 5 sites (one impact site),
2 land-cover vintages, streams, NEAR/RING1K rings, monitoring sections, the
trace tables and COG rasters written with `write_cog`.  Ratings are drawn from
a seeded generator; everything derived (scores, stocks, credits, ledger) is
computed from them by the method's formulas (METHOD.md §6), so the tables are
mutually consistent.  Site "P1-A" is METHOD.md §7's worked check: pre scores
(4, 4, 3), post (7, 6, 7), 2.0 ha, TF 1, RF 0.5 -> credits (3, 2, 4).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from affine import Affine
from shapely.geometry import LineString, Point, Polygon, box

from pipeline.indicators.catalog import CLASS_NODATA
from pipeline.report.cog import write_cog
from pipeline.report.model import CELLS, FUNCTIONS, RunOutputs
from pipeline.report.styles import CANONICAL_CLASS_COLOURS, raster_pseudocolor_qml

CRS = "EPSG:32650"
X0, Y0, RES, N = 440000.0, 4420000.0, 30.0, 200
TF = {"planned": 0.0, "under_construction": 0.14, "completed": 0.30, "established": 0.65, "long_term": 1.0}

# site_id, project_id, name, kind, project_type, stage, rf, polygon (offsets in m from X0, Y0-6000)
_SITES = [
    ("P1-A", "P1", "永定河湿地修复A区", "restoration", "wetland", "long_term", 0.5, box(1000, 3000, 1200, 3100)),
    ("P1-B", "P1", "永定河湿地修复B区", "restoration", "wetland", "established", 1.0, box(1500, 3200, 1800, 3500)),
    ("P2-A", "P2", "官厅水库岸带林地", "restoration", "forest", "completed", 1.0, box(3000, 4000, 3450, 4300)),
    ("P3-A", "P3", "河滩生态公园", "restoration", "grassland", "under_construction", 1.0,
     Polygon([(4200, 1500), (4700, 1500), (4700, 1900), (4450, 2100), (4200, 1900)])),
    ("D1-A", "D1", "物流园区开发", "impact", "development", "completed", 1.0, box(2500, 1000, 2800, 1240)),
]


def _shift(geom):
    from shapely.affinity import translate
    return translate(geom, X0, Y0 - N * RES)


def _ratings(rng: np.random.Generator, site_id: str) -> tuple[dict, dict]:
    """Pre and post ratings of the nine cells."""
    if site_id == "P1-A":  # worked check: scores pre (4,4,3), post (7,6,7)
        pre = dict(zip(CELLS, (2, 1, 1, 2, 1, 1, 1, 1, 1)))
        post = dict(zip(CELLS, (3, 2, 2, 3, 2, 1, 3, 2, 2)))
        return pre, post
    pre = {c: int(rng.integers(1, 3)) for c in CELLS}
    if site_id.startswith("D"):
        post = {c: max(1, v - int(rng.integers(0, 2))) for c, v in pre.items()}
        post["HB_S"] = 1
    else:
        post = {c: min(3, v + int(rng.integers(0, 2))) for c, v in pre.items()}
    return pre, post


def build_run(out_dir: Path, basin_name: str = "testbasin") -> RunOutputs:
    out_dir = Path(out_dir)
    rng = np.random.default_rng(20240601)
    transform = Affine(RES, 0.0, X0, 0.0, -RES, Y0)
    boundary = gpd.GeoDataFrame({"name": ["测试流域"]}, geometry=[_shift(Polygon(
        [(150, 150), (5850, 300), (5900, 5800), (300, 5850), (100, 3000)]))], crs=CRS)
    main = LineString([(600, 5600), (1300, 3600), (2200, 2600), (3600, 1700), (5600, 400)])
    trib = LineString([(3300, 5600), (3200, 4400), (2200, 2600)])
    streams = gpd.GeoDataFrame({"stream_id": [1, 2, 3],
                                "upstream_area_km2": [4.2, 1.3, 18.7]},
                               geometry=[_shift(LineString(list(main.coords)[:3])), _shift(trib),
                                         _shift(LineString(list(main.coords)[2:]))], crs=CRS)

    site_rows, score_rows, credit_rows = [], [], []
    geoms = []
    for sid, pid, name, kind, ptype, stage, rf, poly in _SITES:
        g = _shift(poly)
        area = g.area / 1e4
        site_rows.append(dict(site_id=sid, project_id=pid, name=name, kind=kind, project_type=ptype, stage=stage,
                              tf=TF[stage], area_ha=round(area, 4), start_date="2019-03-01",
                              end_date="2020-10-31", special_features=""))
        geoms.append(g)
        pre, post = _ratings(rng, sid)
        for vname, year, ratings in (("lc2018", 2018, pre), ("lc2023", 2023, post)):
            row = dict(site_id=sid, vintage=vname, year=year)
            row["area_ha"] = round(area, 4)
            row["natural_share"] = float(np.clip(0.2 * sum(ratings[c] for c in CELLS if c.startswith("HB")) - 0.5,
                                                 0, 1))
            row["habitat_quality"] = round(18.0 * sum(ratings[c] for c in CELLS if c.startswith("HB")) - 20, 2)
            row["cb_area_ratio"] = round(float(rng.uniform(0.5, 60)), 3)
            row["ring_undisturbed_pct"] = round(float(rng.uniform(5, 70)), 2)
            for c in CELLS:
                row[f"pts_{c}1"] = ratings[c] * 2 - 1
                row[c] = ratings[c]
            for f in FUNCTIONS:
                row[f] = sum(ratings[f"{f}_{s}"] for s in "SLV")
            score_rows.append(row)
        for f in FUNCTIONS:
            spre = sum(pre[f"{f}_{s}"] for s in "SLV")
            spost = sum(post[f"{f}_{s}"] for s in "SLV")
            a = round(area, 4)
            if sid == "P1-A":
                a, tf_used = 2.0, 1.0
            else:
                tf_used = TF[stage]
            stock_pre, stock_post = a * spre, a * spost
            delta = stock_post - stock_pre
            tlf = 1.5 if kind == "impact" else 1.0
            credit = delta * tf_used * rf if kind == "restoration" else 0.0
            debit = a * (spre - spost) * tlf if kind == "impact" else 0.0
            credit_rows.append(dict(project_id=pid, site_id=sid, kind=kind, project_type=ptype, function=f,
                                    area_ha=a, score_pre=spre, score_post=spost, stock_pre=stock_pre,
                                    stock_post=stock_post, delta_stock=delta, stage=stage, tf=tf_used, rf=rf,
                                    tlf=tlf, credit=credit, debit=debit))
    sites = gpd.GeoDataFrame(site_rows, geometry=geoms, crs=CRS)
    sites.loc[sites.site_id == "P1-A", "area_ha"] = 2.0
    site_scores = pd.DataFrame(score_rows)
    credits = pd.DataFrame(credit_rows)
    led = credits.groupby("function", sort=False).agg(credits=("credit", "sum"), debits=("debit", "sum"))
    led = led.reindex(list(FUNCTIONS)).reset_index()
    led["net"] = led["credits"] - led["debits"]
    led["verdict"] = np.where(led["net"] >= 0, "no net loss", "net loss")

    near = gpd.GeoDataFrame({"site_id": sites.site_id},
                            geometry=[g.buffer(50).difference(g) for g in sites.geometry], crs=CRS)
    ring = gpd.GeoDataFrame({"site_id": sites.site_id},
                            geometry=[g.buffer(1000).difference(g) for g in sites.geometry], crs=CRS)
    sections = gpd.GeoDataFrame({"name": ["八号桥断面", "雁翅断面"], "target_class": ["III", "II"],
                                 "observed_class": ["IV", "II"]},
                                geometry=[_shift(Point(2900, 2150)), _shift(Point(4800, 1000))], crs=CRS)

    # rasters
    rdir = out_dir / "rasters"
    yy, xx = np.mgrid[0:N, 0:N]
    rasters: dict[str, Path] = {}
    ua = (0.0009 * (1 + xx) * (1 + yy) / 40).astype("float32")
    ua[boundary_mask(boundary, transform) == 0] = np.nan
    rasters["upstream_area_km2"] = write_cog(ua, transform, CRS, np.nan, rdir / "upstream_area_km2.tif",
                                             qml=raster_pseudocolor_qml(float(np.nanmin(ua)), float(np.nanmax(ua)),
                                                                        label="km²", log_scale=True))
    base = ((xx // 25 + yy // 40) % 9 + 1).astype("uint8")
    for vname, shift in (("lc2018", 0), ("lc2023", 1)):
        lc = base.copy()
        if shift:
            lc[(xx > 30) & (xx < 70) & (yy > 80) & (yy < 120)] = 4  # restored wetland
        lc[boundary_mask(boundary, transform) == 0] = CLASS_NODATA
        rasters[f"canonical_{vname}"] = write_cog(lc, transform, CRS, CLASS_NODATA, rdir / f"canonical_{vname}.tif",
                                                  colormap=CANONICAL_CLASS_COLOURS)
        dpc = np.where(np.isin(lc, (1, 2, 3, 4, 5)), (lc.astype("float32") * 0.37) % 3, np.nan).astype("float32")
        rasters[f"patch_dpc_{vname}"] = write_cog(dpc, transform, CRS, np.nan, rdir / f"patch_dpc_{vname}.tif",
                                                  qml=raster_pseudocolor_qml(0.0, 3.0, label="%"))
    cred = np.full((N, N), np.nan, dtype="float32")
    for _, srow in sites.iterrows():
        m = boundary_mask(gpd.GeoDataFrame(geometry=[srow.geometry], crs=CRS), transform).astype(bool)
        tot = credits.loc[credits.site_id == srow.site_id, "credit"].sum()
        if m.any():
            cred[m] = tot / m.sum()
    rasters["credits_all"] = write_cog(cred, transform, CRS, np.nan, rdir / "credits_all.tif",
                                       qml=raster_pseudocolor_qml(0.0, float(np.nanmax(cred)), label="credit/cell"))

    parameters = [
        dict(name="near_buffer_m", value=50, unit="m", source="METHOD.md §2 (WA 150 ft)", assumption=False),
        dict(name="landscape_buffer_m", value=1000, unit="m", source="METHOD.md §2", assumption=False),
        dict(name="tf.established", value=0.65, unit="", source="本项目假设（竣工2-5年）", assumption=True),
        dict(name="rf.wetland", value=0.5, unit="", source="WA 0.5-0.67 for young restoration", assumption=True),
        dict(name="tlf.concurrent", value=1.5, unit="", source="WA credit/debit method", assumption=False),
    ]
    inputs = [dict(role="dem", path="data_samples/testbasin/dem.tif", sha256="0" * 64,
                   source="synthetic DEM for tests (CC0)"),
              dict(role="landcover:lc2018", path="data_samples/testbasin/lc2018.tif", sha256="1" * 64,
                   source="synthetic (CC0)")]
    return RunOutputs(
        basin_name=basin_name, basin_title="测试流域（合成数据）", out_dir=out_dir,
        assessment_date=date(2024, 6, 30), baseline=("lc2018", 2018), assessment=("lc2023", 2023),
        vintages=[("lc2018", 2018), ("lc2023", 2023)], crs=CRS, resolution_m=RES,
        boundary=boundary, streams=streams, sites=sites, near_rings=near, ring1k=ring,
        site_scores=site_scores, credits=credits, ledger=led, project_totals=None,
        layers={"monitoring_sections": sections}, rasters=rasters, parameters=parameters,
        versions={"pipeline": "0.1.0", "numpy": np.__version__, "gdal": "3.10"}, inputs=inputs)


def boundary_mask(gdf: gpd.GeoDataFrame, transform) -> np.ndarray:
    from rasterio.features import rasterize
    return rasterize(((g, 1) for g in gdf.geometry), out_shape=(N, N), transform=transform, fill=0,
                     dtype="uint8")


_SHARED: dict[str, tuple] = {}


def shared_outputs() -> tuple[RunOutputs, Path, Path, Path]:
    """One complete fake run with its GeoPackage and report, built once per test process.

    For tests that only read the outputs (the report takes ~10 s to draw); the folder
    is removed when the process exits.  Returns (run, gpkg, index.html, report.pdf).
    """
    if "run" not in _SHARED:
        import atexit
        import shutil
        import tempfile

        from pipeline.report.document import write_report
        from pipeline.report.gpkg import write_geopackage

        root = Path(tempfile.mkdtemp(prefix="ecocredit-fixture-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        run = build_run(root / "testbasin")
        gpkg = write_geopackage(run, run.out_dir / f"{run.basin_name}.gpkg")
        html_path, pdf_path = write_report(run, run.out_dir / "report")
        _SHARED["run"] = (run, gpkg, html_path, pdf_path)
    return _SHARED["run"]
