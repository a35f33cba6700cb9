"""What one operator sees on the live feed (pure: no I/O).

A filter comes from the WebSocket's query parameters when it opens, or from a ``{"type": "filter"}``
frame that replaces it later; both take the same keys, so a client builds one object and sends it
either way. The server filters (not the browser) because a control room of 340,000 assets cannot
stream everything to every screen, and because what a role may not see must never leave the server.

Semantics (documented for integrators in docs/integrators/live-feed.md):

- values of one key are alternatives (``commune=21231,21166``); different keys must all match;
- an entry or asset that lacks what a key asks about is left out (no commune when ``commune`` is set,
  no position when ``bbox`` or ``polygon`` is set, no kind when ``kind`` is set);
- ``severity`` is a minimum (critical > major > minor > warning). Entries without a severity
  (connectivity changes, comments...) are then left out, as in the journal's REST filter: a connectivity
  problem that deserves a threshold is an alarm (an ``on_connectivity`` rule), and alarm entries always
  carry their alarm's severity;
- ``type`` is exact (``alarm.raised``) or a family (``alarm.*``);
- twin deltas are filtered on domain, kind, commune, bbox and polygon only: a delta has no severity or type;
- restricted (public-safety) entries and kinds are only for ``PUBLIC_SAFETY_ROLES``; whatever the
  filter says, they are not sent to another role, and asking for them by name is an error.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.prepared import prep
from shapely.validation import explain_validity

from citypilot.alarms.lifecycle import SEVERITIES
from citypilot.auth.roles import sees_restricted

SEVERITY_RANK = {s: len(SEVERITIES) - i for i, s in enumerate(SEVERITIES)}  # warning 1 ... critical 4
FILTER_KEYS = ("domain", "commune", "kind", "bbox", "polygon", "severity", "type", "service", "twin")
OPERATIONS_DOMAIN = "operations"  # entries that belong to no equipment domain (accounts, storms, the platform)
INTERVENTIONS_DOMAIN = "interventions"  # citizens' requests, work orders, teams
MAX_VALUES = 200
MAX_POLYGON_VERTICES = 10_000
_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?$")
_INSEE = re.compile(r"^\d[0-9AB]\d{3}$")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class FilterError(ValueError):
    """A filter the server cannot apply; ``field`` names the offending key (the close reason says it)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class Vocabulary:
    """The names a filter may use, taken from the equipment catalogue and the communes."""

    kind_domains: Mapping[str, str]
    restricted_kinds: frozenset[str]
    communes: frozenset[str] | None = None  # None: check the INSEE code's shape only
    services: frozenset[str] | None = None  # None: any name

    @property
    def domains(self) -> frozenset[str]:
        return frozenset(self.kind_domains.values()) | {OPERATIONS_DOMAIN, INTERVENTIONS_DOMAIN}

    @property
    def restricted_domains(self) -> frozenset[str]:
        """Domains all of whose kinds are restricted: naming one is asking for restricted equipment."""
        return frozenset(d for d in set(self.kind_domains.values())
                         if all(k in self.restricted_kinds for k, kd in self.kind_domains.items() if kd == d))

    @classmethod
    def from_catalog(cls, catalog: Any, communes: Iterable[str] | None = None) -> Vocabulary:
        return cls(kind_domains={name: spec.domain for name, spec in catalog.kinds.items()},
                   restricted_kinds=frozenset(catalog.restricted_kinds()),
                   communes=frozenset(communes) if communes is not None else None,
                   services=frozenset(catalog.services))


@dataclass(frozen=True, slots=True)
class AssetFacts:
    """What twin deltas are filtered on: the registry's facts about one asset."""

    kind: str
    domain: str | None
    commune: str | None = None
    lat: float | None = None
    lon: float | None = None
    restricted: bool = False


@dataclass(frozen=True)
class LiveFilter:
    domains: frozenset[str] = frozenset()
    communes: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()
    bbox: tuple[float, float, float, float] | None = None   # min lon, min lat, max lon, max lat
    polygon: BaseGeometry | None = None                      # lon/lat
    min_severity: str | None = None
    types: tuple[str, ...] = ()                              # exact, or 'family.*'
    services: frozenset[str] = frozenset()                   # entries of these services, or alarms that tell them
    twin: bool = True
    # Visibility comes from the role, never from the client.
    sees_restricted: bool = False
    hidden_kinds: frozenset[str] = frozenset()
    _inside: Any = field(default=None, init=False, repr=False, compare=False)
    _exact_types: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)
    _type_prefixes: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.polygon is not None:
            object.__setattr__(self, "_inside", prep(self.polygon))
        object.__setattr__(self, "_exact_types", frozenset(t for t in self.types if not t.endswith(".*")))
        object.__setattr__(self, "_type_prefixes", tuple(t[:-1] for t in self.types if t.endswith(".*")))

    @property
    def any_asset(self) -> bool:
        """No constraint on which assets: only visibility applies (the twin fan-out's fast path)."""
        return not (self.domains or self.communes or self.kinds or self.bbox or self.polygon is not None)

    def _in_zone(self, lon: Any, lat: Any) -> bool:
        if lon is None or lat is None:
            return False
        if self.bbox is not None:
            min_lon, min_lat, max_lon, max_lat = self.bbox
            if not (min_lon <= lon <= max_lon and min_lat <= lat <= max_lat):
                return False
        if self._inside is not None:
            from shapely.geometry import Point

            return bool(self._inside.covers(Point(lon, lat)))
        return True

    def matches_entry(self, entry: Mapping[str, Any]) -> bool:
        """Does this journal entry (as ``row_to_entry`` gives it) go to this client?"""
        kind = entry.get("kind")
        if not self.sees_restricted and (entry.get("restricted") or kind in self.hidden_kinds):
            return False
        if self.domains and entry.get("domain") not in self.domains:
            return False
        if self.kinds and kind not in self.kinds:
            return False
        if self.communes and entry.get("commune") not in self.communes:
            return False
        if self.min_severity is not None:
            rank = SEVERITY_RANK.get(entry.get("severity") or "")
            if rank is None or rank < SEVERITY_RANK[self.min_severity]:
                return False
        if self.services and entry.get("service") not in self.services and not (
                self.services.intersection((entry.get("data") or {}).get("notify") or ())):
            return False
        if self.types:
            type_ = entry.get("type") or ""
            if type_ not in self._exact_types and not any(type_.startswith(p) for p in self._type_prefixes):
                return False
        if (self.bbox is not None or self._inside is not None) and not self._in_zone(entry.get("lon"), entry.get("lat")):
            return False
        return True

    def matches_asset(self, facts: AssetFacts) -> bool:
        """Does a twin delta of this asset go to this client?"""
        if not self.sees_restricted and (facts.restricted or facts.kind in self.hidden_kinds):
            return False
        if self.domains and facts.domain not in self.domains:
            return False
        if self.kinds and facts.kind not in self.kinds:
            return False
        if self.communes and facts.commune not in self.communes:
            return False
        if (self.bbox is not None or self._inside is not None) and not self._in_zone(facts.lon, facts.lat):
            return False
        return True

    def visible_kinds(self, vocabulary: Vocabulary) -> frozenset[str] | None:
        """The kinds whose assets may pass (a prefilter for SQL), or None when any kind may."""
        kinds: set[str] | None = None
        if self.kinds:
            kinds = set(self.kinds)
        if self.domains:
            in_domains = {k for k, d in vocabulary.kind_domains.items() if d in self.domains}
            kinds = in_domains if kinds is None else kinds & in_domains
        if not self.sees_restricted and self.hidden_kinds:
            kinds = (set(vocabulary.kind_domains) if kinds is None else kinds) - self.hidden_kinds
        return frozenset(kinds) if kinds is not None else None

    def describe(self) -> dict[str, Any]:
        """The filter in effect, as the server echoes it (the same keys a client sends)."""
        return {"domain": sorted(self.domains), "commune": sorted(self.communes), "kind": sorted(self.kinds),
                "bbox": list(self.bbox) if self.bbox else None,
                "polygon": mapping(self.polygon) if self.polygon is not None else None,
                "severity": self.min_severity, "type": list(self.types), "service": sorted(self.services),
                "twin": self.twin}


def _names(key: str, value: Any) -> list[str]:
    """A comma-separated string (query parameter) or a list of strings (JSON frame)."""
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value]
    else:
        raise FilterError(key, "expected a comma-separated string or a list of strings")
    items = [v for v in items if v]
    if len(items) > MAX_VALUES:
        raise FilterError(key, f"at most {MAX_VALUES} values")
    return list(dict.fromkeys(items))


def _bbox(value: Any) -> tuple[float, float, float, float]:
    shape_ = "min_lon,min_lat,max_lon,max_lat in degrees"
    parts = value.split(",") if isinstance(value, str) else value
    if not isinstance(parts, list) or len(parts) != 4:
        raise FilterError("bbox", f"expected 4 numbers: {shape_}")
    try:
        numbers = [float(p) if isinstance(p, str) else p for p in parts]
    except ValueError:
        raise FilterError("bbox", f"expected 4 numbers: {shape_}") from None
    if not all(isinstance(n, (int, float)) and not isinstance(n, bool) and math.isfinite(n) for n in numbers):
        raise FilterError("bbox", f"expected 4 numbers: {shape_}")
    min_lon, min_lat, max_lon, max_lat = (float(n) for n in numbers)
    if not (-180 <= min_lon < max_lon <= 180 and -90 <= min_lat < max_lat <= 90):
        raise FilterError("bbox", f"expected {shape_}, with min < max")
    return min_lon, min_lat, max_lon, max_lat


def _polygon(value: Any) -> BaseGeometry:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise FilterError("polygon", "not JSON: expected a GeoJSON Polygon in lon/lat") from None
    if not isinstance(value, dict) or value.get("type") not in ("Polygon", "MultiPolygon"):
        raise FilterError("polygon", "expected a GeoJSON Polygon (or MultiPolygon) in lon/lat")
    try:
        geometry = shape(value)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        raise FilterError("polygon", f"not a GeoJSON polygon: {exc}") from None
    if geometry.is_empty:
        raise FilterError("polygon", "empty polygon")
    if not geometry.is_valid:
        raise FilterError("polygon", f"invalid polygon: {explain_validity(geometry)}")
    min_lon, min_lat, max_lon, max_lat = geometry.bounds
    if not (-180 <= min_lon and max_lon <= 180 and -90 <= min_lat and max_lat <= 90):
        raise FilterError("polygon", "coordinates must be lon, lat in degrees")
    import shapely

    if shapely.get_num_coordinates(geometry) > MAX_POLYGON_VERTICES:
        raise FilterError("polygon", f"more than {MAX_POLYGON_VERTICES} vertices")
    return geometry


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in ("true", "false"):
        return value == "true"
    raise FilterError(key, "expected true or false")


def parse_filter(raw: Mapping[str, Any], vocabulary: Vocabulary, role: str) -> LiveFilter:
    """Build a filter from query parameters or a filter frame; raise ``FilterError`` on the first problem.

    Keys left out mean "no constraint" (and ``twin`` defaults to true): a filter frame replaces the
    whole filter, it does not amend the previous one."""
    for key in raw:
        if key not in FILTER_KEYS:
            raise FilterError(key, f"unknown filter (known: {', '.join(FILTER_KEYS)})")
    public_safety = sees_restricted(role)
    hidden = frozenset() if public_safety else vocabulary.restricted_kinds

    domains = _names("domain", raw["domain"]) if raw.get("domain") is not None else []
    for name in domains:
        if name not in vocabulary.domains:
            raise FilterError("domain", f"unknown domain {name!r} (known: {', '.join(sorted(vocabulary.domains))})")
        if not public_safety and name in vocabulary.restricted_domains:
            raise FilterError("domain", f"the {role} role may not see the {name} domain")
    kinds = _names("kind", raw["kind"]) if raw.get("kind") is not None else []
    for name in kinds:
        if not _NAME.match(name) or name not in vocabulary.kind_domains:
            raise FilterError("kind", f"unknown kind {name[:64]!r}")
        if name in hidden:
            raise FilterError("kind", f"the {role} role may not see {name} (public-safety equipment)")
    communes = _names("commune", raw["commune"]) if raw.get("commune") is not None else []
    for code in communes:
        if not _INSEE.match(code) or (vocabulary.communes is not None and code not in vocabulary.communes):
            raise FilterError("commune", f"unknown commune {code[:16]!r} (INSEE codes, see /api/v1/communes)")
    types = _names("type", raw["type"]) if raw.get("type") is not None else []
    for name in types:
        if len(name) > 64 or not _TYPE.match(name):
            raise FilterError("type", f"invalid type {name[:64]!r}: dotted lowercase (alarm.raised) or a family (alarm.*)")
    services = _names("service", raw["service"]) if raw.get("service") is not None else []
    for name in services:
        if vocabulary.services is not None and name not in vocabulary.services:
            raise FilterError("service", f"unknown service {name[:64]!r} (see /api/v1/services)")
    severity = raw.get("severity")
    if severity is not None and severity not in SEVERITY_RANK:
        raise FilterError("severity", f"a minimum severity: one of {', '.join(SEVERITIES)}")
    bbox = _bbox(raw["bbox"]) if raw.get("bbox") is not None else None
    polygon = _polygon(raw["polygon"]) if raw.get("polygon") is not None else None
    twin = _bool("twin", raw["twin"]) if raw.get("twin") is not None else True
    return LiveFilter(domains=frozenset(domains), communes=frozenset(communes), kinds=frozenset(kinds), bbox=bbox,
                      polygon=polygon, min_severity=severity, types=tuple(types), services=frozenset(services), twin=twin,
                      sees_restricted=public_safety, hidden_kinds=hidden)
