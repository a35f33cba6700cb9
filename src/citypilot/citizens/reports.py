"""Checking a citizen's report before it is recorded: category, location, text, contact, answers.

The Open311 API, the switchboard and the staff API all come through ``check_report``, so a report is
refused for the same reasons with the same words wherever it comes from. Each refusal names the field
(Open311 names: ``service_code``, ``lat``, ``long``, ``attribute[code]``...) and says what to send
instead. Pure: the address index and the communes are passed in.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

from citypilot.geo.communes import Communes

from .addresses import AddressIndex
from .services import AnswerError, RequestService, ServiceCatalogue, check_attributes

MAX_DESCRIPTION = 4000
MAX_NAME = 100
MAX_EMAIL = 254
MAX_ID = 100
MAX_URL = 2000
CHANNELS = ("open311", "switchboard", "staff")
_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+\Z")
_PHONE_RE = re.compile(r"^\+?[0-9 .()\-]{6,30}\Z")
_ZIP_RE = re.compile(r"^[0-9A-Za-z \-]{2,12}\Z")


class ReportError(ValueError):
    """A report refused: ``field`` (Open311 name), ``reason``; ``code`` says which kind of mistake."""

    def __init__(self, field: str, reason: str, code: str = "invalid") -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason, self.code = field, reason, code


@dataclass(frozen=True)
class CheckedReport:
    service: RequestService
    lat: float
    lon: float
    commune: str
    channel: str
    client: str
    address: str | None = None
    address_id: str | None = None
    zipcode: str | None = None
    description: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    media_url: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: str | None = None
    device_id: str | None = None
    account_id: str | None = None


def clean_text(value: Any, name: str, limit: int, multiline: bool = False) -> str | None:
    """Text as given, without control characters (but newlines in a description), trimmed; None if empty."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ReportError(name, "text is expected", "wrong-type")
    text = unicodedata.normalize("NFC", value)
    allowed = "\n\t" if multiline else ""
    text = "".join(c for c in text if c in allowed or unicodedata.category(c)[0] != "C").strip()
    if len(text) > limit:
        raise ReportError(name, f"{len(text)} characters; at most {limit}", "too-long")
    return text or None


def _coordinate(value: Any, name: str, low: float, high: float) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ReportError(name, "a number of degrees is expected", "wrong-type")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ReportError(name, f"a number of degrees is expected, got {str(value)[:40]!r}", "wrong-type") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise ReportError(name, f"must be between {low:g} and {high:g} degrees", "out-of-range")
    return number


def check_report(catalogue: ServiceCatalogue, communes: Communes, addresses: AddressIndex | None, *,
                 channel: str, client: str, service_code: Any, lat: Any = None, long: Any = None,
                 address_string: Any = None, address_id: Any = None, zipcode: Any = None, description: Any = None,
                 attributes: Mapping[str, Any] | None = None, media_url: Any = None, first_name: Any = None,
                 last_name: Any = None, email: Any = None, phone: Any = None, device_id: Any = None,
                 account_id: Any = None) -> CheckedReport:
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    if service_code is None or service_code == "":
        raise ReportError("service_code", "required: one of the codes listed by GET services", "missing")
    if not isinstance(service_code, str):
        raise ReportError("service_code", "text is expected", "wrong-type")
    service = catalogue.get(service_code)
    if service is None:
        raise ReportError("service_code", f"unknown service_code {service_code[:64]!r} (GET services lists them)",
                          "unknown-service")
    latitude = _coordinate(lat, "lat", -90, 90)
    longitude = _coordinate(long, "long", -180, 180)
    address = clean_text(address_string, "address_string", 300)
    place_id = clean_text(address_id, "address_id", 300)
    if (latitude is None) != (longitude is None):
        raise ReportError("long" if longitude is None else "lat", "lat and long go together: send both", "missing")
    if latitude is None:
        found = None
        if place_id is not None:
            found = addresses.resolve(place_id) if addresses else None
            if found is None:
                raise ReportError("address_id", f"unknown address_id {place_id!r}", "unknown-address")
        elif address is not None:
            found = addresses.geocode(address) if addresses else None
            if found is None:
                raise ReportError("address_string", f"{address!r} is not in the local address index: send lat and "
                                                    "long (a point on the map)", "unknown-address")
        else:
            raise ReportError("lat", "a location is required: lat and long, address_string or address_id", "missing")
        latitude, longitude = found.lat, found.lon
        address = address or found.label
        place_id = place_id or found.address_id
    assert latitude is not None and longitude is not None
    commune = communes.locate(longitude, latitude)
    if commune is None:
        raise ReportError("lat", f"the location {latitude:.5f}, {longitude:.5f} is outside the metropole's "
                                 "communes: this service only handles requests inside it", "outside")
    text = clean_text(description, "description", MAX_DESCRIPTION, multiline=True)
    try:
        answers = check_attributes(service, dict(attributes or {}))
    except AnswerError as exc:
        raise ReportError(f"attribute[{exc.code}]", exc.reason, "attribute") from None
    url = clean_text(media_url, "media_url", MAX_URL)
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ReportError("media_url", "an http or https URL is expected", "wrong-type")
    mail = clean_text(email, "email", MAX_EMAIL)
    if mail is not None and not _EMAIL_RE.match(mail):
        raise ReportError("email", f"{mail!r} is not an e-mail address", "wrong-type")
    tel = clean_text(phone, "phone", 30)
    if tel is not None and not _PHONE_RE.match(tel):
        raise ReportError("phone", "a phone number is digits, spaces and + . - ( )", "wrong-type")
    zip_ = clean_text(zipcode, "zipcode", 12)
    if zip_ is not None and not _ZIP_RE.match(zip_):
        raise ReportError("zipcode", "letters, digits, spaces and '-' only", "wrong-type")
    return CheckedReport(
        service=service, lat=latitude, lon=longitude, commune=commune, channel=channel, client=client,
        address=address, address_id=place_id, zipcode=zip_, description=text, attributes=answers, media_url=url,
        first_name=clean_text(first_name, "first_name", MAX_NAME), last_name=clean_text(last_name, "last_name", MAX_NAME),
        email=mail, phone=tel, device_id=clean_text(device_id, "device_id", MAX_ID),
        account_id=clean_text(account_id, "account_id", MAX_ID))
