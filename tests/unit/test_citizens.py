"""Citizens' requests, pure parts: the categories file, answers to their questions, reports, the address
index, photos and the Open311 documents."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import pytest
from PIL import Image

from citypilot.citizens import open311, photos
from citypilot.citizens.addresses import AddressIndex, fold, split_address
from citypilot.citizens.reports import ReportError, check_report
from citypilot.citizens.services import AnswerError, ServicesError, check_attributes, load_services, parse_services
from citypilot.equipment.catalog import default_catalog
from citypilot.geo.communes import metropole

SERVICES = dict(default_catalog().services)
DIJON = (47.3220, 5.0415)


@pytest.fixture(scope="module")
def catalogue():
    return load_services(None, SERVICES)


# --- the categories file ----------------------------------------------------------------------------

def test_the_shipped_categories_cover_the_citys_and_route_each_to_a_service(catalogue):
    codes = {s.code for s in catalogue.services}
    assert {"street_light", "pavement_obstruction", "pothole", "graffiti", "bulky_items", "traffic_light",
            "street_furniture", "cleanliness"} <= codes
    assert catalogue.get("street_light").service == "lighting" and catalogue.get("pothole").service == "roads"
    assert all(s.service in SERVICES and s.response_h <= s.resolution_h for s in catalogue.services)


GOOD = """
[[service]]
code = "pothole"
name = "Pothole"
description = "A hole"
group = "Roads"
service = "roads"
priority = "normal"
response_h = 24
resolution_h = 48

[[service.attribute]]
code = "size"
datatype = "singlevaluelist"
description = "How large?"
values = [{ key = "small", name = "Small" }]
"""


@pytest.mark.parametrize("change, line, reason", [
    (('service = "roads"', 'service = "rodas"'), 7, "unknown city service 'rodas'"),
    (('priority = "normal"', 'priority = "soon"'), 8, "priority must be one of"),
    (("response_h = 24", "response_h = 96"), 10, "resolution_h cannot be shorter than response_h"),
    (('code = "pothole"', 'code = "Pot hole"'), 3, "lowercase letters"),
    (('datatype = "singlevaluelist"', 'datatype = "color"'), 14, "datatype must be one of"),
    (('values = [{ key = "small", name = "Small" }]', ''), 12, "a list question needs values"),
    (("resolution_h = 48", "resolution_h = 48\nsla = 3"), 11, "unknown key 'sla'"),
    (('group = "Roads"', 'group = "Roads'), 6, "TOML syntax error"),
])
def test_a_wrong_categories_file_is_refused_with_its_line(change, line, reason):
    text = GOOD.replace(*change)
    with pytest.raises(ServicesError) as caught:
        parse_services(text, "cats.toml", SERVICES)
    assert caught.value.line == line, caught.value
    assert reason in caught.value.reason and str(caught.value).startswith(f"cats.toml:{line}:")


def test_a_code_used_twice_is_refused():
    with pytest.raises(ServicesError, match="used twice"):
        parse_services(GOOD + GOOD.split("[[service.attribute]]")[0], "cats.toml", SERVICES)


def test_answers_are_checked_against_each_questions_datatype(catalogue):
    pothole = catalogue.get("pothole")
    assert check_attributes(pothole, {"size": "large", "depth_cm": "12"}) == {"size": "large", "depth_cm": 12}
    assert check_attributes(pothole, {"size": "", "depth_cm": None}) == {}  # optional ones may stay empty
    with pytest.raises(AnswerError, match="not one of"):
        check_attributes(pothole, {"size": "huge"})
    with pytest.raises(AnswerError, match="a number is expected"):
        check_attributes(pothole, {"depth_cm": "deep"})
    with pytest.raises(AnswerError, match="finite"):
        check_attributes(pothole, {"depth_cm": "nan"})
    with pytest.raises(AnswerError, match="asks no such question"):
        check_attributes(pothole, {"colour": "red"})
    with pytest.raises(AnswerError, match="required"):
        check_attributes(catalogue.get("traffic_light"), {})
    furniture = catalogue.get("street_furniture")
    assert check_attributes(furniture, {"item": ["bench", "bin", "bench"]}) == {"item": ["bench", "bin"]}
    with pytest.raises(AnswerError, match="'sofa' is not one of"):
        check_attributes(furniture, {"item": ["bench", "sofa"]})
    with pytest.raises(AnswerError, match="one line"):
        check_attributes(catalogue.get("abandoned_vehicle"), {"registration": "AB-123\nCD"})


# --- reports --------------------------------------------------------------------------------------

def report(catalogue, index=None, **fields):
    base = {"channel": "open311", "client": "app", "service_code": "pothole", "lat": DIJON[0], "long": DIJON[1]}
    return check_report(catalogue, metropole(), index, **{**base, **fields})


@pytest.mark.parametrize("fields, field, code", [
    ({"service_code": None}, "service_code", "missing"),
    ({"service_code": "ufo"}, "service_code", "unknown-service"),
    ({"lat": None, "long": None}, "lat", "missing"),
    ({"long": None}, "long", "missing"),
    ({"lat": "north"}, "lat", "wrong-type"),
    ({"lat": "95"}, "lat", "out-of-range"),
    ({"lat": 48.8566, "long": 2.3522}, "lat", "outside"),             # Paris
    ({"description": "x" * 4001}, "description", "too-long"),
    ({"attributes": {"depth_cm": "deep"}}, "attribute[depth_cm]", "attribute"),
    ({"email": "not an address"}, "email", "wrong-type"),
    ({"phone": "call me"}, "phone", "wrong-type"),
    ({"media_url": "javascript:alert(1)"}, "media_url", "wrong-type"),
    ({"lat": None, "long": None, "address_string": "1 rue de nulle part, Dijon"}, "address_string", "unknown-address"),
])
def test_a_wrong_report_names_its_field(catalogue, fields, field, code):
    with pytest.raises(ReportError) as caught:
        report(catalogue, AddressIndex([]), **fields)
    assert (caught.value.field, caught.value.code) == (field, code), caught.value


def test_a_report_is_cleaned_and_located(catalogue):
    checked = report(catalogue, description="  Big hole\x00 near the bus stop\n(left lane)  ", first_name=" Jeanne ")
    assert checked.description == "Big hole near the bus stop\n(left lane)" and checked.first_name == "Jeanne"
    assert checked.commune == "21231" and checked.service.service == "roads"  # Dijon's INSEE code
    index = AddressIndex([("12 rue de la Liberté, Dijon", 47.3221, 5.0390)])
    by_address = report(catalogue, index, lat=None, long=None, address_string="12 rue de la liberte")
    assert (by_address.lat, by_address.lon, by_address.address) == (47.3221, 5.039, "12 rue de la liberte")
    assert by_address.address_id == "dijon/rue-de-la-liberte/12"


# --- the address index ------------------------------------------------------------------------------

def test_addresses_are_folded_split_and_found_by_prefix():
    assert fold("Rue de l’Église-Saint-Michel") == "rue de l eglise saint michel"
    assert split_address("12 bis rue Chabot-Charny, Dijon") == ("12", "rue Chabot-Charny", "Dijon")
    assert split_address("Place Darcy, Dijon") == (None, "Place Darcy", "Dijon")
    index = AddressIndex([("12 rue de la Liberté, Dijon", 47.3221, 5.0390), ("20 rue de la Liberté, Dijon", 47.3222, 5.0380),
                          ("3 rue de la Liberté, Chenôve", 47.29, 5.00), ("1 avenue Jean Jaurès, Dijon", 47.31, 5.03),
                          ("Place Darcy, Dijon", 47.3226, 5.0345), ("no commune here", 1.0, 1.0)])
    assert len(index) == 4
    found = index.search("12 rue de la lib")
    assert [a.label for a in found] == ["12 rue de la Liberté, Chenôve", "12 rue de la Liberté, Dijon"]
    assert found[1].exact and (found[1].lat, found[1].lon) == (47.3221, 5.039)
    assert not found[0].exact  # Chenôve's street has no number 12: placed at its nearest number
    assert [a.label for a in index.search("jaures")] == ["avenue Jean Jaurès, Dijon"]
    assert [a.label for a in index.search("liberte dijon 14")] == []   # a number after the street is a word
    assert index.search("14 liberte dijon")[0].label == "14 rue de la Liberté, Dijon"
    assert index.resolve("dijon/rue-de-la-liberte/20").lat == 47.3222
    assert index.resolve("dijon/place-darcy").label == "Place Darcy, Dijon"
    assert index.resolve("nowhere/street/1") is None and index.search("   ") == []


# --- photos -----------------------------------------------------------------------------------------

def jpeg_with_gps(size=(64, 48)) -> bytes:
    image = Image.new("RGB", size, (200, 30, 30))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"                     # Make
    exif[0x8825] = {2: (47.0, 19.0, 30.0), 1: "N"}   # GPSInfo
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif)
    return out.getvalue()


def test_a_photo_is_re_encoded_without_its_metadata():
    raw = jpeg_with_gps()
    assert b"PhoneMaker" in raw
    clean = photos.clean(raw + b"<?php echo 'hidden'; ?>")
    assert clean.content_type == "image/jpeg" and (clean.width, clean.height) == (64, 48)
    assert b"PhoneMaker" not in clean.data and b"<?php" not in clean.data
    assert not Image.open(io.BytesIO(clean.data)).getexif()


@pytest.mark.parametrize("raw, status, reason", [
    (b"", 422, "empty"),
    (b"%PDF-1.4 not a photo at all", 415, "not an image"),
    (b"GIF89a" + b"\x00" * 100, 415, "not an image"),
])
def test_what_is_not_a_photo_is_refused(raw, status, reason):
    with pytest.raises(photos.PhotoError) as caught:
        photos.clean(raw)
    assert caught.value.status == status and reason in caught.value.reason


def test_too_large_truncated_and_gif_photos_are_refused():
    with pytest.raises(photos.PhotoError) as caught:
        photos.clean(jpeg_with_gps(), max_bytes=100)
    assert caught.value.status == 413
    with pytest.raises(photos.PhotoError) as caught:
        photos.clean(jpeg_with_gps((800, 600))[:400])
    assert caught.value.status == 422
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, "GIF")
    with pytest.raises(photos.PhotoError, match="GIF"):
        photos.clean(gif.getvalue())


def test_a_decompression_bomb_is_refused_before_decoding():
    out = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(out, "PNG")  # 100 megapixels in a few kilobytes
    assert len(out.getvalue()) < 100_000
    with pytest.raises(photos.PhotoError) as caught:
        photos.clean(out.getvalue())
    assert caught.value.status in (413, 415)


# --- Open311 documents ------------------------------------------------------------------------------

def test_open311_documents_in_xml_and_json(catalogue):
    items = [open311.service_item(s, "Roads") for s in catalogue.services[:2]]
    xml = open311.render("xml", "services", items)
    assert xml.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    root = ET.fromstring(xml)
    assert root.tag == "services" and [c.tag for c in root] == ["service", "service"]
    first = root[0]
    assert [c.tag for c in first] == ["service_code", "service_name", "description", "metadata", "type", "keywords",
                                      "group"]
    assert first.find("metadata").text == "true" and first.find("type").text == "realtime"
    definition = ET.fromstring(open311.render("xml", "service_definition",
                                              open311.service_definition(catalogue.get("pothole"))))
    attribute = definition.find("attributes/attribute")
    assert attribute.find("code").text == "size" and attribute.find("values/value/key").text == "small"
    assert definition.find("attributes/attribute[2]/values") is None  # a number question has no values
    errors = ET.fromstring(open311.errors("xml", [(404, "not found")]))
    assert (errors.tag, errors.find("error/code").text, errors.find("error/description").text) == ("errors", "404",
                                                                                                  "not found")
    assert open311.errors("json", [(403, "no key")]) == b'[{"code":403,"description":"no key"}]'


def test_open311_answers_from_a_form():
    form = [("attribute[size]", "large"), ("attribute[item][]", "bench"), ("attribute[item][]", "bin"),
            ("service_code", "pothole"), ("attribute[broken", "x")]
    assert open311.answers_from_form(form) == {"size": "large", "item": ["bench", "bin"]}


# --- duplicate locks ---------------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from citypilot.citizens.store import LOCK_CELL_M, area_lock_keys  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(x=st.floats(800_000, 900_000), y=st.floats(6_650_000, 6_750_000), radius=st.floats(1, 1000),
       angle=st.floats(0, 6.283), fraction=st.floats(0, 1))
def test_two_reports_that_could_be_duplicates_always_share_a_lock(x, y, radius, angle, fraction):
    """A second report within the duplicate radius of the first must wait for it: they share a key."""
    import math

    x2, y2 = x + math.cos(angle) * radius * fraction, y + math.sin(angle) * radius * fraction
    assert set(area_lock_keys("pothole", x, y, radius)) & set(area_lock_keys("pothole", x2, y2, radius))


def test_far_apart_or_other_categories_do_not_wait_for_each_other():
    here = area_lock_keys("pothole", 854_500.0, 6_692_500.0, 50)  # mid-cell
    assert len(here) == 1 and here == sorted(here)
    assert not set(here) & set(area_lock_keys("pothole", 854_500.0 + 3 * LOCK_CELL_M, 6_692_500.0, 50))
    assert not set(here) & set(area_lock_keys("graffiti", 854_500.0, 6_692_500.0, 50))
    corner = area_lock_keys("pothole", 854_999.0, 6_692_999.0, 50)  # near a corner: the four cells around it
    assert len(corner) == 4 and all(0 <= k < 2**63 for k in corner)
