"""The technical report: HTML (+ figures) and PDF written from a run."""

from __future__ import annotations

import logging
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from fixtures_run import shared_outputs
from pipeline.report import figures, fonts
from pipeline.report.content import TITLE
from pipeline.report.document import write_report

SECTIONS = ["前言", "流域生态保护修复工程概况", "评估依据", "评估内容", "数据来源和计算方法", "生态信用评估",
            "评估结论", "附件"]


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.h2, self.captions, self.tables = [], [], [], []
        self._in = None
        self._rows = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a["src"])
        if tag in ("h2", "caption"):
            self._in, self._buf = tag, ""
        if tag == "table":
            self._rows = 0
        if tag == "tr":
            self._rows += 1

    def handle_endtag(self, tag):
        if tag == "h2" and self._in == "h2":
            self.h2.append(self._buf)
            self._in = None
        if tag == "caption" and self._in == "caption":
            self.captions.append(self._buf)
            self._in = None
        if tag == "table":
            self.tables.append((self.captions[-1] if self.captions else "", self._rows - 1))

    def handle_data(self, data):
        if self._in:
            self._buf += data


@pytest.fixture(scope="module")
def report():
    run, _, html_path, pdf_path = shared_outputs()
    return run, html_path, pdf_path


def test_html_has_the_eight_sections_in_order(report):
    _, html_path, _ = report
    p = _Collect()
    p.feed(html_path.read_text(encoding="utf-8"))
    body = [h for h in p.h2 if h != "目录"]
    assert len(body) == 8
    for h, want in zip(body, SECTIONS):
        assert want in h
    assert TITLE in html_path.read_text(encoding="utf-8")


def test_every_referenced_figure_exists_and_is_a_png(report):
    _, html_path, _ = report
    p = _Collect()
    p.feed(html_path.read_text(encoding="utf-8"))
    assert len(p.imgs) >= 8
    for src in p.imgs:
        assert not src.startswith(("http:", "https:", "/")), src
        f = html_path.parent / src
        assert f.is_file(), src
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keys = {Path(s).stem for s in p.imgs}
    assert {"basin_map", "credit_map", "map_upstream_area", "scores_chart", "credits_chart",
            "ledger_chart"} <= keys
    assert any(k.startswith("map_patch_dpc") for k in keys)
    # nothing in figures/ that the report does not use, no temp folders left
    assert sorted(x.name for x in (html_path.parent / "figures").iterdir()) == sorted(Path(s).name for s in p.imgs)
    assert sorted(x.name for x in html_path.parent.iterdir()) == ["figures", "index.html", "report.pdf"]


def test_annex_holds_every_trace_table_in_full(report):
    run, html_path, _ = report
    p = _Collect()
    p.feed(html_path.read_text(encoding="utf-8"))
    rows = {cap.split("　", 1)[1]: n for cap, n in p.tables}
    assert rows["附表4 信用与借记计算（credits）"] == len(run.credits)
    assert rows["附表5 流域台账（ledger）"] == len(run.ledger)
    assert rows["附表3 二级指标评级与一级指标得分（site_scores）"] == len(run.site_scores)
    assert rows["附表1 场地三级指标值（site_scores：指标）"] == len(run.site_scores)
    assert rows["参数表"] == len(run.parameters)


def test_annex_lists_the_baseline_and_assessment_vintages_only(report):
    """A vintage between the two (a scheduled reprocess adds one a year) stays out of the
    per-site trace tables, which would otherwise grow by a page run per vintage; the
    annex says where its rows are (site_scores, history)."""
    import dataclasses

    import pandas as pd

    from pipeline.report.content import build

    run, _, _ = report
    mid = run.site_scores[run.site_scores["vintage"] == run.assessment[0]].assign(vintage="y2020", year=2020)
    run3 = dataclasses.replace(run, site_scores=pd.concat([run.site_scores, mid], ignore_index=True))
    annex = build(run3, [])[-1]
    tables = {b[1]: b[2] for b in annex.blocks if b[0] == "table"}
    site_tables = [t for title, t in tables.items() if "site_scores" in title]
    assert len(site_tables) == 3
    for t in site_tables:
        assert len(t) == len(run.site_scores)
        assert set(t["vintage"]) == {run.baseline[0], run.assessment[0]}
    intro = next(b[1] for b in annex.blocks if b[0] == "p")
    assert "y2020" in intro and "site_scores" in intro and "history.csv" in intro
    # with the two vintages only, the intro has no such note
    assert "history.csv" not in next(b[1] for b in build(run, [])[-1].blocks if b[0] == "p")


def test_numbers_in_text_come_from_the_run(report):
    run, html_path, _ = report
    text = html_path.read_text(encoding="utf-8")
    led = run.ledger.set_index("function")
    # ledger of the fixture: HB net = credits - debits < 0 -> the text must say it is a net loss
    assert led.loc["HB", "net"] < 0
    assert f"生境保护净值 {led.loc['HB', 'net']:,.2f}（存在净损失）" in text
    assert f"信用合计 {run.credits['credit'].sum():,.2f}" in text
    # each assumption flagged in the configuration is listed, the others are not in that list
    listed = re.search(r"以下 (\d+) 项参数为假设值.*?</ul>", text, re.S)
    assert listed and int(listed.group(1)) == 2
    assert "tf.established = 0.65" in listed.group(0) and "rf.wetland = 0.5" in listed.group(0)
    assert "near_buffer_m" not in listed.group(0)
    assert "基期 2018" in text and "评估期 2023" in text


def test_pdf_is_complete(report):
    _, _, pdf_path = report
    data = pdf_path.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    pages = len(re.findall(rb"/Type\s*/Page[^s]", data))
    assert pages >= 1 + 8  # title page + one page or more per section
    assert b"/Type3" in data or b"/FontFile" in data   # fonts are embedded
    assert b"CreationDate" not in data


def test_pdf_and_html_are_deterministic(report, tmp_path):
    run, html_path, pdf_path = report
    h2, p2 = write_report(run, tmp_path / "again")
    assert h2.read_text(encoding="utf-8") == html_path.read_text(encoding="utf-8")
    assert p2.read_bytes() == pdf_path.read_bytes()


def test_cjk_font_found():
    found = fonts.cjk_font()
    assert found is not None, "the pinned mplfonts package ships Noto Sans CJK SC"
    from matplotlib.ft2font import FT2Font
    ft = FT2Font(str(found[1]))
    assert ft.get_char_index(ord("信")) != 0 and ft.get_char_index(ord("评")) != 0


def test_english_fallback_without_cjk_font(report, monkeypatch, caplog):
    run, _, _ = report
    monkeypatch.setattr(fonts, "cjk_font", lambda: None)
    monkeypatch.setattr(figures, "has_cjk", lambda: False)
    assert figures.T("信用", "credits") == "credits"
    fig = figures.ledger_chart(run)
    ax = fig.axes[0]
    assert ax.get_title() == "basin ledger: credits, debits and net"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Water purification", "Hydrologic regulation", "Habitat"]


def test_fallback_warning_is_logged(monkeypatch, caplog):
    import importlib.util
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(fonts, "_SYSTEM_FAMILIES", ())
    fonts.cjk_font.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="pipeline.report.fonts"):
            assert fonts.cjk_font() is None
        assert "no CJK font found" in caplog.text
    finally:
        fonts.cjk_font.cache_clear()


def test_maps_show_the_data(report):
    """The credit map is not blank: the sites are drawn in more than a few colours."""
    _, html_path, _ = report
    import matplotlib.image as mpimg
    img = mpimg.imread(html_path.parent / "figures" / "credit_map.png")
    rgb = (img[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 50
    assert (rgb.min(axis=1) < 200).mean() > 0.02


def _subset(run, keep_kind: str, **extra):
    ids = set(run.sites.loc[run.sites.kind == keep_kind, "site_id"])
    cr = run.credits[run.credits.site_id.isin(ids)]
    led = cr.groupby("function").agg(credits=("credit", "sum"), debits=("debit", "sum")).reset_index()
    led["net"] = led["credits"] - led["debits"]
    led["verdict"] = ["no net loss" if n >= 0 else "net loss" for n in led["net"]]
    return type(run)(**{**run.__dict__, "sites": run.sites[run.sites.site_id.isin(ids)], "credits": cr,
                        "ledger": led, "site_scores": run.site_scores[run.site_scores.site_id.isin(ids)], **extra})


def test_report_without_rasters_layers_or_parameters(report, tmp_path):
    run = _subset(report[0], "restoration", rasters={}, layers={}, parameters=[], inputs=[], versions={})
    html_path, pdf_path = write_report(run, tmp_path / "r")
    text = html_path.read_text(encoding="utf-8")
    p = _Collect()
    p.feed(text)
    assert len([h for h in p.h2 if h != "目录"]) == 8
    assert not any("map_" in s for s in p.imgs)          # no raster, no raster map
    assert "本次配置中没有标注为假设的参数" in text and "本次运行未登记输入数据清单" in text
    assert "实现零净损失" in text and "存在净损失" not in text  # restoration only: no debits
    assert pdf_path.stat().st_size > 10_000


def test_report_with_impact_sites_only(report, tmp_path):
    run = _subset(report[0], "impact")
    html_path, _ = write_report(run, tmp_path / "r")
    text = html_path.read_text(encoding="utf-8")
    assert "本次评估没有修复场地" in text
    assert f"开发影响场地形成借记 {run.credits['debit'].sum():,.2f}" in text


def test_crs_is_named_readably():
    from pipeline.report.content import _crs_name
    assert _crs_name("EPSG:32650") == "WGS 84 / UTM zone 50N（EPSG:32650）"
    albers = "+proj=aea +lat_0=0 +lon_0=105 +lat_1=25 +lat_2=47 +x_0=0 +y_0=0 +datum=WGS84 +units=m +no_defs"
    name = _crs_name(albers)
    assert name.startswith("Albers Equal Area（+proj=aea") and "lon_0=105" in name


def test_as_built_dem_is_stated_in_the_scope_section(report):
    """A vintage with an as-built DEM (an input role landcover.<v>.dem) is named in section
    four; without one the sentence is absent."""
    import dataclasses

    from pipeline.report.content import build

    run = report[0]

    def text(r):
        return "\n".join(str(b) for sec in build(r, []) for b in sec.blocks)

    assert "as-built DEM" not in text(run)
    inputs = list(run.inputs or []) + [{"role": "landcover.y2023.dem", "path": "dem_2023.tif", "sha256": "0" * 64,
                                        "source": ""}]
    assert "数据版本 y2023 采用竣工后实测 DEM" in text(dataclasses.replace(run, inputs=inputs))
