"""PDF layout (pipeline/report/pdf.py): line wrapping invariants, and the PDF read by poppler."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures_run import shared_outputs
from pipeline.report.content import TITLE
from pipeline.report.fonts import pdf_font
from pipeline.report.pdf import _NO_LINE_END, _NO_LINE_START, _Measure

ALPHABET = "生态信用评估流域工程水质净化（）《》，。；：、abcdefXYZ0123456789 _-.%"


@pytest.fixture(scope="module")
def measure():
    return _Measure()


def test_measure_matches_the_font_advances(measure):
    # independent check: the advances in the font file's hmtx table, read with fontTools
    from fontTools.ttLib import TTFont

    path, index = pdf_font()
    with TTFont(str(path), fontNumber=index, lazy=True) as font:
        cmap, hmtx, upm = font.getBestCmap(), font["hmtx"], font["head"].unitsPerEm
        for s in ("流域生态保护修复工程", "credit_total 12.5", "水质净化（WQ）", "—…"):
            ref = sum(hmtx[cmap[ord(ch)]][0] for ch in s) / upm * 10 / 72
            assert measure.width(s, 10) == pytest.approx(ref, rel=2e-3), s


@settings(max_examples=80, deadline=None)
@given(text=st.text(alphabet=ALPHABET, min_size=1, max_size=200), width=st.floats(0.6, 4.0))
def test_wrap_keeps_text_and_width(measure, text, width):
    lines = measure.wrap(text, 10, width)
    # nothing lost: only a space at a latin word break may be dropped
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")
    for i, line in enumerate(lines):
        assert measure.width(line, 10) <= width * 1.04 + 1e-9, line
        if i > 0 and line:
            # a closing mark starts a line only when the previous line had no room even with the allowance
            if line[0] in _NO_LINE_START:
                prev = lines[i - 1]
                assert measure.width(prev + line[0], 10) > width * 1.04
        if i < len(lines) - 1 and len(line) > 1:
            assert line[-1] not in _NO_LINE_END, line


def test_clip_adds_ellipsis_only_when_needed(measure):
    assert measure.clip("credit_HY", 6.5, measure.width("credit_HY", 6.5)) == "credit_HY"
    clipped = measure.clip("sha256_0123456789abcdef", 6.5, 0.4)
    assert clipped.endswith("…") and measure.width(clipped, 6.5) <= 0.4


@pytest.mark.client
def test_poppler_reads_the_pdf():
    """pdftotext/pdfinfo (poppler, an independent PDF reader) find the text, in order, and every page."""
    if not (shutil.which("pdftotext") and shutil.which("pdfinfo")):
        pytest.skip("poppler-utils not installed (apt-get install poppler-utils)")
    run, _, _, pdf = shared_outputs()
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True,
                          timeout=120).stdout
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True, timeout=60).stdout
    pages = int(re.search(r"Pages:\s+(\d+)", info).group(1))
    assert pages >= 9
    assert "A4" in info
    assert TITLE in text and run.basin_title in text
    heads = ["一、前言", "二、流域生态保护修复工程概况", "三、评估依据", "四、评估内容", "五、数据来源和计算方法",
             "六、生态信用评估", "七、评估结论", "八、附件"]
    # body headings (after the table of contents on page 1) appear in order, each on a new page
    body = text.split("\f", 1)[1]
    pos = [body.find(h) for h in heads]
    assert all(p >= 0 for p in pos) and pos == sorted(pos)
    page_of = [body[:p].count("\f") for p in pos]
    assert len(set(page_of)) == 8
    for t in ("附表1", "附表3", "附表4 信用与借记计算（credits）", "附表5", "流域信用台账"):
        assert t in text, t
    # the footer numbers every page
    assert f"— {pages} —" in text


_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("b"): b"\b", ord("f"): b"\f"}


def _operations(content: bytes):
    """(operands, operator) of a PDF content stream: numbers, names and literal strings
    (PDF 32000 7.3.4.2, with escapes, octal codes and balanced parentheses)."""
    i, n, stack = 0, len(content), []
    while i < n:
        c = content[i]
        if c in b" \t\r\n":
            i += 1
        elif c == ord("("):
            out, depth, i = bytearray(), 1, i + 1
            while True:
                c = content[i]
                if c == ord("\\"):
                    nxt = content[i + 1]
                    if nxt in _ESCAPES:
                        out += _ESCAPES[nxt]
                        i += 2
                    elif ord("0") <= nxt <= ord("7"):
                        m = re.match(rb"[0-7]{1,3}", content[i + 1:i + 4])
                        out.append(int(m.group(0), 8) & 0xFF)
                        i += 1 + len(m.group(0))
                    elif nxt in b"\r\n":
                        i += 2
                    else:
                        out.append(nxt)
                        i += 2
                    continue
                depth += (c == ord("(")) - (c == ord(")"))
                if depth == 0:
                    break
                out.append(c)
                i += 1
            stack.append(bytes(out))
            i += 1
        else:
            m = re.match(rb"[^\s()/\[\]<>]+|/[^\s()/\[\]<>]+|[\[\]<>]", content[i:])
            tok = m.group(0)
            i += len(tok)
            if tok.startswith(b"/"):
                stack.append(tok.decode())
            elif re.fullmatch(rb"[-+]?[\d.]+", tok):
                stack.append(float(tok))
            else:
                assert tok not in (b"[", b"]", b"<", b">", b"TJ"), f"unexpected {tok!r} in the content stream"
                yield stack, tok
                stack = []


def _strings_drawn(data: bytes) -> list[tuple[int, float, float, str, float]]:
    """(page, x, y from the top, text, size) of every string the PDF `data` shows, in inches.

    pypdf (an independent reader) decompresses the pages, fonts and /ToUnicode maps; the
    content streams are tokenised here and the 2-byte codes turned into text with those
    maps (pypdf's text extraction takes the codes of a font with an embedded /Encoding
    CMap for single bytes).
    """
    import io

    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    out = []
    for k, page in enumerate(reader.pages):
        h = float(page.mediabox.height)
        to_text = {}
        for name, ref in page["/Resources"]["/Font"].items():
            cmap = ref.get_object()["/ToUnicode"].get_object().get_data().decode("latin-1")
            assert "beginbfrange" not in cmap
            pairs = []
            for block in re.findall(r"beginbfchar(.*?)endbfchar", cmap, re.S):
                pairs += re.findall(r"<([0-9A-Fa-f]{4})>\s*<([0-9A-Fa-f]+)>", block)
            to_text[name] = {int(c, 16): bytes.fromhex(u).decode("utf-16-be") for c, u in pairs}
        font = size = x = y = None
        for operands, op in _operations(page.get_contents().get_data()):
            if op == b"Tf":
                font, size = operands
            elif op == b"Td":
                x, y = operands
            elif op == b"Tj":
                raw = operands[0]
                text = "".join(to_text[font][int.from_bytes(raw[i:i + 2], "big")] for i in range(0, len(raw), 2))
                out.append((k, round(x / 72, 4), round((h - y) / 72, 4), text, size))
    return out


def _table_pdf(df) -> tuple[bytes, "object"]:
    """PDF bytes of `df` laid out as table 1 after a paragraph, and the writer."""
    from pipeline.report import pdf as pdfmod

    with pdfmod._document() as doc:
        w = pdfmod._Writer(doc, "footer")
        w.new_page()
        w.paragraph("前言 text before the table")
        w.table("site table", df, 1)
        return bytes(doc.output(output_producer_class=pdfmod._Producer)), w


def test_table_cells_land_where_the_layout_puts_them():
    """Every cell is written once, clipped to its column, at the column's left edge plus the pad,
    on its row's baseline (the top of the row plus the font's ascent), as pypdf reads it back:
    CJK, latin, signs that are mathtext to matplotlib ("$"), line breaks and empty cells."""
    import numpy as np
    import pandas as pd

    from pipeline.report import pdf as pdfmod

    rng = np.random.default_rng(3)
    n = 150
    names = ["生态修复工程", "Åland wetland |(x)", "", "—", "price $5", "$x^2$", "湿地（WQ）", "two\nlines"]
    df = pd.DataFrame({
        "site_id": [f"S-{i:04d}" for i in range(n)],
        "名称": [names[i % 8] for i in range(n)],
        **{f"value_{j}": rng.normal(scale=10 ** (j % 5), size=n) for j in range(12)},
        "stage": [["planned", "竣工2-5年", None][i % 3] for i in range(n)],
        "sha256": ["0123456789abcdef" * 4] * n,
    })
    data, w = _table_pdf(df)
    assert w.page > 2                                   # split by rows and by columns
    drawn = _strings_drawn(data)
    cells = [d for d in drawn if d[4] == pdfmod.TABLE_PT]
    # every value of every row is there (the first column once per column chunk and page header)
    texts = [d[3] for d in cells]
    for i in range(n):
        assert f"S-{i:04d}" in texts
    assert "two lines" in texts and "price $5" in texts and "$x^2$" in texts
    assert texts.count("—") >= n // 8 + n // 3          # missing values and the dash name
    # clipped values end in an ellipsis
    assert any(t.endswith("…") for t in texts) and "0123456789abcdef" * 4 not in texts
    rh = pdfmod.TABLE_PT * 1.75 / 72
    asc = w.m.ascent / 72
    for page in {d[0] for d in cells}:
        rows: dict[float, list] = {}
        for _, x, y, t, _ in (d for d in cells if d[0] == page):
            rows.setdefault(y, []).append((x, t))
        ys = sorted(rows)
        # one baseline per row, a row height apart (or, where the next column chunk starts on
        # the same page, also the gap after a table and the caption's line)
        for gap in np.diff(ys):
            assert gap == pytest.approx(rh, abs=2e-3) or gap == pytest.approx(rh + 0.2 + 0.22, abs=2e-3), gap
        for y in ys:
            row = sorted(rows[y])
            assert row[0][0] == pytest.approx(pdfmod.MARGIN + 0.06, abs=2e-3)    # first column at margin + pad
            for (x0, t0), (x1, _) in zip(row, row[1:]):                         # no cell runs into the next
                assert x0 + w.m.width(t0, pdfmod.TABLE_PT) <= x1 - 0.1, (t0, x0, x1)
            last_x, last_t = row[-1]
            assert last_x + w.m.width(last_t, pdfmod.TABLE_PT) <= pdfmod.PAGE_W - pdfmod.MARGIN
        # the header row sits 0.22 in below the caption's top, both placed by their top
        caps = [d for d in drawn if d[0] == page and d[3].startswith("表 1")]
        assert caps
        for cap in caps:
            below = min(y for y in ys if y > cap[2])
            assert below - cap[2] == pytest.approx(0.22 + asc * (pdfmod.TABLE_PT - 8.5), abs=2e-3)


def test_figures_are_embedded_with_their_pixels(tmp_path):
    """A figure is embedded at the resolution it was drawn at, pixel for pixel, scaled to the
    text width, with its caption below it."""
    import io

    import numpy as np
    from PIL import Image
    from pypdf import PdfReader

    from pipeline.report import pdf as pdfmod
    from pipeline.report.figures import FigureFile

    rng = np.random.default_rng(5)
    rgba = np.dstack([rng.integers(0, 256, (300, 480, 3), dtype=np.uint8), np.full((300, 480), 255, np.uint8)])
    png = tmp_path / "f.png"
    Image.fromarray(rgba, "RGBA").save(png)
    with pdfmod._document() as doc:
        w = pdfmod._Writer(doc, "footer")
        w.new_page()
        w.figure(FigureFile("f", png, "一幅图 a map"), 7)
        data = bytes(doc.output(output_producer_class=pdfmod._Producer))
    (img,) = PdfReader(io.BytesIO(data)).pages[0].images
    assert np.array_equal(np.asarray(img.image.convert("RGB")), rgba[..., :3])
    drawn = _strings_drawn(data)
    cap = [d for d in drawn if d[3] == "图 7　一幅图 a map"]
    assert len(cap) == 1
    h = pdfmod.TEXT_W * 300 / 480
    assert cap[0][2] == pytest.approx(pdfmod.MARGIN + h + 0.05 + w.m.ascent * 8.5 / 72, abs=2e-3)
    assert cap[0][1] == pytest.approx((pdfmod.PAGE_W - w.m.width(cap[0][3], 8.5)) / 2, abs=2e-3)


def test_sections_and_headings_are_bookmarks():
    """The PDF outline lists the eight sections in order, each with its headings beneath it,
    and every bookmark opens the page where its heading is drawn, at the heading."""
    import io

    from pypdf import PdfReader

    from pipeline.report import pdf as pdfmod

    _, _, _, pdf = shared_outputs()
    data = pdf.read_bytes()
    reader = PdfReader(io.BytesIO(data))
    drawn = _strings_drawn(data)
    marks, level = [], 0

    def walk(items, level):
        for item in items:
            if isinstance(item, list):
                walk(item, level + 1)
            else:
                marks.append((level, item.title, reader.get_destination_page_number(item), float(item.top)))

    walk(reader.outline, 0)
    tops = [m for m in marks if m[0] == 0]
    assert [t[1] for t in tops] == ["一、前言", "二、流域生态保护修复工程概况", "三、评估依据", "四、评估内容",
                                   "五、数据来源和计算方法", "六、生态信用评估", "七、评估结论", "八、附件：各项指标得分支撑材料"]
    assert len(marks) > len(tops) and {m[0] for m in marks} == {0, 1}
    assert [m[2] for m in marks] == sorted(m[2] for m in marks)
    h = float(reader.pages[0].mediabox.height)
    for level, title, page, top in marks:
        pt = pdfmod.H2_PT if level == 0 else pdfmod.H3_PT
        (hit,) = [d for d in drawn if d[3] == title and d[0] == page and d[4] == pt]
        # the bookmark's top is the heading's top: its baseline less the ascent
        assert (h - top) / 72 == pytest.approx(hit[2] - pdfmod._Measure().ascent * pt / 72, abs=2e-3)


def test_contents_give_each_section_its_first_page():
    """The 目录 on the title page lists the eight sections in order, each on one line with
    the number of the page its heading is drawn on (the page's footer number)."""
    from pipeline.report import pdf as pdfmod

    _, _, _, pdf = shared_outputs()
    drawn = _strings_drawn(pdf.read_bytes())
    heads = [d for d in drawn if d[4] == pdfmod.H2_PT]
    assert len(heads) == 8
    first = [d for d in drawn if d[0] == 0 and d[4] == pdfmod.BODY_PT]
    for page, _, _, name, _ in heads:
        (line,) = [d for d in first if d[3] == name]
        on_line = sorted((d for d in first if d[2] == line[2]), key=lambda d: d[1])
        assert [d[3] for d in on_line][0] == name and set(on_line[1][3]) == {"·"}
        assert on_line[-1][3] == str(page + 1)
        footer = [d for d in drawn if d[0] == page and d[3].endswith(f"— {page + 1} —")]
        assert len(footer) == 1
    names = {h[3] for h in heads}
    assert [d[3] for d in sorted((d for d in first if d[3] in names), key=lambda d: d[2])] == [h[3] for h in heads]


def _png_rows(path):
    """The concatenated IDAT chunks of a PNG, read with PIL's chunk reader (not png_image's)."""
    from PIL import PngImagePlugin

    rows = []
    with open(path, "rb") as f:
        f.read(8)
        stream = PngImagePlugin.ChunkStream(f)
        while True:
            kind, pos, n = stream.read()
            body = f.read(n)
            stream.crc(kind, body)
            if kind == b"IDAT":
                rows.append(body)
            if kind == b"IEND":
                return b"".join(rows)


@pytest.mark.parametrize("mode, passed_through", [("RGB", True), ("L", True), ("RGBA", False), ("P", False),
                                                  ("I;16", False)])
def test_figures_embedded_as_their_png_rows_when_pdf_can_read_them(tmp_path, mode, passed_through):
    """8-bit RGB and grey PNGs are embedded as their compressed rows (the PDF's image stream is
    the PNG's IDAT data) and read back by pypdf pixel for pixel; other PNGs go through fpdf2."""
    import io

    import numpy as np
    from PIL import Image
    from pypdf import PdfReader

    from pipeline.report import pdf as pdfmod
    from pipeline.report.figures import FigureFile

    rng = np.random.default_rng(11)
    # smooth and noisy parts, so that the encoder picks different row filters
    smooth = np.add.outer(np.arange(120), np.arange(200)).astype(np.uint8)
    rgb = np.dstack([smooth, rng.integers(0, 256, (120, 200), dtype=np.uint8), smooth[::-1]])
    im = {"RGB": lambda: Image.fromarray(rgb), "L": lambda: Image.fromarray(smooth),
          "RGBA": lambda: Image.fromarray(np.dstack([rgb, np.full(smooth.shape, 255, np.uint8)])),
          "P": lambda: Image.fromarray(rgb).quantize(16),
          "I;16": lambda: Image.fromarray(smooth.astype(np.uint16) * 200)}[mode]()
    png = tmp_path / "f.png"
    im.save(png)
    assert (pdfmod.png_image(png) is not None) == passed_through
    with pdfmod._document() as doc:
        w = pdfmod._Writer(doc, "footer")
        w.new_page()
        w.figure(FigureFile("f", png, "图"), 1)
        w.figure(FigureFile("f", png, "again"), 2)          # a second use: one image object
        data = bytes(doc.output(output_producer_class=pdfmod._Producer))
    page = PdfReader(io.BytesIO(data)).pages[0]
    xobjects = page["/Resources"]["/XObject"]
    assert len(xobjects) == 1
    if passed_through:
        (obj,) = [x.get_object() for x in xobjects.values()]
        assert obj._data == _png_rows(png)
        assert obj["/DecodeParms"]["/Predictor"] == 15
    got = page.images[0].image
    if mode in ("RGB", "RGBA", "P"):
        assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(im.convert("RGB")))
    elif mode == "L":
        assert np.array_equal(np.asarray(got.convert("L")), smooth)


def test_damaged_png_is_left_to_fpdf2(tmp_path):
    """A chunk whose CRC does not match makes png_image decline the file."""
    import numpy as np
    from PIL import Image

    from pipeline.report import pdf as pdfmod

    png = tmp_path / "f.png"
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(png)
    good = png.read_bytes()
    assert pdfmod.png_image(png) is not None
    i = good.index(b"IDAT") + 6
    png.write_bytes(good[:i] + bytes([good[i] ^ 1]) + good[i + 1:])
    assert pdfmod.png_image(png) is None
    png.write_bytes(good[:40])                               # truncated
    assert pdfmod.png_image(png) is None


def _cjk_sample(n: int, seed: int) -> str:
    """`n` characters drawn (seeded) from every CJK block of the report font's cmap, the
    supplementary planes included, in a random order."""
    import random

    from fontTools.ttLib import TTFont

    path, index = pdf_font()
    with TTFont(str(path), fontNumber=index, lazy=True) as font:
        cmap = font.getBestCmap()
    blocks = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0xF900, 0xFAFF), (0x20000, 0x3FFFF)]
    cjk = sorted(c for c in cmap if any(lo <= c <= hi for lo, hi in blocks))
    rng = random.Random(seed)
    picked = (rng.sample([c for c in cjk if c > 0xFFFF], n // 10)
              + rng.sample([c for c in cjk if c <= 0xFFFF], n - n // 10))
    rng.shuffle(picked)
    return "".join(map(chr, picked))


def _lines_pdf(lines: list[str], producer=None) -> bytes:
    """PDF bytes of one page with `lines` at body size, one below the other (no wrapping)."""
    from pipeline.report import pdf as pdfmod

    with pdfmod._document() as doc:
        w = pdfmod._Writer(doc, "页脚 footer")
        w.new_page()
        for line in lines:
            w.text(pdfmod.MARGIN, line, pdfmod.BODY_PT)
            w.y += 0.18
        return bytes(doc.output(output_producer_class=producer or pdfmod._Producer))


def _embedded_cff(data: bytes):
    """The CFF font program the PDF `data` embeds (its one font), read with fontTools."""
    import io

    from fontTools.cffLib import CFFFontSet
    from fontTools.ttLib import TTFont
    from pypdf import PdfReader

    (ref,) = PdfReader(io.BytesIO(data)).pages[0]["/Resources"]["/Font"].values()
    desc = ref.get_object()["/DescendantFonts"][0].get_object()["/FontDescriptor"].get_object()
    stream = desc["/FontFile3"].get_object()
    assert stream["/Subtype"] == "/CIDFontType0C"
    cff = CFFFontSet()
    cff.decompile(io.BytesIO(stream.get_data()), TTFont())
    return cff[cff.fontNames[0]]


def _requires_cid_cff_font():
    from pipeline.report import pdf as pdfmod

    with pdfmod._document() as doc:
        if not pdfmod._embeds_cff_only(doc.fonts[pdfmod.FONT]):
            pytest.skip("the report font is not a CID-keyed CFF font (install the pinned 'mplfonts')")


def test_any_cjk_text_reads_back_with_the_fonts_own_outlines():
    """Text drawn from a random sample of the font's CJK characters (site names are user data)
    reads back as written (pypdf, through the /ToUnicode map), and every glyph the embedded
    subset holds draws the outline of the same glyph (CID) of the font file."""
    from fontTools.pens.recordingPen import RecordingPen
    from fontTools.ttLib import TTFont

    from pipeline.report import pdf as pdfmod

    _requires_cid_cff_font()
    chars = _cjk_sample(400, seed=17)
    lines = [chars[i:i + 20] for i in range(0, len(chars), 20)] + ["Latin 0123 %.,;（括号）—…"]
    data = _lines_pdf(lines)
    drawn = _strings_drawn(data)
    assert [d[3] for d in drawn if d[4] == pdfmod.BODY_PT] == lines
    sub = _embedded_cff(data)
    path, index = pdf_font()
    with TTFont(str(path), fontNumber=index, lazy=True) as font:
        cmap = font.getBestCmap()
        full = font["CFF "].cff.topDictIndex[0].CharStrings
        used = {cmap[ord(ch)] for ch in "".join(d[3] for d in drawn)}      # the footer's too
        kept = set(sub.CharStrings.keys())
        assert used <= kept and len(kept - used) <= 4          # .notdef and fontTools' recommended glyphs
        for name in sorted(kept):
            mine, theirs = RecordingPen(), RecordingPen()
            sub.CharStrings[name].draw(mine)
            full[name].draw(theirs)
            assert mine.value == theirs.value, name


def _bytecodes(subrs) -> list[bytes]:
    return [cs.bytecode for cs in subrs]


def test_font_subset_is_fpdf2s_but_for_the_bounding_box():
    """_Producer embeds the subset fpdf2's own writer embeds: the same glyphs and charstrings,
    subroutines and dictionaries, except that the CFF FontBBox is the whole font's (which holds
    every kept glyph) rather than one recomputed from the kept glyphs; the text reads the same."""
    from fontTools.ttLib import TTFont
    from fpdf.output import OutputProducer

    from pipeline.report import pdf as pdfmod

    _requires_cid_cff_font()

    class Fpdf2Fonts(pdfmod._Producer):
        _add_fonts = OutputProducer._add_fonts

    lines = ["永定河湿地修复A区 wetland P1-A", _cjk_sample(60, seed=3), "信用 credit_total 12.5 （WQ）"]
    ours, theirs = _lines_pdf(lines), _lines_pdf(lines, Fpdf2Fonts)
    assert _strings_drawn(ours) == _strings_drawn(theirs)
    a, b = _embedded_cff(ours), _embedded_cff(theirs)
    assert a.charset == b.charset
    for name in a.charset:
        assert a.CharStrings[name].bytecode == b.CharStrings[name].bytecode, name
    assert _bytecodes(a.GlobalSubrs) == _bytecodes(b.GlobalSubrs)
    for fa, fb in zip(a.FDArray, b.FDArray, strict=True):
        assert _bytecodes(getattr(fa.Private, "Subrs", [])) == _bytecodes(getattr(fb.Private, "Subrs", []))
        assert {k: v for k, v in fa.Private.rawDict.items() if k != "Subrs"} == \
            {k: v for k, v in fb.Private.rawDict.items() if k != "Subrs"}
    offsets = ("charset", "CharStrings", "FDArray", "FDSelect")
    assert {k: v for k, v in a.rawDict.items() if k not in (*offsets, "FontBBox")} == \
        {k: v for k, v in b.rawDict.items() if k not in (*offsets, "FontBBox")}
    path, index = pdf_font()
    with TTFont(str(path), fontNumber=index, lazy=True) as font:
        assert list(a.FontBBox) == list(font["CFF "].cff.topDictIndex[0].FontBBox)
    x0, y0, x1, y1 = a.FontBBox
    bx0, by0, bx1, by1 = b.FontBBox              # the kept glyphs' bounds, as fpdf2 recomputed them
    assert x0 <= bx0 and y0 <= by0 and x1 >= bx1 and y1 >= by1


def test_same_text_same_bytes():
    """Two documents with the same text are the same bytes (no date, no font-dependent drift)."""
    _requires_cid_cff_font()
    lines = ["流域生态信用评估 2024-06-01", _cjk_sample(80, seed=5)]
    assert _lines_pdf(lines) == _lines_pdf(lines)
