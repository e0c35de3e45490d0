"""Which dask scheduler runs the tiled steps.

Without an address, dask's local threaded scheduler runs the tiles (the numba
kernels release the GIL, so threads use every core). With an address, a
`distributed.Client` connects to that cluster and every tiled step runs there.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

import dask

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


@contextmanager
def dask_scheduler(address: str | None = None, workers: int | None = None):
    """Run the enclosed dask work on `address` (a distributed scheduler) or locally."""
    if address:
        from distributed import Client

        try:
            client = Client(address, timeout="20s", set_as_default=True)
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"cannot reach the dask scheduler at {address} ({exc})",
                              field="--scheduler",
                              fix="start it with `dask scheduler` and workers with "
                                  "`dask worker ADDRESS`, or omit --scheduler to run locally") from None
        log.info("dask: connected to %s (%d workers)", address,
                 len(client.scheduler_info().get("workers", {})))
        try:
            yield client
        finally:
            client.close()
    else:
        n = workers or default_workers()
        with dask.config.set(scheduler="threads", num_workers=n):
            log.debug("dask: local threaded scheduler, %d workers", n)
            yield None
