"""As-built DEMs of a vintage (METHOD.md: a vintage is rated from its land cover and, where
given, its as-built DEM), through the real command line on the tiny basin.

The survey covers only the works: it is patched into the basin DEM, the vintage gets
its own hydrology (published in ``indicators/<vintage>/hydrology/``) and its site rows
use it; a survey equal to the basin DEM changes nothing.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import rasterio.windows
import yaml
from rasterio.windows import Window

from conftest import run_cli

SURVEY = Window(18, 8, 18, 14)          # cols 18-35, rows 8-21: around site T-03 (rows 10-20, cols 20-34)
PIT = (slice(4, 10), slice(5, 13))     # rows 12-17, cols 23-30 inside the survey window


def _basin(tiny_template, root: Path, survey: str | None) -> Path:
    """A copy of the tiny basin whose y2023 vintage has the as-built `survey` (see _survey)."""
    shutil.copytree(tiny_template, root)
    cfg_path = root / "tiny.yaml"
    if survey is None:
        return cfg_path
    _survey(root, survey)
    cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    for v in cfg["landcover"]:
        if v["year"] == 2023:
            v["dem"] = "data/asbuilt_2023.tif"
    cfg_path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return cfg_path


def _survey(root: Path, kind: str) -> Path:
    """data/asbuilt_2023.tif over the SURVEY window: "same" copies the basin DEM, "pit" digs
    a 2 m pit into T-03."""
    with rasterio.open(root / "data" / "dem.tif") as src:
        z = src.read(1, window=SURVEY)
        prof = dict(src.profile, width=SURVEY.width, height=SURVEY.height,
                    transform=src.window_transform(SURVEY), blockxsize=16, blockysize=16)
    if kind == "pit":
        z[PIT] = z.min() - 2.0          # below every rim cell: the pit holds >= 2 m
    path = root / "data" / "asbuilt_2023.tif"
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(z, 1)
    return path


def _assess(cfg: Path, out: Path):
    res = run_cli("assess", str(cfg), "--out", str(out))
    assert res.returncode == 0, res.stderr
    return res


def _tables(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "tables").glob("*.csv"))}


@pytest.fixture(scope="module")
def runs(tiny_template, tmp_path_factory):
    root = tmp_path_factory.mktemp("asbuilt")
    out = {}
    for name in ("none", "pit", "same"):
        cfg = _basin(tiny_template, root / name, None if name == "none" else name)
        out[name] = (_assess(cfg, root / f"out_{name}"), root / f"out_{name}")
    return out


def test_pit_in_the_survey_changes_the_vintage_hydrology_and_its_site(runs):
    res, out = runs["pit"]
    _, ref = runs["none"]
    hyd = out / "indicators" / "y2023" / "hydrology"
    for name in ("filled.tif", "d8.tif", "depression_depth_m.tif", "slope_deg.tif"):
        assert (hyd / name).is_file(), name
    with rasterio.open(out.parent / "pit" / "data" / "asbuilt_2023.tif") as sv:
        survey_bounds = sv.bounds
        pit_bounds = rasterio.windows.bounds(Window(PIT[1].start, PIT[0].start, PIT[1].stop - PIT[1].start,
                                                    PIT[0].stop - PIT[0].start), sv.transform)
    with rasterio.open(hyd / "depression_depth_m.tif") as a, rasterio.open(ref / "hydrology" /
                                                                           "depression_depth_m.tif") as b:
        assert a.profile["driver"] == "GTiff" and a.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        own, base = a.read(1), b.read(1)
        pit = rasterio.windows.from_bounds(*pit_bounds, a.transform).round_offsets().round_lengths()
        inside = rasterio.windows.from_bounds(*survey_bounds, a.transform).round_offsets().round_lengths()
    assert (own[pit.toslices()] >= 2.0 - 1e-3).all()        # the dug pit holds >= 2 m of water
    outside = np.ones(own.shape, bool)
    outside[inside.toslices()] = False
    assert np.array_equal(own[outside], base[outside], equal_nan=True)   # elsewhere the basin DEM
    assert "as-built DEM" in res.stderr or "as-built" in (out / "run.log").read_text(encoding="utf-8")

    s = pd.read_csv(out / "tables" / "sites.csv").set_index(["site_id", "vintage"])
    r = pd.read_csv(ref / "tables" / "sites.csv").set_index(["site_id", "vintage"])
    assert s.loc[("T-03", "y2023"), "depression_share"] > r.loc[("T-03", "y2023"), "depression_share"] + 0.2
    # the baseline has no as-built DEM: its rows are those of the run without one
    pd.testing.assert_frame_equal(s.xs("baseline", level="vintage"), r.xs("baseline", level="vintage"))
    # the as-built rasters are published with the others (COG) and in the manifest
    manifest = (out / "manifest.json").read_text(encoding="utf-8")
    assert "asbuilt_2023.tif" in manifest


def test_survey_equal_to_the_basin_dem_changes_nothing(runs):
    """METHOD.md: credit = 0 when pre and post land cover and DEM are identical; here the
    DEM side: an as-built survey equal to the basin DEM gives the same tables as none."""
    _, out = runs["same"]
    _, ref = runs["none"]
    assert not (out / "indicators" / "y2023" / "hydrology").exists()
    assert _tables(out) == _tables(ref)
    assert "equals the basin DEM" in (out / "run.log").read_text(encoding="utf-8")


def test_survey_outside_the_basin_is_refused_naming_the_field(tiny_template, tmp_path):
    cfg = _basin(tiny_template, tmp_path / "b", "pit")
    p = tmp_path / "b" / "data" / "asbuilt_2023.tif"
    with rasterio.open(p, "r+") as ds:                     # move the survey 500 km east
        t = ds.transform
        ds.transform = rasterio.Affine(t.a, t.b, t.c + 500_000, t.d, t.e, t.f)
    res = run_cli("assess", str(cfg), "--out", str(tmp_path / "out"))
    assert res.returncode == 1
    assert "landcover.y2023.dem" in res.stderr and "does not overlap" in res.stderr and "the works" in res.stderr
    assert str(p.name) in res.stderr
    assert not (tmp_path / "out").exists()


def test_cached_pass_recomputes_only_what_the_survey_feeds(runs, tiny_template, tmp_path):
    """With the step cache (reprocess), a survey that starts to differ from the basin DEM
    re-runs the vintage's hydrology, indicators and site rows only; the result equals the
    uncached assessment of the same inputs."""
    import re

    cfg = _basin(tiny_template, tmp_path / "b", "same")
    data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    data["inbox"] = "inbox"
    cfg.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    out = tmp_path / "out"
    first = run_cli("reprocess", str(cfg), "--out", str(out))
    assert first.returncode == 0, first.stderr
    _survey(tmp_path / "b", "pit")                          # the works are surveyed again: a pit
    second = run_cli("reprocess", str(cfg), "--out", str(out))
    assert second.returncode == 0, second.stderr
    log = second.stderr
    hits = sorted(re.findall(r"cache hit: (\w+)", log))
    misses = sorted(re.findall(r"cache miss: (\w+)", log))
    # aligned: DEM and both land covers reused, the survey aligned again; the basin
    # hydrology, the baseline's indicators and site rows reused; y2023 gets its own hydrology
    assert hits == ["aligned"] * 3 + ["hydrology", "landscape", "sites"], log
    assert misses == ["aligned", "hydrology", "landscape", "sites"], log
    assert _tables(out) == _tables(runs["pit"][1])
