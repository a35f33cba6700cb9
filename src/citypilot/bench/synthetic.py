"""A synthetic, seeded registry for benchmarks and tests: lights under cabinets, spread over the communes.

Not the virtual city (that is ``citypilot sim``): just enough realistic rows, placed inside the real
commune outlines, to measure the registry.
"""

from __future__ import annotations

import csv
import io

import numpy as np

from citypilot.geo.communes import Communes


def random_points(communes: Communes, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` points inside the metropole, denser around Dijon's centre."""
    lons: list[np.ndarray] = []
    lats: list[np.ndarray] = []
    min_lon, min_lat, max_lon, max_lat = communes.bounds
    got = 0
    while got < count:
        n = (count - got) * 3 + 100
        centre = rng.random(n) < 0.5
        # Rounded as the CSV writes them, before the inside test: a point on a border must stay inside.
        lon = np.round(np.where(centre, rng.normal(5.0415, 0.02, n), rng.uniform(min_lon, max_lon, n)), 6)
        lat = np.round(np.where(centre, rng.normal(47.3220, 0.012, n), rng.uniform(min_lat, max_lat, n)), 6)
        found = np.array([c is not None for c in communes.locate_many(lon, lat)])
        lons.append(lon[found])
        lats.append(lat[found])
        got += int(found.sum())
    return np.concatenate(lons)[:count], np.concatenate(lats)[:count]


def registry_csv(communes: Communes, count: int, seed: int = 1, lights_per_cabinet: int = 31) -> bytes:
    """CSV of ``count`` assets: lighting cabinets and the street lights they report for."""
    rng = np.random.default_rng(seed)
    lons, lats = random_points(communes, count, rng)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "kind", "name", "lat", "lon", "address", "manufacturer", "model", "installed_on", "status",
                     "reported_by", "attr.lamp_power_w", "attr.street_type", "attr.circuits"])
    cabinet = None
    street_types = ["residential", "commercial", "bypass", "pedestrian"]
    for i in range(count):
        lat, lon = f"{lats[i]:.6f}", f"{lons[i]:.6f}"
        if i % (lights_per_cabinet + 1) == 0:
            cabinet = f"CAB-{i // (lights_per_cabinet + 1):05d}"
            writer.writerow([cabinet, "lighting_cabinet", f"Armoire {cabinet}", lat, lon, "", "Citelum", "AE-200",
                             "2018-06-01", "in_service", "", "", "", int(rng.integers(2, 9))])
        else:
            writer.writerow([f"SL-{i:06d}", "street_light", f"Point lumineux {i}", lat, lon, f"{i % 200 + 1} rue de test",
                             "Comatelec", "Ampera", "2018-10-02", "in_service", cabinet, int(rng.choice([25, 39, 52, 70])),
                             street_types[i % 4], ""])
    return out.getvalue().encode()
