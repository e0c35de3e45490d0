"""Rulebook -> points -> ratings -> function scores, with a trace of every decision.

Input: the indicator table (one row per site x vintage; columns `site_id`, `vintage`,
`year` and the indicators of `pipeline/indicators/catalog.py`). Output: the same
rows with, per rule, `pts_<rule>` (e.g. `pts_WQ_S1`), per function x scale the summed
points `<F>_<s>_pts` and the rating `<F>_<s>` (1/2/3), per function the score
`WQ`/`HY`/`HB` (3..9) and `total`; plus a long trace table (one row per site x
vintage x rule) saying which indicator value gave which points and why.

Every number comes from the rulebook (`configs/scoring.yaml`); nothing is hard-coded here.
"""

from __future__ import annotations

import logging
import operator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.errors import InputDataError, PipelineError, ValidationFailed
from pipeline.indicators.catalog import BY_NAME
from pipeline.scoring.rulebook import FUNCTIONS, SCALES, Band, Rule, Rulebook, Scorer

log = logging.getLogger(__name__)

KEY_COLUMNS: tuple[str, ...] = ("site_id", "vintage", "year")
TRACE_COLUMNS: tuple[str, ...] = (
    "site_id", "vintage", "year", "rule", "function", "scale", "indicator", "value",
    "alternative", "matched", "points", "missing", "note",
)

_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
        "==": operator.eq}


def pts_column(rule_id: str) -> str:
    return "pts_" + rule_id.replace("-", "_")


def scale_points_column(function: str, scale: str) -> str:
    return f"{function}_{scale}_pts"


def rating_column(function: str, scale: str) -> str:
    return f"{function}_{scale}"


def alt_column(rule_id: str) -> str:
    return "alt_" + rule_id.replace("-", "_")


@dataclass(frozen=True)
class _Col:
    values: np.ndarray   # float64, NaN where missing; bools as 1.0/0.0
    missing: np.ndarray  # bool


def _column(df: pd.DataFrame, name: str) -> _Col:
    s = df[name]
    missing = s.isna().to_numpy(dtype=bool)
    if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        out = s.to_numpy(dtype=np.float64, na_value=np.nan)
    else:  # object column (e.g. bools mixed with NaN where a layer is missing)
        out = np.full(len(s), np.nan)
        try:
            for i, (v, m) in enumerate(zip(s.tolist(), missing)):
                if not m:
                    out[i] = float(v)
        except (TypeError, ValueError):
            raise InputDataError(f"indicator column '{name}' holds a non-numeric value {v!r}",
                                 field=name, fix="indicators must be numbers, bools or NaN") from None
    if BY_NAME[name].unit == "bool":
        bad = ~missing & (out != 0.0) & (out != 1.0)
        if bad.any():
            raise InputDataError(f"bool indicator '{name}' holds {float(out[bad][0])!r}", field=name,
                                 fix="use True/False (or NaN where the layer is missing)")
    return _Col(out, missing)


def check_indicator_table(df: pd.DataFrame, book: Rulebook) -> None:
    """Every problem of the indicator table at once (missing columns, duplicate rows)."""
    problems: list[PipelineError] = []
    need = list(KEY_COLUMNS) + book.used_indicators()
    absent = [c for c in need if c not in df.columns]
    if absent:
        problems.append(InputDataError(f"indicator table lacks column(s) {absent}",
                                       field=", ".join(absent),
                                       fix="compute them with pipeline.indicators (names in "
                                           "pipeline/indicators/catalog.py)"))
    elif df.duplicated(["site_id", "vintage"]).any():
        dups = df.loc[df.duplicated(["site_id", "vintage"], keep=False), ["site_id", "vintage"]]
        first = dups.drop_duplicates().head(5).to_records(index=False).tolist()
        problems.append(InputDataError(f"indicator table has several rows for the same "
                                       f"site x vintage, e.g. {first}", field="site_id, vintage",
                                       fix="keep one row per site and vintage"))
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ValidationFailed(problems)


def _band_text(book: Rulebook, main: str, b: Band) -> str:
    ind = b.indicator or main
    thr = b.threshold if isinstance(b.threshold, bool) else book.threshold(b)
    text = f"{ind} {b.op} {str(thr).lower() if isinstance(thr, bool) else f'{thr:g}'}"
    if b.param:
        text += f" ({b.param})"
    if b.condition is not None:
        c = b.condition
        ct = str(c.threshold).lower() if isinstance(c.threshold, bool) else f"{float(c.threshold):g}"
        text += f" and {c.indicator} {c.op} {ct}"
    return text


def _apply_scorer(book: Rulebook, sc: Scorer, cols: dict[str, _Col], rows: np.ndarray,
                  points: np.ndarray, matched: np.ndarray) -> None:
    """Write points and the matched band text into `points`/`matched` at `rows`."""
    main = cols[sc.indicator]
    if sc.per_unit is not None:
        v = main.values[rows]
        if (v < 0).any() or (v != np.floor(v)).any():
            bad = float(v[(v < 0) | (v != np.floor(v))][0])
            raise InputDataError(f"count indicator '{sc.indicator}' holds {bad!r}; counts must be "
                                 "whole numbers >= 0", field=sc.indicator,
                                 fix="fix the count in the site attributes")
        points[rows] = sc.per_unit * v
        matched[rows] = [f"{sc.per_unit} x {x:g} {sc.indicator}" for x in v]
        return
    todo = rows.copy()
    bands = sc.bands if sc.bands is not None else [
        Band(op="==", threshold=True, points=sc.when_true)]
    for b in bands:
        col = cols[b.indicator or sc.indicator]
        hit = todo & ~col.missing & _OPS[b.op](np.nan_to_num(col.values), book.threshold(b))
        if b.condition is not None:
            c = cols[b.condition.indicator]
            hit &= ~c.missing & _OPS[b.condition.op](np.nan_to_num(c.values),
                                                    float(b.condition.threshold))
        points[hit] = b.points
        matched[hit] = _band_text(book, sc.indicator, b)
        todo &= ~hit
    points[todo] = sc.default
    matched[todo] = "default"


def _apply_rule(book: Rulebook, rule: Rule, cols: dict[str, _Col], n: int) -> dict[str, np.ndarray]:
    points = np.zeros(n, dtype=np.float64)
    matched = np.full(n, "", dtype=object)
    used_ind = np.full(n, "", dtype=object)
    label = np.full(n, "", dtype=object)
    note = np.full(n, "", dtype=object)
    value = np.full(n, np.nan)
    remaining = np.ones(n, dtype=bool)
    scorers = rule.scorers
    skipped: list[str] = []
    for k, sc in enumerate(scorers):
        main = cols[sc.indicator]
        rows = remaining & ~main.missing
        _apply_scorer(book, sc, cols, rows, points, matched)
        used_ind[rows] = sc.indicator
        label[rows] = (sc.label or sc.indicator) if rule.alternatives is not None else ""
        value[rows] = main.values[rows]
        if skipped:
            note[rows] = f"{', '.join(skipped)} is NaN; used {sc.label or sc.indicator}"
        remaining &= ~rows
        skipped.append(sc.indicator)
    if remaining.any():
        points[remaining] = rule.nan_points
        matched[remaining] = "NaN"
        used_ind[remaining] = ", ".join(s.indicator for s in scorers)
        label[remaining] = "missing"
        msg = rule.missing_note or "indicator missing"
        note[remaining] = f"{msg} ({rule.nan_points} points)"
        if not rule.optional:
            log.warning("%s: %d row(s) have no value for %s (not an optional layer); gave %d points",
                        rule.id, int(remaining.sum()), used_ind[remaining][0], rule.nan_points)
    if rule.cap is not None:
        over = points > rule.cap
        matched[over] = [f"{m} (capped at {rule.cap})" for m in matched[over]]
        points = np.minimum(points, rule.cap)
    miss = np.full(n, "", dtype=object)
    for name in rule.indicators():
        m = cols[name].missing
        miss[m] = [f"{x}, {name}" if x else name for x in miss[m]]
    return {"points": points.astype(np.int64), "matched": matched, "indicator": used_ind,
            "alternative": label, "note": note, "value": value, "missing": miss}


def score_table(indicators: pd.DataFrame, book: Rulebook) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply the rulebook to every row. Returns (scores table, trace table)."""
    check_indicator_table(indicators, book)
    df = indicators.sort_values(["site_id", "year", "vintage"], kind="stable").reset_index(drop=True)
    n = len(df)
    cols = {name: _column(df, name) for name in book.used_indicators()}
    out = df.copy()
    traces = []
    new: dict[str, np.ndarray] = {}
    for rule in book.rules:
        res = _apply_rule(book, rule, cols, n)
        if rule.alternatives is not None:
            new[alt_column(rule.id)] = res["alternative"]
        new[rule.column] = res["points"]
        traces.append(pd.DataFrame({
            "site_id": df["site_id"].to_numpy(), "vintage": df["vintage"].to_numpy(),
            "year": df["year"].to_numpy(), "rule": rule.id, "function": rule.function,
            "scale": rule.scale, "indicator": res["indicator"], "value": res["value"],
            "alternative": res["alternative"], "matched": res["matched"],
            "points": res["points"], "missing": res["missing"], "note": res["note"],
        }))
    for f in FUNCTIONS:
        score = np.zeros(n, dtype=np.int64)
        for s in SCALES:
            rt = book.rating(f, s)
            pts = np.zeros(n, dtype=np.int64)
            for r in book.rules_for(f, s):
                pts += new[r.column]
            if rt.points_cap is not None:
                pts = np.minimum(pts, rt.points_cap)
            rating = np.where(pts >= rt.high_min, 3, np.where(pts >= rt.medium_min, 2, 1))
            new[scale_points_column(f, s)] = pts
            new[rating_column(f, s)] = rating.astype(np.int64)
            score += rating
        new[f] = score
    new["total"] = new["WQ"] + new["HY"] + new["HB"]
    out = pd.concat([out, pd.DataFrame(new, index=out.index)], axis=1)
    trace = pd.concat(traces, ignore_index=True) if traces else pd.DataFrame(columns=TRACE_COLUMNS)
    rule_order = {r.id: i for i, r in enumerate(book.rules)}
    trace = (trace.assign(_o=trace["rule"].map(rule_order))
             .sort_values(["site_id", "year", "vintage", "_o"], kind="stable")
             .drop(columns="_o").reset_index(drop=True))
    return out, trace[list(TRACE_COLUMNS)]


def trace_for(trace: pd.DataFrame, site_id: object, vintage: str | None = None) -> list[dict]:
    """The trace rows of one site (optionally one vintage) as plain dicts."""
    sel = trace["site_id"] == site_id
    if vintage is not None:
        sel &= trace["vintage"] == vintage
    return trace.loc[sel].to_dict("records")
