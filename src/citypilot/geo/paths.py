"""Points along a path: which lie within a distance of a polyline, and how far along it they come.

An emergency vehicle's route through the city, a bus line: both are polylines in lon/lat. Distances are
taken in Lambert-93 metres (``projection``), point to segment, so a junction between two of the path's
vertices is as near as it looks on the map.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import shapely

from .projection import to_lambert93

MAX_PATH_POINTS = 1_000


def _line(path: Sequence[Sequence[float]]) -> shapely.LineString:
    coords = np.asarray(path, dtype=float)
    x, y = to_lambert93(coords[:, 0], coords[:, 1])
    return shapely.LineString(np.column_stack([x, y]))


def distances_m(path: Sequence[Sequence[float]], lons: Sequence[float], lats: Sequence[float]) -> np.ndarray:
    """The distance in metres from each point to the path (at least two lon/lat vertices)."""
    x, y = to_lambert93(np.asarray(lons, dtype=float), np.asarray(lats, dtype=float))
    return np.asarray(shapely.distance(_line(path), shapely.points(x, y)), dtype=float)


def along(path: Sequence[Sequence[float]], lons: Sequence[float], lats: Sequence[float],
          within_m: float) -> list[tuple[int, float]]:
    """(index, metres along the path) of the points within ``within_m`` of it, in the order the path
    meets them: a route's junctions from the first to the last."""
    line = _line(path)
    x, y = to_lambert93(np.asarray(lons, dtype=float), np.asarray(lats, dtype=float))
    points = shapely.points(x, y)
    near = np.flatnonzero(np.asarray(shapely.distance(line, points)) <= within_m)
    positions = np.asarray(shapely.line_locate_point(line, points[near])) if len(near) else np.array([])
    return sorted(((int(i), round(float(p), 1)) for i, p in zip(near, positions)), key=lambda t: t[1])


def check_path(path: object) -> list[list[float]]:
    """The path as [[lon, lat], ...], or ValueError saying what is wrong with it."""
    if not isinstance(path, (list, tuple)) or not 2 <= len(path) <= MAX_PATH_POINTS:
        raise ValueError(f"a path is a list of 2 to {MAX_PATH_POINTS} [lon, lat] points")
    out = []
    for k, point in enumerate(path):
        if (not isinstance(point, (list, tuple)) or len(point) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in point)):
            raise ValueError(f"point {k}: a [lon, lat] pair of numbers")
        lon, lat = float(point[0]), float(point[1])
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise ValueError(f"point {k}: [{lon}, {lat}] is not a longitude and latitude in degrees")
        out.append([lon, lat])
    if all(p == out[0] for p in out):
        raise ValueError("a path needs two distinct points")
    return out
