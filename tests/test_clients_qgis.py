"""Real client: QGIS (Debian python3-qgis, driven as a subprocess of /usr/bin/python3).

QGIS opens the GeoPackage headless, each spatial layer picks up its default style
from `layer_styles`, the COG rasters pick up their colour table / `.qml` sidecar,
and a rendered map PNG is not blank.  Skips where QGIS is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from fixtures_run import shared_outputs
from pipeline.report.fonts import cjk_font

pytestmark = pytest.mark.client

SYSTEM_PY = "/usr/bin/python3"

SCRIPT = r'''
import json, os, sqlite3, sys
from qgis.core import QgsApplication, QgsVectorLayer, QgsRasterLayer, QgsMapSettings, QgsMapRendererParallelJob
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor

gpkg, out_png, *rasters = sys.argv[1:]
app = QgsApplication([], False)
app.initQgis()
report = {"qgis": __import__("qgis.core").core.Qgis.QGIS_VERSION, "layers": {}, "rasters": {}}
con = sqlite3.connect(gpkg)
tables = [r[0] for r in con.execute("SELECT table_name FROM gpkg_contents ORDER BY table_name")]
con.close()
layers = []
for name in tables:
    lyr = QgsVectorLayer(f"{gpkg}|layername={name}", name, "ogr")
    info = {"valid": lyr.isValid(), "spatial": lyr.isSpatial(), "features": lyr.featureCount()}
    if lyr.isSpatial():
        msg, ok = lyr.loadDefaultStyle()
        r = lyr.renderer()
        info.update(default_style_ok=bool(ok), msg=msg, renderer=r.type(), labels=lyr.labelsEnabled())
        if r.type() == "graduatedSymbol":
            info["attr"] = r.classAttribute()
            info["ranges"] = [[x.lowerValue(), x.upperValue(), x.label()] for x in r.ranges()]
        if r.type() == "categorizedSymbol":
            info["attr"] = r.classAttribute()
        info["aliases"] = {f.name(): f.alias() for f in lyr.fields() if f.alias()}
        n, ids, names, desc, err = lyr.listStylesInDatabase()
        info["styles_in_db"] = n
        # every stored style must load into a layer without error
        info["styles_loading"] = []
        for sid, sname in zip(ids[:n], names[:n]):  # the first n are this layer's
            qml, err = lyr.getStyleFromDatabase(sid)
            probe = QgsVectorLayer(f"{gpkg}|layername={name}", name, "ogr")
            from qgis.PyQt.QtXml import QDomDocument
            doc = QDomDocument()
            doc.setContent(qml)
            ok2 = probe.importNamedStyle(doc)
            info["styles_loading"].append([sname, bool(ok2[0]), probe.renderer().type()])
        layers.append(lyr)
    report["layers"][name] = info
for rp in rasters:
    rl = QgsRasterLayer(rp, os.path.basename(rp))
    report["rasters"][os.path.basename(rp)] = {"valid": rl.isValid(), "renderer": rl.renderer().type()}
    layers.append(rl)
def order(l):
    if isinstance(l, QgsVectorLayer):
        return {0: 0, 1: 1}.get(l.geometryType(), 2)
    return 3
ms = QgsMapSettings()
ms.setLayers(sorted(layers, key=order))
boundary = [l for l in layers if l.name() == "basin_boundary"][0]
ext = boundary.extent()
ext.scale(1.05)
ms.setDestinationCrs(boundary.crs())
ms.setExtent(ext)
ms.setOutputSize(QSize(900, 900))
ms.setBackgroundColor(QColor(255, 255, 255))
job = QgsMapRendererParallelJob(ms)
job.start()
job.waitForFinished()
job.renderedImage().save(out_png, "png")
print(json.dumps(report, ensure_ascii=False))
sys.stdout.flush()
os._exit(0)  # QGIS 3.22 may crash in exitQgis() with layers alive; results are already printed
'''


def _has_qgis() -> bool:
    if not Path(SYSTEM_PY).exists():
        return False
    r = subprocess.run([SYSTEM_PY, "-c", "import qgis.core"], capture_output=True, timeout=60)
    return r.returncode == 0


def fontconfig_env(tmp: Path) -> dict:
    """Environment in which Qt/Chromium find the CJK font the report uses (via fontconfig)."""
    env = {k: v for k, v in os.environ.items()}
    found = cjk_font()
    if found:
        conf = tmp / "fonts.conf"
        conf.write_text(f"""<?xml version="1.0"?><!DOCTYPE fontconfig SYSTEM "fonts.dtd"><fontconfig>
<include ignore_missing="yes">/etc/fonts/fonts.conf</include><dir>{found[1].parent}</dir>
<cachedir>{tmp / "fc-cache"}</cachedir></fontconfig>""")
        env["FONTCONFIG_FILE"] = str(conf)
    return env


@pytest.fixture(scope="module")
def qgis_result(tmp_path_factory):
    if not _has_qgis():
        pytest.skip("QGIS Python bindings not installed for /usr/bin/python3 (apt-get install python3-qgis)")
    d = tmp_path_factory.mktemp("qgis")
    run, gpkg, _, _ = shared_outputs()
    script = d / "render.py"
    script.write_text(SCRIPT)
    png = d / "map.png"
    rasters = [str(run.rasters[k]) for k in ("canonical_lc2023", "upstream_area_km2")]
    # a class raster written without a colour table gets a paletted .qml sidecar instead
    import rasterio
    from pipeline.report.cog import write_cog, write_raster_styles
    with rasterio.open(run.rasters["canonical_lc2018"]) as src:
        bare = write_cog(src.read(1), src.transform, src.crs, 255, d / "canonical_no_table.tif")
    write_raster_styles({"lc2018/canonical": bare})
    rasters.append(str(bare))
    env = fontconfig_env(d)
    env.update(QT_QPA_PLATFORM="offscreen", XDG_RUNTIME_DIR=str(d))
    proc = subprocess.run([SYSTEM_PY, str(script), str(gpkg), str(png), *rasters], capture_output=True, text=True,
                          timeout=240, env=env, cwd=d)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("{")][-1]
    return run, json.loads(line), png


def test_every_spatial_layer_opens_with_its_default_style(qgis_result):
    _, rep, _ = qgis_result
    spatial = {k: v for k, v in rep["layers"].items() if v["spatial"]}
    assert set(spatial) == {"sites", "basin_boundary", "streams", "near_rings", "ring1k", "monitoring_sections"}
    for name, info in spatial.items():
        assert info["valid"] and info["default_style_ok"], (name, info.get("msg"))
    assert spatial["sites"]["renderer"] == "graduatedSymbol" and spatial["sites"]["attr"] == "credit_total"
    assert spatial["sites"]["labels"] is True
    assert spatial["streams"]["renderer"] == "graduatedSymbol"
    assert spatial["streams"]["attr"] == "upstream_area_km2"
    assert spatial["basin_boundary"]["renderer"] == "singleSymbol"
    assert spatial["monitoring_sections"]["labels"] is True
    # Chinese field aliases reach QGIS
    assert spatial["sites"]["aliases"]["credit_total"] == "生态信用合计"


def test_every_stored_style_loads_in_qgis(qgis_result):
    _, rep, _ = qgis_result
    sites = rep["layers"]["sites"]
    assert sites["styles_in_db"] == 20
    for name, ok, renderer in sites["styles_loading"]:
        assert ok, name
        assert renderer == ("graduatedSymbol" if name == "生态信用（分级）" else "categorizedSymbol"), name


def test_graduated_classes_hold_every_site(qgis_result):
    run, rep, _ = qgis_result
    ranges = rep["layers"]["sites"]["ranges"]
    from pipeline.report.model import site_layer
    for v in site_layer(run)["credit_total"]:
        hits = [r for i, r in enumerate(ranges) if r[0] < v <= r[1] or (i == 0 and v == r[0])]
        assert len(hits) == 1, v


def test_attribute_tables_visible_in_qgis(qgis_result):
    run, rep, _ = qgis_result
    assert rep["layers"]["credits"]["features"] == len(run.credits)
    assert rep["layers"]["ledger"]["features"] == 3
    assert rep["layers"]["site_scores"]["features"] == len(run.site_scores)


def test_rasters_styled(qgis_result):
    _, rep, _ = qgis_result
    assert rep["rasters"]["canonical_lc2023.tif"] == {"valid": True, "renderer": "paletted"}
    assert rep["rasters"]["upstream_area_km2.tif"] == {"valid": True, "renderer": "singlebandpseudocolor"}
    assert rep["rasters"]["canonical_no_table.tif"] == {"valid": True, "renderer": "paletted"}


def test_rendered_map_is_not_blank(qgis_result):
    _, _, png = qgis_result
    img = mpimg.imread(png)
    rgb = (img[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    colours = np.unique(rgb, axis=0)
    assert len(colours) > 20
    non_white = (rgb.min(axis=1) < 245).mean()
    assert non_white > 0.5  # the land-cover raster fills the basin
    shutil.copy(png, png.parent / "qgis_map_checked.png")
