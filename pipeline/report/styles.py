"""QGIS styles (QML) for the deliverables, generated without QGIS.

Vector styles go into the GeoPackage's `layer_styles` table (see gpkg.py);
raster styles are `.qml` sidecars.  The QML written here is the subset of the
QGIS 3 format that QGIS >= 3.16 reads: renderer-v2 (singleSymbol,
categorizedSymbol, graduatedSymbol), simple labeling, field aliases, and the
raster singlebandpseudocolor renderer.  tests/test_clients_qgis.py loads each
style in a real QGIS and renders it.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

from pipeline.report.model import RATING_ZH, STAGE_ZH, STAGES

QGIS_VERSION = "3.22.16-Białowieża"
LABEL_FONT = "Noto Sans CJK SC"

# colours: r,g,b,a strings as QGIS writes them
RATING_COLOURS = {1: "215,48,39,255", 2: "254,224,139,255", 3: "26,152,80,255"}
STAGE_COLOURS = {"planned": "189,189,189,255", "under_construction": "253,174,97,255",
                 "completed": "171,217,233,255", "established": "116,173,209,255",
                 "long_term": "49,54,149,255"}
# colour table for canonical land-cover rasters (pipeline.indicators.catalog.CLASS_CODES)
CANONICAL_CLASS_COLOURS: dict[int, tuple[int, int, int]] = {
    1: (0, 100, 0), 2: (120, 160, 60), 3: (180, 220, 110), 4: (0, 160, 200), 5: (30, 80, 220),
    6: (240, 220, 100), 7: (200, 40, 40), 8: (200, 200, 200), 9: (120, 120, 120)}
_POS_RAMP = ["237,248,233,255", "186,228,179,255", "116,196,118,255", "49,163,84,255", "0,109,44,255"]
_NEG = "215,48,39,255"
_ZERO = "224,224,224,255"
_VIRIDIS = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"]


@dataclass(frozen=True)
class Range:
    lower: float
    upper: float
    colour: str
    label: str


def _opt_map(parent: ET.Element, props: dict[str, str]) -> None:
    m = ET.SubElement(parent, "Option", type="Map")
    for k, v in props.items():
        ET.SubElement(m, "Option", name=k, type="QString", value=str(v))
    # legacy <prop> entries too: older QGIS 3.x read these
    for k, v in props.items():
        ET.SubElement(parent, "prop", k=k, v=str(v))


def _symbol(parent: ET.Element, name: str, geom: str, colour: str, *, width: float = 0.6,
            outline: str = "35,35,35,255", fill_style: str = "solid", line_style: str = "solid") -> None:
    kind = {"polygon": "fill", "line": "line", "point": "marker"}[geom]
    sym = ET.SubElement(parent, "symbol", type=kind, name=name, alpha="1", clip_to_extent="1", force_rhr="0")
    if kind == "fill":
        lyr = ET.SubElement(sym, "layer", {"class": "SimpleFill", "enabled": "1", "pass": "0", "locked": "0"})
        _opt_map(lyr, {"color": colour, "style": fill_style, "outline_color": outline,
                       "outline_style": line_style, "outline_width": "0.4", "outline_width_unit": "MM",
                       "joinstyle": "bevel", "border_width_map_unit_scale": "3x:0,0,0,0,0,0",
                       "offset": "0,0", "offset_unit": "MM"})
    elif kind == "line":
        lyr = ET.SubElement(sym, "layer", {"class": "SimpleLine", "enabled": "1", "pass": "0", "locked": "0"})
        _opt_map(lyr, {"line_color": colour, "line_style": line_style, "line_width": f"{width:g}",
                       "line_width_unit": "MM", "capstyle": "round", "joinstyle": "round",
                       "offset": "0", "offset_unit": "MM"})
    else:
        lyr = ET.SubElement(sym, "layer", {"class": "SimpleMarker", "enabled": "1", "pass": "0", "locked": "0"})
        _opt_map(lyr, {"color": colour, "name": "circle", "size": f"{max(width, 2.4):g}", "size_unit": "MM",
                       "outline_color": outline, "outline_style": "solid", "outline_width": "0.3",
                       "outline_width_unit": "MM", "angle": "0", "offset": "0,0", "offset_unit": "MM",
                       "scale_method": "diameter", "vertical_anchor_point": "1", "horizontal_anchor_point": "1"})


def _root(labels: bool) -> ET.Element:
    return ET.Element("qgis", version=QGIS_VERSION, styleCategories="AllStyleCategories",
                      labelsEnabled="1" if labels else "0", hasScaleBasedVisibilityFlag="0")


def _aliases(root: ET.Element, fields: list[str], aliases: dict[str, str]) -> None:
    if not aliases:
        return
    al = ET.SubElement(root, "aliases")
    for i, f in enumerate(fields):
        if f in aliases:
            ET.SubElement(al, "alias", field=f, index=str(i), name=aliases[f])


def _labeling(root: ET.Element, expression: str, geom: str) -> None:
    lab = ET.SubElement(root, "labeling", type="simple")
    st = ET.SubElement(lab, "settings", calloutType="simple")
    ET.SubElement(st, "text-style", fieldName=expression, isExpression="1", fontFamily=LABEL_FONT,
                  fontSize="9", fontSizeUnit="Point", textColor="20,20,20,255", textOpacity="1",
                  fontWeight="50", fontItalic="0", multilineHeight="1", namedStyle="Regular",
                  blendMode="0", allowHtml="0", previewBkgrdColor="255,255,255,255")
    ET.SubElement(st, "text-format", wrapChar="", multilineAlign="3", plussign="0", addDirectionSymbol="0",
                  formatNumbers="0", decimals="3")
    buf = ET.SubElement(st, "text-buffer", bufferDraw="1", bufferSize="1", bufferSizeUnits="MM",
                        bufferColor="255,255,255,255", bufferOpacity="1", bufferNoFill="1", bufferJoinStyle="128",
                        bufferBlendMode="0")
    del buf
    placement = {"polygon": "1", "line": "2", "point": "0"}[geom]
    ET.SubElement(st, "placement", placement=placement, dist="0", priority="5", offsetType="0",
                  placementFlags="10", centroidInside="1", overrunDistance="0")
    ET.SubElement(st, "rendering", obstacle="1", scaleVisibility="0", drawLabels="1", displayAll="1",
                  upsidedownLabels="0", limitNumLabels="0", maxNumLabels="2000", mergeLines="0",
                  fontMinPixelSize="3", fontMaxPixelSize="10000", fontLimitPixelSize="0", labelPerPart="0",
                  minFeatureSize="0", obstacleType="1", zIndex="0")


def _finish(root: ET.Element) -> str:
    ET.indent(root)
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + ET.tostring(root, encoding="unicode") + "\n"


def single_qml(geom: str, colour: str, *, fields: list[str] = (), aliases: dict | None = None,
               label: str | None = None, width: float = 0.6, fill_style: str = "solid",
               line_style: str = "solid", outline: str = "35,35,35,255") -> str:
    root = _root(label is not None)
    r = ET.SubElement(root, "renderer-v2", type="singleSymbol", symbollevels="0", enableorderby="0",
                      forceraster="0")
    syms = ET.SubElement(r, "symbols")
    _symbol(syms, "0", geom, colour, width=width, fill_style=fill_style, line_style=line_style, outline=outline)
    if label is not None:
        _labeling(root, label, geom)
    _aliases(root, list(fields), aliases or {})
    return _finish(root)


def categorized_qml(geom: str, attr: str, categories: list[tuple[object, str, str]], *,
                    fields: list[str] = (), aliases: dict | None = None, label: str | None = None) -> str:
    """categories: (value, label, colour)."""
    root = _root(label is not None)
    r = ET.SubElement(root, "renderer-v2", type="categorizedSymbol", attr=attr, symbollevels="0",
                      enableorderby="0", forceraster="0")
    cats = ET.SubElement(r, "categories")
    syms = ET.SubElement(r, "symbols")
    for i, (value, text, colour) in enumerate(categories):
        ET.SubElement(cats, "category", value=str(value), symbol=str(i), label=text, render="true")
        _symbol(syms, str(i), geom, colour)
    if label is not None:
        _labeling(root, label, geom)
    _aliases(root, list(fields), aliases or {})
    return _finish(root)


def graduated_qml(geom: str, attr: str, ranges: list[Range], *, fields: list[str] = (),
                  aliases: dict | None = None, label: str | None = None,
                  widths: list[float] | None = None) -> str:
    root = _root(label is not None)
    r = ET.SubElement(root, "renderer-v2", type="graduatedSymbol", attr=attr, graduatedMethod="GraduatedColor",
                      symbollevels="0", enableorderby="0", forceraster="0")
    rng = ET.SubElement(r, "ranges")
    syms = ET.SubElement(r, "symbols")
    for i, rg in enumerate(ranges):
        ET.SubElement(rng, "range", lower=repr(float(rg.lower)), upper=repr(float(rg.upper)), symbol=str(i),
                      label=rg.label, render="true")
        _symbol(syms, str(i), geom, rg.colour, width=(widths[i] if widths else 0.6))
    ET.SubElement(r, "mode", name="quantile")
    if label is not None:
        _labeling(root, label, geom)
    _aliases(root, list(fields), aliases or {})
    return _finish(root)


def nice_number(x: float) -> float:
    """Round |x| to 2 significant digits (class breaks that read well)."""
    if x == 0 or not math.isfinite(x):
        return 0.0
    e = math.floor(math.log10(abs(x))) - 1
    return round(x / 10 ** e) * 10 ** e


def credit_ranges(values, unit: str = "") -> list[Range]:
    """Diverging classes for credits: losses (red), no change (grey), gains in up to 5 quantile classes.

    Every finite value falls in exactly one range (QGIS ranges are lower-exclusive
    except the first, so each range starts just where the previous one ends).
    """
    v = np.asarray(values, dtype="float64")
    v = v[np.isfinite(v)]
    out: list[Range] = []
    eps = 1e-9
    if v.size and v.min() < -eps:
        out.append(Range(float(v.min()) - eps, -eps, _NEG, f"< 0 {unit}（损失）".strip()))
    out.append(Range(-eps, eps, _ZERO, "0（无变化）"))
    pos = v[v > eps]
    if pos.size:
        qs = np.unique([nice_number(q) for q in np.quantile(pos, np.linspace(0, 1, min(5, pos.size) + 1)[1:-1])])
        qs = [q for q in qs if eps < q < pos.max()]
        edges = [eps, *qs, float(pos.max()) + eps]
        n = len(edges) - 1
        ramp = _POS_RAMP[-n:] if n <= len(_POS_RAMP) else _POS_RAMP
        for i in range(n):
            lo, hi = edges[i], edges[i + 1]
            text = f"{0 if i == 0 else lo:g} – {hi if i < n - 1 else float(pos.max()):.4g} {unit}".strip()
            out.append(Range(lo, hi, ramp[i], text))
    return out


def rating_categories() -> list[tuple[object, str, str]]:
    return [(k, f"{k} {RATING_ZH[k]}", RATING_COLOURS[k]) for k in (1, 2, 3)]


def stage_categories() -> list[tuple[object, str, str]]:
    return [(s, STAGE_ZH[s], STAGE_COLOURS[s]) for s in STAGES]


def raster_paletted_qml(entries: list[tuple[int, tuple[int, int, int], str]]) -> str:
    """Class raster style (value, rgb, label) for a `.qml` sidecar, when the file has no colour table."""
    root = ET.Element("qgis", version=QGIS_VERSION, styleCategories="AllStyleCategories",
                      hasScaleBasedVisibilityFlag="0")
    pipe = ET.SubElement(root, "pipe")
    rr = ET.SubElement(pipe, "rasterrenderer", type="paletted", band="1", opacity="1", alphaBand="-1",
                       nodataColor="")
    ET.SubElement(rr, "rasterTransparency")
    pal = ET.SubElement(rr, "colorPalette")
    for value, (r, g, b), label in entries:
        ET.SubElement(pal, "paletteEntry", value=str(int(value)), color=f"#{r:02x}{g:02x}{b:02x}", alpha="255",
                      label=label)
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(root, "blendMode").text = "0"
    return _finish(root)


def raster_pseudocolor_qml(vmin: float, vmax: float, *, label: str = "", log_scale: bool = False) -> str:
    """Continuous raster style (interpolated viridis ramp) for a `.qml` sidecar."""
    if not (math.isfinite(vmin) and math.isfinite(vmax)) or vmax <= vmin:
        vmax = vmin + 1.0 if math.isfinite(vmin) else 1.0
        vmin = vmin if math.isfinite(vmin) else 0.0
    root = ET.Element("qgis", version=QGIS_VERSION, styleCategories="AllStyleCategories",
                      hasScaleBasedVisibilityFlag="0")
    pipe = ET.SubElement(root, "pipe")
    rr = ET.SubElement(pipe, "rasterrenderer", type="singlebandpseudocolor", band="1", opacity="1",
                       alphaBand="-1", classificationMin=repr(vmin), classificationMax=repr(vmax), nodataColor="")
    ET.SubElement(rr, "rasterTransparency")
    mm = ET.SubElement(rr, "minMaxOrigin")
    for tag, val in (("limits", "None"), ("extent", "WholeRaster"), ("statAccuracy", "Estimated"),
                     ("cumulativeCutLower", "0.02"), ("cumulativeCutUpper", "0.98"), ("stdDevFactor", "2")):
        ET.SubElement(mm, tag).text = val
    sh = ET.SubElement(rr, "rastershader")
    crs = ET.SubElement(sh, "colorrampshader", colorRampType="INTERPOLATED", classificationMode="1",
                        clip="0", minimumValue=repr(vmin), maximumValue=repr(vmax), labelPrecision="3")
    n = len(_VIRIDIS)
    for i, col in enumerate(_VIRIDIS):
        t = i / (n - 1)
        val = (vmin * (vmax / vmin) ** t) if (log_scale and vmin > 0) else vmin + t * (vmax - vmin)
        ET.SubElement(crs, "item", alpha="255", value=repr(float(val)), label=f"{val:.4g} {label}".strip(),
                      color=col)
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "huesaturation", saturation="0", grayscaleMode="0", colorizeOn="0",
                  colorizeRed="255", colorizeGreen="128", colorizeBlue="128", colorizeStrength="100")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(root, "blendMode").text = "0"
    return _finish(root)
