"""The equipment catalogue: the shipped catalog.toml, parse_catalog's checks and FieldSpec.coerce."""

from __future__ import annotations

import copy
import datetime as dt
import math
import tomllib
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citypilot.auth.roles import ROLES
from citypilot.equipment.catalog import CatalogError, FieldError, FieldSpec, default_catalog, parse_catalog

KINDS = {"street_light", "lighting_cabinet", "traffic_controller", "bus", "service_vehicle", "bollard_site",
         "information_panel", "parking_sensor", "air_quality_station", "camera", "building_alarm_panel"}


# --- the shipped catalogue -----------------------------------------------------------------------------

def test_default_catalog_has_the_11_kinds():
    catalog = default_catalog()
    assert set(catalog.kinds) == KINDS


def test_default_catalog_is_consistent():
    catalog = default_catalog()
    for spec in catalog.kinds.values():
        assert spec.service in catalog.services, spec.name
        assert spec.domain in catalog.domains
        assert spec.geometry in ("point", "line", "polygon")
        assert spec.reporting_interval_s is None or spec.reporting_interval_s > 0
        for command in spec.commands:
            assert command.roles and set(command.roles) <= set(ROLES), (spec.name, command.name)
    assert list(catalog.domains) == sorted(set(catalog.domains))


def test_default_catalog_facts_the_rest_of_citypilot_relies_on():
    catalog = default_catalog()
    light = catalog.kind("street_light")
    assert light.fiware_type == "Streetlight"
    assert light.service == "lighting"
    assert light.reported_by == ("lighting_cabinet",)
    assert light.attribute["lamp_power_w"].type == "number"
    assert light.attribute["lamp_power_w"].max == 1000
    assert {c.name for c in light.commands} == {"switch", "dim"}
    assert catalog.kind("lighting_cabinet").reported_by == ()
    assert catalog.restricted_kinds() == ["building_alarm_panel", "camera"]
    assert catalog.kind("traffic_controller").attribute["signal_groups"].type == "integer"
    bollard_lower = next(c for c in catalog.kind("bollard_site").commands if c.name == "lower")
    assert bollard_lower.confirm is True
    assert set(bollard_lower.roles) == {"admin", "supervisor", "police"}


def test_catalog_kind_unknown_lists_the_known_kinds():
    with pytest.raises(FieldError) as err:
        default_catalog().kind("lamp_post")
    assert "'lamp_post'" in str(err.value) and "street_light" in str(err.value)


def test_kind_describe_is_plain_data():
    described = default_catalog().kind("street_light").describe()
    assert described["kind"] == "street_light"
    assert described["attributes"]["lamp_power_w"] == {"type": "number", "required": False, "label": "Rated lamp power",
                                                       "unit": "W", "min": 1, "max": 1000}
    assert described["commands"]["dim"]["params"]["level_pct"]["required"] is True
    assert described["reported_by"] == ["lighting_cabinet"]


def test_shipped_catalog_needs_the_police_role():
    # bollards and cameras may only be commanded by roles that exist: drop 'police' and the file is refused
    document = tomllib.loads(resources.files("citypilot.equipment").joinpath("catalog.toml").read_text("utf-8"))
    with pytest.raises(CatalogError, match=r"commands\.\w+: roles must be .*\(unknown: police\)"):
        parse_catalog(document, tuple(r for r in ROLES if r != "police"))


# --- parse_catalog checks ------------------------------------------------------------------------------

MINIMAL = {
    "services": {"lighting": {"label": "Public lighting"}},
    "kinds": {
        "lamp": {
            "label": "Lamp", "label_fr": "Lampe", "fiware_type": "Streetlight", "domain": "lighting",
            "service": "lighting", "geometry": "point", "reporting_interval_s": 60, "reported_by": ["box"],
            "attributes": {"power": {"type": "number", "min": 0, "max": 100}, "note": "string"},
            "commands": {"switch": {"label": "Switch", "roles": ["operator"],
                                    "params": {"state": {"type": "string", "enum": ["on", "off"], "required": True}}}},
        },
        "box": {"label": "Box", "label_fr": "Boîte", "fiware_type": "Device", "domain": "lighting",
                "service": "lighting", "geometry": "point"},
    },
}


def doc() -> dict:
    return copy.deepcopy(MINIMAL)


def test_minimal_document_parses():
    catalog = parse_catalog(doc(), ROLES)
    lamp = catalog.kind("lamp")
    assert lamp.reported_by == ("box",)
    assert lamp.attribute["note"] == FieldSpec("note", "string")
    assert lamp.commands[0].params[0].enum == ("on", "off")
    assert catalog.services == {"lighting": "Public lighting"}
    assert catalog.domains == ("lighting",)
    assert catalog.kind("box").reporting_interval_s is None
    assert catalog.restricted_kinds() == []


def broken(mutate) -> str:
    document = doc()
    mutate(document)
    with pytest.raises(CatalogError) as err:
        parse_catalog(document, ROLES)
    return str(err.value)


def test_unknown_service_is_named():
    message = broken(lambda d: d["kinds"]["lamp"].update(service="plumbing"))
    assert message.startswith("kinds.lamp.service:") and "'plumbing'" in message


def test_bad_geometry_is_named():
    message = broken(lambda d: d["kinds"]["lamp"].update(geometry="circle"))
    assert message.startswith("kinds.lamp.geometry:") and "point, line, polygon" in message


def test_unknown_kind_key_is_named():
    message = broken(lambda d: d["kinds"]["lamp"].update(colour="blue"))
    assert message.startswith("kinds.lamp:") and "unknown key(s) colour" in message


def test_missing_kind_keys_are_named():
    message = broken(lambda d: [d["kinds"]["lamp"].pop(k) for k in ("label_fr", "domain")])
    assert message == "kinds.lamp: missing domain, label_fr"


def test_command_with_unknown_role_is_named():
    message = broken(lambda d: d["kinds"]["lamp"]["commands"]["switch"].update(roles=["operator", "janitor"]))
    assert message.startswith("kinds.lamp.commands.switch:") and "(unknown: janitor)" in message


def test_command_without_roles_is_refused():
    message = broken(lambda d: d["kinds"]["lamp"]["commands"]["switch"].pop("roles"))
    assert message.startswith("kinds.lamp.commands.switch: roles must be a non-empty list")


def test_reported_by_unknown_kind_is_named():
    message = broken(lambda d: d["kinds"]["lamp"].update(reported_by=["ghost"]))
    assert message == "kinds.lamp.reported_by: unknown kind 'ghost'"


def test_unknown_field_key_is_named():
    message = broken(lambda d: d["kinds"]["lamp"]["attributes"]["power"].update(minimum=0))
    assert message == "kinds.lamp.attributes.power: unknown key(s) minimum"


def test_bad_field_type_is_named():
    message = broken(lambda d: d["kinds"]["lamp"]["attributes"].update(power={"type": "float"}))
    assert message.startswith("kinds.lamp.attributes.power: type must be one of")


def test_bad_field_name_is_named():
    message = broken(lambda d: d["kinds"]["lamp"]["attributes"].update({"Power W": "number"}))
    assert message.startswith("kinds.lamp.attributes:") and "'Power W'" in message


def test_bad_command_parameter_is_named():
    message = broken(lambda d: d["kinds"]["lamp"]["commands"]["switch"]["params"].update(level={"type": "percent"}))
    assert message.startswith("kinds.lamp.commands.switch.params.level:")


def test_bad_kind_name_is_named():
    message = broken(lambda d: d["kinds"].update({"Lamp-2": d["kinds"]["box"]}))
    assert message.startswith("kinds.Lamp-2:")


@pytest.mark.parametrize("interval", [0, -5, "fast", 1.5])
def test_bad_reporting_interval_is_named(interval):
    message = broken(lambda d: d["kinds"]["lamp"].update(reporting_interval_s=interval))
    assert message.startswith("kinds.lamp.reporting_interval_s:")


def test_services_are_required_and_checked():
    assert broken(lambda d: d.pop("services")) == "[services] must list at least one service"
    assert broken(lambda d: d["services"].update(Roads={"label": "Roads"})).startswith("services.Roads:")
    assert broken(lambda d: d["services"].update(roads={})).startswith("services.roads:")


def test_at_least_one_kind_is_required():
    assert broken(lambda d: d.pop("kinds")) == "[kinds] must describe at least one kind"


# --- FieldSpec.coerce ----------------------------------------------------------------------------------

NUMBER = FieldSpec("power", "number", min=1, max=1000, unit="W")
INTEGER = FieldSpec("circuits", "integer", min=1, max=64)
BOOLEAN = FieldSpec("radio", "boolean")
DATE = FieldSpec("since", "date")
TEXT = FieldSpec("note", "string", max_length=10)
ENUM = FieldSpec("tech", "string", enum=("LED", "HPS"))


@pytest.mark.parametrize("spec, value, from_text, expected", [
    (TEXT, "hello", False, "hello"),
    (TEXT, "x" * 10, False, "x" * 10),
    (ENUM, "LED", False, "LED"),
    (NUMBER, 12, False, 12),
    (NUMBER, 12.5, False, 12.5),
    (NUMBER, 1, False, 1),            # bounds are inclusive
    (NUMBER, 1000.0, False, 1000.0),
    (NUMBER, "12.5", True, 12.5),
    (NUMBER, " 12,5 ", True, 12.5),   # French decimal comma in a CSV cell
    (NUMBER, "1e2", True, 100.0),
    (INTEGER, 3, False, 3),
    (INTEGER, 3.0, False, 3),
    (INTEGER, " 12 ", True, 12),
    (BOOLEAN, True, False, True),
    (BOOLEAN, False, False, False),
    (BOOLEAN, "true", True, True),
    (BOOLEAN, " Yes ", True, True),
    (BOOLEAN, "1", True, True),
    (BOOLEAN, "oui", True, True),
    (BOOLEAN, "FALSE", True, False),
    (BOOLEAN, "0", True, False),
    (BOOLEAN, "non", True, False),
    (DATE, "2024-03-01", False, dt.date(2024, 3, 1)),
    (DATE, " 2024-03-01 ", True, dt.date(2024, 3, 1)),
    (DATE, dt.date(2024, 3, 1), False, dt.date(2024, 3, 1)),
])
def test_coerce_accepts(spec, value, from_text, expected):
    result = spec.coerce(value, from_text=from_text)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize("spec, value, from_text, message", [
    (TEXT, 5, False, "expected text, got a number"),
    (TEXT, None, False, "expected text, got null"),
    (TEXT, ["a"], False, "expected text, got a list"),
    (TEXT, "x" * 11, False, "longer than 10 characters"),
    (ENUM, "led", False, "'led' is not one of: LED, HPS"),
    (NUMBER, "12.5", False, "expected a number, got text"),      # text only from a CSV cell
    (NUMBER, True, False, "expected a number, got a boolean"),   # bool is an int in Python, not a number here
    (NUMBER, False, False, "expected a number, got a boolean"),
    (NUMBER, {"v": 1}, False, "expected a number, got an object"),
    (NUMBER, "twelve", True, "expected a number, got 'twelve'"),
    (NUMBER, "", True, "expected a number, got ''"),
    (NUMBER, float("nan"), False, "expected a finite number"),
    (NUMBER, float("inf"), False, "expected a finite number"),
    (NUMBER, float("-inf"), False, "expected a finite number"),
    (NUMBER, "nan", True, "expected a finite number"),
    (NUMBER, "inf", True, "expected a finite number"),
    (NUMBER, "1e400", True, "expected a finite number"),
    pytest.param(NUMBER, 10 ** 400, False, "expected a finite number", id="huge-int"),  # a JSON body can carry one
    (NUMBER, 0.5, False, "0.5 is below the minimum 1W"),
    (NUMBER, 1000.5, False, "1000.5 is above the maximum 1000W"),
    (INTEGER, 3.5, False, "expected an integer, got 3.5"),
    (INTEGER, True, False, "expected an integer, got a boolean"),
    (INTEGER, "3", False, "expected an integer, got text"),
    (INTEGER, "3.5", True, "expected an integer, got '3.5'"),
    (INTEGER, float("nan"), False, "expected an integer"),
    (INTEGER, float("inf"), False, "expected an integer"),
    (INTEGER, 0, False, "0 is below the minimum 1"),
    (INTEGER, 65, False, "65 is above the maximum 64"),
    (BOOLEAN, "true", False, "expected true or false"),          # text only from a CSV cell
    (BOOLEAN, 1, False, "expected true or false"),
    (BOOLEAN, "maybe", True, "expected true or false, got 'maybe'"),
    (DATE, "2024-02-30", False, "expected a date (YYYY-MM-DD), got '2024-02-30'"),
    (DATE, "01/03/2024", True, "expected a date (YYYY-MM-DD)"),
    (DATE, 20240301, False, "expected a date (YYYY-MM-DD), got a number"),
    (DATE, dt.datetime(2024, 3, 1, 12, 0), False, "expected a date (YYYY-MM-DD), got datetime"),
])
def test_coerce_refuses(spec, value, from_text, message):
    with pytest.raises(FieldError) as err:
        spec.coerce(value, from_text=from_text)
    assert message in str(err.value)


def test_numeric_enum():
    spec = FieldSpec("lines", "integer", enum=(1, 2, 4))
    assert spec.coerce("4", from_text=True) == 4
    with pytest.raises(FieldError, match="3 is not one of: 1, 2, 4"):
        spec.coerce(3)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10 ** 6), 10 ** 6)))
def test_number_coerce_returns_a_finite_value_within_bounds_or_refuses(value):
    try:
        result = NUMBER.coerce(value)
    except FieldError:
        assert not (isinstance(value, (int, float)) and math.isfinite(value) and 1 <= value <= 1000)
    else:
        assert math.isfinite(result) and 1 <= result <= 1000
        assert result == value


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([NUMBER, INTEGER, BOOLEAN, DATE, TEXT, ENUM]), st.text(max_size=20))
def test_any_csv_cell_is_coerced_or_refused_with_a_field_error(spec, cell):
    try:
        spec.coerce(cell, from_text=True)
    except FieldError:
        pass
