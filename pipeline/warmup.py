"""Compile the numba kernels once (run by `make` after installing).

Runs the full assessment of a small generated basin in a temporary folder, which
touches every kernel with the dtypes the pipeline uses; numba caches the machine
code next to the modules, so the first real run does not pay for compilation.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)


def warmup() -> None:
    from pipeline.assess import assess
    from pipeline.demo import build_tiny_basin

    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ecocredit-warmup-") as tmp:
        cfg = build_tiny_basin(Path(tmp) / "basin")
        logging.getLogger().setLevel(logging.WARNING)
        assess(cfg, out=Path(tmp) / "out")
    print(f"numba kernels compiled and cached ({time.perf_counter() - t:.0f} s)")
