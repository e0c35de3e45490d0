"""Site geometry (METHOD.md §2): zones around a site, its cells on the grid, CB, o, PATH.

Everything here is in the analysis CRS (projected, metres) and works on plain
numpy arrays plus a grid description ``(transform, crs, shape)``.

Definitions used (documented choices where the method leaves room):

- NEAR   = buffer(S, near_buffer_m) minus S (a ring from the edge of S).
- RING1K = buffer(S, landscape_buffer_m) minus S (it contains NEAR).
- NEAR+250 = buffer(S, near_buffer_m + 250 m), S included: a point source on
  the site itself is as relevant as one next to it.
- The buffers are exact shapely 2 buffers with ``quad_segs`` segments per
  quarter circle (default 16; the area error of the polygonal circle is
  < 0.2 %).
- Site cells (the seeds of CB and the candidates for o) are the cells whose
  centre lies in S (``rasterio.features.rasterize``, all_touched=False). A site
  smaller than a cell that contains no cell centre falls back to the cell that
  holds its representative point, so every site has an outlet.
- Polygon statistics use exactextract cell coverage fractions (``cell_id`` and
  ``coverage`` operations) on the same grid.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from exactextract import exact_extract
from exactextract.feature import Feature, FeatureSource
from exactextract.raster import RasterSource
from rasterio import features as rio_features

from pipeline.errors import InputDataError
from pipeline.kernels import sites as ksites

log = logging.getLogger(__name__)

D8_NODATA = 255


@dataclass(frozen=True)
class Grid:
    """The basin grid: north-up affine transform, CRS and (rows, cols)."""

    transform: Affine
    crs: object
    shape: tuple[int, int]

    def __post_init__(self):
        t = self.transform
        if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
            raise InputDataError(
                f"the analysis grid must be north-up without rotation, got transform {tuple(t)[:6]}",
                field="grid.transform",
                fix="align every layer to the basin grid (io) before extracting site indicators")
        if self.crs is None:
            raise InputDataError("the analysis grid has no CRS", field="grid.crs",
                                 fix="give the basin grid its projected (metre) CRS")
        from pyproj import CRS
        c = CRS.from_user_input(self.crs)
        if not c.is_projected or c.axis_info[0].unit_name not in ("metre", "meter"):
            raise InputDataError(
                f"site indicators need a projected CRS in metres, got {c.name}",
                field="grid.crs", fix="set the basin's analysis CRS to a projected (metre) CRS")

    @functools.cached_property
    def crs_wkt(self) -> str:
        """The CRS as WKT (made once per grid: pyproj takes milliseconds for it)."""
        from pyproj import CRS
        return CRS.from_user_input(self.crs).to_wkt()

    @property
    def dx(self) -> float:
        return float(self.transform.a)

    @property
    def dy(self) -> float:
        return float(-self.transform.e)

    @property
    def cell_area_m2(self) -> float:
        return self.dx * self.dy

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the grid."""
        t = self.transform
        nrows, ncols = self.shape
        return (t.c, t.f + t.e * nrows, t.c + t.a * ncols, t.f)

    def centres(self, idxs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x, y of the centres of flat cell indices."""
        idxs = np.asarray(idxs, dtype=np.int64)
        rows, cols = np.divmod(idxs, self.shape[1])
        t = self.transform
        return t.c + (cols + 0.5) * t.a, t.f + (rows + 0.5) * t.e

    def cell_of(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Flat index of the cell holding each (x, y); -1 off the grid."""
        t = self.transform
        cols = np.floor((np.asarray(x, dtype=float) - t.c) / t.a).astype(np.int64)
        rows = np.floor((np.asarray(y, dtype=float) - t.f) / t.e).astype(np.int64)
        ok = (rows >= 0) & (rows < self.shape[0]) & (cols >= 0) & (cols < self.shape[1])
        return np.where(ok, rows * self.shape[1] + cols, -1)


def as_grid(grid) -> Grid:
    """Accept a Grid or a ``(transform, crs, shape)`` tuple (checked on construction)."""
    if isinstance(grid, Grid):
        return grid
    transform, crs, shape = grid
    return Grid(Affine(*tuple(transform)[:6]), crs, (int(shape[0]), int(shape[1])))


# --------------------------------------------------------------------------- zones

@dataclass(frozen=True)
class Zones:
    """Polygons of every site (arrays aligned with the sites' order)."""

    site: np.ndarray        # S
    near: np.ndarray        # NEAR ring
    ring: np.ndarray        # RING1K ring
    near_plus: np.ndarray   # buffer(S, near + extra), S included
    buf_protected: np.ndarray  # buffer(S, protected_m)
    buf_species: np.ndarray    # buffer(S, species_m)


def site_zones(geoms, *, near_m: float, landscape_m: float, near_extra_m: float = 250.0,
               protected_m: float = 100.0, species_m: float = 1000.0,
               quad_segs: int = 16) -> Zones:
    """Exact zone polygons for an array of site polygons (vectorised shapely 2)."""
    s = np.asarray(geoms, dtype=object)
    if len(s) and not np.all(shapely.is_valid(s)):
        s = shapely.make_valid(s)
    b_near = shapely.buffer(s, near_m, quad_segs=quad_segs)
    b_ring = shapely.buffer(s, landscape_m, quad_segs=quad_segs)
    return Zones(
        site=s,
        near=shapely.difference(b_near, s),
        ring=shapely.difference(b_ring, s),
        near_plus=shapely.buffer(s, near_m + near_extra_m, quad_segs=quad_segs),
        buf_protected=shapely.buffer(s, protected_m, quad_segs=quad_segs),
        buf_species=shapely.buffer(s, species_m, quad_segs=quad_segs),
    )


# ------------------------------------------------------------------ cell coverage

class _GridCells(RasterSource):
    """A value-less exactextract raster source on the basin grid.

    Only ``cell_id`` and ``coverage`` are asked of it, so it hands exactextract
    zeros for any window and never holds a basin-sized array.
    """

    def __init__(self, grid: Grid):
        super().__init__()
        self._grid = grid
        self._wkt = grid.crs_wkt if grid.crs is not None else None

    def res(self):
        return (self._grid.dx, self._grid.dy)

    def extent(self):
        return self._grid.bounds

    def nodata_value(self):
        return None

    def srs_wkt(self):
        return self._wkt

    def read_window(self, x0, y0, nx, ny):
        return np.zeros((ny, nx), dtype=np.float32)


class _WkbFeature(Feature):
    """One polygon handed to exactextract as WKB with a single integer field."""

    def __init__(self, wkb: bytes, key: int):
        super().__init__()
        self._wkb, self._key = wkb, key

    def geometry(self):
        return self._wkb

    def set_geometry_format(self):
        return "wkb"

    def get(self, name):
        return self._key

    def fields(self):
        return ["k_"]


class _WkbSource(FeatureSource):
    """Polygons for exactextract as WKB: the same coordinates as the GeoJSON a
    GeoDataFrame would hand over (both are exact), without building it."""

    def __init__(self, geoms: np.ndarray, keys: np.ndarray, wkt: str | None):
        super().__init__()
        self._wkb = shapely.to_wkb(geoms)
        self._keys = [int(k) for k in keys]
        self._wkt = wkt

    def count(self):
        return len(self._keys)

    def __iter__(self):
        for wkb, k in zip(self._wkb, self._keys):
            yield _WkbFeature(bytes(wkb), k)

    def srs_wkt(self):
        return self._wkt


def polygon_cells(geoms, grid) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cells and exact coverage fractions of each polygon on the grid.

    Returns, per geometry, (flat cell indices int64, coverage float64 in (0, 1]).
    Empty or missing geometries give empty arrays. One exactextract call for all.
    """
    grid = as_grid(grid)
    geoms = np.asarray(geoms, dtype=object)
    out: list[tuple[np.ndarray, np.ndarray]] = [
        (np.empty(0, np.int64), np.empty(0, np.float64)) for _ in range(len(geoms))]
    ok = ~shapely.is_missing(geoms)
    ok[ok] = ~shapely.is_empty(geoms[ok]) & (shapely.area(geoms[ok]) > 0)
    if not ok.any():
        return out
    keys = np.flatnonzero(ok)
    src = _WkbSource(geoms[ok], keys, grid.crs_wkt if grid.crs is not None else None)
    res = exact_extract(_GridCells(grid), src, ["cell_id", "coverage"],
                        include_cols=["k_"], output="pandas")
    for k, ids, cov in zip(res["k_"].to_numpy(), res["cell_id"], res["coverage"]):
        ids = np.asarray(ids, dtype=np.int64)
        cov = np.asarray(cov, dtype=np.float64)
        keep = cov > 0
        out[int(k)] = (ids[keep], cov[keep])
    return out


def site_cells(geom, grid) -> np.ndarray:
    """Flat indices of the cells whose centre lies in the polygon (all_touched=False).

    Falls back to the cell of the polygon's representative point when no centre
    falls inside (a site smaller than a cell); empty only if that is off-grid.
    """
    grid = as_grid(grid)
    t = grid.transform
    nrows, ncols = grid.shape
    xmin, ymin, xmax, ymax = shapely.bounds(geom)
    c0 = max(0, int(math.floor((xmin - t.c) / t.a)))
    c1 = min(ncols, int(math.ceil((xmax - t.c) / t.a)))
    r0 = max(0, int(math.floor((ymax - t.f) / t.e)))
    r1 = min(nrows, int(math.ceil((ymin - t.f) / t.e)))
    idxs = np.empty(0, dtype=np.int64)
    if c1 > c0 and r1 > r0:
        wt = Affine(t.a, 0.0, t.c + c0 * t.a, 0.0, t.e, t.f + r0 * t.e)
        m = rio_features.rasterize([(geom, 1)], out_shape=(r1 - r0, c1 - c0), transform=wt,
                                   fill=0, all_touched=False, dtype="uint8")
        rr, cc = np.nonzero(m)
        idxs = ((rr + r0) * ncols + (cc + c0)).astype(np.int64)
    if idxs.size == 0:
        p = shapely.point_on_surface(geom)
        cell = grid.cell_of(np.array([p.x]), np.array([p.y]))
        idxs = cell[cell >= 0].astype(np.int64)
    return np.sort(idxs)


# ---------------------------------------------------------------- CB, o and PATH

def contributing_basin(d8: np.ndarray, seeds: np.ndarray,
                       scratch: np.ndarray | None = None) -> np.ndarray:
    """Flat indices of every cell that drains (D8) into any seed cell, seeds excluded."""
    if scratch is None:
        scratch = np.zeros(d8.size, dtype=np.uint8)
    return ksites.upstream_cells(d8, np.ascontiguousarray(seeds, dtype=np.int64),
                                 D8_NODATA, scratch)


def cells_window(idxs: np.ndarray, shape: tuple[int, int]):
    """A set of flat cell indices as (row0, col0, bool mask of its bounding window).

    For drawing CB (or any cell set) without a basin-sized array; None if empty.
    """
    idxs = np.asarray(idxs, dtype=np.int64)
    if idxs.size == 0:
        return None
    rows, cols = np.divmod(idxs, shape[1])
    r0, c0 = int(rows.min()), int(cols.min())
    mask = np.zeros((int(rows.max()) - r0 + 1, int(cols.max()) - c0 + 1), dtype=bool)
    mask[rows - r0, cols - c0] = True
    return r0, c0, mask


def outlet(acc: np.ndarray, seeds: np.ndarray) -> int:
    """o: the seed cell with the largest accumulation, ties to row-major first (-1 if none)."""
    return int(ksites.outlet_cell(acc, np.ascontiguousarray(seeds, dtype=np.int64)))


def flow_path(d8: np.ndarray, start: int, grid) -> tuple[np.ndarray, np.ndarray]:
    """PATH from ``start``: (flat cell indices, cumulative length in metres)."""
    grid = as_grid(grid)
    return ksites.downstream_path(d8, np.int64(start), D8_NODATA, grid.dx, grid.dy)


def path_line(idxs: np.ndarray, cum_m: np.ndarray, grid, max_len_m: float):
    """The first ``max_len_m`` of PATH as a line through the cell centres.

    A one-cell path (o is the basin outlet) is its centre point.
    """
    grid = as_grid(grid)
    x, y = grid.centres(idxs)
    if len(idxs) == 1:
        return shapely.Point(x[0], y[0])
    line = shapely.LineString(np.column_stack([x, y]))
    if cum_m[-1] > max_len_m:
        line = _line_head(line, x, y, float(max_len_m))
    # drop the vertices in the middle of straight runs (tolerance 0: exactly
    # collinear only) - the same line, far cheaper to buffer
    return shapely.simplify(line, 0.0, preserve_topology=False)


def _line_head(line, x: np.ndarray, y: np.ndarray, length: float):
    """``shapely.ops.substring(line, 0, length)`` of the line through (x, y), the same
    coordinates computed the same way (its walk along the vertices, its GEOS end
    points) without its per-vertex Python objects."""
    from shapely.ops import substring
    if not length > 0 or length >= line.length:
        return substring(line, 0.0, length)
    ends = shapely.get_coordinates(shapely.line_interpolate_point(line, np.array([0.0, length])))
    xs, ys = x.tolist(), y.tolist()
    cd = 0.0
    keep = 0                      # vertices 1..keep-1 lie strictly inside (0, length)
    for i in range(len(xs) - 1):
        if 0 < cd < length:
            keep = i + 1
        elif cd >= length:
            break
        cd += ((xs[i + 1] - xs[i]) ** 2 + (ys[i + 1] - ys[i]) ** 2) ** 0.5
    inner = np.column_stack([x[1:keep], y[1:keep]]) if keep > 1 else np.empty((0, 2))
    return shapely.LineString(np.vstack([ends[:1], inner, ends[1:]]))


def path_buffers(paths: list[tuple[np.ndarray, np.ndarray]], grid, *, buffer_m: float,
                 lengths_m: tuple[float, ...], quad_segs: int = 16) -> list[np.ndarray]:
    """For each length, buffer(first length of PATH, buffer_m) for every path."""
    out = []
    for L in lengths_m:
        lines = [path_line(i, c, grid, L) for i, c in paths]
        out.append(shapely.buffer(np.asarray(lines, dtype=object), buffer_m, quad_segs=quad_segs))
    return out


def cells_in_polygons(grid, idxs: np.ndarray, geoms) -> np.ndarray:
    """For each cell in idxs, whether its centre lies in any of ``geoms`` (points/lines:
    whether its square footprint intersects one). Returns a bool array."""
    grid = as_grid(grid)
    geoms = [g for g in np.asarray(geoms, dtype=object) if g is not None and not shapely.is_empty(g)]
    hit = np.zeros(len(idxs), dtype=bool)
    if not geoms or len(idxs) == 0:
        return hit
    x, y = grid.centres(idxs)
    geoms = np.asarray(geoms, dtype=object)
    types = shapely.get_type_id(geoms)
    areal = np.isin(types, (3, 6))  # Polygon, MultiPolygon
    if areal.any():
        u = shapely.union_all(geoms[areal])
        shapely.prepare(u)
        hit |= shapely.contains_xy(u, x, y) | shapely.intersects_xy(shapely.boundary(u), x, y)
    if (~areal).any():
        u = shapely.union_all(geoms[~areal])
        hx, hy = grid.dx / 2, grid.dy / 2
        boxes = shapely.box(x - hx, y - hy, x + hx, y + hy)
        hit |= shapely.intersects(boxes, u)
    return hit


__all__ = [
    "Grid", "as_grid", "Zones", "site_zones", "polygon_cells", "site_cells",
    "contributing_basin", "cells_window", "outlet", "flow_path", "path_line", "path_buffers",
    "cells_in_polygons", "D8_NODATA",
]
