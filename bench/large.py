"""The large benchmark: the whole assessment of a Yongding-size synthetic basin.

    python -m bench large [--cells 2e8] [--sites 500] [--seed 1] [--chunk-size 4096]
                          [--scheduler tcp://HOST:8786] [--regenerate] [--timeout SECONDS]

1. Generates the basin with scripts/make_large_basin.py into
   outputs/bench/large_basin/ unless a basin with the same parameters is already
   there (its generator.json carries the key).
2. Runs `python -m pipeline assess large.yaml --out outputs/bench/large_out
   --chunk-size N [--scheduler ADDRESS]` as a child process, sampling the resident
   memory of the child and all its descendants every 0.5 s (psutil).
3. Reads the per-step timings from outputs/bench/large_out/manifest.json
   (`timings_s`, `peak_rss_mb`), writes outputs/bench/large.json and prints a table
   of steps with their share of the total, naming the slowest. A run that fails or
   is stopped by --timeout still reports the steps that finished (from the log).

Goal (project issue 8): at 2e8 cells, <= 15 min end to end and peak RSS <= 8 GB on
a 2-core, 24 GB machine. With --scheduler the workers run elsewhere and their
memory is not in the sampled figure (the JSON says so).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
GENERATOR = REPO / "scripts" / "make_large_basin.py"
GOAL_WALL_S = 15 * 60
GOAL_RSS_MB = 8 * 1024


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench large",
                                description="whole assessment of a Yongding-size synthetic basin")
    p.add_argument("--cells", type=float, default=2e8, help="grid cells of the synthetic basin (default 2e8)")
    p.add_argument("--sites", type=int, default=500, help="number of sites (default 500)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--chunk-size", type=int, default=4096, help="tile size passed to assess (default 4096)")
    p.add_argument("--scheduler", help="dask.distributed scheduler address passed to assess")
    p.add_argument("--out", type=Path, default=REPO / "outputs" / "bench",
                   help="benchmark folder (default outputs/bench)")
    p.add_argument("--regenerate", action="store_true", help="generate the basin even if present")
    p.add_argument("--interval", type=float, default=0.5, help="RSS sampling interval in seconds")
    p.add_argument("--timeout", type=float, help="stop the assessment after this many seconds "
                                                 "(the finished steps are still reported)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run(parser().parse_args(argv))


# ---------------------------------------------------------------------------------
# Sampling a process tree


def tree_rss_bytes(proc: psutil.Process) -> int:
    """Resident memory of a process and all its descendants (shared pages counted per process)."""
    return tree_memory_bytes(proc)[0]


def tree_memory_bytes(proc: psutil.Process) -> tuple[int, int]:
    """(RSS, PSS) summed over a process and all its descendants.

    RSS counts a page shared by several processes once per process: forked children
    (copy-on-write) inflate it. PSS divides each shared page among its sharers, so the
    PSS sum is the memory the tree really holds (Linux ``smaps_rollup``; RSS elsewhere).
    """
    rss = pss = 0
    try:
        procs = [proc] + proc.children(recursive=True)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0, 0
    for p in procs:
        try:
            r = p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += r
        pss += _pss(p.pid, r)
    return rss, pss


def _pss(pid: int, fallback: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return fallback


def _kill_tree(proc: psutil.Process) -> None:
    """Kill a process and its descendants (children first)."""
    try:
        kids = proc.children(recursive=True)
    except psutil.NoSuchProcess:
        kids = []
    for p in reversed(kids):
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    try:
        proc.kill()
    except psutil.NoSuchProcess:
        pass


def run_sampled(cmd: list[str], interval: float = 0.5, cwd: Path | None = None,
                log_path: Path | None = None, env: dict | None = None,
                timeout: float | None = None) -> dict:
    """Run `cmd`, sampling the memory of its process tree; return code, wall time, peak RSS and PSS.

    The child's stdout and stderr go to `log_path` (or are inherited), so a long run
    can be followed with `tail -f`. After `timeout` seconds the whole tree is killed
    and `timed_out` is set.
    """
    out = open(log_path, "w", encoding="utf-8") if log_path else None
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT if out else None,
                             env=env)
    peak = peak_pss = 0
    samples = 0
    stop = threading.Event()
    try:
        proc = psutil.Process(child.pid)

        def sample():
            nonlocal peak, peak_pss, samples
            while not stop.is_set():
                rss, pss = tree_memory_bytes(proc)
                peak, peak_pss = max(peak, rss), max(peak_pss, pss)
                samples += 1
                stop.wait(interval)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        timed_out = False
        try:
            rc = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_tree(proc)
            rc = child.wait()
    except KeyboardInterrupt:
        _kill_tree(psutil.Process(child.pid))
        child.wait()
        raise
    finally:
        stop.set()
        if out:
            out.close()
    th.join()
    return {"returncode": rc, "wall_s": round(time.perf_counter() - t0, 2),
            "peak_rss_mb": round(peak / 2**20, 1), "peak_pss_mb": round(peak_pss / 2**20, 1),
            "rss_samples": samples,
            "interval_s": interval, "timed_out": timed_out}


_STEP_DONE = re.compile(r"\u2714 (.+) \(([0-9.]+) s\)\s*$")


def steps_from_log(log_path: Path) -> dict[str, float]:
    """Finished steps and their seconds from the assess log ("✔ STEP (N s)" lines).

    Used when a run did not finish (timeout, crash), so no manifest was written.
    """
    steps: dict[str, float] = {}
    if not Path(log_path).is_file():
        return steps
    for line in Path(log_path).read_text(encoding="utf-8", errors="replace").splitlines():
        m = _STEP_DONE.search(line)
        if m:
            steps[m.group(1)] = float(m.group(2))
    return steps


# ---------------------------------------------------------------------------------
# Basin and assessment


def _load_generator():
    import importlib.util

    if "make_large_basin" in sys.modules:
        return sys.modules["make_large_basin"]
    spec = importlib.util.spec_from_file_location("make_large_basin", GENERATOR)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["make_large_basin"] = mod           # dataclasses look the module up by name
    spec.loader.exec_module(mod)
    return mod


def ensure_basin(args, basin_dir: Path) -> dict:
    """Generate the basin unless one with the same key is complete in basin_dir."""
    gen = _load_generator()
    spec = gen.Spec.from_cells(args.cells, args.seed, args.sites)
    rec_path = basin_dir / "generator.json"
    if rec_path.is_file() and not args.regenerate:
        rec = json.loads(rec_path.read_text(encoding="utf-8"))
        if rec.get("key") == spec.key and all((basin_dir / f).is_file() for f in rec.get("files", {})):
            print(f"basin {spec.key}: reusing {basin_dir}")
            return {"key": spec.key, "generated": False, "record": rec}
    print(f"basin {spec.key}: generating into {basin_dir} ...", flush=True)
    basin_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(GENERATOR), "--out", str(basin_dir), "--width", str(spec.width),
           "--height", str(spec.height), "--seed", str(spec.seed), "--sites", str(spec.sites)]
    res = run_sampled(cmd, args.interval, cwd=REPO, log_path=basin_dir.parent / "large_generate.log")
    if res["returncode"] != 0:
        raise SystemExit(f"error: the generator failed (see {basin_dir.parent / 'large_generate.log'})")
    rec = json.loads(rec_path.read_text(encoding="utf-8"))
    return {"key": spec.key, "generated": True, "record": rec, "run": res}


def assess_command(config: Path, out_dir: Path, chunk_size: int, scheduler: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "pipeline", "assess", str(config), "--out", str(out_dir),
           "--chunk-size", str(chunk_size)]
    if scheduler:
        cmd += ["--scheduler", scheduler]
    return cmd


def step_table(timings: dict[str, float], total: float) -> tuple[list[dict], str | None]:
    """Rows (step, seconds, share of total) in run order, and the slowest step."""
    rows = [{"step": k, "seconds": round(float(v), 2),
             "share": round(float(v) / total, 4) if total > 0 else None}
            for k, v in timings.items() if k != "total"]
    slowest = max(rows, key=lambda r: r["seconds"])["step"] if rows else None
    return rows, slowest


def format_table(rows: list[dict], total: float, slowest: str | None) -> str:
    w = max([len("step")] + [len(r["step"]) for r in rows])
    lines = [f"{'step':<{w}}  {'seconds':>9}  {'share':>6}", "-" * (w + 19)]
    for r in rows:
        share = f"{100 * r['share']:5.1f}%" if r["share"] is not None else "     -"
        mark = "  <- slowest" if r["step"] == slowest else ""
        lines.append(f"{r['step']:<{w}}  {r['seconds']:9.1f}  {share}{mark}")
    lines.append("-" * (w + 19))
    lines.append(f"{'total':<{w}}  {total:9.1f}  100.0%")
    return "\n".join(lines)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def run(args) -> int:
    bench_dir = Path(args.out)
    bench_dir.mkdir(parents=True, exist_ok=True)
    basin_dir = bench_dir / "large_basin"
    out_dir = bench_dir / "large_out"
    basin = ensure_basin(args, basin_dir)
    config = basin_dir / "large.yaml"
    cmd = assess_command(config, out_dir, args.chunk_size, args.scheduler)
    print("running: " + " ".join(cmd), flush=True)
    log_path = bench_dir / "large_assess.log"
    load_before = os.getloadavg()
    res = run_sampled(cmd, args.interval, cwd=REPO, log_path=log_path, timeout=args.timeout)
    load_after = os.getloadavg()

    manifest_path = out_dir / "manifest.json"
    manifest = {}
    if res["returncode"] == 0 and manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    timings = dict(manifest.get("timings_s", {}))
    if not manifest:                                 # unfinished: the steps that did finish
        timings = steps_from_log(log_path)
    total = float(timings.get("total", res["wall_s"]))
    rows, slowest = step_table(timings, total)
    rec = basin["record"]
    result = {
        "benchmark": "large",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
                    "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_1_5_15_min": {"before": [round(x, 2) for x in load_before],
                                                "after": [round(x, 2) for x in load_after]}},
        "basin": {"key": basin["key"], "cells": rec.get("cells"), "width": rec["spec"]["width"],
                  "height": rec["spec"]["height"], "sites": rec.get("sites"),
                  "generated_now": basin["generated"], "generator_seconds": rec.get("seconds"),
                  "generator_peak_rss_mb": rec.get("peak_rss_mb"),
                  "input_bytes": sum(rec.get("files", {}).values()), "folder": str(basin_dir)},
        "command": cmd,
        "chunk_size": args.chunk_size,
        "scheduler": args.scheduler,
        "status": "ok" if res["returncode"] == 0 and manifest else
                  ("timeout" if res["timed_out"] else "failed"),
        "timeout_s": args.timeout,
        "returncode": res["returncode"],
        "wall_s": res["wall_s"],
        "peak_rss_mb": res["peak_rss_mb"],
        "peak_pss_mb": res["peak_pss_mb"],
        "rss_scope": ("sums over the assess process and its descendants, sampled every "
                      f"{res['interval_s']} s: RSS counts pages shared with forked children once per "
                      "process, PSS divides them (the memory really held; the goal is checked on it)"
                      + ("; remote dask workers are not included" if args.scheduler else "")),
        "manifest_peak_rss_mb": manifest.get("peak_rss_mb"),
        "timings_s": timings,
        "steps": rows,
        "slowest_step": slowest,
        "goal": {"wall_s": GOAL_WALL_S, "peak_rss_mb": GOAL_RSS_MB},
        "goal_met": {"wall": res["wall_s"] <= GOAL_WALL_S, "rss": res["peak_pss_mb"] <= GOAL_RSS_MB}
        if res["returncode"] == 0 else None,
        "log": str(log_path),
    }
    _write_json(bench_dir / "large.json", result)
    print()
    print(f"large basin {basin['key']}: {rec.get('cells', 0):.3g} cells, {rec.get('sites')} sites, "
          f"chunk size {args.chunk_size}" + (f", scheduler {args.scheduler}" if args.scheduler else ""))
    if result["status"] != "ok":
        why = (f"stopped after the {args.timeout:g} s timeout" if res["timed_out"]
               else f"FAILED (exit code {res['returncode']}) after {res['wall_s']:.1f} s")
        print(f"assess {why}; see {log_path}")
        if rows:
            print("steps that finished (share of the wall time so far):")
            print(format_table(rows, total, slowest))
        print(f"peak memory so far: PSS {res['peak_pss_mb']:.0f} MB, RSS {res['peak_rss_mb']:.0f} MB")
        print(f"wrote {bench_dir / 'large.json'}")
        return 1
    print(format_table(rows, total, slowest))
    print(f"wall time {res['wall_s']:.1f} s (goal <= {GOAL_WALL_S} s: "
          f"{'met' if result['goal_met']['wall'] else 'NOT met'}); peak memory (PSS) {res['peak_pss_mb']:.0f} MB "
          f"(goal <= {GOAL_RSS_MB} MB: {'met' if result['goal_met']['rss'] else 'NOT met'}), "
          f"RSS sum {res['peak_rss_mb']:.0f} MB")
    if slowest:
        print(f"slowest step: {slowest}")
    print(f"wrote {bench_dir / 'large.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
