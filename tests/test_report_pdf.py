"""PDF layout (pipeline/report/pdf.py): line wrapping invariants, and the PDF read by poppler."""

from __future__ import annotations

import re
import shutil
import subprocess

import matplotlib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures_run import shared_outputs
from pipeline.report.content import TITLE
from pipeline.report.fonts import rc_params
from pipeline.report.pdf import _NO_LINE_END, _NO_LINE_START, _Measure

ALPHABET = "生态信用评估流域工程水质净化（）《》，。；：、abcdefXYZ0123456789 _-.%"


@pytest.fixture(scope="module")
def measure():
    with matplotlib.rc_context(rc_params()):
        yield _Measure()


def test_measure_matches_rendered_width(measure):
    # independent check: matplotlib's own layout of the same string at the same size
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    with matplotlib.rc_context(rc_params()):
        fig = Figure(figsize=(8, 2), dpi=72)
        renderer = FigureCanvasAgg(fig).get_renderer()
        for s in ("流域生态保护修复工程", "credit_total 12.5", "水质净化（WQ）"):
            t = fig.text(0.05, 0.5, s, fontsize=10)
            assert measure.width(s, 10) == pytest.approx(t.get_window_extent(renderer).width / 72, rel=0.03)


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


def _table_draw_calls(monkeypatch, per_cell_text: bool) -> tuple[list, int]:
    """(x, y, text, size) of every string the PDF backend draws for a table, and the page count.

    With `per_cell_text` every cell is drawn as its own matplotlib Text (the renderer
    before `_CellTexts`), the reference for where each cell's text must land.
    """
    import io

    import numpy as np
    import pandas as pd
    from matplotlib.backends.backend_pdf import PdfPages, RendererPdf

    from pipeline.report import pdf as pdfmod

    rng = np.random.default_rng(3)
    n = 150
    df = pd.DataFrame({
        "site_id": [f"S-{i:04d}" for i in range(n)],
        "名称": [["生态修复工程", "Åland wetland |(x)", "", "—", "price $5", "$x^2$", "湿地（WQ）", "two\nlines"][i % 8]
                 for i in range(n)],
        **{f"value_{j}": rng.normal(scale=10 ** (j % 5), size=n) for j in range(12)},
        "stage": [["planned", "竣工2-5年", None][i % 3] for i in range(n)],
        "sha256": ["0123456789abcdef" * 4] * n,
    })
    calls = []
    real = RendererPdf.draw_text

    def spy(self, gc, x, y, s, prop, angle, ismath=False, mtext=None):
        calls.append((float(x), float(y), s, prop.get_size_in_points(), angle, ismath, tuple(gc.get_rgb())))
        return real(self, gc, x, y, s, prop, angle, ismath=ismath, mtext=mtext)

    monkeypatch.setattr(RendererPdf, "draw_text", spy)
    if per_cell_text:
        monkeypatch.setattr(pdfmod._Writer, "cell", lambda self, x, s, pt: self.text(x, s, pt))
    with matplotlib.rc_context(rc_params()), PdfPages(io.BytesIO()) as out:
        w = pdfmod._Writer(out, "footer")
        w.new_page()
        w.paragraph("前言 text before the table")
        w.table("site table", df, 1)
        w.flush()
    return sorted(calls), w.page


def test_cell_texts_draw_every_cell_where_a_text_would(monkeypatch):
    """Every cell string is drawn at the same baseline (bit-identical floats), size and colour as with
    one Text per cell, including glyphs above the font's ascent (Å, |), mathtext and empty cells."""
    new, new_pages = _table_draw_calls(monkeypatch, per_cell_text=False)
    monkeypatch.undo()
    old, old_pages = _table_draw_calls(monkeypatch, per_cell_text=True)
    assert new_pages == old_pages > 1
    assert len(new) == len(old) > 150 * 15
    assert new == old


def _table_pdf_bytes(shaped_once: bool, monkeypatch) -> tuple[bytes, int, int]:
    """PDF bytes of a multi-page table with repeated strings, the number of strings drawn
    and the number shaped (with `shaped_once` False every string is shaped as it is drawn)."""
    import contextlib
    import io

    import numpy as np
    import pandas as pd
    from matplotlib.backends.backend_pdf import PdfPages, RendererPdf

    from pipeline.report import pdf as pdfmod

    rng = np.random.default_rng(5)
    n = 240
    df = pd.DataFrame({"site_id": [f"S-{i % 40:03d}" for i in range(n)],
                       "名称": [["湿地修复（WQ）", "Åland |x", "", "High"][i % 4] for i in range(n)],
                       **{f"v{j}": np.round(rng.normal(size=n), 1) for j in range(8)}})
    drawn, shaped = [0], [0]
    real_draw, real_layout = RendererPdf.draw_text, pdfmod._text_helpers.layout

    def count_draw(self, *a, **k):
        drawn[0] += 1
        return real_draw(self, *a, **k)

    def count_layout(*a, **k):
        shaped[0] += 1
        return real_layout(*a, **k)

    monkeypatch.setattr(RendererPdf, "draw_text", count_draw)
    monkeypatch.setattr(pdfmod._text_helpers, "layout", count_layout)
    if not shaped_once:
        monkeypatch.setattr(pdfmod._ShapedRuns, "installed", lambda self, pt: contextlib.nullcontext())
    buf = io.BytesIO()
    with matplotlib.rc_context(rc_params()), PdfPages(buf, metadata={"CreationDate": None}) as out:
        w = pdfmod._Writer(out, "footer")
        w.new_page()
        w.table("site table", df, 1)
        w.flush()
    monkeypatch.undo()
    return buf.getvalue(), drawn[0], shaped[0]


def test_shaping_each_cell_string_once_gives_identical_pdf_bytes(monkeypatch):
    memo, drawn, shaped = _table_pdf_bytes(True, monkeypatch)
    plain, drawn_plain, shaped_plain = _table_pdf_bytes(False, monkeypatch)
    assert drawn == drawn_plain > 240 * 9
    assert shaped_plain == drawn_plain          # without the memo: every drawn string is shaped
    assert shaped < drawn / 3                   # with it: repeated strings are not shaped again
    assert memo == plain                        # ... and the PDF is byte for byte the same
    from matplotlib import _text_helpers

    assert _text_helpers.layout.__module__ == "matplotlib._text_helpers"   # restored after drawing


def _figure_page(png) -> bytes:
    """The PDF bytes of one page holding the figure `png`."""
    import io

    from matplotlib.backends.backend_pdf import PdfPages

    from pipeline.report import pdf as pdfmod
    from pipeline.report.figures import FigureFile

    buf = io.BytesIO()
    with matplotlib.rc_context(rc_params()), PdfPages(buf, metadata={"CreationDate": None}) as out:
        w = pdfmod._Writer(out, "footer")
        w.new_page()
        w.figure(FigureFile("f", png, "a map"), 1)
        w.flush()
    return buf.getvalue()


class _FloatPixels:
    """Stands in for the PIL image `_Writer.figure` opens and hands over matplotlib's
    float reading of the same PNG (what the writer read before)."""

    def __init__(self, path):
        import matplotlib.image as mpimg

        self.arr, self.mode = mpimg.imread(path), "RGBA"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def __array__(self, dtype=None, copy=None):
        return self.arr


def test_figures_are_embedded_from_their_8bit_pixels_as_from_floats(tmp_path, monkeypatch):
    """The PDF page of a figure read as 8-bit pixels is byte-identical to the one from
    matplotlib's float reading of the same PNG (the faster read changes nothing)."""
    import numpy as np
    from matplotlib.figure import Figure

    from pipeline.report import pdf as pdfmod

    rng = np.random.default_rng(5)
    with matplotlib.rc_context(rc_params()):
        fig = Figure(figsize=(4, 3))
        ax = fig.add_subplot()
        ax.imshow(rng.random((60, 80)), cmap="viridis", interpolation="nearest")
        ax.set_title("流域 map")
        png = tmp_path / "f.png"
        fig.savefig(png, dpi=150)
    eight_bit = _figure_page(png)
    monkeypatch.setattr(pdfmod.Image, "open", _FloatPixels)
    assert eight_bit == _figure_page(png)
