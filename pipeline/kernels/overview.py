"""Overview (pyramid) kernel: the 2 x 2 mean of the valid cells, GDAL's AVERAGE at factor 2.

Used by ``pipeline.io.rasters.OverviewLevels`` to build a COG's overview levels while
its rows are written (each level from the previous one, as GDAL does). Never import
xarray or dask here.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def average_2x2(a, nodata, out):
    """``out[i, j]`` = mean of the valid cells of ``a[2i:2i+2, 2j:2j+2]`` (an odd last row or
    column: of the cells there are), or ``nodata`` where none is valid.

    Valid: not NaN and not ``nodata``. The sum is in float64 in row-major order
    (GDAL's order), divided by the count and rounded once to ``out``'s dtype.
    ``out`` has shape (ceil(h / 2), ceil(w / 2)).
    """
    h, w = a.shape
    for i in range(out.shape[0]):
        r1 = min(2 * i + 2, h)
        for j in range(out.shape[1]):
            c1 = min(2 * j + 2, w)
            s = 0.0
            n = 0
            for r in range(2 * i, r1):
                for c in range(2 * j, c1):
                    v = a[r, c]
                    if not np.isnan(v) and v != nodata:
                        s += v
                        n += 1
            out[i, j] = s / n if n > 0 else nodata
