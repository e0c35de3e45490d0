"""Maps and charts of the report (matplotlib, Agg, no tiles, no network).

Every function draws one figure from the run and returns a `Figure`; `make_figures`
saves them as PNG under report/figures/ and returns their paths and captions.
Labels are Chinese when a CJK font is found (see fonts.py), English otherwise.

Figure reuse: each PNG carries, in a PNG text chunk, the sha256 of what it was drawn
from (:func:`figure_key`: the figure's own data - e.g. the raster's bytes and the
vectors drawn over it -, its title, the report code, matplotlib and the font).
`make_figures(..., reuse_from=folder)` links a PNG of an earlier report whose key
equals the new one instead of drawing it again, so a reprocess re-renders only the
figures whose data changed. The PNG is the same either way.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import matplotlib
import numpy as np
import shapely
import rasterio
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import BoundaryNorm, ListedColormap, LogNorm, Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from rasterio.enums import Resampling

from pipeline.indicators.catalog import CLASS_CODES
from pipeline.report.fonts import has_cjk, rc_params
from pipeline.report.model import (CELLS, FUNCTION_EN, FUNCTION_ZH, FUNCTIONS, STAGE_ZH, STAGES, RunOutputs,
                                   site_layer, write_with)
from pipeline.report.styles import CANONICAL_CLASS_COLOURS, STAGE_COLOURS

log = logging.getLogger(__name__)

CLASS_ZH = {"forest": "林地", "shrub": "灌木林", "grassland": "草地", "wetland": "湿地", "water": "水域",
            "cropland": "耕地", "built_up": "建设用地", "bare": "裸地", "other": "其他"}
STAGE_EN = {s: s.replace("_", " ") for s in STAGES}
MAX_PIXELS = 900


def T(zh: str, en: str) -> str:
    """The label in Chinese when a CJK font is available, else in English."""
    return zh if has_cjk() else en


def fname(f: str) -> str:
    return T(FUNCTION_ZH[f], FUNCTION_EN[f])


@dataclass(frozen=True)
class FigureFile:
    key: str
    path: Path
    caption: str


def _rgb(s: str) -> tuple[float, float, float]:
    r, g, b, *_ = (int(x) for x in s.split(","))
    return (r / 255, g / 255, b / 255)


@dataclass(frozen=True)
class _LineParts:
    """The lines of a layer as ``GeoSeries.plot`` draws them (normalised, missing and empty
    geometries left out, multi-part lines split), prepared once per run so that each map
    adds a LineCollection instead of exploding the layer again (~75 ms per layer and map)."""

    segments: list          # (n, 2) vertex array per part
    owner: np.ndarray       # position in the layer of each part's feature
    labels: tuple           # axis labels from the layer's CRS, as geopandas sets them

    @classmethod
    def of(cls, geoms: gpd.GeoSeries) -> _LineParts:
        g = shapely.normalize(np.asarray(geoms.values, dtype=object))
        pos = np.flatnonzero(~(shapely.is_missing(g) | shapely.is_empty(g)))
        parts, idx = shapely.get_parts(g[pos], return_index=True)       # collections -> members
        lines, idx2 = shapely.get_parts(parts, return_index=True)       # multi-lines -> lines
        return cls([np.array(line.coords)[:, :2] for line in lines], pos[idx[idx2]], _axis_labels(geoms.crs))

    def draw(self, ax, positions: np.ndarray | None = None, linewidth=1.0, **kw) -> None:
        """Add the parts of the features at `positions` (sorted; default all) as
        ``layer.iloc[positions].plot(ax=ax, linewidth=..., **kw)`` would; an array `linewidth`
        holds one width per feature of the layer."""
        for get, set_, label in ((ax.get_xlabel, ax.set_xlabel, self.labels[0]),
                                 (ax.get_ylabel, ax.set_ylabel, self.labels[1])):
            if get() == "":
                set_(label, fontsize="small")
        keep = np.ones(len(self.owner), bool) if positions is None else np.isin(self.owner, positions)
        if not keep.any():
            return
        if np.ndim(linewidth):
            linewidth = np.take(linewidth, self.owner[keep])
        ax.set_aspect("equal")
        ax.add_collection(LineCollection([s for s, k in zip(self.segments, keep) if k], linewidth=linewidth, **kw),
                          autolim=True)
        ax.autoscale_view()


def _axis_labels(crs) -> tuple[str, str]:
    """(x, y) axis labels of a layer's CRS, e.g. "Easting [metre]" (what GeoSeries.plot writes)."""
    if not crs:
        return "x", "y"
    x, y = (f"{a.name} [{a.unit_name}]" for a in crs.axis_info[:2])
    return (y, x) if crs.axis_info[0].direction == "north" else (x, y)


class _MapLayers:
    """What every map draws besides its own data, prepared once per run: the basin outline,
    the drawn reaches and their widths (see `_drawn_streams`) and the site outlines."""

    def __init__(self, run: RunOutputs) -> None:
        self.boundary = _LineParts.of(run.boundary.boundary)
        self.stream_layer = self.stream_parts = self.stream_widths = None
        if run.streams is not None and not run.streams.empty:
            self.stream_layer, self.stream_widths = _drawn_streams(run.streams, MAX_DRAWN_REACHES)
            self.stream_parts = _LineParts.of(self.stream_layer.geometry)
        self.site_parts = _LineParts.of(run.sites.boundary)


def _frame(ax, run: RunOutputs, layers: _MapLayers, view: tuple | None = None) -> None:
    """Basin outline, limits, scale bar and north arrow; ``view`` (xmin, ymin, xmax, ymax)
    zooms in (default: the whole basin)."""
    layers.boundary.draw(ax, color="#222222", linewidth=1.0)
    xmin, ymin, xmax, ymax = run.boundary.total_bounds if view is None else view
    pad = 0.03 * max(xmax - xmin, ymax - ymin)
    ax.set_xlim(xmin - pad, xmax + pad)
    ax.set_ylim(ymin - pad, ymax + pad)
    ax.set_aspect("equal")
    ax.tick_params(labelsize=7)
    ax.ticklabel_format(style="plain", useOffset=False)
    # scale bar: a round length near a fifth of the width
    width = xmax - xmin
    length = 10 ** np.floor(np.log10(width / 5))
    for m in (5, 2):
        if m * length <= width / 4:
            length *= m
            break
    x0, y0 = xmin + pad * 0.3, ymin - pad * 0.6
    ax.plot([x0, x0 + length], [y0, y0], color="black", linewidth=3, solid_capstyle="butt")
    ax.text(x0 + length / 2, y0 + pad * 0.25, f"{length / 1000:g} km", ha="center", va="bottom", fontsize=7)
    ax.annotate("N", xy=(0.96, 0.97), xytext=(0.96, 0.88), xycoords="axes fraction", ha="center", fontsize=9,
                arrowprops=dict(arrowstyle="-|>", color="black"))


MAX_DRAWN_REACHES = 5000     # a map is ~1000 px wide: more reaches are sub-pixel clutter


def _streams(ax, layers: _MapLayers, view: tuple | None = None) -> None:
    if layers.stream_layer is None:
        return
    idx = None if view is None else _within(layers.stream_layer, view)
    layers.stream_parts.draw(ax, idx, color="#1f78b4", linewidth=layers.stream_widths)


def _within(gdf, view: tuple) -> np.ndarray:
    """Sorted positions of the features of ``gdf`` that meet the box ``view``."""
    return np.sort(gdf.sindex.query(shapely.box(*view)))


def _project_view(extent: tuple) -> tuple:
    """(xmin, ymin, xmax, ymax) around a raster extent (left, right, bottom, top): 25 %
    margin, at least 1.5 km, so a project's map shows its surroundings."""
    x0, x1, y0, y1 = extent
    pad = max(0.25 * max(x1 - x0, y1 - y0), 1500.0)
    return (x0 - pad, y0 - pad, x1 + pad, y1 + pad)


def _drawn_streams(streams, limit: int):
    """The reaches a map draws and their line widths."""
    ua = streams["upstream_area_km2"].astype(float).clip(lower=1e-3)
    t = (np.log10(ua) - np.log10(ua.min())) / max(np.log10(ua.max() / ua.min()), 1e-9)
    lw = (0.2 + 2.0 * t ** 3).to_numpy()  # headwaters hairline, the main stem bold
    drawn = streams
    if len(streams) > limit:
        # large basins (1e5 reaches at 2e8 cells took minutes per map): the largest
        # reaches only, simplified to a tenth of a map pixel
        keep = np.sort(np.argsort(-ua.to_numpy(), kind="stable")[:limit])
        x0, y0, x1, y1 = streams.total_bounds
        drawn = streams.iloc[keep].copy()
        drawn["geometry"] = drawn.geometry.simplify(max(x1 - x0, y1 - y0) / 10_000)
        lw = lw[keep]
    return drawn, lw


def basin_map(run: RunOutputs, layers: _MapLayers | None = None) -> Figure:
    layers = layers or _MapLayers(run)
    fig = Figure(figsize=(7.5, 7.0))
    ax = fig.add_subplot()
    _frame(ax, run, layers)
    _streams(ax, layers)
    sites = run.sites
    for st in STAGES:
        part = sites[sites["stage"] == st]
        if len(part):
            part.plot(ax=ax, color=_rgb(STAGE_COLOURS[st]), edgecolor="black", linewidth=0.6)
    impact = sites[sites["kind"] == "impact"]
    if len(impact):
        impact.plot(ax=ax, facecolor="none", edgecolor="#d7301f", linewidth=1.6, hatch="///")
    for name, gdf in sorted(run.layers.items()):
        if len(gdf) and set(gdf.geom_type) <= {"Point", "MultiPoint"}:
            gdf.plot(ax=ax, marker="^", color="#e31a1c", markersize=30, zorder=5)
    for _, r in sites.iterrows():
        c = r.geometry.representative_point()
        # a marker too: sites of a few hectares vanish at basin scale
        ax.plot(c.x, c.y, marker="o", markersize=5, color=_rgb(STAGE_COLOURS.get(r["stage"], "128,128,128,255")),
                markeredgecolor="black", markeredgewidth=0.6, zorder=6)
        ax.annotate(str(r["site_id"]), (c.x, c.y), xytext=(4, 4), textcoords="offset points", fontsize=7,
                    zorder=7, bbox=dict(boxstyle="round,pad=0.15", facecolor="white", alpha=0.7, linewidth=0))
    handles = [Patch(facecolor=_rgb(STAGE_COLOURS[s]), edgecolor="black", label=T(STAGE_ZH[s], STAGE_EN[s]))
               for s in STAGES if (sites["stage"] == s).any()]
    handles.append(matplotlib.lines.Line2D([], [], color="#1f78b4", label=T("河网", "streams")))
    if len(impact):
        handles.append(Patch(facecolor="none", edgecolor="#d7301f", hatch="///", label=T("开发影响场地", "impact site")))
    if any(len(g) and set(g.geom_type) <= {"Point", "MultiPoint"} for g in run.layers.values()):
        handles.append(matplotlib.lines.Line2D([], [], marker="^", color="#e31a1c", linestyle="none",
                                               label=T("监测断面等点位", "monitoring points")))
    ax.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.9)
    ax.set_title(T(f"{run.basin_title}：流域、河网与工程场地", f"{run.basin_name}: basin, streams and sites"),
                 fontsize=10)
    return fig


def credit_map(run: RunOutputs, layers: _MapLayers | None = None) -> Figure:
    layers = layers or _MapLayers(run)
    fig = Figure(figsize=(7.5, 7.0))
    ax = fig.add_subplot()
    _frame(ax, run, layers)
    _streams(ax, layers)
    s = site_layer(run)
    net = s["credit_total"] - s["debit_total"]
    lo, hi = float(min(net.min(), -1e-6)), float(max(net.max(), 1e-6))
    norm = TwoSlopeNorm(vcenter=0.0, vmin=lo, vmax=hi)
    s.assign(net=net).plot(ax=ax, column="net", cmap="RdYlGn", norm=norm, edgecolor="black", linewidth=0.6)
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap="RdYlGn")
    fig.colorbar(sm, ax=ax, shrink=0.6, label=T("净生态信用（信用 − 借记）", "net credit (credits − debits)"))
    for _, r in s.assign(net=net).iterrows():
        c = r.geometry.representative_point()
        ax.annotate(f"{r['site_id']}\n{r['net']:+.2f}", (c.x, c.y), xytext=(4, 4), textcoords="offset points",
                    fontsize=7)
    ax.set_title(T("各场地净生态信用", "net ecological credit per site"), fontsize=10)
    return fig


def _read_small(path: Path) -> tuple[np.ndarray, tuple, dict | None, float | None]:
    with rasterio.open(path) as ds:
        f = max(1, int(np.ceil(max(ds.width, ds.height) / MAX_PIXELS)))
        shape = (max(1, ds.height // f), max(1, ds.width // f))
        kind = Resampling.nearest if np.issubdtype(np.dtype(ds.dtypes[0]), np.integer) else Resampling.average
        arr = ds.read(1, out_shape=shape, resampling=kind, masked=True)
        b = ds.bounds
        try:
            cmap = ds.colormap(1)
        except ValueError:
            cmap = None
        return arr, (b.left, b.right, b.bottom, b.top), cmap, ds.nodata


def raster_map(run: RunOutputs, key: str, title: str, unit: str, log_scale: bool = False,
               layers: _MapLayers | None = None) -> Figure:
    """A raster of the run over the basin (a project's credit raster: zoomed to the project);
    `layers` (the run's prepared vectors) are prepared here when not given."""
    layers = layers or _MapLayers(run)
    arr, extent, cmap, _ = _read_small(run.rasters[key])
    if cmap is None and "canonical" in key and np.issubdtype(arr.dtype, np.integer):
        cmap = {k: (*v, 255) for k, v in CANONICAL_CLASS_COLOURS.items()}  # class raster without colour table
    fig = Figure(figsize=(7.5, 6.5))
    ax = fig.add_subplot()
    if cmap is not None and np.issubdtype(arr.dtype, np.integer):
        codes = {v: k for k, v in CLASS_CODES.items()}
        present = sorted(int(v) for v in np.unique(arr.compressed()))
        colours = [tuple(c / 255 for c in cmap.get(v, (128, 128, 128, 255))[:3]) for v in present]
        lut = ListedColormap(colours)
        idx = np.ma.masked_array(np.searchsorted(present, arr.filled(present[0] if present else 0)), arr.mask)
        ax.imshow(idx, extent=extent, cmap=lut, norm=BoundaryNorm(np.arange(len(present) + 1) - 0.5, len(present)),
                  interpolation="nearest")
        ax.legend(handles=[Patch(color=c, label=T(CLASS_ZH.get(codes.get(v, ""), str(v)), codes.get(v, str(v))))
                           for v, c in zip(present, colours)], loc="lower right", fontsize=7)
    else:
        data = arr.astype("float64")
        pos = data.compressed()
        if log_scale and (pos > 0).any():
            norm = LogNorm(vmin=float(pos[pos > 0].min()), vmax=float(pos.max()))
            data = np.ma.masked_less_equal(data, 0)
        else:
            norm = Normalize(vmin=float(pos.min()) if pos.size else 0, vmax=float(pos.max()) if pos.size else 1)
        im = ax.imshow(data, extent=extent, cmap="viridis", norm=norm, interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.7, label=unit)
    # a project's credit raster covers its sites only: zoom in (a dot on the basin map)
    view = _project_view(extent) if key.startswith("credits_") else None
    _frame(ax, run, layers, view)
    if key != "upstream_area_km2":  # the upstream-area raster shows the streams already
        _streams(ax, layers, view)
    layers.site_parts.draw(ax, None if view is None else _within(run.sites, view), color="red", linewidth=0.8)
    ax.set_title(title, fontsize=10)
    return fig


def scores_chart(run: RunOutputs) -> Figure:
    """Before/after function scores per site, one panel per function."""
    s = site_layer(run).sort_values(["project_id", "site_id"])
    fig = Figure(figsize=(8.0, 7.5))
    axes = fig.subplots(3, 1, sharex=True)
    x = np.arange(len(s))
    for ax, f in zip(axes, FUNCTIONS):
        ax.bar(x - 0.2, s[f"{f}_pre"], width=0.4, color="#bdbdbd", label=T(f"基期 {run.baseline[1]}",
                                                                             f"baseline {run.baseline[1]}"))
        ax.bar(x + 0.2, s[f"{f}_post"], width=0.4, color="#2b8cbe", label=T(f"评估期 {run.assessment[1]}",
                                                                              f"assessment {run.assessment[1]}"))
        ax.set_ylim(0, 9.5)
        ax.set_yticks([3, 6, 9])
        ax.set_ylabel(fname(f), fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2, loc="upper right")
    axes[-1].set_xticks(x, [f"{p}\n{i}" for p, i in zip(s["project_id"], s["site_id"])], fontsize=7)
    axes[0].set_title(T("各场地一级指标得分（3–9）：基期与评估期", "function scores (3–9) before and after"),
                      fontsize=10)
    return fig


RATINGS_LABELLED_SITES = 60


def ratings_chart(run: RunOutputs) -> Figure:
    """Heat map of the nine ratings per site, baseline | assessment."""
    s = site_layer(run).sort_values(["project_id", "site_id"])
    n = len(s)
    # one labelled row per site up to RATINGS_LABELLED_SITES; beyond, the rows shrink to fit
    # a page-high figure, every k-th site is named and the letters are left out (the
    # ratings are in the site_scores table; a 500-site chart was 176 inches tall)
    fig = Figure(figsize=(9.0, 1.6 + 0.35 * min(n, RATINGS_LABELLED_SITES)))
    axes = fig.subplots(1, 2, sharey=True)
    cmap = ListedColormap(["#d73027", "#fee08b", "#1a9850"])
    for ax, suffix, title in ((axes[0], "pre", T(f"基期 {run.baseline[1]}", f"baseline {run.baseline[1]}")),
                              (axes[1], "post", T(f"评估期 {run.assessment[1]}", f"assessment {run.assessment[1]}"))):
        m = s[[f"{c}_{suffix}" for c in CELLS]].to_numpy(dtype=float)
        ax.imshow(m, cmap=cmap, vmin=0.5, vmax=3.5, aspect="auto", interpolation="nearest")
        if n <= RATINGS_LABELLED_SITES:
            for (i, j), v in np.ndenumerate(m):
                if np.isfinite(v):
                    ax.text(j, i, T({1: "低", 2: "中", 3: "高"}[int(v)], {1: "L", 2: "M", 3: "H"}[int(v)]),
                            ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(CELLS)), [c.replace("_", "-") for c in CELLS], fontsize=7, rotation=90)
        ax.set_title(title, fontsize=9)
    step = -(-n // RATINGS_LABELLED_SITES)
    axes[0].set_yticks(range(0, n, step), list(s["site_id"])[::step], fontsize=7)
    if n > RATINGS_LABELLED_SITES:   # no letters in the cells: a colour key instead
        axes[1].legend(handles=[Patch(color=c, label=T(zh, en)) for c, zh, en in
                                zip(cmap.colors, ("低", "中", "高"), ("low", "medium", "high"))],
                       loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7)
    fig.suptitle(T("九项二级指标评级（场地/景观/社会效力）", "ratings of the nine cells (site/landscape/society)"),
                 fontsize=10)
    fig.tight_layout()
    return fig


def credits_chart(run: RunOutputs) -> Figure:
    """Credits per function, stacked by stage."""
    c = run.credits[run.credits["kind"] == "restoration"]
    table = c.pivot_table(index="function", columns="stage", values="credit", aggfunc="sum").reindex(
        index=list(FUNCTIONS)).fillna(0.0)
    fig = Figure(figsize=(7.0, 4.2))
    ax = fig.add_subplot()
    bottom_pos = np.zeros(len(FUNCTIONS))
    bottom_neg = np.zeros(len(FUNCTIONS))
    x = np.arange(len(FUNCTIONS))
    for st in STAGES:
        if st not in table.columns:
            continue
        v = table[st].to_numpy()
        base = np.where(v >= 0, bottom_pos, bottom_neg)
        ax.bar(x, v, bottom=base, color=_rgb(STAGE_COLOURS[st]), edgecolor="black", linewidth=0.4,
               label=T(STAGE_ZH[st], STAGE_EN[st]))
        bottom_pos += np.where(v >= 0, v, 0)
        bottom_neg += np.where(v < 0, v, 0)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(x, [fname(f) for f in FUNCTIONS])
    ax.set_ylabel(T("生态信用", "credits"))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, title=T("实施阶段", "stage"), title_fontsize=7)
    else:
        ax.text(0.5, 0.5, T("无修复工程信用", "no restoration credits"), transform=ax.transAxes, ha="center")
    ax.set_title(T("按生态系统服务与实施阶段汇总的生态信用", "credits by function and stage"), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return fig


def ledger_chart(run: RunOutputs) -> Figure:
    led = run.ledger.set_index("function").reindex(list(FUNCTIONS))
    fig = Figure(figsize=(7.0, 4.0))
    ax = fig.add_subplot()
    x = np.arange(len(FUNCTIONS))
    ax.bar(x - 0.2, led["credits"], width=0.4, color="#1a9850", label=T("信用", "credits"))
    ax.bar(x + 0.2, led["debits"], width=0.4, color="#d73027", label=T("借记", "debits"))
    ax.scatter(x, led["net"], color="black", zorder=3, label=T("净值", "net"))
    for xi, n in zip(x, led["net"]):
        ax.annotate(f"{n:+.2f}", (xi, n), xytext=(6, 0), textcoords="offset points", fontsize=8, va="center")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(x, [fname(f) for f in FUNCTIONS])
    ax.legend(fontsize=8)
    ax.set_title(T("流域信用台账：信用、借记与净值", "basin ledger: credits, debits and net"), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return fig


def _raster_specs(run: RunOutputs) -> list[tuple[str, str, str, str, bool]]:
    """(figure key, raster key, title, unit, log) of the indicator maps present in the run."""
    out = []
    if "upstream_area_km2" in run.rasters:
        out.append(("map_upstream_area", "upstream_area_km2", T("上游汇水面积", "upstream area"), "km²", True))
    a, b = run.baseline[0], run.assessment[0]
    for prefix, zh, en, unit in (("canonical", "土地覆被", "land cover", ""),
                                 ("patch_area_ha", "自然斑块面积", "natural patch area", "ha"),
                                 ("patch_dpc", "自然斑块连通性重要性 dPC", "natural patch dPC", "%"),
                                 ("local_natural_share", "周边自然覆被比例", "local natural share", "")):
        for vname, year, zh_when in ((a, run.baseline[1], "基期"), (b, run.assessment[1], "评估期")):
            # raster names: "<vintage>/<indicator>" (pipeline.deliver) or "<indicator>_<vintage>"
            for key in (f"{vname}/{prefix}", f"{prefix}_{vname}"):
                if key in run.rasters:
                    out.append((f"map_{prefix}_{vname}", key, T(f"{zh}（{zh_when} {year}）", f"{en} ({year})"),
                                unit, prefix == "patch_area_ha"))
                    break
    for key in sorted(k for k in run.rasters if k.startswith("credits_")):
        suffix = key[len("credits_"):]
        out.append((f"map_{key}", key, T(f"生态信用栅格（{suffix}）", f"credit raster ({suffix})"),
                    T("信用/像元", "credit per cell"), False))
    return out


# --------------------------------------------------------------------------- figure keys
KEY_CHUNK = "pipeline-figure-key"   # PNG text chunk holding the figure key
_REPORT_CODE = ("figures.py", "fonts.py", "model.py", "styles.py")


def _code_digest() -> str:
    """Hash of the code that draws figures (report modules, history chart, class codes), the
    matplotlib version and the CJK font file."""
    from pipeline.report.fonts import cjk_font

    here = Path(__file__).resolve().parent
    h = hashlib.sha256(f"matplotlib {matplotlib.__version__}".encode())
    for p in [here / n for n in _REPORT_CODE] + [here.parent / "history.py",
                                                  here.parent / "indicators" / "catalog.py"]:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    found = cjk_font()
    if found is not None:
        st = Path(found[1]).stat()
        h.update(f"{found[0]}|{found[1]}|{st.st_size}".encode())
    return h.hexdigest()


def _frame_digest(df) -> str | None:
    from pipeline.cache import frame_digest

    return frame_digest(df)


def _file_digest(path: Path) -> str:
    from pipeline.runlog import sha256

    return sha256(Path(path))


def _vector_digest(run: RunOutputs) -> dict:
    """What every map draws besides its own data: basin boundary, streams and site outlines."""
    return {"boundary": _frame_digest(run.boundary), "streams": _frame_digest(run.streams),
            "sites": _frame_digest(run.sites[[run.sites.geometry.name]])}


def _run_digest(run: RunOutputs) -> dict:
    """Everything of the run that a chart or a site map may draw (used for every figure that is
    not a raster map: these are cheap, and any change of the run redraws them)."""
    return {"vectors": _vector_digest(run), "sites": _frame_digest(run.sites),
            "site_scores": _frame_digest(run.site_scores), "credits": _frame_digest(run.credits),
            "ledger": _frame_digest(run.ledger), "project_totals": _frame_digest(run.project_totals),
            "history": _frame_digest(run.history),
            "layers": {k: _frame_digest(g) for k, g in sorted(run.layers.items())},
            "basin": [run.basin_name, run.basin_title], "baseline": list(run.baseline),
            "assessment": list(run.assessment), "vintages": [list(v) for v in run.vintages],
            "date": run.assessment_date.isoformat(), "cjk": has_cjk()}


def _basin_map_digest(run: RunOutputs) -> dict:
    """What `basin_map` draws: the map layers, the sites' outlines, ids, stages and kinds,
    the point layers and the basin's names (not the scores or credits: a new vintage that
    changes no site's stage reuses the map)."""
    cols = [run.sites.geometry.name] + [c for c in ("site_id", "stage", "kind") if c in run.sites.columns]
    points = {k: _frame_digest(g) for k, g in sorted(run.layers.items())
              if len(g) and set(g.geom_type) <= {"Point", "MultiPoint"}}
    return {"vectors": _vector_digest(run), "sites": _frame_digest(run.sites[cols]), "points": points,
            "basin": [run.basin_name, run.basin_title], "cjk": has_cjk()}


def figure_key(name: str, inputs: dict, code: str) -> str:
    """sha256 of a figure's name, the canonical JSON of its inputs and the drawing code digest."""
    text = json.dumps({"figure": name, "inputs": inputs, "code": code}, sort_keys=True, default=str,
                      ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def png_key(path: Path) -> str | None:
    """The figure key stored in a PNG written by :func:`make_figures`, or None."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            # text chunks precede the image data and are in .info after open; .text
            # would decode the whole image first (~17 ms per map)
            return im.info.get(KEY_CHUNK)
    except (OSError, ValueError, SyntaxError):
        return None


def _plan(run: RunOutputs) -> list[tuple[str, object, str, object]]:
    """(key, draw, caption, inputs) of every figure of the report; `inputs()` gives what the
    figure is drawn from, as a JSON-able document of digests (see figure_key).

    What several figures share is computed once per plan, when first needed: the run's
    digests (~0.3 s each at 500 sites and 1e5 reaches, which 200 maps paid each) and the
    map layers.
    """
    every = functools.cache(lambda: _run_digest(run))
    vectors = functools.cache(lambda: _vector_digest(run))
    layers = functools.cache(lambda: _MapLayers(run))
    plan: list[tuple[str, object, str, object]] = [
        ("basin_map", lambda: basin_map(run, layers()), T("流域、河网、监测点位与工程场地", "basin, streams and sites"),
         functools.cache(lambda: _basin_map_digest(run))),
        ("credit_map", lambda: credit_map(run, layers()), T("各场地净生态信用", "net credit per site"), every),
    ]
    for key, rkey, title, unit, log_scale in _raster_specs(run):
        def inputs(rk=rkey, t=title, u=unit, lg=log_scale):
            return {"raster": _file_digest(run.rasters[rk]), "raster_key": rk, "title": t, "unit": u,
                    "log": bool(lg), "vectors": vectors(), "cjk": has_cjk()}

        plan.append((key, (lambda rk=rkey, t=title, u=unit, lg=log_scale: raster_map(run, rk, t, u, lg, layers())),
                     title, inputs))
    plan += [
        ("scores_chart", lambda: scores_chart(run), T("基期与评估期一级指标得分", "scores before and after"), every),
        ("ratings_chart", lambda: ratings_chart(run), T("九项二级指标评级", "ratings of the nine cells"), every),
        ("credits_chart", lambda: credits_chart(run), T("按服务与阶段的生态信用", "credits by function and stage"),
         every),
        ("ledger_chart", lambda: ledger_chart(run), T("流域信用台账", "basin ledger"), every),
    ]
    if run.history is not None and len(run.history) and run.history["vintage"].nunique() > 1:
        from pipeline.history import history_figure

        plan.append(("history_chart", lambda: history_figure(run.history),
                     T("流域净信用随时间变化", "net credit over time"), every))
    return plan


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _draw_to(run: RunOutputs, draw, path: Path, fkey: str) -> None:
    with matplotlib.rc_context(rc_params()):
        fig = draw()
        save_png(fig, path, fkey)


def save_png(fig: Figure, path: Path, fkey: str) -> Path:
    """Write `fig` (tight bounding box) to `path` as an 8-bit RGB PNG whose text chunk
    :data:`KEY_CHUNK` holds `fkey`; atomically."""
    _RGBCanvas(fig)
    return write_with(path, lambda tmp: fig.savefig(tmp, format="rgbpng", bbox_inches="tight",
                                                    metadata={KEY_CHUNK: fkey}))


class _RGBCanvas(FigureCanvasAgg):
    """Agg canvas with one more output format, ``rgbpng``: the PNG without its alpha channel.

    Every figure is drawn on an opaque background, so the alpha channel of matplotlib's
    PNG carries nothing. Without it the PDF embeds the PNG's compressed rows as they
    are (pipeline.report.pdf.png_image); with it, fpdf2 decoded every PNG, split off the
    alpha and compressed both again (~28 ms a figure, on the report's critical path, for
    reused figures too). Encoding three channels instead of four is also faster.
    A pixel that is not opaque (none is drawn so) is composited over white.
    """

    def print_rgbpng(self, filename_or_obj, *, metadata: dict | None = None, pil_kwargs=None,
                     **_print_figure_kwargs) -> None:
        # print_figure passes dpi, facecolor, edgecolor, orientation and bbox_inches_restore
        # to a print method outside matplotlib; like print_png, this one draws with the
        # figure's own (set by print_figure for the saving)
        from PIL import Image
        from PIL.PngImagePlugin import PngInfo

        FigureCanvasAgg.draw(self)
        rgba = np.asarray(self.buffer_rgba())
        rgb = rgba[..., :3]
        alpha = rgba[..., 3]
        if (alpha != 255).any():
            a = alpha[..., None].astype(np.float32) / 255.0
            rgb = np.rint(rgb * a + 255.0 * (1.0 - a)).astype(np.uint8)
        info = PngInfo()
        for k, v in (metadata or {}).items():
            if v is not None:
                info.add_text(k, v)
        dpi = self.figure.dpi
        Image.fromarray(np.ascontiguousarray(rgb)).save(
            filename_or_obj, format="png", pnginfo=info, dpi=(dpi, dpi), **(pil_kwargs or {}))


_WORKER_RUN: dict = {}   # in a figure process: {run file: (run, its plan's draw functions)}


def _warm_up() -> None:
    """A figure process's start: the drawing modules and the fonts are loaded before the
    first figure is asked for (see start_helper).

    Then what is loaded is moved out of the garbage collector's reach (``gc.freeze``):
    the process only draws and ends, and its end is waited for (stop_helper) before the
    PDF is written; without this, the interpreter's exit scanned every loaded module for
    reference cycles (~0.3 s of the demo's report step)."""
    import gc
    import io

    with matplotlib.rc_context(rc_params()):
        fig = Figure(figsize=(1, 1))
        fig.text(0.5, 0.5, T("预热", "warm"))
        fig.savefig(io.BytesIO(), format="png")
    gc.freeze()


def _ready() -> bool:
    return True


def _draw_in_worker(run_file: str, key: str, path: str, fkey: str) -> str:
    if run_file not in _WORKER_RUN:
        with open(run_file, "rb") as f:
            run = pickle.load(f)
        # one plan per run: its map layers are prepared once
        _WORKER_RUN.clear()
        _WORKER_RUN[run_file] = (run, {k: d for k, d, _, _ in _plan(run)})
    run, draws = _WORKER_RUN[run_file]
    _draw_to(run, draws[key], Path(path), fkey)
    return key


PARALLEL_FROM_FIGURES = 16   # figures to draw from which a second process pays (see default_workers)
_HELPER: list = []           # a figure process started ahead of the report (start_helper)


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers(n_figures: int) -> int:
    """Processes drawing `n_figures`: two (this one and a spawned one) when there are two
    CPUs and either a figure process was started ahead (:func:`start_helper`; from two
    figures on) or there are :data:`PARALLEL_FROM_FIGURES` figures or more; else one.

    The two share the figures as they go (this one from the first, the other from the
    last). A process spawned at the report starts an interpreter, reads the run and
    prepares the map layers before its first figure: about 1.4 s on the demo basin, where
    a figure takes about 0.25 s, so it pays from about 11 figures. Measured on the demo
    basin (2-core machine, two runs each): its 24 figures took 6.4 and 5.9 s in one
    process, 4.4 and 4.4 s in two. The 500-site benchmark basin's 392 took 92.5 s in
    one and 50.2 s in two. Callers may still ask for ``workers`` (the PNGs are the same).
    """
    if _cpus() < 2:
        return 1
    if _HELPER:
        return 2 if n_figures >= 2 else 1
    return 2 if n_figures >= PARALLEL_FROM_FIGURES else 1


def start_helper(force: bool = False) -> bool:
    """Start the second figure process now (two CPUs or more, or with `force`), so that
    its interpreter start and imports (about 1.4 s) overlap the steps before the report
    instead of delaying it; the next :func:`make_figures` draws with it and stops it.
    Returns whether one runs. :func:`stop_helper` stops an unused one."""
    if _HELPER:
        return True
    if _cpus() < 2 and not force:
        return False
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    pool = None
    try:
        pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_warm_up)
        pool.submit(_ready)        # the process starts now, not at the first figure
    except (OSError, BrokenProcessPool) as exc:
        # e.g. multiprocessing's resource tracker (a spawned process) died at its start: its
        # pipe is broken when the pool's first lock is registered
        log.warning("cannot start a second figure process (%s: %s); figures are drawn in this process",
                    type(exc).__name__, exc)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        return False
    _HELPER.append(pool)
    return True


def stop_helper() -> None:
    """Stop the figure process of :func:`start_helper`, if one runs (its queued work is dropped)."""
    while _HELPER:
        _HELPER.pop().shutdown(wait=True, cancel_futures=True)


def make_figures(run: RunOutputs, fig_dir: Path, reuse_from: Path | None = None,
                 workers: int | None = None, meanwhile: Callable[[], object] | None = None
                 ) -> dict[str, FigureFile]:
    """Draw every figure into `fig_dir` as PNG; see the module doc for `reuse_from`.

    Figures to draw are shared among `workers` processes, this one and spawned ones
    (default :func:`default_workers`; 1 draws in this process only); each PNG is the
    same either way.

    `meanwhile` (other work of the run, e.g. writing the GeoPackage) is called once in
    this process: once the other process has its figures, so that it draws while this
    one works; before any drawing when this process draws alone. An error it raises
    stops the drawing and is raised.
    """
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    reuse_from = Path(reuse_from) if reuse_from is not None else None
    code = _code_digest()
    out: dict[str, FigureFile] = {}
    todo: list[tuple[str, object, Path, str]] = []
    with matplotlib.rc_context(rc_params()):
        code += json.dumps({k: str(v) for k, v in sorted(rc_params().items())})
        for key, draw, caption, inputs in _plan(run):
            path = fig_dir / f"{key}.png"
            fkey = figure_key(key, inputs(), code)
            old = reuse_from / f"{key}.png" if reuse_from is not None else None
            if old is not None and old.is_file() and png_key(old) == fkey:
                _link_or_copy(old, path)
            else:
                todo.append((key, draw, path, fkey))
            out[key] = FigureFile(key, path, caption)
    workers = default_workers(len(todo)) if workers is None else max(1, int(workers))
    try:
        # workers=2 asked for explicitly runs with one CPU too; a process that cannot be
        # started (start_helper warns) leaves the drawing to this one
        parallel = workers > 1 and len(todo) > 1
        if parallel and not start_helper(force=True):
            parallel, workers = False, 1
        if parallel:
            _draw_parallel(run, todo, meanwhile)
        else:
            if meanwhile is not None:
                meanwhile()
            for key, draw, path, fkey in todo:
                _draw_to(run, draw, path, fkey)
    finally:
        stop_helper()
    log.info("figures: %d drawn (%d process(es)), %d unchanged since the previous report and reused",
             len(todo), workers, len(out) - len(todo))
    return out


def _draw_parallel(run: RunOutputs, todo: list, meanwhile: Callable[[], object] | None = None) -> None:
    """Draw `todo` here and in the second process of :func:`start_helper` (started by the
    caller), sharing them as they go: the other process takes them from the end,
    this one from the start, and this one draws every figure the other has not begun.
    `meanwhile` runs here once the other process has its figures (see make_figures).

    The run goes to the other process as a file, not as an argument of the spawn: the
    start of a spawned process writes its arguments into a pipe the parent holds both
    ends of, so a process that died before reading a run larger than the pipe (64 KB;
    every real basin's) would block the parent for ever. A process that stops is a
    BrokenProcessPool here instead; the figures it had not returned are drawn in this
    process (the same PNGs) and the run goes on.
    """
    import tempfile
    from concurrent.futures.process import BrokenProcessPool

    pool = _HELPER[0]
    lost, why, unsent = [], None, 0
    with tempfile.TemporaryDirectory(prefix="ecocredit-figures-") as tmp:
        run_file = Path(tmp) / "run.pickle"
        with open(run_file, "wb") as f:
            pickle.dump(run, f, protocol=pickle.HIGHEST_PROTOCOL)
        theirs: dict = {}
        try:
            for t in reversed(todo[1:]):
                theirs[t[0]] = pool.submit(_draw_in_worker, str(run_file), t[0], str(t[2]), t[3])
        except BrokenProcessPool as exc:           # it died before this run's first figure
            why, unsent = exc, len(todo) - 1 - len(theirs)
        if meanwhile is not None:
            meanwhile()
        for t in todo:
            f = theirs.get(t[0])
            if f is None or f.cancel():            # not begun there: draw it here
                theirs.pop(t[0], None)
                _draw_to(run, t[1], t[2], t[3])
        for key, f in theirs.items():
            try:
                log.debug("figure %s", f.result())
            except BrokenProcessPool as exc:
                lost.append(next(t for t in todo if t[0] == key))
                why = exc
        stop_helper()
    if why is not None:
        log.warning("a figure process stopped before finishing (%s); drawing its %d figure(s) here",
                    why, len(lost) + unsent)
    for key, draw, path, fkey in lost:
        _draw_to(run, draw, path, fkey)
