"""The 23 communes of Dijon métropole and which one a point lies in.

Outlines: IGN – Admin Express COG 2018, via france-geojson (Licence Ouverte / Etalab), shipped in
``data/`` with their attribution. A point on a shared border belongs to the first commune (in INSEE
order) whose outline covers it, so the answer is stable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

ATTRIBUTION = "Commune outlines: IGN – Admin Express COG 2018, via france-geojson (Licence Ouverte / Etalab)"


@dataclass(frozen=True)
class Commune:
    insee: str
    name: str
    outline: BaseGeometry

    def to_feature(self) -> dict[str, Any]:
        return {"type": "Feature", "id": self.insee, "properties": {"insee": self.insee, "name": self.name},
                "geometry": shapely.geometry.mapping(self.outline)}


class Communes:
    """Point-in-polygon over the communes' outlines, vectorised for bulk imports."""

    def __init__(self, communes: list[Commune]) -> None:
        self.communes = sorted(communes, key=lambda c: c.insee)
        self.by_insee = {c.insee: c for c in self.communes}
        for commune in self.communes:
            shapely.prepare(commune.outline)
        self.union = shapely.union_all([c.outline for c in self.communes])
        self.bounds = self.union.bounds  # (min lon, min lat, max lon, max lat)
        self._boxes = [(c.outline.bounds, c) for c in self.communes]

    def locate_many(self, lons: np.ndarray, lats: np.ndarray) -> list[str | None]:
        """INSEE code of the commune containing each point, None when outside the metropole."""
        lons = np.asarray(lons, dtype=float)
        lats = np.asarray(lats, dtype=float)
        found: list[str | None] = [None] * len(lons)
        remaining = np.ones(len(lons), dtype=bool)
        for commune in self.communes:
            if not remaining.any():
                break
            inside = shapely.intersects_xy(commune.outline, lons, lats) & remaining
            for index in np.flatnonzero(inside):
                found[index] = commune.insee
            remaining &= ~inside
        return found

    def locate(self, lon: float, lat: float) -> str | None:
        """One point (a citizen's request, a work order): the outlines' boxes first, in plain Python, then
        the prepared outline of the few communes whose box holds it; ten times cheaper than arrays of one."""
        for (min_lon, min_lat, max_lon, max_lat), commune in self._boxes:
            if min_lon <= lon <= max_lon and min_lat <= lat <= max_lat and \
                    shapely.intersects_xy(commune.outline, lon, lat):
                return commune.insee
        return None

    def name(self, insee: str) -> str | None:
        commune = self.by_insee.get(insee)
        return commune.name if commune else None

    def feature_collection(self) -> dict[str, Any]:
        return {"type": "FeatureCollection", "attribution": ATTRIBUTION,
                "features": [c.to_feature() for c in self.communes]}


@lru_cache(maxsize=1)
def metropole() -> Communes:
    """The communes shipped with citypilot (Dijon métropole)."""
    text = resources.files("citypilot.geo").joinpath("data/dijon-metropole-communes.geojson").read_text("utf-8")
    document = json.loads(text)
    return Communes([
        Commune(str(f["properties"]["insee"]), str(f["properties"]["name"]), shape(f["geometry"]))
        for f in document["features"]
    ])
