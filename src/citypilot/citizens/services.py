"""The categories of citizens' requests (Open311 "services"), read from a file an administrator edits.

Each category says which city service is in charge, its priority and service-level agreement (hours
to be on site, hours to solve it), and the extra questions asked (Open311 attributes). The file is
checked as a whole at load, with file, line and reason for the first mistake, because a category
that silently routes nowhere would lose citizens' requests. Answers to the questions are checked
here too (``check_attributes``), so the Open311 API, the switchboard and the staff API refuse the same
wrong answers with the same messages. Pure: no I/O but reading the file.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping

from citypilot.tomllines import Locator, TomlSyntaxError, parse_toml

DATATYPES = ("string", "number", "datetime", "text", "singlevaluelist", "multivaluelist")
PRIORITIES = ("urgent", "high", "normal", "low")
CODE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")
MAX_STRING = 200      # a 'string' answer: one line
MAX_TEXT = 4000       # a 'text' answer, like a description
DEFAULT_ASSET_RADIUS_M = 30.0


class ServicesError(ValueError):
    """The categories file is refused: ``path``, 1-based ``line``, ``reason``."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path, self.line, self.reason = path, line, reason


class AnswerError(ValueError):
    """An answer to a category's question is wrong; ``code`` names the question."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"attribute[{code}]: {reason}")
        self.code, self.reason = code, reason


@dataclass(frozen=True)
class Attribute:
    code: str
    datatype: str
    required: bool
    description: str
    order: int
    variable: bool = True
    datatype_description: str = ""
    values: tuple[tuple[str, str], ...] = ()  # (key, name)

    def check(self, raw: Any) -> Any:
        """The answer in its stored form; raises AnswerError when it does not fit the datatype."""
        if self.datatype == "multivaluelist":
            items = raw if isinstance(raw, (list, tuple)) else [raw]
            keys = [str(v) for v in items if v is not None and str(v) != ""]
            allowed = {k for k, _ in self.values}
            for key in keys:
                if key not in allowed:
                    raise AnswerError(self.code, f"{key!r} is not one of {', '.join(sorted(allowed))}")
            return sorted(set(keys), key=keys.index)
        if isinstance(raw, (list, tuple)):
            if len(raw) != 1:
                raise AnswerError(self.code, "one value expected")
            raw = raw[0]
        if self.datatype == "singlevaluelist":
            allowed = {k for k, _ in self.values}
            if str(raw) not in allowed:
                raise AnswerError(self.code, f"{raw!r} is not one of {', '.join(sorted(allowed))}")
            return str(raw)
        if self.datatype == "number":
            if isinstance(raw, bool):
                raise AnswerError(self.code, "a number is expected")
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise AnswerError(self.code, f"a number is expected, got {str(raw)[:40]!r}") from None
            if not math.isfinite(value):
                raise AnswerError(self.code, "a finite number is expected")
            return int(value) if value.is_integer() and abs(value) < 2**53 else value
        if self.datatype == "datetime":
            try:
                moment = dt.datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
            except ValueError:
                raise AnswerError(self.code, f"an ISO 8601 date and time is expected, got {str(raw)[:40]!r}") from None
            if moment.tzinfo is None:
                raise AnswerError(self.code, "the date and time needs a time zone (Z or +01:00)")
            return moment.isoformat()
        if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
            raise AnswerError(self.code, "text is expected")
        text = str(raw)
        limit = MAX_STRING if self.datatype == "string" else MAX_TEXT
        if len(text) > limit or (self.datatype == "string" and ("\n" in text or "\r" in text)):
            raise AnswerError(self.code, f"{'one line of ' if self.datatype == 'string' else ''}at most {limit} characters")
        return text


@dataclass(frozen=True)
class RequestService:
    code: str
    name: str
    description: str
    group: str
    keywords: tuple[str, ...]
    service: str                    # the city service in charge
    priority: str
    response_h: float
    resolution_h: float
    name_fr: str = ""
    description_fr: str = ""
    asset_kinds: tuple[str, ...] = ()
    asset_radius_m: float = DEFAULT_ASSET_RADIUS_M
    attributes: tuple[Attribute, ...] = ()

    @property
    def metadata(self) -> bool:
        """Open311: true when the service has a definition (questions) to fetch."""
        return bool(self.attributes)

    def label(self, language: str = "en") -> str:
        return self.name_fr if language == "fr" and self.name_fr else self.name


@dataclass(frozen=True)
class ServiceCatalogue:
    services: tuple[RequestService, ...]
    source: str
    by_code: Mapping[str, RequestService] = field(default_factory=dict)

    def get(self, code: str) -> RequestService | None:
        return self.by_code.get(code)


def check_attributes(service: RequestService, answers: Mapping[str, Any]) -> dict[str, Any]:
    """Check the answers to a category's questions: unknown questions, missing required answers and
    wrong datatypes are refused (AnswerError). Empty answers to optional questions are dropped."""
    known = {a.code: a for a in service.attributes}
    for code in answers:
        if code not in known:
            raise AnswerError(code, f"the category {service.code!r} asks no such question"
                                        + (f" (it asks: {', '.join(known)})" if known else ""))
    out: dict[str, Any] = {}
    for attribute in service.attributes:
        raw = answers.get(attribute.code)
        empty = raw is None or raw == "" or raw == [] or raw == [""]
        if empty:
            if attribute.required and attribute.variable:
                raise AnswerError(attribute.code, f"required: {attribute.description}")
            continue
        out[attribute.code] = attribute.check(raw)
    return out


def default_services_path() -> Path:
    return Path(str(resources.files("citypilot.citizens").joinpath("services.toml")))


def load_services(path: str | Path | None, service_names: Mapping[str, Any]) -> ServiceCatalogue:
    """Read and check the categories file (the shipped one when ``path`` is None). ``service_names``:
    the city's services (equipment catalogue) that a category may route to."""
    file = Path(path).expanduser() if path else default_services_path()
    try:
        text = file.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ServicesError(str(file), 0, f"cannot read the categories file: {exc}") from None
    return parse_services(text, str(file), service_names)


_SERVICE_KEYS = {"code", "name", "name_fr", "description", "description_fr", "group", "keywords", "service",
                 "priority", "response_h", "resolution_h", "asset_kinds", "asset_radius_m", "attribute"}
_ATTRIBUTE_KEYS = {"code", "datatype", "required", "description", "datatype_description", "order", "values",
                   "variable"}


def parse_services(text: str, path: str, service_names: Mapping[str, Any]) -> ServiceCatalogue:
    try:
        document = parse_toml(text)
    except TomlSyntaxError as exc:
        raise ServicesError(path, exc.line, exc.reason) from None
    locator = Locator(text, ("service", "service.attribute"))
    for key in document:
        if key != "service":
            raise ServicesError(path, locator.top(key), f"unknown key {key!r}: the file holds [[service]] tables")
    raw_services = document.get("service", [])
    if not isinstance(raw_services, list) or not raw_services:
        raise ServicesError(path, 1, "no [[service]]: at least one category is needed")
    services: list[RequestService] = []
    attribute_index = 0
    for index, raw in enumerate(raw_services):
        line = locator.header("service", index)

        def fail(key: str | None, reason: str, _index: int = index, _line: int = line) -> ServicesError:
            at = locator.key("service", _index, key) if key and isinstance(raw, dict) and key in raw else _line
            label = raw.get("code") if isinstance(raw, dict) and isinstance(raw.get("code"), str) else f"#{_index + 1}"
            return ServicesError(path, at, f"[[service]] {label}: {reason}")

        if not isinstance(raw, dict):
            raise fail(None, "expected a table")
        unknown = sorted(set(raw) - _SERVICE_KEYS)
        if unknown:
            raise fail(unknown[0], f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_SERVICE_KEYS))})")
        for key in ("code", "name", "description", "group", "service", "priority", "response_h", "resolution_h"):
            if key not in raw:
                raise fail(None, f"{key} is required")
        for key in ("code", "name", "name_fr", "description", "description_fr", "group", "service", "priority"):
            if key in raw and (not isinstance(raw[key], str) or not raw[key].strip()):
                raise fail(key, f"{key} must be non-empty text")
        if not CODE_RE.match(raw["code"]):
            raise fail("code", f"code {raw['code']!r}: lowercase letters, digits and '_', starting with a letter")
        if any(s.code == raw["code"] for s in services):
            raise fail("code", f"code {raw['code']!r} is used twice")
        if raw["service"] not in service_names:
            raise fail("service", f"unknown city service {raw['service']!r} (one of {', '.join(sorted(service_names))})")
        if raw["priority"] not in PRIORITIES:
            raise fail("priority", f"priority must be one of {', '.join(PRIORITIES)}")
        hours: dict[str, float] = {}
        for key in ("response_h", "resolution_h"):
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 24 * 366:
                raise fail(key, f"{key} must be a number of hours, more than 0 and at most a year")
            hours[key] = float(value)
        if hours["resolution_h"] < hours["response_h"]:
            raise fail("resolution_h", "resolution_h cannot be shorter than response_h")
        lists: dict[str, tuple[str, ...]] = {}
        for key in ("keywords", "asset_kinds"):
            value = raw.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise fail(key, f"{key} must be a list of text")
            lists[key] = tuple(value)
        radius = raw.get("asset_radius_m", DEFAULT_ASSET_RADIUS_M)
        if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not 0 < radius <= 1000:
            raise fail("asset_radius_m", "asset_radius_m must be a number of metres, 1 to 1000")
        attributes = []
        raw_attributes = raw.get("attribute", [])
        if not isinstance(raw_attributes, list):
            raise fail("attribute", "write each question as a [[service.attribute]] table")
        for a_index, a_raw in enumerate(raw_attributes):
            a_line = locator.header("service.attribute", attribute_index)
            attribute_index += 1
            attributes.append(_attribute(a_raw, a_line, a_index, path, raw["code"], attributes,
                                         lambda key, i=attribute_index - 1: locator.key("service.attribute", i, key)))
        services.append(RequestService(
            code=raw["code"], name=raw["name"].strip(), description=raw["description"].strip(), group=raw["group"],
            keywords=lists["keywords"], service=raw["service"], priority=raw["priority"], response_h=hours["response_h"],
            resolution_h=hours["resolution_h"], name_fr=raw.get("name_fr", ""), description_fr=raw.get("description_fr", ""),
            asset_kinds=lists["asset_kinds"], asset_radius_m=float(radius),
            attributes=tuple(sorted(attributes, key=lambda a: a.order))))
    return ServiceCatalogue(tuple(services), path, {s.code: s for s in services})


def _attribute(raw: Any, line: int, index: int, path: str, service: str, seen: list[Attribute],
               key_line: Callable[[str], int]) -> Attribute:
    label = raw.get("code") if isinstance(raw, dict) and isinstance(raw.get("code"), str) else f"#{index + 1}"

    def fail(reason: str, key: str | None = None) -> ServicesError:
        at = key_line(key) if key and isinstance(raw, dict) and key in raw else line
        return ServicesError(path, at, f"[[service.attribute]] {service}.{label}: {reason}")

    if not isinstance(raw, dict):
        raise fail("expected a table")
    unknown = sorted(set(raw) - _ATTRIBUTE_KEYS)
    if unknown:
        raise fail(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_ATTRIBUTE_KEYS))})", unknown[0])
    for key in ("code", "datatype", "description"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise fail(f"{key} is required (text)", key)
    if not CODE_RE.match(raw["code"]):
        raise fail("code: lowercase letters, digits and '_', starting with a letter", "code")
    if any(a.code == raw["code"] for a in seen):
        raise fail("code used twice in this category", "code")
    if raw["datatype"] not in DATATYPES:
        raise fail(f"datatype must be one of {', '.join(DATATYPES)}", "datatype")
    for key in ("required", "variable"):
        if key in raw and not isinstance(raw[key], bool):
            raise fail(f"{key} must be true or false", key)
    order = raw.get("order", index + 1)
    if isinstance(order, bool) or not isinstance(order, int) or order < 0:
        raise fail("order must be a whole number", "order")
    values: list[tuple[str, str]] = []
    if raw["datatype"].endswith("valuelist"):
        raw_values = raw.get("values")
        if not isinstance(raw_values, list) or not raw_values:
            raise fail("a list question needs values = [{ key = ..., name = ... }]", "values")
        for value in raw_values:
            if (not isinstance(value, dict) or set(value) != {"key", "name"}
                    or not all(isinstance(value[k], str) and value[k] for k in ("key", "name"))):
                raise fail("each value is { key = \"...\", name = \"...\" }", "values")
            if any(k == value["key"] for k, _ in values):
                raise fail(f"value key {value['key']!r} used twice", "values")
            values.append((value["key"], value["name"]))
    elif "values" in raw:
        raise fail("values are only for singlevaluelist and multivaluelist questions", "values")
    return Attribute(code=raw["code"], datatype=raw["datatype"], required=bool(raw.get("required", False)),
                     description=raw["description"].strip(), order=order, variable=bool(raw.get("variable", True)),
                     datatype_description=str(raw.get("datatype_description", "")), values=tuple(values))
