"""The identity sheet of a piece of urban equipment, and its validation.

Validation works on batches because imports do: field checks run per record, then the geographic
checks (which commune, projection to metres) run vectorised over the whole batch. A single API call
is a batch of one. Every problem names where it is (CSV line, GeoJSON feature, JSON field) so that the
person who wrote the file can fix it; nothing is written unless the whole batch is valid.

Pure domain: no I/O.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import shapely
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry

from citypilot.equipment.catalog import Catalog, FieldError, FieldSpec, has_control_characters
from citypilot.geo.communes import Communes
from citypilot.geo.projection import to_lambert93

STATUSES = ("planned", "in_service", "out_of_service", "retired")
ASSET_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")  # \Z: "$" would let a final newline through
ASSET_ID_RULE = "1 to 64 letters, digits, '-' or '_', starting with a letter or digit (safe in MQTT topics and NATS subjects)"
CORE_FIELDS = ("id", "kind", "name", "lat", "lon", "geometry", "address", "service", "manufacturer", "model",
               "installed_on", "status", "reported_by", "commune", "attributes")
# Fields an export writes that an import accepts but derives itself (checked when present).
DERIVED_FIELDS = ("commune_name",)
MAX_GEOMETRY_POINTS = 10_000
EARLIEST_INSTALLATION = dt.date(1850, 1, 1)

_TEXT_LIMITS = {"name": 200, "address": 300, "manufacturer": 100, "model": 100}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, and where."""

    where: str            # "line 12", "feature 3", "body"
    field: str | None
    message: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.where}{f', field {self.field!r}' if self.field else ''}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"where": self.where, "field": self.field, "message": self.message}
        if self.line is not None:
            out["line"] = self.line
        return out


class ValidationFailed(ValueError):
    """The batch is invalid; ``problems`` lists every problem found (up to a limit)."""

    def __init__(self, problems: Sequence[Problem], total: int | None = None) -> None:
        self.problems = list(problems)
        self.total = total if total is not None else len(self.problems)
        shown = "; ".join(str(p) for p in self.problems[:3])
        more = f" (and {self.total - 3} more)" if self.total > 3 else ""
        super().__init__(f"{self.total} problem(s): {shown}{more}")


@dataclass
class RawRecord:
    """One asset as it came in, before validation; ``where`` locates it for error messages."""

    where: str
    values: dict[str, Any]
    line: int | None = None
    from_text: bool = False  # values are CSV cells (strings) to be parsed


@dataclass
class AssetSheet:
    """A valid identity sheet, ready to store."""

    id: str
    kind: str
    name: str
    lat: float
    lon: float
    commune: str
    x: float = 0.0  # Lambert-93 metres
    y: float = 0.0
    geometry: dict[str, Any] | None = None
    address: str | None = None
    service: str = ""
    manufacturer: str | None = None
    model: str | None = None
    installed_on: dt.date | None = None
    status: str = "in_service"
    reported_by: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    def search_text(self, commune_name: str | None, kind_label: str) -> str:
        parts = [self.id, self.name, self.address, commune_name, kind_label, self.manufacturer, self.model]
        return fold(" ".join(p for p in parts if p))

    def comparable(self) -> dict[str, Any]:
        """The stored fields, as compared to detect a change (history diffs use the same keys)."""
        return {
            "kind": self.kind, "name": self.name, "lat": self.lat, "lon": self.lon, "commune": self.commune,
            "geometry": self.geometry, "address": self.address, "service": self.service,
            "manufacturer": self.manufacturer, "model": self.model,
            "installed_on": self.installed_on.isoformat() if self.installed_on else None,
            "status": self.status, "reported_by": self.reported_by, "attributes": self.attributes,
        }


def fold(text: str) -> str:
    """Lowercase without accents, so that 'Dijon Liberté' is found by 'liberte'."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


class _Collector:
    def __init__(self, limit: int) -> None:
        self.problems: list[Problem] = []
        self.total = 0
        self.limit = limit

    def add(self, record: RawRecord, field_name: str | None, message: str) -> None:
        self.total += 1
        if len(self.problems) < self.limit:
            self.problems.append(Problem(record.where, field_name, message, record.line))


def _text(record: RawRecord, name: str, problems: _Collector, *, required: bool = False) -> str | None:
    value = record.values.get(name)
    if value is None or (isinstance(value, str) and value.strip() == ""):
        if required:
            problems.add(record, name, "is required")
        return None
    if not isinstance(value, str):
        problems.add(record, name, f"expected text, got {type(value).__name__}")
        return None
    value = value.strip()
    limit = _TEXT_LIMITS.get(name, 200)
    if len(value) > limit:
        problems.add(record, name, f"longer than {limit} characters")
        return None
    if has_control_characters(value):
        problems.add(record, name, "contains control characters")
        return None
    return value


def _coordinate(record: RawRecord, name: str, problems: _Collector, low: float, high: float) -> float | None:
    value = record.values.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, str) and record.from_text:
        try:
            value = float(value.strip().replace(",", "."))
        except ValueError:
            problems.add(record, name, f"expected a number in decimal degrees, got {value!r}")
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.add(record, name, f"expected a number in decimal degrees, got {type(value).__name__}")
        return None
    try:
        value = float(value)
    except OverflowError:  # an int too large for a float (a JSON body can carry one)
        value = math.inf
    if not math.isfinite(value) or not low <= value <= high:
        problems.add(record, name, f"{value!r} is not a valid {'latitude' if name == 'lat' else 'longitude'} "
                                   f"({low:g} to {high:g})")
        return None
    return value


def _geometry(record: RawRecord, problems: _Collector) -> BaseGeometry | None:
    raw = record.values.get("geometry")
    if raw is None or raw == "":
        return None
    try:
        if isinstance(raw, str):
            if raw.lstrip().startswith("{"):
                import json

                geom = shape(json.loads(raw))
            else:
                geom = shapely.from_wkt(raw)
        elif isinstance(raw, dict):
            geom = shape(raw)
        else:
            raise ValueError(f"expected GeoJSON or WKT, got {type(raw).__name__}")
    except Exception as exc:  # shapely raises several types for malformed input
        problems.add(record, "geometry", f"not a valid GeoJSON or WKT geometry ({str(exc).splitlines()[0][:120]})")
        return None
    if geom.geom_type not in ("Point", "LineString", "MultiLineString", "Polygon", "MultiPolygon"):
        problems.add(record, "geometry", f"{geom.geom_type} is not supported (Point, LineString or Polygon)")
        return None
    if geom.is_empty or not geom.is_valid:
        problems.add(record, "geometry", f"{geom.geom_type} is empty or invalid ({shapely.is_valid_reason(geom)})")
        return None
    if shapely.get_num_coordinates(geom) > MAX_GEOMETRY_POINTS:
        problems.add(record, "geometry", f"more than {MAX_GEOMETRY_POINTS} points")
        return None
    return geom


def _attr_field(record: RawRecord, name: str) -> str:
    """How the person who wrote the input names an attribute: the CSV column, or the JSON path."""
    return f"attr.{name}" if record.from_text else f"attributes.{name}"


def _attributes(record: RawRecord, specs: Mapping[str, FieldSpec], problems: _Collector) -> dict[str, Any]:
    raw = record.values.get("attributes") or {}
    if not isinstance(raw, dict):
        problems.add(record, "attributes", "expected an object of kind-specific attributes")
        return {}
    out: dict[str, Any] = {}
    for name, value in raw.items():
        spec = specs.get(name)
        if spec is None:
            known = ", ".join(specs) or "none"
            problems.add(record, _attr_field(record, name), f"unknown attribute for {record.values.get('kind')} (known: {known})")
            continue
        if isinstance(value, str):
            value = value.strip()  # as core text fields are, and as a CSV cell is: an export re-imported is the same
        if value is None or value == "":
            continue
        try:
            coerced = spec.coerce(value, from_text=record.from_text)
        except FieldError as exc:
            problems.add(record, _attr_field(record, name), str(exc))
            continue
        out[name] = coerced.isoformat() if isinstance(coerced, dt.date) else coerced
    for spec in specs.values():
        if spec.required and spec.name not in out:
            problems.add(record, _attr_field(record, spec.name), "is required for this kind")
    return out


def validate_sheets(records: Sequence[RawRecord], catalog: Catalog, communes: Communes, *,
                    today: dt.date | None = None, max_problems: int = 200) -> list[AssetSheet]:
    """Validate a batch; return the sheets or raise ValidationFailed listing the problems."""
    today = today or dt.date.today()
    problems = _Collector(max_problems)
    sheets: list[AssetSheet] = []
    geometries: list[BaseGeometry | None] = []
    given_communes: list[str | None] = []
    kept: list[RawRecord] = []
    first_seen: dict[str, str] = {}
    allowed = set(CORE_FIELDS) | set(DERIVED_FIELDS)

    for record in records:
        before = problems.total
        for name in record.values:
            if name not in allowed:
                problems.add(record, name, f"unknown field (known: {', '.join(CORE_FIELDS)})")
        asset_id = _text(record, "id", problems, required=True)
        if asset_id is not None and not ASSET_ID_RE.match(asset_id):
            problems.add(record, "id", f"{asset_id!r} is not a valid id: {ASSET_ID_RULE}")
            asset_id = None
        if asset_id is not None:
            if asset_id in first_seen:
                problems.add(record, "id", f"duplicate id {asset_id!r} (already at {first_seen[asset_id]})")
            else:
                first_seen[asset_id] = record.where
        kind_name = _text(record, "kind", problems, required=True)
        kind = None
        if kind_name is not None:
            try:
                kind = catalog.kind(kind_name)
            except FieldError as exc:
                problems.add(record, "kind", str(exc))
        name = _text(record, "name", problems, required=True)
        lat = _coordinate(record, "lat", problems, -90, 90)
        lon = _coordinate(record, "lon", problems, -180, 180)
        geom = _geometry(record, problems)
        # whether each was given, not whether it was valid: an invalid one is already reported
        lat_given, lon_given = (record.values.get(n) not in (None, "") for n in ("lat", "lon"))
        if lat_given != lon_given:
            problems.add(record, "lon" if lat_given else "lat", "lat and lon go together")
        if not lat_given and not lon_given:
            if geom is None:
                problems.add(record, "lat", "a location is required (lat and lon, or a geometry)")
            else:
                point = geom if geom.geom_type == "Point" else geom.point_on_surface()
                lon, lat = point.x, point.y
        service = _text(record, "service", problems)
        if service is not None and service not in catalog.services:
            problems.add(record, "service", f"unknown service {service!r} (known: {', '.join(catalog.services)})")
        status = _text(record, "status", problems) or "in_service"
        if status not in STATUSES:
            problems.add(record, "status", f"{status!r} is not one of: {', '.join(STATUSES)}")
        installed_on = None
        raw_date = record.values.get("installed_on")
        if raw_date not in (None, ""):
            try:
                installed_on = FieldSpec("installed_on", "date").coerce(raw_date)
            except FieldError as exc:
                problems.add(record, "installed_on", str(exc))
            else:
                if installed_on < EARLIEST_INSTALLATION:
                    problems.add(record, "installed_on", f"{installed_on} is before {EARLIEST_INSTALLATION}")
                elif installed_on > today and status not in ("planned", "retired"):
                    # a planned asset, or a planned one cancelled (retired), may carry a future date
                    problems.add(record, "installed_on", f"{installed_on} is in the future but the status is {status}")
        reported_by = _text(record, "reported_by", problems)
        if reported_by is not None:
            if not ASSET_ID_RE.match(reported_by):
                problems.add(record, "reported_by", f"{reported_by!r} is not a valid id")
            elif reported_by == asset_id:
                problems.add(record, "reported_by", "an asset cannot report for itself")
            elif kind is not None and not kind.reported_by:
                problems.add(record, "reported_by", f"a {kind.name} reports for itself; no device reports for it")
        attributes = _attributes(record, kind.attribute, problems) if kind is not None else {}
        given_commune = _text(record, "commune", problems)
        if problems.total != before or asset_id is None or kind is None or name is None or lat is None or lon is None:
            continue
        sheets.append(AssetSheet(
            id=asset_id, kind=kind.name, name=name, lat=float(lat), lon=float(lon), commune="",
            geometry=mapping(geom) if geom is not None and geom.geom_type != "Point" else None,
            address=_text(record, "address", problems), service=service or kind.service,
            manufacturer=_text(record, "manufacturer", problems), model=_text(record, "model", problems),
            installed_on=installed_on, status=status, reported_by=reported_by, attributes=attributes,
        ))
        geometries.append(geom)
        given_communes.append(given_commune)
        kept.append(record)

    _place(sheets, kept, geometries, given_communes, communes, problems)
    _check_reporters_in_batch(sheets, kept, catalog, problems)
    if problems.total:
        raise ValidationFailed(problems.problems, problems.total)
    return sheets


def _place(sheets: list[AssetSheet], records: list[RawRecord], geometries: list[BaseGeometry | None],
           given: list[str | None], communes: Communes, problems: _Collector) -> None:
    """Assign each sheet its commune (point-in-polygon) and its Lambert-93 point, in bulk."""
    if not sheets:
        return
    lons = np.fromiter((s.lon for s in sheets), float, len(sheets))
    lats = np.fromiter((s.lat for s in sheets), float, len(sheets))
    found = communes.locate_many(lons, lats)
    xs, ys = to_lambert93(lons, lats)
    min_lon, min_lat, max_lon, max_lat = communes.bounds
    for i, sheet in enumerate(sheets):
        record = records[i]
        if found[i] is None:
            problems.add(record, "lat", f"({sheet.lat:.6f}, {sheet.lon:.6f}) lies outside the metropole's "
                                        f"{len(communes.communes)} communes (lat {min_lat:.3f} to {max_lat:.3f}, "
                                        f"lon {min_lon:.3f} to {max_lon:.3f})")
            continue
        geom = geometries[i]
        if geom is not None:
            g_min_lon, g_min_lat, g_max_lon, g_max_lat = geom.bounds
            margin = 0.02
            if g_min_lon < min_lon - margin or g_max_lon > max_lon + margin or g_min_lat < min_lat - margin or g_max_lat > max_lat + margin:
                problems.add(record, "geometry", "extends outside the metropole")
        if given[i] is not None and given[i] != found[i]:
            problems.add(record, "commune", f"given as {given[i]} but the location lies in {found[i]} "
                                            f"({communes.name(found[i])}); leave it empty to have it assigned")
        given_name = record.values.get("commune_name")  # derived, written by exports: must agree when present
        if given_name not in (None, "") and (not isinstance(given_name, str)
                                             or fold(given_name.strip()) != fold(communes.name(found[i]) or "")):
            problems.add(record, "commune_name", f"given as {given_name!r} but the location lies in "
                                                 f"{communes.name(found[i])} ({found[i]}); leave it empty to have it "
                                                 f"assigned")
        sheet.commune = found[i]
        sheet.x = float(xs[i])
        sheet.y = float(ys[i])


def _check_reporters_in_batch(sheets: list[AssetSheet], records: list[RawRecord], catalog: Catalog,
                              problems: _Collector) -> None:
    """A reporter named in the same batch must be of a kind allowed to report (others are checked in the store)."""
    by_id = {s.id: s for s in sheets}
    for sheet, record in zip(sheets, records):
        if sheet.reported_by and sheet.reported_by in by_id:
            reporter = by_id[sheet.reported_by]
            allowed = catalog.kinds[sheet.kind].reported_by
            if reporter.kind not in allowed:
                problems.add(record, "reported_by", f"{reporter.id} is a {reporter.kind}; a {sheet.kind} is reported "
                                                    f"by: {', '.join(allowed)}")


def unresolved_reporters(sheets: Iterable[AssetSheet]) -> set[str]:
    """Reporter ids not defined in this batch: the store must confirm they exist."""
    sheets = list(sheets)
    ids = {s.id for s in sheets}
    return {s.reported_by for s in sheets if s.reported_by and s.reported_by not in ids}
