"""Land-cover class schemes: load and validate the tables in ``configs/landcover/``,
reclassify a product raster to the canonical codes, and derive per-cell attribute
rasters (natural, intensive, impervious fraction, ...).

A scheme table maps every code its product defines to one canonical class
(``pipeline.indicators.catalog.CLASS_CODES``) and to the nearest HJ 192-2015
habitat sub-class. ``canonical.yaml`` carries the attributes of each canonical
class and the HJ 192 weights. A cell's HJ 192 weight is
``sub-class weight x top-level weight``, so the habitat-quality index of any area
is ``HQ = normalisation x mean(weight)``, capped at 100.

Unknown product codes are an :class:`InputDataError` naming the code(s), the
scheme and the file, never a silent nodata.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.config import parse_yaml
from pipeline.errors import ConfigError, InputDataError, PipelineError, ValidationFailed
from pipeline.indicators.catalog import CLASS_CODES, CLASS_NODATA

log = logging.getLogger(__name__)

LANDCOVER_DIR = Path(__file__).resolve().parents[2] / "configs" / "landcover"

#: attribute rasters derivable from the canonical raster (name -> meaning)
ATTRIBUTES: dict[str, str] = {
    "natural": "natural cover (forest, shrub, grassland, wetland, water)",
    "intensive": "intensive land use (cropland + built-up)",
    "impervious": "impervious fraction of the cell",
    "pollutant": "pollutant-generating land use",
    "runoff": "runoff-generating land use",
    "undisturbed": "undisturbed cover (intensity 'undisturbed')",
    "persistent_vegetation": "persistent vegetation (forest, shrub, grassland, wetland)",
    "hj192_weight": "HJ 192-2015 weight (default sub-class weight x top-level weight)",
}
INTENSIVE_CLASSES = ("cropland", "built_up")


# --------------------------------------------------------------------------- schema
class _Sourced(BaseModel):
    """Every entry that carries numbers says where they come from."""

    model_config = ConfigDict(extra="forbid")
    source: str | None = None
    assumption: bool = False
    note: str | None = None

    @model_validator(mode="after")
    def _has_provenance(self):
        if not self.source and not self.assumption:
            raise ValueError("needs a 'source:' or 'assumption: true'")
        if self.assumption and not (self.note or self.source):
            raise ValueError("'assumption: true' needs a 'note:' saying what is assumed")
        return self


class _Normalisation(_Sourced):
    value: float = Field(gt=0)


class _TopLevel(_Sourced):
    name_zh: str
    weight: float = Field(ge=0, le=1)


class _SubClass(_Sourced):
    name_zh: str
    top: str
    weight: float = Field(ge=0, le=1)


class _HJ192(BaseModel):
    model_config = ConfigDict(extra="forbid")
    normalisation: _Normalisation
    top_level: dict[str, _TopLevel]
    sub_classes: dict[str, _SubClass]

    @model_validator(mode="after")
    def _consistent(self):
        for key, sub in self.sub_classes.items():
            if sub.top not in self.top_level:
                raise ValueError(f"sub-class '{key}' refers to unknown top-level class '{sub.top}'")
        for top in self.top_level:
            total = sum(s.weight for s in self.sub_classes.values() if s.top == top)
            if abs(total - 1.0) > 1e-9:
                raise ValueError(f"sub-class weights of '{top}' sum to {total:g}, not 1")
        return self


class _CanonicalClass(_Sourced):
    code: int
    natural: bool
    intensity: Literal["undisturbed", "low", "moderate", "high"]
    pollutant_generating: bool
    runoff_generating: bool
    impervious_fraction: float = Field(ge=0, le=1)
    persistent_vegetation: bool
    undisturbed: bool
    hj192_default_sub_class: str


class _CanonicalFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int
    nodata: int
    hj192: _HJ192
    classes: dict[str, _CanonicalClass]

    @model_validator(mode="after")
    def _matches_catalog(self):
        got = {k: v.code for k, v in self.classes.items()}
        if got != CLASS_CODES:
            raise ValueError(f"classes/codes {got} differ from pipeline.indicators.catalog.CLASS_CODES {CLASS_CODES}")
        if self.nodata != CLASS_NODATA:
            raise ValueError(f"nodata {self.nodata} differs from catalog CLASS_NODATA {CLASS_NODATA}")
        for k, c in self.classes.items():
            if c.hj192_default_sub_class not in self.hj192.sub_classes:
                raise ValueError(f"class '{k}': unknown hj192_default_sub_class '{c.hj192_default_sub_class}'")
            if c.undisturbed != (c.intensity == "undisturbed"):
                raise ValueError(f"class '{k}': undisturbed must equal (intensity == 'undisturbed')")
        return self


class _NodataCodes(_Sourced):
    codes: list[int]


class _SchemeClass(_Sourced):
    label: str
    canonical: str
    hj192_sub_class: str


class _SchemeFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scheme: str
    product: str
    source: str
    nodata_codes: _NodataCodes
    classes: dict[int, _SchemeClass]


# --------------------------------------------------------------------------- loaded tables
@dataclass(frozen=True)
class CanonicalTable:
    """Attributes of the canonical classes, as lookup tables indexed by code (0..255)."""

    path: Path
    classes: dict[str, _CanonicalClass]
    hj192: _HJ192

    @property
    def normalisation(self) -> float:
        return self.hj192.normalisation.value

    def sub_class_weight(self, sub: str) -> float:
        """Cell weight of an HJ 192 sub-class: sub-class weight x top-level weight."""
        s = self.hj192.sub_classes[sub]
        return s.weight * self.hj192.top_level[s.top].weight

    def lut(self, attribute: str) -> np.ndarray:
        """float32[256] lookup: canonical code -> attribute value; NaN at unused codes/nodata."""
        if attribute not in ATTRIBUTES:
            raise ConfigError(f"unknown land-cover attribute '{attribute}'", field="attribute",
                              fix=f"use one of {sorted(ATTRIBUTES)}")
        out = np.full(256, np.nan, dtype=np.float32)
        for name, c in self.classes.items():
            if attribute == "natural":
                v = c.natural
            elif attribute == "intensive":
                v = name in INTENSIVE_CLASSES
            elif attribute == "impervious":
                v = c.impervious_fraction
            elif attribute == "pollutant":
                v = c.pollutant_generating
            elif attribute == "runoff":
                v = c.runoff_generating
            elif attribute == "undisturbed":
                v = c.undisturbed
            elif attribute == "persistent_vegetation":
                v = c.persistent_vegetation
            else:  # hj192_weight
                v = self.sub_class_weight(c.hj192_default_sub_class)
            out[c.code] = float(v)
        return out


@dataclass(frozen=True)
class Scheme:
    """One product's class table, as sorted code arrays."""

    name: str
    path: Path
    product: str
    codes: np.ndarray          # int64, sorted product codes
    canonical: np.ndarray      # uint8 canonical code per product code
    weight: np.ndarray         # float64 HJ 192 cell weight per product code
    nodata_codes: tuple[int, ...]
    labels: tuple[str, ...]

    def code_map(self) -> dict[int, int]:
        return {int(c): int(k) for c, k in zip(self.codes, self.canonical)}


def _problems_from(exc: ValidationError, path: Path) -> list[PipelineError]:
    out: list[PipelineError] = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"])
        out.append(ConfigError(e["msg"], path=path, field=loc or None,
                               fix="correct the entry; see configs/landcover/canonical.yaml for the format"))
    return out


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("land-cover table not found", path=path,
                          fix=f"use one of the schemes in {LANDCOVER_DIR}: {', '.join(available_schemes())}") from None


def _read_yaml(path: Path, text: str) -> dict:
    """The table `text` read from `path`, parsed (pipeline.config.parse_yaml)."""
    def slow():
        stream = io.StringIO(text)      # read as the open file was: the error's marks name it
        stream.name = str(path)
        return yaml.safe_load(stream)

    try:
        data = parse_yaml(text, slow)
    except yaml.YAMLError as exc:
        raise ConfigError(f"land-cover table is not valid YAML: {exc}", path=path) from None
    if not isinstance(data, dict):
        raise ConfigError("land-cover table must be a YAML mapping", path=path)
    return data


# Tables validated in this process, by path and text (a changed file is read anew): a run
# loads canonical.yaml with every scheme and vintage, a reprocessing pass ~15 times.
# The tables are never modified after loading.
_CANONICAL: dict[tuple[Path, str], "CanonicalTable"] = {}
_SCHEMES: dict[tuple[Path, str, int], tuple["CanonicalTable", "Scheme"]] = {}


def _remember(memo: dict, key, value) -> None:
    if len(memo) >= 64:
        memo.clear()
    memo[key] = value


def available_schemes(directory: Path = LANDCOVER_DIR) -> list[str]:
    """Names of the shipped scheme tables (every yaml except canonical.yaml)."""
    return sorted(p.stem for p in Path(directory).glob("*.yaml") if p.stem != "canonical")


def load_canonical(path: Path | None = None) -> CanonicalTable:
    path = Path(path) if path is not None else LANDCOVER_DIR / "canonical.yaml"
    text = _read_text(path)
    table = _CANONICAL.get((path, text))
    if table is None:
        table = _canonical_from(path, _read_yaml(path, text))
        _remember(_CANONICAL, (path, text), table)
    return table


def _canonical_from(path: Path, data: dict) -> CanonicalTable:
    try:
        model = _CanonicalFile.model_validate(data)
    except ValidationError as exc:
        problems = _problems_from(exc, path)
        raise problems[0] if len(problems) == 1 else ValidationFailed(problems) from None
    return CanonicalTable(path=path, classes=model.classes, hj192=model.hj192)


def load_scheme(name_or_path: str | Path, canonical: CanonicalTable | None = None) -> Scheme:
    """Load and validate a scheme table by name (``clcd``) or path; every problem at once."""
    p = Path(name_or_path)
    path = p if (p.suffix in (".yaml", ".yml") or p.exists()) else LANDCOVER_DIR / f"{p.name}.yaml"
    canonical = canonical or load_canonical()
    text = _read_text(path)
    known = _SCHEMES.get((path, text, id(canonical)))
    if known is not None and known[0] is canonical:
        return known[1]
    scheme = _scheme_from(path, _read_yaml(path, text), canonical)
    _remember(_SCHEMES, (path, text, id(canonical)), (canonical, scheme))
    return scheme


def _scheme_from(path: Path, data: dict, canonical: CanonicalTable) -> Scheme:
    try:
        model = _SchemeFile.model_validate(data)
    except ValidationError as exc:
        problems = _problems_from(exc, path)
        raise problems[0] if len(problems) == 1 else ValidationFailed(problems) from None
    problems: list[PipelineError] = []
    if model.scheme != path.stem:
        problems.append(ConfigError(f"scheme name '{model.scheme}' differs from the file name '{path.stem}'",
                                    path=path, field="scheme", fix=f"set scheme: {path.stem}"))
    for code, c in model.classes.items():
        if c.canonical not in canonical.classes:
            problems.append(ConfigError(f"code {code} maps to unknown canonical class '{c.canonical}'",
                                        path=path, field=f"classes.{code}.canonical",
                                        fix=f"use one of {list(canonical.classes)}"))
        if c.hj192_sub_class not in canonical.hj192.sub_classes:
            problems.append(ConfigError(f"code {code} maps to unknown HJ 192 sub-class '{c.hj192_sub_class}'",
                                        path=path, field=f"classes.{code}.hj192_sub_class",
                                        fix=f"use one of {list(canonical.hj192.sub_classes)}"))
        if code in model.nodata_codes.codes:
            problems.append(ConfigError(f"code {code} is both a class and a nodata code", path=path,
                                        field=f"classes.{code}"))
    if problems:
        raise problems[0] if len(problems) == 1 else ValidationFailed(problems)
    codes = np.array(sorted(model.classes), dtype=np.int64)
    cls = [model.classes[int(c)] for c in codes]
    return Scheme(
        name=model.scheme, path=path, product=model.product, codes=codes,
        canonical=np.array([canonical.classes[c.canonical].code for c in cls], dtype=np.uint8),
        weight=np.array([canonical.sub_class_weight(c.hj192_sub_class) for c in cls], dtype=np.float64),
        nodata_codes=tuple(model.nodata_codes.codes), labels=tuple(c.label for c in cls),
    )


# --------------------------------------------------------------------------- reclassification
def _nodata_mask(arr: np.ndarray, scheme: Scheme, nodata: float | None) -> np.ndarray:
    mask = np.isin(arr, np.asarray(scheme.nodata_codes, dtype=np.float64 if arr.dtype.kind == "f" else np.int64))
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        mask |= arr == nodata
    if arr.dtype.kind == "f":
        mask |= np.isnan(arr)
    return mask


def unknown_codes(arr: np.ndarray, scheme: Scheme, nodata: float | None = None) -> np.ndarray:
    """Sorted distinct values of ``arr`` that are neither a class of ``scheme`` nor nodata."""
    vals = np.unique(arr[~_nodata_mask(arr, scheme, nodata)])
    if vals.dtype.kind == "f":
        bad_int = vals != np.round(vals)
        known = np.isin(np.round(vals).astype(np.int64), scheme.codes) & ~bad_int
    else:
        known = np.isin(vals.astype(np.int64), scheme.codes)
    return vals[~known]


def _unknown_error(bad: np.ndarray, scheme: Scheme, path) -> InputDataError:
    shown = ", ".join(str(v.item() if hasattr(v, "item") else v) for v in bad[:20])
    more = f" (and {len(bad) - 20} more)" if len(bad) > 20 else ""
    return InputDataError(
        f"land-cover code(s) {shown}{more} are not defined by scheme '{scheme.name}' ({scheme.path})",
        path=path, field="landcover.scheme",
        fix=f"choose the scheme that matches this product ({', '.join(available_schemes())}), "
            f"or add the code(s) to {scheme.path.name} with their canonical class and HJ 192 sub-class")


def _apply(arr: np.ndarray, scheme: Scheme, values: np.ndarray, fill, nodata, out_dtype) -> np.ndarray:
    """Map product codes through ``values`` (aligned with scheme.codes); nodata -> fill."""
    arr = np.asarray(arr)
    if arr.dtype.kind in "ub" and arr.dtype.itemsize <= 2:
        return _lookup_table(scheme, values, fill, nodata, out_dtype, 0, 2 ** (8 * arr.dtype.itemsize))[arr]
    if arr.dtype.kind in "iu" and arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if hi - lo < 2 ** 16:            # e.g. the aligned int32 rasters (nodata -1): a table over [lo, hi]
            shifted = arr - arr.dtype.type(lo) if lo else arr
            return _lookup_table(scheme, values, fill, nodata, out_dtype, lo, hi - lo + 1)[shifted]
    nod = _nodata_mask(arr, scheme, nodata)
    a = np.where(nod, scheme.codes[0], arr)
    if a.dtype.kind == "f":
        a = np.round(a)
    a = a.astype(np.int64, copy=False)
    idx = np.clip(np.searchsorted(scheme.codes, a), 0, len(scheme.codes) - 1)
    ok = scheme.codes[idx] == a
    out = values[idx].astype(out_dtype, copy=False)
    out = np.where(nod | ~ok, fill, out).astype(out_dtype, copy=False)
    return out


def _lookup_table(scheme: Scheme, values: np.ndarray, fill, nodata, out_dtype, lo: int, size: int) -> np.ndarray:
    """Table of the values lo .. lo + size - 1: the same mapping as the general path of
    :func:`_apply` (codes -> values; nodata and unknown -> fill)."""
    key = (id(scheme), values.tobytes(), repr(fill), repr(nodata), np.dtype(out_dtype).str, lo, size)
    lut = _LUTS.get(key)
    if lut is None:
        lut = np.full(size, fill, dtype=out_dtype)
        codes = np.asarray(scheme.codes, dtype=np.int64) - lo
        inside = (codes >= 0) & (codes < size)
        lut[codes[inside]] = np.asarray(values)[inside].astype(out_dtype, copy=False)
        nod = np.asarray(scheme.nodata_codes, dtype=np.int64) - lo
        lut[nod[(nod >= 0) & (nod < size)]] = fill
        if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)) \
                and float(nodata).is_integer() and 0 <= nodata - lo < size:
            lut[int(nodata) - lo] = fill
        if len(_LUTS) > 256:
            _LUTS.clear()
        _LUTS[key] = lut
    return lut


_LUTS: dict = {}


def reclassify_array(arr: np.ndarray, scheme: Scheme, *, nodata: float | None = None,
                     path: str | Path | None = None) -> np.ndarray:
    """Product codes -> canonical uint8 (255 = nodata). Unknown codes raise InputDataError."""
    bad = unknown_codes(arr, scheme, nodata)
    if bad.size:
        raise _unknown_error(bad, scheme, path)
    return _apply(arr, scheme, scheme.canonical, CLASS_NODATA, nodata, np.uint8)


def hj192_weight_array(arr: np.ndarray, scheme: Scheme, *, nodata: float | None = None) -> np.ndarray:
    """Product codes -> HJ 192 cell weight (float32, NaN = nodata or unknown)."""
    return _apply(arr, scheme, scheme.weight, np.nan, nodata, np.float32)


def _bincount(block, offset: int, size: int) -> np.ndarray:
    return np.bincount((np.asarray(block).astype(np.int64) + offset).ravel(), minlength=size)


def present_codes(data) -> np.ndarray:
    """Distinct values of a (dask) array: per-chunk bincounts for 8/16-bit integers
    (one cheap pass), ``dask.array.unique`` otherwise."""
    import dask
    import dask.array as dsa

    if not isinstance(data, dsa.Array):
        return np.unique(np.asarray(data))
    dt = np.dtype(data.dtype)
    if dt.kind in "ui" and dt.itemsize <= 2:
        size = 1 << (8 * dt.itemsize)
        offset = 0 if dt.kind == "u" else size // 2
        parts = dask.compute(*[dask.delayed(_bincount)(b, offset, size) for b in data.to_delayed().ravel()])
        total = np.sum(parts, axis=0)
        return (np.nonzero(total)[0] - offset).astype(dt)
    return dsa.unique(data).compute()


def reclassify(da, scheme: Scheme, *, path: str | Path | None = None):
    """Reclassify a (dask-backed) product DataArray to canonical uint8 with nodata 255.

    The codes are checked first (one pass over the data, :func:`present_codes`), so
    an unknown code fails before any output is written. Coords, dims, attrs and the
    rioxarray CRS/transform are kept; ``_FillValue``/nodata becomes 255.
    """
    import dask.array as dsa
    import xarray as xr

    nodata = da.rio.nodata if hasattr(da, "rio") else None
    data = da.data
    vals = present_codes(data)
    bad = unknown_codes(vals, scheme, nodata)
    if bad.size:
        raise _unknown_error(bad, scheme, path or da.encoding.get("source"))
    if isinstance(data, dsa.Array):
        out = dsa.map_blocks(_apply, data, scheme, scheme.canonical, CLASS_NODATA, nodata, np.uint8,
                             dtype=np.uint8, meta=np.empty((0, 0), np.uint8))
    else:
        out = _apply(np.asarray(data), scheme, scheme.canonical, CLASS_NODATA, nodata, np.uint8)
    res = xr.DataArray(out, coords=da.coords, dims=da.dims, attrs=dict(da.attrs), name="canonical")
    res.attrs.pop("_FillValue", None)
    res.attrs["landcover_scheme"] = scheme.name
    if hasattr(res, "rio") and da.rio.crs is not None:
        res = res.rio.write_crs(da.rio.crs)
    return res.rio.write_nodata(CLASS_NODATA, encoded=False) if hasattr(res, "rio") else res


def attribute_array(canonical: np.ndarray, attribute: str, table: CanonicalTable | None = None) -> np.ndarray:
    """Canonical uint8 -> float32 attribute (1/0 or fraction; NaN where nodata 255)."""
    lut = (table or load_canonical()).lut(attribute)
    return lut[np.asarray(canonical, dtype=np.uint8)]


def attribute_raster(canonical, attribute: str, table: CanonicalTable | None = None):
    """Lazy per-cell attribute DataArray (float32, NaN = nodata) from a canonical DataArray."""
    import dask.array as dsa
    import xarray as xr

    lut = (table or load_canonical()).lut(attribute)
    data = canonical.data
    if isinstance(data, dsa.Array):
        out = dsa.map_blocks(lambda b: lut[b.astype(np.uint8, copy=False)], data, dtype=np.float32,
                             meta=np.empty((0, 0), np.float32))
    else:
        out = lut[np.asarray(data, dtype=np.uint8)]
    res = xr.DataArray(out, coords=canonical.coords, dims=canonical.dims, attrs=dict(canonical.attrs),
                       name=attribute)
    res.attrs.pop("_FillValue", None)
    if hasattr(res, "rio"):
        if canonical.rio.crs is not None:
            res = res.rio.write_crs(canonical.rio.crs)
        res = res.rio.write_nodata(np.nan, encoded=False)
    return res


def habitat_quality(weights: np.ndarray, table: CanonicalTable | None = None) -> float:
    """HJ 192 habitat-quality index of an area from its cells' weights (NaN ignored), capped at 100."""
    w = np.asarray(weights, dtype=np.float64)
    w = w[~np.isnan(w)]
    if w.size == 0:
        return float("nan")
    return float(min(100.0, (table or load_canonical()).normalisation * w.mean()))
