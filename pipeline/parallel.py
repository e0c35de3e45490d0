"""Which dask scheduler runs the tiled steps.

Without an address, dask's local threaded scheduler runs the tiles (the numba
kernels release the GIL, so threads use every core). With an address, a
`distributed.Client` connects to that cluster and every tiled step runs there.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import ExitStack, contextmanager

import dask

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)


def local_scheduler(name: str):
    """dask's local scheduler `name` ("threads", "synchronous") as its get function.

    dask resolves a scheduler given by name by first importing dask.distributed to look
    for a client (0.15-0.2 s per process); given the function, it calls it. The
    computations are the same.
    """
    import dask.local
    import dask.threaded

    return {"threads": dask.threaded.get, "synchronous": dask.local.get_sync}[name]


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def connect_timeout() -> str:
    """How long to keep trying to reach a scheduler: ``ECOCREDIT_SCHEDULER_TIMEOUT``
    (a dask duration, e.g. ``60s`` or ``2min``; default ``20s``)."""
    from dask.utils import parse_timedelta

    value = os.environ.get("ECOCREDIT_SCHEDULER_TIMEOUT", "").strip() or "20s"
    try:
        if parse_timedelta(value) <= 0:
            raise ValueError
    except (ValueError, TypeError, KeyError):
        raise ConfigError(f"ECOCREDIT_SCHEDULER_TIMEOUT must be a positive duration, got {value!r}",
                          field="ECOCREDIT_SCHEDULER_TIMEOUT", fix="use e.g. 20s, 90s or 2min") from None
    return value


@contextmanager
def dask_scheduler(address: str | None = None, workers: int | None = None):
    """Run the enclosed dask work on `address` (a distributed scheduler) or locally."""
    if address:
        from distributed import Client

        timeout = connect_timeout()
        try:
            client = Client(address, timeout=timeout, set_as_default=True)
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"cannot reach the dask scheduler at {address} within {timeout} ({exc})",
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
        with ExitStack() as stack:
            # the threaded scheduler as a function, and "tasks" rechunking (what dask chooses
            # without a distributed client): each spares dask's check for a client, which
            # imports dask.distributed (local_scheduler)
            stack.enter_context(dask.config.set({"scheduler": local_scheduler("threads"), "num_workers": n,
                                                 "array.rechunk.method": "tasks"}))
            if show_progress():
                from dask.diagnostics import ProgressBar

                # a bar on every tiled computation that lasts more than two seconds
                stack.enter_context(ProgressBar(minimum=2.0, out=sys.stderr))
            log.debug("dask: local threaded scheduler, %d workers", n)
            yield None


def show_progress() -> bool:
    """Progress bars on a terminal, or when ECOCREDIT_PROGRESS=1 (logs stay clean in cron jobs)."""
    flag = os.environ.get("ECOCREDIT_PROGRESS")
    if flag is not None:
        return flag == "1"
    return sys.stderr.isatty()
