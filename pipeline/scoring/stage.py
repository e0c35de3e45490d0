"""Project stage at the assessment date and its time factor TF (METHOD.md §6).

    no start date, or start after the assessment date    -> planned
    start <= assessment date, no completion by then      -> under_construction
    completion <= assessment date < completion + 2 y     -> completed
    completion + 2 y <= assessment date < completion + 5 y -> established
    completion + 5 y <= assessment date                  -> long_term

The year boundaries (`min_years_after_completion`) and the TF values come from
the `stages:` section of configs/scoring.yaml. Years are calendar years: a
completion on 29 February reaches its anniversary on 28 February of a common year.
All boundaries are inclusive on the later stage (exactly 2 years -> established).
"""

from __future__ import annotations

import datetime as dt
import logging

import pandas as pd

from pipeline.errors import InputDataError
from pipeline.scoring.rulebook import Rulebook

log = logging.getLogger(__name__)


def add_years(d: dt.date, years: int) -> dt.date:
    """`d` plus whole calendar years; 29 Feb -> 28 Feb when the target year is common."""
    try:
        return d.replace(year=d.year + years)
    except ValueError:  # 29 February into a common year
        return d.replace(year=d.year + years, day=28)


def as_date(value: object, *, field: str = "date") -> dt.date | None:
    """A date from a date/datetime/Timestamp/ISO string; None for missing (None/NaN/NaT/'')."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            return dt.date.fromisoformat(value.strip()[:10])
        except ValueError:
            raise InputDataError(f"'{value}' is not a date", field=field,
                                 fix="write dates as YYYY-MM-DD") from None
    if isinstance(value, pd.Timestamp):
        return value.date()
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    raise InputDataError(f"{value!r} is not a date", field=field, fix="write dates as YYYY-MM-DD")


def stage_of(construction_start: dt.date | None, completion: dt.date | None,
             assessment_date: dt.date, book: Rulebook, *, site: object = None) -> str:
    """The stage name at `assessment_date` (see the module docstring)."""
    where = f" of site '{site}'" if site is not None else ""
    if completion is not None and construction_start is None:
        raise InputDataError(f"completion date {completion} given without a construction start{where}",
                             field="construction_start",
                             fix="add the construction start date (or remove the completion date)")
    if completion is not None and completion < construction_start:
        raise InputDataError(f"completion {completion} is before construction start "
                             f"{construction_start}{where}", field="completion",
                             fix="correct the dates")
    if construction_start is None or construction_start > assessment_date:
        return "planned"
    if completion is None or completion > assessment_date:
        return "under_construction"
    st = book.stages
    for name in ("long_term", "established"):
        years = getattr(st, name).min_years_after_completion
        if assessment_date >= add_years(completion, years):
            return name
    return "completed"


def time_factor(stage: str, book: Rulebook) -> float:
    return getattr(book.stages, stage).tf


def stage_and_tf(construction_start: object, completion: object, assessment_date: dt.date,
                 book: Rulebook, *, site: object = None) -> tuple[str, float]:
    """Stage and TF from raw date values (date, Timestamp, ISO string or missing)."""
    start = as_date(construction_start, field="construction_start")
    done = as_date(completion, field="completion")
    name = stage_of(start, done, assessment_date, book, site=site)
    return name, time_factor(name, book)
