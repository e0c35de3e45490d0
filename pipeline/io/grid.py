"""The one target grid of a basin: CRS, transform, shape and cell size."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from affine import Affine
from pyproj import CRS


@dataclass(frozen=True)
class Grid:
    crs: CRS
    transform: Affine
    height: int
    width: int

    # -- construction ----------------------------------------------------------
    @classmethod
    def from_bounds(cls, crs: CRS | str, bounds: tuple[float, float, float, float],
                    resolution: float, margin_cells: int = 0) -> "Grid":
        """Snap bounds outward to multiples of `resolution` (plus a margin of cells)."""
        crs = CRS.from_user_input(crs)
        left, bottom, right, top = bounds
        left = math.floor(left / resolution - margin_cells) * resolution
        bottom = math.floor(bottom / resolution - margin_cells) * resolution
        right = math.ceil(right / resolution + margin_cells) * resolution
        top = math.ceil(top / resolution + margin_cells) * resolution
        width = int(round((right - left) / resolution))
        height = int(round((top - bottom) / resolution))
        return cls(crs, Affine(resolution, 0.0, left, 0.0, -resolution, top), height, width)

    # -- properties ------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def res(self) -> float:
        return float(self.transform.a)

    @property
    def cell_area_m2(self) -> float:
        return abs(self.transform.a * self.transform.e)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        t = self.transform
        return (t.c, t.f + t.e * self.height, t.c + t.a * self.width, t.f)

    @property
    def size(self) -> int:
        return self.height * self.width

    def x_coords(self) -> np.ndarray:
        t = self.transform
        return t.c + t.a * (np.arange(self.width) + 0.5)

    def y_coords(self) -> np.ndarray:
        t = self.transform
        return t.f + t.e * (np.arange(self.height) + 0.5)

    def rowcol(self, x: float, y: float) -> tuple[int, int]:
        col, row = ~self.transform @ (x, y)
        return int(math.floor(row)), int(math.floor(col))

    def xy(self, row: int, col: int) -> tuple[float, float]:
        return self.transform @ (col + 0.5, row + 0.5)

    def describe(self) -> dict:
        return {"crs": self.crs.to_string(), "transform": list(self.transform)[:6],
                "height": self.height, "width": self.width, "resolution_m": self.res}
