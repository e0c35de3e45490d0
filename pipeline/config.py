"""The basin configuration: a validated schema read from YAML.

Every problem in a configuration file is reported at once, with the YAML line
where it sits and, for misspelt keys, the key that was probably meant. Paths are
resolved against the folder of the configuration file.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from pipeline.errors import ConfigError, ValidationFailed

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RULEBOOK = REPO_ROOT / "configs" / "scoring.yaml"
SCHEMES_DIR = REPO_ROOT / "configs" / "landcover"

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileRef(_Strict):
    """A file (and, for GeoPackages, a layer inside it)."""

    path: Path
    layer: str | None = None


class DemConfig(FileRef):
    nodata: float | None = Field(
        None, description="nodata value to use when the file declares none")


class OutletConfig(_Strict):
    x: float
    y: float
    crs: str = "EPSG:4326"
    name: str = "outlet"


class LandcoverVintage(_Strict):
    name: str
    year: int = Field(ge=1970, le=2100)
    path: Path
    scheme: str
    dem: Path | None = Field(None, description="as-built DEM of this vintage (optional)")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not _SAFE_NAME.match(v):
            raise ValueError(
                f"vintage name {v!r} must be letters, digits, '_', '-' or '.' "
                "(it becomes a folder name), e.g. 'y2023'")
        return v

    @field_validator("scheme")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        known = sorted(p.stem for p in SCHEMES_DIR.glob("*.yaml") if p.stem != "canonical")
        if known and v not in known:
            hint = difflib.get_close_matches(v, known, n=1)
            raise ValueError(
                f"unknown land-cover scheme {v!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; known schemes: {', '.join(known)} (tables in configs/landcover/)")
        return v


class SiteFields(_Strict):
    """Names of the attributes in the site layer."""

    site_id: str = "site_id"
    project_id: str = "project_id"
    name: str = "name"
    kind: str = "kind"
    project_type: str = "project_type"
    construction_start: str = "start_date"
    completion: str = "end_date"
    special_features: str | None = None
    in_wq_plan: str | None = None
    in_flood_plan: str | None = None
    in_habitat_plan: str | None = None
    compensation: str | None = None


class SitesConfig(FileRef):
    fields: SiteFields = SiteFields()


class LayerConfig(FileRef):
    fields: dict[str, str] = Field(default_factory=dict)


class LayersConfig(_Strict):
    streams: LayerConfig | None = None
    protected_areas: LayerConfig | None = None
    wq_targets: LayerConfig | None = None
    monitoring_sections: LayerConfig | None = None
    point_sources: LayerConfig | None = None
    flood_assets: LayerConfig | None = None
    soil: LayerConfig | None = None
    species: LayerConfig | None = None


class ProcessingConfig(_Strict):
    chunk_size: int = Field(1024, ge=64, le=16384)
    scheduler: str | None = Field(
        None, description="address of a dask.distributed scheduler, e.g. tcp://host:8786")
    workers: int | None = Field(None, ge=1, le=256)


class BasinConfig(_Strict):
    name: str
    title: str | None = None

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not _SAFE_NAME.match(v):
            raise ValueError(
                f"basin name {v!r} must be letters, digits, '_', '-' or '.' and start "
                "with a letter or digit (it becomes the output folder name)")
        return v


class Config(_Strict):
    basin: BasinConfig
    crs: str
    resolution_m: float = Field(gt=0, le=10000)
    assessment_date: dt.date
    dem: DemConfig
    boundary: FileRef | None = None
    outlets: list[OutletConfig] | None = None
    landcover: list[LandcoverVintage] = Field(min_length=2)
    baseline: str | None = Field(None, description="name of the baseline vintage (default: first)")
    assessment: str | None = Field(None, description="name of the assessed vintage (default: last)")
    sites: SitesConfig
    layers: LayersConfig = LayersConfig()
    rulebook: Path = DEFAULT_RULEBOOK
    parameters: dict[str, float] = Field(default_factory=dict)
    processing: ProcessingConfig = ProcessingConfig()
    inbox: Path | None = Field(None, description="folder watched by `reprocess` for new imagery")
    store: Path | None = Field(None, description="data store of vintages registered by `reprocess` "
                                                 "(default: the folder '<basin>-store' beside the inbox)")

    # where the file came from (not part of the YAML)
    source: Path | None = Field(None, exclude=True)

    @field_validator("crs")
    @classmethod
    def _projected_metres(cls, v: str) -> str:
        from pyproj import CRS
        from pyproj.exceptions import CRSError

        try:
            crs = CRS.from_user_input(v)
        except CRSError as exc:
            raise ValueError(f"not a CRS PROJ understands: {exc}") from None
        if not crs.is_projected:
            raise ValueError(
                f"{crs.name!r} is geographic (degrees); areas and distances need a projected "
                "CRS in metres, e.g. an Albers equal-area for China: '+proj=aea +lat_0=0 "
                "+lon_0=105 +lat_1=25 +lat_2=47 +datum=WGS84 +units=m'")
        unit = crs.axis_info[0].unit_name if crs.axis_info else "metre"
        if unit not in ("metre", "meter", "m"):
            raise ValueError(f"CRS units are {unit!r}; use a CRS in metres")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        if (self.boundary is None) == (self.outlets is None):
            raise ValueError("give exactly one of 'boundary' (a polygon layer) or 'outlets' "
                             "(points to delineate the basin from)")
        names = [v.name for v in self.landcover]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"landcover: vintage names must be unique; repeated: {dup}")
        years = [v.year for v in self.landcover]
        if years != sorted(years) or len(set(years)) != len(years):
            raise ValueError(f"landcover: list vintages oldest first with distinct years; got {years}")
        for key in ("baseline", "assessment"):
            val = getattr(self, key)
            if val is not None and val not in names:
                hint = difflib.get_close_matches(val, names, n=1)
                raise ValueError(f"{key}: {val!r} is not a landcover vintage name "
                                 f"({', '.join(names)})" + (f"; did you mean {hint[0]!r}?" if hint else ""))
        base = self.vintage(self.baseline_name)
        if self.assessment_date.year <= base.year:
            raise ValueError(
                f"assessment_date {self.assessment_date} is not after the baseline year "
                f"{base.year}; the baseline (基期) is the year before works start")
        if self.baseline_name == self.assessment_name:
            raise ValueError("baseline and assessment must be different vintages")
        return self

    # -- convenience -------------------------------------------------------------
    @property
    def baseline_name(self) -> str:
        return self.baseline or self.landcover[0].name

    @property
    def assessment_name(self) -> str:
        return self.assessment or self.landcover[-1].name

    def vintage(self, name: str) -> LandcoverVintage:
        for v in self.landcover:
            if v.name == name:
                return v
        raise KeyError(name)

    def input_files(self) -> list[tuple[str, Path]]:
        """(role, path) of every input file the configuration names."""
        out: list[tuple[str, Path]] = [("dem", self.dem.path)]
        if self.boundary:
            out.append(("boundary", self.boundary.path))
        for v in self.landcover:
            out.append((f"landcover.{v.name}", v.path))
            if v.dem:
                out.append((f"landcover.{v.name}.dem", v.dem))
        out.append(("sites", self.sites.path))
        for name in LayersConfig.model_fields:
            lay = getattr(self.layers, name)
            if lay is not None:
                out.append((f"layers.{name}", lay.path))
        out.append(("rulebook", self.rulebook))
        return out


# ---------------------------------------------------------------------------------
# Loading

#: libyaml's loader (PyYAML's C extension); None when PyYAML was installed without it
FAST_LOADER = getattr(yaml, "CSafeLoader", None)


def parse_yaml(text: str, slow: Callable[[], Any] | None = None) -> Any:
    """``yaml.safe_load(text)``, parsed by libyaml when PyYAML has it.

    ``CSafeLoader`` replaces the pure-Python reader, scanner, parser and composer only;
    the constructor and the tag resolver are the same Python classes, so a document gives
    the same values (the rulebook: 185 ms -> 23 ms). A document libyaml does not take is
    parsed again by the pure-Python loader, ``slow()`` (by default ``yaml.safe_load(text)``),
    so an error is raised exactly as before, with the same text and marks.
    """
    if FAST_LOADER is not None:
        try:
            return yaml.load(text, Loader=FAST_LOADER)
        except Exception:   # whatever libyaml makes of it, the pure-Python loader decides
            pass
    return slow() if slow is not None else yaml.safe_load(text)


def _key_lines(text: str) -> dict[tuple, int]:
    """Map each key path (tuple of keys / list indices) to its 1-based YAML line."""
    lines: dict[tuple, int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines

    def walk(node: Any, path: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                p = path + (k.value,)
                lines[p] = k.start_mark.line + 1
                walk(v, p)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                p = path + (i,)
                lines[p] = item.start_mark.line + 1
                walk(item, p)

    if root is not None:
        walk(root, ())
    return lines


def _model_for(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that holds the field at `loc` (for 'did you mean' hints)."""
    model: Any = Config
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return None
        ann = field.annotation
        nxt = None
        for cand in getattr(ann, "__args__", ()) + (ann,):
            inner = getattr(cand, "__args__", ())
            for c in inner + (cand,):
                if isinstance(c, type) and issubclass(c, BaseModel):
                    nxt = c
                    break
            if nxt:
                break
        if nxt is None:
            return None
        model = nxt
    return model


def _resolve_paths(data: Any, base: Path, key: str | None = None) -> Any:
    path_keys = {"path", "dem", "rulebook", "inbox", "store"}
    if isinstance(data, dict):
        return {k: _resolve_paths(v, base, k) for k, v in data.items()}
    if isinstance(data, list):
        return [_resolve_paths(v, base, key) for v in data]
    if key in path_keys and isinstance(data, str):
        p = Path(data).expanduser()
        return str(p if p.is_absolute() else (base / p))
    return data


def load_config(path: str | Path) -> Config:
    """Read and validate a basin configuration; raise ValidationFailed listing every problem."""
    path = Path(path)
    if not path.exists():
        raise ConfigError("configuration file not found", path=path,
                          fix="check the path; shipped configurations are in configs/ "
                              "(make assess BASIN=<name> reads configs/<name>.yaml)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the configuration: {exc}", path=path,
                          fix="save it as UTF-8 text") from None
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"YAML syntax error{where}: {problem}", path=path,
                          fix="fix the indentation or quoting at that line "
                              "(values with ':' or '#' need quotes)") from None
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a YAML mapping of keys to values",
                          path=path, fix="start from configs/yongding.yaml")
    data = _resolve_paths(data, path.resolve().parent)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        lines = _key_lines(text)        # a second parse, only to name the lines of the problems
        raise ValidationFailed([_to_config_error(e, path, lines) for e in exc.errors()]) from None
    return cfg.model_copy(update={"source": path.resolve()})


def _to_config_error(err: dict, path: Path, lines: dict[tuple, int]) -> ConfigError:
    loc = tuple(err.get("loc", ()))
    field = ".".join(str(p) for p in loc) or "(top level)"
    line = None
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            line = lines[loc[:n]]
            break
    msg = err.get("msg", "invalid")
    msg = msg.removeprefix("Value error, ")
    fix = None
    if err.get("type") == "extra_forbidden":
        model = _model_for(loc)
        allowed = sorted(model.model_fields) if model is not None else []
        allowed = [a for a in allowed if a != "source"]
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        msg = f"unknown key {loc[-1]!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
        fix = f"allowed keys here: {', '.join(allowed)}" if allowed else "remove the key"
    elif err.get("type") == "missing":
        msg = "required key is missing"
        fix = "add it (see configs/yongding.yaml and docs/configuration.md)"
    elif err.get("type", "").startswith(("date", "int", "float", "greater", "less")):
        fix = f"got {err.get('input')!r}"
    if line is not None:
        msg = f"line {line}: {msg}"
    return ConfigError(msg, path=path, field=field, fix=fix)


def load_yaml_mapping(path: Path) -> dict:
    """Safe-load a YAML mapping (rulebooks, class tables) with a clear error."""
    try:
        data = parse_yaml(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("file not found", path=path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"YAML syntax error{where}", path=path) from None
    if not isinstance(data, dict):
        raise ConfigError("expected a YAML mapping", path=path)
    return data
