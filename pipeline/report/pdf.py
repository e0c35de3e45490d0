"""PDF rendering of the report with matplotlib only (A4, fonts embedded, no system tools).

A small flow layout: every section starts on a new page; paragraphs are wrapped
by measured glyph widths; tables are split by rows across pages (header
repeated) and by columns when too wide (first column repeated); figures are
placed from their PNG files.

Table cells are the bulk of a large report (an appendix of 500 sites has ~20 000
cells); they are drawn by one `_CellTexts` artist per page instead of one
`matplotlib.text.Text` each, at the same baselines (see `_CellTexts`), and each
distinct cell string is shaped once per run (see `_ShapedRuns`).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import matplotlib
import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
from matplotlib import _text_helpers
from matplotlib.artist import Artist, allow_rasterization
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.text import Text
from matplotlib.textpath import TextToPath
from PIL import Image

from pipeline.report.content import TITLE, Section
from pipeline.report.figures import FigureFile
from pipeline.report.fonts import rc_params
from pipeline.report.model import RunOutputs

log = logging.getLogger(__name__)

PAGE_W, PAGE_H = 8.27, 11.69  # A4, inches
MARGIN = 0.75
TEXT_W = PAGE_W - 2 * MARGIN
BODY_PT, H2_PT, H3_PT, TABLE_PT = 10.0, 15.0, 11.5, 6.5


_NO_LINE_START = set("，。；：、）》」』”’！？%,.;:)]")
_NO_LINE_END = set("（《「『“‘([")


class _Measure:
    """Text widths in inches for the current font (cached per character)."""

    def __init__(self) -> None:
        self._ttp = TextToPath()
        self._cache: dict[tuple[str, float], float] = {}
        self._prop = FontProperties()

    def width(self, text: str, pt: float) -> float:
        total = 0.0
        for ch in text:
            key = (ch, pt)
            if key not in self._cache:
                w, _, _ = self._ttp.get_text_width_height_descent(ch if ch != " " else "a", self._prop, ismath=False)
                self._cache[key] = (w if ch != " " else w * 0.5) * pt / self._prop.get_size_in_points() / 72.0
            total += self._cache[key]
        return total

    def wrap(self, text: str, pt: float, width: float) -> list[str]:
        lines, cur, cur_w = [], "", 0.0
        for ch in text:
            w = self.width(ch, pt)
            if cur and cur_w + w > width and not (ch in _NO_LINE_START and cur_w + w <= width * 1.04):
                # keep latin words together when possible (never at a mark that must not end/start a line)
                cut = cur.rfind(" ")
                if (ch.isascii() and ch.isalnum() and cut > len(cur) * 0.6
                        and cur[cut - 1] not in _NO_LINE_END and cur[cut + 1:cut + 2] not in _NO_LINE_START):
                    lines.append(cur[:cut])
                    cur = cur[cut + 1:]
                    cur_w = self.width(cur, pt)
                else:
                    keep = len(cur)
                    while keep > 1 and cur[keep - 1] in _NO_LINE_END:  # opening marks move to the next line
                        keep -= 1
                    lines.append(cur[:keep])
                    cur = cur[keep:]
                    cur_w = self.width(cur, pt)
            cur += ch
            cur_w += w
        if cur:
            lines.append(cur)
        return lines or [""]

    def clip(self, text: str, pt: float, width: float) -> str:
        if self.width(text, pt) <= width + 1e-6:  # widths are sums of the same floats: allow rounding
            return text
        while text and self.width(text + "…", pt) > width:
            text = text[:-1]
        return text + "…"


class _ShapedRuns:
    """Glyph runs of the table cell strings, shaped once per (size, font, string).

    The PDF renderer shapes every string it draws (`matplotlib._text_helpers.layout`:
    raqm shaping and a glyph load per character), ~60 % of drawing a table cell; a
    500-site appendix repeats the same numbers, ratings and names thousands of times.
    While a `_CellTexts` artist draws, `installed` routes that call through this memo;
    the renderer then writes the same glyph ids, positions and kerns as without it
    (the PDF bytes are identical, see tests/test_report.py). The glyph loads the
    renderer does not need are skipped: it reads only the run's records.
    """

    def __init__(self) -> None:
        self._runs: dict[tuple, tuple] = {}

    @contextlib.contextmanager
    def installed(self, pt: float):
        shape = _text_helpers.layout

        def layout(string, font, *, features=None, language=None):
            key = (pt, id(font), string, features, language)
            hit = self._runs.get(key)
            if hit is None or hit[0] is not font:      # (font: a recycled id is not a hit)
                hit = (font, tuple(shape(string, font, features=features, language=language)))
                self._runs[key] = hit
            return iter(hit[1])

        _text_helpers.layout = layout
        try:
            yield
        finally:
            _text_helpers.layout = shape


class _CellTexts(Artist):
    """The table cells of one page, drawn like ``Figure.text(x, y, s, fontsize=pt, va="top")``
    each, without a `Text` per cell (its properties, layout and graphics context cost ~1 ms).

    A top-aligned single line has its baseline at the top minus its ascent, which
    matplotlib takes as ``max(ascent of the string, ascent of the font)``. The string's
    ascent is the largest ascent of its glyphs: when no glyph reaches the font's ascent
    (digits, latin and CJK text) the baseline is the top minus the font's ascent;
    otherwise the offset is taken from a `Text` laid out with that string. Strings
    with a "$" (mathtext) or a line break are not given to this artist.
    """

    zorder = 3  # a Text's

    def __init__(self, pt: float, ascents: dict, shaped: _ShapedRuns | None = None) -> None:
        super().__init__()
        self.prop = FontProperties(size=pt)
        self.cells: list[tuple[float, float, str]] = []    # (x, y of the top, text) in figure fractions
        self._ascents = ascents                             # glyph ascent per (character, size), shared by pages
        self._shaped = shaped or _ShapedRuns()              # shaped strings, shared by pages

    def add(self, x: float, y: float, s: str) -> None:
        self.cells.append((x, y, s))

    def _layout_ascent(self, renderer, s: str) -> float:
        """The baseline offset below the top that a top-aligned `Text` of `s` gets."""
        probe = Text(0, 0, s, fontproperties=self.prop, va="top")
        probe.set_figure(self.get_figure(root=True))
        _, info, _ = probe._get_layout(renderer)
        return -info[0][2][1]

    def _glyph_ascent(self, renderer, ch: str) -> float:
        key = (ch, self.prop.get_size_in_points())
        if key not in self._ascents:
            _, h, d = renderer.get_text_width_height_descent(ch, self.prop, ismath=False)
            self._ascents[key] = h - d
        return self._ascents[key]

    @allow_rasterization
    def draw(self, renderer) -> None:
        if not self.cells:
            return
        floor = self._layout_ascent(renderer, ".")
        if self._glyph_ascent(renderer, ".") >= floor:  # the font's ascent is not what "." gets
            floor = float("inf")
        gc = renderer.new_gc()
        gc.set_foreground(mcolors.to_rgba(matplotlib.rcParams["text.color"]), isRGBA=True)
        gc.set_antialiased(matplotlib.rcParams["text.antialiased"])
        self._set_gc_clip(gc)
        xy = self.get_transform().transform(np.array([(x, y) for x, y, _ in self.cells], dtype=float))
        baselines = []
        for (px, py), (_, _, s) in zip(xy, self.cells):
            if s:
                a = max((self._glyph_ascent(renderer, ch) for ch in s), default=0.0)
                baselines.append((float(px), float(py) - (floor if a < floor else self._layout_ascent(renderer, s)), s))
        with self._shaped.installed(self.prop.get_size_in_points()):
            for px, py, s in baselines:
                renderer.draw_text(gc, px, py, s, self.prop, 0.0, ismath=False, mtext=None)
        gc.restore()
        self.stale = False


class _Writer:
    def __init__(self, pdf: PdfPages, footer: str) -> None:
        self.pdf, self.footer = pdf, footer
        self.m = _Measure()
        self.fig: Figure | None = None
        self.cells: _CellTexts | None = None     # the table cells of the current page
        self._ascents: dict = {}
        self._shaped = _ShapedRuns()
        self.y = 0.0  # inches from the top
        self.page = 0

    # page management ------------------------------------------------------------------
    def new_page(self) -> None:
        self.flush()
        self.fig = Figure(figsize=(PAGE_W, PAGE_H))
        self.cells = None
        self.page += 1
        self.y = MARGIN
        self.fig.text(0.5, 0.35 / PAGE_H, f"{self.footer}　— {self.page} —", ha="center", va="bottom", fontsize=7,
                      color="#666666")

    def flush(self) -> None:
        if self.fig is not None:
            self.pdf.savefig(self.fig)
            self.fig = None

    def need(self, h: float) -> None:
        if self.fig is None or self.y + h > PAGE_H - MARGIN:
            self.new_page()

    def text(self, x: float, s: str, pt: float, **kw) -> None:
        self.fig.text(x / PAGE_W, 1 - self.y / PAGE_H, s, fontsize=pt, va="top", **kw)

    def cell(self, x: float, s: str, pt: float) -> None:
        """A table cell: the same as ``text(x, s, pt)``, drawn by the page's `_CellTexts`."""
        if "$" in s or "\n" in s:  # mathtext, an escaped dollar or several lines: a Text lays them out
            self.text(x, s, pt)
            return
        if self.cells is None or self.cells.prop.get_size_in_points() != pt:
            self.cells = self.fig.add_artist(_CellTexts(pt, self._ascents, self._shaped))
        self.cells.add(x / PAGE_W, 1 - self.y / PAGE_H, s)

    # blocks ---------------------------------------------------------------------------
    def title(self, s: str, pt: float, gap: float = 0.15) -> None:
        for line in self.m.wrap(s, pt, TEXT_W):
            self.need(pt * 1.6 / 72)
            self.text(PAGE_W / 2, line, pt, ha="center")
            self.y += pt * 1.6 / 72
        self.y += gap

    def heading(self, s: str, pt: float) -> None:
        self.need(pt * 3.2 / 72)
        self.y += pt * 0.6 / 72
        self.text(MARGIN, s, pt, color="#12507a")
        self.y += pt * 1.7 / 72

    def paragraph(self, s: str, pt: float = BODY_PT, indent: float = 0.0, bullet: str = "") -> None:
        lh = pt * 1.65 / 72
        lines = self.m.wrap(s, pt, TEXT_W - indent - (0.2 if bullet else 0))
        for i, line in enumerate(lines):
            self.need(lh)
            if bullet and i == 0:
                self.text(MARGIN + indent, bullet, pt)
            self.text(MARGIN + indent + (0.2 if bullet else 0), line, pt)
            self.y += lh
        self.y += pt * 0.5 / 72

    def figure(self, f: FigureFile, number: int) -> None:
        with Image.open(f.path) as im:   # 8-bit as stored: the same PDF as mpimg.imread's floats, 1/5 faster
            img = np.asarray(im if im.mode in ("RGB", "RGBA") else im.convert("RGBA"))
        h_px, w_px = img.shape[:2]
        w = TEXT_W
        h = w * h_px / w_px
        max_h = (PAGE_H - 2 * MARGIN) * 0.46  # two maps fit on a page
        if h > max_h:
            h, w = max_h, max_h * w_px / h_px
        self.need(h + 0.35)
        ax = self.fig.add_axes(((PAGE_W - w) / 2 / PAGE_W, 1 - (self.y + h) / PAGE_H, w / PAGE_W, h / PAGE_H))
        ax.imshow(img, interpolation="antialiased")
        ax.set_axis_off()
        self.y += h + 0.05
        self.text(PAGE_W / 2, f"图 {number}　{f.caption}", 8.5, ha="center", color="#333333")
        self.y += 0.3

    def table(self, title: str, df: pd.DataFrame, number: int) -> None:
        pt = TABLE_PT
        cells = df.astype(object).where(df.notna(), "—").map(
            lambda v: f"{v:.4g}" if isinstance(v, float) else str(v))
        headers = [str(c) for c in df.columns]
        pad = 0.06
        max_col = 1.9
        widths = [min(max_col, max([self.m.width(h, pt)] + [self.m.width(v, pt) for v in cells[c]]) + 2 * pad)
                  for h, c in zip(headers, df.columns)]
        # split columns into chunks that fit, repeating the first column
        chunks, cur, cur_w = [], [0], widths[0]
        for j in range(1, len(headers)):
            if cur_w + widths[j] > TEXT_W and len(cur) > 1:
                chunks.append(cur)
                cur, cur_w = [0], widths[0]
            cur.append(j)
            cur_w += widths[j]
        chunks.append(cur)
        rh = pt * 1.75 / 72
        for k, cols in enumerate(chunks):
            part = f"（{k + 1}/{len(chunks)}）" if len(chunks) > 1 else ""
            cap = f"表 {number}　{title}{part}"
            self.need(rh * 3 + 0.3)
            self.text(MARGIN, cap, 8.5)
            self.y += 0.22
            self._header(headers, widths, cols, pt, rh, pad)
            for i in range(len(cells)):
                if self.y + rh > PAGE_H - MARGIN:
                    self.new_page()
                    self.text(MARGIN, cap + "（续）", 8.5)
                    self.y += 0.22
                    self._header(headers, widths, cols, pt, rh, pad)
                x = MARGIN
                if i % 2:
                    self._rect(x, sum(widths[j] for j in cols), rh, "#f3f6f9")
                for j in cols:
                    self.cell(x + pad, self.m.clip(cells.iat[i, j], pt, widths[j] - 2 * pad), pt)
                    x += widths[j]
                self.y += rh
            self.y += 0.2

    def _rect(self, x: float, w: float, h: float, colour: str) -> None:
        self.fig.patches.append(matplotlib.patches.Rectangle(
            (x / PAGE_W, 1 - (self.y + h - 0.02) / PAGE_H), w / PAGE_W, h / PAGE_H, transform=self.fig.transFigure,
            facecolor=colour, edgecolor="none", zorder=0))

    def _header(self, headers, widths, cols, pt, rh, pad) -> None:
        self._rect(MARGIN, sum(widths[j] for j in cols), rh, "#dbe9f4")
        x = MARGIN
        for j in cols:
            self.cell(x + pad, self.m.clip(headers[j], pt, widths[j] - 2 * pad), pt)
            x += widths[j]
        self.y += rh


def render(run: RunOutputs, sections: list[Section], figures: dict[str, FigureFile], path: Path) -> None:
    """Write the PDF to `path` (callers pass a temporary path; see write_report)."""
    meta = {"Title": f"{run.basin_title} {TITLE}", "Creator": "pipeline.report", "Producer": "matplotlib",
            "CreationDate": None}
    with matplotlib.rc_context(rc_params()), PdfPages(path, metadata=meta) as pdf:
        w = _Writer(pdf, f"{run.basin_title}　{TITLE}")
        w.new_page()
        w.y = 3.0
        w.title(run.basin_title, 22, gap=0.3)
        w.title(TITLE, 18, gap=1.2)
        for line in (f"评估基准日：{run.assessment_date.isoformat()}", f"基期：{run.baseline[1]} 年",
                     f"评估期：{run.assessment[1]} 年", f"流域代码：{run.basin_name}"):
            w.title(line, 12, gap=0.05)
        w.y += 0.6
        w.heading("目录", H3_PT)
        for s in sections:
            w.paragraph(f"{s.number}、{s.title}", BODY_PT, indent=0.3)
        n_fig = n_tab = 0
        for sec in sections:
            w.new_page()
            w.heading(f"{sec.number}、{sec.title}", H2_PT)
            for block in sec.blocks:
                kind = block[0]
                if kind == "p":
                    w.paragraph(block[1])
                elif kind == "h":
                    w.heading(block[1], H3_PT)
                elif kind == "ul":
                    for item in block[1]:
                        w.paragraph(item, indent=0.15, bullet="•")
                elif kind == "fig":
                    n_fig += 1
                    w.figure(figures[block[1]], n_fig)
                elif kind == "table":
                    n_tab += 1
                    w.table(block[1], block[2], n_tab)
        w.flush()
    log.debug("PDF with %d pages", w.page)
