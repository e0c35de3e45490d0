"""Scheduled reprocessing (pipeline.reprocess) on the tiny basin, end to end.

One assessed template (the tiny basin with an inbox, reprocessed once) is built per
session and copied for each scenario, so the expensive first assessment runs once.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml

from conftest import REPO, run_cli
from pipeline.runlog import sha256

SCORES = ["WQ", "HY", "HB", "WQ_S", "WQ_L", "WQ_V", "HY_S", "HY_L", "HY_V", "HB_S", "HB_L", "HB_V"]
# cover shares computed on the site polygon itself: only a change inside the site moves them
SITE_LOCAL = ["persistent_veg_share", "wetland_water_share", "natural_share", "habitat_quality",
              "n_structure_classes", "shannon_natural"]


# ---------------------------------------------------------------------------------- fixtures
def _with_inbox(cfg_path: Path) -> None:
    data = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    data["inbox"] = "inbox"
    cfg_path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    (cfg_path.parent / "inbox").mkdir()


def _out(folder: Path) -> Path:
    return folder / "outputs" / "tiny"


def _cfg(folder: Path) -> Path:
    return folder / "basin" / "tiny.yaml"


@pytest.fixture(scope="session")
def assessed(tmp_path_factory, tiny_template) -> Path:
    """tiny basin + inbox, reprocessed once (2 vintages) -> <folder>/outputs/tiny."""
    from pipeline.reprocess import reprocess

    folder = tmp_path_factory.mktemp("reprocess_template")
    shutil.copytree(tiny_template, folder / "basin")
    _with_inbox(_cfg(folder))
    assert reprocess(_cfg(folder), out=_out(folder)) == 0
    return folder


def _clone(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def new_vintage(folder: Path, name: str = "landcover_2024.tif") -> Path:
    """y2023 land cover with the afforestation site T-03 (rows 10-20, cols 20-34) turned to
    CLCD wetland (9), dropped into the inbox with an old mtime (a settled delivery)."""
    with rasterio.open(folder / "basin" / "data" / "lc_2023.tif") as src:
        a = src.read(1)
        prof = src.profile
    a[10:20, 20:34] = 9
    dst = folder / "basin" / "inbox" / name
    tmp = dst.with_name("." + dst.name)
    with rasterio.open(tmp, "w", **prof) as d:
        d.write(a, 1)
    os.replace(tmp, dst)
    old = time.time() - 3600
    os.utime(dst, (old, old))
    return dst


@pytest.fixture(scope="module")
def updated(assessed, tmp_path_factory) -> dict:
    """The template after a new vintage (2024) was dropped and reprocessed, uninterrupted."""
    from pipeline.reprocess import reprocess

    folder = _clone(assessed, tmp_path_factory.mktemp("updated") / "b")
    new_vintage(folder)
    log = folder / "basin" / "tiny-store" / "reprocess.log"
    n0 = len(log.read_text(encoding="utf-8").splitlines())
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)         # the CLI does this in setup_console; here: in-process
    try:
        t = time.perf_counter()
        code = reprocess(_cfg(folder), out=_out(folder))
        wall = time.perf_counter() - t
    finally:
        root.setLevel(level)
    lines = log.read_text(encoding="utf-8").splitlines()[n0:]
    return {"folder": folder, "code": code, "wall": wall, "log": lines}


def _files(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): sha256(p) for p in sorted(out.rglob("*")) if p.is_file()}


def _comparable(out: Path) -> dict[str, str]:
    """Tables (byte for byte), rasters and their QGIS sidecars (sha256); manifest, log,
    GeoPackage and report carry timestamps or absolute paths and are left out."""
    return {k: v for k, v in _files(out).items()
            if k.startswith("tables/") or k.endswith((".tif", ".qml", "patches.csv"))}


# ---------------------------------------------------------------------------------- scenarios
def test_new_vintage_is_registered_and_history_grows(updated, assessed):
    folder = updated["folder"]
    assert updated["code"] == 0
    # moved out of the inbox into the store, registered with its year and the default scheme
    assert not list((folder / "basin" / "inbox").glob("*.tif"))
    reg = yaml.safe_load((folder / "basin" / "tiny-store" / "vintages.yaml").read_text(encoding="utf-8"))
    (entry,) = reg["vintages"]
    assert (entry["name"], entry["year"], entry["scheme"]) == ("y2024", 2024, "clcd")
    stored = folder / "basin" / "tiny-store" / entry["path"]
    assert sha256(stored) == entry["sha256"]
    # the history now covers 3 vintages: 4 sites x 3 functions x 3 vintages
    hist = pd.read_csv(_out(folder) / "tables" / "history.csv")
    assert len(hist) == 36 and sorted(hist["vintage"].unique()) == ["baseline", "y2023", "y2024"]
    assert pd.read_parquet(_out(folder) / "tables" / "history.parquet").shape == hist.shape
    assert set(hist.loc[hist.vintage == "y2024", "role"]) == {"assessment"}
    # earlier vintages keep their scores (their rows of sites.csv are unchanged byte for byte)
    before = (_out(assessed) / "tables" / "sites.csv").read_text(encoding="utf-8").splitlines()
    after = (_out(folder) / "tables" / "sites.csv").read_text(encoding="utf-8").splitlines()
    assert before[0] == after[0]
    assert set(before[1:]) <= set(after[1:])
    old = pd.read_csv(_out(assessed) / "tables" / "history.csv")
    merged = hist.merge(old, on=["site_id", "function", "vintage"], suffixes=("", "_old"))
    assert len(merged) == 24
    assert (merged["score"] == merged["score_old"]).all()
    # the new vintage is the assessment: the credits table equals the history's 2024 rows
    cred = pd.read_csv(_out(folder) / "tables" / "credits.csv").set_index(["site_id", "function"])
    h24 = hist[hist.vintage == "y2024"].set_index(["site_id", "function"])
    assert np.allclose(cred.loc[h24.index, "credit"], h24["credit"])


def test_only_the_affected_site_changes(updated):
    s = pd.read_csv(_out(updated["folder"]) / "tables" / "sites.csv")
    a = s[s.vintage == "y2023"].set_index("site_id")
    b = s[s.vintage == "y2024"].set_index("site_id")
    changed = {sid for sid in a.index if (a.loc[sid, SCORES] != b.loc[sid, SCORES]).any()}
    # only T-03's cover changed (to wetland): its WQ site rating rises (WQ-S4 wetland share)
    assert changed == {"T-03"}
    assert b.loc["T-03", "wetland_water_share"] == pytest.approx(1.0, abs=0.05)
    assert a.loc["T-03", "wetland_water_share"] < 0.1
    # every other site keeps its own-polygon cover indicators exactly; basin-wide patch
    # indicators (largest patch, dPC share) may move because patches are global
    for sid in ("T-01", "T-02", "T-04"):
        for col in SITE_LOCAL:
            x, y = a.loc[sid, col], b.loc[sid, col]
            assert (pd.isna(x) and pd.isna(y)) or x == y, (sid, col)


def test_unchanged_work_comes_from_the_cache(updated, assessed):
    log = "\n".join(updated["log"])
    hits = re.findall(r"cache hit: (\w+)", log)
    misses = re.findall(r"cache miss: (\w+)", log)
    # the DEM, baseline and y2023 aligned before, hydrology once, baseline and y2023
    # indicators and their site rows reused; y2024 aligned and computed
    assert sorted(hits) == ["aligned"] * 3 + ["hydrology", "landscape", "landscape", "sites", "sites"]
    assert sorted(misses) == ["aligned", "landscape", "sites"]
    # y2024 differs from y2023 in one chunk (rows 10-20 of 64-row chunks): the chunk results
    # of the other chunks come from the block memo, the changed ones are computed
    blocks = re.search(r"block memo: (\d+) chunk result\(s\) reused, (\d+) computed", log)
    assert blocks and int(blocks.group(1)) > 0 and int(blocks.group(2)) > 0, log[-3000:]
    # the maps of unchanged rasters (baseline, upstream area) come from the previous report
    figs = re.search(r"figures: (\d+) drawn \(\d+ process\(es\)\), (\d+) unchanged", log)
    assert figs and int(figs.group(1)) > 0 and int(figs.group(2)) > 0, log[-3000:]
    # credit rasters: the project of T-03 (inside the change) is written again, projects
    # whose credits and land cover are unchanged take their raster from the cache, as
    # published before (test_cached_run_equals_an_uncached_assessment: all equal a plain run)
    cr = re.search(r"credit rasters: (\d+) written, (\d+) unchanged", log)
    assert cr and int(cr.group(1)) >= 1 and int(cr.group(2)) >= 1, log[-3000:]
    old, new = _files(_out(assessed) / "rasters"), _files(_out(updated["folder"]) / "rasters")
    same = [k for k in new if k.endswith(".tif") and old.get(k) == new[k]]
    assert len(same) == int(cr.group(2)), (same, cr.groups())
    # reused indicator rasters are identical to the ones published before
    for v in ("baseline", "y2023"):
        old = _files(_out(assessed) / "indicators" / v)
        new = _files(_out(updated["folder"]) / "indicators" / v)
        assert old == new
    assert _files(_out(assessed) / "hydrology") == _files(_out(updated["folder"]) / "hydrology")


def test_manifest_digests_are_those_of_the_files(updated):
    """The manifest of a reprocess (digests remembered by inode for outputs that are hard
    links to cache entries, by path for inputs) gives every file's actual sha256; the
    output memo holds this run's files only."""
    out = _out(updated["folder"])
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert len(manifest["outputs"]) > 20
    for o in manifest["outputs"]:
        assert o["sha256"] == sha256(out / o["path"]), o["path"]
    for i in manifest["inputs"]:
        if i["sha256"] is not None:
            p = Path(i["path"])
            p = p if p.is_absolute() else REPO / p
            assert i["sha256"] == sha256(p), i["path"]
    memo = json.loads((out.parent / ".cache" / "tiny" / "output_hashes.json").read_text(encoding="utf-8"))
    assert len(memo) == len(manifest["outputs"])


def test_cached_run_equals_an_uncached_assessment(updated, tmp_path):
    """The step cache is an optimisation only: a plain assess of the same 3 vintages gives
    the same tables and rasters."""
    from pipeline.assess import assess

    eff = updated["folder"] / "basin" / "tiny-store" / "assessment.yaml"
    plain = assess(eff, out=tmp_path / "plain" / "tiny")
    assert _comparable(plain) == _comparable(_out(updated["folder"]))


def test_second_run_does_nothing_and_is_fast(updated):
    from pipeline.reprocess import reprocess

    out = _out(updated["folder"])
    before = _files(out)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    try:
        t = time.perf_counter()
        code = reprocess(_cfg(updated["folder"]), out=out)
        wall = time.perf_counter() - t
    finally:
        root.setLevel(level)
    assert code == 0
    log = (updated["folder"] / "basin" / "tiny-store" / "reprocess.log").read_text(encoding="utf-8")
    assert wall < 5.0, f"an idle run took {wall:.2f} s; log:\n{log[-3000:]}"
    assert _files(out) == before                          # not even the manifest was rewritten
    assert not list(out.parent.glob(".tiny.staging-*"))
    print(f"idle reprocess run: {wall:.2f} s")


def test_bad_files_are_quarantined_with_a_reason(assessed, tmp_path):
    from pipeline.reprocess import reprocess

    folder = _clone(assessed, tmp_path / "b")
    inbox = folder / "basin" / "inbox"
    (inbox / "landcover_2025.tif").write_bytes(b"II*\0 this is not really a tiff")   # corrupt
    with rasterio.open(folder / "basin" / "data" / "lc_2023.tif") as src:       # unknown codes
        a, prof = src.read(1), src.profile
    a[0:5, 0:5] = 200
    with rasterio.open(inbox / "landcover_2026.tif", "w", **prof) as d:
        d.write(a, 1)
    shutil.copy(folder / "basin" / "data" / "lc_2023.tif", inbox / "scan_final.tif")  # no year
    (inbox / "landcover_2027.tif").write_bytes(b"x")
    (inbox / "landcover_2027.tif.yaml").write_text("year: 2027\nscheme: clcd_v2\n")   # bad scheme
    (inbox / "landcover_2010.tif").write_bytes((folder / "basin" / "data" / "lc_2023.tif").read_bytes())
    old = time.time() - 3600
    for p in inbox.iterdir():
        os.utime(p, (old, old))
    (inbox / ".landcover_2028.tif.part").write_bytes(b"arriving")               # ignored
    published = _files(_out(folder))

    code = reprocess(_cfg(folder), out=_out(folder))
    assert code == 2
    q = inbox / "quarantine"
    reasons = {p.name.removesuffix(".error.txt"): p.read_text(encoding="utf-8")
               for p in q.glob("*.error.txt")}
    assert sorted(reasons) == ["landcover_2010.tif", "landcover_2025.tif", "landcover_2026.tif",
                               "landcover_2027.tif", "scan_final.tif"]
    assert "cannot open" in reasons["landcover_2025.tif"]
    assert "codes [200] are not classes of the 'clcd' scheme" in reasons["landcover_2026.tif"]
    assert "does not say the year" in reasons["scan_final.tif"]
    assert "unknown land-cover scheme 'clcd_v2'" in reasons["landcover_2027.tif"]
    assert "not after the baseline year 2015" in reasons["landcover_2010.tif"]
    for name in reasons:                                   # the file itself sits beside its report
        assert (q / name).is_file()
        j = json.loads((q / f"{name}.error.json").read_text(encoding="utf-8"))
        assert j["file"] == name and j["error"] == "InputDataError" and j["message"]
    assert (q / "landcover_2027.tif.yaml").is_file()       # the sidecar went with it
    assert (inbox / ".landcover_2028.tif.part").exists()   # a partial upload is left alone
    assert _files(_out(folder)) == published               # nothing valid: nothing recomputed
    assert not (folder / "basin" / "tiny-store" / "vintages.yaml").exists()


def _survey(folder: Path, name: str, year_dir: str = "inbox") -> Path:
    """An as-built DEM of the works at T-03 (rows 8-21, cols 18-35 of the basin DEM) with a
    pit dug below every rim cell, dropped into the inbox (settled)."""
    from rasterio.windows import Window

    win = Window(18, 8, 18, 14)
    with rasterio.open(folder / "basin" / "data" / "dem.tif") as src:
        z = src.read(1, window=win)
        prof = dict(src.profile, width=win.width, height=win.height, transform=src.window_transform(win),
                    blockxsize=16, blockysize=16)
    z[4:10, 5:13] = z.min() - 2.0
    dst = folder / "basin" / year_dir / name
    with rasterio.open(dst, "w", **prof) as d:
        d.write(z, 1)
    old = time.time() - 3600
    os.utime(dst, (old, old))
    return dst


def test_as_built_dem_delivered_with_its_land_cover(assessed, tmp_path):
    """dem_2024.tif delivered with landcover_2024.tif: both registered (land cover first),
    the 2024 vintage gets its own hydrology and T-03's depressions; DEMs without a
    registered vintage of their year, or for a vintage of the configuration, are quarantined."""
    from pipeline.reprocess import reprocess

    folder = _clone(assessed, tmp_path / "b")
    inbox = folder / "basin" / "inbox"
    _survey(folder, "dem_2024.tif")          # sorts before landcover_2024.tif: order must not matter
    new_vintage(folder)
    _survey(folder, "dem_2030.tif")          # no land cover of 2030
    _survey(folder, "dem_2023.tif")          # y2023 is the configuration's vintage
    code = reprocess(_cfg(folder), out=_out(folder))
    assert code == 2
    reg = yaml.safe_load((folder / "basin" / "tiny-store" / "vintages.yaml").read_text(encoding="utf-8"))
    (item,) = reg["vintages"]
    assert item["name"] == "y2024" and item["dem"] == "dem/y2024.tif" and item["dem_source"] == "dem_2024.tif"
    assert sha256(folder / "basin" / "tiny-store" / "dem" / "y2024.tif") == item["dem_sha256"]
    q = inbox / "quarantine"
    reasons = {p.name.removesuffix(".error.txt"): p.read_text(encoding="utf-8") for p in q.glob("*.error.txt")}
    assert sorted(reasons) == ["dem_2023.tif", "dem_2030.tif"]
    assert "no land-cover vintage of 2030" in reasons["dem_2030.tif"]
    assert "defined in the basin configuration" in reasons["dem_2023.tif"]
    assert sorted(p.name for p in inbox.iterdir()) == ["quarantine"]

    out = _out(folder)
    assert (out / "indicators" / "y2024" / "hydrology" / "depression_depth_m.tif").is_file()
    assert not (out / "indicators" / "y2023" / "hydrology").exists()
    s = pd.read_csv(out / "tables" / "sites.csv").set_index(["site_id", "vintage"])
    assert s.loc[("T-03", "y2024"), "depression_share"] > s.loc[("T-03", "y2023"), "depression_share"] + 0.2
    # the DEM is an input of the run now; a second pass has nothing new
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert any(str(i.get("path", "")).endswith("dem/y2024.tif") for i in manifest["inputs"])
    published = _files(out)
    assert reprocess(_cfg(folder), out=out) == 0
    assert _files(out) == published
    # a pass killed after registering the DEM but before removing it from the inbox: the
    # next pass finds it registered, removes it and computes nothing
    again = shutil.copy2(folder / "basin" / "tiny-store" / "dem" / "y2024.tif", inbox / "dem_2024.tif")
    os.utime(again, (time.time() - 3600,) * 2)
    assert reprocess(_cfg(folder), out=out) == 0
    assert sorted(p.name for p in inbox.iterdir()) == ["quarantine"]
    assert _files(out) == published


def test_kill_mid_run_keeps_outputs_and_next_run_matches(updated, assessed, tmp_path):
    from pipeline.reprocess import reprocess

    folder = _clone(assessed, tmp_path / "b")
    new_vintage(folder)
    out = _out(folder)
    published = _files(out)
    env = dict(os.environ)
    env.pop("ECOCREDIT_PROGRESS", None)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "reprocess", str(_cfg(folder)),
                             "--out", str(out)], cwd=REPO, env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    seen = []
    try:
        deadline = time.time() + 300
        for line in proc.stderr:
            seen.append(line)
            if "▶ land-cover indicators y2024" in line:
                os.kill(proc.pid, signal.SIGKILL)
                break
            assert time.time() < deadline, "".join(seen[-20:])
    finally:
        if proc.poll() is None and not any("▶ land-cover indicators y2024" in s for s in seen):
            proc.kill()
        proc.wait(60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "".join(seen[-20:])
    # the previous publication is intact; the dead run left its lock and staging debris
    assert _files(out) == published
    lock = json.loads((folder / "basin" / "tiny-store" / "reprocess.lock").read_text())
    assert lock["pid"] == proc.pid
    assert list(out.parent.glob(".tiny.staging-*"))
    assert list(out.parent.glob(f".work-tiny-{proc.pid}-*"))      # its aligned inputs

    code = reprocess(_cfg(folder), out=out)               # takes the stale lock over
    assert code == 0
    assert not list(out.parent.glob(".tiny.staging-*"))
    assert not list(out.parent.glob(".work-tiny-*"))
    assert not (folder / "basin" / "tiny-store" / "reprocess.lock").exists()
    assert _comparable(out) == _comparable(_out(updated["folder"]))
    assert _files(out) != published


def test_cli_without_inbox_is_an_error(tiny):
    r = run_cli("reprocess", str(tiny), "--out", str(tiny.parent / "out"))
    assert r.returncode == 1
    assert "no inbox folder is configured" in r.stderr and "inbox:" in r.stderr
