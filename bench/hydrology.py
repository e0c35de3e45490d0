"""Hydrology benchmark: our tiled fill + D8 + accumulation against pyflwdir and pysheds.

    python -m bench hydrology [--sizes 1e6,1e7,1e8] [--chunk 2048] [--out outputs/bench]
                              [--generator fft|strips] [--tools ours,pyflwdir,pysheds]
    # 1e9 cells, ours only (the DEM is generated strip by strip, never in memory):
    python -m bench hydrology --sizes 1e9 --tools ours --generator strips --chunk 4096 --work /big/disk

For each size a seeded DEM (30 m UTM grid) is written as a tiled GeoTIFF first:
``fft`` is a fractal surface by spectral synthesis (whole array in memory);
``strips`` is a sum of value-noise octaves computed strip by strip (each cell a
pure function of row, column and seed). Each tool then runs in a fresh subprocess
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


# Strip generator: a sum of octaves of value noise, each cell a pure function of
# (row, col, seed), so any strip (or window) can be computed on its own and a
# 1e9-cell DEM is written without ever holding it in memory. Octave k has
# wavelength 2**k cells (k = 1..15) and amplitude ~ wavelength**STRIP_H
# (fractional Brownian surface with Hurst exponent STRIP_H); the sum is scaled
# to 0..1500 m with the theoretical bounds, not the data, and rounded to cm so
# that ties and flats exist. Smaller grids are crops of larger ones.
STRIP_OCTAVES = 15
STRIP_H = 0.5
STRIP_ROWS = 512


def _strip_kernels():
    from numba import njit

    @njit(cache=True, nogil=True)
    def hash01(ix, iy, salt):
        """Uniform [0, 1) from integer lattice coordinates (splitmix64 finaliser)."""
        h = (np.uint64(ix & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)) ^ \
            (np.uint64(iy & 0xFFFFFFFF) * np.uint64(0xC2B2AE3D27D4EB4F)) ^ \
            (np.uint64(salt) * np.uint64(0x165667B19E3779F9))
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
        return np.float64(h >> np.uint64(11)) * (1.0 / 9007199254740992.0)

    @njit(cache=True, nogil=True)
    def strip(r0, nrows, c0, ncols, seed, octaves, hurst):
        out = np.empty((nrows, ncols), dtype=np.float32)
        amps = np.empty(octaves)
        norm = 0.0
        for k in range(octaves):
            amps[k] = (2.0 ** (k + 1)) ** hurst
            norm += amps[k]
        for i in range(nrows):
            r = r0 + i
            for j in range(ncols):
                c = c0 + j
                tot = 0.0
                for k in range(octaves):
                    wl = 2 ** (k + 1)
                    gy = (r + 0.5) / wl
                    gx = (c + 0.5) / wl
                    fy0 = np.floor(gy)
                    fx0 = np.floor(gx)
                    iy = np.int64(fy0)
                    ix = np.int64(fx0)
                    fy = gy - fy0
                    fx = gx - fx0
                    sx = fx * fx * (3.0 - 2.0 * fx)
                    sy = fy * fy * (3.0 - 2.0 * fy)
                    salt = seed * 64 + k
                    v00 = hash01(ix, iy, salt)
                    v10 = hash01(ix + 1, iy, salt)
                    v01 = hash01(ix, iy + 1, salt)
                    v11 = hash01(ix + 1, iy + 1, salt)
                    a = v00 + sx * (v10 - v00)
                    b = v01 + sx * (v11 - v01)
                    tot += amps[k] * (a + sy * (b - a))
                out[i, j] = np.float32(np.round(1500.0 * tot / norm, 2))
        return out

    return strip


_STRIP = None


def strip_dem(r0: int, nrows: int, c0: int, ncols: int, seed: int = SEED) -> np.ndarray:
    """Window ``[r0:r0+nrows, c0:c0+ncols]`` of the strip generator's DEM (float32, m)."""
    global _STRIP
    if _STRIP is None:
        _STRIP = _strip_kernels()
    return _STRIP(int(r0), int(nrows), int(c0), int(ncols), int(seed), STRIP_OCTAVES, STRIP_H)


def _profile(side: int) -> dict:
    from affine import Affine

    return dict(driver="GTiff", height=side, width=side, count=1, dtype="float32",
                nodata=-9999.0, crs="EPSG:32650",
                transform=Affine(30.0, 0, 400000.0, 0, -30.0, 4500000.0),
                tiled=True, blockxsize=512, blockysize=512, compress="deflate",
                BIGTIFF="IF_SAFER")


def _write_dem_in_child(path: Path, n_cells: int, generator: str) -> Path:
    """:func:`write_dem` in a subprocess. On Linux a child's ru_maxrss starts from its
    parent's high-water mark (kept across fork and exec): a parent that held the DEM
    would put a floor under every tool's peak RSS."""
    code = "import sys; from pathlib import Path; from bench.hydrology import write_dem; " \
           "write_dem(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3])"
    subprocess.run([sys.executable, "-c", code, str(path), str(int(n_cells)), generator], check=True,
                   cwd=str(Path(__file__).resolve().parents[1]))
    return path


def write_dem(path: Path, n_cells: int, generator: str = "fft") -> Path:
    """Square DEM GeoTIFF of about ``n_cells`` cells; ``generator`` "fft" or "strips".

    "strips" computes and writes 512-row strips on 2 threads (memory ~ a few strips).
    """
    import rasterio
    from rasterio.windows import Window

    side = int(round(np.sqrt(n_cells)))
    if generator == "fft":
        z = fractal_dem(n_cells)
        with rasterio.open(path, "w", **_profile(side)) as ds:
            ds.write(z, 1)
        return path
    if generator != "strips":
        raise SystemExit(f"unknown generator {generator!r} (fft or strips)")
    from concurrent.futures import ThreadPoolExecutor

    starts = list(range(0, side, STRIP_ROWS))
    strip_dem(0, 1, 0, 1)                       # compile (or load the cache) once
    with rasterio.open(path, "w", **_profile(side)) as ds, \
            ThreadPoolExecutor(max_workers=2) as pool:
        # at most 2 strips computing and 1 being written at a time
        pending = []
        for r0 in starts:
            pending.append((r0, pool.submit(strip_dem, r0, min(STRIP_ROWS, side - r0), 0, side)))
            if len(pending) >= 2:
                r, fut = pending.pop(0)
                z = fut.result()
                ds.write(z, 1, window=Window(0, r, side, z.shape[0]))
        for r, fut in pending:
            z = fut.result()
            ds.write(z, 1, window=Window(0, r, side, z.shape[0]))
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
    p.add_argument("--generator", choices=("fft", "strips"), default="fft",
                   help="DEM generator: whole-array FFT fractal, or strip-wise value noise "
                        "(never holds the DEM in memory; use it for 1e9)")
    p.add_argument("--tools", default="ours,pyflwdir,pysheds",
                   help="tools to run, comma separated (ours, pyflwdir, pysheds)")
    p.add_argument("--keep", action="store_true", help="keep the DEM and outputs in --work")
    args = p.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = {t.strip() for t in args.tools.split(",") if t.strip()}
    results = {"seed": SEED, "chunk": args.chunk, "cpus": os.cpu_count(),
               "generator": args.generator,
               "load_avg_at_start": os.getloadavg(), "runs": [],
               "note": "time = work inside the child (imports excluded); the machine is "
                       "shared, see load averages"}
    import contextlib

    if args.keep:
        scratch = contextlib.nullcontext(tempfile.mkdtemp(dir=args.work, prefix="bench-hydro-"))
    else:
        scratch = tempfile.TemporaryDirectory(dir=args.work, prefix="bench-hydro-")
    with scratch as tmp:
        tmp = Path(tmp)
        if args.keep:
            print(f"scratch folder kept: {tmp}", flush=True)
        # warm the numba caches of both libraries so no run pays compilation
        warm = write_dem(tmp / "warm.tif", 200 * 200, args.generator)
        for tool in sorted(wanted & {"ours", "pyflwdir"}):
            _run_child(tool, warm, tmp, args.chunk, args.timeout)
        for n in _parse_sizes(args.sizes):
            t0 = time.perf_counter()
            dem = _write_dem_in_child(tmp / f"dem_{n}.tif", n, args.generator)
            print(f"\n== {n:.0e} cells (DEM written in {time.perf_counter() - t0:.1f} s)",
                  flush=True)
            work = tmp / f"run_{n}"
            work.mkdir()
            tools = [t for t in ("ours", "pyflwdir", "pysheds") if t in wanted
                     and (t != "pysheds" or n <= args.pysheds_max)]
            runs = {}
            for tool in tools:
                runs[tool] = _run_child(tool, dem, work, args.chunk, args.timeout)
                print(f"   {tool:13s} {_fmt(runs[tool])}", flush=True)
            d8 = work / "d8.tif"
            if runs.get("ours", {}).get("ok") and len(tools) > 1:
                for tool in [t + "_acc" for t in tools]:
                    runs[tool] = _run_child(tool, d8, work, args.chunk, args.timeout)
                    print(f"   {tool:13s} {_fmt(runs[tool])}", flush=True)
                runs["check"] = _check(work, runs)
            results["runs"].append({"cells": n, "tools": runs})
            if not args.keep:
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
