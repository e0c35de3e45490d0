"""Reprocessing benchmark: a new vintage that differs in one chunk vs a full assessment.

    python -m bench reprocess [--scale 4] [--chunk 128] [--out outputs/bench] [--keep] [--repeat 3]
    python -m bench reprocess --basin large [--cells 5e7] [--sites 200]

The demo basin (configs/yongding.yaml) is used when its data are present;
otherwise the generated tiny basin (pipeline.demo) is built at `--scale` times its
size in each direction (scale 4: 400 x 480 cells of 30 m) - the JSON says which.
``--basin large`` uses the synthetic basin of ``bench large`` (generated once into
``<out>/reprocess_large_basin/``) to see how the ratio behaves at scale; its result
goes to ``<out>/reprocess_large.json``.

1. the basin is given an inbox and reprocessed once (the state before new imagery);
2. a 2024 land cover equal to the newest vintage except inside one chunk is dropped
   into the inbox and ``python -m pipeline reprocess`` is timed (fresh process);
3. ``python -m pipeline reprocess`` again with nothing new (idle run) is timed;
4. ``python -m pipeline assess`` of the same three vintages without the cache, into a
   fresh folder, is timed (fresh process);
5. a 2025 land cover with the same cells as the 2024 one (re-encoded, so a new file) is
   dropped into the inbox and reprocessed: its indicators are the 2024 ones (the step
   cache keys the aligned cells, not the file), so the run only scores, draws and
   publishes. That time is the floor of any reprocess of a new vintage, however small
   its change (``floor_ratio``; against the 3-vintage assess, while it publishes 4).

With ``--repeat N`` steps 2, 4 and 5 are timed N times, each reprocess from a copy of
the state before it and each full assessment right after a new-vintage pass (the
machine drifts), and the medians are reported (all values are kept in the JSON).

Writes ``<out>/reprocess.json`` (wall times, ratio reprocess / full, what the reprocess
reused, per-step timings from both manifests) and prints a summary. Target: ratio <= 0.20.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
TARGET_RATIO = 0.20


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench reprocess", description=__doc__.split("\n")[0])
    p.add_argument("--scale", type=int, default=4, help="size factor of the generated basin")
    p.add_argument("--chunk", type=int, default=128, help="chunk size (cells)")
    p.add_argument("--out", type=Path, default=REPO / "outputs" / "bench")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--basin", choices=("auto", "demo", "generated", "large"), default="auto",
                   help="demo: configs/yongding.yaml (its chunk size); generated: pipeline.demo at "
                        "--scale with --chunk; large: the synthetic basin of `bench large` at "
                        "--cells (its chunk size, 4096); auto: demo when its data are present")
    p.add_argument("--cells", type=float, default=5e7, help="cells of the large basin (--basin large)")
    p.add_argument("--sites", type=int, default=200, help="sites of the large basin (--basin large)")
    p.add_argument("--repeat", type=int, default=1,
                   help="time the new-vintage pass, the full assessment and the floor pass this many "
                        "times (each pass from the same saved state, the full assessment interleaved "
                        "with the new-vintage pass) and report medians; the machine's speed varies "
                        "by 10-25 %% within minutes")
    return p


def main(argv: list[str] | None = None) -> int:
    return run(_parser().parse_args(argv))


def _cli(*args: str) -> float:
    env = dict(os.environ)
    env.pop("ECOCREDIT_PROGRESS", None)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=REPO, env=env,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"pipeline {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-4000:]}")
    return wall


def _with_inbox(src: Path, folder: Path) -> Path:
    """A copy of the configuration `src` in `folder` with absolute input paths, an inbox
    and a store in `folder`."""
    data = yaml.safe_load(src.read_text(encoding="utf-8"))
    base = src.parent.resolve()
    for key in ("dem", "boundary"):
        data[key]["path"] = str((base / data[key]["path"]).resolve())
    for v in data["landcover"]:
        v["path"] = str((base / v["path"]).resolve())
    data["sites"]["path"] = str((base / data["sites"]["path"]).resolve())
    for lay in data.get("layers", {}).values():
        lay["path"] = str((base / lay["path"]).resolve())
    data["inbox"] = str(folder / "inbox")
    data["store"] = str(folder / "store")
    cfg = folder / src.name
    cfg.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    (folder / "inbox").mkdir()
    return cfg


def _build_basin(folder: Path, scale: int, chunk: int, which: str, args=None) -> tuple[Path, str]:
    """The basin configuration to use, and a description of it."""
    if which == "large":
        from bench.large import ensure_basin

        gen = argparse.Namespace(cells=args.cells, seed=1, sites=args.sites, regenerate=False, interval=0.5)
        basin_dir = args.out / "reprocess_large_basin"
        info = ensure_basin(gen, basin_dir)
        return (_with_inbox(basin_dir / "large.yaml", folder),
                f"synthetic large basin {info['key']} (scripts/make_large_basin.py)")
    demo = REPO / "configs" / "yongding.yaml"
    data = yaml.safe_load(demo.read_text(encoding="utf-8"))
    dem = (demo.parent / data["dem"]["path"]).resolve()
    if which == "demo" and not dem.is_file():
        raise FileNotFoundError(f"the demo data are not there ({dem}); build them or use --basin generated")
    if which != "generated" and dem.is_file():
        return _with_inbox(demo, folder), "demo basin configs/yongding.yaml"
    import pipeline.demo as demo_mod

    h0, w0 = demo_mod.H, demo_mod.W
    demo_mod.H, demo_mod.W = h0 * scale, w0 * scale   # module constants read at call time
    try:
        cfg = demo_mod.build_tiny_basin(folder / "basin")
    finally:
        demo_mod.H, demo_mod.W = h0, w0
    data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    data["inbox"] = "inbox"
    data["processing"] = {"chunk_size": chunk}
    cfg.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    (cfg.parent / "inbox").mkdir()
    why = "chosen with --basin generated" if which == "generated" else \
        "the demo data of configs/yongding.yaml are not present"
    return cfg, (f"generated tiny basin (pipeline.demo) at scale {scale}: {h0 * scale} x {w0 * scale} "
                 f"cells of 30 m ({why})")


def _one_chunk_change(cfg_path: Path, chunk: int, dst: Path) -> dict:
    """Newest vintage with one rectangle of land cover converted, inside one chunk.

    The rectangle is the central half of chunk (1, 1) (away from the basin edge),
    converted to the raster's most common class other than the rectangle's own
    majority: a realistic restoration / development footprint (a salt-and-pepper
    change would instead fragment the natural patches, which tests the connectivity
    graph, not reprocessing).
    """
    import rasterio

    from pipeline.config import load_config

    cfg = load_config(cfg_path)
    newest = cfg.landcover[-1]
    with rasterio.open(newest.path) as src:
        a = src.read(1)
        prof = src.profile
    nodata = prof.get("nodata")
    r0, c0 = chunk + chunk // 4, chunk + chunk // 4
    r1, c1 = min(r0 + chunk // 2, a.shape[0]), min(c0 + chunk // 2, a.shape[1])
    block = a[r0:r1, c0:c1]
    valid = a[a != nodata] if nodata is not None else a.ravel()
    codes, counts = np.unique(valid, return_counts=True)
    bc, bn = np.unique(block, return_counts=True)
    own = bc[np.argmax(bn)]
    order = [c for c in codes[np.argsort(-counts)] if c != own]
    new = order[0]
    keep = block == nodata if nodata is not None else np.zeros(block.shape, bool)
    n = int(((block != new) & ~keep).sum())
    block[~keep] = new
    with rasterio.open(dst, "w", **prof) as d:
        d.write(a, 1)
    old = time.time() - 3600
    os.utime(dst, (old, old))
    return {"rows": [int(r0), int(r1)], "cols": [int(c0), int(c1)], "cells_changed": n,
            "new_code": int(new), "from_vintage": newest.name}


def _same_cells(src: Path, dst: Path) -> None:
    """`src` re-encoded into `dst` (other compression): the same cells in a file with other
    bytes, which reprocess registers as a new vintage."""
    import rasterio

    with rasterio.open(src) as s:
        a = s.read(1)
        prof = s.profile
    prof["compress"] = "lzw" if str(prof.get("compress", "")).lower() != "lzw" else "deflate"
    with rasterio.open(dst, "w", **prof) as d:
        d.write(a, 1)
    old = time.time() - 3600
    os.utime(dst, (old, old))


def _save_state(work: Path) -> Path:
    """A copy of the work folder (inbox, store, outputs and their cache) beside it; ``cp -a``
    keeps the hard links between published outputs and cache entries."""
    saved = work.with_name(work.name + ".saved")
    shutil.rmtree(saved, ignore_errors=True)
    subprocess.run(["cp", "-a", str(work), str(saved)], check=True)
    return saved


def _restore_state(saved: Path, work: Path) -> None:
    shutil.rmtree(work)
    subprocess.run(["cp", "-a", str(saved), str(work)], check=True)


def _reuse_summary(log_path: Path) -> dict:
    """What the new-vintage reprocess took from earlier runs, read from its run.log: step
    cache hits/misses, chunk results from the block memo, figures from the previous report.
    A hydrology miss means the code changed between the runs (the cache key covers it)
    and the timing is not that of a reprocess."""
    import re

    text = log_path.read_text(encoding="utf-8") if log_path.is_file() else ""
    out: dict = {"step_cache_hits": re.findall(r"cache hit: (\w+)", text),
                 "step_cache_misses": re.findall(r"cache miss: (\w+)", text)}
    m = re.search(r"block memo: (\d+) chunk result\(s\) reused, (\d+) computed", text)
    if m:
        out["chunk_results_reused"], out["chunk_results_computed"] = int(m.group(1)), int(m.group(2))
    m = re.search(r"figures: (\d+) drawn .*?, (\d+) unchanged", text)
    if m:
        out["figures_drawn"], out["figures_reused"] = int(m.group(1)), int(m.group(2))
    out["valid"] = "hydrology" in out["step_cache_hits"]
    return out


def run(args: argparse.Namespace | list[str] | None = None) -> int:
    if not isinstance(args, argparse.Namespace):
        args = _parser().parse_args(args)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-reprocess-", dir=args.out))
    try:
        cfg, what = _build_basin(work, args.scale, args.chunk, args.basin, args)
        out = work / "outputs" / "basin"
        print(f"basin: {what}")
        t_first = _cli("reprocess", str(cfg), "--out", str(out))
        print(f"initial reprocess (2 vintages, cold cache): {t_first:.1f} s")
        from pipeline.config import load_config

        c = load_config(cfg)
        inbox = Path(c.inbox)
        chunk = c.processing.chunk_size
        change = _one_chunk_change(cfg, chunk, inbox / "landcover_2024.tif")
        from pipeline.reprocess import store_of

        store = store_of(c).root
        repeat = max(1, args.repeat)
        saved = _save_state(work) if repeat > 1 else None
        t_news, t_fulls = [], []
        for i in range(repeat):
            if i:
                _restore_state(saved, work)
            t_news.append(_cli("reprocess", str(cfg), "--out", str(out)))
            print(f"reprocess of a new vintage differing in one chunk: {t_news[-1]:.1f} s")
            full_out = work / "outputs_full" / "basin"
            shutil.rmtree(full_out.parent, ignore_errors=True)
            t_fulls.append(_cli("assess", str(store / "assessment.yaml"), "--out", str(full_out)))
            print(f"full assess of the same 3 vintages (no cache): {t_fulls[-1]:.1f} s")
        if saved is not None:
            shutil.rmtree(saved, ignore_errors=True)
        reuse = _reuse_summary(out / "run.log")
        print(f"  reuse: {reuse}")
        t_idle = _cli("reprocess", str(cfg), "--out", str(out))
        print(f"reprocess with nothing new: {t_idle:.2f} s")
        m_new = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        newest = load_config(store / "assessment.yaml").landcover[-1]
        _same_cells(Path(newest.path), inbox / "landcover_2025.tif")
        saved = _save_state(work) if repeat > 1 else None
        t_floors = []
        for i in range(repeat):
            if i:
                _restore_state(saved, work)
            t_floors.append(_cli("reprocess", str(cfg), "--out", str(out)))
            print(f"reprocess of a vintage with the same cells as 2024 (publication only): {t_floors[-1]:.1f} s")
        if saved is not None:
            shutil.rmtree(saved, ignore_errors=True)
        floor = _reuse_summary(out / "run.log")
        m_floor = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        m_full = json.loads((full_out / "manifest.json").read_text(encoding="utf-8"))
        t_new, t_full, t_floor = (statistics.median(t) for t in (t_news, t_fulls, t_floors))
        ratio = t_new / t_full
        result = {
            "basin": what, "grid": m_full["grid"], "chunk_size": chunk, "change": change,
            "wall_full_assess_s": round(t_full, 2), "wall_reprocess_new_vintage_s": round(t_new, 2),
            "ratio": round(ratio, 3), "target_ratio": TARGET_RATIO, "meets_target": ratio <= TARGET_RATIO,
            "repeat": repeat, "walls_full_assess_s": [round(t, 2) for t in t_fulls],
            "walls_reprocess_new_vintage_s": [round(t, 2) for t in t_news],
            "walls_reprocess_same_cells_s": [round(t, 2) for t in t_floors],
            "wall_reprocess_idle_s": round(t_idle, 2), "wall_initial_reprocess_s": round(t_first, 2),
            "reuse_in_reprocess": reuse,
            "wall_reprocess_same_cells_s": round(t_floor, 2), "floor_ratio": round(t_floor / t_full, 3),
            "reuse_in_same_cells_reprocess": floor,
            "steps_full_assess_s": m_full["timings_s"], "steps_reprocess_s": m_new["timings_s"],
            "steps_same_cells_s": m_floor["timings_s"],
            "peak_rss_mb": {"full_assess": m_full.get("peak_rss_mb"), "reprocess_new_vintage": m_new.get("peak_rss_mb"),
                            "reprocess_same_cells": m_floor.get("peak_rss_mb")},
            "cpu_count": os.cpu_count(),
        }
        written = args.out / ("reprocess_large.json" if args.basin == "large" else "reprocess.json")
        written.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
        if repeat > 1:
            print(f"medians of {repeat}: full {t_full:.1f} s, new vintage {t_new:.1f} s, floor {t_floor:.1f} s")
        print(f"floor (publication only) / full = {t_floor / t_full:.3f}")
        print(f"peak RSS (MB): {result['peak_rss_mb']}")
        print(f"ratio reprocess / full = {ratio:.3f} (target <= {TARGET_RATIO}); "
              f"written {written}")
        return 0
    finally:
        shutil.rmtree(work.with_name(work.name + ".saved"), ignore_errors=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
