"""WGS84 (lon/lat) to Lambert-93 (EPSG:2154, metres), the projection of French public data.

Distances, radius and nearest-neighbour queries run in PostgreSQL on a core ``point`` column in metres
(GiST index), so no PostGIS is needed; this module is the one place where the projection happens.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from pyproj import Transformer


@lru_cache(maxsize=1)
def _to_l93() -> Transformer:
    return Transformer.from_crs("EPSG:4326", "EPSG:2154", always_xy=True)


def to_lambert93(lons: np.ndarray, lats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project arrays of lon/lat (degrees) to Lambert-93 x/y (metres)."""
    x, y = _to_l93().transform(np.asarray(lons, dtype=float), np.asarray(lats, dtype=float))
    return np.asarray(x), np.asarray(y)


def point_to_lambert93(lon: float, lat: float) -> tuple[float, float]:
    x, y = _to_l93().transform(lon, lat)
    return float(x), float(y)
