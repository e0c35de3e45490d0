"""The reprocess benchmark's saved state (bench.reprocess, --repeat): each timed pass
starts from the same files, with the hard links between outputs and cache kept."""

from __future__ import annotations

import os

from bench.reprocess import _restore_state, _save_state


def test_saved_state_is_restored_with_its_hard_links(tmp_path):
    work = tmp_path / "bench-reprocess-x"
    (work / "outputs" / ".cache" / "landscape").mkdir(parents=True)
    (work / "outputs" / "basin").mkdir()
    entry = work / "outputs" / ".cache" / "landscape" / "a.tif"
    entry.write_bytes(b"raster")
    os.link(entry, work / "outputs" / "basin" / "a.tif")         # published = cache entry
    (work / "inbox").mkdir()
    (work / "inbox" / "landcover_2024.tif").write_bytes(b"new")
    saved = _save_state(work)
    # a pass changes things: registers the inbox file, publishes anew
    (work / "inbox" / "landcover_2024.tif").unlink()
    (work / "outputs" / "basin" / "a.tif").unlink()
    (work / "outputs" / "basin" / "b.tif").write_bytes(b"other")
    _restore_state(saved, work)
    assert (work / "inbox" / "landcover_2024.tif").read_bytes() == b"new"
    assert sorted(p.name for p in (work / "outputs" / "basin").iterdir()) == ["a.tif"]
    a, e = work / "outputs" / "basin" / "a.tif", work / "outputs" / ".cache" / "landscape" / "a.tif"
    assert a.stat().st_ino == e.stat().st_ino and a.read_bytes() == b"raster"
    assert saved.is_dir()                                         # ready for the next pass
