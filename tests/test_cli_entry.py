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


def test_versions_and_client_lookup_do_not_import_distributed():
    """A local run records dask.distributed's installed version without importing it, and
    finds no client (in a fresh interpreter: this test session may have imported it)."""
    import importlib.metadata
    import subprocess
    import sys

    code = ("import sys, json; from pipeline.runlog import versions; from pipeline.run import current_client; "
            "v = versions(); c = current_client(); "
            "print(json.dumps([v['distributed'], v['pandas'], c is None, 'distributed' in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    import json

    dist, pandas_version, no_client, imported = json.loads(proc.stdout.splitlines()[-1])
    assert dist == importlib.metadata.version("distributed")
    assert pandas_version == importlib.metadata.version("pandas")
    assert no_client and not imported


def test_a_local_assessment_never_imports_distributed(tiny, tmp_path):
    """dask resolves a scheduler given by name, and chooses a rechunk method, by importing
    dask.distributed to look for a client; a local run names neither (pipeline.parallel),
    so the whole assessment runs without the import."""
    import subprocess
    import sys

    code = ("import sys; from pipeline.cli import main; "
            f"code = main(['assess', {str(tiny)!r}, '--out', {str(tmp_path / 'out')!r}]); "
            "print('distributed imported:', 'distributed' in sys.modules); sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distributed imported: False" in proc.stdout, proc.stdout[-2000:]


def test_heap_is_settled_only_in_a_one_command_process(monkeypatch):
    """settle_heap collects and freezes in the process of pipeline.cli.run only: a test
    session or notebook calling the steps keeps collecting everything."""
    from pipeline import runlog

    calls = []
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append("collect") or 0)
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(runlog, "ONE_SHOT", False)
    runlog.settle_heap()
    assert calls == []
    monkeypatch.setattr(runlog, "ONE_SHOT", True)
    runlog.settle_heap()
    assert calls == ["collect", "freeze"]


def test_run_marks_the_process_one_shot(monkeypatch):
    from pipeline import runlog

    seen = {}
    monkeypatch.setattr(runlog, "ONE_SHOT", False)
    monkeypatch.setattr(cli, "main", lambda: seen.setdefault("one_shot", runlog.ONE_SHOT) and 0)
    monkeypatch.setattr(gc, "freeze", lambda: None)
    with pytest.raises(SystemExit):
        cli.run()
    assert seen == {"one_shot": True}
