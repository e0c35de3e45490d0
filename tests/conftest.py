from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# property tests draw new examples on every run (a developer's runs keep exploring);
# HYPOTHESIS_PROFILE=ci (.ci/run) draws the same examples every time, so a CI result is
# reproduced by running the same command, and a red CI run is a change, not a draw
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))

from pipeline.demo import build_tiny_basin  # noqa: E402


@pytest.fixture(scope="session")
def tiny_template(tmp_path_factory) -> Path:
    """The tiny basin built once per session (copy it before mutating)."""
    folder = tmp_path_factory.mktemp("tiny_template")
    build_tiny_basin(folder)
    return folder


@pytest.fixture
def tiny(tmp_path, tiny_template) -> Path:
    """A private copy of the tiny basin; returns its configuration path."""
    import shutil

    dst = tmp_path / "basin"
    shutil.copytree(tiny_template, dst)
    return dst / "tiny.yaml"


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
            preexec=None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real command line (`python -m pipeline ...`) in a subprocess."""
    e = dict(os.environ)
    e.pop("ECOCREDIT_PROGRESS", None)
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd or REPO, env=e,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=preexec)
