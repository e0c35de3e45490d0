"""Command line. This is a contract: scheduled jobs and other tools call it.

    python -m pipeline assess CONFIG.yaml [--out DIR] [--chunk-size N] [--scheduler ADDRESS]
    python -m pipeline validate CONFIG.yaml
    python -m pipeline hydrology --dem DEM.tif --out DIR [--chunk-size N]
    python -m pipeline accumulate --d8 D8.tif --out ACC.tif [--chunk-size N]

Exit codes: 0 success, 1 bad input or configuration (message on stderr, nothing
written), 3 internal error (rerun with --debug for the traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import errno
import gc
import logging
import os
import sys
from pathlib import Path

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

EXIT_INTERNAL = 3


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Ecological credit assessment of watershed restoration projects "
                    "(流域生态保护修复工程效果的信用评估).")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    a = sub.add_parser("assess", help="run the full assessment of a basin")
    a.add_argument("config", type=Path, help="basin configuration (YAML)")
    a.add_argument("--out", type=Path, help="output folder (default outputs/<basin>/)")
    a.add_argument("--chunk-size", type=int, help="tile size in cells (default from config)")
    a.add_argument("--scheduler", help="dask.distributed scheduler address, e.g. tcp://10.0.0.5:8786")

    v = sub.add_parser("validate", help="check a configuration and every input; writes nothing")
    v.add_argument("config", type=Path)

    h = sub.add_parser("hydrology", help="fill, D8, accumulation and upstream area of a DEM")
    h.add_argument("--dem", type=Path, required=True)
    h.add_argument("--out", type=Path, required=True, help="output folder")
    h.add_argument("--chunk-size", type=int, default=2048)
    h.add_argument("--scheduler", help="dask.distributed scheduler address")

    c = sub.add_parser("accumulate", help="flow accumulation (cells) of a given D8 grid")
    c.add_argument("--d8", type=Path, required=True, help="D8 GeoTIFF in ESRI codes")
    c.add_argument("--out", type=Path, required=True, help="output GeoTIFF")
    c.add_argument("--chunk-size", type=int, default=2048)
    c.add_argument("--scheduler", help="dask.distributed scheduler address")

    r = sub.add_parser("reprocess", help="pick up new imagery from the basin inbox")
    r.add_argument("config", type=Path)
    r.add_argument("--out", type=Path)
    r.add_argument("--once", action="store_true", help="one pass, then exit (default)")

    sub.add_parser("warmup", help="compile the numba kernels (done once after install)")
    return p


def run() -> None:
    """The process entry (``python -m pipeline`` and the ``ecocredit`` script): :func:`main`,
    then exit with its code.

    Before the interpreter's exit the objects alive are moved out of the garbage
    collector's reach (``gc.freeze``): the exit then does not scan the ~2000 modules a run
    imports for reference cycles, which took 0.6-0.9 s per run (demo reprocess) and
    frees nothing the ending process needs. Every output is already written and closed;
    logging handlers are still flushed and closed by ``atexit``.
    """
    from pipeline import runlog

    runlog.ONE_SHOT = True          # see runlog.settle_heap
    code = main()
    gc.freeze()
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # GDAL's block cache defaults to 5 % of RAM per process (1.2 GB here); every raster
    # step streams tiles, so a small cache costs nothing and keeps peak memory to the
    # tiles (1e8-cell GeoTIFF write: 953 MB peak with the default, 672 MB with 128 MB).
    # An analyst's own GDAL_CACHEMAX wins.
    os.environ.setdefault("GDAL_CACHEMAX", "256")
    from pipeline.runlog import setup_console

    setup_console(verbose=args.debug)
    try:
        return _dispatch(args)
    except PipelineError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        if args.debug:
            raise
        return exc.exit_code
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EACCES, errno.EROFS):
            if args.debug:
                raise
            print(f"internal error: {type(exc).__name__}: {exc}\n  rerun with --debug and report "
                  "the traceback", file=sys.stderr)
            return EXIT_INTERNAL
        if args.debug:
            raise
        print(f"error: cannot write {exc.filename or 'an output'}: {exc.strerror}\n"
              "  how to fix: free disk space (or raise the quota), or choose a writable --out; "
              "published outputs were left as they were", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; published outputs were left as they were", file=sys.stderr)
        return 130
    except Exception as exc:  # an internal error: say so plainly
        if args.debug:
            raise
        print(f"internal error: {type(exc).__name__}: {exc}\n"
              "  this is a bug in the tool, not in your data; rerun with --debug and report "
              "the traceback", file=sys.stderr)
        return EXIT_INTERNAL


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "warmup":
        from pipeline.warmup import warmup

        warmup()
        return 0
    if args.command == "validate":
        from pipeline.assess import validate

        validate(args.config)
        return 0
    if args.command == "assess":
        from pipeline.assess import assess

        assess(args.config, out=args.out, chunk_size=args.chunk_size, scheduler=args.scheduler)
        return 0
    if args.command == "hydrology":
        from pipeline.ops.hydrology import hydrology_to_files

        _check_file(args.dem, "--dem")
        with _scheduler(args.scheduler):
            paths = hydrology_to_files(args.dem, args.out, chunk_size=args.chunk_size)
        for name, p in paths.items():
            print(f"{name}: {p}")
        return 0
    if args.command == "accumulate":
        from pipeline.ops.hydrology import accumulate_to_file

        _check_file(args.d8, "--d8")
        with _scheduler(args.scheduler):
            accumulate_to_file(args.d8, args.out, chunk_size=args.chunk_size)
        print(f"accumulation: {args.out}")
        return 0
    if args.command == "reprocess":
        from pipeline.reprocess import reprocess

        return reprocess(args.config, out=args.out)
    raise AssertionError(args.command)


def _check_file(path: Path, flag: str) -> None:
    from pipeline.io.rasters import inspect_raster

    inspect_raster(path, flag)


def _scheduler(address: str | None):
    from pipeline.parallel import dask_scheduler

    return dask_scheduler(address)
