"""RunOutputs joins and checks (pipeline/report/model.py)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures_run import build_run
from pipeline.errors import InputDataError, OutputError
from pipeline.report.model import CELLS, FUNCTIONS, atomic_path, project_totals, site_layer, validate_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return build_run(tmp_path_factory.mktemp("run"))


def test_worked_check_site_joins_scores_and_credits(run):
    # Site P1-A is METHOD.md §7's example: pre scores (4, 4, 3), post (7, 6, 7), A = 2.0 ha,
    # TF = 1, RF = 0.5 -> credits = 2.0 x (3, 2, 4) x 0.5 = (3.0, 2.0, 4.0), total 9.0.
    s = site_layer(run).set_index("site_id").loc["P1-A"]
    assert (s["WQ_pre"], s["HY_pre"], s["HB_pre"]) == (4, 4, 3)
    assert (s["WQ_post"], s["HY_post"], s["HB_post"]) == (7, 6, 7)
    assert (s["credit_WQ"], s["credit_HY"], s["credit_HB"]) == pytest.approx((3.0, 2.0, 4.0))
    assert s["credit_total"] == pytest.approx(9.0)
    assert s["debit_total"] == 0.0
    # a function score is the sum of its three ratings
    for f in FUNCTIONS:
        assert s[f"{f}_post"] == sum(s[f"{f}_{sc}_post"] for sc in "SLV")


def test_site_layer_keeps_every_site_and_all_columns(run):
    s = site_layer(run)
    assert list(s["site_id"]) == list(run.sites["site_id"])
    assert s.crs == run.sites.crs
    for c in CELLS:
        assert s[f"{c}_pre"].isin([1, 2, 3]).all() and s[f"{c}_post"].isin([1, 2, 3]).all()
    # credit columns add up to the credits table, debits likewise
    assert s["credit_total"].sum() == pytest.approx(run.credits["credit"].sum())
    assert s["debit_total"].sum() == pytest.approx(run.credits["debit"].sum())


def test_project_totals_derived_from_credits(run):
    pt = project_totals(run).set_index("project_id")
    # P1 = P1-A (9.0) + P1-B; computed independently here from the credit rows
    p1 = run.credits[run.credits.project_id == "P1"]
    assert pt.loc["P1", "credit_total"] == pytest.approx(p1["credit"].sum())
    assert pt.loc["D1", "debit_total"] == pytest.approx(run.credits.loc[run.credits.project_id == "D1", "debit"].sum())
    assert pt.loc["D1", "debit_total"] > 0
    for f in FUNCTIONS:
        assert pt[f"credit_{f}"].sum() == pytest.approx(run.credits.loc[run.credits.function == f, "credit"].sum())


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.permutations(range(5)))
def test_site_order_does_not_change_results(run, order):
    base = site_layer(run).set_index("site_id")
    perm = run.sites.iloc[list(order)].reset_index(drop=True)
    shuffled = type(run)(**{**run.__dict__, "sites": perm})
    got = site_layer(shuffled).set_index("site_id").loc[base.index]
    cols = [c for c in base.columns if c.startswith(("credit_", "debit_")) or c.endswith(("_pre", "_post"))]
    assert (got[cols].to_numpy() == base[cols].to_numpy()).all()


def test_validate_reports_every_missing_column_at_once(run):
    broken = type(run)(**{**run.__dict__, "credits": run.credits.drop(columns=["tf", "credit"]),
                          "ledger": run.ledger.drop(columns=["verdict"])})
    with pytest.raises(InputDataError) as exc:
        validate_run(broken)
    msg = str(exc.value)
    assert "credits: missing column(s) tf, credit" in msg and "ledger: missing column(s) verdict" in msg
    assert "how to fix" in msg


def test_validate_needs_both_vintages(run):
    bad = type(run)(**{**run.__dict__, "assessment": ("lc2099", 2099)})
    with pytest.raises(InputDataError, match="assessment vintage 'lc2099'"):
        validate_run(bad)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["a.txt"]


def test_atomic_path_unwritable_folder_is_typed_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write"):
        with atomic_path(blocker / "sub" / "a.txt"):
            pass


def test_validate_rejects_unknown_stage_and_kind(run):
    sites = run.sites.copy()
    sites.loc[0, "stage"] = "finished"
    sites.loc[1, "kind"] = "mitigation"
    with pytest.raises(InputDataError) as exc:
        validate_run(type(run)(**{**run.__dict__, "sites": sites}))
    assert "unknown stage value(s) finished" in str(exc.value)
    assert "unknown kind value(s) mitigation" in str(exc.value)
