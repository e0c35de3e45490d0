"""The scoring rulebook: `configs/scoring.yaml` as a validated schema.

Everything the method scores with (METHOD.md §4, §6) is data in that file: method
parameters, stage time factors, risk and temporal-loss factors, the rating rules
of every indicator item and the point bands of every rating. This module only
loads and validates it; `pipeline.scoring.points` applies it.

Validation reports every problem at once (a `ConfigError` for one problem,
`ValidationFailed` listing `ConfigError`s for several), each naming the file and
the field (`rules[WQ-S1].bands[0].op`) and how to fix it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError,
                      model_validator)

from pipeline.config import parse_yaml
from pipeline.errors import ConfigError, ValidationFailed
from pipeline.indicators.catalog import BY_NAME

log = logging.getLogger(__name__)

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "configs" / "scoring.yaml"

FUNCTIONS: tuple[str, ...] = ("WQ", "HY", "HB")
SCALES: tuple[str, ...] = ("S", "L", "V")
STAGES: tuple[str, ...] = ("planned", "under_construction", "completed", "established", "long_term")
COMPENSATIONS: tuple[str, ...] = ("concurrent", "delayed")

# Method parameters (METHOD.md §2-§5) the indicator extraction reads by name.
PARAMETER_NAMES: tuple[str, ...] = (
    "near_buffer_m", "landscape_buffer_m", "stream_threshold_km2", "min_depression_depth_m",
    "riparian_buffer_m", "dispersal_distance_m", "dispersal_probability", "wq_target_path_km",
    "point_source_buffer_m", "flood_path_near_km", "flood_path_far_km", "flood_corridor_m",
    "protected_buffer_m", "species_buffer_m", "structure_min_share", "structure_min_ha",
    "accessible_low_moderate_weight", "habitat_quality_coefficient", "habitat_quality_cap",
)

Op = Literal[">=", ">", "<=", "<", "=="]
DESCENDING_OPS = frozenset({">=", ">"})
ASCENDING_OPS = frozenset({"<=", "<"})
NonEmpty = Annotated[str, Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_indicator(name: str) -> str:
    if name not in BY_NAME:
        close = sorted(n for n in BY_NAME if n.split("_")[0] == name.split("_")[0])
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown indicator '{name}'{hint}; names are listed in "
                         "pipeline/indicators/catalog.py")
    return name


def _is_bool_indicator(name: str) -> bool:
    return BY_NAME[name].unit == "bool"


# --------------------------------------------------------------------------- parameters
class Parameter(_Strict):
    value: float
    unit: NonEmpty
    min: float
    max: float
    source: NonEmpty
    assumption: bool

    @model_validator(mode="after")
    def _in_range(self) -> "Parameter":
        if self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        if not self.min <= self.value <= self.max:
            raise ValueError(f"value {self.value} is outside the allowed range "
                             f"[{self.min}, {self.max}]")
        return self


class Stage(_Strict):
    tf: float = Field(ge=0.0, le=1.0)
    min_years_after_completion: int | None = Field(default=None, ge=0)
    description: NonEmpty
    source: NonEmpty
    assumption: bool


class Stages(_Strict):
    planned: Stage
    under_construction: Stage
    completed: Stage
    established: Stage
    long_term: Stage

    @model_validator(mode="after")
    def _consistent(self) -> "Stages":
        for name in ("planned", "under_construction"):
            if getattr(self, name).min_years_after_completion is not None:
                raise ValueError(f"stage '{name}' is before completion; remove its "
                                 "min_years_after_completion")
        years = []
        for name in ("completed", "established", "long_term"):
            y = getattr(self, name).min_years_after_completion
            if y is None:
                raise ValueError(f"stage '{name}' needs min_years_after_completion")
            years.append(y)
        if years[0] != 0:
            raise ValueError("stage 'completed' must start at min_years_after_completion 0")
        if not years[0] < years[1] < years[2]:
            raise ValueError("min_years_after_completion must increase: completed < "
                             f"established < long_term, got {years}")
        tfs = [getattr(self, n).tf for n in STAGES]
        if any(b < a for a, b in zip(tfs, tfs[1:])):
            raise ValueError(f"time factors must not decrease from planned to long_term, got {tfs}")
        return self


class Factor(_Strict):
    value: float = Field(gt=0.0)
    source: NonEmpty
    assumption: bool


class RiskFactors(_Strict):
    default: Factor
    by_project_type: dict[NonEmpty, Factor] = Field(default_factory=dict)


class TLF(_Strict):
    value: float
    min: float
    max: float
    source: NonEmpty
    assumption: bool

    @model_validator(mode="after")
    def _in_range(self) -> "TLF":
        if not self.min <= self.value <= self.max:
            raise ValueError(f"value {self.value} is outside [{self.min}, {self.max}]")
        return self


class TemporalLoss(_Strict):
    default_compensation: Literal["concurrent", "delayed"]
    concurrent: TLF
    delayed: TLF


# --------------------------------------------------------------------------- rules
class Condition(_Strict):
    indicator: str
    op: Op
    threshold: bool | float

    @model_validator(mode="after")
    def _known(self) -> "Condition":
        _check_indicator(self.indicator)
        return self


class Band(_Strict):
    op: Op
    threshold: bool | float | None = None
    param: str | None = None
    points: int
    indicator: str | None = None
    condition: Condition | None = None

    @model_validator(mode="after")
    def _one_threshold(self) -> "Band":
        if (self.threshold is None) == (self.param is None):
            raise ValueError("give exactly one of 'threshold' (a number) or 'param' "
                             "(a name under 'parameters')")
        if self.indicator is not None:
            _check_indicator(self.indicator)
        if isinstance(self.threshold, bool) and self.op != "==":
            raise ValueError(f"a true/false threshold needs op '==', not '{self.op}'")
        return self


class Scorer(_Strict):
    """How one indicator gives points: `bands`, `when_true` or `per_unit`."""

    label: str | None = None
    indicator: str
    bands: list[Band] | None = None
    when_true: int | None = None
    per_unit: int | None = None
    default: int = 0

    @model_validator(mode="after")
    def _shape(self) -> "Scorer":
        _check_indicator(self.indicator)
        given = [k for k in ("bands", "when_true", "per_unit") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'bands', 'when_true' or 'per_unit' "
                             f"(got {given or 'none'})")
        if self.bands is not None:
            if not self.bands:
                raise ValueError("'bands' is empty")
            _check_band_order(self.indicator, self.bands)
        if self.when_true is not None and not _is_bool_indicator(self.indicator):
            raise ValueError(f"'when_true' needs a bool indicator; '{self.indicator}' is "
                             f"in {BY_NAME[self.indicator].unit}")
        if self.per_unit is not None and BY_NAME[self.indicator].unit != "count":
            raise ValueError(f"'per_unit' needs a count indicator; '{self.indicator}' is "
                             f"in {BY_NAME[self.indicator].unit}")
        return self


def _check_band_order(main: str, bands: list[Band],
                      params: dict[str, "Parameter"] | None = None) -> None:
    """Per indicator, the ordered bands must be reachable: thresholds strictly falling
    for >=/>, rising for <=/<, never mixing the two directions; an equal threshold
    is allowed only right after a band with a `condition` (HB-L2)."""
    by_ind: dict[str, list[tuple[int, Band]]] = {}
    for i, b in enumerate(bands):
        ind = b.indicator or main
        if _is_bool_indicator(ind) and b.op != "==":
            raise ValueError(f"bands[{i}]: '{ind}' is a bool indicator; use op '==' "
                             "with threshold true/false")
        by_ind.setdefault(ind, []).append((i, b))
    for ind, items in by_ind.items():
        ordered = [(i, b) for i, b in items if b.op != "=="]
        dirs = {("down" if b.op in DESCENDING_OPS else "up") for _, b in ordered}
        if len(dirs) > 1:
            raise ValueError(f"bands on '{ind}' mix >=/> with <=/<; first match wins, so "
                             "use one direction per indicator")
        for (i0, b0), (i1, b1) in zip(ordered, ordered[1:]):
            if b0.param is not None or b1.param is not None:
                if params is None:
                    continue  # checked again by Rulebook once parameters are known
            t0, t1 = (params[b.param].value if b.param is not None else float(b.threshold)
                      for b in (b0, b1))
            rising = b1.op in ASCENDING_OPS
            ok = t1 > t0 if rising else t1 < t0
            if t0 == t1 and b0.condition is not None:
                ok = True
            if not ok:
                want = "rising" if rising else "falling"
                raise ValueError(f"bands[{i1}] threshold {t1} after bands[{i0}] threshold {t0}: "
                                 f"thresholds must be strictly {want} (first match wins, so "
                                 "this band could never be reached)")


class Rule(_Strict):
    id: Annotated[str, Field(pattern=r"^(WQ|HY|HB)-[SLV][0-9]+$")]
    function: Literal["WQ", "HY", "HB"]
    scale: Literal["S", "L", "V"]
    title: str = ""
    # a single scorer, given inline ...
    indicator: str | None = None
    bands: list[Band] | None = None
    when_true: int | None = None
    per_unit: int | None = None
    default: int | None = None
    # ... or alternatives tried in order (first non-NaN indicator)
    alternatives: list[Scorer] | None = None
    cap: int | None = None
    nan_points: int = 0
    optional: bool = False
    missing_note: str = ""
    source: NonEmpty
    assumption: bool = False
    _scorers: list[Scorer] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _shape(self) -> "Rule":
        if self.id[:2] != self.function or self.id[3] != self.scale:
            raise ValueError(f"id '{self.id}' does not match function '{self.function}' "
                             f"and scale '{self.scale}'")
        inline = [k for k in ("indicator", "bands", "when_true", "per_unit", "default")
                  if getattr(self, k) is not None]
        if self.alternatives is not None:
            if inline:
                raise ValueError(f"give either 'alternatives' or an inline scorer, not both "
                                 f"(remove {inline})")
            if not self.alternatives:
                raise ValueError("'alternatives' is empty")
            self._scorers = list(self.alternatives)
        elif self.indicator is None:
            raise ValueError("give 'indicator' (with bands/when_true/per_unit) or 'alternatives'")
        else:
            try:
                self._scorers = [Scorer(indicator=self.indicator, bands=self.bands,
                                        when_true=self.when_true, per_unit=self.per_unit,
                                        default=self.default or 0)]
            except ValidationError as exc:
                raise ValueError("; ".join(e["msg"].removeprefix("Value error, ")
                                           for e in exc.errors())) from None
        return self

    @property
    def scorers(self) -> list[Scorer]:
        """The scorers tried in order (one for an inline rule)."""
        return list(self._scorers)

    @property
    def column(self) -> str:
        """Points column of this rule in the site table: 'pts_WQ_S1'."""
        return "pts_" + self.id.replace("-", "_")

    def indicators(self) -> list[str]:
        names: list[str] = []
        for s in self.scorers:
            names.append(s.indicator)
            for b in s.bands or []:
                names.extend(n for n in (b.indicator, b.condition and b.condition.indicator) if n)
        return list(dict.fromkeys(names))

    def max_points(self, max_count: float = float("inf")) -> float:
        """Most points this rule can give (after `cap`)."""
        best = self.nan_points
        for s in self.scorers:
            cand = [s.default] + [b.points for b in s.bands or []]
            if s.when_true is not None:
                cand.append(s.when_true)
            if s.per_unit is not None:
                cand.append(s.per_unit * max_count if s.per_unit > 0 else 0)
            best = max(best, max(cand))
        return min(best, self.cap) if self.cap is not None else best


class Rating(_Strict):
    function: Literal["WQ", "HY", "HB"]
    scale: Literal["S", "L", "V"]
    high_min: int
    medium_min: int
    max_points: int
    points_cap: int | None = None
    source: NonEmpty

    @model_validator(mode="after")
    def _order(self) -> "Rating":
        if not self.medium_min < self.high_min:
            raise ValueError(f"medium_min {self.medium_min} must be below high_min {self.high_min}")
        if self.high_min > self.max_points:
            raise ValueError(f"high_min {self.high_min} exceeds max_points {self.max_points}: "
                             "a High rating could never be reached")
        return self

    def rate(self, points: int) -> int:
        if points >= self.high_min:
            return 3
        return 2 if points >= self.medium_min else 1


# --------------------------------------------------------------------------- the book
class Rulebook(_Strict):
    version: Literal[1]
    parameters: dict[str, Parameter]
    stages: Stages
    risk_factors: RiskFactors
    temporal_loss_factor: TemporalLoss
    rules: list[Rule]
    ratings: list[Rating]

    def cross_problems(self) -> list[tuple[str, str]]:
        """Consistency between sections, as (field, message); empty when consistent."""
        problems: list[tuple[str, str]] = []
        missing = [p for p in PARAMETER_NAMES if p not in self.parameters]
        unknown = [p for p in self.parameters if p not in PARAMETER_NAMES]
        if missing:
            problems.append(("parameters", f"missing {missing}"))
        if unknown:
            problems.append(("parameters", f"unknown {unknown} (known: {list(PARAMETER_NAMES)})"))
        ids = [r.id for r in self.rules]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            problems.append(("rules", f"duplicate rule ids {dup}"))
        for r in self.rules:
            for s in r.scorers:
                unknown_param = False
                for i, b in enumerate(s.bands or []):
                    if b.param is not None and b.param not in self.parameters:
                        unknown_param = True
                        problems.append((f"rules[{r.id}].bands[{i}].param",
                                         f"unknown parameter '{b.param}'"))
                if s.bands and not unknown_param:
                    try:
                        _check_band_order(s.indicator, s.bands, self.parameters)
                    except ValueError as exc:
                        problems.append((f"rules[{r.id}]", str(exc)))
        cells = [(r.function, r.scale) for r in self.ratings]
        for f in FUNCTIONS:
            for s in SCALES:
                n = cells.count((f, s))
                if n != 1:
                    problems.append(("ratings", f"need exactly one entry for {f} {s}, found {n}"))
                if not any(r.function == f and r.scale == s for r in self.rules):
                    problems.append(("rules", f"no rule for {f} {s}"))
        for rt in self.ratings:
            rules = [r for r in self.rules if (r.function, r.scale) == (rt.function, rt.scale)]
            total = sum(r.max_points() for r in rules)
            if rt.points_cap is not None:
                total = min(total, rt.points_cap)
            if rules and total != rt.max_points:
                problems.append((f"ratings[{rt.function} {rt.scale}].max_points",
                                 f"is {rt.max_points} but the rules {[r.id for r in rules]} can "
                                 f"give at most {total}"))
        return problems

    # -- accessors
    def param(self, name: str) -> float:
        try:
            return self.parameters[name].value
        except KeyError:
            raise ConfigError(f"no parameter '{name}' in the scoring rulebook",
                              field=f"parameters.{name}",
                              fix=f"add it under 'parameters:' (known: {list(PARAMETER_NAMES)})") from None

    def rating(self, function: str, scale: str) -> Rating:
        return next(r for r in self.ratings if r.function == function and r.scale == scale)

    def rules_for(self, function: str, scale: str) -> list[Rule]:
        return [r for r in self.rules if r.function == function and r.scale == scale]

    def risk_factor(self, project_type: str | None) -> float:
        f = self.risk_factors.by_project_type.get(project_type or "", self.risk_factors.default)
        return f.value

    def tlf(self, compensation: str | None) -> float:
        c = compensation or self.temporal_loss_factor.default_compensation
        if c not in COMPENSATIONS:
            raise ValueError(c)
        return getattr(self.temporal_loss_factor, c).value

    def threshold(self, band: Band) -> float:
        """A band's threshold as float (bools 1/0; `param` resolved)."""
        if band.param is not None:
            return self.param(band.param)
        return float(band.threshold)

    def used_indicators(self) -> list[str]:
        out: list[str] = []
        for r in self.rules:
            out.extend(r.indicators())
        return list(dict.fromkeys(out))


# --------------------------------------------------------------------------- loading
_TYPE_TAGS = frozenset({"bool", "float", "int", "str", "none", "list[Band]", "list[Scorer]"})


def _item_label(data: Any, section: str, idx: int) -> str:
    """'rules[WQ-S1]' / 'ratings[WQ S]' instead of a bare list index."""
    try:
        item = data[section][idx]
        if section == "rules":
            return f"rules[{item['id']}]"
        return f"ratings[{item['function']} {item['scale']}]"
    except (KeyError, IndexError, TypeError):
        return f"{section}[{idx}]"


def _field(data: Any, loc: tuple) -> str:
    parts: list[str] = []
    i = 0
    while i < len(loc):
        item = loc[i]
        if item in ("rules", "ratings") and i == 0 and len(loc) > 1 and isinstance(loc[1], int):
            parts.append(_item_label(data, item, loc[1]))
            i += 2
            continue
        if isinstance(item, int) and parts:
            parts[-1] += f"[{item}]"
        elif str(item) not in _TYPE_TAGS and not str(item).startswith("function-"):
            parts.append(str(item))
        i += 1
    return ".".join(parts) or "(top level)"


def _raise_all(problems: list[ConfigError]) -> None:
    if len(problems) == 1:
        raise problems[0] from None
    if problems:
        raise ValidationFailed(problems) from None  # type: ignore[arg-type]


def from_dict(data: Any, path: str | Path = "<dict>") -> Rulebook:
    """Validate a parsed scoring.yaml; raise ConfigError/ValidationFailed naming every problem."""
    book = _validated(data, path)
    _log_loaded(book, path)
    return book


def _validated(data: Any, path: str | Path) -> Rulebook:
    if not isinstance(data, dict):
        raise ConfigError("the scoring rulebook must be a YAML mapping", path=str(path),
                          fix="start from configs/scoring.yaml")
    try:
        book = Rulebook.model_validate(data)
    except ValidationError as exc:
        grouped: dict[str, tuple[list[str], str]] = {}
        for e in exc.errors():
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = "unknown key (a typo?)"
                fix = "remove it or correct the spelling; docs/scoring.md lists every key"
            elif e["type"] == "missing":
                fix = "add this key; docs/scoring.md lists every key"
            else:
                fix = "see docs/scoring.md for the allowed values"
            field = _field(data, e["loc"])
            msgs, _ = grouped.setdefault(field, ([], fix))
            if msg not in msgs:  # a union (true/false or number) reports once per member
                msgs.append(msg)
        _raise_all([ConfigError(" or ".join(m), path=str(path), field=f, fix=fx)
                    for f, (m, fx) in grouped.items()])
    _raise_all([ConfigError(msg, path=str(path), field=field,
                            fix="make the sections agree; docs/scoring.md explains each check")
                for field, msg in book.cross_problems()])
    return book


def _log_loaded(book: Rulebook, path: str | Path) -> None:
    log.debug("scoring rulebook %s: %d rules, %d parameters", path, len(book.rules),
              len(book.parameters))


# Rulebooks validated in this process, by path and text (a changed file is read anew): a run
# loads the rulebook to check the inputs and again for its steps, a reprocessing pass three
# times. A Rulebook is frozen.
_LOADED: dict[tuple[Path, str], Rulebook] = {}


def load_rulebook(path: str | Path | None = None) -> Rulebook:
    """Read and validate `configs/scoring.yaml` (or `path`)."""
    p = Path(path) if path is not None else DEFAULT_PATH
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the scoring rulebook: {exc.strerror}", path=str(p),
                          fix="check the path; the default is configs/scoring.yaml") from None
    book = _LOADED.get((p, text))
    if book is None:
        try:
            data = parse_yaml(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"not valid YAML{where}: {getattr(exc, 'problem', exc)}", path=str(p),
                              fix="fix the YAML syntax (indentation, quotes around '>=' ops)") from None
        book = _validated(data, p)
        if len(_LOADED) >= 16:
            _LOADED.clear()
        _LOADED[(p, text)] = book
    _log_loaded(book, p)
    return book
