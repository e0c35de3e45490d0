"""`assess --scheduler` on a real dask.distributed cluster (TCP scheduler, 2 worker processes).

The cluster is started the way an analyst would start one by hand (`dask scheduler`,
`dask worker`), the assessment of the shipped Xixian demo basin runs on it, and its
tables and rasters must be byte-identical to a run on the default local scheduler.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, run_cli

DASK = Path(sys.executable).with_name("dask")
CONFIG = REPO / "configs" / "xixian.yaml"
COMPARED = ("tables/*.csv", "tables/*.parquet", "hydrology/*.tif", "indicators/*/*.tif",
            "indicators/*/*.csv", "rasters/*.tif")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for pattern in COMPARED for p in sorted(root.glob(pattern))}


def _scheduler_transitions(address: str) -> int:
    code = ("from distributed import Client\n"
            f"c = Client('{address}', timeout='20s')\n"
            "print(c.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter))\n"
            "c.close()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def cluster(tmp_path):
    if not DASK.exists():
        pytest.skip(f"the dask command line is not installed next to {sys.executable}")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, DASK_DISTRIBUTED__WORKER__DAEMON="False")
    logs = [open(tmp_path / n, "w") for n in ("scheduler.log", "workers.log")]
    procs = [subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], stdout=logs[0], stderr=subprocess.STDOUT, env=env)]
    procs.append(subprocess.Popen([str(DASK), "worker", address, "--nworkers", "2", "--nthreads", "1",
                                   "--no-dashboard", "--local-directory", str(tmp_path / "dask-worker")],
                                  stdout=logs[1], stderr=subprocess.STDOUT, env=env, cwd=REPO))
    try:
        deadline = time.time() + 60
        while True:
            text = (tmp_path / "workers.log").read_text()
            if text.count("Registered to") >= 2:
                break
            if time.time() > deadline or any(p.poll() is not None for p in procs):
                pytest.fail("the dask cluster did not start:\n" + text +
                            (tmp_path / "scheduler.log").read_text())
            time.sleep(0.5)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs:
            f.close()


def test_assess_on_a_distributed_cluster_equals_local(cluster, tmp_path):
    local = tmp_path / "local"
    res = run_cli("assess", str(CONFIG), "--out", str(local))
    assert res.returncode == 0, res.stderr

    before = _scheduler_transitions(cluster)
    remote = tmp_path / "remote"
    res = run_cli("assess", str(CONFIG), "--out", str(remote), "--scheduler", cluster)
    assert res.returncode == 0, res.stderr
    assert "(2 workers)" in res.stderr, res.stderr
    assert _scheduler_transitions(cluster) > before + 100, "no tasks ran on the cluster"

    a, b = _digests(local), _digests(remote)
    assert len(a) > 30 and a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []


def test_unreachable_scheduler_is_a_clear_error(tmp_path):
    res = run_cli("validate", str(CONFIG))
    assert res.returncode == 0
    # the connection is retried for ECOCREDIT_SCHEDULER_TIMEOUT (default 20 s; 2 s here)
    res = run_cli("assess", str(CONFIG), "--out", str(tmp_path / "out"),
                  "--scheduler", f"tcp://127.0.0.1:{_free_port()}", env={"ECOCREDIT_SCHEDULER_TIMEOUT": "2s"})
    assert res.returncode == 1
    assert "cannot reach the dask scheduler" in res.stderr and "within 2s" in res.stderr
    assert "how to fix" in res.stderr
    assert "traceback" not in res.stderr.lower()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["soon", "0s"])
def test_bad_scheduler_timeout_is_a_clear_error(tmp_path, value):
    res = run_cli("assess", str(CONFIG), "--out", str(tmp_path / "out"),
                  "--scheduler", f"tcp://127.0.0.1:{_free_port()}", env={"ECOCREDIT_SCHEDULER_TIMEOUT": value})
    assert res.returncode == 1
    assert "ECOCREDIT_SCHEDULER_TIMEOUT" in res.stderr and "positive duration" in res.stderr
    assert "traceback" not in res.stderr.lower()
    assert not (tmp_path / "out").exists()
