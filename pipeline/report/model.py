"""What the report writers receive from a finished run, and how they write files.

`RunOutputs` is the one object the orchestrator hands to `write_geopackage`,
`write_report` (and the raster writer `write_cog` is called per raster before).
Its tables are the run's trace; every column the writers read is listed here.

Columns
-------
sites (GeoDataFrame, polygons, projected metre CRS)
    site_id, project_id, name, kind ("restoration" | "impact"), project_type,
    stage (planned | under_construction | completed | established | long_term),
    tf (time factor), area_ha.  Any further column is kept as is.  Ratings,
    scores and credits are NOT needed here: the writers join them from the
    tables below (columns ``<cell>_pre``/``<cell>_post``, ``<fn>_pre``,
    ``<fn>_post``, ``credit_<fn>``, ``debit_<fn>``, ``credit_total``,
    ``debit_total``; see `site_layer`).
site_scores (DataFrame, one row per site x vintage)
    site_id, vintage, year, the indicators of `pipeline.indicators.catalog`
    (any subset), ``pts_<rule>`` points (e.g. pts_WQ_S1), the nine ratings
    WQ_S WQ_L WQ_V HY_S HY_L HY_V HB_S HB_L HB_V (1..3) and the three scores
    WQ HY HB (3..9).
credits (DataFrame, one row per site x function)
    project_id, site_id, kind, project_type, function (WQ|HY|HB), area_ha,
    score_pre, score_post, stock_pre, stock_post, delta_stock, stage, tf, rf,
    tlf, credit, debit.
ledger (DataFrame, one row per function)
    function, credits, debits, net, verdict.
project_totals (DataFrame or None)
    project_id, credit_WQ, credit_HY, credit_HB, credit_total, debit_total;
    derived from ``credits`` when None.
parameters: list of dicts name, value, unit, source, assumption (bool).
inputs: list of dicts role, path, sha256, source (source / licence text).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import geopandas as gpd
import pandas as pd

from pipeline.errors import InputDataError, OutputError

log = logging.getLogger(__name__)

FUNCTIONS: tuple[str, ...] = ("WQ", "HY", "HB")
SCALES: tuple[str, ...] = ("S", "L", "V")
CELLS: tuple[str, ...] = tuple(f"{f}_{s}" for f in FUNCTIONS for s in SCALES)

FUNCTION_ZH = {"WQ": "水质净化", "HY": "水文调节", "HB": "生境保护"}
FUNCTION_EN = {"WQ": "Water purification", "HY": "Hydrologic regulation", "HB": "Habitat"}
SCALE_ZH = {"S": "场地效力", "L": "景观效力", "V": "社会效力"}
RATING_ZH = {1: "低", 2: "中", 3: "高"}
STAGES: tuple[str, ...] = ("planned", "under_construction", "completed", "established", "long_term")
STAGE_ZH = {"planned": "规划中（实施前）", "under_construction": "实施中", "completed": "竣工不足2年",
            "established": "竣工2-5年", "long_term": "竣工5年以上"}
KIND_ZH = {"restoration": "修复工程", "impact": "开发影响"}

SITE_COLUMNS = ("site_id", "project_id", "name", "kind", "project_type", "stage", "tf", "area_ha")
SCORE_COLUMNS = ("site_id", "vintage", "year", *CELLS, *FUNCTIONS)
CREDIT_COLUMNS = ("project_id", "site_id", "kind", "project_type", "function", "area_ha",
                  "score_pre", "score_post", "stock_pre", "stock_post", "delta_stock",
                  "stage", "tf", "rf", "tlf", "credit", "debit")
LEDGER_COLUMNS = ("function", "credits", "debits", "net", "verdict")


@dataclass
class RunOutputs:
    """Everything a finished run produced that the deliverables show (see module doc)."""

    basin_name: str
    basin_title: str
    out_dir: Path
    assessment_date: date
    baseline: tuple[str, int]
    assessment: tuple[str, int]
    vintages: list[tuple[str, int]]
    crs: str
    resolution_m: float
    boundary: gpd.GeoDataFrame
    streams: gpd.GeoDataFrame
    sites: gpd.GeoDataFrame
    near_rings: gpd.GeoDataFrame
    ring1k: gpd.GeoDataFrame
    site_scores: pd.DataFrame
    credits: pd.DataFrame
    ledger: pd.DataFrame
    project_totals: pd.DataFrame | None = None
    history: pd.DataFrame | None = None        # site x function x vintage (pipeline.history)
    layers: dict[str, gpd.GeoDataFrame] = field(default_factory=dict)
    rasters: dict[str, Path] = field(default_factory=dict)
    parameters: list[dict] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    inputs: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.rasters = {k: Path(v) for k, v in self.rasters.items()}


def _missing(df: pd.DataFrame, cols) -> list[str]:
    return [c for c in cols if c not in df.columns]


def validate_run(run: RunOutputs) -> None:
    """Check that every column the writers read is present; report all problems at once."""
    problems = []
    for name, df, cols in (("sites", run.sites, SITE_COLUMNS), ("site_scores", run.site_scores, SCORE_COLUMNS),
                           ("credits", run.credits, CREDIT_COLUMNS), ("ledger", run.ledger, LEDGER_COLUMNS),
                           ("streams", run.streams, ("upstream_area_km2",))):
        miss = _missing(df, cols)
        if miss:
            problems.append(f"{name}: missing column(s) {', '.join(miss)}")
    if "stage" in run.sites.columns:
        bad = sorted(set(map(str, run.sites["stage"])) - set(STAGES))
        if bad:
            problems.append(f"sites: unknown stage value(s) {', '.join(bad)} (expected one of {', '.join(STAGES)})")
    if "kind" in run.sites.columns:
        bad = sorted(set(map(str, run.sites["kind"])) - set(KIND_ZH))
        if bad:
            problems.append(f"sites: unknown kind value(s) {', '.join(bad)} (expected restoration or impact)")
    if run.site_scores is not None and not run.site_scores.empty:
        vint = set(run.site_scores["vintage"])
        for role, (vname, _) in (("baseline", run.baseline), ("assessment", run.assessment)):
            if vname not in vint:
                problems.append(f"site_scores: no rows for the {role} vintage '{vname}'")
    if problems:
        raise InputDataError("run outputs are incomplete for the report: " + "; ".join(problems),
                             field="RunOutputs",
                             fix="pass the tables with the columns documented in pipeline/report/model.py")


def project_totals(run: RunOutputs) -> pd.DataFrame:
    """Per project: credit per function, total credit and total debit."""
    if run.project_totals is not None:
        return run.project_totals
    c = run.credits
    wide = c.pivot_table(index="project_id", columns="function", values="credit", aggfunc="sum").reindex(
        columns=list(FUNCTIONS)).fillna(0.0)
    wide.columns = [f"credit_{f}" for f in wide.columns]
    wide["credit_total"] = wide.sum(axis=1)
    wide["debit_total"] = c.groupby("project_id")["debit"].sum().reindex(wide.index).fillna(0.0)
    return wide.reset_index()


def site_layer(run: RunOutputs) -> gpd.GeoDataFrame:
    """The sites joined with pre/post ratings and scores and per-function credits and debits."""
    sites = run.sites.copy()
    sc = run.site_scores
    for suffix, (vname, _) in (("pre", run.baseline), ("post", run.assessment)):
        part = sc.loc[sc["vintage"] == vname, ["site_id", *CELLS, *FUNCTIONS]].copy()
        part = part.rename(columns={c: f"{c}_{suffix}" for c in (*CELLS, *FUNCTIONS)})
        sites = sites.merge(part, on="site_id", how="left")
    cr = run.credits
    for val in ("credit", "debit"):
        w = cr.pivot_table(index="site_id", columns="function", values=val, aggfunc="sum").reindex(
            columns=list(FUNCTIONS))
        w.columns = [f"{val}_{f}" for f in w.columns]
        w[f"{val}_total"] = w.sum(axis=1, min_count=1)
        sites = sites.merge(w.reset_index(), on="site_id", how="left")
    for col in [c for c in sites.columns if c.startswith(("credit_", "debit_"))]:
        sites[col] = sites[col].fillna(0.0).astype("float64")
    return gpd.GeoDataFrame(sites, geometry=run.sites.geometry.name, crs=run.sites.crs)


def assumptions(run: RunOutputs) -> list[dict]:
    return [p for p in run.parameters if bool(p.get("assumption"))]


@contextmanager
def atomic_path(path: Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` (os.replace)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix or path.suffix, dir=path.parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise OutputError(f"cannot write into {path.parent}: {exc.strerror}", path=path,
                          fix="check that the output folder exists and is writable") from exc
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path.name}: {exc.strerror or exc}", path=path,
                          fix="check free disk space and permissions of the output folder") from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_with(path: Path, writer: Callable[[Path], None]) -> Path:
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)
