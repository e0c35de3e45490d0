"""The whole assessment on the tiny basin through the real command line.

Checks the method's invariants on the published outputs, that two runs (other
chunk size, shuffled site order) give byte-identical tables and rasters, and
that failures while writing leave the published outputs untouched.
"""

from __future__ import annotations

import hashlib
import json
import resource
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml

from conftest import run_cli

DETERMINISTIC = ("tables/*.csv", "tables/*.parquet", "hydrology/*.tif", "indicators/*/*.tif",
                 "indicators/*/*.csv", "rasters/*.tif")


def _digests(root: Path) -> dict[str, str]:
    out = {}
    for pattern in DETERMINISTIC:
        for p in sorted(root.glob(pattern)):
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="session")
def assessed(tiny_template, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("e2e")
    shutil.copytree(tiny_template, base / "basin")
    out = base / "out"
    res = run_cli("assess", str(base / "basin" / "tiny.yaml"), "--out", str(out))
    assert res.returncode == 0, res.stderr
    return out


def test_outputs_published(assessed):
    for rel in ("manifest.json", "run.log", "tiny.gpkg", "tables/sites.csv", "tables/sites.parquet",
                "tables/credits.csv", "tables/ledger.csv", "report/index.html", "report/report.pdf",
                "hydrology/d8.tif", "hydrology/accumulation.tif", "hydrology/upstream_area_km2.tif",
                "indicators/baseline/canonical.tif", "indicators/y2023/patch_dpc.tif"):
        assert (assessed / rel).is_file(), rel
    assert not list(assessed.parent.glob(".out.staging-*")), "staging folder left behind"
    manifest = json.loads((assessed / "manifest.json").read_text(encoding="utf-8"))
    assert {"inputs", "config", "versions", "timings_s", "outputs"} <= set(manifest)
    assert all(len(i["sha256"]) == 64 for i in manifest["inputs"] if i["sha256"])
    for key in ("GDAL", "PROJ", "numba", "dask"):
        assert manifest["versions"][key]
    log = (assessed / "run.log").read_text(encoding="utf-8")
    assert "GDAL" in log and "configuration:" in log and "finished in" in log


def test_method_invariants(assessed):
    scores = pd.read_csv(assessed / "tables" / "sites.csv")
    for cell in ("WQ_S", "WQ_L", "WQ_V", "HY_S", "HY_L", "HY_V", "HB_S", "HB_L", "HB_V"):
        assert scores[cell].between(1, 3).all(), cell
    for fn in ("WQ", "HY", "HB"):
        assert scores[fn].between(3, 9).all(), fn
        rs = scores[[f"{fn}_S", f"{fn}_L", f"{fn}_V"]].sum(axis=1)
        assert (rs == scores[fn]).all()
    credits = pd.read_csv(assessed / "tables" / "credits.csv")
    assert set(credits["function"]) == {"WQ", "HY", "HB"}
    # planned sites earn nothing (TF 0); impact sites carry debits only
    planned = credits[credits["stage"] == "planned"]
    assert (planned["credit"] == 0).all()
    impact = credits[credits["kind"] == "impact"]
    assert (impact["credit"] == 0).all() and (impact["debit"] >= 0).all()


def test_credit_rasters_sum_to_table(assessed):
    credits = pd.read_csv(assessed / "tables" / "credits.csv")
    rasters = sorted((assessed / "rasters").glob("credits_*.tif"))
    assert rasters
    for path in rasters:
        pid = path.stem.removeprefix("credits_")
        table = credits[credits["project_id"] == pid]
        with rasterio.open(path) as src:
            assert src.descriptions[0] == "credit_total"
            total = src.read(1, masked=True).astype(np.float64).sum()
            per_fn = [src.read(2 + k, masked=True).astype(np.float64).sum() for k in range(3)]
        expect = float(table["credit"].sum() - table["debit"].sum())
        assert total == pytest.approx(expect, rel=1e-6, abs=1e-9), pid
        for k, fn in enumerate(("WQ", "HY", "HB")):
            t = table[table["function"] == fn]
            assert per_fn[k] == pytest.approx(float(t["credit"].sum() - t["debit"].sum()),
                                              rel=1e-6, abs=1e-9)


def test_rerun_is_byte_identical_for_other_chunking_and_site_order(assessed, tiny_template, tmp_path):
    shutil.copytree(tiny_template, tmp_path / "basin")
    sites = tmp_path / "basin" / "data" / "sites.gpkg"
    g = gpd.read_file(sites, layer="sites")
    sites.unlink()
    g.iloc[::-1].to_file(sites, layer="sites", driver="GPKG")
    out = tmp_path / "out"
    res = run_cli("assess", str(tmp_path / "basin" / "tiny.yaml"), "--out", str(out),
                  "--chunk-size", "100")
    assert res.returncode == 0, res.stderr
    a, b = _digests(assessed), _digests(out)
    assert a.keys() == b.keys()
    differ = [k for k in a if a[k] != b[k]]
    assert not differ, differ


def test_identical_vintages_give_zero_credits(tiny, tmp_path):
    data = yaml.safe_load(tiny.read_text(encoding="utf-8"))
    data["landcover"][1]["path"] = data["landcover"][0]["path"]
    tiny.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    out = tmp_path / "out"
    res = run_cli("assess", str(tiny), "--out", str(out))
    assert res.returncode == 0, res.stderr
    credits = pd.read_csv(out / "tables" / "credits.csv")
    assert (credits["credit"] == 0).all() and (credits["debit"] == 0).all()
    assert (credits["score_pre"] == credits["score_post"]).all()


def test_unwritable_output_folder(tiny, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    res = run_cli("assess", str(tiny), "--out", str(blocker / "out"))
    assert res.returncode == 1
    assert "traceback" not in res.stderr.lower()
    assert "output folder" in res.stderr and "how to fix" in res.stderr
    assert blocker.read_text(encoding="utf-8") == "not a folder"


def test_disk_full_during_write_keeps_published_outputs(assessed, tiny_template, tmp_path):
    """Writes fail with EFBIG past a file-size limit (as on a full disk) mid-run."""
    shutil.copytree(tiny_template, tmp_path / "basin")
    out = tmp_path / "out"
    shutil.copytree(assessed, out)
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*")) if p.is_file()}

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    res = run_cli("assess", str(tmp_path / "basin" / "tiny.yaml"), "--out", str(out), preexec=limit)
    assert res.returncode == 1, res.stderr
    assert "traceback" not in res.stderr.lower(), res.stderr
    assert "disk space" in res.stderr, res.stderr
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["basin", "out"]
