"""Input checks read each raster once (pipeline.io.ingest), and within a reprocessing pass
once per file (pipeline.io.scans.scan_memo) while the file is unchanged."""

from __future__ import annotations

import os

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from pipeline.errors import InputDataError
from pipeline.io import ingest
from pipeline.io.scans import scan_memo


def _dem(path, values=None, nodata=-9999.0):
    rng = np.random.default_rng(3)
    a = values if values is not None else (100 + rng.random((300, 260)) * 50).astype("float32")
    with rasterio.open(path, "w", driver="GTiff", width=a.shape[1], height=a.shape[0], count=1,
                       dtype=a.dtype, crs="EPSG:32650", transform=from_origin(500000, 4400000, 30, 30),
                       nodata=nodata, tiled=True, blockxsize=64, blockysize=64, compress="deflate") as dst:
        dst.write(a, 1)
    return path


@pytest.fixture
def reads(monkeypatch):
    """Counts the full readings of a DEM and of a class raster."""
    n = {"elevations": 0, "codes": 0}
    stats, codes = ingest._elevation_stats, ingest._codes

    def counted_stats(*a):
        n["elevations"] += 1
        return stats(*a)

    def counted_codes(*a):
        n["codes"] += 1
        return codes(*a)

    monkeypatch.setattr(ingest, "_elevation_stats", counted_stats)
    monkeypatch.setattr(ingest, "_codes", counted_codes)
    return n


def test_dem_statistics_by_hand(tmp_path):
    a = np.full((130, 70), 500.0, np.float32)
    a[0, 0], a[1, 1], a[2, 2] = -9999.0, np.nan, 1200.0
    a[129, 69] = 12.5
    valid, nans, suspects, vmin, vmax = ingest._elevation_stats(_dem(tmp_path / "d.tif", a), "dem", -9999.0)
    assert (valid, nans, suspects, vmin, vmax) == (130 * 70 - 2, 1, {}, 12.5, 1200.0)
    valid, nans, suspects, _, _ = ingest._elevation_stats(tmp_path / "d.tif", "dem", None)
    assert suspects == {-9999.0: 1} and valid == 130 * 70 - 1


def test_each_check_reads_outside_a_pass(tmp_path, reads):
    dem = _dem(tmp_path / "dem.tif")
    for _ in range(2):
        ingest._check_elevations(dem, "dem", None, [])
    assert reads["elevations"] == 2


def test_a_pass_reads_an_unchanged_file_once_even_renamed(tmp_path, reads):
    dem = _dem(tmp_path / "dem.tif", nodata=None)
    with scan_memo():
        notes1, notes2 = [], []
        ingest._check_elevations(dem, "dem", None, notes1)
        moved = tmp_path / "store" / "dem.tif"
        moved.parent.mkdir()
        os.replace(dem, moved)                          # what registering into the store does
        ingest._check_elevations(moved, "dem", None, notes2)
        assert reads["elevations"] == 1 and notes1 == notes2
        # another nodata (from the configuration: the file declares none) is another reading
        ingest._check_elevations(moved, "dem", 100.0, [])
        assert reads["elevations"] == 2
    ingest._check_elevations(moved, "dem", None, [])
    assert reads["elevations"] == 3                     # the pass is over


def test_a_file_changed_during_a_pass_is_read_again(tmp_path, reads):
    dem = _dem(tmp_path / "dem.tif")
    with scan_memo():
        ingest._check_elevations(dem, "dem", None, [])
        a = np.full((300, 260), 100.0, np.float32)
        a[5, 5] = -9999.0
        dem.unlink()
        _dem(dem, a, nodata=None)                       # new content, undeclared sentinel
        with pytest.raises(InputDataError, match="-9999"):
            ingest._check_elevations(dem, "dem", None, [])
    assert reads["elevations"] == 2


def test_an_error_is_not_kept(tmp_path, reads):
    dem = _dem(tmp_path / "dem.tif")
    data = dem.read_bytes()
    dem.write_bytes(data[: int(len(data) * 0.7)])        # header intact, last blocks missing
    with scan_memo():
        for _ in range(2):
            with pytest.raises(InputDataError, match="truncated or corrupt") as exc:
                ingest._check_elevations(dem, "dem", None, [])
            assert "dem.tif" in exc.value.render()
    assert reads["elevations"] == 2


def test_land_cover_codes_once_per_pass(tmp_path, reads):
    from types import SimpleNamespace

    codes = np.resize(np.array([1, 2, 3, 4, 5, 7, 8, 9], np.uint8), (200, 150))
    lc = tmp_path / "lc.tif"
    with rasterio.open(lc, "w", driver="GTiff", width=150, height=200, count=1, dtype="uint8",
                       crs="EPSG:32650", transform=from_origin(500000, 4400000, 30, 30), nodata=0,
                       tiled=True, blockxsize=64, blockysize=64) as dst:
        dst.write(codes, 1)
    v = SimpleNamespace(name="y2024", path=lc, scheme="clcd")
    with scan_memo():
        for _ in range(3):
            ingest._check_landcover(v, None)
    assert reads["codes"] == 1
    assert ingest._codes(lc, "lc") == frozenset({1, 2, 3, 4, 5, 7, 8, 9})
