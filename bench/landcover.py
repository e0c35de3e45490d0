"""Land-cover indicator benchmark: our tiled ops against one-array scipy / networkx.

    python -m bench landcover [--size 1e7 | --large] [--chunk 2048] [--out outputs/bench]

A seeded synthetic, clumpy land-cover raster in CLCD codes (30 m UTM grid) and a
synthetic stream raster are written as tiled GeoTIFFs first. Each (indicator, tool)
pair then runs in a fresh subprocess (peak RSS per tool from ``os.wait4``):

==============  =====================================  =========================================
indicator       ours (tiled, dask, 2 threads)          reference (one array)
==============  =====================================  =========================================
reclass         io.classes.reclassify (CLCD)           numpy lookup table
patches         ops.landcover.label_patches            scipy.ndimage.label (3x3 structure)
local_share     ops.landcover.disk_share, 1000 m       scipy.ndimage.convolve with the disk, x2
distance        ops.landcover.distance_to, cap 1000 m  scipy.ndimage.distance_transform_edt
connectivity    indicators.connectivity (PC, dPC)      - (networkx is out of reach at this size)
connectivity_crop  the same on a central 500 x 500 crop  networkx single-source Dijkstra per patch
                                                       (cutoff -ln 1e-6) on the same patch graph: PC
==============  =====================================  =========================================

The connectivity reference computes PC only (dPC by node removal in networkx is
out of reach at this size); it uses our KD-tree edge list, so it checks the
best-path part, not the edge search (unit tests compare that with brute force).
Results: ``<out>/landcover.json`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SEED = 20260521
CELL = 30.0
INDICATORS = ("reclass", "patches", "local_share", "distance", "connectivity", "connectivity_crop")
REFERENCE = {"reclass": "numpy", "patches": "scipy", "local_share": "scipy", "distance": "scipy",
             "connectivity": "networkx", "connectivity_crop": "networkx"}
CROP_CELLS = 250_000     # networkx PC reference only on a central crop of this many cells
FFT_ABOVE = 2e7          # local_share reference: ndimage.convolve up to this many cells, FFT above
LARGE_INDICATORS = ("reclass", "patches", "local_share", "distance", "connectivity_crop")
# The synthetic cover has ~6 000 patches per 1e6 cells, all in one dense component in
# reach of each other: PC alone is an all-pairs search (1e7 cells: 58 069 patches, over
# 50 CPU-minutes). Above this size the default runs connectivity on the crop only.
FULL_CONNECTIVITY_MAX = 2e6


# --------------------------------------------------------------------------- synthetic data
def synthetic_landcover(n_cells: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Clumpy CLCD classes (uint8, codes 1-9) and a thin stream network (uint8 0/1)."""
    import scipy.ndimage as ndi

    side = int(round(math.sqrt(n_cells)))
    rng = np.random.default_rng(seed)
    coarse = max(8, side // 8)

    def field(scale_sigma: float) -> np.ndarray:
        f = ndi.gaussian_filter(rng.standard_normal((coarse, coarse)).astype(np.float32), scale_sigma)
        f = ndi.zoom(f, side / coarse, order=1, prefilter=False)[:side, :side]
        return (f - f.mean()) / (f.std() + 1e-9)

    f = field(3.0)
    f += 0.35 * rng.standard_normal((side, side)).astype(np.float32) * 0.5   # fine-scale fragmentation
    # class order along the field interleaves natural and intensive cover -> many patches
    # CLCD: 1 cropland 2 forest 3 shrub 4 grassland 5 water 6 snow 7 barren 8 impervious 9 wetland
    order = np.array([1, 2, 8, 4, 1, 3, 7, 2, 5, 9, 1, 2, 6], np.uint8)
    shares = np.array([12, 10, 6, 8, 10, 5, 4, 14, 2, 2, 10, 15, 2], np.float64)
    q = np.quantile(f[:: max(1, side // 1000), :: max(1, side // 1000)], np.cumsum(shares)[:-1] / shares.sum())
    lc = order[np.searchsorted(q, f)]
    del f
    g = field(6.0)
    s = g > 0
    streams = np.zeros_like(s)
    streams[:, :-1] |= s[:, :-1] != s[:, 1:]
    streams[:-1, :] |= s[:-1, :] != s[1:, :]
    return lc, streams.astype(np.uint8)


def write_inputs(work: Path, n_cells: int) -> tuple[Path, Path]:
    import rasterio
    from rasterio.transform import from_origin

    lc, st = synthetic_landcover(n_cells)
    paths = []
    for name, arr, nodata in (("landcover_clcd.tif", lc, 0), ("streams.tif", st, 255)):
        p = work / name
        with rasterio.open(p, "w", driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=1,
                           dtype="uint8", crs="EPSG:32650", transform=from_origin(400000, 4500000, CELL, CELL),
                           nodata=nodata, tiled=True, blockxsize=512, blockysize=512, compress="DEFLATE",
                           BIGTIFF="IF_SAFER") as dst:
            dst.write(arr, 1)
        paths.append(p)
    return paths[0], paths[1]


def _write_inputs_in_child(work: Path, n_cells: int) -> tuple[Path, Path]:
    """:func:`write_inputs` in a subprocess. On Linux a child's ru_maxrss starts from its
    parent's high-water mark (kept across fork and exec), so the parent must never hold
    the whole raster, or every tool would report at least that much."""
    code = "import sys; from pathlib import Path; from bench.landcover import write_inputs; " \
           "write_inputs(Path(sys.argv[1]), int(sys.argv[2]))"
    subprocess.run([sys.executable, "-c", code, str(work), str(int(n_cells))], check=True,
                   cwd=str(Path(__file__).resolve().parents[1]))
    return work / "landcover_clcd.tif", work / "streams.tif"


# --------------------------------------------------------------------------- child
def _child(indicator: str, tool: str, lc_path: str, st_path: str, out: str, chunk: int) -> dict:
    import dask
    import rioxarray

    from pipeline.io.classes import attribute_array, load_canonical, load_scheme

    dask.config.set(scheduler="threads", num_workers=2)
    scheme = load_scheme("clcd")
    table = load_canonical()
    info: dict = {}
    t0 = time.perf_counter()
    if tool == "ours":
        from pipeline.indicators.connectivity import compute_connectivity
        from pipeline.io.classes import attribute_raster, reclassify
        from pipeline.ops import landcover as L

        lc = rioxarray.open_rasterio(lc_path, chunks={"y": chunk, "x": chunk}, mask_and_scale=False).squeeze("band",
                                                                                                       drop=True)
        if indicator.endswith("_crop"):
            lc = lc.isel(y=_crop(lc.shape[0]), x=_crop(lc.shape[1]))
        canon = reclassify(lc, scheme, path=lc_path)
        if indicator == "reclass":
            res = canon.values
        else:
            nat = attribute_raster(canon, "natural", table)
            if indicator == "patches":
                res = L.label_patches(nat).labels.values
            elif indicator == "local_share":
                res = L.disk_share(nat, 1000.0).values
            elif indicator == "distance":
                st = rioxarray.open_rasterio(st_path, chunks={"y": chunk, "x": chunk}).squeeze("band", drop=True)
                res = L.distance_to(st, 1000.0).values
            else:
                p = L.label_patches(nat)
                area_ha = float((canon != 255).sum().compute()) * CELL * CELL / 1e4
                r = compute_connectivity(p.labels, p.cells, CELL, CELL, area_ha, 1000.0, 1e-6)
                info = {"pc": r.pc, "eca_ha": r.eca_ha, "n_patches": int(len(r.table)), "n_edges": r.n_edges,
                        "connector_exact_share": float(r.table.dpc_connector_exact.mean())}
                res = None
    else:
        import rasterio
        import scipy.ndimage as ndi

        with rasterio.open(lc_path) as src:
            codes = src.read(1)
        if indicator.endswith("_crop"):
            codes = codes[_crop(codes.shape[0]), _crop(codes.shape[1])]
        lut = np.full(256, 255, np.uint8)
        lut[scheme.codes] = scheme.canonical
        canon = lut[codes]
        del codes
        if indicator == "reclass":
            res = canon
        elif indicator == "patches":
            res = ndi.label(attribute_array(canon, "natural", table) == 1, structure=np.ones((3, 3)))[0]
        elif indicator == "local_share":
            from pipeline.kernels.focal import disk_footprint, disk_half_widths
            nat = attribute_array(canon, "natural", table).astype(np.float64)
            valid = ~np.isnan(nat)
            fp = disk_footprint(disk_half_widths(1000.0, CELL, CELL)).astype(np.float64)
            if nat.size <= FFT_ABOVE:
                num = ndi.convolve(np.where(valid, nat, 0.0), fp, mode="constant")
                den = ndi.convolve(valid.astype(np.float64), fp, mode="constant")
            else:       # direct convolution of a 67 x 67 disk would take ~45 min at 1e8 cells
                from scipy.signal import oaconvolve
                num = oaconvolve(np.where(valid, nat, 0.0), fp, mode="same")
                den = np.round(oaconvolve(valid.astype(np.float64), fp, mode="same"))   # counts
                info = {"reference_method": "scipy.signal.oaconvolve (FFT, overlap-add)"}
            with np.errstate(invalid="ignore", divide="ignore"):
                res = np.where(valid & (den > 0), num / den, np.nan)
        elif indicator == "distance":
            with rasterio.open(st_path) as src:
                st = src.read(1) == 1
            res = np.minimum(ndi.distance_transform_edt(~st, sampling=(CELL, CELL)), 1000.0)
        else:
            import networkx as nx

            from pipeline.indicators.connectivity import boundary_points, patch_edges
            lab, n = ndi.label(attribute_array(canon, "natural", table) == 1, structure=np.ones((3, 3)))
            area = np.bincount(lab.ravel())[1:] * CELL * CELL / 1e4
            rows, cols, ids = boundary_points(lab)
            ei, ej, d = patch_edges(rows, cols, ids, CELL, CELL, 1000.0)
            k = math.log(2) / 1000.0
            G = nx.Graph()
            G.add_nodes_from(range(1, n + 1))
            G.add_weighted_edges_from(zip(ei.tolist(), ej.tolist(), (k * d).tolist()))
            limit = -math.log(1e-6)
            N = 0.0
            for s in range(1, n + 1):
                dist = nx.single_source_dijkstra_path_length(G, s, cutoff=limit)
                N += area[s - 1] * sum(area[j - 1] * math.exp(-v) for j, v in dist.items())
            A_L = float((canon != 255).sum()) * CELL * CELL / 1e4
            info = {"pc": N / A_L ** 2, "eca_ha": math.sqrt(N), "n_patches": int(n), "n_edges": int(ei.size)}
            res = None
    wall = time.perf_counter() - t0
    if res is not None:
        np.save(out, res)
    return {"work_s": wall, **info}


def _crop(size: int) -> slice:
    side = min(size, int(math.sqrt(CROP_CELLS)))
    start = (size - side) // 2
    return slice(start, start + side)


def _run_child(indicator: str, tool: str, lc: Path, st: Path, out: Path, chunk: int, timeout: float) -> dict:
    code_line = ("import json, sys; from bench.landcover import _child; "
                 "print(json.dumps(_child(*sys.argv[1:6], int(sys.argv[6]))))")
    cmd = [sys.executable, "-c", code_line, indicator, tool, str(lc), str(st), str(out), str(chunk)]
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=str(Path(__file__).resolve().parents[1]))
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - t0 > timeout:
            proc.kill()
            os.wait4(proc.pid, 0)
            return {"indicator": indicator, "tool": tool, "ok": False, "error": f"timeout after {timeout:.0f} s"}
        time.sleep(0.05)
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    code = os.waitstatus_to_exitcode(status)
    res = {"indicator": indicator, "tool": tool, "ok": code == 0, "process_wall_s": time.perf_counter() - t0,
           "peak_rss_mb": usage.ru_maxrss / 1024.0}
    if code == 0:
        res.update(json.loads(stdout.strip().splitlines()[-1]))
    else:
        res["error"] = (stderr.strip().splitlines() or ["?"])[-1][:300]
    return res


def _compare_in_child(indicator: str, ours: Path, ref: Path, r_ours: dict, r_ref: dict) -> dict:
    """:func:`_compare` in a subprocess, so the parent never holds a raster (see
    :func:`_write_inputs_in_child`)."""
    code = ("import json, sys; from pathlib import Path; from bench.landcover import _compare; "
            "a = json.loads(sys.argv[1]); "
            "print(json.dumps(_compare(a[0], Path(a[1]), Path(a[2]), a[3], a[4])))")
    arg = json.dumps([indicator, str(ours), str(ref), r_ours, r_ref])
    out = subprocess.run([sys.executable, "-c", code, arg], check=True, capture_output=True, text=True,
                         cwd=str(Path(__file__).resolve().parents[1]))
    return json.loads(out.stdout.strip().splitlines()[-1])


def _compare(indicator: str, ours: Path, ref: Path, r_ours: dict, r_ref: dict) -> dict:
    if indicator.startswith("connectivity"):
        if not (r_ours.get("ok") and r_ref.get("ok")):
            return {}
        return {"pc_rel_diff": abs(r_ours["pc"] - r_ref["pc"]) / max(abs(r_ref["pc"]), 1e-300),
                "same_graph": r_ours["n_patches"] == r_ref["n_patches"] and r_ours["n_edges"] == r_ref["n_edges"]}
    if not (ours.exists() and ref.exists()):
        return {}
    a, b = np.load(ours, mmap_mode="r"), np.load(ref, mmap_mode="r")
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
        nan_same = bool(np.array_equal(np.isnan(a64), np.isnan(b64)))
        diff = float(np.nanmax(np.abs(a64 - b64))) if a.size else 0.0
        return {"max_abs_diff": diff, "nan_mask_equal": nan_same}
    return {"identical": bool(np.array_equal(a, b))}


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench landcover", description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=float, default=1e7, help="cells of the synthetic raster (default 1e7)")
    ap.add_argument("--large", action="store_true", help="use 1e8 cells")
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--indicators", default=None,
                    help=f"comma list (default: all up to 2e6 cells, above {','.join(LARGE_INDICATORS)}: the "
                         "synthetic cover is one dense patch graph, ~6 000 patches per 1e6 cells)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per child process")
    ap.add_argument("--out", type=Path, default=Path("outputs/bench"))
    args = ap.parse_args(argv)
    return run(args)


def run(args) -> int:
    """Run the benchmark for an argparse namespace (see :func:`main` for the options)."""
    if isinstance(args, (list, tuple)) or args is None:
        return main(list(args or []))
    n = int(1e8 if getattr(args, "large", False) else getattr(args, "size", 1e7))
    chunk = int(getattr(args, "chunk", 2048))
    default = LARGE_INDICATORS if n > FULL_CONNECTIVITY_MAX else INDICATORS
    inds = [s for s in str(getattr(args, "indicators", None) or ",".join(default)).split(",") if s]
    out_dir = Path(getattr(args, "out", Path("outputs/bench")))
    timeout = float(getattr(args, "timeout", 3600.0))
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {"cells": n, "chunk": chunk, "cell_m": CELL, "seed": SEED, "cores": os.cpu_count(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench_landcover_", dir=out_dir) as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        lc, st = _write_inputs_in_child(work, n)
        results["generate_s"] = time.perf_counter() - t0
        print(f"synthetic land cover {n:.0e} cells written in {results['generate_s']:.1f} s", flush=True)
        for ind in inds:
            rr = {}
            for tool in ("ours", REFERENCE[ind]):
                if ind == "connectivity" and tool != "ours":
                    rr[tool] = {"indicator": ind, "tool": tool, "ok": False,
                                "error": "skipped: networkx reference only on the central crop (connectivity_crop)"}
                    continue
                out = work / f"{ind}_{tool}.npy"
                rr[tool] = _run_child(ind, tool, lc, st, out, chunk, timeout)
                print(_fmt(rr[tool]), flush=True)
            cmp = _compare_in_child(ind, work / f"{ind}_ours.npy", work / f"{ind}_{REFERENCE[ind]}.npy",
                                    rr["ours"], rr[REFERENCE[ind]])
            for tool in rr:
                (work / f"{ind}_{tool}.npy").unlink(missing_ok=True)
            results["runs"].append({"indicator": ind, "ours": rr["ours"], "reference": rr[REFERENCE[ind]],
                                    "comparison": cmp})
            print(f"    check: {cmp}", flush=True)
    path = out_dir / "landcover.json"
    path.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(_table(results))
    print(f"written {path}")
    return 0


def _fmt(r: dict) -> str:
    if not r.get("ok"):
        word = "" if str(r.get("error", "")).startswith("skipped") else "FAILED: "
        return f"  {r['indicator']:<13} {r['tool']:<9} {word}{r.get('error')}"
    return f"  {r['indicator']:<13} {r['tool']:<9} {r['work_s']:8.1f} s  {r['peak_rss_mb']:8.0f} MB"


def _table(results: dict) -> str:
    lines = [f"\nland-cover indicators, {results['cells']:.0e} cells, chunk {results['chunk']}",
             f"{'indicator':<13} {'ours s':>8} {'ours MB':>8} {'ref':<9} {'ref s':>8} {'ref MB':>8}  check"]
    for run in results["runs"]:
        o, r = run["ours"], run["reference"]

        def v(d, k, f="{:8.1f}"):
            return f.format(d[k]) if d.get("ok") and k in d else f"{'-':>8}"
        lines.append(f"{run['indicator']:<13} {v(o, 'work_s')} {v(o, 'peak_rss_mb', '{:8.0f}')} "
                     f"{r['tool']:<9} {v(r, 'work_s')} {v(r, 'peak_rss_mb', '{:8.0f}')}  {run['comparison']}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
