"""score_sites: indicator table + site table -> scores, credits, ledger, traces."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import pandas as pd

from pipeline.errors import InputDataError
from pipeline.scoring.credits import compute_credits
from pipeline.scoring.ledger import basin_ledger, overall_verdict, project_totals
from pipeline.scoring.points import score_table
from pipeline.scoring.rulebook import Rulebook, load_rulebook
from pipeline.scoring.stage import as_date

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoringResult:
    site_scores: pd.DataFrame     # site x vintage: indicators, points, ratings, scores
    credits: pd.DataFrame         # site x function (credits.CREDIT_COLUMNS)
    ledger: pd.DataFrame          # per function + 'all' (ledger.LEDGER_COLUMNS)
    project_totals: pd.DataFrame  # per project
    traces: pd.DataFrame          # site x vintage x rule (points.TRACE_COLUMNS)

    @property
    def verdict(self) -> str:
        """'no net loss' only if every function holds (see docs/outputs.md)."""
        return overall_verdict(self.ledger)


def score_sites(indicators: pd.DataFrame, sites: pd.DataFrame, baseline: str, assessment: str,
                assessment_date: dt.date, rulebook: Rulebook | None = None) -> ScoringResult:
    """Score every site x vintage, then credit/debit each site from `baseline` to `assessment`.

    `indicators`: one row per site x vintage (site_id, vintage, year + catalog indicators).
    `sites`: site_id, project_id, name, kind ('restoration' | 'impact'), project_type,
    construction_start, completion (dates or NaT), area_ha, compensation (optional).
    The result does not depend on the row order of either table.
    """
    book = rulebook if rulebook is not None else load_rulebook()
    when = as_date(assessment_date, field="assessment_date")
    if when is None:
        raise InputDataError("no assessment date given", field="assessment_date",
                             fix="set the assessment date (YYYY-MM-DD)")
    vintages = set(indicators["vintage"]) if "vintage" in indicators.columns else set()
    for name, v in (("baseline", baseline), ("assessment", assessment)):
        if v not in vintages:
            raise InputDataError(f"{name} vintage '{v}' has no indicator rows "
                                 f"(vintages present: {sorted(map(str, vintages))})",
                                 field=name, fix="name a vintage that was computed")
    scores, traces = score_table(indicators, book)
    credits = compute_credits(scores, sites, baseline, assessment, when, book)
    ledger = basin_ledger(credits)
    totals = project_totals(credits)
    log.info("scored %d site x vintage rows; %d sites credited/debited; verdict: %s",
             len(scores), credits["site_id"].nunique() if len(credits) else 0,
             overall_verdict(ledger))
    return ScoringResult(scores, credits, ledger, totals, traces)
