"""Credits of restoration sites and debits of impact sites, per function (METHOD.md §6).

    restoration:  stock_pre  = A_ha x score_pre,  stock_post = A_ha x score_post
                  credit     = (stock_post - stock_pre) x TF(stage) x RF(project type)
    impact:       debit      = A_ha x (score_pre - score_post) x TLF(compensation)

Debits are not scaled by TF or RF (the loss happens in full when the impact is
built); credits are not scaled by TLF. A factor that does not apply to a row is
NaN in the table. A restoration that lost score keeps its negative credit and is
flagged; an impact site that gained score gets a negative debit, also flagged.
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pandas as pd

from pipeline.errors import InputDataError, PipelineError, ValidationFailed
from pipeline.scoring.rulebook import COMPENSATIONS, FUNCTIONS, Rulebook
from pipeline.scoring.stage import stage_and_tf

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("restoration", "impact")
SITE_COLUMNS: tuple[str, ...] = ("site_id", "project_id", "kind", "project_type",
                                 "construction_start", "completion", "area_ha")
CREDIT_COLUMNS: tuple[str, ...] = (
    "project_id", "site_id", "kind", "project_type", "function", "area_ha",
    "score_pre", "score_post", "stock_pre", "stock_post", "delta_stock",
    "stage", "tf", "rf", "tlf", "credit", "debit", "compensation", "flag",
)


def _raise(problems: list[PipelineError]) -> None:
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ValidationFailed(problems)


def _text(v: object) -> str | None:
    if v is None:
        return None
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return str(v).strip() or None


def check_sites(sites: pd.DataFrame) -> None:
    """Every problem of the site table at once."""
    problems: list[PipelineError] = []
    absent = [c for c in SITE_COLUMNS if c not in sites.columns]
    if absent:
        _raise([InputDataError(f"site table lacks column(s) {absent}", field=", ".join(absent),
                               fix="add them to the site layer's attributes (docs/outputs.md)")])
    dup = sites.loc[sites["site_id"].duplicated(), "site_id"].tolist()
    if dup:
        problems.append(InputDataError(f"site_id not unique: {dup[:5]}", field="site_id",
                                       fix="give every site its own id"))
    bad_kind = sorted({str(k) for k in sites["kind"] if _text(k) not in KINDS})
    if bad_kind:
        problems.append(InputDataError(f"unknown site kind(s) {bad_kind}", field="kind",
                                       fix=f"use one of {list(KINDS)}"))
    if "compensation" in sites.columns:
        bad = sorted({str(c) for c in sites["compensation"]
                      if _text(c) is not None and _text(c) not in COMPENSATIONS})
        if bad:
            problems.append(InputDataError(f"unknown compensation value(s) {bad}",
                                           field="compensation",
                                           fix=f"use one of {list(COMPENSATIONS)} or leave empty"))
    if sites["project_id"].isna().any():
        ids = sites.loc[sites["project_id"].isna(), "site_id"].tolist()
        problems.append(InputDataError(f"site(s) {ids[:5]} have no project_id", field="project_id",
                                       fix="assign every site to a project"))
    _raise(problems)


def _area(site: dict, indicator_area: float) -> float:
    """The site table's area_ha, else the indicators' area_ha of the assessment vintage."""
    for v in (site.get("area_ha"), indicator_area):
        try:
            a = float(v)
        except (TypeError, ValueError):
            continue
        if np.isfinite(a):
            if a <= 0:
                raise InputDataError(f"site '{site['site_id']}' has area_ha {a}", field="area_ha",
                                     fix="area must be > 0 ha; check the site polygon")
            return a
    raise InputDataError(f"site '{site['site_id']}' has no area_ha", field="area_ha",
                         fix="give area_ha in the site table or in the indicators")


def compute_credits(site_scores: pd.DataFrame, sites: pd.DataFrame, baseline: str,
                    assessment: str, assessment_date: dt.date, book: Rulebook) -> pd.DataFrame:
    """One row per site x function (see CREDIT_COLUMNS and docs/outputs.md)."""
    check_sites(sites)
    area_col = (site_scores["area_ha"].to_numpy(dtype=np.float64, na_value=np.nan)
                if "area_ha" in site_scores.columns else np.full(len(site_scores), np.nan))
    scores = {(sid, v): (dict(zip(FUNCTIONS, fs)), a) for sid, v, fs, a in zip(
        site_scores["site_id"], site_scores["vintage"],
        site_scores[list(FUNCTIONS)].to_numpy(dtype=np.int64), area_col)}
    missing = [(s, v) for s in sites["site_id"] for v in (baseline, assessment)
               if (s, v) not in scores]
    if missing:
        raise InputDataError(f"no indicator row for site x vintage {missing[:5]}"
                             f"{' ...' if len(missing) > 5 else ''} ({len(missing)} missing)",
                             field="site_id, vintage",
                             fix=f"compute indicators of every site for the baseline '{baseline}' "
                                 f"and the assessment '{assessment}' vintages")
    rows = []
    ordered = sites.sort_values(["project_id", "site_id"], kind="stable")
    for site in ordered.to_dict("records"):
        sid = site["site_id"]
        (pre, _), (post, post_area) = scores[(sid, baseline)], scores[(sid, assessment)]
        area = _area(site, post_area)
        kind = _text(site["kind"])
        ptype = _text(site["project_type"])
        comp = _text(site.get("compensation")) or book.temporal_loss_factor.default_compensation
        stage, tf = stage_and_tf(site["construction_start"], site["completion"], assessment_date,
                                 book, site=sid)
        for f in FUNCTIONS:
            s_pre, s_post = int(pre[f]), int(post[f])
            stock_pre, stock_post = area * s_pre, area * s_post
            delta = stock_post - stock_pre
            flag = ""
            if kind == "restoration":
                rf = book.risk_factor(ptype)
                credit, debit, tlf = delta * tf * rf, 0.0, np.nan
                tf_col, rf_col = tf, rf
                if delta < 0:
                    flag = "negative credit: the restored site lost score"
            else:
                tlf = book.tlf(comp)
                credit, debit = 0.0, area * (s_pre - s_post) * tlf
                tf_col = rf_col = np.nan
                if s_post > s_pre:
                    flag = "negative debit: the impact site gained score"
            rows.append({
                "project_id": site["project_id"], "site_id": sid, "kind": kind,
                "project_type": ptype, "function": f, "area_ha": area,
                "score_pre": s_pre, "score_post": s_post, "stock_pre": stock_pre,
                "stock_post": stock_post, "delta_stock": delta, "stage": stage,
                "tf": tf_col, "rf": rf_col, "tlf": tlf, "credit": credit, "debit": debit,
                "compensation": comp if kind == "impact" else None, "flag": flag,
            })
    out = pd.DataFrame(rows, columns=list(CREDIT_COLUMNS))
    n_neg = int((out["flag"] != "").sum()) if len(out) else 0
    if n_neg:
        log.warning("%d site x function row(s) flagged (negative credit or debit); see the "
                    "'flag' column of the credits table", n_neg)
    return out
