"""What a run does before its first step, done once and quickly, with the same results:
YAML parsed by libyaml when PyYAML has it (pipeline.config.parse_yaml), the class tables
and the rulebook validated once per process and content, the land-cover codes counted
(not sorted), a vintage copied into the data store not read again, versions without
importing numba."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin

from pipeline import config as pconfig
from pipeline.errors import ConfigError
from pipeline.io import classes, ingest
from pipeline.io.scans import copied, scan_memo
from pipeline.scoring import rulebook

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "configs").glob("*.yaml")) + sorted((REPO / "configs" / "landcover").glob("*.yaml"))


@pytest.fixture
def no_libyaml(monkeypatch):
    """PyYAML without its C extension (yaml.CSafeLoader missing); nothing loaded before."""
    monkeypatch.setattr(pconfig, "FAST_LOADER", None)
    monkeypatch.setattr(classes, "_CANONICAL", {})
    monkeypatch.setattr(classes, "_SCHEMES", {})
    monkeypatch.setattr(rulebook, "_LOADED", {})


def _typed(value):
    if isinstance(value, dict):
        return {repr(k): _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return f"{type(value).__name__}:{value!r}"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_libyaml_gives_the_values_of_the_pure_python_loader(path):
    text = path.read_text(encoding="utf-8")
    assert _typed(pconfig.parse_yaml(text)) == _typed(yaml.safe_load(text))


def test_libyaml_is_used_when_present():
    assert yaml.__with_libyaml__ and pconfig.FAST_LOADER is yaml.CSafeLoader


def test_without_libyaml_the_pure_python_loader_parses(no_libyaml, monkeypatch):
    loaders = []
    load = yaml.load
    monkeypatch.setattr(yaml, "load", lambda stream, Loader: loaders.append(Loader) or load(stream, Loader))
    text = (REPO / "configs" / "scoring.yaml").read_text(encoding="utf-8")
    assert _typed(pconfig.parse_yaml(text)) == _typed(yaml.safe_load(text))
    assert loaders and yaml.CSafeLoader not in loaders


def test_without_libyaml_everything_loads_the_same(no_libyaml, monkeypatch):
    cfg = pconfig.load_config(REPO / "configs" / "yongding.yaml")
    book = rulebook.load_rulebook()
    canonical = classes.load_canonical()
    schemes = {n: classes.load_scheme(n) for n in classes.available_schemes()}
    monkeypatch.setattr(pconfig, "FAST_LOADER", yaml.CSafeLoader)
    for memo in (classes._CANONICAL, classes._SCHEMES, rulebook._LOADED):
        memo.clear()
    assert pconfig.load_config(REPO / "configs" / "yongding.yaml") == cfg
    assert rulebook.load_rulebook() == book
    fast = classes.load_canonical()
    assert fast is not canonical and fast.classes == canonical.classes and fast.hj192 == canonical.hj192
    for name, s in schemes.items():
        f = classes.load_scheme(name)
        assert (f.name, f.product, f.nodata_codes, f.labels) == (s.name, s.product, s.nodata_codes, s.labels)
        for a in ("codes", "canonical", "weight"):
            np.testing.assert_array_equal(getattr(f, a), getattr(s, a))


# ------------------------------------------------------------------ errors as before
BROKEN = {
    "flow": "basin: {name: x\ncrs: EPSG:3857\n",
    "indent": "rules:\n  - id: WQ-S1\n   function: WQ\n",
    "tab": "a:\n\tb: 1\n",
    "colon": "a: b: c\n",
    "alias": "a: *nowhere\n",
    "tag": "a: !!python/object:os.system ls\n",
}


def _errors(tmp_path: Path, text: str) -> list[str]:
    """The messages of every loader given the broken `text`."""
    out = []
    for name, load in (("config", pconfig.load_config), ("rulebook", rulebook.load_rulebook),
                       ("table", classes.load_canonical)):
        p = tmp_path / f"{name}.yaml"
        p.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError) as exc:
            load(p)
        out.append(exc.value.render())
    return out


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_yaml_errors_read_as_with_the_pure_python_loader(tmp_path, monkeypatch, case):
    fast = _errors(tmp_path, BROKEN[case])
    monkeypatch.setattr(pconfig, "FAST_LOADER", None)
    assert fast == _errors(tmp_path, BROKEN[case])
    assert "table.yaml" in fast[2] and "line" in fast[1] and "line" in fast[0]


def test_a_config_error_still_names_its_line(tmp_path):
    src = (REPO / "configs" / "yongding.yaml").read_text(encoding="utf-8")
    p = tmp_path / "c.yaml"
    p.write_text(src.replace("resolution_m: 30", "resolutoin_m: 30"), encoding="utf-8")
    with pytest.raises(Exception) as exc:
        pconfig.load_config(p)
    line = 1 + next(i for i, t in enumerate(src.splitlines()) if t.startswith("resolution_m"))
    assert f"line {line}: unknown key 'resolutoin_m' (did you mean 'resolution_m'?)" in str(exc.value.render())


# ------------------------------------------------------------------ loaded once per content
def test_rulebook_is_validated_once_per_content(tmp_path, caplog):
    p = tmp_path / "scoring.yaml"
    shutil.copy(rulebook.DEFAULT_PATH, p)
    with caplog.at_level(logging.DEBUG, logger="pipeline.scoring.rulebook"):
        a, b = rulebook.load_rulebook(p), rulebook.load_rulebook(p)
    assert a is b
    assert [r.message for r in caplog.records].count(f"scoring rulebook {p}: 33 rules, 19 parameters") == 2
    text = p.read_text(encoding="utf-8")
    value = a.parameters["near_buffer_m"].value
    changed = text.replace(f"value: {value:g}", f"value: {value + 1:g}", 1)   # same size or not: read again
    assert changed != text
    p.write_text(changed, encoding="utf-8")
    assert rulebook.load_rulebook(p).parameters["near_buffer_m"].value == value + 1


def test_tables_are_validated_once_per_content(tmp_path):
    for f in ("canonical.yaml", "clcd.yaml"):
        shutil.copy(classes.LANDCOVER_DIR / f, tmp_path / f)
    canonical = classes.load_canonical(tmp_path / "canonical.yaml")
    assert classes.load_canonical(tmp_path / "canonical.yaml") is canonical
    s = classes.load_scheme(tmp_path / "clcd.yaml", canonical)
    assert classes.load_scheme(tmp_path / "clcd.yaml", canonical) is s
    assert classes.load_scheme("clcd") is classes.load_scheme("clcd")
    p = tmp_path / "clcd.yaml"
    raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    code = min(raw["classes"])
    raw["classes"][code]["label"] = "changed"
    p.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    again = classes.load_scheme(p, canonical)
    assert again.labels[0] == "changed" and s.labels[0] != "changed"
    other = classes.load_canonical()                # another table object: its own validation
    assert classes.load_scheme(p, other) is not again


def test_a_broken_table_fails_every_time(tmp_path):
    p = tmp_path / "canonical.yaml"
    p.write_text("version: [1\n", encoding="utf-8")
    for _ in range(2):
        with pytest.raises(ConfigError, match="not valid YAML"):
            classes.load_canonical(p)


# ------------------------------------------------------------------ land-cover codes
def _raster(path: Path, a: np.ndarray, nodata=None) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=a.shape[1], height=a.shape[0], count=1,
                       dtype=a.dtype, crs="EPSG:32650", transform=from_origin(500000, 4400000, 30, 30),
                       nodata=nodata, tiled=True, blockxsize=64, blockysize=64) as dst:
        dst.write(a, 1)
    return path


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "int32", "uint32"])
@pytest.mark.parametrize("seed", [0, 1])
def test_codes_are_the_distinct_values(tmp_path, dtype, seed):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    # a few codes, the extremes of the type, and per block its own mix (130 x 200: 4 x 3 blocks)
    pool = np.array([info.min, info.max, 0, 1, 7] + list(rng.integers(info.min, info.max, 5, endpoint=True)),
                    dtype=dtype)
    a = pool[rng.integers(0, 4, (130, 200))]
    a[70:, 130:] = pool[rng.integers(4, len(pool), (60, 70))]
    got = ingest._codes(_raster(tmp_path / "lc.tif", a), "lc")
    assert got == frozenset(np.unique(a).tolist())
    assert all(type(c) is int for c in got)


def test_codes_by_hand(tmp_path):
    a = np.full((70, 70), 3, np.int16)
    a[0, 0], a[69, 69], a[65, 2] = -32768, -1, 300      # -1 and -32768: bit patterns 0xffff, 0x8000
    assert ingest._codes(_raster(tmp_path / "lc.tif", a), "lc") == frozenset({-32768, -1, 3, 300})


# ------------------------------------------------------------------ the data store copy
def test_a_copy_into_the_store_is_not_read_again(tmp_path, monkeypatch):
    n = {"codes": 0}
    codes = ingest._codes
    monkeypatch.setattr(ingest, "_codes", lambda *a: n.__setitem__("codes", n["codes"] + 1) or codes(*a))
    lc = _raster(tmp_path / "lc.tif", np.resize(np.array([1, 2, 3, 4, 5], np.uint8), (100, 90)), nodata=0)
    store = tmp_path / "store.tif"
    with scan_memo():
        ingest._check_landcover(SimpleNamespace(name="y2024", path=lc, scheme="clcd"), None)
        shutil.copy2(lc, store)
        copied(lc, store)
        ingest._check_landcover(SimpleNamespace(name="y2024", path=store, scheme="clcd"), None)
        assert n["codes"] == 1
        other = tmp_path / "other.tif"
        shutil.copy(lc, other)                          # modification time not kept: read
        copied(lc, other)
        ingest._check_landcover(SimpleNamespace(name="y2024", path=other, scheme="clcd"), None)
        assert n["codes"] == 2
    copied(lc, store)                                   # outside a pass: nothing to do
    ingest._check_landcover(SimpleNamespace(name="y2024", path=store, scheme="clcd"), None)
    assert n["codes"] == 3


# ------------------------------------------------------------------ versions
def test_versions_are_exact_without_importing_numba():
    """In a fresh interpreter: numba's version from its metadata, equal to numba.__version__."""
    code = ("import sys, json, importlib.metadata as md; from pipeline.runlog import versions; "
            "v = versions(); imported = 'numba' in sys.modules; import numba; "
            "print(json.dumps([v['numba'], md.version('numba'), numba.__version__, imported]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    recorded, metadata, module, imported = json.loads(proc.stdout.splitlines()[-1])
    assert recorded == metadata == module and not imported


def test_versions_once_everything_is_imported_equal_the_metadata():
    import importlib.metadata

    import numba  # noqa: F401 - the state of a run after its steps

    from pipeline.runlog import versions

    v = versions()
    for name in ("numpy", "numba", "dask", "rasterio", "pyproj", "shapely", "geopandas", "pyogrio",
                 "xarray", "rioxarray", "distributed", "scipy", "pandas"):
        assert v[name] == importlib.metadata.version(name), name
