"""Inbox conventions and the basin lock of pipeline.reprocess (fast unit tests)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import SCHEMES_DIR
from pipeline.errors import InputDataError
from pipeline.reprocess import (BasinLock, Candidate, Declared, LockHeld, declare, kind_of, scan_inbox,
                                stale_reason)

SCHEMES = sorted(p.stem for p in SCHEMES_DIR.glob("*.yaml") if p.stem != "canonical")


def _dead_pid() -> int:
    r = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                       text=True, check=True)
    return int(r.stdout)


# ---------------------------------------------------------------------------------- naming
@settings(max_examples=80, deadline=None)
@given(st.integers(1970, 2100), st.sampled_from(SCHEMES), st.sampled_from([".tif", ".TIF", ".tiff"]))
def test_name_declares_year_and_scheme(year, scheme, ext):
    d = declare(Candidate(Path(f"landcover_{year}_{scheme}{ext}"), None), "clcd")
    assert d == Declared(name=f"y{year}", year=year, scheme=scheme)


@settings(max_examples=40, deadline=None)
@given(st.integers(1970, 2100), st.sampled_from(SCHEMES))
def test_scheme_defaults_to_the_newest_vintage(year, default):
    assert declare(Candidate(Path(f"landcover_{year}.tif"), None), default) == \
        Declared(f"y{year}", year, default)


def test_sidecar_overrides_the_name(tmp_path):
    f = tmp_path / "GLC_FCS30_2024_v2.tif"
    f.write_bytes(b"")
    side = tmp_path / "GLC_FCS30_2024_v2.tif.yaml"
    side.write_text("year: 2024\nscheme: esa_worldcover\nname: esa2024\n")
    assert declare(Candidate(f, side), "clcd") == Declared("esa2024", 2024, "esa_worldcover")
    # a <stem>.yaml sidecar is found too
    side.unlink()
    (tmp_path / "GLC_FCS30_2024_v2.yaml").write_text("year: 2022\n")
    (c,) = scan_inbox(tmp_path, settle_s=0)
    assert c.sidecar == tmp_path / "GLC_FCS30_2024_v2.yaml"
    assert declare(c, "clcd") == Declared("y2022", 2022, "clcd")


@settings(max_examples=40, deadline=None)
@given(st.integers(1970, 2100), st.sampled_from([".tif", ".TIF", ".tiff"]))
def test_dem_name_declares_an_as_built_dem(year, ext):
    assert declare(Candidate(Path(f"dem_{year}{ext}"), None), "clcd") == \
        Declared(f"y{year}", year, "", kind="dem")


def test_dem_sidecar_declares_kind_year_and_vintage(tmp_path):
    f = tmp_path / "survey_after_works.tif"
    f.write_bytes(b"")
    side = tmp_path / "survey_after_works.tif.yaml"
    side.write_text("kind: dem\nyear: 2024\nname: esa2024\n")
    c = Candidate(f, side)
    assert kind_of(c) == "dem"
    assert declare(c, "clcd") == Declared("esa2024", 2024, "", kind="dem")
    side.write_text("kind: dem\nyear: 2024\nscheme: clcd\n")
    with pytest.raises(InputDataError, match="no land-cover scheme"):
        declare(c, "clcd")
    side.write_text("kind: lidar\nyear: 2024\n")
    with pytest.raises(InputDataError, match="kind 'lidar'") as exc:
        declare(c, "clcd")
    assert exc.value.field == "kind" and kind_of(c) == "landcover"


@pytest.mark.parametrize("name, sidecar, message", [
    ("scan.tif", None, "does not say the year"),
    ("landcover_24.tif", None, "does not say the year"),
    ("report.pdf", None, "not a GeoTIFF"),
    ("x.tif", "year: [2024]\n", "not a whole number"),
    ("x.tif", "year: 2024\ncolour: red\n", "unknown key(s) ['colour']"),
    ("x.tif", "- 2024\n", "must be a YAML mapping"),
])
def test_undeclared_files_raise_a_clear_error(tmp_path, name, sidecar, message):
    f = tmp_path / name
    f.write_bytes(b"")
    side = None
    if sidecar is not None:
        side = tmp_path / f"{name}.yaml"
        side.write_text(sidecar)
    with pytest.raises(InputDataError) as exc:
        declare(Candidate(f, side), "clcd")
    assert message in str(exc.value) and exc.value.fix


def test_scan_skips_hidden_partial_sidecars_and_fresh_files(tmp_path):
    old = time.time() - 600
    for n in ("landcover_2024.tif", ".landcover_2025.tif", "landcover_2026.tif.part",
              "landcover_2024.tif.yaml", "notes.txt", "a.tif.aux.xml"):
        (tmp_path / n).write_bytes(b"")
        os.utime(tmp_path / n, (old, old))
    (tmp_path / "landcover_2027.tif").write_bytes(b"")         # just arrived: wait
    (tmp_path / "quarantine").mkdir()
    got = scan_inbox(tmp_path, settle_s=5)
    assert [c.path.name for c in got] == ["landcover_2024.tif"]
    assert got[0].sidecar == tmp_path / "landcover_2024.tif.yaml"


# ---------------------------------------------------------------------------------- lock
def test_lock_is_exclusive_and_released(tmp_path):
    path = tmp_path / "reprocess.lock"
    with BasinLock(path) as lock:
        held = json.loads(path.read_text())
        assert held["pid"] == os.getpid() and held["hostname"] == socket.gethostname()
        assert held["started"] and lock.held
        with pytest.raises(LockHeld) as exc:        # a second run of the same basin
            BasinLock(path).acquire()
        assert str(os.getpid()) in str(exc.value) and exc.value.exit_code == 1
    assert not path.exists()


def test_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    path = tmp_path / "reprocess.lock"
    pid = _dead_pid()
    path.write_text(json.dumps({"pid": pid, "hostname": socket.gethostname(),
                                "started": "2026-01-01T00:00:00+00:00", "started_epoch": time.time()}))
    assert "no longer running" in stale_reason(json.loads(path.read_text()))
    with caplog.at_level(logging.WARNING), BasinLock(path):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert "stale lock" in caplog.text


def test_lock_with_a_reused_pid_is_stale(tmp_path):
    # our own pid, but the lock claims to be older than this process: the pid was reused
    me = {"pid": os.getpid(), "hostname": socket.gethostname(), "started_epoch": 1000.0}
    assert "started after the lock" in stale_reason(me)
    me["started_epoch"] = time.time()
    assert stale_reason(me) is None


def test_lock_of_another_host_is_never_broken(tmp_path):
    path = tmp_path / "reprocess.lock"
    path.write_text(json.dumps({"pid": _dead_pid(), "hostname": "other-host.example",
                                "started": "2026-01-01T00:00:00+00:00", "started_epoch": 0}))
    with pytest.raises(LockHeld) as exc:
        BasinLock(path).acquire()
    assert "other-host.example" in str(exc.value) and "delete the lock file" in exc.value.fix


def test_unreadable_lock_is_stale(tmp_path):
    path = tmp_path / "reprocess.lock"
    path.write_text("")
    with BasinLock(path):
        assert json.loads(path.read_text())["pid"] == os.getpid()
