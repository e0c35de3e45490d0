"""Basin ledger and project totals (METHOD.md §6).

Per function, the basin's credits (sum over restoration sites, negative credits
included) are set against its debits (sum over impact sites). "no net loss" holds
for a function when credits >= debits; overall only when it holds for every
function (a surplus in one function never offsets a loss in another). Ties within
a relative 1e-9 count as equal, so float rounding cannot flip a verdict.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.scoring.rulebook import FUNCTIONS

NO_NET_LOSS = "no net loss"
NET_LOSS = "net loss"
LEDGER_COLUMNS: tuple[str, ...] = ("function", "credits", "debits", "net", "verdict")
_REL_TOL = 1e-9


def holds(credits: float, debits: float) -> bool:
    """credits >= debits, with a relative tolerance for float rounding."""
    return credits >= debits - _REL_TOL * max(1.0, abs(credits), abs(debits))


def basin_ledger(credits: pd.DataFrame) -> pd.DataFrame:
    """Rows WQ, HY, HB and 'all'. The 'all' verdict is 'no net loss' only if every
    function's is; its credits/debits/net are plain sums shown for information."""
    rows = []
    for f in FUNCTIONS:
        sel = credits["function"] == f
        c = float(credits.loc[sel, "credit"].sum())
        d = float(credits.loc[sel, "debit"].sum())
        rows.append({"function": f, "credits": c, "debits": d, "net": c - d,
                     "verdict": NO_NET_LOSS if holds(c, d) else NET_LOSS})
    every = all(r["verdict"] == NO_NET_LOSS for r in rows)
    c = float(sum(r["credits"] for r in rows))
    d = float(sum(r["debits"] for r in rows))
    rows.append({"function": "all", "credits": c, "debits": d, "net": c - d,
                 "verdict": NO_NET_LOSS if every else NET_LOSS})
    return pd.DataFrame(rows, columns=list(LEDGER_COLUMNS))


def overall_verdict(ledger: pd.DataFrame) -> str:
    return str(ledger.loc[ledger["function"] == "all", "verdict"].iloc[0])


def project_totals(credits: pd.DataFrame) -> pd.DataFrame:
    """One row per project: credits and debits per function, their totals and the net."""
    cols = (["project_id", "n_sites", "area_ha"]
            + [f"credit_{f}" for f in FUNCTIONS] + ["credit_total"]
            + [f"debit_{f}" for f in FUNCTIONS] + ["debit_total", "net_total"])
    if credits.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for pid, g in credits.groupby("project_id", sort=True):
        per_site = g.drop_duplicates("site_id")
        row = {"project_id": pid, "n_sites": int(per_site["site_id"].nunique()),
               "area_ha": float(per_site["area_ha"].sum())}
        for kind in ("credit", "debit"):
            for f in FUNCTIONS:
                row[f"{kind}_{f}"] = float(g.loc[g["function"] == f, kind].sum())
            row[f"{kind}_total"] = float(np.sum([row[f"{kind}_{f}"] for f in FUNCTIONS]))
        row["net_total"] = row["credit_total"] - row["debit_total"]
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)
