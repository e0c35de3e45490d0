"""The technical report's content, built from the run: sections of blocks.

《流域生态保护修复工程效果的信用评估技术报告》 has eight parts (the guideline's
report outline); each is a `Section` with a list of blocks that html.py and
pdf.py render the same way:

    ("p", text) | ("h", text) | ("ul", [text, ...]) | ("fig", key) | ("table", title, DataFrame)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import rasterio

from pipeline.indicators.catalog import BY_NAME, CLASS_CODES, CLASS_NODATA
from pipeline.report.figures import CLASS_ZH
from pipeline.report.model import (CELLS, FUNCTION_ZH, FUNCTIONS, KIND_ZH, SCALE_ZH, SCALES, STAGE_ZH, STAGES,
                                   RunOutputs, assumptions, project_totals, site_layer)

TITLE = "流域生态保护修复工程效果的信用评估技术报告"

NORMATIVE_REFERENCES = [
    ("GB 3838", "地表水环境质量标准"),
    ("HJ 192-2015", "生态环境状况评价技术规范"),
    ("HJ 1272-2022", "生态保护修复成效评估技术指南（试行）"),
    ("HJ 1173-2021", "全国生态状况调查评估技术规范——生态系统服务功能评估"),
    ("HJ 1175-2021", "全国生态状况调查评估技术规范——项目尺度生态影响评估"),
    ("HJ 1143-2020", "生态保护红线监管技术规范 保护成效评估（试行）"),
    ("HJ 623-2011", "区域生物多样性评价标准"),
    ("SL/T 800-2020", "河湖生态系统保护与修复工程技术导则"),
    ("TD/T 1069-2022", "国土空间生态保护修复工程验收规范"),
    ("自然资办发〔2020〕38号", "山水林田湖草生态保护修复工程指南（试行）"),
]

# which indicators feed which rating cell (the bracketed rule codes of the catalogue)
CELL_INDICATORS: dict[str, list[str]] = {c: [] for c in CELLS}
for _ind in BY_NAME.values():
    for _c in CELLS:
        if f"{_c.replace('_', '-')}" in _ind.description:
            CELL_INDICATORS[_c].append(_ind.name)

TF_DEFAULT = {"planned": 0.0, "under_construction": 0.14, "completed": 0.30, "established": 0.65, "long_term": 1.0}
TF_BASIS = {"planned": "工程未开工，不计信用", "under_construction": "参照华盛顿州缓解银行信用释放上限（WAC 173-700）",
            "completed": "同上", "established": "本项目假设（导则正式评估期）", "long_term": "生态功能充分发挥"}


@dataclass
class Section:
    number: str
    title: str
    blocks: list[tuple] = field(default_factory=list)

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def h(self, text: str) -> None:
        self.blocks.append(("h", text))

    def ul(self, items: list[str]) -> None:
        self.blocks.append(("ul", list(items)))

    def fig(self, key: str) -> None:
        self.blocks.append(("fig", key))

    def table(self, title: str, df: pd.DataFrame) -> None:
        self.blocks.append(("table", title, df))


def _n(x: float, nd: int = 2) -> str:
    return f"{x:,.{nd}f}"


def _class_shares(run: RunOutputs, vname: str) -> pd.Series | None:
    key = f"canonical_{vname}"
    if key not in run.rasters:
        return None
    with rasterio.open(run.rasters[key]) as ds:
        a = ds.read(1)
    a = a[a != CLASS_NODATA]
    if a.size == 0:
        return None
    names = {v: k for k, v in CLASS_CODES.items()}
    counts = pd.Series(a).value_counts()
    return pd.Series({CLASS_ZH[names[c]]: counts.get(c, 0) / a.size * 100 for c in sorted(names)})


def _verdict_zh(v: str) -> str:
    return {"no net loss": "实现零净损失", "net loss": "存在净损失"}.get(str(v), str(v))


def build(run: RunOutputs, figure_keys: list[str]) -> list[Section]:
    s = site_layer(run)
    credits = run.credits
    led = run.ledger.set_index("function").reindex(list(FUNCTIONS))
    totals = project_totals(run)
    resto = credits[credits["kind"] == "restoration"]
    impact = credits[credits["kind"] == "impact"]
    n_proj, n_sites = s["project_id"].nunique(), len(s)
    total_credit, total_debit = float(credits["credit"].sum()), float(credits["debit"].sum())
    basin_km2 = float(run.boundary.area.sum()) / 1e6
    by, ay = run.baseline[1], run.assessment[1]
    verdicts = {f: _verdict_zh(led.loc[f, "verdict"]) for f in FUNCTIONS}
    all_ok = all(led["verdict"] == "no net loss")          # the ledger's own verdicts
    secs: list[Section] = []

    # 1 前言 -------------------------------------------------------------------------------
    sec = Section("一", "前言")
    sec.p(f"为量化{run.basin_title}内生态保护修复工程带来的生态系统服务变化，本报告依据《流域生态保护修复工程效果的"
          f"信用评估技术导则》的技术流程，对流域内 {n_proj} 个工程、{n_sites} 个场地开展了生态信用评估。"
          f"生态信用是一定时期内特定区域生态系统服务提升的统一计量单位，可作为“零净损失”目标下生态补偿与交易的标的。")
    sec.p(f"评估以 {by} 年为基期（工程实施前一年），以 {ay} 年为评估期，评估基准日为 "
          f"{run.assessment_date.isoformat()}。全部计算由本工具自动完成，数据、参数与中间结果均可在附件及随附的 "
          f"GeoPackage 中逐项追溯。")
    sec.p(f"评估结论概要：修复工程合计产生生态信用 {_n(total_credit)}，开发影响场地合计形成借记 {_n(total_debit)}；"
          + "；".join(f"{FUNCTION_ZH[f]}净值 {_n(led.loc[f, 'net'])}（{verdicts[f]}）" for f in FUNCTIONS)
          + ("。流域内三项生态系统服务均满足零净损失要求。" if all_ok else "。流域内尚有生态系统服务未满足零净损失要求，需补充修复或购买信用。"))
    secs.append(sec)

    # 2 工程概况 -------------------------------------------------------------------------------
    sec = Section("二", "流域生态保护修复工程概况")
    sec.h("（一）流域自然特征")
    stream_km = float(run.streams.length.sum()) / 1000 if len(run.streams) else 0.0
    max_ua = float(run.streams["upstream_area_km2"].max()) if len(run.streams) else 0.0
    sec.p(f"评估范围为{run.basin_title}，面积约 {_n(basin_km2)} km²。按上游汇水面积提取的河网共 {len(run.streams)} 段、"
          f"总长约 {_n(stream_km)} km，出口处最大上游汇水面积约 {_n(max_ua)} km²。")
    pre_sh, post_sh = _class_shares(run, run.baseline[0]), _class_shares(run, run.assessment[0])
    if pre_sh is not None and post_sh is not None:
        lc = pd.DataFrame({"地类": pre_sh.index, f"基期 {by}（%）": pre_sh.round(2).values,
                           f"评估期 {ay}（%）": post_sh.reindex(pre_sh.index).round(2).values})
        lc["变化（百分点）"] = (lc[f"评估期 {ay}（%）"] - lc[f"基期 {by}（%）"]).round(2)
        top = lc.sort_values(f"基期 {by}（%）", ascending=False).iloc[0]
        dev_pre = float(pre_sh[["耕地", "建设用地"]].sum())
        dev_post = float(post_sh.reindex(["耕地", "建设用地"]).sum())
        sec.p(f"基期流域内占比最大的地类为{top['地类']}（{top[f'基期 {by}（%）']:.1f}%）。开发利用方面，耕地与建设用地"
              f"合计占流域面积的 {dev_pre:.1f}%（基期）和 {dev_post:.1f}%（评估期）。各地类面积比例及其变化见下表。")
        sec.table("流域土地覆被构成", lc)
    sec.h("（二）生态保护修复工程概况")
    proj = s.groupby("project_id").agg(场地数=("site_id", "count"), 面积公顷=("area_ha", "sum"),
                                       工程类型=("project_type", lambda v: "、".join(sorted(set(map(str, v))))),
                                       实施阶段=("stage", lambda v: "、".join(STAGE_ZH.get(x, x) for x in sorted(set(v)))),
                                       性质=("kind", lambda v: "、".join(KIND_ZH.get(x, x) for x in sorted(set(v)))))
    proj = proj.reset_index().rename(columns={"project_id": "工程编号", "面积公顷": "面积（公顷）"})
    proj["面积（公顷）"] = proj["面积（公顷）"].round(2)
    n_imp = int((s["kind"] == "impact").sum())
    sec.p(f"流域内纳入评估的工程 {n_proj} 个，场地 {n_sites} 个，合计面积 {_n(float(s['area_ha'].sum()))} 公顷；"
          f"其中开发影响场地 {n_imp} 个，用于核算借记。各场地分布见图。")
    sec.table("工程一览", proj)
    if "basin_map" in figure_keys:
        sec.fig("basin_map")
    secs.append(sec)

    # 3 评估依据 -------------------------------------------------------------------------------
    sec = Section("三", "评估依据")
    sec.h("（一）目标与原则")
    sec.p("评估以工程实施前后生态系统服务的变化为对象，将水质净化、水文调节和生境保护三类服务的变化换算为统一量纲的生态信用，"
          "为工程绩效考核和市场化生态补偿提供依据。评估坚持三项原则：一是科学，指标依据自然过程选取，结果如实反映工程成效；"
          "二是可操作，数据可获取、过程可复现、结果可量化；三是规范，流程、方法、数据与成果格式统一。")
    sec.h("（二）评估周期")
    sec.p("基期取被评估区域生态保护修复工程实施的前一年；正式评估原则上在整体竣工验收 2 年后开展，长期成效评估在竣工验收 5 年后开展，"
          "其他时点的评估按工程所处阶段乘以相应时间因子。")
    sec.h("（三）规范性引用文件")
    sec.ul([f"{code}　{name}" for code, name in NORMATIVE_REFERENCES])
    sec.p("方法上借鉴美国华盛顿州湿地信用/借记评估方法（Hruby 2012；Wetland Rating System for Western Washington 2014），"
          "并按导则要求进行了本地化。")
    secs.append(sec)

    # 4 评估内容 -------------------------------------------------------------------------------
    sec = Section("四", "评估内容")
    sec.h("（一）时空范围")
    sec.p(f"空间范围为流域边界内全部栅格与工程场地，分析坐标系为 {_crs_name(run.crs)}，栅格分辨率 {run.resolution_m:g} m。"
          f"时间范围：基期 {by} 年（数据版本 {run.baseline[0]}），评估期 {ay} 年（数据版本 {run.assessment[0]}）；"
          f"全部数据版本：" + "、".join(f"{n}（{y}）" for n, y in run.vintages) + "。")
    asbuilt = [r["role"].split(".")[1] for r in (run.inputs or [])
               if r["role"].startswith("landcover.") and r["role"].endswith(".dem")]
    if asbuilt:
        sec.p("数据版本 " + "、".join(asbuilt) + " 采用竣工后实测 DEM（as-built DEM）：在其覆盖范围内替换流域 DEM，"
              "并据此单独计算该期的水文（填洼、D8 流向、汇流累积、坡度、洼地深度），该期的土地覆被指标与场地指标均以此为准；"
              "流域边界与河网仍取自流域 DEM。")
    sec.h("（二）评估要素")
    sec.p("评估要素为流域生态系统提供的三类服务：水质净化（WQ）、水文调节（HY）和生境保护（HB）。")
    sec.h("（三）评估指标")
    sec.p("指标体系分三级：一级为三类服务，二级为场地效力（S）、景观效力（L）和社会效力（V），三级为各项计分指标。"
          "每个二级指标按三级指标得分之和评为低、中、高三级（1、2、3 分），一级指标得分为其三个二级指标评级之和（3–9 分）。")
    rows = []
    for c in CELLS:
        f, sc = c.split("_")
        inds = CELL_INDICATORS[c]
        rows.append({"一级指标": FUNCTION_ZH[f], "二级指标": SCALE_ZH[sc], "代码": c,
                     "三级指标（字段）": "、".join(inds) if inds else "—"})
    sec.table("评估指标体系", pd.DataFrame(rows))
    sec.h("（四）时间因子")
    tf_used = credits.dropna(subset=["tf"]).groupby("stage")["tf"].agg(
        lambda v: ", ".join(f"{x:g}" for x in sorted(set(v))))
    tf_rows = [{"实施阶段": STAGE_ZH[st], "默认时间因子": TF_DEFAULT[st], "本次采用": tf_used.get(st, "—"),
                "依据": TF_BASIS[st]} for st in STAGES]
    sec.p("同一流域内各工程进度不同，信用按工程所处阶段乘以时间因子（TF）折算；竣工 2–5 年取 0.65 为本项目假设，已在参数表中标注。")
    sec.table("时间因子", pd.DataFrame(tf_rows))
    secs.append(sec)

    # 5 数据来源和计算方法 -----------------------------------------------------------------------
    sec = Section("五", "数据来源和计算方法")
    sec.h("（一）基础数据")
    if run.inputs:
        sec.table("输入数据及来源", pd.DataFrame(run.inputs, columns=["role", "path", "sha256", "source"]).rename(
            columns={"role": "用途", "path": "文件", "sha256": "SHA-256", "source": "来源与许可"}))
    else:
        sec.p("本次运行未登记输入数据清单。")
    sec.h("（二）计算方法")
    sec.ul([
        "水文：洼地填充（priority-flood）、D8 流向、汇流累积与上游汇水面积、坡度（Horn）、洼地深度与河网提取，分块计算且与整幅计算结果一致。",
        "景观：场地外 NEAR 缓冲环与 RING1K 景观环内的土地利用构成、可达生境与连通性（斑块概率连通性 PC 及其 dPC）。",
        "评级：三级指标按规则表计分，分值之和按分级阈值评为低/中/高；一级指标得分为三项评级之和。",
        "存量：存量 = 场地面积（公顷）× 一级指标得分，分别计算基期与评估期。",
        "信用：信用 = （评估期存量 − 基期存量）× 时间因子 TF × 风险因子 RF；借记 = 面积 × （基期得分 − 评估期得分）× 时间损失因子 TLF。",
        "台账：按服务类型汇总流域内信用与借记，信用不小于借记即为零净损失。",
    ])
    sec.h("（三）参数与假设")
    if run.parameters:
        par = pd.DataFrame(run.parameters, columns=["name", "value", "unit", "source", "assumption"])
        par["assumption"] = par["assumption"].map(lambda v: "是" if bool(v) else "")
        sec.table("参数表", par.rename(columns={"name": "参数", "value": "取值", "unit": "单位", "source": "来源",
                                               "assumption": "假设"}))
    ass = assumptions(run)
    if ass:
        sec.p(f"以下 {len(ass)} 项参数为假设值（配置中标注 assumption: true），结论对其敏感时应补充实测或文献依据：")
        sec.ul([f"{a['name']} = {a['value']} {a.get('unit') or ''}（{a.get('source') or '未注明来源'}）".replace(" （", "（")
                for a in ass])
    else:
        sec.p("本次配置中没有标注为假设的参数。")
    if run.versions:
        sec.p("软件版本：" + "；".join(f"{k} {v}" for k, v in sorted(run.versions.items())) + "。")
    secs.append(sec)

    # 6 生态信用评估 -------------------------------------------------------------------------------
    sec = Section("六", "生态信用评估")
    stock = resto.groupby("function")[["stock_pre", "stock_post", "delta_stock", "credit"]].sum().reindex(
        list(FUNCTIONS)).fillna(0.0)
    sec.h("（一）实施前后生态信用总体情况")
    sec.p(f"修复场地在基期的生态存量合计 {_n(float(stock['stock_pre'].sum()))}（公顷·分），评估期合计 "
          f"{_n(float(stock['stock_post'].sum()))}，存量变化 {_n(float(stock['delta_stock'].sum()))}；"
          f"按时间因子和风险因子折算后形成生态信用 {_n(float(stock['credit'].sum()))}。")
    st_tab = stock.reset_index().rename(columns={"function": "服务", "stock_pre": "基期存量", "stock_post": "评估期存量",
                                                "delta_stock": "存量变化", "credit": "生态信用"})
    st_tab["服务"] = st_tab["服务"].map(FUNCTION_ZH)
    sec.table("修复场地实施前后存量与信用", st_tab.round(3))
    sec.h("（二）各项生态系统服务情况")
    for f in FUNCTIONS:
        pre_m = float(s[f"{f}_pre"].mean())
        post_m = float(s[f"{f}_post"].mean())
        best = resto[resto["function"] == f].sort_values("credit", ascending=False).head(1)
        txt = (f"{FUNCTION_ZH[f]}：场地平均得分由 {pre_m:.2f} 变为 {post_m:.2f}，产生信用 {_n(float(led.loc[f, 'credits']))}，"
               f"借记 {_n(float(led.loc[f, 'debits']))}，净值 {_n(float(led.loc[f, 'net']))}，{verdicts[f]}。")
        if len(best) and best["credit"].iloc[0] > 0:
            txt += f"信用最多的场地为 {best['site_id'].iloc[0]}（{_n(float(best['credit'].iloc[0]))}）。"
        sec.p(txt)
    for key in ("credit_map", "scores_chart", "ratings_chart", "credits_chart"):
        if key in figure_keys:
            sec.fig(key)
    sec.h("（三）总体提升情况")
    sec.p(f"流域台账：信用合计 {_n(total_credit)}，借记合计 {_n(total_debit)}，净值 {_n(total_credit - total_debit)}。"
          + ("三项服务均满足零净损失。" if all_ok else
             "未满足零净损失的服务：" + "、".join(FUNCTION_ZH[f] for f in FUNCTIONS
                                      if led.loc[f, "verdict"] != "no net loss") + "。"))
    lt = run.ledger.copy()
    lt["function"] = lt["function"].map(lambda f: FUNCTION_ZH.get(f, f))
    lt["verdict"] = lt["verdict"].map(_verdict_zh)
    sec.table("流域信用台账", lt.rename(columns={"function": "服务", "credits": "信用", "debits": "借记", "net": "净值",
                                              "verdict": "结论"}).round(3))
    if "ledger_chart" in figure_keys:
        sec.fig("ledger_chart")
    pt = totals.copy()
    sec.table("各工程信用合计", pt.round(3))
    if run.history is not None and len(run.history) and run.history["vintage"].nunique() > 1:
        from pipeline.history import basin_history

        sec.h("（四）随时间变化")
        bh = basin_history(run.history)
        years = sorted(set(int(y) for y in bh["year"]))
        sec.p(f"按 {len(years)} 期土地覆被（{'、'.join(str(y) for y in years)} 年）相对基期逐期核算的流域净信用如下，"
              "每期的时间因子按该期日期下各场地所处阶段确定。")
        tab = bh.copy()
        tab["function"] = tab["function"].map(lambda f: FUNCTION_ZH.get(f, f))
        sec.table("流域信用随时间变化", tab.rename(columns={"function": "服务", "vintage": "期次", "year": "年份",
                                                     "credit": "信用", "debit": "借记", "net": "净值"}).round(3))
        if "history_chart" in figure_keys:
            sec.fig("history_chart")
    secs.append(sec)

    # 7 评估结论 -------------------------------------------------------------------------------
    sec = Section("七", "评估结论")
    for f in FUNCTIONS:
        resto_sites = s[s["kind"] == "restoration"]
        change = (f"修复场地得分平均变化 {float((resto_sites[f'{f}_post'] - resto_sites[f'{f}_pre']).mean()):+.2f} 分"
                  if len(resto_sites) else "本次评估没有修复场地")
        sec.p(f"（{'一二三'[FUNCTIONS.index(f)]}）{FUNCTION_ZH[f]}：{change}，净信用 "
              f"{_n(float(led.loc[f, 'net']))}，{verdicts[f]}。")
    r = s[s["kind"] == "restoration"]
    for i, sc in enumerate(SCALES):
        cols = [f"{f}_{sc}" for f in FUNCTIONS]
        pre = r[[f"{c}_pre" for c in cols]].to_numpy(dtype=float)
        post = r[[f"{c}_post" for c in cols]].to_numpy(dtype=float)
        if pre.size == 0:
            sec.p(f"（{'四五六'[i]}）{SCALE_ZH[sc]}：本次评估没有修复场地。")
            continue
        up, down = int((post > pre).sum()), int((post < pre).sum())
        sec.p(f"（{'四五六'[i]}）{SCALE_ZH[sc]}：修复场地三项服务的{SCALE_ZH[sc]}评级平均由 {np.nanmean(pre):.2f} 变为 "
              f"{np.nanmean(post):.2f}，共 {up} 项提升、{down} 项下降（共 {pre.size} 项）。")
    if len(impact):
        sec.p(f"开发影响场地形成借记 {_n(float(impact['debit'].sum()))}，应在同一流域内以不少于该数量的信用抵偿。")
    secs.append(sec)

    # 8 附件 -------------------------------------------------------------------------------
    sec = Section("八", "附件：各项指标得分支撑材料")
    # the two vintages the credits are computed from: the report does not grow with every
    # vintage a scheduled reprocess adds (the others are in site_scores and history)
    two = [run.baseline[0], run.assessment[0]]
    others = sorted(set(run.site_scores["vintage"]) - set(two))
    sec.p("下列表格为本次评估的完整计算追溯（与 GeoPackage 中同名属性表一致），地图为关键指标栅格。"
          + (f"场地指标表列出基期（{by} 年）与评估期（{ay} 年）；其余 {len(others)} 期"
             f"（{'、'.join(others)}）的场地指标见 GeoPackage 的 site_scores 表，各期信用见 tables/history.csv。"
             if others else ""))
    for key in figure_keys:
        if key.startswith("map_"):
            sec.fig(key)
    cat = pd.DataFrame([{"字段": i.name, "单位": i.unit, "数据来源": i.source, "含义（规则）": i.description}
                        for i in BY_NAME.values() if i.name in run.site_scores.columns])
    if len(cat):
        sec.table("附表0 三级指标说明（pipeline/indicators/catalog.py）", cat)
    sc_tab = run.site_scores[run.site_scores["vintage"].isin(two)]
    ind_cols = [c for c in sc_tab.columns if c in BY_NAME]
    pts_cols = sorted(c for c in sc_tab.columns if c.startswith("pts_"))
    sec.table("附表1 场地三级指标值（site_scores：指标）", sc_tab[["site_id", "vintage", "year", *ind_cols]].round(4))
    if pts_cols:
        sec.table("附表2 三级指标得分（site_scores：pts_*）", sc_tab[["site_id", "vintage", *pts_cols]])
    sec.table("附表3 二级指标评级与一级指标得分（site_scores）", sc_tab[["site_id", "vintage", *CELLS, *FUNCTIONS]])
    sec.table("附表4 信用与借记计算（credits）", credits.round(4))
    sec.table("附表5 流域台账（ledger）", run.ledger.round(4))
    sec.table("附表6 工程合计（project_totals）", totals.round(4))
    secs.append(sec)
    return secs


def _crs_name(crs: str) -> str:
    try:
        from pyproj import CRS
        c = CRS.from_user_input(crs)
        epsg = c.to_epsg()
        if epsg:
            return f"{c.name}（EPSG:{epsg}）"
        method = c.coordinate_operation.method_name if c.coordinate_operation else ""
        if c.name and c.name != "unknown":
            return f"{c.name}（{method}）" if method else c.name
        with warnings.catch_warnings():  # pyproj warns that PROJ strings are lossy; here it is for display only
            warnings.simplefilter("ignore", UserWarning)
            proj = c.to_proj4()
        return f"{method}（{proj}）" if method else proj
    except Exception:  # noqa: BLE001 - any CRS text is still shown verbatim
        return str(crs)[:80]
