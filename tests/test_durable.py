"""Durable writes (pipeline.io.durable): data flushed before the rename that shows it.

A power cut cannot be staged in a test; what can be checked is the order of the
system calls. os.fsync and os.replace/os.rename/os.unlink are recorded, with each fd
resolved to its path through /proc/self/fd."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.cache import StepCache
from pipeline.config import LandcoverVintage
from pipeline.io import durable
from pipeline.io.outputs import Publisher
from pipeline.reprocess import Candidate, StorePaths, register

needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd (Linux)")


@pytest.fixture
def calls(monkeypatch):
    """[("fsync", path) | ("replace", src, dst) | ("unlink", path), ...] in call order."""
    log: list[tuple] = []
    fsync, unlink = os.fsync, Path.unlink

    def rec_fsync(fd):
        log.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return fsync(fd)

    def recorded(move):
        def rec(src, dst, **kw):
            log.append(("replace", str(src), str(dst)))
            return move(src, dst, **kw)
        return rec


    def rec_unlink(self, missing_ok=False):
        log.append(("unlink", str(self)))
        return unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(os, "fsync", rec_fsync)
    monkeypatch.setattr(os, "replace", recorded(os.replace))
    monkeypatch.setattr(os, "rename", recorded(os.rename))
    monkeypatch.setattr(Path, "unlink", rec_unlink)
    monkeypatch.delenv("ECOCREDIT_FSYNC", raising=False)
    return log


def _index(log, *entry):
    return log.index(entry)


@needs_proc
def test_publication_flushes_every_staged_file_before_the_swap(tmp_path, calls):
    out = tmp_path / "outputs" / "basin"
    out.mkdir(parents=True)
    (out / "old.txt").write_text("previous run")
    with Publisher(out, "basin") as pub:
        staging = pub.staging
        files = [staging / "run.log", staging / "indicators" / "y2024" / "a.tif", staging / "report" / "index.html"]
        for f in files:
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(os.urandom(1000))
        calls.clear()
        pub.publish()
    swap = _index(calls, "replace", str(staging), str(out.resolve()))
    flushed = {c[1] for c in calls[:swap] if c[0] == "fsync"}
    for p in files + [staging, staging / "indicators", staging / "indicators" / "y2024", staging / "report"]:
        assert str(p) in flushed, p
    assert ("fsync", str(out.resolve().parent)) in calls[swap:]      # the new name itself
    assert (out / "run.log").is_file() and not (out / "old.txt").exists()


@needs_proc
def test_imagery_is_on_the_disk_before_it_leaves_the_inbox(tmp_path, calls):
    inbox, store = tmp_path / "inbox", StorePaths(tmp_path / "store")
    inbox.mkdir()
    src = inbox / "landcover_2024.tif"
    src.write_bytes(os.urandom(5000))
    v = LandcoverVintage(name="y2024", year=2024, path=src, scheme="clcd")
    entry = register(Candidate(src, None), v, "0" * 64, store, [])
    dst = store.root / entry["path"]
    assert dst.is_file() and not src.exists()
    gone = _index(calls, "unlink", str(src))
    shown = next(i for i, c in enumerate(calls) if c[0] == "replace" and c[2] == str(dst))
    tmp = calls[shown][1]
    before = calls[:shown]
    assert ("fsync", tmp) in before                                   # data before its name
    assert ("fsync", str(dst.parent)) in calls[shown:gone]            # name before the inbox copy goes
    reg = next(i for i, c in enumerate(calls) if c[0] == "replace" and c[2] == str(store.registry))
    assert reg < gone and ("fsync", str(store.root)) in calls[reg:gone]   # and the registry entry


@needs_proc
def test_cache_entry_files_flushed_before_the_entry_appears(tmp_path, calls):
    cache = StepCache(tmp_path / "cache")
    src = tmp_path / "result.tif"
    src.write_bytes(os.urandom(2000))
    final = cache.put("hydrology", "k" * 64, {"result.tif": src}, {"what": "test"})
    shown = next(i for i, c in enumerate(calls) if c[0] == "replace" and c[2] == str(final))
    tmp = Path(calls[shown][1])
    flushed = {c[1] for c in calls[:shown] if c[0] == "fsync"}
    assert {str(tmp / "result.tif"), str(tmp / "meta.json"), str(tmp)} <= flushed
    assert ("fsync", str(final.parent)) in calls[shown:]


def test_write_text_leaves_no_temporary_file_on_error(tmp_path, monkeypatch):
    target = tmp_path / "a.json"

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="No space"):
        durable.write_text(target, "{}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", ["0", "off", "no"])
def test_fsync_can_be_turned_off(tmp_path, monkeypatch, value):
    monkeypatch.setenv("ECOCREDIT_FSYNC", value)
    monkeypatch.setattr(os, "fsync", lambda fd: pytest.fail("fsync called although ECOCREDIT_FSYNC=0"))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    assert durable.sync_tree(tmp_path) == 0
    durable.write_text(tmp_path / "g.txt", "y")
    assert (tmp_path / "g.txt").read_text() == "y"


def test_sync_tree_counts_files_and_folders(tmp_path, monkeypatch):
    monkeypatch.delenv("ECOCREDIT_FSYNC", raising=False)
    (tmp_path / "a" / "b").mkdir(parents=True)
    for p in (tmp_path / "x", tmp_path / "a" / "y", tmp_path / "a" / "b" / "z"):
        p.write_text("1")
    os.symlink(tmp_path / "x", tmp_path / "link")        # links are not followed
    assert durable.sync_tree(tmp_path) == 3 + 3


@needs_proc
def test_memo_block_flushed_before_it_is_named(tmp_path, calls):
    import numpy as np

    from pipeline.cache import BlockMemo

    memo = BlockMemo(tmp_path / "blocks")
    out = memo("test.double", lambda b: b * 2, (np.arange(12.0).reshape(3, 4),), {})
    assert out.sum() == 132.0
    shown = next(i for i, c in enumerate(calls) if c[0] == "replace" and c[2].endswith(".npy"))
    assert ("fsync", calls[shown][1]) in calls[:shown]
