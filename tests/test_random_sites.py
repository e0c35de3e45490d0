"""Random site layers: either a clean validation error or a valid result with the invariants.

Hypothesis draws site geometries (boxes, slivers, bow-ties, far-away and overlapping
polygons) and attributes (kinds, dates in any order, malformed dates, duplicate ids).
Each layer goes through the real ingestion checks; when they pass, the sites are
rated on the tiny basin's published rasters and scored with the shipped rulebook.
"""

from __future__ import annotations

import datetime as dt
import shutil

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_cli
from pipeline.config import load_config
from pipeline.demo import ALBERS, RES, X0, Y0, H, W
from pipeline.errors import PipelineError
from pipeline.io.ingest import apply_parameter_overrides, check_inputs
from pipeline.run import Hydrology, run_site_indicators
from pipeline.scoring.rulebook import load_rulebook
from pipeline.scoring.score import score_sites


@pytest.fixture(scope="module")
def basin(tiny_template, tmp_path_factory):
    base = tmp_path_factory.mktemp("random_sites")
    shutil.copytree(tiny_template, base / "basin")
    out = base / "out"
    res = run_cli("assess", str(base / "basin" / "tiny.yaml"), "--out", str(out))
    assert res.returncode == 0, res.stderr
    hyd_paths = {p.stem: p for p in (out / "hydrology").glob("*.tif")}
    with rasterio.open(hyd_paths["basin_mask"]) as src:
        mask = src.read(1).astype(bool)
    landscape = {}
    for v in ("baseline", "y2023"):
        d = out / "indicators" / v
        landscape[v] = {p.stem: p for p in d.glob("*.tif")} | {"patch_table": d / "patches.csv"}
    return base / "basin" / "tiny.yaml", Hydrology(hyd_paths, mask), landscape


def _box(c0, r0, w, h):
    return shapely.box(X0 + c0 * RES, Y0 - (r0 + h) * RES, X0 + (c0 + w) * RES, Y0 - r0 * RES)


geometry = st.one_of(
    st.builds(_box, st.floats(0, W - 1), st.floats(0, H - 1), st.floats(0.05, 30), st.floats(0.05, 30)),
    st.builds(lambda c, r, s: shapely.Polygon([(X0 + c * RES, Y0 - r * RES), (X0 + (c + s) * RES, Y0 - (r + s) * RES),
                                               (X0 + (c + s) * RES, Y0 - r * RES), (X0 + c * RES, Y0 - (r + s) * RES)]),
              st.floats(2, W - 20), st.floats(2, H - 20), st.floats(1, 15)),        # bow-tie
    st.builds(lambda c, r: _box(c + 5000, r, 5, 5), st.floats(0, 10), st.floats(0, 10)),  # far away
)
date_text = st.one_of(st.none(), st.just(""), st.just("2020-02-30"), st.just("not a date"),
                      st.dates(dt.date(2010, 1, 1), dt.date(2030, 12, 31)).map(dt.date.isoformat))
site = st.fixed_dictionaries({
    "geometry": geometry,
    "site_id": st.sampled_from(["A", "B", "C", "D", "E", "F"]),
    "kind": st.sampled_from(["restoration", "restoration", "impact", "Impact ", "offset"]),
    "start_date": date_text,
    "end_date": date_text,
    "wq_plan": st.integers(0, 1),
})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(rows=st.lists(site, min_size=1, max_size=5))
def test_random_sites_validate_cleanly_or_score_within_bounds(basin, rows, tmp_path_factory):
    cfg_path, hyd, landscape = basin
    folder = tmp_path_factory.mktemp("layer")
    gdf = gpd.GeoDataFrame(
        [{k: v for k, v in r.items() if k != "geometry"} | {"project_id": "P", "name": "n",
                                                           "project_type": "afforestation",
                                                           "special_features": "", "flood_plan": 0,
                                                           "habitat_plan": 0} for r in rows],
        geometry=[r["geometry"] for r in rows], crs=ALBERS)
    gdf.to_file(folder / "sites.gpkg", layer="sites", driver="GPKG")
    cfg = load_config(cfg_path)
    cfg = cfg.model_copy(update={"sites": cfg.sites.model_copy(update={"path": folder / "sites.gpkg"})})
    try:
        ing = check_inputs(cfg)
    except PipelineError as exc:
        text = exc.render()
        assert "sites" in text and ("how to fix" in text or "problem(s)" in text), text
        return
    book = apply_parameter_overrides(load_rulebook(cfg.rulebook), cfg)
    params = {k: p.value for k, p in book.parameters.items()}
    ind = run_site_indicators(ing, {v.name: hyd for v in cfg.landcover}, landscape, params)
    result = score_sites(ind, pd.DataFrame(ing.sites.drop(columns="geometry")), "baseline", "y2023",
                         cfg.assessment_date, book)
    s = result.site_scores
    for cell in ("WQ_S", "WQ_L", "WQ_V", "HY_S", "HY_L", "HY_V", "HB_S", "HB_L", "HB_V"):
        assert s[cell].isin([1, 2, 3]).all()
    for fn in ("WQ", "HY", "HB"):
        assert s[fn].between(3, 9).all()
    c = result.credits
    assert np.isfinite(c["credit"]).all() and np.isfinite(c["debit"]).all()
    assert (c.loc[c["kind"] == "impact", "credit"] == 0).all()
    assert set(c["site_id"]) == set(ing.sites["site_id"])
