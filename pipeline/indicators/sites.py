"""Site indicators (METHOD.md §2 and §4): one row per site x land-cover vintage.

`site_indicators` measures, for every site polygon S, the raw indicators of
`pipeline.indicators.catalog.INDICATORS`; the rulebook turns them into points.
It works on layers of the basin grid, so it does not depend on any chunking,
and each site is computed on its own (results do not depend on the order of the
sites).

Memory (issue 8): a layer may be a numpy array, an xarray DataArray or a
``RasterFile`` (a GeoTIFF on the grid, what ``pipeline.run`` passes). Only D8 and
the class rasters of the vintages on one DEM are held whole, as uint8 (CB is
basin-wide by method), plus a one-bit-per-cell mark: 1 + n_vintages + 1/8 bytes
per cell. Every other layer (slope, depression depth, accumulation, patch ids,
HQ weights, streams, distances) is read in the window of one site's cells or
RING1K. CB is never held as a list of cells: its size and class counts are sums
over the upstream areas of the site's lowest seeds, each area walked once for
all sites (see ``_DemPart``). PATH is kept only as far as the flood buffers
reach. Without ``dist_to_stream_m`` the distances are computed around each site
(an EDT of the RING1K window grown by the riparian buffer, exact for the
``<= riparian_buffer_m`` test). D8 must be acyclic (a loop is reported).

Measurement rules (the method's words, and the choices made where it leaves room):

Polygon statistics (S, NEAR, RING1K, PATH buffers) weight every cell by its
exact coverage fraction (exactextract). Cells whose class is nodata (255), or
whose slope / depression depth is NaN, drop out of both numerator and
denominator; a share over nothing is NaN.

Missing is not zero: an indicator whose input was not supplied (a layer, a site
attribute, the patch or stream rasters) or whose zone is empty is NaN / <NA>, so
the rulebook can say "not assessed" (its ``nan_points`` and ``missing_note``).
A supplied but empty layer is an answer (False / 0). Bool indicators come out
as pandas "boolean", counts as "Int64", everything else float64.

- area_ha: exact polygon area of S.
- depression_share: coverage-weighted share of S with depression depth >=
  ``min_depression_depth_m`` (0.1 m); mean_depression_depth_m: coverage-weighted
  mean depth over S (zeros included); mean_slope_deg: coverage-weighted mean.
- clay_organic_share: area share of S inside the soil polygons flagged
  clay/organic (layer ``soils``, boolean column ``soil_clay_organic_field``);
  NaN without the layer.
- cb_area_ha: cells of CB x cell area; cb_area_ratio = cb_area_ha / area_ha.
  CB shares are over CB cells (every CB cell is whole); NaN when CB is empty.
- habitat_quality: 511.2642131067 x sum(cov x hq_weight) / sum(cov), capped at
  100; hq_weight from the class table, or per cell from the vintage's optional
  ``hq_weight`` raster (the product's own HJ 192 sub-class weights).
- shannon_natural: H = -sum p_i ln p_i with p_i = area of natural class i /
  area of natural cover in S (0 with one natural class or none: no diversity).
- n_structure_classes: natural classes whose share of S >= ``structure_min_share``
  (0.10) or whose area >= ``structure_min_ha`` (0.25 ha).
- Cells "touching S" (patches, connectivity sources) are the cells S covers
  by any positive fraction; RING1K membership likewise.
- largest_patch_ha / site_dpc_pct: max area and sum of dPC (already in % of
  basin PC) over the distinct natural patch ids (!= 0) touching S; 0 if none
  (no patch touches S: the site carries no habitat area and no connectivity).
  ``patch_area_ha`` / ``patch_dpc`` may be per-patch tables (dict or array
  indexed by id) or per-cell rasters as pipeline.indicators.landscape writes them.
- ring_accessible_pct (HB-L1): 100 x sum(cov x w) / sum(cov) over RING1K with
  w = 1 undisturbed, 1/2 low or moderate, 0 high, counting only RING1K cells in
  an 8-connected component of non-high-intensity cells (within RING1K and S)
  that contains a cell of S; S cells of any class count as part of S, i.e. as
  the source the habitat must connect to.
- ring_undisturbed_pct (HB-L2): the same weighting over all of RING1K
  (WA form H 2.2: % undisturbed + 1/2 % moderate and low); ring_undisturbed_patches:
  8-connected components of undisturbed cells within RING1K.
- riparian_natural_share: natural share of the RING1K cells within
  ``riparian_buffer_m`` of a stream (``dist_to_stream_m``); NaN when RING1K holds
  no stream cell.
- point_source_near: a ``point_sources`` feature within near_buffer_m + 250 m of
  S (S included), or lying in a CB cell. Distances to layers use
  shapely ``dwithin`` (exact), not the polygonal buffers of geometry.site_zones,
  which are kept for maps.
- path_wq_target_km: length along PATH from o to the first PATH cell whose
  centre lies in a ``wq_targets`` polygon (for point/line targets: whose cell
  footprint they touch); 0 when o itself is in one; NaN if none.
- path_failing_section: a ``monitoring_sections`` point within
  ``section_snap_cells`` (2) cell widths of a PATH cell centre whose observed
  GB 3838 class is worse than its target class (I < II < III < IV < V < 劣V).
- path_assets_share_5km / path_assets_any_20km: within ``path_assets_buffer_m``
  (200 m) of the first 5 km / 20 km of PATH (a line through the cell centres):
  the coverage-weighted built-up share / whether any built-up cell is touched.
  With a ``flood_assets`` layer, its area share / any intersection is used
  instead (points and lines count as a cell-sized footprint around them).
- protected_inside: >= 50 % of the site's area inside the union of
  ``protected_areas`` (the centroid is not used: it can fall outside a concave
  site). protected_within_100m: number of protected-area features within 100 m
  of S (containing ones included). species_within_1km: a ``species`` record
  within 1 km of S.
- in_*_plan: the site's boolean attribute of that name, or >= 50 % of the site
  inside a ``wq_plan_zones`` / ``flood_plan_zones`` / ``habitat_plan_zones`` polygon.
- n_special_features: the site's ``special_features`` attribute, an integer or a
  list / ";,、"-separated string of feature names (raw count; the rulebook caps it).
- attrs: {code: {natural, intensity, pollutant, runoff, impervious, hq_weight,
  persistent_veg}}, the same with the names of configs/landcover/canonical.yaml
  (pollutant_generating, ...), a DataFrame indexed by code, or the loaded
  ``pipeline.io.classes.CanonicalTable``.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.errors
import shapely
from rasterio.windows import Window

from pipeline.errors import InputDataError
from pipeline.indicators.catalog import CLASS_CODES, CLASS_NODATA, INDICATORS, NAMES
from pipeline.indicators.geometry import (
    D8_NODATA, Grid, as_grid, cells_in_polygons, flow_path, path_buffers, polygon_cells,
    site_cells, site_zones,
)
from pipeline.kernels import sites as ksites
from pipeline.kernels.patches import label_block

log = logging.getLogger(__name__)

HQ_COEFFICIENT = 511.2642131067
# GDAL's block cache while the step reads its windows (its default, 5 % of RAM,
# would otherwise fill with the tiles of whole-raster reads)
_GDAL_CACHE_BYTES = 64 * 2**20
_PATH_BATCH = 50     # sites whose PATH-buffer cells are held at a time

DEFAULT_PARAMS: dict = {
    "near_buffer_m": 50.0,
    "landscape_buffer_m": 1000.0,
    "riparian_buffer_m": 100.0,
    "point_source_extra_m": 250.0,
    "protected_near_m": 100.0,
    "species_m": 1000.0,
    "path_assets_buffer_m": 200.0,
    "path_assets_near_km": 5.0,
    "path_assets_far_km": 20.0,
    "section_snap_cells": 2.0,
    "min_depression_depth_m": 0.1,
    "structure_min_share": 0.10,
    "structure_min_ha": 0.25,
    "intensive_classes": ("cropland", "built_up"),
    "overlap_inside_share": 0.5,
    "quad_segs": 16,
    "site_id_field": "site_id",
    "special_features_field": "special_features",
    "soil_clay_organic_field": "clay_organic",
    "section_observed_field": "observed_class",
    "section_target_field": "target_class",
}

INTENSITY_CODES = {"undisturbed": 0, "low": 1, "moderate": 2, "high": 3}
_ACCESS_WEIGHT = np.array([1.0, 0.5, 0.5, 0.0])  # by intensity code
NATURAL_CODES = tuple(CLASS_CODES[c] for c in ("forest", "shrub", "grassland", "wetland", "water"))


# ------------------------------------------------------------------ attributes

class ClassLookup:
    """Per-code lookup arrays (index = canonical code 0..255) built from the attrs table."""

    def __init__(self, attrs):
        if attrs is None:
            raise InputDataError("no land-cover class attribute table was given",
                                 field="attrs", fix="pass configs/landcover/canonical.yaml as attrs")
        attrs = self._normalise(attrs)
        n = 256
        self.valid = np.zeros(n, dtype=bool)
        self.natural = np.zeros(n, dtype=bool)
        self.intensity = np.full(n, -1, dtype=np.int64)
        self.pollutant = np.zeros(n, dtype=bool)
        self.runoff = np.zeros(n, dtype=bool)
        self.impervious = np.zeros(n, dtype=np.float64)
        self.hq_weight = np.zeros(n, dtype=np.float64)
        self.persistent = np.zeros(n, dtype=bool)
        required = ("natural", "intensity", "pollutant", "runoff", "impervious", "hq_weight",
                    "persistent_veg")
        for code, a in attrs.items():
            code = int(code)
            if not 0 <= code < CLASS_NODATA:
                raise InputDataError(f"class code {code} is outside 0..254", field="attrs",
                                     fix="key the attribute table by canonical class code")
            missing = [k for k in required if k not in a]
            if missing:
                raise InputDataError(f"class {code} lacks attribute(s) {missing}",
                                     field=f"attrs[{code}]", fix=f"give every class {list(required)}")
            if a["intensity"] not in INTENSITY_CODES:
                raise InputDataError(f"class {code} has intensity {a['intensity']!r}",
                                     field=f"attrs[{code}].intensity",
                                     fix=f"use one of {list(INTENSITY_CODES)}")
            self.valid[code] = True
            self.natural[code] = bool(a["natural"])
            self.intensity[code] = INTENSITY_CODES[a["intensity"]]
            self.pollutant[code] = bool(a["pollutant"])
            self.runoff[code] = bool(a["runoff"])
            self.impervious[code] = float(a["impervious"])
            self.hq_weight[code] = float(a["hq_weight"])
            self.persistent[code] = bool(a["persistent_veg"])
        self.undisturbed = self.valid & (self.intensity == 0)
        self.lowmod = self.valid & ((self.intensity == 1) | (self.intensity == 2))
        self.high = self.valid & (self.intensity == 3)
        self.access_w = np.zeros(n)
        self.access_w[self.valid] = _ACCESS_WEIGHT[self.intensity[self.valid]]

    # the names of configs/landcover/canonical.yaml (pipeline.io.classes) -> ours
    _ALIASES = {"pollutant_generating": "pollutant", "runoff_generating": "runoff",
                "impervious_fraction": "impervious", "persistent_vegetation": "persistent_veg"}

    @classmethod
    def _normalise(cls, attrs) -> dict:
        """A dict {code: {...}}, a DataFrame indexed by code, or a loaded canonical
        table (``pipeline.io.classes.CanonicalTable``: ``.classes`` + ``.sub_class_weight``,
        HQ weight = its default sub-class weight x top-level weight)."""
        if hasattr(attrs, "classes") and hasattr(attrs, "sub_class_weight"):
            out = {}
            for c in attrs.classes.values():
                d = c.model_dump() if hasattr(c, "model_dump") else dict(vars(c))
                d["hq_weight"] = attrs.sub_class_weight(d["hj192_default_sub_class"])
                out[int(d["code"])] = d
            attrs = out
        elif isinstance(attrs, pd.DataFrame):
            attrs = {int(k): dict(row) for k, row in attrs.to_dict(orient="index").items()}
        elif not isinstance(attrs, Mapping):
            raise InputDataError(f"the class attribute table is a {type(attrs).__name__}",
                                 field="attrs", fix="pass a dict keyed by canonical code")
        return {k: {cls._ALIASES.get(n, n): v for n, v in a.items()} for k, a in attrs.items()}

    def check_raster(self, arr: np.ndarray, name: str) -> np.ndarray:
        """Refuse codes the table does not describe; returns the 256 counts of ``arr``."""
        counts = (ksites.histogram_u8(np.ascontiguousarray(arr)) if arr.dtype == np.uint8
                  else np.bincount(arr.ravel(), minlength=256))
        present = np.flatnonzero(counts)
        bad = [int(v) for v in present if v != CLASS_NODATA and not self.valid[int(v)]]
        if bad:
            raise InputDataError(f"land-cover raster {name} holds class codes {bad} "
                                 "that the attribute table does not describe",
                                 field=name, fix="map the product to canonical codes 1..9 (255 nodata)")
        return counts


def resolve_params(params: Mapping | None) -> dict:
    p = dict(DEFAULT_PARAMS)
    for k, v in (params or {}).items():
        if k not in DEFAULT_PARAMS:
            raise InputDataError(f"unknown site-indicator parameter {k!r}", field=k,
                                 fix=f"use one of {sorted(DEFAULT_PARAMS)}")
        p[k] = v
    for k in ("near_buffer_m", "landscape_buffer_m", "riparian_buffer_m"):
        if not float(p[k]) > 0:
            raise InputDataError(f"{k} must be > 0, got {p[k]}", field=k)
    codes = []
    for c in p["intensive_classes"]:
        if isinstance(c, str) and c not in CLASS_CODES:
            raise InputDataError(f"intensive class {c!r} is not a canonical class",
                                 field="intensive_classes", fix=f"use names of {sorted(CLASS_CODES)}")
        codes.append(CLASS_CODES[c] if isinstance(c, str) else int(c))
    p["_intensive_codes"] = np.array(codes, dtype=np.int64)
    return p


_GB3838 = {"I": 1, "II": 2, "III": 3, "IV": 4, "V": 5, "劣V": 6, "V+": 6, ">V": 6,
           "WORSE THAN V": 6, "INFERIOR V": 6}
_ROMAN_FULLWIDTH = str.maketrans({"Ⅰ": "I", "Ⅱ": "II", "Ⅲ": "III", "Ⅳ": "IV", "Ⅴ": "V"})


def gb3838_rank(value, field: str = "class") -> int:
    """GB 3838-2002 class as a rank 1..6 (I..V, 劣V). Accepts 1..6, 'III', 'Ⅲ', '劣Ⅴ'."""
    if isinstance(value, (int, np.integer)) and 1 <= int(value) <= 6:
        return int(value)
    s = str(value).strip().translate(_ROMAN_FULLWIDTH).upper().replace("类", "").strip()
    if s.isdigit() and 1 <= int(s) <= 6:
        return int(s)
    if s in _GB3838:
        return _GB3838[s]
    raise InputDataError(f"{value!r} is not a GB 3838 water-quality class", field=field,
                         fix="use I, II, III, IV, V or 劣V (or 1..6)")


def count_special_features(v) -> float:
    """Number of listed features; NaN when nothing is listed (None / NaN / "")."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return math.nan
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return int(v)
    if isinstance(v, (list, tuple, np.ndarray)):
        return len([x for x in v if str(x).strip()])
    items = [x for x in re.split(r"[;,，、；|]", str(v)) if x.strip()]
    return len(items) if items else math.nan


# ------------------------------------------------------------------ helpers

def _share(flag: np.ndarray, w: np.ndarray) -> float:
    tot = w.sum()
    return float((w * flag).sum() / tot) if tot > 0 else math.nan


def _wmean(values: np.ndarray, cov: np.ndarray) -> float:
    ok = np.isfinite(values)
    tot = cov[ok].sum()
    return float((values[ok] * cov[ok]).sum() / tot) if tot > 0 else math.nan


def _geoms(layer) -> np.ndarray:
    if layer is None or len(layer) == 0:
        return np.empty(0, dtype=object)
    g = layer.geometry.to_numpy()
    return g[~(shapely.is_missing(g) | shapely.is_empty(g))]


def _overlap_share(sites: np.ndarray, area: np.ndarray, layer_geoms: np.ndarray) -> np.ndarray:
    if len(layer_geoms) == 0:
        return np.zeros(len(sites))
    polys = layer_geoms[np.isin(shapely.get_type_id(layer_geoms), (3, 6))]
    if len(polys) == 0:
        return np.zeros(len(sites))
    u = shapely.union_all(polys)
    inter = shapely.area(shapely.intersection(sites, u))
    return np.where(area > 0, inter / np.where(area > 0, area, 1.0), 0.0)


def _any_within(sites: np.ndarray, layer_geoms: np.ndarray, dist: float) -> np.ndarray:
    """Per site, the number of layer features within ``dist`` metres."""
    out = np.zeros(len(sites), dtype=np.int64)
    if len(layer_geoms) == 0:
        return out
    tree = shapely.STRtree(layer_geoms)
    pairs = tree.query(sites, predicate="dwithin", distance=dist)
    np.add.at(out, pairs[0], 1)
    return out


def _check_layer(layers, name, grid: Grid, fields=()):
    layer = layers.get(name)
    if layer is None:
        return None
    if not isinstance(layer, gpd.GeoDataFrame):
        raise InputDataError(f"layer {name} is not a GeoDataFrame", field=f"layers.{name}")
    if grid.crs is not None and (layer.crs is None or not layer.crs.equals(grid.crs)):
        raise InputDataError(f"layer {name} is in {layer.crs}, not the analysis CRS",
                             field=f"layers.{name}", fix="reproject it to the basin's analysis CRS (io)")
    for f in fields:
        if f not in layer.columns:
            raise InputDataError(f"layer {name} lacks column {f!r}", field=f"layers.{name}.{f}",
                                 fix=f"add a {f!r} column or set the matching *_field parameter")
    return layer


# ------------------------------------------------------------------ raster sources

@dataclass(frozen=True)
class RasterFile:
    """A single-band GeoTIFF on the basin grid, read window by window.

    ``equals``: if set, the raster reads as the bool mask ``value == equals``
    (streams.tif holds 1 stream, 0 land and 255 outside the basin).
    """

    path: Path
    equals: int | None = None


class _Source:
    """Windowed access to one 2-D layer on the grid: a numpy array, an xarray
    DataArray (dask-backed or not) or a :class:`RasterFile` (kept open in ``files``).

    Only D8 and the class rasters are ever read whole (CB is basin-wide); every
    other layer is read in the window of the cells asked for, so the memory of
    the step does not grow with the grid beyond those uint8 rasters.
    """

    def __init__(self, obj, grid: Grid, name: str, files: ExitStack):
        self.name = name
        self._ds = self._arr = None
        self._equals = None
        if isinstance(obj, (str, Path)):
            obj = RasterFile(Path(obj))
        if isinstance(obj, RasterFile):
            try:
                ds = files.enter_context(rasterio.open(obj.path))
            except rasterio.errors.RasterioIOError as exc:
                raise InputDataError(f"{name} cannot be read ({exc})", path=obj.path, field=name,
                                     fix="run the hydrology and land-cover steps again") from None
            if ds.count != 1:
                raise InputDataError(f"{name} has {ds.count} bands, expected 1", path=obj.path, field=name)
            if not ds.transform.almost_equals(grid.transform):
                raise InputDataError(f"{name} is not on the basin grid (transform {tuple(ds.transform)[:6]})",
                                     path=obj.path, field=name,
                                     fix="align every raster to the basin grid (io)")
            self._ds, self._equals = ds, obj.equals
            shape, self.dtype = (ds.height, ds.width), np.dtype(ds.dtypes[0])
        elif hasattr(obj, "dims") and hasattr(obj, "isel"):      # xarray, maybe dask-backed
            self._arr = obj
            shape, self.dtype = tuple(obj.shape), np.dtype(obj.dtype)
        else:
            self._arr = np.asarray(obj)
            shape, self.dtype = self._arr.shape, self._arr.dtype
        if self._equals is not None:
            self.dtype = np.dtype(bool)
        if tuple(shape) != tuple(grid.shape):
            raise InputDataError(f"{name} has shape {tuple(shape)}, the grid is {grid.shape}",
                                 field=name, fix="align every raster to the basin grid (io)")
        self.shape = tuple(grid.shape)

    def window(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Rows r0:r1, cols c0:c1 (a view for numpy input)."""
        if self._ds is not None:
            w = self._ds.read(1, window=Window(c0, r0, c1 - c0, r1 - r0))
            return w == self._equals if self._equals is not None else w
        return np.asarray(self._arr[r0:r1, c0:c1])

    def gather(self, ids: np.ndarray) -> np.ndarray:
        """Values at flat cell indices, read through their bounding window."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            return np.empty(0, dtype=self.dtype)
        rows, cols = np.divmod(ids, self.shape[1])
        r0, c0 = int(rows.min()), int(cols.min())
        w = self.window(r0, int(rows.max()) + 1, c0, int(cols.max()) + 1)
        return w[rows - r0, cols - c0]

    def read_into(self, out: np.ndarray) -> np.ndarray:
        """The whole layer into ``out`` (grid-shaped), strip by strip for files."""
        if self._ds is None:
            out[...] = np.asarray(self._arr)
            return out
        step = max(1, (1 << 24) // max(1, self.shape[1]))   # ~16 M cells per read
        for r0 in range(0, self.shape[0], step):
            r1 = min(self.shape[0], r0 + step)
            out[r0:r1] = self.window(r0, r1, 0, self.shape[1])
        return out

    def read_all(self) -> np.ndarray:
        if self._ds is None and isinstance(self._arr, np.ndarray):
            return np.ascontiguousarray(self._arr)
        return self.read_into(np.empty(self.shape, dtype=self.dtype))


def _source(d: Mapping, key: str, grid: Grid, where: str, files: ExitStack, required: bool = True):
    a = d.get(key) if d is not None else None
    if a is None:
        if required:
            raise InputDataError(f"{where} lacks the array {key!r}", field=f"{where}.{key}")
        return None
    return _Source(a, grid, f"{where}.{key}", files)


def _lookup(table, ids: np.ndarray) -> np.ndarray:
    """Values of a per-patch table (dict or array indexed by patch id) for ids."""
    if isinstance(table, Mapping):
        return np.array([float(table.get(int(i), table.get(str(int(i)), 0.0))) for i in ids])
    arr = np.asarray(table, dtype=np.float64)
    return arr[ids]


def _per_patch(values, grid: Grid, name: str, files: ExitStack):
    """A per-patch table (dict or 1-D array indexed by patch id) as is; a per-cell
    raster on the grid (each cell carries its patch's value, as the landscape
    rasters do) as a source read at the site's cells."""
    if isinstance(values, Mapping):
        return values
    if isinstance(values, (str, Path, RasterFile)) or (hasattr(values, "dims") and np.ndim(values) == 2):
        return _Source(values, grid, name, files)
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        return arr
    if arr.shape != grid.shape:
        raise InputDataError(f"{name} has shape {arr.shape}; expected a per-patch table or a "
                             f"raster of the grid's shape {grid.shape}", field=name)
    return _Source(arr, grid, name, files)


def _patch_values(table, pid: np.ndarray, ids: np.ndarray, cell_pid: np.ndarray, name: str) -> np.ndarray:
    """Per-patch values of the distinct ids ``pid`` touching S (``ids``: S's cells,
    ``cell_pid``: their patch ids)."""
    if isinstance(table, _Source):
        # each cell carries its patch's value; take the last cell of each patch in
        # row-major order (what a whole-raster table build would keep)
        vals = table.gather(ids).astype(np.float64)
        order = np.argsort(ids, kind="stable")
        last = dict(zip(cell_pid[order].tolist(), vals[order].tolist()))
        return np.array([last[int(k)] for k in pid], dtype=np.float64)
    if isinstance(table, np.ndarray) and pid.size and pid.max() >= table.size:
        raise InputDataError(f"{name} has {table.size} entries but patch ids reach {pid.max()}",
                             field=name, fix="index the table by patch id (entry 0 unused)")
    return _lookup(table, pid)


# ------------------------------------------------------------------ DEM part

def _box_mask(idxs: np.ndarray, ncols: int):
    """(row0, col0, bool mask of the bounding window) of a non-empty set of flat indices."""
    rows, cols = np.divmod(idxs, ncols)
    r0, c0 = int(rows.min()), int(cols.min())
    mask = np.zeros((int(rows.max()) - r0 + 1, int(cols.max()) - c0 + 1), dtype=bool)
    mask[rows - r0, cols - c0] = True
    return r0, c0, mask


def _path_head(pidx: np.ndarray, cum: np.ndarray, far_m: float) -> tuple[np.ndarray, np.ndarray]:
    """PATH up to the first cell beyond ``far_m`` (all the flood buffers need: the line
    through these centres has the same first ``far_m`` metres as the whole PATH)."""
    keep = int(np.searchsorted(cum, far_m, side="right")) + 1
    return pidx[:keep].copy(), cum[:keep].copy()


class _DemPart:
    """Everything that depends on the DEM: site cells, CB, o, PATH and their indicators.

    CB is never held as a list of cells: a site's CB is the union of the upstream
    areas of its lowest seeds less its seeds, and the size and class counts of every
    vintage on this DEM (``cb_counts[i][k]``: 256 counts of vintage k) are sums of
    per-area totals, each area walked once for all sites (``_cb_counts``). Point
    sources in CB are found by following D8 down from them (``_cells_in_cb``). PATH
    is kept only as far as the flood buffers reach, and the cells of the flood
    buffers a batch of sites at a time. D8 (and the class rasters, passed in as
    ``canon_stack``) are the only grid-sized arrays; the other layers are read in
    windows around each site.
    """

    def __init__(self, sites_geom, area_m2, cov_s, grid: Grid, dem_stats, canon_stack: np.ndarray,
                 lut: ClassLookup, layers, p, files: ExitStack, assets_from_classes: bool = True,
                 where="dem_stats", present: np.ndarray | None = None):
        n = len(sites_geom)
        self.where = where
        d8_src = _source(dem_stats, "d8", grid, where, files)
        if d8_src.dtype != np.uint8:
            raise InputDataError(f"{where}.d8 must be uint8 ESRI codes, got {d8_src.dtype}",
                                 field=f"{where}.d8")
        acc = _source(dem_stats, "accumulation", grid, where, files)
        slope = _source(dem_stats, "slope_deg", grid, where, files)
        depth = _source(dem_stats, "depression_depth_m", grid, where, files)
        d8 = d8_src.read_all()
        d8_flat = d8.ravel()
        nrows, ncols = grid.shape
        cell_ha = grid.cell_area_m2 / 1e4
        far_m = max(p["path_assets_near_km"], p["path_assets_far_km"]) * 1000.0
        self.seeds, self.cb_counts, self.paths, self.outlets = [], [], [], []
        ind = {k: np.full(n, np.nan) for k in (
            "depression_share", "mean_depression_depth_m", "mean_slope_deg", "cb_area_ha",
            "cb_area_ratio", "path_wq_target_km")}
        ind["point_source_near"] = np.full(n, np.nan, dtype=object)
        ind["path_failing_section"] = np.full(n, np.nan, dtype=object)

        ps = _geoms(layers.get("point_sources"))
        targets = _geoms(layers.get("wq_targets"))
        sec = layers.get("monitoring_sections")
        fail_cells = None
        if sec is not None and len(sec):
            fo, ft = p["section_observed_field"], p["section_target_field"]
            failing = np.zeros(len(sec), dtype=bool)
            for k, (o_, t_) in enumerate(zip(sec[fo], sec[ft])):
                if pd.isna(o_) or pd.isna(t_):
                    log.warning("monitoring section %d has no observed or target class; "
                                "it is not counted as failing", k)
                    continue
                failing[k] = gb3838_rank(o_, fo) > gb3838_rank(t_, ft)
            fail_cells = self._cells_near_points(grid, sec.geometry.to_numpy()[failing],
                                                 p["section_snap_cells"] * max(grid.dx, grid.dy))
        elif sec is not None:   # an empty layer: nothing fails
            ind["path_failing_section"][:] = False

        lowest, lowest_acc = [], []
        for i in range(n):
            ids, cov = cov_s[i]
            dep = depth.gather(ids).astype(np.float64)
            ind["depression_share"][i] = _wmean(
                np.where(np.isfinite(dep), (dep >= p["min_depression_depth_m"]).astype(float), np.nan), cov)
            ind["mean_depression_depth_m"][i] = _wmean(dep, cov)
            ind["mean_slope_deg"][i] = _wmean(slope.gather(ids).astype(np.float64), cov)
            seeds = site_cells(sites_geom[i], grid)
            seeds = seeds[d8_flat[seeds] != D8_NODATA]
            o = -1
            low = np.empty(0, np.int64)
            low_acc = np.empty(0)
            if seeds.size:
                r0, c0, smask = _box_mask(seeds, ncols)
                low_k = ksites.lowest_seeds(d8, seeds, r0, c0, smask, D8_NODATA)
                # o: the seed with the largest accumulation, ties to the row-major first
                win = np.ascontiguousarray(acc.window(r0, r0 + smask.shape[0], c0, c0 + smask.shape[1]),
                                           dtype=np.float64)
                rr, cc = np.divmod(seeds, ncols)
                local = ((rr - r0) * smask.shape[1] + (cc - c0)).astype(np.int64)
                lo = int(ksites.outlet_cell(win, local))
                if lo >= 0:
                    o = (r0 + lo // smask.shape[1]) * ncols + c0 + lo % smask.shape[1]
                low, low_acc = seeds[low_k], win.ravel()[local[low_k]]
            lowest.append(low)
            lowest_acc.append(low_acc)
            pidx, cum = flow_path(d8, o, grid) if o >= 0 else (np.empty(0, np.int64), np.empty(0))
            if len(targets) and pidx.size:
                hit_t = cells_in_polygons(grid, pidx, targets)
                if hit_t.any():
                    ind["path_wq_target_km"][i] = cum[np.argmax(hit_t)] / 1000.0
            if fail_cells is not None and pidx.size:
                ind["path_failing_section"][i] = bool(np.isin(pidx, fail_cells).any())
            self.seeds.append(seeds)
            self.outlets.append(o)
            self.paths.append(_path_head(pidx, cum, far_m))

        # CB = the upstream areas of the lowest seeds (disjoint, every seed inside)
        # minus the seeds; each area is walked once for all sites and vintages
        cb_n, self.cb_counts = self._cb_counts(d8, canon_stack, lowest, lowest_acc, present)
        for i in range(n):
            n_cb = cb_n[i]
            ind["cb_area_ha"][i] = n_cb * cell_ha
            ind["cb_area_ratio"][i] = (n_cb * cell_ha) / (area_m2[i] / 1e4)

        # point sources: within near + 250 m of S, or in a CB cell
        if layers.get("point_sources") is not None:
            ind["point_source_near"][:] = False
        if len(ps):
            near = _any_within(sites_geom, ps, p["near_buffer_m"] + p["point_source_extra_m"]) > 0
            rp = shapely.point_on_surface(ps)
            q = grid.cell_of(shapely.get_x(rp), shapely.get_y(rp))
            ind["point_source_near"] = near | self._cells_in_cb(d8, np.unique(q[q >= 0]), grid)
        del d8, d8_flat

        # PATH buffers for the flood-asset indicators
        bufs = path_buffers([pth if len(pth[0]) else (np.array([0]), np.array([0.0]))
                             for pth in self.paths], grid, buffer_m=p["path_assets_buffer_m"],
                            lengths_m=(p["path_assets_near_km"] * 1000.0, p["path_assets_far_km"] * 1000.0),
                            quad_segs=p["quad_segs"])
        for k, pth in enumerate(self.paths):
            if len(pth[0]) == 0:
                bufs[0][k] = None
                bufs[1][k] = None
        self.buf5, self.buf20 = bufs
        # without a flood_assets layer: built-up cells within the buffers, per vintage;
        # the cell lists are taken a batch of sites at a time and dropped
        nv = canon_stack.shape[0]
        self.assets5 = np.full((nv, n), np.nan)
        self.assets20 = np.full((nv, n), np.nan, dtype=object)
        if assets_from_classes:
            built = CLASS_CODES["built_up"]
            for b0 in range(0, n, _PATH_BATCH):
                b1 = min(n, b0 + _PATH_BATCH)
                cov = polygon_cells(np.concatenate([self.buf5[b0:b1], self.buf20[b0:b1]]), grid)
                for i in range(b0, b1):
                    (i5, c5), (i20, _) = cov[i - b0], cov[b1 - b0 + i - b0]
                    for k in range(nv):
                        canon = canon_stack[k].ravel()
                        c5cls = canon[i5]
                        self.assets5[k, i] = _share(c5cls == built, c5 * lut.valid[c5cls])
                        self.assets20[k, i] = (bool(np.any(canon[i20] == built)) if i20.size else math.nan)
        self.ind = ind

    def _cb_counts(self, d8: np.ndarray, canon_stack: np.ndarray, lowest: list, lowest_acc: list,
                   present: np.ndarray | None = None):
        """Per site, the number of CB cells and the (n_vintages, 256) class counts over CB.

        The upstream area of every lowest seed of every site is measured once
        (``kernels.sites.upstream_totals``, upstream seeds first, so an area nested in
        another is walked once); a site's CB is the sum over its lowest seeds less
        its seeds. ``present``: the codes found in ``canon_stack`` if already counted.
        """
        nv = canon_stack.shape[0]
        if present is None:
            present = np.zeros(256, dtype=bool)
            for k in range(nv):
                present |= ksites.histogram_u8(canon_stack[k]) > 0
        codes = np.flatnonzero(present)
        binlut = np.zeros(256, dtype=np.int64)
        binlut[codes] = np.arange(codes.size)
        allk = np.concatenate(lowest) if lowest else np.empty(0, np.int64)
        alla = np.concatenate(lowest_acc) if lowest_acc else np.empty(0)
        keys, first = np.unique(allk, return_index=True)
        order = np.argsort(alla[first], kind="stable").astype(np.int64)
        key_n, key_hist = ksites.upstream_totals(d8, keys.astype(np.int64), order, D8_NODATA, canon_stack,
                                                 binlut, max(1, codes.size))
        if (key_n < 0).any():
            raise InputDataError("the D8 flow directions hold a loop", field=f"{self.where}.d8",
                                 fix="derive D8 from a filled DEM (the hydrology step does)")
        cb_n, counts = [], []
        for seeds, low in zip(self.seeds, lowest):
            c = np.zeros((nv, 256), dtype=np.int64)
            if low.size == 0:
                cb_n.append(0)
                counts.append(c)
                continue
            j = np.searchsorted(keys, low)
            cb_n.append(int(key_n[j].sum()) - seeds.size)
            c[:, codes] = key_hist[j].sum(axis=0)
            for k in range(nv):
                c[k] -= np.bincount(canon_stack[k].ravel()[seeds], minlength=256)
            counts.append(c)
        return cb_n, counts

    def _cells_in_cb(self, d8: np.ndarray, cells: np.ndarray, grid: Grid) -> np.ndarray:
        """Per site, whether any of ``cells`` lies in its CB: a cell is in CB when the
        D8 path below it meets a seed of the site and the cell is not one itself."""
        n = len(self.seeds)
        out = np.zeros(n, dtype=bool)
        if not n or cells.size == 0:
            return out
        owner = np.concatenate([np.full(s.size, i) for i, s in enumerate(self.seeds)])
        seed_cells = np.concatenate(self.seeds)
        order = np.argsort(seed_cells, kind="stable")
        seed_cells, owner = seed_cells[order], owner[order]
        for cell in cells:
            below = flow_path(d8, int(cell), grid)[0][1:]
            lo = np.searchsorted(seed_cells, below, side="left")
            hi = np.searchsorted(seed_cells, below, side="right")
            hit = np.zeros(n, dtype=bool)
            for a, b in zip(lo[hi > lo], hi[hi > lo]):
                hit[owner[a:b]] = True
            # a seed of a site is not in that site's CB
            hit[owner[np.searchsorted(seed_cells, cell, "left"):np.searchsorted(seed_cells, cell, "right")]] = False
            out |= hit
        return out

    @staticmethod
    def _cells_near_points(grid: Grid, pts, tol: float) -> np.ndarray:
        """Cells whose centre lies within tol metres of any point."""
        out = []
        rp = shapely.point_on_surface(np.asarray(pts, dtype=object)) if len(pts) else []
        nrows, ncols = grid.shape
        t = grid.transform
        for pt in rp:
            x, y = pt.x, pt.y
            c0 = max(0, int(math.floor((x - tol - t.c) / t.a)))
            c1 = min(ncols, int(math.ceil((x + tol - t.c) / t.a)) + 1)
            r0 = max(0, int(math.floor((y + tol - t.f) / t.e)))
            r1 = min(nrows, int(math.ceil((y - tol - t.f) / t.e)) + 1)
            if c1 <= c0 or r1 <= r0:
                continue
            rr, cc = np.mgrid[r0:r1, c0:c1]
            idx = (rr * ncols + cc).ravel().astype(np.int64)
            cx, cy = grid.centres(idx)
            out.append(idx[np.hypot(cx - x, cy - y) <= tol + 1e-9])
        return np.unique(np.concatenate(out)) if out else np.empty(0, np.int64)


# ------------------------------------------------------------------ land-cover part


# ------------------------------------------------------------------ land-cover part

def _landcover_part(i, k, lc, lut: ClassLookup, grid: Grid, cov_s, cov_near, cov_ring,
                    dem: _DemPart, flood_assets, p) -> dict:
    """Indicators of site i on vintage k of ``dem`` (``lc``: that vintage's sources)."""
    canon2d = lc["_canonical"]
    canon = canon2d.ravel()
    ncols = grid.shape[1]
    cell_ha = grid.cell_area_m2 / 1e4
    out: dict = {}

    # --- inside S
    ids, cov = cov_s[i]
    cls = canon[ids]
    w = cov * lut.valid[cls]
    tot = w.sum()
    out["persistent_veg_share"] = _share(lut.persistent[cls], w)
    out["wetland_water_share"] = _share(np.isin(cls, (CLASS_CODES["wetland"], CLASS_CODES["water"])), w)
    out["natural_share"] = _share(lut.natural[cls], w)
    hqw = lc.get("_hq")
    if hqw is not None:   # per-cell HJ 192 weights of the product's own sub-classes
        cw = hqw.gather(ids).astype(np.float64)
        ok = np.isfinite(cw)
        wt = cov[ok].sum()
        out["habitat_quality"] = (min(100.0, HQ_COEFFICIENT * float((cov[ok] * cw[ok]).sum() / wt))
                                  if wt > 0 else math.nan)
    elif tot > 0:
        out["habitat_quality"] = min(100.0, HQ_COEFFICIENT * float((w * lut.hq_weight[cls]).sum() / tot))
    else:
        out["habitat_quality"] = math.nan
    if tot > 0:
        nat_area = np.bincount(cls, weights=w * lut.natural[cls], minlength=256)
        nat_tot = nat_area.sum()
        pk = nat_area[nat_area > 0] / nat_tot if nat_tot > 0 else np.empty(0)
        out["shannon_natural"] = float(-(pk * np.log(pk)).sum()) + 0.0 if pk.size else 0.0
        share_k = nat_area / tot
        ha_k = nat_area * cell_ha
        out["n_structure_classes"] = int(np.sum((nat_area > 0) & (
            (share_k >= p["structure_min_share"] - 1e-12) | (ha_k >= p["structure_min_ha"] - 1e-12))))
    else:
        out["shannon_natural"] = math.nan
        out["n_structure_classes"] = math.nan

    # --- natural patches touching S
    patch_src = lc.get("_patch")
    if patch_src is not None:
        cell_pid = patch_src.gather(ids).astype(np.int64)
        pid = np.unique(cell_pid)
        pid = pid[pid > 0]
        if pid.size:
            where = lc["_where"]
            out["largest_patch_ha"] = float(np.max(_patch_values(
                lc["patch_area_ha"], pid, ids, cell_pid, f"{where}.patch_area_ha")))
            out["site_dpc_pct"] = float(np.sum(_patch_values(
                lc["patch_dpc"], pid, ids, cell_pid, f"{where}.patch_dpc")))
        else:
            out["largest_patch_ha"] = 0.0         # no natural patch touches S
            out["site_dpc_pct"] = 0.0
    else:
        out["largest_patch_ha"] = math.nan
        out["site_dpc_pct"] = math.nan

    # --- NEAR
    nids, ncov = cov_near[i]
    ncls = canon[nids]
    nw = ncov * lut.valid[ncls]
    out["near_pollutant_share"] = _share(lut.pollutant[ncls], nw)
    out["near_runoff_share"] = _share(lut.runoff[ncls], nw)

    # --- CB (whole cells), counted by the walk of the DEM part
    counts = dem.cb_counts[i][k].astype(np.float64)
    counts[~lut.valid] = 0.0
    ctot = counts.sum()
    intensive = p["_intensive_codes"]
    out["cb_intensive_share"] = float(counts[intensive].sum() / ctot) if ctot > 0 else math.nan
    out["cb_impervious_share"] = float((counts * lut.impervious).sum() / ctot) if ctot > 0 else math.nan

    # --- RING1K, on a window around RING1K and S
    rids, rcov = cov_ring[i]
    rcls = canon[rids]
    rw = rcov * lut.valid[rcls]
    rtot = rw.sum()
    out["ring_high_intensity_share"] = _share(lut.high[rcls], rw)
    out["ring_undisturbed_pct"] = 100.0 * _share(lut.access_w[rcls], rw)
    all_ids = np.concatenate([rids, ids])
    if all_ids.size:
        rows, cols = np.divmod(all_ids, ncols)
        r0, c0 = rows.min(), cols.min()
        wshape = (rows.max() - r0 + 1, cols.max() - c0 + 1)

        def local(idx):
            rr, cc = np.divmod(idx, ncols)
            return (rr - r0) * wshape[1] + (cc - c0)

        win_cls = canon2d[r0:r0 + wshape[0], c0:c0 + wshape[1]]
        in_ring = np.zeros(wshape, dtype=bool).ravel()
        in_ring[local(rids)] = True
        in_s = np.zeros(wshape, dtype=bool).ravel()
        in_s[local(ids)] = True
        in_ring, in_s = in_ring.reshape(wshape), in_s.reshape(wshape)
        passable = (in_ring & (lut.valid[win_cls] & ~lut.high[win_cls])) | in_s
        lab, _ = label_block(passable)
        src = np.unique(lab[in_s])
        src = src[src > 0]
        connected = np.isin(lab, src).ravel()[local(rids)]
        out["ring_accessible_pct"] = (100.0 * float((rw * lut.access_w[rcls] * connected).sum() / rtot)
                                      if rtot > 0 else math.nan)
        und = in_ring & lut.undisturbed[win_cls]
        _, n_und = label_block(und)
        out["ring_undisturbed_patches"] = int(n_und) if rtot > 0 else math.nan
    else:
        out["ring_accessible_pct"] = math.nan
        out["ring_undisturbed_patches"] = math.nan

    # --- riparian buffer within RING1K
    stream = lc.get("_stream")
    dist_src = lc.get("_dist")
    rstream = stream.gather(rids).astype(bool) if stream is not None else None
    if rstream is not None and rstream.any():
        if dist_src is not None:
            rdist = dist_src.gather(rids).astype(np.float64)
        else:
            rdist = _window_distance(stream, rids, grid, float(p["riparian_buffer_m"]))
        rip = (rdist <= p["riparian_buffer_m"]) & lut.valid[rcls]
        out["riparian_natural_share"] = _share(lut.natural[rcls], rcov * rip)
    else:
        out["riparian_natural_share"] = math.nan

    # --- flood-exposed assets along PATH
    if flood_assets is not None:
        b5, b20 = dem.buf5[i], dem.buf20[i]
        if b5 is None:
            out["path_assets_share_5km"] = math.nan
            out["path_assets_any_20km"] = math.nan
        else:
            out["path_assets_share_5km"] = float(shapely.area(shapely.intersection(b5, flood_assets))
                                                 / shapely.area(b5))
            out["path_assets_any_20km"] = bool(shapely.intersects(b20, flood_assets))
    else:
        out["path_assets_share_5km"] = dem.assets5[k, i]
        out["path_assets_any_20km"] = dem.assets20[k, i]
    return out


def _window_distance(stream: _Source, ids: np.ndarray, grid: Grid, reach_m: float) -> np.ndarray:
    """Distance (m) from each cell of ``ids`` to the nearest stream cell, exact up to
    ``reach_m``: the Euclidean distance transform of the ids' window grown by reach_m
    on every side, which holds every stream cell within reach_m of them (beyond it
    the value may be larger than the basin-wide distance, but is still > reach_m)."""
    rows, cols = np.divmod(ids, grid.shape[1])
    pr = int(math.ceil(reach_m / grid.dy)) + 1
    pc = int(math.ceil(reach_m / grid.dx)) + 1
    r0, r1 = max(0, int(rows.min()) - pr), min(grid.shape[0], int(rows.max()) + pr + 1)
    c0, c1 = max(0, int(cols.min()) - pc), min(grid.shape[1], int(cols.max()) + pc + 1)
    from scipy import ndimage     # only here: its import costs ~0.1 s a process

    win = stream.window(r0, r1, c0, c1).astype(bool)
    d = ndimage.distance_transform_edt(~win, sampling=(grid.dy, grid.dx))
    return d[rows - r0, cols - c0]


# ------------------------------------------------------------------ entry point

def _typed(df: pd.DataFrame) -> pd.DataFrame:
    """Bool indicators as nullable "boolean", counts as "Int64", the rest float64;
    a missing value (layer not supplied, empty zone) stays <NA> / NaN."""
    for ind in INDICATORS:
        col = df[ind.name]
        if ind.unit == "bool":
            df[ind.name] = pd.array([None if pd.isna(v) else bool(v) for v in col], dtype="boolean")
        elif ind.unit == "count":
            df[ind.name] = pd.array([None if pd.isna(v) else int(v) for v in col], dtype="Int64")
        else:
            df[ind.name] = col.astype(np.float64)
    return df


def site_indicators(sites: gpd.GeoDataFrame, grid, dem_stats: Mapping, landcover: Mapping,
                    layers: Mapping | None = None, attrs=None, params: Mapping | None = None
                    ) -> pd.DataFrame:
    """Raw indicators of every site x land-cover vintage.

    sites      : GeoDataFrame of site polygons in the analysis CRS with ``site_id``;
                 optional attribute columns ``in_wq_plan``, ``in_flood_plan``,
                 ``in_habitat_plan``, ``special_features``.
    grid       : (transform, crs, shape) of the basin grid, or a Grid.
    dem_stats  : {slope_deg, depression_depth_m, d8 (uint8 ESRI), accumulation}; each a
                 2-D array, DataArray or RasterFile (also every raster of ``landcover``).
    landcover  : {vintage: {canonical (uint8, 255 nodata), patch_id, patch_area_ha,
                 patch_dpc, stream_mask, dist_to_stream_m, year?, dem_stats?}}; a
                 vintage's own ``dem_stats`` (as-built DEM) replaces the basin's.
    layers     : optional GeoDataFrames (None if absent): point_sources, wq_targets,
                 monitoring_sections, flood_assets, protected_areas, species, soils,
                 wq_plan_zones, flood_plan_zones, habitat_plan_zones.
    attrs      : {code: {natural, intensity, pollutant, runoff, impervious,
                 hq_weight, persistent_veg}} or a DataFrame indexed by code.
    params     : overrides of DEFAULT_PARAMS.

    Returns one row per site x vintage: site_id, vintage, year and every name in
    ``catalog.NAMES``, rows ordered by vintage then by the sites' order.
    """
    t0 = time.perf_counter()
    p = resolve_params(params)
    grid = as_grid(grid)
    lut = ClassLookup(attrs)
    layers = dict(layers or {})
    idf = p["site_id_field"]
    if not isinstance(sites, gpd.GeoDataFrame) or idf not in sites.columns:
        raise InputDataError(f"sites must be a GeoDataFrame with a {idf!r} column",
                             field=idf, fix="give every site polygon an id")
    if sites[idf].duplicated().any():
        dup = sites.loc[sites[idf].duplicated(), idf].tolist()[:5]
        raise InputDataError(f"duplicate site ids {dup}", field=idf, fix="make site ids unique")
    if grid.crs is not None and (sites.crs is None or not sites.crs.equals(grid.crs)):
        raise InputDataError(f"sites are in {sites.crs}, not the analysis CRS",
                             field="sites.crs", fix="reproject the sites to the basin's analysis CRS (io)")
    geoms = sites.geometry.to_numpy()
    bad = shapely.is_missing(geoms) | shapely.is_empty(geoms) | ~np.isin(shapely.get_type_id(geoms), (3, 6))
    if bad.any():
        raise InputDataError(f"sites {sites.loc[bad, idf].tolist()[:5]} have no polygon geometry",
                             field="sites.geometry", fix="give every site a (multi)polygon")
    n = len(sites)
    log.info("site indicators: %d site(s) x %d vintage(s) on a %dx%d grid",
             n, len(landcover), *grid.shape)

    zones = site_zones(geoms, near_m=float(p["near_buffer_m"]), landscape_m=float(p["landscape_buffer_m"]),
                       near_extra_m=float(p["point_source_extra_m"]), protected_m=float(p["protected_near_m"]),
                       species_m=float(p["species_m"]), quad_segs=int(p["quad_segs"]))
    sgeom = zones.site
    area_m2 = shapely.area(sgeom)
    cov = polygon_cells(np.concatenate([zones.site, zones.near, zones.ring]), grid)
    cov_s, cov_near, cov_ring = cov[:n], cov[n:2 * n], cov[2 * n:]

    # --- layer and attribute indicators (independent of vintage and DEM)
    static: dict[str, np.ndarray] = {"area_ha": area_m2 / 1e4}
    soils = _check_layer(layers, "soils", grid, (p["soil_clay_organic_field"],))
    if soils is not None:
        flag = soils[p["soil_clay_organic_field"]].fillna(False).astype(bool).to_numpy()
        static["clay_organic_share"] = _overlap_share(sgeom, area_m2, _geoms(soils[flag]))
    else:
        static["clay_organic_share"] = np.full(n, np.nan)
    nan_col = np.full(n, np.nan, dtype=object)
    pa_layer = _check_layer(layers, "protected_areas", grid)
    if pa_layer is not None:
        pa = _geoms(pa_layer)
        static["protected_inside"] = _overlap_share(sgeom, area_m2, pa) >= p["overlap_inside_share"]
        static["protected_within_100m"] = _any_within(sgeom, pa, float(p["protected_near_m"]))
    else:
        static["protected_inside"] = static["protected_within_100m"] = nan_col
    sp_layer = _check_layer(layers, "species", grid)
    static["species_within_1km"] = (nan_col if sp_layer is None else
                                    _any_within(sgeom, _geoms(sp_layer), float(p["species_m"])) > 0)
    for col, zone_layer in (("in_wq_plan", "wq_plan_zones"), ("in_flood_plan", "flood_plan_zones"),
                            ("in_habitat_plan", "habitat_plan_zones")):
        # True if the attribute says so or a zone holds the site; NaN if neither is given
        v = np.full(n, np.nan, dtype=object)
        zl = _check_layer(layers, zone_layer, grid)
        if zl is not None:
            v[:] = _overlap_share(sgeom, area_m2, _geoms(zl)) >= p["overlap_inside_share"]
        if col in sites.columns:
            for k, a in enumerate(sites[col].tolist()):
                if not pd.isna(a):
                    v[k] = bool(a) or (v[k] is True)
        static[col] = v
    sf = p["special_features_field"]
    static["n_special_features"] = np.array(
        [count_special_features(x) for x in sites[sf]] if sf in sites.columns else [math.nan] * n,
        dtype=np.float64)
    for name in ("point_sources", "wq_targets", "flood_assets"):
        _check_layer(layers, name, grid)
    if layers.get("monitoring_sections") is not None:
        _check_layer(layers, "monitoring_sections", grid,
                     (p["section_observed_field"], p["section_target_field"]))
    fa = _geoms(layers.get("flood_assets"))
    flood_assets = None
    if len(fa):
        areal = np.isin(shapely.get_type_id(fa), (3, 6))
        parts = list(fa[areal]) + list(shapely.buffer(fa[~areal], max(grid.dx, grid.dy) / 2, cap_style="square"))
        flood_assets = shapely.union_all(np.asarray(parts, dtype=object))
        shapely.prepare(flood_assets)

    # vintages grouped by the DEM they use (their own as-built DEM or the basin's);
    # per group, D8 and the group's class rasters are the only grid-sized arrays held
    groups: dict[int, tuple] = {}
    for vintage, lc in landcover.items():
        ds = lc.get("dem_stats") or dem_stats
        where = f"landcover[{vintage!r}].dem_stats" if lc.get("dem_stats") else "dem_stats"
        groups.setdefault(id(ds), (ds, where, []))[2].append(vintage)
    rows_of: dict = {}
    with ExitStack() as files, rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_BYTES):
        for ds, dwhere, vintages in groups.values():
            canon_stack = np.empty((len(vintages), *grid.shape), dtype=np.uint8)
            present = np.zeros(256, dtype=bool)     # the codes in any of the group's rasters
            works = []
            for k, vintage in enumerate(vintages):
                lc = landcover[vintage]
                where = f"landcover[{vintage!r}]"
                canonical = _source(lc, "canonical", grid, where, files)
                if canonical.dtype != np.uint8:
                    raise InputDataError(f"{where}.canonical must be uint8 canonical codes, got "
                                         f"{canonical.dtype}", field=f"{where}.canonical")
                canonical.read_into(canon_stack[k])
                present |= lut.check_raster(canon_stack[k], f"{where}.canonical") > 0
                work = {"_canonical": canon_stack[k], "_where": where}
                pid = _source(lc, "patch_id", grid, where, files, required=False)
                if pid is not None:
                    for key in ("patch_area_ha", "patch_dpc"):
                        if lc.get(key) is None:
                            raise InputDataError(f"{where} has patch_id but no {key}", field=f"{where}.{key}")
                    work.update(_patch=pid,
                                patch_area_ha=_per_patch(lc["patch_area_ha"], grid, f"{where}.patch_area_ha", files),
                                patch_dpc=_per_patch(lc["patch_dpc"], grid, f"{where}.patch_dpc", files))
                work["_hq"] = _source(lc, "hq_weight", grid, where, files, required=False)
                sm = _source(lc, "stream_mask", grid, where, files, required=False)
                if sm is not None:      # without the distances they are computed around each site
                    work.update(_stream=sm, _dist=_source(lc, "dist_to_stream_m", grid, where, files,
                                                          required=False))
                works.append(work)
            dem = _DemPart(sgeom, area_m2, cov_s, grid, ds, canon_stack, lut, layers, p, files,
                           assets_from_classes=flood_assets is None, where=dwhere, present=present)
            for k, vintage in enumerate(vintages):
                lc = landcover[vintage]
                year = lc.get("year")
                if year is None and isinstance(vintage, (int, np.integer)):
                    year = int(vintage)
                elif year is None and isinstance(vintage, str) and vintage.isdigit():
                    year = int(vintage)
                rows = []
                for i in range(n):
                    row = {"site_id": sites[idf].iloc[i], "vintage": vintage, "year": year}
                    row.update({name: v[i] for name, v in static.items()})
                    row.update({name: v[i] for name, v in dem.ind.items()})
                    row.update(_landcover_part(i, k, works[k], lut, grid, cov_s, cov_near, cov_ring, dem,
                                               flood_assets, p))
                    rows.append(row)
                rows_of[vintage] = rows
            del canon_stack, works, dem
    rows = [r for vintage in landcover for r in rows_of[vintage]]
    df = _typed(pd.DataFrame(rows, columns=["site_id", "vintage", "year", *NAMES]))
    log.info("site indicators done in %.1f s", time.perf_counter() - t0)
    return df
