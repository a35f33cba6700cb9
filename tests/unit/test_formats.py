"""Registry files: CSV and GeoJSON import with located errors, export, and export → import round trips."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from citypilot.equipment.catalog import default_catalog
from citypilot.geo.communes import metropole
from citypilot.registry.formats import (
    CSV_BASE_COLUMNS,
    detect_format,
    read_csv,
    read_geojson,
    read_registry_file,
    write_csv,
    write_geojson,
)
from citypilot.registry.sheet import AssetSheet, RawRecord, ValidationFailed, validate_sheets

TODAY = dt.date(2025, 6, 1)


def validate(records: list[RawRecord]) -> list[AssetSheet]:
    return validate_sheets(records, default_catalog(), metropole(), today=TODAY)


def failure(reader, data: bytes) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as err:
        reader(data)
    return err.value


# --- read_csv --------------------------------------------------------------------------------------------

def test_comma_separated():
    data = (b"id,kind,name,lat,lon,attr.lamp_power_w,attr.lamp_technology\n"
            b"SL-1,street_light,Rue A,47.3220,5.0415,42.5,LED\n"
            b"SL-2,street_light,\"Rue B, angle C\",47.3221,5.0416,,\n")
    first, second = read_csv(data)
    assert (first.where, first.line, first.from_text) == ("line 2", 2, True)
    assert first.values == {"id": "SL-1", "kind": "street_light", "name": "Rue A", "lat": "47.3220",
                            "lon": "5.0415", "attributes": {"lamp_power_w": "42.5", "lamp_technology": "LED"}}
    assert second.values == {"id": "SL-2", "kind": "street_light", "name": "Rue B, angle C",
                             "lat": "47.3221", "lon": "5.0416"}  # empty cells are left out, attributes too
    sheets = validate([first, second])
    assert sheets[0].attributes == {"lamp_power_w": 42.5, "lamp_technology": "LED"}
    assert sheets[1].attributes == {}


def test_semicolon_separated_with_decimal_commas():
    data = "id;kind;name;lat;lon;attr.lamp_power_w\nSL-1;street_light;Rue A, côté pair;47,3220;5,0415;42,5\n"
    [record] = read_csv(data.encode("utf-8"))
    assert record.values["name"] == "Rue A, côté pair"
    [sheet] = validate([record])
    assert (sheet.lat, sheet.lon, sheet.commune) == (47.3220, 5.0415, "21231")
    assert sheet.attributes == {"lamp_power_w": 42.5}


def test_utf8_bom_and_crlf():
    data = "\ufeffid,kind,name\r\nSL-1,street_light,Liberté\r\n".encode("utf-8")
    [record] = read_csv(data)
    assert record.values == {"id": "SL-1", "kind": "street_light", "name": "Liberté"}


def test_cells_and_headers_are_trimmed():
    [record] = read_csv(b" id , kind ,name\n SL-1 , street_light ,  x  \n")
    assert record.values == {"id": "SL-1", "kind": "street_light", "name": "x"}


def test_blank_lines_are_skipped_and_line_numbers_stay_physical():
    records = read_csv(b"id,kind,name\n\nSL-1,street_light,a\n,,\nSL-2,street_light,b\n")
    assert [(r.where, r.line) for r in records] == [("line 3", 3), ("line 5", 5)]


def test_header_only_gives_no_records():
    assert read_csv(b"id,kind,name\n") == []


def test_fewer_cells_than_columns_is_allowed():
    [record] = read_csv(b"id,kind,name,address\nSL-1,street_light,a\n")
    assert record.values == {"id": "SL-1", "kind": "street_light", "name": "a"}


def test_quoted_multiline_cell():
    [record] = read_csv(b'id,kind,name,address\nSL-1,street_light,a,"1 rue X\nbatiment B"\n')
    assert record.values["address"] == "1 rue X\nbatiment B"


def test_unknown_column_is_named_on_line_1():
    err = failure(read_csv, b"id,kind,name,colour\nSL-1,street_light,a,red\n")
    [problem] = err.problems
    assert (problem.where, problem.line, problem.field) == ("line 1", 1, "colour")
    assert "unknown column" in problem.message and "attr.<name>" in problem.message


def test_attributes_column_and_empty_column_name_are_refused():
    err = failure(read_csv, b"id,kind,name,attributes,\n")
    assert [p.field for p in err.problems] == ["attributes", "(empty)"]


def test_duplicate_column():
    err = failure(read_csv, b"id,kind,name,lat,lat\n")
    assert [(p.where, p.field, p.message) for p in err.problems] == [("line 1", "lat", "column appears twice")]


@pytest.mark.parametrize("missing", ["id", "kind", "name"])
def test_missing_required_column(missing):
    header = ",".join(c for c in ("id", "kind", "name", "lat", "lon") if c != missing)
    err = failure(read_csv, header.encode() + b"\n")
    [problem] = err.problems
    assert (problem.where, problem.field, problem.message) == ("line 1", missing, "required column is missing")


def test_too_many_cells_names_the_line():
    err = failure(read_csv, b"id,kind,name\nSL-1,street_light,a\nSL-2,street_light,b,extra\nSL-3,street_light,c\n")
    [problem] = err.problems
    assert (problem.where, problem.line) == ("line 3", 3)
    assert problem.message == "4 cells but the header has 3 columns"


def test_every_line_with_too_many_cells_is_listed():
    err = failure(read_csv, b"id,kind,name\na,b,c,d\ne,f,g\nh,i,j,k,l\n")
    assert [p.line for p in err.problems] == [2, 4]


def test_unclosed_quote():
    err = failure(read_csv, b'id,kind,name\nSL-1,"street_light,a\n')
    assert "malformed CSV" in err.problems[0].message
    assert err.problems[0].line is not None


def test_not_utf8():
    err = failure(read_csv, "id,kind,name\nSL-1,street_light,Liberté\n".encode("latin-1"))
    [problem] = err.problems
    assert problem.where == "file"
    assert "not UTF-8" in problem.message and "byte 37" in problem.message


@pytest.mark.parametrize("data", [b"", b"   \n\n", b"\xef\xbb\xbf"])
def test_empty_file(data):
    err = failure(read_csv, data)
    assert [(p.where, p.message) for p in err.problems] == [("file", "the file is empty")]


# --- read_geojson ----------------------------------------------------------------------------------------

def feature(properties: dict, geometry: dict | None, fid: Any = None) -> dict:
    out = {"type": "Feature", "properties": properties, "geometry": geometry}
    if fid is not None:
        out["id"] = fid
    return out


def collection(*features: Any) -> bytes:
    return json.dumps({"type": "FeatureCollection", "features": list(features)}).encode()


def test_feature_collection_with_points_and_lines():
    data = collection(
        feature({"kind": "street_light", "name": "A", "attributes": {"lamp_power_w": 40}},
                {"type": "Point", "coordinates": [5.0415, 47.3220]}, "SL-1"),
        feature({"id": "SL-2", "kind": "street_light", "name": "B"},
                {"type": "LineString", "coordinates": [[5.03, 47.32], [5.05, 47.33]]}),
    )
    first, second = read_geojson(data)
    assert first.where == "feature 1 (SL-1)" and not first.from_text
    assert first.values == {"id": "SL-1", "kind": "street_light", "name": "A", "lon": 5.0415, "lat": 47.3220,
                            "attributes": {"lamp_power_w": 40}}
    assert second.where == "feature 2 (SL-2)"
    assert second.values["geometry"] == {"type": "LineString", "coordinates": [[5.03, 47.32], [5.05, 47.33]]}
    assert "lat" not in second.values
    sheets = validate([first, second])
    assert sheets[0].commune == "21231" and sheets[0].attributes == {"lamp_power_w": 40}
    assert sheets[1].geometry["type"] == "LineString" and sheets[1].commune == "21231"


def test_single_feature_and_numeric_id():
    data = json.dumps(feature({"kind": "street_light", "name": "A"},
                              {"type": "Point", "coordinates": [5.0415, 47.3220]}, 17)).encode()
    [record] = read_geojson(data)
    assert record.values["id"] == "17"


def test_feature_without_geometry_keeps_property_coordinates():
    [record] = read_geojson(collection(feature({"id": "SL-1", "lat": 47.3, "lon": 5.04}, None)))
    assert (record.values["lat"], record.values["lon"]) == (47.3, 5.04)
    assert record.where == "feature 1 (SL-1)"


def test_malformed_json_gives_the_line():
    data = b'{\n  "type": "FeatureCollection",\n  "features": [\n    {"type": "Feature",, }\n  ]\n}\n'
    [problem] = failure(read_geojson, data).problems
    assert (problem.where, problem.line) == ("line 4", 4)
    assert problem.message.startswith("malformed JSON")


def test_non_feature_entries_are_named():
    data = collection(
        feature({"id": "SL-1"}, {"type": "Point", "coordinates": [5.04, 47.32]}),
        {"type": "Point", "coordinates": [5.04, 47.32]},
        "SL-3",
        feature({"id": "SL-4"}, {"type": "Point", "coordinates": [5.04, 47.32]}),
        feature([1, 2], None),
    )
    found = failure(read_geojson, data).problems
    assert [(p.where, p.field) for p in found] == [("feature 2", "type"), ("feature 3", "type"),
                                                   ("feature 5", "properties")]


@pytest.mark.parametrize("coordinates", [[5.04], ["5.04", "47.32"], [True, 47.32], None])
def test_point_needs_two_numbers(coordinates):
    [problem] = failure(read_geojson, collection(feature({}, {"type": "Point", "coordinates": coordinates}))).problems
    assert (problem.where, problem.field) == ("feature 1", "geometry")


def test_feature_id_must_agree_with_properties_id():
    data = collection(feature({"id": "SL-2"}, None, "SL-1"))
    [problem] = failure(read_geojson, data).problems
    assert problem.field == "id" and "'SL-1'" in problem.message and "'SL-2'" in problem.message


@pytest.mark.parametrize("document", [b"[]", b'{"type": "Feature"', b'{"type": "Topology"}',
                                      b'{"type": "FeatureCollection"}', b'{"type": "FeatureCollection", "features": {}}',
                                      b"42"])
def test_not_a_feature_collection(document):
    err = failure(read_geojson, document)
    assert len(err.problems) == 1


@pytest.mark.parametrize("data", [pytest.param(b"[" * 100_000, id="deeply-nested"),
                                  pytest.param(b'{"a": ' + b"1" * 5000 + b"}", id="5000-digit-integer")])
def test_hostile_json_is_a_validation_failure_not_a_crash(data):
    [problem] = failure(read_geojson, data).problems
    assert problem.where == "file"


def test_geojson_not_utf8():
    [problem] = failure(read_geojson, b'{"type": "FeatureCollection", "features": [], "x": "\xe9"}').problems
    assert "not UTF-8" in problem.message


# --- detect_format and read_registry_file ----------------------------------------------------------------

@pytest.mark.parametrize("filename, content_type, head, expected", [
    ("assets.csv", None, b"{", "csv"),
    ("ASSETS.GEOJSON", None, b"id,kind", "geojson"),
    ("assets.json", None, b"", "geojson"),
    (None, "application/geo+json", b"", "geojson"),
    (None, "text/csv; charset=utf-8", b"{", "csv"),
    ("upload", "application/octet-stream", b'  \n{"type"', "geojson"),
    ("upload", "application/octet-stream", b"[", "geojson"),
    (None, None, b"id;kind;name", "csv"),
    (None, None, b"", "csv"),
])
def test_detect_format(filename, content_type, head, expected):
    assert detect_format(filename, content_type, head) == expected


def test_read_registry_file_dispatches_and_refuses_unknown_formats():
    assert read_registry_file(b"id,kind,name\na,b,c\n", "csv")[0].values["id"] == "a"
    assert read_registry_file(collection(), "geojson") == []
    [problem] = failure(lambda d: read_registry_file(d, "xlsx"), b"").problems
    assert "'xlsx'" in problem.message


# --- export, then import: nothing changes ----------------------------------------------------------------

def stored_rows(sheets: list[AssetSheet]) -> list[dict[str, Any]]:
    """Rows as the repository returns them: JSON-shaped geometry (lists) and attributes, a date object."""
    communes = metropole()
    rows = []
    for s in sheets:
        rows.append({
            "id": s.id, "kind": s.kind, "name": s.name, "lat": s.lat, "lon": s.lon, "commune": s.commune,
            "commune_name": communes.name(s.commune), "address": s.address, "service": s.service,
            "manufacturer": s.manufacturer, "model": s.model, "installed_on": s.installed_on, "status": s.status,
            "reported_by": s.reported_by, "geometry": json.loads(json.dumps(s.geometry)) if s.geometry else None,
            "attributes": json.loads(json.dumps(s.attributes)),
        })
    return rows


def attribute_names(rows: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for row in rows:
        for spec in default_catalog().kind(row["kind"]).attributes:
            if spec.name not in names:
                names.append(spec.name)
    return names


def csv_round_trip(sheets: list[AssetSheet]) -> list[AssetSheet]:
    rows = stored_rows(sheets)
    text = "".join(write_csv(rows, attribute_names(rows)))
    return validate(read_csv(text.encode("utf-8")))


def geojson_round_trip(sheets: list[AssetSheet]) -> list[AssetSheet]:
    text = "".join(write_geojson(stored_rows(sheets)))
    return validate(read_geojson(text.encode("utf-8")))


def assert_same(before: list[AssetSheet], after: list[AssetSheet]) -> None:
    assert [s.id for s in after] == [s.id for s in before]
    for old, new in zip(before, after):
        assert new.comparable() == old.comparable(), old.id
        assert (new.x, new.y) == (old.x, old.y)


ORIGINAL = [
    {"id": "CAB-1", "kind": "lighting_cabinet", "name": "Armoire Darcy", "lat": 47.32253, "lon": 5.03514,
     "address": "Place Darcy", "installed_on": "2016-09-12",
     "attributes": {"circuits": 6, "contracted_power_kva": 36.0, "energy_meter_id": "PRM 0012"}},
    {"id": "SL-1", "kind": "street_light", "name": 'Lanterne "style" Darcy; n°1, côté nord\nmât B',
     "lat": 47.322531234567891, "lon": 5.035141234567891, "manufacturer": "Comatelec", "model": "Avento",
     "installed_on": "2019-04-01", "reported_by": "CAB-1",
     "attributes": {"lamp_power_w": 42.5, "lamp_technology": "LED", "presence_detection": False,
                    "pole_height_m": 8, "safety_floor_pct": 20.0}},
    {"id": "SL-2", "kind": "street_light", "name": "Future light", "lat": 47.3369, "lon": 5.0036,
     "status": "planned", "installed_on": "2027-01-15", "service": "roads"},
    {"id": "CYC-1", "kind": "street_light", "name": "Cycle path lighting", "status": "out_of_service",
     "geometry": {"type": "LineString",
                  "coordinates": [[5.0412345678912, 47.3212345678912], [5.0456789012345, 47.3256789012345],
                                  [5.05, 47.33]]}},
    {"id": "ZONE-1", "kind": "parking_sensor", "name": "Zone", "lat": 47.3153, "lon": 5.1061,
     "geometry": "POLYGON ((5.105 47.315, 5.107 47.315, 5.107 47.316, 5.105 47.316, 5.105 47.315))",
     "attributes": {"bay_type": "delivery", "max_stay_min": 30}},
    {"id": "CAM-1", "kind": "camera", "name": "Caméra Liberté", "lat": 47.3220, "lon": 5.0415,
     "attributes": {"camera_type": "ptz", "recording_days": 30}},
]


@pytest.fixture(scope="module")
def original_sheets() -> list[AssetSheet]:
    return validate([RawRecord(f"item {i}", dict(v)) for i, v in enumerate(ORIGINAL)])


def test_csv_export_reimported_gives_identical_sheets(original_sheets):
    assert_same(original_sheets, csv_round_trip(original_sheets))


def test_geojson_export_reimported_gives_identical_sheets(original_sheets):
    assert_same(original_sheets, geojson_round_trip(original_sheets))


def test_round_trips_are_stable(original_sheets):
    once = csv_round_trip(geojson_round_trip(original_sheets))
    assert_same(original_sheets, csv_round_trip(geojson_round_trip(once)))


def test_csv_export_layout(original_sheets):
    rows = stored_rows(original_sheets)
    text = "".join(write_csv(rows, ["lamp_power_w", "presence_detection"]))
    header, first = text.splitlines()[:2]
    assert header.split(",") == list(CSV_BASE_COLUMNS) + ["attr.lamp_power_w", "attr.presence_detection"]
    assert first.startswith("CAB-1,lighting_cabinet,Armoire Darcy,47.32253,5.03514,21231,Dijon,")
    light = next(csv.reader(io.StringIO(text.split("\n", 1)[1].split("\n", 1)[1])))
    assert light[0] == "SL-1"
    assert light[2] == 'Lanterne "style" Darcy; n°1, côté nord\nmât B'
    assert light[-2:] == ["42.5", "false"]  # booleans are written true/false, which the import reads back


def test_geojson_export_layout(original_sheets):
    document = json.loads("".join(write_geojson(stored_rows(original_sheets))))
    assert document["type"] == "FeatureCollection"
    cabinet, light = document["features"][:2]
    assert cabinet["id"] == "CAB-1"
    assert cabinet["geometry"] == {"type": "Point", "coordinates": [5.03514, 47.32253]}
    assert cabinet["properties"]["commune_name"] == "Dijon"
    assert "lat" not in cabinet["properties"] and "reported_by" not in cabinet["properties"]
    assert light["properties"]["reported_by"] == "CAB-1"
    line = document["features"][3]
    assert line["geometry"]["type"] == "LineString"
    assert (line["properties"]["lat"], line["properties"]["lon"]) == (original_sheets[3].lat, original_sheets[3].lon)


@pytest.mark.parametrize("text", ["old Mac\rline end", "Windows\r\nline end", "Unix\nline end", 'a "quote"', "a;b,c"])
def test_csv_export_keeps_control_characters_and_separators_in_text(text):
    sheets = validate([RawRecord("item 0", {"id": "SL-1", "kind": "street_light", "name": text, "address": text,
                                            "lat": 47.3220, "lon": 5.0415})])
    rows = stored_rows(sheets)
    exported = "".join(write_csv(rows, []))
    assert len(list(csv.reader(io.StringIO(exported, newline="")))) == 2  # header and one record
    [again] = validate(read_csv(exported.encode()))
    assert (again.name, again.address) == (text, text)


def test_large_csv_export_is_streamed_in_chunks():
    sheets = validate([RawRecord(f"item {i}", {"id": f"SL-{i}", "kind": "street_light", "name": f"Light {i}" * 5,
                                               "lat": 47.32 + i * 1e-6, "lon": 5.04})
                       for i in range(2000)])
    chunks = list(write_csv(stored_rows(sheets), []))
    assert len(chunks) > 1
    assert_same(sheets, validate(read_csv("".join(chunks).encode())))


# Text a valid sheet may hold: any character but surrogates and control characters (refused on input).
texts = (st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)
         .map(str.strip).filter(bool))


def attribute_value(spec):
    if spec.enum:
        return st.sampled_from(spec.enum)
    if spec.type == "number":
        return st.floats(spec.min if spec.min is not None else -1e6, spec.max if spec.max is not None else 1e6)
    if spec.type == "integer":
        return st.integers(int(spec.min) if spec.min is not None else -10 ** 6,
                           int(spec.max) if spec.max is not None else 10 ** 6)
    if spec.type == "boolean":
        return st.booleans()
    return st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=spec.max_length)


@st.composite
def sheet_record(draw, index: int) -> dict[str, Any]:
    """Any valid record of any kind, located in a box well inside Dijon."""
    catalog = default_catalog()
    kind = draw(st.sampled_from(sorted(catalog.kinds)))
    spec = catalog.kind(kind)
    record: dict[str, Any] = {"id": f"A-{index}", "kind": kind, "name": draw(texts)}
    located = True
    if draw(st.booleans()):
        points = draw(st.lists(st.tuples(st.floats(5.02, 5.06), st.floats(47.31, 47.335)),
                               min_size=2, max_size=5, unique=True))
        record["geometry"] = {"type": "LineString", "coordinates": [list(p) for p in points]}
        located = draw(st.booleans())
    if located:
        record["lat"], record["lon"] = draw(st.floats(47.315, 47.330)), draw(st.floats(5.030, 5.050))
    for name in ("address", "manufacturer", "model"):
        if draw(st.booleans()):
            record[name] = draw(texts)
    if draw(st.booleans()):
        record["installed_on"] = draw(st.dates(dt.date(1850, 1, 1), TODAY)).isoformat()
    if draw(st.booleans()):
        record["status"] = draw(st.sampled_from(["in_service", "out_of_service", "retired"]))
    if draw(st.booleans()):
        record["service"] = draw(st.sampled_from(sorted(catalog.services)))
    if spec.reported_by and draw(st.booleans()):
        record["reported_by"] = "ELSEWHERE-1"
    record["attributes"] = draw(st.fixed_dictionaries(
        {}, optional={a.name: attribute_value(a) for a in spec.attributes}))
    return record


batches = st.integers(1, 4).flatmap(lambda n: st.tuples(*(sheet_record(i) for i in range(n))))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches)
@example(({"id": "A-0", "kind": "street_light", "name": "0\r0", "lat": 47.328125, "lon": 5.03125, "attributes": {}},))
@example(({"id": "A-0", "kind": "air_quality_station", "name": "0", "lat": 47.328125, "lon": 5.03125,
           "attributes": {"pollutants": " NO2, PM10\r"}},))
def test_any_valid_sheets_survive_both_round_trips(values):
    sheets = validate([RawRecord(f"item {i}", dict(v)) for i, v in enumerate(values)])
    assert_same(sheets, csv_round_trip(sheets))
    assert_same(sheets, geojson_round_trip(sheets))


@settings(max_examples=200, deadline=None)
@given(st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from(["id", "kind", "name", "lat", "attr.x", ";", ",", '"', "\n", "\r", "a", "1", "{", "["]),
             max_size=40).map(lambda parts: "".join(parts).encode()),
))
def test_any_bytes_are_records_or_a_validation_failure(data):
    for reader in (read_csv, read_geojson):
        try:
            records = reader(data)
        except ValidationFailed as err:
            assert err.problems
        else:
            assert all(isinstance(r, RawRecord) for r in records)
