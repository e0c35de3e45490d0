"""The strip-wise DEM generator of the hydrology benchmark (bench/hydrology.py)."""

from __future__ import annotations

import numpy as np
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.hydrology import STRIP_ROWS, strip_dem, write_dem


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 5000), st.integers(0, 5000), st.integers(1, 40), st.integers(1, 40),
       st.integers(0, 10))
def test_strip_dem_is_a_pure_function_of_row_col_seed(r0, c0, nr, nc, dr):
    # any window equals the same cells cut from a larger window
    big = strip_dem(r0, nr + dr, c0, nc + dr, seed=7)
    small = strip_dem(r0 + dr, nr, c0 + dr, nc, seed=7)
    assert np.array_equal(big[dr:dr + nr, dr:dr + nc], small)
    assert big.dtype == np.float32
    # theoretical bounds, centimetre values
    assert np.all((big >= 0) & (big <= 1500))
    assert np.allclose(np.round(big.astype(np.float64) * 100), big.astype(np.float64) * 100,
                       atol=1e-2)


def test_strip_dem_seed_changes_terrain_and_has_ties():
    a = strip_dem(0, 64, 0, 64, seed=1)
    b = strip_dem(0, 64, 0, 64, seed=2)
    assert not np.array_equal(a, b)
    # cm rounding makes equal neighbours (ties/flats) on gentle slopes
    assert np.count_nonzero(a[:, 1:] == a[:, :-1]) > 0


def test_write_dem_strips_equals_the_function(tmp_path):
    n = (STRIP_ROWS + 37) ** 2           # more than one strip, last one partial
    path = write_dem(tmp_path / "dem.tif", n, "strips")
    with rasterio.open(path) as ds:
        z = ds.read(1)
        assert ds.crs.to_epsg() == 32650 and ds.nodata == -9999.0
    side = STRIP_ROWS + 37
    assert z.shape == (side, side)
    assert np.array_equal(z, strip_dem(0, side, 0, side))
