"""HTML rendering of the report (one file, figures referenced relative in figures/)."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from pipeline.report.content import TITLE, Section
from pipeline.report.figures import FigureFile
from pipeline.report.model import RunOutputs

CSS = """
body{font-family:"Noto Sans CJK SC","Source Han Sans SC","Microsoft YaHei","PingFang SC","WenQuanYi Micro Hei",sans-serif;
max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.7}
h1{text-align:center;font-size:1.7em}h2{border-bottom:2px solid #2b8cbe;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.1em;margin-top:1.4em}.meta{text-align:center;color:#555}
figure{margin:1.2em 0;text-align:center}figure img{max-width:100%;border:1px solid #ddd}
figcaption{color:#444;font-size:.9em}.tbl{overflow-x:auto;margin:.8em 0}
table{border-collapse:collapse;font-size:.82em}th,td{border:1px solid #bbb;padding:.2em .5em;text-align:right}
th{background:#eef5fa}td:first-child,th:first-child{text-align:left}caption{font-weight:bold;padding:.3em}
nav ol{columns:2}
"""


def _table(title: str, df: pd.DataFrame, number: int) -> str:
    body = df.to_html(index=False, escape=True, border=0, na_rep="—", float_format=lambda x: f"{x:.4g}")
    head, rest = body.split(">", 1)  # '<table class="dataframe"' | rest
    return f'<div class="tbl">{head}><caption>表 {number}　{html.escape(title)}</caption>{rest}</div>'


def render(run: RunOutputs, sections: list[Section], figures: dict[str, FigureFile], report_dir: Path) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="zh-CN"><head><meta charset="utf-8">',
           f"<title>{e(run.basin_title)} — {e(TITLE)}</title>", f"<style>{CSS}</style></head><body>",
           f"<h1>{e(run.basin_title)}<br>{e(TITLE)}</h1>",
           f'<p class="meta">评估基准日 {run.assessment_date.isoformat()}　基期 {run.baseline[1]}　评估期 '
           f"{run.assessment[1]}　流域代码 {e(run.basin_name)}</p>",
           "<nav><h2>目录</h2><ol>" + "".join(f'<li><a href="#s{i}">{e(s.title)}</a></li>'
                                            for i, s in enumerate(sections, 1)) + "</ol></nav>"]
    n_fig = n_tab = 0
    for i, sec in enumerate(sections, 1):
        out.append(f'<section id="s{i}"><h2>{e(sec.number)}、{e(sec.title)}</h2>')
        for block in sec.blocks:
            kind = block[0]
            if kind == "p":
                out.append(f"<p>{e(block[1])}</p>")
            elif kind == "h":
                out.append(f"<h3>{e(block[1])}</h3>")
            elif kind == "ul":
                out.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in block[1]) + "</ul>")
            elif kind == "fig":
                f = figures[block[1]]
                n_fig += 1
                rel = f.path.relative_to(report_dir).as_posix()
                out.append(f'<figure><img src="{e(rel)}" alt="{e(f.caption)}">'
                           f"<figcaption>图 {n_fig}　{e(f.caption)}</figcaption></figure>")
            elif kind == "table":
                n_tab += 1
                out.append(_table(block[1], block[2], n_tab))
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
