"""Stage and time factor from construction dates vs the assessment date (METHOD.md §6)."""

from __future__ import annotations

import datetime as dt

import hypothesis.strategies as st
import pandas as pd
import pytest
from hypothesis import given, settings

from pipeline.errors import InputDataError
from pipeline.scoring.rulebook import load_rulebook
from pipeline.scoring.stage import add_years, as_date, stage_and_tf, stage_of

BOOK = load_rulebook()
D = dt.date
START, DONE = D(2018, 3, 1), D(2019, 6, 15)


@pytest.mark.parametrize(("start", "done", "when", "stage", "tf"), [
    (None, None, D(2024, 1, 1), "planned", 0.0),                 # no start date
    (D(2024, 1, 2), None, D(2024, 1, 1), "planned", 0.0),        # starts tomorrow
    (D(2024, 1, 1), None, D(2024, 1, 1), "under_construction", 0.14),  # starts today
    (START, None, D(2024, 1, 1), "under_construction", 0.14),   # never completed
    (START, D(2024, 1, 2), D(2024, 1, 1), "under_construction", 0.14),  # completes tomorrow
    (START, DONE, DONE, "completed", 0.30),                      # completed today
    (START, DONE, D(2021, 6, 14), "completed", 0.30),            # 1 day short of 2 years
    (START, DONE, D(2021, 6, 15), "established", 0.65),          # exactly 2 years
    (START, DONE, D(2024, 6, 14), "established", 0.65),          # 1 day short of 5 years
    (START, DONE, D(2024, 6, 15), "long_term", 1.0),             # exactly 5 years
    (START, DONE, D(2040, 1, 1), "long_term", 1.0),
])
def test_stage_boundaries(start, done, when, stage, tf):
    assert stage_and_tf(start, done, when, BOOK) == (stage, tf)


def test_feb_29_completion():
    # completed 29 Feb 2020: 2 calendar years later is 28 Feb 2022 (no 29 Feb in 2022)
    assert add_years(D(2020, 2, 29), 2) == D(2022, 2, 28)
    assert add_years(D(2020, 2, 29), 4) == D(2024, 2, 29)
    start, done = D(2019, 5, 1), D(2020, 2, 29)
    assert stage_of(start, done, D(2022, 2, 27), BOOK) == "completed"
    assert stage_of(start, done, D(2022, 2, 28), BOOK) == "established"
    assert stage_of(start, done, D(2025, 2, 27), BOOK) == "established"
    assert stage_of(start, done, D(2025, 2, 28), BOOK) == "long_term"


def test_date_inputs_of_any_form():
    for start in ("2018-03-01", pd.Timestamp("2018-03-01"), dt.datetime(2018, 3, 1, 12)):
        assert stage_and_tf(start, "2019-06-15", D(2021, 6, 15), BOOK)[0] == "established"
    for missing in (None, pd.NaT, float("nan"), "", "  "):
        assert as_date(missing) is None
        assert stage_and_tf(missing, missing, D(2024, 1, 1), BOOK)[0] == "planned"


def test_inconsistent_dates_are_input_errors():
    with pytest.raises(InputDataError, match="before construction start"):
        stage_of(D(2020, 1, 1), D(2019, 1, 1), D(2024, 1, 1), BOOK, site="s1")
    with pytest.raises(InputDataError, match="without a construction start"):
        stage_of(None, D(2019, 1, 1), D(2024, 1, 1), BOOK)
    with pytest.raises(InputDataError, match="not a date"):
        as_date("15/06/2019")


def test_boundaries_follow_config():
    import copy

    import yaml

    from pipeline.scoring.rulebook import DEFAULT_PATH, from_dict
    data = copy.deepcopy(yaml.safe_load(DEFAULT_PATH.read_text(encoding="utf-8")))
    data["stages"]["established"]["min_years_after_completion"] = 3
    data["stages"]["established"]["tf"] = 0.5
    book = from_dict(data)
    assert stage_and_tf(START, DONE, D(2021, 6, 15), book) == ("completed", 0.30)
    assert stage_and_tf(START, DONE, D(2022, 6, 15), book) == ("established", 0.5)


@settings(deadline=None)
@given(start=st.dates(D(1990, 1, 1), D(2030, 12, 31)),
       build_days=st.integers(0, 2000), offset=st.integers(-4000, 6000))
def test_tf_never_decreases_with_time(start, build_days, offset):
    done = start + dt.timedelta(days=build_days)
    when = done + dt.timedelta(days=offset)
    later = when + dt.timedelta(days=1)
    _, tf1 = stage_and_tf(start, done, when, BOOK)
    _, tf2 = stage_and_tf(start, done, later, BOOK)
    assert tf1 <= tf2
    assert tf1 in (0.0, 0.14, 0.30, 0.65, 1.0)
