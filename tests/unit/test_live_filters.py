"""The live feed's filters: parsing (query parameters and filter frames alike), precise errors, matching
of journal entries and twin assets, and role visibility. Pure: no server."""

from __future__ import annotations

import json

import pytest

from citypilot.equipment.catalog import default_catalog
from citypilot.geo.communes import metropole
from citypilot.live.filters import (
    AssetFacts,
    FilterError,
    LiveFilter,
    Vocabulary,
    parse_filter,
)

VOCABULARY = Vocabulary.from_catalog(default_catalog(), metropole().by_insee)
DIJON, CHENOVE = "21231", "21166"
SQUARE = {"type": "Polygon", "coordinates": [[[5.0, 47.3], [5.1, 47.3], [5.1, 47.4], [5.0, 47.4], [5.0, 47.3]]]}


def entry(**fields):
    base = {"id": 1, "domain": "lighting", "type": "alarm.raised", "severity": "major", "kind": "street_light",
            "commune": DIJON, "lat": 47.32, "lon": 5.04, "restricted": False}
    return {**base, **fields}


def light(**fields):
    return AssetFacts(**{"kind": "street_light", "domain": "lighting", "commune": DIJON, "lat": 47.32, "lon": 5.04,
                         **fields})


def parse(role="operator", **raw):
    return parse_filter(raw, VOCABULARY, role)


def error(role="operator", **raw) -> FilterError:
    with pytest.raises(FilterError) as caught:
        parse(role, **raw)
    return caught.value


def test_no_filter_lets_everything_visible_through():
    flt = parse()
    assert flt.twin and flt.any_asset
    assert flt.matches_entry(entry()) and flt.matches_entry(entry(severity=None, kind=None, commune=None, lat=None, lon=None))
    assert flt.matches_asset(light())


def test_query_strings_and_frame_lists_parse_alike():
    from_query = parse(domain="lighting,traffic", commune=f"{DIJON}, {CHENOVE}", kind="street_light",
                       bbox="5.0,47.3,5.1,47.4", severity="minor", type="alarm.*,device.event", twin="false",
                       polygon=json.dumps(SQUARE))
    from_frame = parse(domain=["lighting", "traffic"], commune=[DIJON, CHENOVE], kind=["street_light"],
                       bbox=[5.0, 47.3, 5.1, 47.4], severity="minor", type=["alarm.*", "device.event"], twin=False,
                       polygon=SQUARE)
    assert from_query.describe() == from_frame.describe()
    assert from_query.describe()["twin"] is False and from_query.min_severity == "minor"


@pytest.mark.parametrize("raw, field, words", [
    ({"domain": "lightning"}, "domain", "unknown domain 'lightning'"),
    ({"kind": "lamp"}, "kind", "unknown kind 'lamp'"),
    ({"commune": "75056"}, "commune", "unknown commune '75056'"),
    ({"commune": "dijon"}, "commune", "unknown commune"),
    ({"bbox": "5,47,5.1"}, "bbox", "4 numbers"),
    ({"bbox": "5.1,47,5.0,47.5"}, "bbox", "min < max"),
    ({"bbox": "a,b,c,d"}, "bbox", "4 numbers"),
    ({"bbox": [5, 47, "x", 48]}, "bbox", "4 numbers"),
    ({"bbox": "nan,47,5,48"}, "bbox", "4 numbers"),
    ({"severity": "high"}, "severity", "critical, major, minor, warning"),
    ({"type": "Alarm.Raised"}, "type", "invalid type"),
    ({"type": "alarm*"}, "type", "invalid type"),
    ({"twin": "yes"}, "twin", "true or false"),
    ({"polygon": "{not json"}, "polygon", "not JSON"),
    ({"polygon": {"type": "Point", "coordinates": [5, 47]}}, "polygon", "Polygon"),
    ({"polygon": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}}, "polygon", "invalid"),
    ({"colour": "red"}, "colour", "unknown filter"),
    ({"domain": 3}, "domain", "list of strings"),
])
def test_errors_name_the_field_and_the_problem(raw, field, words):
    problem = error(**raw)
    assert problem.field == field and words in problem.message, problem


def test_severity_is_a_minimum_and_entries_without_one_are_left_out():
    flt = parse(severity="major")
    assert flt.matches_entry(entry(severity="critical")) and flt.matches_entry(entry(severity="major"))
    assert not flt.matches_entry(entry(severity="minor")) and not flt.matches_entry(entry(severity="warning"))
    assert not flt.matches_entry(entry(type="connectivity.offline", severity=None))
    assert flt.matches_asset(light())  # twin deltas have no severity: not filtered on it


def test_types_exact_or_family():
    flt = parse(type="alarm.*,connectivity.offline")
    assert flt.matches_entry(entry(type="alarm.raised")) and flt.matches_entry(entry(type="alarm.cleared"))
    assert flt.matches_entry(entry(type="connectivity.offline"))
    assert not flt.matches_entry(entry(type="connectivity.online")) and not flt.matches_entry(entry(type="alarmist.x"))


def test_commune_domain_kind():
    flt = parse(commune=CHENOVE)
    assert not flt.matches_entry(entry()) and flt.matches_entry(entry(commune=CHENOVE))
    assert not flt.matches_entry(entry(commune=None))
    assert not flt.matches_asset(light()) and flt.matches_asset(light(commune=CHENOVE))
    flt = parse(domain="traffic,operations")
    assert not flt.matches_entry(entry()) and flt.matches_entry(entry(domain="operations", kind=None))
    assert flt.matches_asset(AssetFacts(kind="traffic_controller", domain="traffic"))
    flt = parse(kind="lighting_cabinet")
    assert not flt.matches_entry(entry()) and not flt.matches_entry(entry(kind=None))
    assert flt.matches_asset(light(kind="lighting_cabinet"))


def test_zone_bbox_and_polygon():
    inside, outside = {"lon": 5.05, "lat": 47.35}, {"lon": 5.2, "lat": 47.35}
    for flt in (parse(bbox="5.0,47.3,5.1,47.4"), parse(polygon=SQUARE)):
        assert flt.matches_entry(entry(**inside)) and not flt.matches_entry(entry(**outside))
        assert not flt.matches_entry(entry(lon=None, lat=None))  # no position: not in any zone
        assert flt.matches_asset(light(**inside)) and not flt.matches_asset(light(**outside))
        assert not flt.matches_asset(AssetFacts(kind="street_light", domain="lighting"))
        assert not flt.any_asset
    triangle = {"type": "Polygon", "coordinates": [[[5.0, 47.3], [5.1, 47.3], [5.0, 47.4], [5.0, 47.3]]]}
    flt = parse(polygon=triangle)  # inside the bbox of the triangle, outside the triangle
    assert flt.matches_entry(entry(lon=5.01, lat=47.31)) and not flt.matches_entry(entry(lon=5.09, lat=47.39))


def test_restricted_only_for_public_safety_roles():
    secret = entry(restricted=True, domain="public_safety", kind="building_alarm_panel")
    camera = AssetFacts(kind="camera", domain="public_safety", restricted=True)
    for role in ("operator", "service_coordinator", "read_only", "switchboard"):
        flt = parse(role)
        assert not flt.matches_entry(secret) and not flt.matches_asset(camera)
        assert not flt.matches_entry(entry(restricted=False, kind="camera"))  # a restricted kind, flag or not
        assert not flt.matches_entry(entry(restricted=True))                  # a restricted entry, any kind
        assert "may not see" in error(role, kind="camera").message
        assert "may not see" in error(role, domain="public_safety").message
        assert "camera" not in (flt.visible_kinds(VOCABULARY) or ())
    for role in ("police", "supervisor", "admin"):
        flt = parse(role, kind="camera,building_alarm_panel")
        assert flt.matches_entry(secret) and flt.matches_asset(camera)
        assert parse(role).visible_kinds(VOCABULARY) is None


def test_visible_kinds_prefilter():
    assert parse("police", domain="lighting").visible_kinds(VOCABULARY) == {"street_light", "lighting_cabinet"}
    assert parse("police", domain="lighting", kind="street_light,bus").visible_kinds(VOCABULARY) == {"street_light"}


def test_filter_is_replaced_whole_and_describes_itself():
    flt = parse(commune=DIJON, type="alarm.*")
    described = flt.describe()
    assert described["commune"] == [DIJON] and described["type"] == ["alarm.*"] and described["severity"] is None
    again = parse_filter({k: v for k, v in described.items() if v not in (None, [])}, VOCABULARY, "operator")
    assert again == flt
    assert parse_filter({}, Vocabulary({}, frozenset()), "police") == LiveFilter(sees_restricted=True)


def test_a_service_follows_its_equipment_and_the_alarms_that_tell_it():
    from citypilot.equipment.catalog import default_catalog
    from citypilot.live.filters import FilterError, Vocabulary, parse_filter

    vocabulary = Vocabulary.from_catalog(default_catalog())
    flt = parse_filter({"service": "police"}, vocabulary, "police")
    assert flt.matches_entry({"type": "alarm.raised", "service": "parking", "data": {"notify": ["police"]}})
    assert flt.matches_entry({"type": "device.event", "service": "police", "data": {}})
    assert not flt.matches_entry({"type": "alarm.raised", "service": "lighting", "data": {"notify": ["lighting"]}})
    assert not flt.matches_entry({"type": "registry.updated", "service": None, "data": {}})
    import pytest

    with pytest.raises(FilterError, match="service"):
        parse_filter({"service": "plumbing"}, vocabulary, "operator")
