"""validate_sheets: identity sheets are checked in batches and every problem says where and which field."""

from __future__ import annotations

import datetime as dt
import math

import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import shape

from citypilot.equipment.catalog import default_catalog
from citypilot.geo.communes import metropole
from citypilot.geo.projection import point_to_lambert93
from citypilot.registry.sheet import (
    ASSET_ID_RE,
    AssetSheet,
    Problem,
    RawRecord,
    ValidationFailed,
    fold,
    unresolved_reporters,
    validate_sheets,
)

TODAY = dt.date(2025, 6, 1)
DIJON = {"lat": 47.3220, "lon": 5.0415}
PARIS = {"lat": 48.8566, "lon": 2.3522}


def light(asset_id: str = "SL-0001", **values) -> dict:
    record = {"id": asset_id, "kind": "street_light", "name": "Rue de la Liberté 12", **DIJON}
    record.update(values)
    return {k: v for k, v in record.items() if v is not ...}


def records(*values: dict, from_text: bool = False) -> list[RawRecord]:
    """Records as a CSV file would give them: the header is line 1, the first record line 2."""
    return [RawRecord(f"line {i}", v, line=i, from_text=from_text) for i, v in enumerate(values, start=2)]


def validate(*values: dict, from_text: bool = False, **kwargs) -> list[AssetSheet]:
    return validate_sheets(records(*values, from_text=from_text), default_catalog(), metropole(), today=TODAY, **kwargs)


def problems(*values: dict, from_text: bool = False, **kwargs) -> list[Problem]:
    with pytest.raises(ValidationFailed) as err:
        validate(*values, from_text=from_text, **kwargs)
    return err.value.problems


def only_problem(*values: dict, from_text: bool = False) -> Problem:
    found = problems(*values, from_text=from_text)
    assert len(found) == 1, found
    return found[0]


# --- valid sheets ------------------------------------------------------------------------------------

def test_valid_record_gives_a_sheet_in_dijon_with_projected_coordinates():
    [sheet] = validate(light())
    assert sheet.id == "SL-0001"
    assert sheet.kind == "street_light"
    assert sheet.name == "Rue de la Liberté 12"
    assert (sheet.lat, sheet.lon) == (47.3220, 5.0415)
    assert sheet.commune == "21231"
    x, y = point_to_lambert93(5.0415, 47.3220)
    assert (sheet.x, sheet.y) == (pytest.approx(x), pytest.approx(y))
    assert sheet.x == pytest.approx(854_184.5, abs=1) and sheet.y == pytest.approx(6_693_290.5, abs=1)
    # defaults
    assert sheet.service == "lighting"  # the kind's service
    assert sheet.status == "in_service"
    assert sheet.geometry is None and sheet.reported_by is None and sheet.installed_on is None
    assert sheet.attributes == {}


def test_full_record():
    [sheet] = validate(light(address="  12 rue de la Liberté ", service="roads", manufacturer="Comatelec",
                             model="Avento", installed_on="2019-04-01", status="out_of_service",
                             reported_by="CAB-7", commune="21231", commune_name="Dijon",
                             attributes={"lamp_power_w": 42.5, "lamp_technology": "LED", "presence_detection": True}))
    assert sheet.address == "12 rue de la Liberté"  # trimmed
    assert sheet.service == "roads"
    assert (sheet.manufacturer, sheet.model) == ("Comatelec", "Avento")
    assert sheet.installed_on == dt.date(2019, 4, 1)
    assert sheet.status == "out_of_service"
    assert sheet.reported_by == "CAB-7"
    assert sheet.attributes == {"lamp_power_w": 42.5, "lamp_technology": "LED", "presence_detection": True}


def test_csv_cells_are_parsed():
    [sheet] = validate({"id": "SL-1", "kind": "street_light", "name": "x", "lat": "47,3220", "lon": " 5.0415 ",
                        "attributes": {"lamp_power_w": "42,5", "presence_detection": "oui", "pole_height_m": ""}},
                       from_text=True)
    assert (sheet.lat, sheet.lon) == (47.3220, 5.0415)
    assert sheet.attributes == {"lamp_power_w": 42.5, "presence_detection": True}


def test_comparable_and_search_text():
    [sheet] = validate(light(installed_on="2019-04-01", manufacturer="Thorn"))
    comparable = sheet.comparable()
    assert comparable["installed_on"] == "2019-04-01"
    assert comparable["commune"] == "21231"
    assert "id" not in comparable
    assert sheet.search_text("Dijon", "Point lumineux") == "sl-0001 rue de la liberte 12 dijon point lumineux thorn"
    assert fold("Fontaine-lès-Dijon ÉTÉ") == "fontaine-les-dijon ete"


def test_sheets_come_back_in_input_order():
    sheets = validate(*(light(f"SL-{i}") for i in range(20)))
    assert [s.id for s in sheets] == [f"SL-{i}" for i in range(20)]


# --- problems, each naming where and the field -----------------------------------------------------------

def test_unknown_kind():
    problem = only_problem(light(kind="lamp_post"))
    assert (problem.where, problem.field, problem.line) == ("line 2", "kind", 2)
    assert "'lamp_post'" in problem.message and "street_light" in problem.message


def test_unknown_field():
    problem = only_problem(light(colour="green"))
    assert (problem.where, problem.field) == ("line 2", "colour")
    assert problem.message.startswith("unknown field")


@pytest.mark.parametrize("field_name", ["id", "kind", "name"])
@pytest.mark.parametrize("missing", [..., None, "", "   "])
def test_required_fields(field_name, missing):
    problem = only_problem(light(**{field_name: missing}))
    assert (problem.field, problem.message) == (field_name, "is required")


@pytest.mark.parametrize("bad_id", ["a/b", "a+b", "a#b", "a b", "a.b", "x" * 65, "-abc", "_abc", "été", "a*b",
                                    "a>b", "a\tb"])
def test_invalid_ids(bad_id):
    problem = only_problem(light(bad_id))
    assert (problem.where, problem.field) == ("line 2", "id")
    assert "not a valid id" in problem.message


@pytest.mark.parametrize("good_id", ["x", "0", "SL-0001", "a_b-C", "x" * 64, "21231-EP-000123"])
def test_valid_ids(good_id):
    assert validate(light(good_id))[0].id == good_id


def test_id_longer_than_the_text_limit():
    problem = only_problem(light("x" * 201))
    assert problem.field == "id" and "longer than" in problem.message


def test_duplicate_id_in_a_batch_points_to_the_first():
    found = problems(light("SL-1"), light("SL-2"), light("SL-1"))
    assert len(found) == 1
    assert (found[0].where, found[0].field) == ("line 4", "id")
    assert "duplicate id 'SL-1'" in found[0].message and "line 2" in found[0].message


@pytest.mark.parametrize("field_name, value", [
    ("lat", 91), ("lat", -90.5), ("lon", 180.01), ("lon", -181),
    ("lat", float("nan")), ("lon", float("inf")),
    pytest.param("lat", 10 ** 400, id="lat-huge-int"),  # an integer too large for a float, as a JSON body can carry
])
def test_coordinates_out_of_range(field_name, value):
    problem = only_problem(light(**{field_name: value}))
    assert problem.field == field_name
    assert ("latitude" if field_name == "lat" else "longitude") in problem.message


@pytest.mark.parametrize("value", ["47.3", True, [47.3], {"v": 47.3}])
def test_coordinate_of_the_wrong_type(value):
    problem = only_problem(light(lat=value))
    assert problem.field == "lat" and "expected a number in decimal degrees" in problem.message


def test_coordinate_text_that_is_not_a_number():
    problem = only_problem(light(lat="north"), from_text=True)
    assert problem.field == "lat" and "'north'" in problem.message


def test_outside_the_metropole():
    problem = only_problem(light(**PARIS))
    assert (problem.where, problem.field) == ("line 2", "lat")
    assert "outside the metropole" in problem.message and "23 communes" in problem.message


def test_lat_without_lon_and_lon_without_lat():
    problem = only_problem(light(lon=...))
    assert (problem.field, problem.message) == ("lon", "lat and lon go together")
    problem = only_problem(light(lat=None))
    assert (problem.field, problem.message) == ("lat", "lat and lon go together")


def test_a_location_is_required():
    problem = only_problem(light(lat=..., lon=...))
    assert problem.field == "lat" and "a location is required" in problem.message


@pytest.mark.parametrize("field_name, value", [
    ("name", 12), ("kind", ["street_light"]), ("address", 5), ("service", True), ("status", 1),
    ("manufacturer", {"name": "x"}), ("model", 3.5), ("reported_by", 7), ("commune", 21231),
])
def test_wrong_types(field_name, value):
    problem = only_problem(light(**{field_name: value}))
    assert problem.field == field_name and problem.message.startswith("expected text")


@pytest.mark.parametrize("field_name, limit", [("name", 200), ("address", 300), ("manufacturer", 100), ("model", 100)])
def test_text_limits(field_name, limit):
    assert validate(light(**{field_name: "x" * limit}))
    problem = only_problem(light(**{field_name: "x" * (limit + 1)}))
    assert problem.field == field_name and problem.message == f"longer than {limit} characters"


def test_attributes_must_be_an_object():
    problem = only_problem(light(attributes=["LED"]))
    assert problem.field == "attributes"


def test_unknown_attribute():
    problem = only_problem(light(attributes={"colour": "green"}))
    assert (problem.where, problem.field) == ("line 2", "attributes.colour")
    assert "street_light" in problem.message and "lamp_power_w" in problem.message


@pytest.mark.parametrize("name, value, message", [
    ("lamp_power_w", 5000, "above the maximum 1000W"),
    ("lamp_power_w", 0, "below the minimum 1W"),
    ("lamp_power_w", "50", "expected a number, got text"),
    ("lamp_power_w", True, "expected a number, got a boolean"),
    ("lamp_technology", "sodium", "is not one of"),
    ("presence_detection", "yes", "expected true or false"),
])
def test_attribute_values_are_checked(name, value, message):
    problem = only_problem(light(attributes={name: value}))
    assert problem.field == f"attributes.{name}" and message in problem.message


def test_attribute_text_is_trimmed_and_empty_attributes_are_left_out():
    cabinet = {"id": "CAB-1", "kind": "lighting_cabinet", "name": "Cabinet", **DIJON,
               "attributes": {"energy_meter_id": "  PRM 0012 ", "circuits": None, "contracted_power_kva": "  "}}
    [sheet] = validate(cabinet)
    assert sheet.attributes == {"energy_meter_id": "PRM 0012"}
    [same] = validate(dict(cabinet, attributes={"energy_meter_id": "PRM 0012"}))
    assert same.comparable() == sheet.comparable()


def test_attribute_of_another_kind():
    record = {"id": "CAB-1", "kind": "lighting_cabinet", "name": "Cabinet", **DIJON,
              "attributes": {"circuits": 4.5, "lamp_power_w": 50}}
    found = problems(record)
    assert {p.field for p in found} == {"attributes.circuits", "attributes.lamp_power_w"}


@pytest.mark.parametrize("value", ["2024-02-30", "yesterday", "01/03/2024", 2024])
def test_bad_installed_on(value):
    problem = only_problem(light(installed_on=value))
    assert problem.field == "installed_on" and "YYYY-MM-DD" in problem.message


def test_installation_before_1850():
    problem = only_problem(light(installed_on="1849-12-31"))
    assert problem.field == "installed_on" and "before 1850-01-01" in problem.message


@pytest.mark.parametrize("status", [..., "in_service", "out_of_service"])
def test_future_installation_needs_status_planned(status):
    problem = only_problem(light(installed_on="2025-06-02", status=status))
    assert problem.field == "installed_on" and "in the future" in problem.message


def test_a_cancelled_project_can_be_retired_with_its_planned_date():
    [sheet] = validate(light(installed_on="2026-01-01", status="retired"))
    assert sheet.status == "retired" and sheet.installed_on == dt.date(2026, 1, 1)


def test_csv_attribute_problems_name_the_column():
    record = RawRecord("line 4", {"id": "SL-1", "kind": "street_light", "name": "x", "lat": "47.322", "lon": "5.0415",
                                  "attributes": {"lamp_power_w": "lots", "colour": "red"}}, line=4, from_text=True)
    with pytest.raises(ValidationFailed) as info:
        validate_sheets([record], default_catalog(), metropole(), today=TODAY)
    assert sorted(p.field for p in info.value.problems) == ["attr.colour", "attr.lamp_power_w"]


def test_future_installation_of_planned_equipment():
    [sheet] = validate(light(installed_on="2026-01-01", status="planned"))
    assert sheet.installed_on == dt.date(2026, 1, 1) and sheet.status == "planned"
    assert validate(light(installed_on=TODAY.isoformat()))[0].installed_on == TODAY  # today is not the future


def test_unknown_status():
    problem = only_problem(light(status="broken"))
    assert problem.field == "status" and "'broken'" in problem.message and "planned" in problem.message


def test_unknown_service():
    problem = only_problem(light(service="plumbing"))
    assert problem.field == "service" and "'plumbing'" in problem.message and "lighting" in problem.message


def test_reported_by_itself():
    problem = only_problem(light("SL-1", reported_by="SL-1"))
    assert problem.field == "reported_by" and "itself" in problem.message


def test_reported_by_for_a_kind_that_reports_for_itself():
    camera = {"id": "CAM-1", "kind": "camera", "name": "Place Darcy", **DIJON, "reported_by": "NVR-1"}
    problem = only_problem(camera)
    assert problem.field == "reported_by" and "a camera reports for itself" in problem.message


def test_reported_by_invalid_id():
    problem = only_problem(light(reported_by="cab/1"))
    assert problem.field == "reported_by" and "not a valid id" in problem.message


def test_reporter_in_the_same_batch_must_be_of_an_allowed_kind():
    found = problems(light("SL-1"), light("SL-2", reported_by="SL-1"))
    assert len(found) == 1
    assert (found[0].where, found[0].field) == ("line 3", "reported_by")
    assert "SL-1 is a street_light" in found[0].message and "lighting_cabinet" in found[0].message


def test_reporter_in_the_same_batch_of_the_right_kind():
    cabinet = {"id": "CAB-1", "kind": "lighting_cabinet", "name": "Armoire 1", **DIJON}
    sheets = validate(light("SL-1", reported_by="CAB-1"), cabinet, light("SL-2", reported_by="CAB-9"))
    assert sheets[0].reported_by == "CAB-1"
    assert unresolved_reporters(sheets) == {"CAB-9"}  # the store must confirm CAB-9 exists


def test_commune_given_but_wrong():
    problem = only_problem(light(commune="21617"))
    assert problem.field == "commune"
    assert "21617" in problem.message and "21231" in problem.message and "Dijon" in problem.message


def test_commune_given_and_right():
    assert validate(light(commune="21231"))[0].commune == "21231"


def test_commune_is_assigned_from_the_location():
    talant = validate(light(lat=47.3369, lon=5.0036))[0]
    assert talant.commune == "21617"


# --- geometry --------------------------------------------------------------------------------------------

LINE_WKT = "LINESTRING (5.030 47.320, 5.040 47.325, 5.050 47.330)"


def test_linestring_wkt_gives_the_location_when_lat_lon_are_absent():
    [sheet] = validate(light(lat=..., lon=..., geometry=LINE_WKT))
    assert sheet.geometry["type"] == "LineString"
    line = shape(sheet.geometry)
    assert line.equals(shapely.from_wkt(LINE_WKT))
    assert line.distance(shapely.Point(sheet.lon, sheet.lat)) < 1e-9  # the location lies on the line
    assert sheet.commune == "21231"
    x, y = point_to_lambert93(sheet.lon, sheet.lat)
    assert (sheet.x, sheet.y) == (pytest.approx(x), pytest.approx(y))


def test_geometry_as_geojson_object_or_text():
    geojson = {"type": "LineString", "coordinates": [[5.03, 47.32], [5.05, 47.33]]}
    [from_dict] = validate(light(lat=..., lon=..., geometry=geojson))
    [from_text] = validate(light(lat=..., lon=..., geometry='{"type": "LineString", "coordinates": '
                                                           '[[5.03, 47.32], [5.05, 47.33]]}'))
    assert from_dict.comparable() == from_text.comparable()
    assert shape(from_dict.geometry).equals(shape(geojson))


def test_given_location_is_kept_with_a_geometry():
    [sheet] = validate(light(geometry=LINE_WKT))
    assert (sheet.lat, sheet.lon) == (47.3220, 5.0415)


def test_point_geometry_is_the_location():
    [sheet] = validate(light(lat=..., lon=..., geometry="POINT (5.0036 47.3369)"))
    assert (sheet.lon, sheet.lat) == (5.0036, 47.3369)
    assert sheet.geometry is None
    assert sheet.commune == "21617"


def test_polygon_location_lies_inside_it():
    square = "POLYGON ((5.03 47.32, 5.04 47.32, 5.04 47.33, 5.03 47.33, 5.03 47.32))"
    [sheet] = validate(light(lat=..., lon=..., geometry=square))
    assert shapely.from_wkt(square).contains(shapely.Point(sheet.lon, sheet.lat))


@pytest.mark.parametrize("geometry, message", [
    ("GARBAGE", "not a valid GeoJSON or WKT geometry"),
    ("LINESTRING (5.03 47.32)", "not a valid GeoJSON or WKT geometry"),
    ("LINESTRING (5.03 47.32, 5.03 47.32)", "LineString is empty or invalid"),
    ("POLYGON ((5.00 47.30, 5.10 47.30, 5.00 47.35, 5.10 47.35, 5.00 47.30))", "Polygon is empty or invalid"),
    ("LINESTRING EMPTY", "empty or invalid"),
    ("MULTIPOINT ((5.03 47.32), (5.04 47.32))", "MultiPoint is not supported"),
    ({"type": "LineString", "coordinates": "nope"}, "not a valid GeoJSON or WKT geometry"),
    ('{"type": "LineString",', "not a valid GeoJSON or WKT geometry"),
    (42, "not a valid GeoJSON or WKT geometry"),
    ("LINESTRING (5.03 47.32, 2.35 48.85)", "extends outside the metropole"),
])
def test_invalid_geometry(geometry, message):
    problem = only_problem(light(geometry=geometry))
    assert (problem.where, problem.field) == ("line 2", "geometry")
    assert message in problem.message


def test_invalid_geometry_without_a_location():
    found = problems(light(lat=..., lon=..., geometry="GARBAGE"))
    assert found[0].field == "geometry"
    assert {p.field for p in found} <= {"geometry", "lat"}


# --- batches ---------------------------------------------------------------------------------------------

def test_one_bad_record_fails_the_batch_and_only_it_is_reported():
    batch = [light(f"SL-{i}") for i in range(60)]
    batch[30] = light("SL-30", lat=48.8566, lon=2.3522, attributes={"lamp_power_w": 0})
    with pytest.raises(ValidationFailed) as err:
        validate(*batch)
    found = err.value.problems
    assert {p.where for p in found} == {"line 32"}
    assert {p.field for p in found} == {"attributes.lamp_power_w"}
    assert err.value.total == len(found)


def test_one_record_outside_the_metropole_among_many():
    batch = [light(f"SL-{i}") for i in range(60)]
    batch[45] = light("SL-45", **PARIS)
    with pytest.raises(ValidationFailed) as err:
        validate(*batch)
    assert [(p.where, p.field) for p in err.value.problems] == [("line 47", "lat")]


def test_every_problem_of_a_record_is_listed():
    found = problems(light("a b", kind="lamp", status="broken", colour="red"))
    assert {p.field for p in found} == {"id", "kind", "status", "colour"}
    assert {p.where for p in found} == {"line 2"}


def test_max_problems_caps_the_list_but_total_counts_all():
    with pytest.raises(ValidationFailed) as err:
        validate(*(light(f"bad id {i}") for i in range(10)), max_problems=3)
    assert len(err.value.problems) == 3
    assert err.value.total == 10
    assert [p.where for p in err.value.problems] == ["line 2", "line 3", "line 4"]
    assert str(err.value).startswith("10 problem(s): line 2, field 'id':")
    assert str(err.value).endswith("(and 7 more)")


def test_empty_batch_is_valid():
    assert validate() == []


def test_problem_forms():
    problem = Problem("line 12", "attributes.lamp_power_w", "5000 is above the maximum 1000W", 12)
    assert str(problem) == "line 12, field 'attributes.lamp_power_w': 5000 is above the maximum 1000W"
    assert problem.as_dict() == {"where": "line 12", "field": "attributes.lamp_power_w",
                                 "message": "5000 is above the maximum 1000W", "line": 12}
    no_field = Problem("body", None, "the file is empty")
    assert str(no_field) == "body: the file is empty"
    assert "line" not in no_field.as_dict()


# --- properties ------------------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=80), st.from_regex(ASSET_ID_RE, fullmatch=True),
                 st.text(alphabet="ab-_/+#. \n", max_size=70)))
def test_any_text_id_validates_and_matches_the_rule_or_is_a_problem_on_id(asset_id):
    try:
        [sheet] = validate(light(asset_id))
    except ValidationFailed as err:
        assert err.problems
        assert {p.field for p in err.problems} == {"id"}
        assert not ASSET_ID_RE.fullmatch(asset_id.strip())
    else:
        assert ASSET_ID_RE.fullmatch(sheet.id)
        assert sheet.id == asset_id.strip()


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(47.2, 47.4)),
       st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(4.85, 5.25)))
def test_any_coordinates_give_a_located_sheet_or_a_problem_on_lat_or_lon(lat, lon):
    try:
        [sheet] = validate(light(lat=lat, lon=lon))
    except ValidationFailed as err:
        assert err.problems
        assert {p.field for p in err.problems} <= {"lat", "lon"}
        if math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180:
            assert metropole().locate(lon, lat) is None
    else:
        assert sheet.commune == metropole().locate(lon, lat)
        assert sheet.commune is not None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6)
any_record = st.fixed_dictionaries({}, optional={
    "id": st.text(max_size=10) | json_values,
    "kind": st.sampled_from(["street_light", "camera", "lamp"]) | json_values,
    "name": json_values,
    "lat": st.floats(47.2, 47.4) | json_values,
    "lon": st.floats(4.9, 5.2) | json_values,
    "geometry": json_values | st.sampled_from(["LINESTRING (5.03 47.32, 5.05 47.33)", "POINT (5 47.3)", "POLYGON EMPTY",
                                               "GEOMETRYCOLLECTION (POINT (5 47.3))", '{"type": "Point"}']),
    "installed_on": st.dates().map(str) | json_values,
    "status": json_values, "reported_by": json_values, "commune": json_values, "service": json_values,
    "attributes": json_values | st.dictionaries(st.sampled_from(["lamp_power_w", "presence_detection", "colour"]),
                                                json_values, max_size=3),
    "colour": json_values,
})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(any_record, max_size=4), st.booleans())
def test_any_input_gives_sheets_or_located_problems_never_a_crash(values, from_text):
    try:
        sheets = validate(*values, from_text=from_text)
    except ValidationFailed as err:
        assert err.total >= len(err.problems) >= 1
        assert all(p.where.startswith("line ") for p in err.problems)
    else:
        assert len(sheets) == len(values)
        assert all(s.commune and ASSET_ID_RE.fullmatch(s.id) for s in sheets)


@pytest.mark.parametrize("text", ["Rue\x00de la Paix", "bell\x07", "esc\x1b[31m", "del\x7f"])
def test_control_characters_are_refused_in_text_fields(text):
    record = RawRecord("line 2", {"id": "SL-1", "kind": "street_light", "name": text, "lat": 47.322, "lon": 5.0415})
    with pytest.raises(ValidationFailed) as info:
        validate_sheets([record], default_catalog(), metropole())
    assert [(p.where, p.field) for p in info.value.problems] == [("line 2", "name")]
    assert "control characters" in info.value.problems[0].message
