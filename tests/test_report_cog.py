"""COG writer: valid COG layout, overviews, nodata, colour table, sidecar, determinism."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import InputDataError
from pipeline.report.cog import write_cog
from pipeline.report.styles import raster_pseudocolor_qml

T = Affine(30.0, 0.0, 440000.0, 0.0, -30.0, 4420000.0)
CRS = "EPSG:32650"


def _md5(p):
    return hashlib.md5(p.read_bytes()).hexdigest()


def test_class_raster_is_cog_with_colour_table_and_overviews(tmp_path):
    a = (np.arange(300 * 400).reshape(300, 400) % 9 + 1).astype("uint8")
    a[:7] = 255
    p = write_cog(a, T, CRS, 255, tmp_path / "lc.tif", colormap={1: (0, 100, 0), 7: (200, 40, 40, 255)})
    with rasterio.open(p) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ds.compression.value == "DEFLATE"
        assert ds.nodata == 255
        assert ds.overviews(1) == [2, 4]   # 300x400 with 128-px blocks -> 150x200, 75x100
        assert ds.colormap(1)[1] == (0, 100, 0, 255) and ds.colormap(1)[7] == (200, 40, 40, 255)
        assert ds.crs.to_epsg() == 32650 and ds.transform == T
        np.testing.assert_array_equal(ds.read(1), a)
        # nearest overview keeps class codes: no value that is not in the input
        ov = ds.read(1, out_shape=(150, 200))
        assert set(np.unique(ov)) <= set(np.unique(a))
        assert "TIFFTAG_DATETIME" not in ds.tags()


def test_float_overview_is_block_average(tmp_path):
    # AVERAGE resampling on an exact 2x reduction = mean of each 2x2 block (independent numpy check)
    rng = np.random.default_rng(1)
    a = rng.random((256, 512)).astype("float32")
    p = write_cog(a, T, CRS, np.nan, tmp_path / "f.tif")
    expect = a.reshape(128, 2, 256, 2).mean(axis=(1, 3))
    with rasterio.open(p) as ds:
        assert 2 in ds.overviews(1)
        ov = ds.read(1, out_shape=(128, 256))
        assert np.isnan(ds.nodata)
    np.testing.assert_allclose(ov, expect, rtol=1e-6)


def test_same_input_gives_identical_bytes(tmp_path):
    a = np.linspace(0, 1, 200 * 260, dtype="float32").reshape(200, 260)
    a[5:9, 5:9] = np.nan
    p1 = write_cog(a, T, CRS, np.nan, tmp_path / "a.tif")
    p2 = write_cog(a, T, CRS, np.nan, tmp_path / "b.tif")
    assert _md5(p1) == _md5(p2)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.tif", "b.tif"]  # no temp files, no .aux.xml


def test_qml_sidecar_written_and_parses(tmp_path):
    a = np.ones((64, 64), dtype="float32")
    qml = raster_pseudocolor_qml(0.01, 100.0, label="km²", log_scale=True)
    write_cog(a, T, CRS, np.nan, tmp_path / "ua.tif", qml=qml)
    root = ET.parse(tmp_path / "ua.qml").getroot()
    rr = root.find("pipe/rasterrenderer")
    assert rr.get("type") == "singlebandpseudocolor"
    vals = [float(i.get("value")) for i in rr.iter("item")]
    # log spacing over 4 decades with 5 colours: 0.01, 0.1, 1, 10, 100
    np.testing.assert_allclose(vals, [0.01, 0.1, 1.0, 10.0, 100.0], rtol=1e-9)


@settings(max_examples=12, deadline=None)
@given(h=st.integers(1, 300), w=st.integers(1, 300), dtype=st.sampled_from(["uint8", "int16", "float32", "float64"]),
       seed=st.integers(0, 2**16))
def test_round_trip_any_shape(tmp_path_factory, h, w, dtype, seed):
    rng = np.random.default_rng(seed)
    a = (rng.random((h, w)) * 200).astype(dtype)
    nodata = np.nan if dtype.startswith("float") else 255
    p = write_cog(a, T, CRS, nodata, tmp_path_factory.mktemp("rt") / "x.tif")
    with rasterio.open(p) as ds:
        np.testing.assert_array_equal(ds.read(1), a)
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        if max(h, w) > 128:
            assert ds.overviews(1), "rasters larger than one 128-px block get at least one overview"


def test_bad_inputs_are_typed_errors(tmp_path):
    with pytest.raises(InputDataError, match="2-D"):
        write_cog(np.zeros((2, 3, 3)), T, CRS, 0, tmp_path / "x.tif")
    with pytest.raises(InputDataError, match="colour table"):
        write_cog(np.zeros((3, 3), "float32"), T, CRS, np.nan, tmp_path / "x.tif", colormap={1: (1, 2, 3)})
    with pytest.raises(InputDataError, match="no nodata"):
        write_cog(np.zeros((3, 3), "float32"), T, CRS, None, tmp_path / "x.tif")
    assert not any(tmp_path.iterdir())


def test_raster_styles_for_rasters_written_elsewhere(tmp_path):
    from pipeline.report.cog import raster_style_qml, write_raster_styles
    lc = (np.arange(100 * 100).reshape(100, 100) % 9 + 1).astype("uint8")
    write_cog(lc, T, CRS, 255, tmp_path / "canonical.tif")                         # no colour table
    write_cog(lc, T, CRS, 255, tmp_path / "lc_table.tif", colormap={1: (0, 100, 0)})
    write_cog(np.full((100, 100), 4, "uint8"), T, CRS, 255, tmp_path / "d8.tif")
    # 0, 1, ..., 9999 / 100 -> 2nd and 98th percentiles are 1.9998 and 97.9902 (numpy linear percentiles)
    ramp = (np.arange(10000, dtype="float32") / 100).reshape(100, 100)
    write_cog(ramp, T, CRS, np.nan, tmp_path / "share.tif")
    written = write_raster_styles({"y2023/canonical": tmp_path / "canonical.tif",
                                   "y2023/canonical_table": tmp_path / "lc_table.tif",
                                   "d8": tmp_path / "d8.tif", "share": tmp_path / "share.tif"})
    assert sorted(p.name for p in written) == ["canonical.qml", "share.qml"]
    pal = ET.parse(tmp_path / "canonical.qml").getroot().find("pipe/rasterrenderer")
    assert pal.get("type") == "paletted"
    entries = [(e.get("value"), e.get("color"), e.get("label")) for e in pal.iter("paletteEntry")]
    assert entries[0] == ("1", "#006400", "林地 forest") and len(entries) == 9
    items = [float(i.get("value")) for i in ET.parse(tmp_path / "share.qml").getroot().iter("item")]
    assert items[0] == pytest.approx(np.percentile(ramp, 2)) and items[-1] == pytest.approx(np.percentile(ramp, 98))
    assert raster_style_qml("d8", tmp_path / "d8.tif") is None
    # only the raster's own name counts: a vintage called "canonical_2020" styles its D8 as a D8
    assert raster_style_qml("canonical_2020/d8", tmp_path / "d8.tif") is None


def test_raster_styles_keep_the_sidecars_already_there(tmp_path):
    """keep=True (pipeline.deliver): a sidecar restored from the step cache with its raster
    is left as it is and counted; a missing one is written; keep=False rewrites both."""
    from pipeline.report.cog import write_raster_styles
    ramp = (np.arange(10000, dtype="float32") / 100).reshape(100, 100)
    for name in ("a", "b"):
        write_cog(ramp, T, CRS, np.nan, tmp_path / f"{name}.tif")
    (tmp_path / "a.qml").write_text("<!-- from the cache -->", encoding="utf-8")
    rasters = {"v/a": tmp_path / "a.tif", "v/b": tmp_path / "b.tif"}
    assert sorted(p.name for p in write_raster_styles(rasters, keep=True)) == ["a.qml", "b.qml"]
    assert (tmp_path / "a.qml").read_text(encoding="utf-8") == "<!-- from the cache -->"
    assert (tmp_path / "b.qml").read_text(encoding="utf-8").startswith("<!DOCTYPE qgis")
    write_raster_styles(rasters)
    assert (tmp_path / "a.qml").read_bytes() == (tmp_path / "b.qml").read_bytes()
