"""PDF rendering of the report with fpdf2 (A4, the font embedded as a subset, no system tools).

A small flow layout: every section starts on a new page; paragraphs are wrapped
by the font's glyph advances; tables are split by rows across pages (header
repeated) and by columns when too wide (first column repeated); figures are
embedded from their PNG files at the resolution they were drawn at. The eight
sections and their headings are bookmarks (the PDF outline a viewer shows beside
the pages); the 目录 on the title page is written last, from that outline, with
the page each section starts on.

Positions are in inches from the top left of the page. A line of text is placed
by the top of its box: its baseline sits the font's ascent (the OS/2
typographic ascender, the top of the ideographic em box) below that top, so the
cells of a table row share one baseline whatever their script.

fpdf2 writes each string once with the glyph ids of the font's cmap (no
shaping: the report's Chinese, latin and digits need none) and subsets the font
when the file is written. A figure drawn by pipeline.report.figures (8-bit RGB,
not interlaced) is embedded as its PNG's compressed rows, which PDF's FlateDecode
with the PNG predictors reads as they are (:func:`png_image`); any other PNG is
decoded and compressed again by fpdf2. A table of
20 000 cells (500 rows) takes 0.7 s with the font loaded and subset, against 2.9 s
with the matplotlib renderer this replaced.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from fpdf import FPDF, image_parsing
from fpdf.fonts import TTFFont
from fpdf.image_datastructures import RasterImageInfo
from fpdf.output import OutputProducer
from PIL import Image

from pipeline.report.content import TITLE, Section
from pipeline.report.figures import FigureFile
from pipeline.report.fonts import pdf_font
from pipeline.report.model import RunOutputs

log = logging.getLogger(__name__)

PAGE_W, PAGE_H = 8.27, 11.69  # A4, inches
MARGIN = 0.75
TEXT_W = PAGE_W - 2 * MARGIN
BODY_PT, H2_PT, H3_PT, TABLE_PT = 10.0, 15.0, 11.5, 6.5
FONT = "report"


_NO_LINE_START = set("，。；：、）》」』”’！？%,.;:)]")
_NO_LINE_END = set("（《「『“‘([")


class _Producer(OutputProducer):
    """fpdf2's file writer without a /CreationDate, so that a run gives the same bytes, and
    without the font work whose result it does not embed (see _add_fonts)."""

    def _add_info(self):
        info = super()._add_info()
        info.creation_date = None
        return info

    def _add_fonts(self, *args, **kwargs):
        """fpdf2's font objects, with a CID-keyed CFF font (Noto Sans CJK) subset in under half the time.

        fpdf2 2.8.9 subsets such a font with fontTools, writes the whole subset OpenType file
        (``TTFont.save``) and then embeds only its CFF table, compiled once more
        (``/FontFile3 /CIDFontType0C``): the file it wrote is thrown away. Each compile also
        recalculated the bounds of every kept glyph by running its charstring (the CFF
        ``FontBBox``; the file's ``hhea``/``vhea`` extents). Here the file is not written and
        the bounds are not recalculated (fontTools' own subsetter default,
        ``recalc_bounds=False``): the CFF keeps the whole font's ``FontBBox``, which holds
        every glyph, as the PDF's /FontDescriptor does. The glyphs, their outlines, codes and
        /ToUnicode map are fpdf2's own. On the demo report (481 glyphs) this step took
        0.75-0.85 s and takes 0.33-0.39 s, nearly all of it fontTools' subsetting.
        """
        for font in self.fpdf.fonts.values():
            if _embeds_cff_only(font):
                font.ttfont.recalcBBoxes = False
                font.ttfont.save = _not_embedded
        return super()._add_fonts(*args, **kwargs)


def _embeds_cff_only(font) -> bool:
    """Whether fpdf2 embeds only the CFF table of `font` (its test in OutputProducer._add_fonts)."""
    return (isinstance(font, TTFFont) and not font.color_font and font.is_cff and font.is_cid_keyed
            and "CFF " in font.ttfont)


def _not_embedded(file, *args, **kwargs) -> None:
    """TTFont.save for a font whose OpenType file fpdf2 does not embed: writes nothing."""


@contextlib.contextmanager
def _document() -> Iterator[FPDF]:
    """An empty A4 document in inches with the report font; the font file is closed at exit."""
    pdf = FPDF(unit="in", format="A4")
    pdf.creation_date = None     # not in the file; nor in its /ID (see _Producer)
    pdf.set_auto_page_break(False)
    pdf.set_margins(0, 0)
    path, index = pdf_font()
    pdf.add_font(FONT, fname=path, collection_font_number=index)
    pdf.set_font(FONT, size=BODY_PT)
    try:
        yield pdf
    finally:
        for font in pdf.fonts.values():
            font.ttfont.close()     # fpdf2 reads it lazily and leaves it open


class _Measure:
    """Text widths in inches in the report font: the advances fpdf2 places the glyphs by."""

    def __init__(self, pdf: FPDF | None = None) -> None:
        if pdf is None:             # a document of its own, only to read the font
            with _document() as own:
                self._read(own)
        else:
            self._read(pdf)

    def _read(self, pdf: FPDF) -> None:
        font = pdf.fonts[FONT]
        self._cw = font.cw                              # advance per code point, 1/1000 em
        self.ascent = font.ttfont["OS/2"].sTypoAscender / font.ttfont["head"].unitsPerEm   # em

    def width(self, text: str, pt: float) -> float:
        cw = self._cw
        return sum(cw[ord(ch)] for ch in text) * pt / 72_000

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


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


class _Writer:
    def __init__(self, pdf: FPDF, footer: str) -> None:
        self.pdf, self.footer = pdf, footer
        self.m = _Measure(pdf)
        self.y = 0.0  # inches from the top
        self.page = 0
        self._pt: float | None = None
        self._colour = "#000000"

    # page management ------------------------------------------------------------------
    def new_page(self) -> None:
        self.pdf.add_page()
        self.page_added()

    def page_added(self) -> None:
        """Number the page the document has just started (new_page, or fpdf2's own break)."""
        self.page += 1
        label = f"{self.footer}　— {self.page} —"
        pt = 7
        # bottom of the line box 0.35 in above the page edge (ascent + descent of the em box)
        top = PAGE_H - 0.35 - pt / 72
        self._put((PAGE_W - self.m.width(label, pt)) / 2, top, label, pt, "#666666")
        self.y = MARGIN

    def need(self, h: float) -> None:
        if self.page == 0 or self.y + h > PAGE_H - MARGIN:
            self.new_page()

    def _put(self, x: float, top: float, s: str, pt: float, colour: str = "#000000") -> None:
        if pt != self._pt:
            self.pdf.set_font_size(pt)
            self._pt = pt
        if colour != self._colour:
            self.pdf.set_text_color(*_rgb(colour))
            self._colour = colour
        self.pdf.text(x, top + self.m.ascent * pt / 72, s)

    def text(self, x: float, s: str, pt: float, ha: str = "left", color: str = "#000000") -> None:
        """One line of text with the top of its box at the current y, left-aligned at x (or centred on it)."""
        if ha == "center":
            x -= self.m.width(s, pt) / 2
        self._put(x, self.y, s, pt, color)

    def cell(self, x: float, s: str, pt: float) -> None:
        """A table cell: one line (line breaks in the value become spaces)."""
        if s:
            self._put(x, self.y, s, pt)

    def contents(self, outline, top: float) -> None:
        """The 目录 lines: each section, dot leaders and the page it starts on, from `top` down.

        fpdf2 calls this on the title page once every page is laid out (see
        insert_toc_placeholder), with the title page's text state restored.
        """
        self._pt = self._colour = None
        self.y = top
        right = MARGIN + TEXT_W
        dot = self.m.width("·", BODY_PT)
        for sec in (o for o in outline if o.level == 0):
            num = str(sec.page_number)
            x = MARGIN + 0.3
            self._put(x, self.y, sec.name, BODY_PT)
            first, last = x + self.m.width(sec.name, BODY_PT) + 0.1, right - self.m.width(num, BODY_PT) - 0.1
            n = max(0, int((last - first) / dot))
            self._put(last - n * dot, self.y, "·" * n, BODY_PT, "#999999")
            self._put(right - self.m.width(num, BODY_PT), self.y, num, BODY_PT)
            self.y += BODY_PT * (1.65 + 0.5) / 72

    # blocks ---------------------------------------------------------------------------
    def title(self, s: str, pt: float, gap: float = 0.15) -> None:
        for line in self.m.wrap(s, pt, TEXT_W):
            self.need(pt * 1.6 / 72)
            self.text(PAGE_W / 2, line, pt, ha="center")
            self.y += pt * 1.6 / 72
        self.y += gap

    def heading(self, s: str, pt: float, outline: int | None = None) -> None:
        """A heading; with `outline` (0: a section, 1: within one) also a bookmark to it."""
        self.need(pt * 3.2 / 72)
        self.y += pt * 0.6 / 72
        if outline is not None:
            self.pdf.set_y(self.y)      # the bookmark opens the page at the heading
            self.pdf.start_section(s, level=outline)
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
        """The PNG scaled to the text width (or to under half a page high), its pixels as drawn."""
        with Image.open(f.path) as im:   # the header only
            w_px, h_px = im.size
        w = TEXT_W
        h = w * h_px / w_px
        max_h = (PAGE_H - 2 * MARGIN) * 0.46  # two maps fit on a page
        if h > max_h:
            h, w = max_h, max_h * w_px / h_px
        self.need(h + 0.35)
        _preload_png(self.pdf, f.path)
        self.pdf.image(str(f.path), x=(PAGE_W - w) / 2, y=self.y, w=w, h=h)
        self.y += h + 0.05
        self.text(PAGE_W / 2, f"图 {number}　{f.caption}", 8.5, ha="center", color="#333333")
        self.y += 0.3

    def table(self, title: str, df: pd.DataFrame, number: int) -> None:
        pt = TABLE_PT
        cells = df.astype(object).where(df.notna(), "—").map(
            lambda v: f"{v:.4g}" if isinstance(v, float) else " ".join(str(v).splitlines()))
        headers = [" ".join(str(c).splitlines()) for c in df.columns]
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
        """A filled band of height h whose top is 0.02 in above the current line's top."""
        self.pdf.set_fill_color(*_rgb(colour))
        self.pdf.rect(x, self.y - 0.02, w, h, style="F")

    def _header(self, headers, widths, cols, pt, rh, pad) -> None:
        self._rect(MARGIN, sum(widths[j] for j in cols), rh, "#dbe9f4")
        x = MARGIN
        for j in cols:
            self.cell(x + pad, self.m.clip(headers[j], pt, widths[j] - 2 * pad), pt)
            x += widths[j]
        self.y += rh


def render(run: RunOutputs, sections: list[Section], figures: dict[str, FigureFile], path: Path) -> None:
    """Write the PDF to `path` (callers pass a temporary path; see write_report)."""
    with _document() as pdf, _image_compression(3):
        pdf.set_title(f"{run.basin_title} {TITLE}")
        pdf.set_creator("pipeline.report")
        pdf.set_producer("fpdf2")
        pages = _flow(_Writer(pdf, f"{run.basin_title}　{TITLE}"), run, sections, figures)
        pdf.output(str(path), output_producer_class=_Producer)
    log.debug("PDF with %d pages", pages)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# chunks that change how the pixels read: fpdf2 handles these PNGs itself
_PNG_PIXEL_CHUNKS = {b"tRNS", b"iCCP", b"PLTE"}


def png_image(path: Path) -> RasterImageInfo | None:
    """fpdf2's description of the PNG at `path` with its compressed rows as the image's
    data, or None when the PNG is not 8-bit grey or RGB without interlacing, transparency,
    palette or ICC profile, or a chunk's CRC is wrong (fpdf2 then reads it as any image).

    PDF's FlateDecode with ``/Predictor 15`` (PNG predictors, chosen per row) reads the
    concatenated IDAT chunks of such a PNG as they are (PDF 1.7, 7.4.4.4), so the figure
    is neither decoded nor compressed again: 24 figures of the demo report took 0.6 s in
    fpdf2's decoding, alpha split and zlib, and now take the time to read the files.
    """
    data = Path(path).read_bytes()
    if not data.startswith(_PNG_SIGNATURE):
        return None
    pos, header, rows = len(_PNG_SIGNATURE), None, []
    while pos + 12 <= len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if len(body) != n or pos + 12 + n > len(data) or \
                zlib.crc32(body, zlib.crc32(kind)) != struct.unpack_from(">I", data, pos + 8 + n)[0]:
            return None
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            rows.append(body)
        elif kind in _PNG_PIXEL_CHUNKS:
            return None
        elif kind == b"IEND":
            break
        pos += 12 + n
    if header is None or not rows:
        return None
    w, h, depth, colour, compression, filtering, interlace = header
    channels = {0: 1, 2: 3}.get(colour)
    if depth != 8 or channels is None or (compression, filtering, interlace) != (0, 0, 0):
        return None
    return RasterImageInfo(data=b"".join(rows), w=w, h=h, cs="DeviceGray" if channels == 1 else "DeviceRGB",
                           iccp=None, bpc=8, dpn=channels, f="FlateDecode", inverted=False,
                           dp=f"/Predictor 15 /Colors {channels} /Columns {w}")


def _preload_png(pdf: FPDF, path: Path) -> None:
    """Put the PNG at `path` in `pdf`'s image cache (see png_image), where ``pdf.image(str(path))``
    finds it, numbered as fpdf2 numbers the images it loads itself: in order of first use."""
    cache = pdf.image_cache
    if str(path) in cache.images:
        return
    info = png_image(path)
    if info is not None:
        info.update(i=len(cache.images) + 1, usages=0, iccp_i=None)
        cache.images[str(path)] = info


@contextlib.contextmanager
def _image_compression(level: int) -> Iterator[None]:
    """zlib level of the figures fpdf2 embeds (its default, 6, takes 2.4x as long for files 7 % smaller)."""
    before = image_parsing.SETTINGS.compression_level
    image_parsing.SETTINGS.compression_level = level
    try:
        yield
    finally:
        image_parsing.SETTINGS.compression_level = before


def _flow(w: _Writer, run: RunOutputs, sections: list[Section], figures: dict[str, FigureFile]) -> int:
    """Lay the title page and the sections out with `w`; the number of pages."""
    w.new_page()
    w.y = 3.0
    w.title(run.basin_title, 22, gap=0.3)
    w.title(TITLE, 18, gap=1.2)
    for line in (f"评估基准日：{run.assessment_date.isoformat()}", f"基期：{run.baseline[1]} 年",
                 f"评估期：{run.assessment[1]} 年", f"流域代码：{run.basin_name}"):
        w.title(line, 12, gap=0.05)
    w.y += 0.6
    w.heading("目录", H3_PT)
    top = w.y
    w.pdf.set_y(top)
    w.pdf.insert_toc_placeholder(lambda pdf, outline: w.contents(outline, top), pages=1)
    n_fig = n_tab = 0
    for i, sec in enumerate(sections):
        if i == 0:
            w.page_added()      # the placeholder ends the title page
        else:
            w.new_page()
        w.heading(f"{sec.number}、{sec.title}", H2_PT, outline=0)
        for block in sec.blocks:
            kind = block[0]
            if kind == "p":
                w.paragraph(block[1])
            elif kind == "h":
                w.heading(block[1], H3_PT, outline=1)
            elif kind == "ul":
                for item in block[1]:
                    w.paragraph(item, indent=0.15, bullet="•")
            elif kind == "fig":
                n_fig += 1
                w.figure(figures[block[1]], n_fig)
            elif kind == "table":
                n_tab += 1
                w.table(block[1], block[2], n_tab)
    return w.page
