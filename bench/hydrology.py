"""Hydrology benchmark: our tiled fill + D8 + accumulation against pyflwdir and pysheds.

    python -m bench hydrology [--sizes 1e6,1e7,1e8] [--chunk 2048] [--out outputs/bench]

For each size a seeded fractal DEM (spectral synthesis, 30 m UTM grid) is
written as a tiled GeoTIFF first. Each tool then runs in a fresh subprocess
(so peak RSS is per tool, from ``os.wait4``) on the same file:

- ``ours``: ``hydrology_to_files`` (fill, D8 with flats, accumulation, upstream
  area; 2 dask workers), 4 GeoTIFFs written;
- ``pyflwdir``: ``pyflwdir.dem.fill_depressions`` + ``from_array(...).upstream_area``,
  upstream area GeoTIFF written;
- ``pysheds``: fill_pits + fill_depressions + resolve_flats + flowdir +
  accumulation (skipped above ``--pysheds-max`` cells);
- accumulation only, on one shared D8 (ours): ``accumulate_to_file`` vs pyflwdir
  ``from_array(d8).upstream_area(unit="cell")`` (+ pysheds ``accumulation``).

Results: ``<out>/hydrology.json`` and a table on stdout (wall time of the
work inside the child, ratio to pyflwdir, peak RSS of the child).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SEED = 20260521


# --------------------------------------------------------------------------- DEM

def fractal_dem(n_cells: int, seed: int = SEED, beta: float = 2.2) -> np.ndarray:
    """Square fractal surface (power spectrum ~ f^-beta), metres, float32."""
    side = int(round(np.sqrt(n_cells)))
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(side)[:, None]
    fx = np.fft.rfftfreq(side)[None, :]
    f = np.sqrt(fx * fx + fy * fy, dtype=np.float32)
    f[0, 0] = 1.0
    amp = f ** np.float32(-beta / 2.0)
    del f
    amp[0, 0] = 0.0
    phase = rng.random(amp.shape, dtype=np.float32) * np.float32(2 * np.pi)
    spec = (amp * np.exp(1j * phase)).astype(np.complex64)
    del amp, phase
    z = np.fft.irfft2(spec, s=(side, side)).astype(np.float32)
    del spec
    z -= z.min()
    z *= np.float32(1500.0 / max(float(z.max()), 1e-9))
    return np.round(z, 2)          # centimetre precision: real DEMs have ties and flats


def write_dem(path: Path, n_cells: int) -> Path:
    import rasterio
    from affine import Affine

    z = fractal_dem(n_cells)
    side = z.shape[0]
    with rasterio.open(path, "w", driver="GTiff", height=side, width=side, count=1,
                       dtype="float32", nodata=-9999.0, crs="EPSG:32650",
                       transform=Affine(30.0, 0, 400000.0, 0, -30.0, 4500000.0),
                       tiled=True, blockxsize=512, blockysize=512, compress="deflate",
                       BIGTIFF="IF_SAFER") as ds:
        ds.write(z, 1)
    return path


# --------------------------------------------------------------------------- children

def _write_like(src_path, out_path, arr, nodata):
    import rasterio

    with rasterio.open(src_path) as src:
        prof = src.profile.copy()
    prof.update(dtype=arr.dtype.name, nodata=nodata, compress="deflate", tiled=True,
                blockxsize=512, blockysize=512, BIGTIFF="IF_SAFER")
    with rasterio.open(out_path, "w", **prof) as ds:
        ds.write(arr, 1)


def _child(tool: str, src: str, out: str, chunk: int) -> dict:
    # imports first: the timed part is the work (reading, computing, writing)
    if tool.startswith("ours"):
        from pipeline.ops.hydrology import accumulate_to_file, hydrology_to_files
    elif tool.startswith("pyflwdir"):
        import pyflwdir
        import rasterio
    elif tool.startswith("pysheds"):
        if not hasattr(np, "in1d"):
            # pysheds 0.5 calls np.in1d, removed in numpy 2.4; same result, flattened
            np.in1d = lambda a, b, **kw: np.isin(np.ravel(a), b, **kw)
        from pysheds.grid import Grid
    t0 = time.perf_counter()
    if tool == "ours":
        hydrology_to_files(src, out, chunk_size=chunk)
    elif tool == "ours_acc":
        accumulate_to_file(src, Path(out) / "acc_ours.tif", chunk_size=chunk)
    elif tool in ("pyflwdir", "pyflwdir_acc"):
        with rasterio.open(src) as ds:
            a = ds.read(1)
            nodata = ds.nodata
            tr = ds.transform
        if tool == "pyflwdir":
            _, d8 = pyflwdir.dem.fill_depressions(a, nodata=nodata, outlets="edge", max_depth=-1)
            del a
        else:
            d8 = np.where(a == 255, np.uint8(247), a)
            del a
        fd = pyflwdir.from_array(d8, ftype="d8", transform=tr, latlon=False)
        up = fd.upstream_area(unit="cell")
        _write_like(src, Path(out) / f"up_{tool}.tif", up.astype(np.float64), -9999.0)
    elif tool in ("pysheds", "pysheds_acc"):
        grid = Grid.from_raster(src)
        dirmap = (64, 128, 1, 2, 4, 8, 16, 32)
        if tool == "pysheds":
            dem = grid.read_raster(src)
            dem = grid.fill_pits(dem)
            dem = grid.fill_depressions(dem)
            dem = grid.resolve_flats(dem)
            fdir = grid.flowdir(dem, dirmap=dirmap)
        else:
            fdir = grid.read_raster(src)
        acc = grid.accumulation(fdir, dirmap=dirmap)
        _write_like(src, Path(out) / f"up_{tool}.tif", np.asarray(acc, dtype=np.float64), -9999.0)
    else:
        raise SystemExit(f"unknown tool {tool}")
    return {"seconds": time.perf_counter() - t0}


def _run_child(tool: str, src: Path, out: Path, chunk: int, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "bench.hydrology", "--child", tool, str(src), str(out),
           str(chunk)]
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=str(Path(__file__).resolve().parents[1]))
    deadline = t0 + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            return {"tool": tool, "ok": False, "error": f"timeout after {timeout:.0f} s"}
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    stdout = proc.stdout.read()
    stderr = proc.stderr.read()
    code = os.waitstatus_to_exitcode(status)
    res = {"tool": tool, "ok": code == 0, "process_wall_s": wall,
           "process_cpu_s": usage.ru_utime + usage.ru_stime,
           "peak_rss_mb": usage.ru_maxrss / 1024.0,
           "load_avg_1min_after": os.getloadavg()[0]}
    if code == 0:
        res.update(json.loads(stdout.strip().splitlines()[-1]))
    else:
        res["error"] = (stderr.strip().splitlines() or ["?"])[-1][:300]
    return res


# --------------------------------------------------------------------------- main

def _parse_sizes(text: str) -> list[int]:
    return [int(float(s)) for s in text.split(",") if s.strip()]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--child":
        tool, src, out, chunk = argv[1], argv[2], argv[3], int(argv[4])
        print(json.dumps(_child(tool, src, out, chunk)))
        return 0
    p = argparse.ArgumentParser(prog="python -m bench hydrology")
    p.add_argument("--sizes", default="1e6,1e7", help="cell counts, comma separated")
    p.add_argument("--chunk", type=int, default=2048, help="our tile size")
    p.add_argument("--out", default="outputs/bench", help="folder for hydrology.json")
    p.add_argument("--work", default=None, help="scratch folder (default: a temp folder)")
    p.add_argument("--pysheds-max", type=float, default=2e7,
                   help="skip pysheds above this many cells")
    p.add_argument("--timeout", type=float, default=3600.0, help="per tool, seconds")
    args = p.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {"seed": SEED, "chunk": args.chunk, "cpus": os.cpu_count(),
               "load_avg_at_start": os.getloadavg(), "runs": [],
               "note": "time = work inside the child (imports excluded); the machine is "
                       "shared, see load averages"}
    with tempfile.TemporaryDirectory(dir=args.work, prefix="bench-hydro-") as tmp:
        tmp = Path(tmp)
        # warm the numba caches of both libraries so no run pays compilation
        warm = write_dem(tmp / "warm.tif", 200 * 200)
        for tool in ("ours", "pyflwdir"):
            _run_child(tool, warm, tmp, args.chunk, args.timeout)
        for n in _parse_sizes(args.sizes):
            t0 = time.perf_counter()
            dem = write_dem(tmp / f"dem_{n}.tif", n)
            print(f"\n== {n:.0e} cells (DEM written in {time.perf_counter() - t0:.1f} s)",
                  flush=True)
            work = tmp / f"run_{n}"
            work.mkdir()
            tools = ["ours", "pyflwdir"] + (["pysheds"] if n <= args.pysheds_max else [])
            runs = {}
            for tool in tools:
                runs[tool] = _run_child(tool, dem, work, args.chunk, args.timeout)
                print(f"   {tool:13s} {_fmt(runs[tool])}", flush=True)
            d8 = work / "d8.tif"
            if runs["ours"]["ok"]:
                for tool in ["ours_acc", "pyflwdir_acc"] + (
                        ["pysheds_acc"] if n <= args.pysheds_max else []):
                    runs[tool] = _run_child(tool, d8, work, args.chunk, args.timeout)
                    print(f"   {tool:13s} {_fmt(runs[tool])}", flush=True)
                runs["check"] = _check(work, runs)
            results["runs"].append({"cells": n, "tools": runs})
            for f in work.glob("*.tif"):
                f.unlink()
    path = out_dir / "hydrology.json"
    path.write_text(json.dumps(results, indent=2))
    print()
    print(_table(results))
    print(f"\nwritten {path}")
    return 0


def _check(work: Path, runs: dict) -> dict:
    """Do the tools agree? (accumulation on the shared D8 must be identical)."""
    import rasterio

    out = {}
    with rasterio.open(work / "accumulation.tif") as s:
        ours = s.read(1).astype(np.float64)
        nd = s.read(1) == s.nodata
    # float64 outputs of the other tools: exact for integer counts up to 2**53
    for tool in ("ours_acc", "pyflwdir_acc", "pysheds_acc"):
        name = "acc_ours.tif" if tool == "ours_acc" else f"up_{tool}.tif"
        if runs.get(tool, {}).get("ok") and (work / name).exists():
            with rasterio.open(work / name) as s:
                other = s.read(1).astype(np.float64)
            out[f"{tool}_equal_to_ours"] = bool(np.array_equal(other[~nd], ours[~nd]))
    return out


def _fmt(r: dict) -> str:
    if not r.get("ok"):
        return f"FAILED: {r.get('error')}"
    return (f"{r['seconds']:8.2f} s  (process {r['process_wall_s']:7.2f} s wall, "
            f"{r['process_cpu_s']:7.2f} s cpu)  peak RSS {r['peak_rss_mb']:8.0f} MB  "
            f"load {r['load_avg_1min_after']:.1f}")


def _table(results: dict) -> str:
    lines = [f"{'cells':>8} {'task':<22} {'tool':<10} {'time s':>9} {'vs pyflwdir':>12} "
             f"{'cpu s':>9} {'peak RSS MB':>12}"]
    for run in results["runs"]:
        t = run["tools"]
        for task, names in (("DEM -> upstream area", ("ours", "pyflwdir", "pysheds")),
                            ("accumulation only", ("ours_acc", "pyflwdir_acc", "pysheds_acc"))):
            ref = t.get(names[1], {})
            for name in names:
                r = t.get(name)
                if r is None:
                    continue
                label = name.replace("_acc", "")
                if not r.get("ok"):
                    lines.append(f"{run['cells']:8.0e} {task:<22} {label:<10} {'failed':>9}")
                    continue
                ratio = (ref["seconds"] / r["seconds"]) if ref.get("ok") else float("nan")
                lines.append(f"{run['cells']:8.0e} {task:<22} {label:<10} {r['seconds']:9.2f} "
                             f"{ratio:11.2f}x {r['process_cpu_s']:9.1f} {r['peak_rss_mb']:12.0f}")
        if "check" in t:
            lines.append(f"{'':8} accumulation agreement: {t['check']}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
