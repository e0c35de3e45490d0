"""Time the land-cover indicator step (pipeline.indicators.landscape) on a synthetic basin.

    PYTHONPATH=<tree> python bench/landcover_step.py [--size 2e7] [--chunk 2048] [--out DIR]

The clumpy CLCD cover of :mod:`bench.landcover` is generated at a sixteenth of the
cells and each cell repeated 4 x 4 (fewer, larger patches, so connectivity stays a
small part of the step); the D8 grid sends every cell east, south-east or south at
random (acyclic, every path leaves the grid) and the streams are the generator's.
Prints the time of :func:`landscape_rasters` (the eager part: upstream shares,
patches, connectivity) and of :func:`compute_landscape_indicators` (everything,
including the COG writes), per raster from the log, and writes the rasters to
``DIR`` so that two code trees (``PYTHONPATH``) can be compared pixel for pixel.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import dask
import dask.array as dsa
import numpy as np
import xarray as xr

CELL = 30.0


def synthetic_inputs(n_cells: int, chunk: int):
    """(canonical, d8, accumulation, streams) DataArrays on a 30 m UTM grid, dask-chunked."""
    import rioxarray  # noqa: F401
    from rasterio.transform import from_origin

    from bench.landcover import synthetic_landcover
    from pipeline.io.classes import load_scheme
    from pipeline.ops.hydrology import flow_accumulation

    lc, st = synthetic_landcover(n_cells // 16)
    lc = np.repeat(np.repeat(lc, 4, axis=0), 4, axis=1)
    st = np.repeat(np.repeat(st, 4, axis=0), 4, axis=1)
    scheme = load_scheme("clcd")
    lut = np.full(256, 255, np.uint8)
    lut[scheme.codes] = scheme.canonical
    canon = lut[lc]
    rng = np.random.default_rng(7)
    d8 = np.array([1, 2, 4], np.uint8)[rng.integers(0, 3, canon.shape)]
    ny, nx = canon.shape
    transform = from_origin(400000, 4500000, CELL, CELL)

    def da(a, name):
        out = xr.DataArray(dsa.from_array(a, chunks=chunk), dims=("y", "x"), name=name,
                           coords={"y": 4500000 - CELL * (np.arange(ny) + 0.5),
                                   "x": 400000 + CELL * (np.arange(nx) + 0.5)})
        return out.rio.write_crs("EPSG:32650").rio.write_transform(transform)

    d8da = da(d8, "d8")
    return da(canon, "canonical"), d8da, flow_accumulation(d8da), da(st, "streams")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=float, default=2e7)
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--out", type=Path, default=Path("/tmp/lc_step"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(relativeCreated)9.0f ms %(name)s: %(message)s")
    dask.config.set(scheduler="threads", num_workers=2)
    from pipeline.indicators import landscape

    canon, d8, acc, st = synthetic_inputs(int(args.size), args.chunk)
    print(f"{canon.size:.2e} cells, chunk {args.chunk}", flush=True)
    t0 = time.perf_counter()
    landscape.landscape_rasters(canon, d8, acc, st, {})
    t1 = time.perf_counter()
    landscape.compute_landscape_indicators(canon, d8, acc, st, {}, args.out)
    t2 = time.perf_counter()
    print(f"landscape_rasters {t1 - t0:.1f} s; compute_landscape_indicators {t2 - t1:.1f} s", flush=True)


if __name__ == "__main__":
    main()
