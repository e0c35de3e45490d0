"""The content-addressed step cache (pipeline.cache): keys, atomic entries, debris, hashing."""

from __future__ import annotations

import os
import subprocess
import sys

import geopandas as gpd
import numpy as np
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.cache import HashMemo, StepCache, code_version, digest, frame_digest
from pipeline.runlog import sha256

scalars = st.one_of(st.integers(-10**6, 10**6), st.text(max_size=8), st.booleans(),
                    st.floats(allow_nan=False, allow_infinity=False))
docs = st.dictionaries(st.text(min_size=1, max_size=6), scalars, min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(docs, st.randoms())
def test_digest_ignores_key_order(doc, rnd):
    items = list(doc.items())
    rnd.shuffle(items)
    assert digest(dict(items)) == digest(doc)


@settings(max_examples=60, deadline=None)
@given(docs, st.data())
def test_digest_changes_with_any_value(doc, data):
    key = data.draw(st.sampled_from(sorted(doc)))
    new = data.draw(scalars.filter(lambda v: repr(v) != repr(doc[key]) and
                                   not (isinstance(v, bool) != isinstance(doc[key], bool))))
    changed = dict(doc, **{key: new})
    if str(changed[key]) == str(doc[key]) and type(new) is type(doc[key]):
        return
    assert digest(changed) != digest(doc)


def test_digest_known_value():
    # sha256 of the canonical JSON '{"a":1,"b":[2,"x"]}' (sorted keys, no spaces)
    import hashlib

    assert digest({"b": [2, "x"], "a": 1}) == hashlib.sha256(b'{"a":1,"b":[2,"x"]}').hexdigest()


def test_code_version_stable_and_scoped():
    assert code_version() == code_version()
    assert len(code_version(steps_only=True)) == 64
    assert code_version(steps_only=True) != code_version()


def test_frame_digest_sees_geometry_attributes_and_crs():
    g = gpd.GeoDataFrame({"site_id": ["a", "b"], "v": [1.0, np.nan]},
                         geometry=[shapely.box(0, 0, 1, 1), shapely.box(1, 1, 2, 2)], crs="EPSG:3857")
    base = frame_digest(g)
    assert frame_digest(g.copy()) == base
    moved = g.copy()
    moved.loc[1, "geometry"] = shapely.box(1, 1, 2, 2.5)
    assert frame_digest(moved) != base
    attr = g.copy()
    attr.loc[0, "v"] = 2.0
    assert frame_digest(attr) != base
    assert frame_digest(g.set_crs("EPSG:4326", allow_override=True)) != base
    assert frame_digest(None) is None


def test_put_get_restore_roundtrip(tmp_path):
    c = StepCache(tmp_path / "cache")
    src = tmp_path / "run"
    src.mkdir()
    (src / "a.tif").write_bytes(b"alpha")
    (src / "b.csv").write_text("x\n1\n")
    key = digest({"k": 1})
    assert c.get("step", key) is None and c.stats.misses == [f"step/{key[:12]}"]
    c.put("step", key, {"a.tif": src / "a.tif", "b.csv": src / "b.csv"}, {"paths": {"a": "a.tif"}})
    assert c.get("step", key) is not None and c.stats.hits == [f"step/{key[:12]}"]
    assert c.meta("step", key)["paths"] == {"a": "a.tif"}
    dest = tmp_path / "run2"
    got = c.restore("step", key, dest)
    assert sorted(got) == ["a.tif", "b.csv"]
    assert (dest / "a.tif").read_bytes() == b"alpha"
    # a second put of the same key keeps the first entry
    (src / "a.tif").unlink()
    (src / "a.tif").write_bytes(b"changed")
    c.put("step", key, {"a.tif": src / "a.tif"}, {})
    assert (c.entry("step", key) / "a.tif").read_bytes() == b"alpha"
    # no temporary folder left behind
    assert not [p for p in (tmp_path / "cache" / "step").iterdir() if p.name.startswith(".")]


def test_style_sidecars_of_an_entry_are_dropped_when_the_style_code_changed(tmp_path):
    """Step keys leave report/ out; a .qml kept in an entry is restored only while the
    styling code (pipeline.report.cog / styles) is the one that wrote it."""
    from pipeline.cache import style_code

    c = StepCache(tmp_path / "cache")
    src = tmp_path / "run"
    src.mkdir()
    (src / "a.tif").write_bytes(b"alpha")
    (src / "a.qml").write_text("<qgis/>")
    files = {"a.tif": src / "a.tif", "a.qml": src / "a.qml"}
    c.put("step", "now", files, {"style_code": style_code()})
    c.put("step", "old", files, {"style_code": "0" * 64})
    assert sorted(c.restore_styled("step", "now", tmp_path / "r1")) == ["a.qml", "a.tif"]
    assert (tmp_path / "r1" / "a.qml").is_file()
    assert sorted(c.restore_styled("step", "old", tmp_path / "r2")) == ["a.tif"]
    assert not (tmp_path / "r2" / "a.qml").exists()
    assert (c.entry("step", "old") / "a.qml").is_file()       # the entry itself is left as it is


def test_entries_no_recent_run_used_are_removed(tmp_path):
    """close() keeps what any of the last KEEP_RUNS runs used (every run restores every
    vintage's entries) and removes the rest: replaced inputs, an older code version."""
    from pipeline.cache import KEEP_RUNS

    src = tmp_path / "run"
    src.mkdir()
    (src / "a.tif").write_bytes(b"alpha")

    def run(puts=(), gets=()):
        c = StepCache(tmp_path / "cache")
        for step, key in puts:
            c.put(step, key, {"a.tif": src / "a.tif"}, {})
        for step, key in gets:
            assert c.get(step, key) is not None
        c.close()

    def entries():
        return sorted(f"{s.name}/{e.name}" for s in (tmp_path / "cache").iterdir() if s.is_dir()
                      for e in s.iterdir())

    run(puts=[("landscape", "v1"), ("landscape", "v2"), ("sites", "s1")])
    (tmp_path / "cache" / "blocks").mkdir()          # the block memo has its own budget
    run(puts=[("landscape", "v3")], gets=[("landscape", "v1"), ("sites", "s1")])   # v2 replaced by v3
    for _ in range(KEEP_RUNS - 1):
        assert "landscape/v2" in entries()
        run(gets=[("landscape", "v1"), ("landscape", "v3"), ("sites", "s1")])
    assert entries() == ["landscape/v1", "landscape/v3", "sites/s1"]
    assert (tmp_path / "cache" / "blocks").is_dir()
    # a damaged runs.json is started again (and prunes to what this run used)
    (tmp_path / "cache" / "runs.json").write_text("{", encoding="utf-8")
    run(gets=[("landscape", "v1")])
    assert entries() == ["landscape/v1"]


def test_half_written_entries_are_never_seen_and_debris_is_removed(tmp_path):
    root = tmp_path / "cache"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    key = digest({"k": 2})
    # a run killed while writing: the entry exists only under its temporary name
    debris = root / "step" / f".{key}.tmp-{dead_pid}"
    debris.mkdir(parents=True)
    (debris / "meta.json").write_text("{}")
    live = root / "step" / f".{key}.tmp-{os.getppid()}"     # a live process: left alone
    live.mkdir()
    c = StepCache(root)
    assert c.get("step", key) is None
    assert not debris.exists()
    assert live.exists()


def test_hash_memo_rehashes_changed_files(tmp_path):
    f = tmp_path / "f.bin"
    f.write_bytes(b"one")
    memo_file = tmp_path / "hashes.json"
    m = HashMemo(memo_file)
    assert m(f) == sha256(f)
    m.save()
    m2 = HashMemo(memo_file)
    assert m2.memo and m2(f) == sha256(f) and not m2.dirty     # served from the memo
    f.write_bytes(b"two, longer")                              # size and mtime change
    assert m2(f) == sha256(f) and m2.dirty


def _source_raster(path, values):
    import rasterio
    from rasterio.transform import from_origin
    with rasterio.open(path, "w", driver="GTiff", width=values.shape[1], height=values.shape[0], count=1,
                       dtype=values.dtype, crs="EPSG:32650", transform=from_origin(500000, 4400000, 30, 30),
                       nodata=0) as dst:
        dst.write(values, 1)


def test_aligned_rasters_are_reused_only_for_the_same_source_grid_and_options(tmp_path):
    from pipeline.io.grid import Grid
    from pipeline.io.rasters import align_raster

    rng = np.random.default_rng(7)
    src = tmp_path / "lc.tif"
    _source_raster(src, rng.integers(1, 6, size=(40, 50)).astype("int32"))
    grid = Grid.from_bounds("EPSG:32650", (500100, 4398900, 501400, 4399900), 60)
    opts = {"categorical": True, "dtype": "int32", "dst_nodata": -1, "src_nodata": 0, "chunk_rows": 7}
    calls = []

    def compute(*args, **kw):
        calls.append(args[0])
        return align_raster(*args, **kw)

    c = StepCache(tmp_path / "cache")
    first = c.aligned(src, grid, tmp_path / "run1" / "lc.tif", dict(opts), compute)
    c.close()
    c2 = StepCache(tmp_path / "cache")              # the next run: a new StepCache, memo from disk
    again = c2.aligned(src, grid, tmp_path / "run2" / "lc.tif", dict(opts), compute)
    assert len(calls) == 1 and again.read_bytes() == first.read_bytes()
    assert c2.hashes(again) == sha256(first)        # seeded: the step keys see the right digest
    # any change of source bytes, grid or options aligns again
    c2.aligned(src, Grid.from_bounds("EPSG:32650", grid.bounds, 90), tmp_path / "g.tif", dict(opts), compute)
    c2.aligned(src, grid, tmp_path / "o.tif", dict(opts, src_nodata=None), compute)
    _source_raster(src, rng.integers(1, 6, size=(40, 50)).astype("int32"))
    c2.aligned(src, grid, tmp_path / "s.tif", dict(opts), compute)
    assert len(calls) == 4


def test_hash_memo_by_inode_follows_hard_links_and_keeps_what_was_asked(tmp_path):
    """An output memo: a hard link under another path is served from the memo; a file
    replaced by rename (a new inode) is hashed again; save keeps the files asked for."""
    import json
    import os

    a = tmp_path / "run1" / "a.tif"
    b = tmp_path / "run1" / "b.tif"
    a.parent.mkdir()
    a.write_bytes(b"alpha")
    b.write_bytes(b"beta")
    memo_file = tmp_path / "output_hashes.json"
    m = HashMemo(memo_file, by_inode=True)
    assert m(a) == sha256(a) and m(b) == sha256(b)
    m.save()
    run2 = tmp_path / "run2"
    run2.mkdir()
    os.link(a, run2 / "a.tif")                                 # restored from the cache
    (run2 / "b.tif").write_bytes(b"beta")                      # written again: a new inode
    m2 = HashMemo(memo_file, by_inode=True)
    assert m2(run2 / "a.tif") == sha256(a) and not m2.dirty    # served from the memo
    tmp = run2 / ".c.tmp"
    tmp.write_bytes(b"gamma")
    os.replace(tmp, run2 / "a.tif")                            # replaced by rename
    assert m2(run2 / "a.tif") == sha256(run2 / "a.tif") != sha256(a)
    m2.save()
    kept = json.loads(memo_file.read_text(encoding="utf-8"))
    asked = [(run2 / "a.tif").stat(), a.stat()]                # both were asked for; b was not
    assert sorted(kept) == sorted(f"{st.st_dev}:{st.st_ino}" for st in asked)
