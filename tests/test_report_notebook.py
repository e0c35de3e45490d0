"""notebooks/walkthrough.ipynb runs top to bottom on a fake run's outputs (nbclient)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from fixtures_run import shared_outputs

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"


def _execute(env: dict, cwd: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def _text(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", ""))
            out.append(str(o.get("data", {}).get("text/plain", "")))
    return "\n".join(out)


@pytest.mark.slow
def test_walkthrough_runs_on_a_fake_run(tmp_path):
    run = shared_outputs()[0]
    nb = _execute({"ECOCREDIT_OUTPUTS": str(run.out_dir)}, tmp_path)
    text = _text(nb)
    # the site with the largest credit in the fixture is P1-B; its step-by-step check printed its total
    best = run.credits.groupby("site_id")["credit"].sum().idxmax()
    total = run.credits.loc[run.credits.site_id == best, "credit"].sum()
    assert f"site {best}: total credit {total:.4f}" in text
    assert "testbasin.gpkg" in text
    assert "report.pdf: present" in text
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in nb.cells for o in c.get("outputs", []))


@pytest.mark.slow
def test_walkthrough_says_how_to_produce_missing_outputs(tmp_path):
    with pytest.raises(CellExecutionError, match="make assess BASIN=yongding"):
        _execute({"ECOCREDIT_OUTPUTS": str(tmp_path / "nothing")}, tmp_path)
