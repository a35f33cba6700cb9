"""Open311 GeoReport v2 documents, in its two formats: XML (required by the specification) and JSON.

The specification (http://wiki.open311.org/GeoReport_v2) gives every document as a root element
holding repeated items (``<services><service>…``, ``<service_requests><request>…``), and the same in
JSON as an array of objects (a service definition is one object). Errors are ``<errors><error><code>
<description>`` and, in JSON, an array of ``{code, description}``. Field order follows the
specification's examples. Pure: documents in, bytes out.
"""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from typing import Any, Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo

import msgspec

from .services import RequestService

FORMATS = {"json": "application/json; charset=utf-8", "xml": "text/xml; charset=utf-8"}
SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
LOCAL = ZoneInfo("Europe/Paris")
_json = msgspec.json.Encoder()
# XML element names of an item in a list (the parent's name -> the child's).
_ITEM = {"services": "service", "service_requests": "request", "attributes": "attribute", "values": "value",
         "errors": "error", "endpoints": "endpoint", "formats": "format"}


def w3c(moment: dt.datetime | None) -> str | None:
    """A date and time as the specification wants them: ISO 8601 with the offset, in the city's time."""
    if moment is None:
        return None
    return moment.astimezone(LOCAL).isoformat(timespec="seconds")


def _xml_value(parent: ET.Element, name: str, value: Any) -> None:
    element = ET.SubElement(parent, name)
    if value is None:
        return
    if isinstance(value, bool):
        element.text = "true" if value else "false"
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            _xml_value(element, key, inner)
    elif isinstance(value, (list, tuple)):
        child = _ITEM.get(name, "item")
        for inner in value:
            if isinstance(inner, Mapping):
                item = ET.SubElement(element, child)
                for key, leaf in inner.items():
                    _xml_value(item, key, leaf)
            else:
                _xml_value(element, child, inner)
    else:
        element.text = str(value)


def render(fmt: str, root: str, body: Any) -> bytes:
    """``body``: a list of items (under ``root`` in XML) or one mapping (the root element itself)."""
    if fmt == "json":
        return _json.encode(body)
    top = ET.Element(root)
    if isinstance(body, Mapping):
        for key, value in body.items():
            _xml_value(top, key, value)
    else:
        child = _ITEM[root]
        for item in body:
            element = ET.SubElement(top, child)
            for key, value in item.items():
                _xml_value(element, key, value)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(top, encoding="unicode").encode("utf-8")


def errors(fmt: str, items: Iterable[tuple[int, str]]) -> bytes:
    return render(fmt, "errors", [{"code": code, "description": description} for code, description in items])


def service_item(service: RequestService, agency: str) -> dict[str, Any]:
    return {"service_code": service.code, "service_name": service.name, "description": service.description,
            "metadata": service.metadata, "type": "realtime", "keywords": ", ".join(service.keywords),
            "group": service.group}


def service_definition(service: RequestService) -> dict[str, Any]:
    return {"service_code": service.code, "attributes": [{
        "variable": a.variable, "code": a.code, "datatype": a.datatype, "required": a.required,
        "datatype_description": a.datatype_description or None, "order": a.order, "description": a.description,
        **({"values": [{"key": k, "name": n} for k, n in a.values]} if a.values else {}),
    } for a in service.attributes]}


def request_item(request: Mapping[str, Any], service: RequestService | None, agency: str) -> dict[str, Any]:
    """A request as GET requests shows it: never who reported it."""
    return {"service_request_id": request["id"], "status": request["status"], "status_notes": request["status_notes"],
            "service_name": service.name if service else request["service_code"],
            "service_code": request["service_code"], "description": request["description"],
            "agency_responsible": agency, "service_notice": None,
            "requested_datetime": w3c(request["requested_at"]), "updated_datetime": w3c(request["updated_at"]),
            "expected_datetime": w3c(request["expected_at"]), "address": request["address"],
            "address_id": request["address_id"], "zipcode": request["zipcode"], "lat": request["lat"],
            "long": request["lon"], "media_url": request["media_url"]}


def discovery(base_url: str, changeset: dt.datetime, contact: str, key_service: str) -> dict[str, Any]:
    return {"changeset": w3c(changeset), "contact": contact, "key_service": key_service,
            "endpoints": [{"specification": SPECIFICATION, "url": base_url, "changeset": w3c(changeset),
                           "type": "production", "formats": ["text/xml", "application/json"]}]}


def parse_list(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def answers_from_form(items: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """Open311 answers: ``attribute[code]=value``; a multivaluelist as ``attribute[code][]`` repeated."""
    out: dict[str, Any] = {}
    for key, value in items:
        if not key.startswith("attribute[") or not isinstance(value, str):
            continue
        inner = key[len("attribute["):]
        if inner.endswith("][]"):
            out.setdefault(inner[:-3], [])
            if isinstance(out[inner[:-3]], list):
                out[inner[:-3]].append(value)
        elif inner.endswith("]"):
            code = inner[:-1]
            if code in out:
                previous = out[code]
                out[code] = (previous if isinstance(previous, list) else [previous]) + [value]
            else:
                out[code] = value
    return out
