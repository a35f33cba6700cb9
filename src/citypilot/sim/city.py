"""The simulated metropole's equipment: what there is and where, generated from a seed.

Counts are Dijon métropole's (``DIJON``), multiplied by ``scale``. Assets lie inside the real outlines of
the 23 communes, denser in Dijon's centre. Street lights stand in rows along streets that start at
their lighting cabinet, about 30 m apart; buses run on lines from one outer commune through the
centre to another. There is no street map here (no data may be downloaded): the streets are drawn,
not surveyed, but they look and behave like streets on the map.

The same seed and scale always give the same city, so that the registry written for an import and the
devices the simulator runs match exactly.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from citypilot.geo.communes import Communes, metropole

CENTRE = (5.0415, 47.3220)  # place de la Libération, Dijon (lon, lat)
ADAPTIVE_STREETS = ("bypass", "commercial")  # streets with a traffic counter: their lights dim with the traffic
M_PER_DEG_LAT = 111_320.0
M_PER_DEG_LON = M_PER_DEG_LAT * math.cos(math.radians(CENTRE[1]))
MAX_SCALE = 50


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Distance in metres between two (lon, lat) points of the metropole (flat at this scale)."""
    return math.hypot((b[0] - a[0]) * M_PER_DEG_LON, (b[1] - a[1]) * M_PER_DEG_LAT)


@dataclass(frozen=True)
class Counts:
    """How much of each kind of equipment the city has at scale 1."""

    street_lights: int = 34_000
    lighting_cabinets: int = 1_100
    junctions: int = 113
    bus_lines: int = 12
    buses: int = 180
    service_vehicles: int = 205
    cameras: int = 269
    bollard_sites: int = 26
    information_panels: int = 25
    buildings: int = 180
    parking_sensors: int = 1_000
    air_quality_stations: int = 20

    def times(self, scale: int) -> "Counts":
        return Counts(**{name: value * scale for name, value in self.__dict__.items()})


DIJON = Counts()

# Service vehicles per service at scale 1 (205 in all), with the vehicle types each one drives.
FLEET = {
    "cleanliness": (60, ["sweeper", "van", "utility"]),
    "roads": (40, ["truck", "van", "utility"]),
    "green_spaces": (40, ["utility", "van", "truck"]),
    "lighting": (15, ["bucket_truck", "van"]),
    "snow": (20, ["gritter", "truck"]),
    "police": (30, ["car", "van"]),
}

STREET_NAMES = [
    "rue de la Liberté", "rue Victor Hugo", "avenue Jean Jaurès", "boulevard de Strasbourg", "rue Jean Moulin",
    "rue Pasteur", "avenue du Drapeau", "rue de la République", "boulevard Carnot", "rue Chabot-Charny",
    "avenue Foch", "rue des Godrans", "rue Monge", "rue d'Auxonne", "avenue de Langres", "rue de Mirande",
    "boulevard de la Marne", "rue Charles Dumont", "avenue Victor Hugo", "rue de la Préfecture",
    "rue Berbisey", "rue Jeannin", "avenue Aristide Briand", "rue des Perrières", "rue de Talant",
    "chemin des Vignes", "rue du Bourg", "rue Devosge", "boulevard Clemenceau", "rue Marceau",
    "rue des Tanneries", "allée des Tilleuls", "rue du Stade", "rue de l'Église", "rue des Écoles",
    "avenue de la Gare", "rue du Moulin", "impasse des Lilas", "rue Paul Bert", "rue de Longvic",
]
BUILDING_TYPES = ["Mairie", "École élémentaire", "École maternelle", "Gymnase", "Médiathèque", "Piscine",
                  "Centre social", "Salle des fêtes", "Crèche", "Services techniques", "Musée", "Conservatoire"]
BUS_LINE_NAMES = ["L3", "L4", "L5", "L6", "L7", "B10", "B11", "B12", "B13", "B14", "B15", "B16"]


@dataclass
class SimAsset:
    """One asset as the registry knows it (the simulator's devices are these)."""

    id: str
    kind: str
    name: str
    lon: float
    lat: float
    address: str = ""
    reported_by: str | None = None
    service: str | None = None
    manufacturer: str = ""
    model: str = ""
    installed_on: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)

    def registry_row(self) -> dict[str, Any]:
        """The sheet as the registry's CSV/GeoJSON writers take it (the commune is derived on import)."""
        return {"id": self.id, "kind": self.kind, "name": self.name, "lat": round(self.lat, 6),
                "lon": round(self.lon, 6), "address": self.address or None, "service": self.service,
                "manufacturer": self.manufacturer or None, "model": self.model or None,
                "installed_on": self.installed_on or None, "status": "in_service", "reported_by": self.reported_by,
                "attributes": self.attributes}


@dataclass
class Route:
    """A polyline in lon/lat (a bus line), walked by distance."""

    name: str
    points: np.ndarray  # shape (n, 2): lon, lat
    cumulative_m: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        d = np.diff(self.points, axis=0) * (M_PER_DEG_LON, M_PER_DEG_LAT)
        self.cumulative_m = np.concatenate([[0.0], np.cumsum(np.hypot(d[:, 0], d[:, 1]))])

    @property
    def length_m(self) -> float:
        return float(self.cumulative_m[-1])

    def at(self, distance_m: float) -> tuple[float, float, float]:
        """(lon, lat, heading in degrees) at ``distance_m`` along the line, going back and forth."""
        length = self.length_m
        d = distance_m % (2 * length)
        backwards = d > length
        if backwards:
            d = 2 * length - d
        i = int(np.searchsorted(self.cumulative_m, d, side="right")) - 1
        i = min(max(i, 0), len(self.points) - 2)
        seg = self.cumulative_m[i + 1] - self.cumulative_m[i]
        f = 0.0 if seg == 0 else (d - self.cumulative_m[i]) / seg
        (lon0, lat0), (lon1, lat1) = self.points[i], self.points[i + 1]
        lon, lat = lon0 + (lon1 - lon0) * f, lat0 + (lat1 - lat0) * f
        dx, dy = (lon1 - lon0) * M_PER_DEG_LON, (lat1 - lat0) * M_PER_DEG_LAT
        if backwards:
            dx, dy = -dx, -dy
        heading = (math.degrees(math.atan2(dx, dy)) + 360.0) % 360.0
        return float(lon), float(lat), round(heading, 1)


@dataclass
class City:
    seed: int
    scale: int
    assets: list[SimAsset]
    lines: list[Route]
    lights_of: dict[str, list[str]]  # cabinet id -> the lights it reports for

    def of_kind(self, kind: str) -> list[SimAsset]:
        return [a for a in self.assets if a.kind == kind]

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for asset in self.assets:
            counts[asset.kind] = counts.get(asset.kind, 0) + 1
        return counts

    def registry_rows(self) -> Iterable[dict[str, Any]]:
        return (asset.registry_row() for asset in self.assets)


class _Placer:
    """Random points inside the metropole, some share of them gathered around Dijon's centre."""

    def __init__(self, communes: Communes, rng: np.random.Generator) -> None:
        self.communes = communes
        self.rng = rng

    def inside(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        return np.array([c is not None for c in self.communes.locate_many(np.round(lon, 6), np.round(lat, 6))], dtype=bool)

    def points(self, count: int, centre_share: float, spread_m: float = 1800.0) -> np.ndarray:
        min_lon, min_lat, max_lon, max_lat = self.communes.bounds
        found: list[np.ndarray] = []
        got = 0
        while got < count:
            n = (count - got) * 3 + 50
            central = self.rng.random(n) < centre_share
            lon = np.where(central, self.rng.normal(CENTRE[0], spread_m / M_PER_DEG_LON, n), self.rng.uniform(min_lon, max_lon, n))
            lat = np.where(central, self.rng.normal(CENTRE[1], spread_m / M_PER_DEG_LAT, n), self.rng.uniform(min_lat, max_lat, n))
            keep = self.inside(lon, lat)
            found.append(np.column_stack([lon[keep], lat[keep]]))
            got += int(keep.sum())
        return np.round(np.concatenate(found)[:count], 6)

    def near(self, lon: float, lat: float, radius_m: float) -> tuple[float, float]:
        for _ in range(50):
            a, r = self.rng.uniform(0, 2 * math.pi), radius_m * math.sqrt(self.rng.random())
            x, y = lon + r * math.cos(a) / M_PER_DEG_LON, lat + r * math.sin(a) / M_PER_DEG_LAT
            if self.inside(np.array([x]), np.array([y]))[0]:
                return round(x, 6), round(y, 6)
        return lon, lat


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def _street(rng: np.random.Generator) -> str:
    return str(rng.choice(STREET_NAMES))


def _commune_name(communes: Communes, lon: float, lat: float) -> str:
    insee = communes.locate(round(lon, 6), round(lat, 6))
    return (communes.name(insee) if insee else None) or "Dijon"


def _lighting(city_assets: list[SimAsset], lights_of: dict[str, list[str]], counts: Counts, placer: _Placer,
              communes: Communes, rng: np.random.Generator) -> None:
    cabinets = placer.points(counts.lighting_cabinets, centre_share=0.45, spread_m=2200)
    # Lights per cabinet: 8 to 60, adjusted so that the city has exactly its number of lights.
    per = rng.integers(8, 55, len(cabinets)).astype(float)
    per = np.maximum(1, np.round(per * counts.street_lights / per.sum())).astype(int)
    per[-1] += counts.street_lights - int(per.sum())
    while per[-1] < 1:  # rounding took too many from the last cabinet: give it some back from the largest
        big = int(np.argmax(per[:-1]))
        per[big] -= 1
        per[-1] += 1
    light_no = 0
    for c, (clon, clat) in enumerate(cabinets):
        cab_id = f"CAB-{c + 1:05d}"
        commune = _commune_name(communes, clon, clat)
        city_assets.append(SimAsset(
            cab_id, "lighting_cabinet", f"Armoire {cab_id[4:]} {commune}", float(clon), float(clat),
            f"{_street(rng)}, {commune}", manufacturer="Citelum", model="AE-200", installed_on="2018-06-01",
            attributes={"circuits": int(rng.integers(2, 9)), "contracted_power_kva": float(rng.choice([12, 18, 24, 36])),
                        "energy_meter_id": f"PDL{rng.integers(10**11, 10**12)}"}))
        # Its lights stand along one to three streets leaving the cabinet, about 30 m apart, on
        # alternating sides; streets run on a rough grid in the centre and any way outside it.
        n = int(per[c])
        streets = int(min(3, max(1, n // 15)))
        sizes = np.diff(np.linspace(0, n, streets + 1).round().astype(int))
        base = rng.uniform(0, 90)
        lons, lats, street_of, numbers = [], [], [], []
        for s, size in enumerate(sizes):
            bearing = math.radians(base + 90 * s + rng.normal(0, 4))
            spacing = rng.uniform(26, 34)
            k = np.arange(1, size + 1)
            side = np.where(k % 2 == 0, 7.0, -7.0)
            x = k * spacing * math.sin(bearing) + side * math.cos(bearing)
            y = k * spacing * math.cos(bearing) - side * math.sin(bearing)
            if s % 2 == 1:
                x, y = -x, -y
            lons.append(clon + x / M_PER_DEG_LON)
            lats.append(clat + y / M_PER_DEG_LAT)
            street_of += [_street(rng)] * int(size)
            numbers += list(range(1, int(size) + 1))
        lon, lat = np.concatenate(lons), np.concatenate(lats)
        outside = ~placer.inside(lon, lat)
        if outside.any():  # a street running out of the metropole turns back inside it
            lon[outside] = clon - (lon[outside] - clon) * 0.5
            lat[outside] = clat - (lat[outside] - clat) * 0.5
            still = ~placer.inside(lon, lat)
            lon[still], lat[still] = clon, clat  # at the very border: on the cabinet's own spot, inside
        street_type = str(rng.choice(["residential", "residential", "commercial", "bypass", "pedestrian"]))
        power = {"residential": 39.0, "commercial": 52.0, "bypass": 70.0, "pedestrian": 25.0}[street_type]
        # One in twelve housing or footpath circuits outside Dijon runs along a green or blue belt (the
        # Ouche, the Suzon, the combes): chosen from the cabinet's id, not the random stream, so that the
        # rest of the city stays the same for a seed.
        corridor = (street_type in ("residential", "pedestrian") and commune != "Dijon"
                    and zlib.crc32(cab_id.encode()) % 12 == 0)
        ids = []
        for i in range(n):
            light_no += 1
            light_id = f"SL-{light_no:06d}"
            ids.append(light_id)
            city_assets.append(SimAsset(
                light_id, "street_light", _capitalised(f"{street_of[i]} {numbers[i]}"), round(float(lon[i]), 6),
                round(float(lat[i]), 6), f"{numbers[i]} {street_of[i]}, {commune}", reported_by=cab_id,
                manufacturer="Comatelec", model="Ampera", installed_on="2019-03-15",
                attributes={"lamp_power_w": power, "lamp_technology": "LED", "pre_led_power_w": power * 2.6,
                            "pole_height_m": 8.0 if street_type != "pedestrian" else 4.5, "street_type": street_type,
                            "safety_floor_pct": 10.0 if corridor else 30.0 if street_type != "bypass" else 50.0,
                            "presence_detection": street_type == "pedestrian",
                            "adaptive_dimming": street_type in ADAPTIVE_STREETS, "ecological_corridor": corridor}))
        lights_of[cab_id] = ids


def _bus_lines(counts: Counts, communes: Communes, placer: _Placer, rng: np.random.Generator) -> list[Route]:
    """Each line runs from an outer commune through Dijon's centre to another, with bends along the way."""
    outer = [c for c in communes.communes if c.name != "Dijon"]
    lines = []
    for i in range(counts.bus_lines):
        a, b = outer[(2 * i) % len(outer)], outer[(2 * i + 7) % len(outer)]
        start = a.outline.representative_point()
        end = b.outline.representative_point()
        hub = (CENTRE[0] + rng.normal(0, 0.004), CENTRE[1] + rng.normal(0, 0.003))
        points: list[tuple[float, float]] = []
        for (x0, y0), (x1, y1) in [((start.x, start.y), hub), (hub, (end.x, end.y))]:
            steps = 12
            for k in range(steps):
                f = k / steps
                x = x0 + (x1 - x0) * f + (rng.normal(0, 250) / M_PER_DEG_LON if 0 < k else 0)
                y = y0 + (y1 - y0) * f + (rng.normal(0, 250) / M_PER_DEG_LAT if 0 < k else 0)
                if not placer.inside(np.array([x]), np.array([y]))[0]:
                    x, y = x0 + (x1 - x0) * f, y0 + (y1 - y0) * f
                points.append((x, y))
        points.append((end.x, end.y))
        name = BUS_LINE_NAMES[i] if i < len(BUS_LINE_NAMES) else f"B{i + 5}"
        lines.append(Route(name, np.array(points)))
    return lines


def build_city(seed: int = 1, scale: int = 1, communes: Communes | None = None) -> City:
    """The simulated metropole at ``scale`` × Dijon's equipment, the same for the same seed."""
    if not 1 <= scale <= MAX_SCALE:
        raise ValueError(f"scale must be between 1 and {MAX_SCALE} (got {scale})")
    communes = communes or metropole()
    rng = np.random.default_rng(seed)
    placer = _Placer(communes, rng)
    counts = DIJON.times(scale)
    assets: list[SimAsset] = []
    lights_of: dict[str, list[str]] = {}
    _lighting(assets, lights_of, counts, placer, communes, rng)

    def place(prefix: str, kind: str, count: int, centre_share: float, spread_m: float, width: int) -> list[SimAsset]:
        made = []
        for i, (lon, lat) in enumerate(placer.points(count, centre_share, spread_m)):
            commune = _commune_name(communes, lon, lat)
            asset = SimAsset(f"{prefix}-{i + 1:0{width}d}", kind, "", float(lon), float(lat), f"{_street(rng)}, {commune}")
            made.append(asset)
            assets.append(asset)
        return made

    for j in place("TL", "traffic_controller", counts.junctions, 0.7, 2000, 4):
        j.name = f"Carrefour {_street(rng)} / {_street(rng)}"
        j.manufacturer, j.model, j.installed_on = "Aximum", "MAESTRO", "2017-09-01"
        j.attributes = {"signal_groups": int(rng.integers(4, 17)), "bus_priority": bool(rng.random() < 0.7),
                        "controller_model": "MAESTRO"}
    lines = _bus_lines(counts, communes, placer, rng)
    for i in range(counts.buses):
        line = lines[i % len(lines)]
        lon, lat, _ = line.at(0.0)
        assets.append(SimAsset(f"BUS-{i + 1:04d}", "bus", f"Bus {i + 1:04d}", round(lon, 6), round(lat, 6),
                               manufacturer="Heuliez", model="GX 337", installed_on="2020-01-10",
                               attributes={"fleet_number": f"{1000 + i}", "line": line.name,
                                           "capacity": int(rng.choice([90, 105, 150])),
                                           "energy": str(rng.choice(["hybrid", "electric", "hydrogen", "diesel"],
                                                                    p=[0.5, 0.3, 0.1, 0.1]))}))
    depots = placer.points(6 * scale, 0.3, 3000)
    v = 0
    for service, (per_scale, types) in FLEET.items():
        for _ in range(per_scale * scale):
            v += 1
            lon, lat = depots[v % len(depots)]
            assets.append(SimAsset(f"SV-{v:04d}", "service_vehicle", f"Véhicule {service} {v:04d}", float(lon),
                                   float(lat), service=service, manufacturer="Renault", model="Master",
                                   installed_on="2021-04-01",
                                   attributes={"registration": f"GA-{v:03d}-DJ", "vehicle_type": str(rng.choice(types)),
                                               "radio": bool(service == "police" or rng.random() < 0.5)}))
    for cam in place("CAM", "camera", counts.cameras, 0.8, 1500, 4):
        cam.name = f"Caméra {cam.address.split(',')[0]}"
        cam.manufacturer, cam.model, cam.installed_on = "Axis", "Q6135", "2019-05-20"
        cam.attributes = {"camera_type": str(rng.choice(["fixed", "ptz", "dome", "panoramic"], p=[0.4, 0.35, 0.2, 0.05])),
                          "recording_days": 30}
    for site in place("BOL", "bollard_site", counts.bollard_sites, 1.0, 450, 3):
        site.name = f"Bornes {site.address.split(',')[0]}"
        site.manufacturer, site.model, site.installed_on = "Urbaco", "Atlas", "2016-07-01"
        site.attributes = {"bollards": int(rng.integers(1, 4)), "access_zone": "Secteur piéton centre-ville"}
    for panel in place("PAN", "information_panel", counts.information_panels, 0.6, 2500, 3):
        panel.name = f"Panneau {panel.address.split(',')[0]}"
        panel.manufacturer, panel.model, panel.installed_on = "Lumiplan", "Maestro", "2018-02-01"
        panel.attributes = {"lines": 3, "characters_per_line": 24}
    for b in place("BLD", "building_alarm_panel", counts.buildings, 0.4, 2500, 4):
        commune = b.address.split(", ")[-1]
        b.name = f"{rng.choice(BUILDING_TYPES)} {b.address.split(',')[0].split(' ', 1)[-1].title()} ({commune})"[:200]
        b.manufacturer, b.model, b.installed_on = "Siemens", "Cerberus", "2015-01-01"
        b.attributes = {"building": b.name[:120], "systems": "fire,intrusion,access"}
    bays = rng.choice(["standard", "short_stay", "delivery", "disabled", "electric"], counts.parking_sensors,
                      p=[0.55, 0.18, 0.12, 0.08, 0.07])
    max_stay = {"standard": 120, "short_stay": 20, "delivery": 30, "disabled": 240, "electric": 180}
    for sensor, bay in zip(place("PS", "parking_sensor", counts.parking_sensors, 0.95, 700, 5), bays):
        sensor.name = f"Place {sensor.address.split(',')[0]}"
        sensor.manufacturer, sensor.model, sensor.installed_on = "Nedap", "SENSIT", "2019-09-01"
        sensor.attributes = {"bay_type": str(bay), "max_stay_min": max_stay[str(bay)]}
    for station in place("AQ", "air_quality_station", counts.air_quality_stations, 0.5, 2500, 3):
        station.name = f"Station air {station.address.split(',')[0]}"
        station.manufacturer, station.model, station.installed_on = "Atmo BFC", "AQ-Urban", "2020-06-01"
        station.attributes = {"pollutants": "NO2,PM10,PM2.5,O3"}
    return City(seed, scale, assets, lines, lights_of)
