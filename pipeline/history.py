"""Credits over time: every site x function x land-cover vintage, against the baseline.

The official credits (tables/credits.csv) compare the baseline with the assessment
vintage at the assessment date. The history table repeats that comparison for
every vintage, each at the vintage's own date, so a basin authority sees how
credits built up as restoration matured and new land cover arrived:

* the date of a vintage is 31 December of its year, except the assessment vintage,
  which is dated at the configured ``assessment_date`` (so its rows equal the
  credits table);
* stage and time factor (TF) are those at that date (a vintage before a project
  started gives stage ``planned``, TF 0);
* credit, debit, TF, RF and TLF are computed by ``pipeline.scoring.credits.compute_credits``,
  the same code as the official credits.

Columns of tables/history.csv / history.parquet (:data:`HISTORY_COLUMNS`):

============== ================================================================
site_id        site
project_id     project of the site
kind           restoration | impact
function       WQ | HY | HB
vintage        land-cover vintage name
year           year of the vintage
date           date the stage/TF was evaluated at (ISO)
role           baseline | assessment | intermediate
area_ha        site area
score          function score of this vintage (3..9)
score_baseline function score of the baseline vintage
stock          area_ha x score
stock_baseline area_ha x score_baseline
delta_stock    stock - stock_baseline
stage          project stage at ``date``
tf             time factor at ``date`` (restoration; empty for impact sites)
rf             risk factor (restoration)
tlf            temporal loss factor (impact)
credit         delta_stock x tf x rf (restoration sites; 0 for impact sites)
debit          area_ha x (score_baseline - score) x tlf (impact sites; 0 otherwise)
net            credit - debit
============== ================================================================

Rows are ordered by site_id, function (WQ, HY, HB) and year.
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

FUNCTIONS = ("WQ", "HY", "HB")
HISTORY_COLUMNS: tuple[str, ...] = (
    "site_id", "project_id", "kind", "function", "vintage", "year", "date", "role", "area_ha",
    "score", "score_baseline", "stock", "stock_baseline", "delta_stock", "stage", "tf", "rf",
    "tlf", "credit", "debit", "net",
)


def vintage_date(year: int, is_assessment: bool, assessment_date: dt.date) -> dt.date:
    """The date a vintage's stage and TF are evaluated at (see the module documentation)."""
    return assessment_date if is_assessment else dt.date(int(year), 12, 31)


def history_table(site_scores: pd.DataFrame, sites: pd.DataFrame, vintages: list[tuple[str, int]],
                  baseline: str, assessment: str, assessment_date: dt.date, book) -> pd.DataFrame:
    """The history table (columns :data:`HISTORY_COLUMNS`).

    `site_scores`: the scored table (one row per site x vintage with WQ/HY/HB scores),
    `sites`: the site attributes the credits need, `vintages`: (name, year) of every
    vintage, oldest first.
    """
    from pipeline.scoring.credits import compute_credits

    parts = []
    for name, year in vintages:
        when = vintage_date(year, name == assessment, assessment_date)
        c = compute_credits(site_scores, sites, baseline, name, when, book)
        c = c.assign(vintage=name, year=int(year), date=when.isoformat(),
                     role="baseline" if name == baseline else
                     ("assessment" if name == assessment else "intermediate"))
        parts.append(c)
    if not parts:
        return pd.DataFrame(columns=list(HISTORY_COLUMNS))
    df = pd.concat(parts, ignore_index=True)
    df = df.rename(columns={"score_post": "score", "score_pre": "score_baseline",
                            "stock_post": "stock", "stock_pre": "stock_baseline"})
    df["net"] = df["credit"].astype(float) - df["debit"].astype(float)
    df["_f"] = df["function"].map({f: i for i, f in enumerate(FUNCTIONS)})
    df = df.sort_values(["site_id", "_f", "year"], kind="stable").reset_index(drop=True)
    return df[list(HISTORY_COLUMNS)]


def write_history(site_scores: pd.DataFrame, sites: pd.DataFrame, cfg, book, layout) -> pd.DataFrame:
    """Compute the history of a run and write tables/history.csv and history.parquet."""
    from pipeline.io.tables import write_csv, write_parquet

    df = history_table(site_scores, sites, [(v.name, v.year) for v in cfg.landcover],
                       cfg.baseline_name, cfg.assessment_name, cfg.assessment_date, book)
    write_csv(df, layout.table("history.csv"))
    write_parquet(df, layout.table("history.parquet"))
    log.info("history: %d site x function x vintage rows over %d vintages", len(df),
             df["vintage"].nunique() if len(df) else 0)
    return df


def basin_history(history: pd.DataFrame) -> pd.DataFrame:
    """Basin totals per function and vintage: credits, debits, net (for the chart and report)."""
    g = history.groupby(["function", "vintage", "year"], sort=False)[["credit", "debit", "net"]].sum()
    g = g.reset_index()
    g["_f"] = g["function"].map({f: i for i, f in enumerate(FUNCTIONS)})
    return g.sort_values(["_f", "year"], kind="stable").drop(columns="_f").reset_index(drop=True)


MAX_NAMED_PROJECTS = 8   # projects named in the history chart's legend; more are drawn in grey


def history_figure(history: pd.DataFrame, title: str | None = None):
    """'Change over time' chart: per function, net credit of each project and of the basin.

    Returns a matplotlib Figure (no pyplot state); x = vintage year, y = net credit
    (credit - debit) in score x ha. Up to :data:`MAX_NAMED_PROJECTS` projects are named
    in the legend, each in the same colour in every panel; with more, those with the
    largest net credit or debit in the newest vintage are named and the others are
    thin grey lines under one legend entry (a legend of 150 projects would be taller
    than the page).
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(9, 3.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(FUNCTIONS), sharey=True))
    proj = history.groupby(["function", "project_id", "year"], sort=True)["net"].sum().reset_index()
    basin = basin_history(history)
    named = _named_projects(proj)
    colour = {pid: f"C{i % 10}" for i, pid in enumerate(named)}
    others = proj["project_id"].nunique() - len(named)
    years = sorted(int(y) for y in history["year"].unique())
    crowded = len(years) > 2 and min(np.diff(years)) < (years[-1] - years[0]) / 6
    for ax, f in zip(axes, FUNCTIONS):
        sub = proj[proj["function"] == f]
        for pid, rows in sub.groupby("project_id", sort=True):
            if pid in colour:
                ax.plot(rows["year"], rows["net"], marker="o", linewidth=1.2, color=colour[pid],
                        label=str(pid), zorder=3)
            else:
                ax.plot(rows["year"], rows["net"], linewidth=0.7, color="0.72", zorder=2,
                        label="_other")
        b = basin[basin["function"] == f]
        ax.plot(b["year"], b["net"], color="black", linewidth=2.2, linestyle="--", marker="s",
                label="basin", zorder=4)
        ax.axhline(0, color="0.6", linewidth=0.8)
        ax.set_title(f)
        ax.set_xlabel("land-cover year")
        ax.set_xticks(years)
        if crowded:   # e.g. 2015, 2023, 2024: upright labels of close years run into each other
            ax.tick_params(axis="x", labelrotation=60)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("net credit (score x ha)")
    handles = [Line2D([], [], marker="o", linewidth=1.2, color=colour[p], label=str(p)) for p in named]
    if others:
        handles.append(Line2D([], [], linewidth=0.7, color="0.72", label=f"{others} other projects"))
    handles.append(Line2D([], [], color="black", linewidth=2.2, linestyle="--", marker="s", label="basin"))
    fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def _named_projects(proj: pd.DataFrame) -> list:
    """The projects the history chart names: all up to MAX_NAMED_PROJECTS, else those with
    the largest absolute net (any function) in the newest vintage, in id order."""
    ids = sorted(proj["project_id"].unique(), key=str)
    if len(ids) <= MAX_NAMED_PROJECTS:
        return ids
    last = proj[proj["year"] == proj["year"].max()]
    size = last.assign(a=last["net"].abs()).groupby("project_id")["a"].max()
    size = size.reindex(ids).fillna(0.0)
    top = size.sort_values(ascending=False, kind="stable").index[:MAX_NAMED_PROJECTS]
    return sorted(top, key=str)
