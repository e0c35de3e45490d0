"""The process entry (pipeline.cli.run): exits with main's code, the heap frozen first."""

from __future__ import annotations

import gc

import pytest

from pipeline import cli


@pytest.mark.parametrize("code", [0, 1, 2, 130])
def test_run_exits_with_mains_code_after_freezing(monkeypatch, code):
    seen = {}
    monkeypatch.setattr(cli, "main", lambda: code)
    monkeypatch.setattr(gc, "freeze", lambda: seen.setdefault("frozen", True))
    with pytest.raises(SystemExit) as exc:
        cli.run()
    assert exc.value.code == code and seen == {"frozen": True}



def test_module_entry_exits_with_the_error_code(tmp_path):
    """``python -m pipeline`` goes through run(): a missing configuration exits 1."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "pipeline", "validate", str(tmp_path / "none.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "none.yaml" in proc.stderr
