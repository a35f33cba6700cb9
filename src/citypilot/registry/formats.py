"""Registry files: CSV and GeoJSON, read into raw records and written from stored sheets.

CSV is what a city's asset spreadsheets export: one asset per line, columns named as the sheet's fields,
kind-specific attributes as ``attr.<name>`` columns, an optional ``geometry`` column in WKT, comma or
semicolon separated, UTF-8 (with or without BOM). GeoJSON is what GIS tools export: a FeatureCollection
whose feature geometry is the location (a Point) or the asset's line or polygon.

Export writes the same formats so that an export re-imported changes nothing.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Iterable, Iterator, Mapping

import shapely
from shapely.geometry import shape

from .sheet import CORE_FIELDS, DERIVED_FIELDS, MAX_GEOMETRY_POINTS, Problem, RawRecord, ValidationFailed

ATTR_PREFIX = "attr."
# The csv module refuses cells over 128 KiB by default; the WKT of a geometry of the largest size the
# registry accepts (and exports) is longer, and must import back.
MAX_CSV_CELL = MAX_GEOMETRY_POINTS * 100
if csv.field_size_limit() < MAX_CSV_CELL:
    csv.field_size_limit(MAX_CSV_CELL)
CSV_BASE_COLUMNS = ("id", "kind", "name", "lat", "lon", "commune", "commune_name", "address", "service",
                    "manufacturer", "model", "installed_on", "status", "reported_by", "geometry")
FORMATS = ("csv", "geojson")


def detect_format(filename: str | None, content_type: str | None, head: bytes) -> str:
    """'csv' or 'geojson', from the file name, the content type, or the first bytes."""
    name = (filename or "").lower()
    ctype = (content_type or "").lower()
    if name.endswith((".geojson", ".json")) or "json" in ctype:
        return "geojson"
    if name.endswith(".csv") or "csv" in ctype:
        return "csv"
    return "geojson" if head.lstrip()[:1] in (b"{", b"[") else "csv"


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationFailed([Problem(where, None, f"not UTF-8 text (byte {exc.start}); save the file as UTF-8")]) from None


def read_csv(data: bytes) -> list[RawRecord]:
    """Parse a CSV registry file; raise ValidationFailed (with line numbers) if it is malformed."""
    text = _decode(data, "file")
    if not text.strip():
        raise ValidationFailed([Problem("file", None, "the file is empty")])
    first_line = text.splitlines()[0]
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = [h.strip() for h in next(reader)]
    except csv.Error as exc:
        raise ValidationFailed([Problem("line 1", None, f"malformed CSV header: {exc}", 1)]) from None
    problems: list[Problem] = []
    allowed = set(CORE_FIELDS) | set(DERIVED_FIELDS)
    for column in header:
        if column in ("attributes",) or (column not in allowed and not column.startswith(ATTR_PREFIX)):
            problems.append(Problem("line 1", column or "(empty)", "unknown column (use the sheet's field names, "
                                                                   "and attr.<name> for kind-specific attributes)", 1))
    seen: set[str] = set()
    for column in header:
        if column in seen:
            problems.append(Problem("line 1", column, "column appears twice", 1))
        seen.add(column)
    for required in ("id", "kind", "name"):
        if required not in header:
            problems.append(Problem("line 1", required, "required column is missing", 1))
    if problems:
        raise ValidationFailed(problems)

    records: list[RawRecord] = []
    line = 1
    try:
        for row in reader:
            line = reader.line_num
            if not row or all(cell.strip() == "" for cell in row):
                continue
            if len(row) > len(header):
                problems.append(Problem(f"line {line}", None, f"{len(row)} cells but the header has {len(header)} columns", line))
                continue
            values: dict[str, Any] = {}
            attributes: dict[str, Any] = {}
            for column, cell in zip(header, row):
                cell = cell.strip()
                if column.startswith(ATTR_PREFIX):
                    if cell != "":
                        attributes[column[len(ATTR_PREFIX):]] = cell
                elif cell != "":
                    values[column] = cell
            if attributes:
                values["attributes"] = attributes
            records.append(RawRecord(f"line {line}", values, line=line, from_text=True))
    except csv.Error as exc:
        problems.append(Problem(f"line {reader.line_num}", None, f"malformed CSV: {exc}", reader.line_num))
    if problems:
        raise ValidationFailed(problems)
    return records


def read_geojson(data: bytes) -> list[RawRecord]:
    """Parse a GeoJSON FeatureCollection (or a single Feature) of assets."""
    text = _decode(data, "file")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationFailed([Problem(f"line {exc.lineno}", None, f"malformed JSON: {exc.msg} (column {exc.colno})", exc.lineno)]) from None
    except (ValueError, RecursionError) as exc:  # nested too deeply, or an integer longer than Python's limit
        raise ValidationFailed([Problem("file", None, f"unreadable JSON: {str(exc)[:120]}")]) from None
    if isinstance(document, dict) and document.get("type") == "Feature":
        features = [document]
    elif isinstance(document, dict) and document.get("type") == "FeatureCollection" and isinstance(document.get("features"), list):
        features = document["features"]
    else:
        raise ValidationFailed([Problem("file", "type", "expected a GeoJSON FeatureCollection with a features list")])
    records: list[RawRecord] = []
    problems: list[Problem] = []
    for index, feature in enumerate(features, start=1):
        where = f"feature {index}"
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            problems.append(Problem(where, "type", "expected a GeoJSON Feature"))
            continue
        properties = feature.get("properties") or {}
        if not isinstance(properties, dict):
            problems.append(Problem(where, "properties", "expected an object"))
            continue
        values = dict(properties)
        if feature.get("id") is not None:
            if "id" in values and values["id"] != feature["id"]:
                problems.append(Problem(where, "id", f"feature id {feature['id']!r} differs from properties.id {values['id']!r}"))
                continue
            values["id"] = feature["id"] if isinstance(feature["id"], str) else str(feature["id"])
        geometry = feature.get("geometry")
        if geometry is not None:
            if isinstance(geometry, dict) and geometry.get("type") == "Point":
                coords = geometry.get("coordinates")
                if (not isinstance(coords, list) or len(coords) < 2
                        or not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in coords[:2])):
                    problems.append(Problem(where, "geometry", "a Point needs [lon, lat] numbers"))
                    continue
                values.setdefault("lon", coords[0])
                values.setdefault("lat", coords[1])
            else:
                values["geometry"] = geometry
        if "id" in values:
            where = f"feature {index} ({values['id']})"
        records.append(RawRecord(where, values))
    if problems:
        raise ValidationFailed(problems)
    return records


def read_registry_file(data: bytes, fmt: str) -> list[RawRecord]:
    if fmt == "csv":
        return read_csv(data)
    if fmt == "geojson":
        return read_geojson(data)
    raise ValidationFailed([Problem("file", None, f"unknown format {fmt!r} (csv or geojson)")])


def _plain(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return repr(value)
    return str(value)


def write_csv(rows: Iterable[Mapping[str, Any]], attribute_names: list[str]) -> Iterator[str]:
    """Yield the CSV text of stored assets (dicts as returned by the repository), header first."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180; also makes the writer quote a bare \r in a cell
    writer.writerow(list(CSV_BASE_COLUMNS) + [ATTR_PREFIX + a for a in attribute_names])
    for row in rows:
        geometry = row.get("geometry")
        cells = [_plain(row.get(c)) for c in CSV_BASE_COLUMNS[:-1]]
        cells.append(shapely.to_wkt(shape(geometry), rounding_precision=-1) if geometry else "")
        attrs = row.get("attributes") or {}
        cells += [_plain(attrs.get(a)) for a in attribute_names]
        writer.writerow(cells)
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def write_geojson(rows: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """Yield a GeoJSON FeatureCollection of stored assets, one feature at a time."""
    yield '{"type":"FeatureCollection","features":['
    first = True
    for row in rows:
        properties = {k: row.get(k) for k in CSV_BASE_COLUMNS if k not in ("id", "geometry", "lat", "lon")
                      and row.get(k) is not None}
        properties["attributes"] = row.get("attributes") or {}
        geometry = row.get("geometry")
        if geometry:
            properties["lat"] = row["lat"]
            properties["lon"] = row["lon"]
        else:
            geometry = {"type": "Point", "coordinates": [row["lon"], row["lat"]]}
        feature = {"type": "Feature", "id": row["id"], "geometry": geometry, "properties": properties}
        yield ("" if first else ",") + json.dumps(feature, ensure_ascii=False, default=str)
        first = False
    yield "]}"
