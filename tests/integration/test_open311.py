"""Open311 GeoReport v2 conformance, written from the specification (http://wiki.open311.org/GeoReport_v2).

What an Open311 client relies on, in both formats (``.json`` and ``.xml``): discovery, the service list,
service definitions, creating a request with an ``api_key`` (form-encoded, and multipart with a ``media``
photo), following it by id and by token, searching, ``jurisdiction_id``, and the specification's error
documents (``[{code, description}]`` / ``<errors><error><code/><description/></error></errors>``) with
the HTTP status of the error. A refused request stores nothing; the requester's personal data is never
shown by the public API.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from .conftest import LAT, LON, City, utcnow

pytestmark = pytest.mark.integration

SPEC = "http://wiki.open311.org/GeoReport_v2"
CONTENT_TYPES = {"json": "application/json", "xml": "text/xml"}
PARIS = ("48.8566", "2.3522")
FORMATS = ("json", "xml")
_spots = itertools.count()


def spot() -> tuple[str, str]:
    """A point inside the metropole, at least ~300 m from every other this module reports at (and from
    the central point other tests use), so that no report is linked to another as a near-duplicate."""
    i = next(_spots) % 100
    return f"{LAT - 0.0135 + 0.003 * (i % 10):.6f}", f"{LON - 0.018 + 0.004 * (i // 10):.6f}"


def media_type(response: Any) -> str:
    return response.headers["content-type"].split(";")[0].strip()


def parse(response: Any, fmt: str) -> Any:
    """The document of a response, checking its content type: JSON, or the XML root element."""
    assert media_type(response) == CONTENT_TYPES[fmt], (response.status_code, response.headers, response.text)
    if fmt == "json":
        return response.json()
    assert response.content.startswith(b"<?xml"), response.text[:200]
    return ET.fromstring(response.content)  # well-formed, or this raises


def error(response: Any, status: int, fmt: str = "json", *words: str) -> str:
    """Check an Open311 error document with ``status``; returns its (single) description, which must hold
    each of ``words``."""
    assert response.status_code == status, (response.status_code, response.text)
    doc = parse(response, fmt)
    if fmt == "json":
        assert isinstance(doc, list) and len(doc) == 1, doc
        assert set(doc[0]) == {"code", "description"}, doc
        code, description = doc[0]["code"], doc[0]["description"]
        assert code == status
    else:
        assert doc.tag == "errors", response.text
        items = list(doc)
        assert [e.tag for e in items] == ["error"], response.text
        assert sorted(child.tag for child in items[0]) == ["code", "description"], response.text
        code, description = items[0].findtext("code"), items[0].findtext("description")
        assert code == str(status)
    assert description, response.text
    for word in words:
        assert word in description, (word, description)
    return description


def text(element: ET.Element, name: str) -> str | None:
    child = element.find(name)
    assert child is not None, f"<{element.tag}> has no <{name}>: {ET.tostring(element, encoding='unicode')}"
    return child.text


def counts(city: City) -> tuple[int, int, int]:
    """(requests, reports, photos) stored."""
    ((requests, reports, pictures),) = city.sql(
        "SELECT (SELECT count(*) FROM service_requests), (SELECT count(*) FROM request_reports), "
        "(SELECT count(*) FROM photos)")
    return requests, reports, pictures


@pytest.fixture
def key(city: City) -> str:
    """An Open311 api_key, issued through the admin API."""
    r = city.client.post("/api/v1/open311/clients", json={"name": f"conformance {city.uid}"}, headers=city.headers())
    assert r.status_code == 201, r.text
    assert r.json()["api_key"].startswith("o311_")
    return r.json()["api_key"]


def post(city: City, key: str | None, fmt: str = "json", files: Any = None, **fields: Any) -> Any:
    lat, long = spot()
    form = {"api_key": key, "service_code": "pothole", "lat": lat, "long": long,
            "description": "A deep hole in the cycle lane", **fields}
    return city.client.post(f"/open311/v2/requests.{fmt}", data={k: v for k, v in form.items() if v is not None},
                            files=files)


def created(response: Any, fmt: str = "json") -> dict[str, Any]:
    """The one item of a 201 answer to POST requests, as a dict of text (XML) or values (JSON)."""
    assert response.status_code == 201, response.text
    doc = parse(response, fmt)
    if fmt == "json":
        (item,) = doc
        return item
    assert doc.tag == "service_requests"
    (request,) = list(doc)
    assert request.tag == "request"
    return {child.tag: child.text for child in request}


# --- 1. Discovery ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/open311/discovery", "/open311/v2/discovery"])
def test_discovery_lists_the_v2_endpoint_and_its_formats(city, path):
    r = city.client.get(f"{path}.json")
    doc = parse(r, "json")
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
    for name in ("changeset", "contact", "key_service", "endpoints"):
        assert doc[name], name
    dt.datetime.fromisoformat(doc["changeset"])
    (endpoint,) = doc["endpoints"]
    assert endpoint["specification"] == SPEC and endpoint["type"] == "production"
    assert endpoint["url"] == "http://testserver/open311/v2/"
    assert set(endpoint["formats"]) == {"text/xml", "application/json"}
    assert city.client.get(endpoint["url"] + "services.json").status_code == 200  # the URL is usable as given

    r = city.client.get(f"{path}.xml")
    root = parse(r, "xml")
    assert r.status_code == 200 and root.tag == "discovery"
    for name in ("changeset", "contact", "key_service"):
        assert text(root, name)
    endpoints = root.find("endpoints")
    assert endpoints is not None and [e.tag for e in endpoints] == ["endpoint"]
    endpoint_xml = endpoints[0]
    assert text(endpoint_xml, "specification") == SPEC and text(endpoint_xml, "url") == endpoint["url"]
    assert text(endpoint_xml, "type") == "production"
    formats = endpoint_xml.find("formats")
    assert formats is not None and sorted(f.text for f in formats.findall("format")) == ["application/json", "text/xml"]

    error(city.client.get(f"{path}.csv"), 404, "json", "csv")


# --- 2. Service list -------------------------------------------------------------------------------

SERVICE_FIELDS = ("service_code", "service_name", "description", "metadata", "type", "keywords", "group")


def test_the_service_list_gives_every_field_of_every_service_in_both_formats(city):
    r = city.client.get("/open311/v2/services.json")
    assert r.status_code == 200
    services = parse(r, "json")
    assert isinstance(services, list) and len(services) >= 10
    for service in services:
        assert set(SERVICE_FIELDS) <= set(service), service
        for name in ("service_code", "service_name", "description", "keywords", "group"):
            assert isinstance(service[name], str) and service[name], (name, service)
        assert isinstance(service["metadata"], bool)
        assert service["type"] in ("realtime", "batch", "blackbox")
    by_code = {s["service_code"]: s for s in services}
    assert len(by_code) == len(services)
    pothole = by_code["pothole"]
    assert pothole["service_name"] == "Pothole" and pothole["group"] == "Roads" and pothole["metadata"] is True
    assert "nid-de-poule" in pothole["keywords"].split(", ")
    assert by_code["bulky_items"]["metadata"] is False  # no questions, no definition to fetch

    r = city.client.get("/open311/v2/services.xml")
    assert r.status_code == 200
    root = parse(r, "xml")
    assert root.tag == "services" and {e.tag for e in root} == {"service"}
    assert len(root) == len(services)
    for element, service in zip(root, services):
        assert [child.tag for child in element][:len(SERVICE_FIELDS)] == list(SERVICE_FIELDS)
        assert text(element, "metadata") == ("true" if service["metadata"] else "false")
        for name in ("service_code", "service_name", "description", "type", "keywords", "group"):
            assert text(element, name) == service[name]


# --- 3. Service definition -------------------------------------------------------------------------

ATTRIBUTE_FIELDS = ("variable", "code", "datatype", "required", "datatype_description", "order", "description")


def test_a_service_definition_gives_its_attributes_in_both_formats(city):
    r = city.client.get("/open311/v2/services/pothole.json")
    assert r.status_code == 200
    doc = parse(r, "json")
    assert doc["service_code"] == "pothole"
    size, depth = doc["attributes"]
    for attribute in (size, depth):
        assert set(ATTRIBUTE_FIELDS) <= set(attribute), attribute
        assert attribute["variable"] is True and attribute["required"] is False
    assert (size["code"], size["datatype"], size["order"]) == ("size", "singlevaluelist", 1)
    assert size["description"] == "How large is it?"
    assert size["values"] == [{"key": "small", "name": "Smaller than a hand"}, {"key": "medium", "name": "Like a plate"},
                              {"key": "large", "name": "Larger than a wheel"}]
    assert (depth["code"], depth["datatype"], depth["order"]) == ("depth_cm", "number", 2)
    assert depth["datatype_description"] == "A number of centimetres, 0 to 100" and "values" not in depth

    required = parse(city.client.get("/open311/v2/services/traffic_light.json"), "json")["attributes"][0]
    assert (required["code"], required["required"]) == ("signal_state", True)

    r = city.client.get("/open311/v2/services/pothole.xml")
    assert r.status_code == 200
    root = parse(r, "xml")
    assert root.tag == "service_definition" and text(root, "service_code") == "pothole"
    attributes = root.find("attributes")
    assert attributes is not None and [a.tag for a in attributes] == ["attribute", "attribute"]
    size_xml, depth_xml = attributes
    assert [child.tag for child in size_xml] == [*ATTRIBUTE_FIELDS, "values"]
    assert (text(size_xml, "variable"), text(size_xml, "required"), text(size_xml, "order")) == ("true", "false", "1")
    assert (text(size_xml, "code"), text(size_xml, "datatype")) == ("size", "singlevaluelist")
    values = size_xml.find("values")
    assert values is not None and [v.tag for v in values] == ["value"] * 3
    assert [(text(v, "key"), text(v, "name")) for v in values] == [(v["key"], v["name"]) for v in size["values"]]
    assert text(depth_xml, "datatype_description") == depth["datatype_description"]
    assert text(depth_xml, "datatype") == "number" and depth_xml.find("values") is None

    multi = parse(city.client.get("/open311/v2/services/street_furniture.json"), "json")["attributes"][0]
    assert multi["datatype"] == "multivaluelist" and {"key": "bench", "name": "Bench"} in multi["values"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_unknown_service_code_has_no_definition(city, fmt):
    error(city.client.get(f"/open311/v2/services/no_such_thing.{fmt}"), 404, fmt, "service_code", "no_such_thing")


def test_a_resource_without_or_with_an_unknown_format_is_not_found(city):
    error(city.client.get("/open311/v2/services/pothole"), 404, "json", ".xml or .json")
    error(city.client.get("/open311/v2/services/pothole.csv"), 404, "json", "csv")
    error(city.client.get("/open311/v2/services.csv"), 404, "json", "csv")
    error(city.client.get("/open311/v2/requests.csv"), 404, "json", "csv")
    error(city.client.get("/open311/v2/requests/1.yaml"), 404, "json", "yaml")


# --- 4. Creating a request, following it ------------------------------------------------------------

DESCRIPTION = "Trou profond <30 cm> & dangereux, près de l'église \"Saint-Michel\"\nsur la piste cyclable"


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_request_is_created_and_shown_without_its_requesters_personal_data(city, key, fmt):
    before = counts(city)
    lat, long = spot()
    personal = {"email": f"marguerite.{city.uid.lower()}@example.net", "first_name": "Marguerite",
                "last_name": "Duplessis", "phone": "+33 7 98 76 54 32", "device_id": f"device-{city.uid}"}
    r = city.client.post(f"/open311/v2/requests.{fmt}", data={
        "api_key": key, "service_code": "pothole", "lat": lat, "long": long,
        "description": DESCRIPTION, "attribute[size]": "medium", "attribute[depth_cm]": "7",
        "address_string": "Rue de la Liberté", **personal})
    item = created(r, fmt)
    assert set(item) >= {"service_request_id", "service_notice"}
    request_id = int(item["service_request_id"])
    assert item["token"] and "Roads" in item["service_notice"]
    assert counts(city) == (before[0] + 1, before[1] + 1, before[2])

    r = city.client.get(f"/open311/v2/requests/{request_id}.json")
    assert r.status_code == 200
    (shown,) = parse(r, "json")
    assert shown["service_request_id"] == request_id and shown["status"] == "open"
    assert (shown["service_code"], shown["service_name"]) == ("pothole", "Pothole")
    assert shown["agency_responsible"] == "Roads" and shown["description"] == DESCRIPTION
    assert (shown["lat"], shown["long"]) == (float(lat), float(long))
    requested = dt.datetime.fromisoformat(shown["requested_datetime"])
    assert requested.tzinfo is not None and abs(requested - utcnow()) < dt.timedelta(minutes=2)
    assert dt.datetime.fromisoformat(shown["updated_datetime"]) >= requested
    assert dt.datetime.fromisoformat(shown["expected_datetime"]) - requested == dt.timedelta(hours=240)
    for name in ("status_notes", "address", "address_id", "zipcode", "media_url", "service_notice"):
        assert name in shown, name

    r = city.client.get(f"/open311/v2/requests/{request_id}.xml")
    assert r.status_code == 200
    root = parse(r, "xml")
    assert root.tag == "service_requests" and [e.tag for e in root] == ["request"]
    element = root[0]
    assert text(element, "service_request_id") == str(request_id) and text(element, "status") == "open"
    assert text(element, "service_code") == "pothole"
    assert text(element, "description") == DESCRIPTION  # escaped, and UTF-8, in XML
    assert (float(text(element, "lat") or "nan"), float(text(element, "long") or "nan")) == (float(lat), float(long))
    assert dt.datetime.fromisoformat(text(element, "requested_datetime") or "") == requested

    bodies = [city.client.get(f"/open311/v2/requests/{request_id}.{f}").text for f in FORMATS]
    bodies += [city.client.get(f"/open311/v2/requests.{f}", params={"service_request_id": str(request_id)}).text
               for f in FORMATS]
    bodies += [city.client.get(f"/open311/v2/requests.{f}").text for f in FORMATS]
    bodies.append(r.text)
    for body in bodies:
        assert str(request_id) in body
        lowered = body.lower()
        for value in (personal["email"], "example.net", "marguerite", "duplessis", "98 76", "+33", personal["device_id"]):
            assert value.lower() not in lowered, value

    r = city.client.get(f"/open311/v2/tokens/{item['token']}.json")
    assert r.status_code == 200
    assert parse(r, "json") == [{"service_request_id": request_id, "token": item["token"]}]
    r = city.client.get(f"/open311/v2/tokens/{item['token']}.xml")
    assert r.status_code == 200
    token_root = parse(r, "xml")
    assert token_root.tag == "service_requests" and [e.tag for e in token_root] == ["request"]
    assert text(token_root[0], "service_request_id") == str(request_id)
    assert text(token_root[0], "token") == item["token"]

    staff = city.client.get(f"/api/v1/requests/{request_id}", headers=city.headers("switchboard")).json()
    assert staff["reports_detail"][0]["email"] == personal["email"]  # kept, for the staff allowed to see it
    assert staff["attributes"] == {"size": "medium", "depth_cm": 7}


@pytest.mark.parametrize("fmt", FORMATS)
def test_unknown_requests_and_tokens_are_not_found(city, fmt):
    error(city.client.get(f"/open311/v2/requests/999999999999.{fmt}"), 404, fmt, "service_request_id")
    error(city.client.get(f"/open311/v2/requests/abc.{fmt}"), 404, fmt, "service_request_id")
    error(city.client.get(f"/open311/v2/tokens/00000000-0000-4000-8000-000000000000.{fmt}"), 404, fmt, "token")
    error(city.client.get(f"/open311/v2/tokens/not-a-token.{fmt}"), 404, fmt, "token")


def test_a_multivaluelist_answer_and_a_public_media_url_are_kept(city, key):
    r = post(city, key, service_code="street_furniture", **{"attribute[item][]": ["bench", "bin"]},
             media_url="https://photos.example.org/bench.jpg")
    request_id = created(r)["service_request_id"]
    staff = city.client.get(f"/api/v1/requests/{request_id}", headers=city.headers()).json()
    assert staff["attributes"] == {"item": ["bench", "bin"]}
    (shown,) = city.client.get(f"/open311/v2/requests/{request_id}.json").json()
    assert shown["media_url"] == "https://photos.example.org/bench.jpg"


# --- 5. Search --------------------------------------------------------------------------------------

def _ids(response: Any, fmt: str) -> list[int]:
    assert response.status_code == 200, response.text
    doc = parse(response, fmt)
    if fmt == "json":
        return [item["service_request_id"] for item in doc]
    assert doc.tag == "service_requests" and all(e.tag == "request" for e in doc)
    return [int(text(e, "service_request_id") or "0") for e in doc]


@pytest.mark.parametrize("fmt", FORMATS)
def test_requests_are_searched_by_id_code_status_and_dates(city, key, fmt):
    pothole = created(post(city, key))["service_request_id"]
    graffiti = created(post(city, key, service_code="graffiti", **{"attribute[offensive]": "no"}))["service_request_id"]

    def search(**params: str) -> list[int]:
        return _ids(city.client.get(f"/open311/v2/requests.{fmt}", params=params), fmt)

    assert sorted(search(service_request_id=f"{pothole},{graffiti}")) == sorted([pothole, graffiti])
    assert search(service_request_id=f" {graffiti} ") == [graffiti]
    # With ids, the other filters are ignored (specification).
    assert search(service_request_id=str(pothole), service_code="graffiti", status="closed") == [pothole]

    by_code = city.client.get(f"/open311/v2/requests.{fmt}", params={"service_code": "graffiti"})
    assert graffiti in _ids(by_code, fmt) and pothole not in _ids(by_code, fmt)
    codes = ([i["service_code"] for i in by_code.json()] if fmt == "json"
             else [text(e, "service_code") for e in ET.fromstring(by_code.content)])
    assert set(codes) == {"graffiti"}
    assert {pothole, graffiti} <= set(search(service_code="pothole,graffiti"))

    assert {pothole, graffiti} <= set(search(status="open"))
    assert {pothole, graffiti} <= set(search(status="open,closed"))
    assert not {pothole, graffiti} & set(search(status="closed"))

    now = utcnow().replace(microsecond=0)
    start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(minutes=5)
    zulu = {"start_date": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "end_date": end.strftime("%Y-%m-%dT%H:%M:%SZ")}
    assert {pothole, graffiti} <= set(search(**zulu))
    local = dt.timezone(dt.timedelta(hours=1))
    offset = {"start_date": start.astimezone(local).isoformat(), "end_date": end.astimezone(local).isoformat()}
    assert offset["start_date"].endswith("+01:00")
    assert {pothole, graffiti} <= set(search(**offset))
    # A client that does not escape the '+' of the offset (it arrives as a space) is understood too.
    raw = city.client.get(f"/open311/v2/requests.{fmt}?start_date={offset['start_date']}&end_date={offset['end_date']}")
    assert {pothole, graffiti} <= set(_ids(raw, fmt))
    assert {pothole, graffiti} <= set(search(start_date=zulu["start_date"]))
    assert {pothole, graffiti} <= set(search(end_date=zulu["end_date"]))
    past = {"start_date": (now - dt.timedelta(days=10)).isoformat(), "end_date": (now - dt.timedelta(days=9)).isoformat()}
    assert not {pothole, graffiti} & set(search(**past))
    assert not {pothole, graffiti} & set(search(end_date=past["end_date"]))
    assert not {pothole, graffiti} & set(search(start_date=(now + dt.timedelta(minutes=5)).isoformat()))
    assert {pothole, graffiti} <= set(search(service_code="graffiti,pothole", status="open", **zulu))
    assert {pothole, graffiti} <= set(search())  # default: the last 90 days


@pytest.mark.parametrize("fmt", FORMATS)
def test_bad_search_parameters_are_refused(city, fmt):
    def refused(words: tuple[str, ...], **params: str) -> None:
        error(city.client.get(f"/open311/v2/requests.{fmt}", params=params), 400, fmt, *words)

    refused(("start_date",), start_date="yesterday")
    refused(("end_date",), end_date="2026-13-45T00:00:00Z")
    refused(("start_date", "time zone"), start_date="2026-01-01T08:00:00")
    refused(("end_date", "before"), start_date="2026-02-01T00:00:00Z", end_date="2026-01-01T00:00:00Z")
    refused(("90 days",), start_date="2025-01-01T00:00:00Z", end_date="2026-01-01T00:00:00Z")
    refused(("status",), status="pending")
    refused(("service_code", "nope"), service_code="nope")
    refused(("service_request_id",), service_request_id="12,abc")


# --- 6. jurisdiction_id -----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_the_configured_jurisdiction_is_accepted_and_another_is_not_found(city, key, fmt):
    mine = city.stack.config.open311_jurisdiction_id
    assert mine == "dijon-metropole.fr"
    item = created(post(city, key, fmt=fmt, jurisdiction_id=mine), fmt)
    request_id, token = item["service_request_id"], item["token"]
    gets = ["services", "services/pothole", f"requests/{request_id}", "requests", f"tokens/{token}"]
    for path in gets:
        r = city.client.get(f"/open311/v2/{path}.{fmt}", params={"jurisdiction_id": mine})
        assert r.status_code == 200, (path, r.text)
        parse(r, fmt)
        error(city.client.get(f"/open311/v2/{path}.{fmt}", params={"jurisdiction_id": "paris.fr"}), 404, fmt,
              "jurisdiction_id", "paris.fr")
    before = counts(city)
    error(post(city, key, fmt=fmt, jurisdiction_id="paris.fr"), 404, fmt, "jurisdiction_id", "paris.fr")
    lat, long = spot()
    r = city.client.post(f"/open311/v2/requests.{fmt}?jurisdiction_id=paris.fr", data={
        "api_key": key, "service_code": "pothole", "lat": lat, "long": long})
    error(r, 404, fmt, "jurisdiction_id")
    assert counts(city) == before


# --- 7. and 8. Refused requests: the precise error, in the format asked, and nothing stored -----------

PNG_HEADER = b"\x89PNG\r\n\x1a\n"


def png(size: tuple[int, int] = (32, 24)) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(out, "PNG")
    return out.getvalue()


REFUSALS = [
    # (case, fields, status, words the description holds)
    ("no api_key", {"api_key": None}, 403, ("api_key",)),
    ("garbage api_key", {"api_key": "letmein"}, 403, ("api_key",)),
    ("no service_code", {"service_code": None}, 400, ("service_code", "required")),
    ("empty service_code", {"service_code": ""}, 400, ("service_code",)),
    ("unknown service_code", {"service_code": "unicorns"}, 404, ("service_code", "unicorns")),
    ("outside the metropole", {"lat": PARIS[0], "long": PARIS[1]}, 400, ("lat", "outside")),
    ("no location", {"lat": None, "long": None}, 400, ("lat", "location")),
    ("lat without long", {"long": None}, 400, ("long",)),
    ("lat not a number", {"lat": "north"}, 400, ("lat", "north")),
    ("lat out of range", {"lat": "123.4"}, 400, ("lat",)),
    ("number attribute not a number", {"attribute[depth_cm]": "abc"}, 400, ("attribute[depth_cm]", "number")),
    ("value not in the list", {"attribute[size]": "gigantic"}, 400, ("attribute[size]", "gigantic")),
    ("unknown attribute", {"attribute[colour]": "red"}, 400, ("attribute[colour]",)),
    ("missing required attribute", {"service_code": "traffic_light"}, 400, ("attribute[signal_state]", "required")),
    ("multivaluelist value not in the list", {"service_code": "street_furniture", "attribute[item][]": ["bench", "sofa"]},
     400, ("attribute[item]", "sofa")),
    ("description too long", {"description": "x" * 4001}, 400, ("description", "4000")),
    ("bad email", {"email": "not-an-address"}, 400, ("email",)),
    ("bad phone", {"phone": "call me maybe"}, 400, ("phone",)),
    ("address not in the index", {"lat": None, "long": None, "address_string": "1 Nowhere Street"}, 400,
     ("address_string",)),
    ("unknown address_id", {"lat": None, "long": None, "address_id": "no-such-place"}, 400, ("address_id",)),
    ("bad media_url", {"media_url": "ftp://example.org/p.jpg"}, 400, ("media_url",)),
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case, fields, status, words", REFUSALS, ids=[c[0] for c in REFUSALS])
def test_a_refused_request_gives_the_precise_error_and_stores_nothing(city, key, fmt, case, fields, status, words):
    before = counts(city)
    error(post(city, key, fmt=fmt, **fields), status, fmt, *words)
    assert counts(city) == before


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_wrong_or_revoked_api_key_is_forbidden(city, key, fmt):
    before = counts(city)
    client_id = key.split("_")[1]
    error(post(city, f"o311_{client_id}_not-the-secret", fmt=fmt), 403, fmt, "api_key")
    error(post(city, "o311_000000000000_secret", fmt=fmt), 403, fmt, "api_key")
    lat, long = spot()
    r = city.client.post(f"/open311/v2/requests.{fmt}?api_key={key}",  # the key may be in the query string too
                         data={"service_code": "pothole", "lat": lat, "long": long})
    assert r.status_code == 201, r.text
    assert counts(city)[0] == before[0] + 1
    r = city.client.delete(f"/api/v1/open311/clients/{client_id}", headers=city.headers())
    assert r.status_code == 204, r.text
    before = counts(city)
    error(post(city, key, fmt=fmt), 403, fmt, "api_key")
    assert counts(city) == before


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_request_that_is_not_a_form_or_has_an_unknown_format_is_refused(city, key, fmt):
    before = counts(city)
    lat, long = spot()
    body = {"api_key": key, "service_code": "pothole", "lat": lat, "long": long}
    error(city.client.post(f"/open311/v2/requests.{fmt}", json=body), 400, fmt, "form")
    error(city.client.post("/open311/v2/requests.csv", data=body), 404, "json", "csv")
    assert counts(city) == before


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_media_upload_that_is_not_an_image_is_refused(city, key, fmt):
    before = counts(city)
    r = post(city, key, fmt=fmt, files={"media": ("pothole.png", b"this is not a photo at all", "image/png")})
    error(r, 400, fmt, "media", "not an image")
    r = post(city, key, fmt=fmt, files={"media": ("pothole.png", PNG_HEADER + b"\x00" * 64, "image/png")})
    error(r, 400, fmt, "media")
    r = post(city, key, fmt=fmt, files={"media": ("empty.png", b"", "image/png")})
    error(r, 400, fmt, "media", "empty")
    assert counts(city) == before


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_good_photo_with_a_refused_report_stores_nothing(city, key, fmt):
    before = counts(city)
    r = post(city, key, fmt=fmt, files={"media": ("pothole.png", png(), "image/png")}, **{"attribute[size]": "huge"})
    error(r, 400, fmt, "attribute[size]")
    r = post(city, "o311_000000000000_secret", fmt=fmt, files={"media": ("pothole.png", png(), "image/png")})
    error(r, 403, fmt, "api_key")
    assert counts(city) == before


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_too_large_photo_is_refused(city, key, fmt):
    limit = city.stack.config.requests_photo_max_bytes
    before = counts(city)
    big = png() + b"\x00" * (limit + 1)  # larger than the limit: refused before it is decoded
    r = post(city, key, fmt=fmt, files={"media": ("big.png", big, "image/png")})
    error(r, 400, fmt, "media", str(limit))
    assert counts(city) == before


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_small_photo_is_kept_with_the_request_but_not_served_publicly(city, key, fmt):
    before = counts(city)
    image = png()
    r = post(city, key, fmt=fmt, files={"media": ("pothole.png", image, "image/png")},
             **{"attribute[size]": "large"})
    item = created(r, fmt)
    request_id = int(item["service_request_id"])
    assert counts(city) == (before[0] + 1, before[1] + 1, before[2] + 1)
    ((photo_id, content_type, width, height),) = city.sql(
        "SELECT id, content_type, width, height FROM photos WHERE request_id = %s", (request_id,))
    assert (content_type, width, height) == ("image/png", 32, 24)

    (shown,) = city.client.get(f"/open311/v2/requests/{request_id}.json").json()
    assert shown["media_url"] is None  # the uploaded photo is kept private: it may show people
    for f in FORMATS:
        assert str(photo_id) not in city.client.get(f"/open311/v2/requests/{request_id}.{f}").text
    anonymous = city.client.get(f"/api/v1/photos/{photo_id}")
    assert anonymous.status_code == 401, anonymous.text
    assert not anonymous.content.startswith(PNG_HEADER)
    staff = city.client.get(f"/api/v1/photos/{photo_id}", headers=city.headers("switchboard"))
    assert staff.status_code == 200 and staff.headers["content-type"] == "image/png"
    assert staff.content.startswith(PNG_HEADER)
    assert "private" in staff.headers["cache-control"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_same_error_is_given_in_the_format_asked(city, key, fmt):
    """The same mistake asked as .json and as .xml: the same code and description, in each format."""
    lat, long = spot()
    form = {"api_key": key, "service_code": "pothole", "lat": lat, "long": long, "attribute[depth_cm]": "abc"}
    descriptions = {f: error(city.client.post(f"/open311/v2/requests.{f}", data=form), 400, f, "attribute[depth_cm]")
                    for f in FORMATS}
    assert descriptions["json"] == descriptions["xml"]
    r = city.client.post(f"/open311/v2/requests.{fmt}", data={"service_code": "pothole"})
    assert error(r, 403, fmt, "api_key") == "api_key was not provided"
