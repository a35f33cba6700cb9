"""The equipment catalogue: every kind of urban equipment, described once.

``catalog.toml`` beside this module says, for each kind, its FIWARE type, domain, service in charge,
the attributes of its identity sheet, its telemetry, its expected reporting interval, the commands it
accepts and which kinds of device may report for it. The registry, the ingestion pipeline, the alarm
rules and the UI all read this description; adding a kind is adding a table to that file.

Pure domain: no I/O beyond reading the catalogue file once.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import tomllib
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from importlib import resources
from typing import Any, Mapping

FIELD_TYPES = ("string", "number", "integer", "boolean", "date")
GEOMETRIES = ("point", "line", "polygon")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")


class CatalogError(ValueError):
    """The catalogue file itself is wrong (an administrator's or developer's mistake)."""


class FieldError(ValueError):
    """A value does not fit its field's description."""


@dataclass(frozen=True)
class FieldSpec:
    """One typed field: a sheet attribute, a telemetry value or a command parameter."""

    name: str
    type: str
    label: str = ""
    required: bool = False
    unit: str | None = None
    enum: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    max_length: int = 200

    def coerce(self, value: Any, *, from_text: bool = False) -> Any:
        """Return the value in its canonical type or raise FieldError saying why.

        ``from_text`` accepts the string forms a CSV cell carries ("12.5", "true", "2024-03-01").
        """
        if self.type == "string":
            if not isinstance(value, str):
                raise FieldError(f"expected text, got {_kind_of(value)}")
            if len(value) > self.max_length:
                raise FieldError(f"longer than {self.max_length} characters")
            if has_control_characters(value):
                raise FieldError("contains control characters")
        elif self.type in ("number", "integer"):
            if from_text and isinstance(value, str):
                try:
                    value = float(value.strip().replace(",", ".")) if self.type == "number" else int(value.strip())
                except ValueError:
                    raise FieldError(f"expected {'a number' if self.type == 'number' else 'an integer'}, got {value!r}") from None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise FieldError(f"expected {'a number' if self.type == 'number' else 'an integer'}, got {_kind_of(value)}")
            if self.type == "integer":
                if isinstance(value, float) and not value.is_integer():
                    raise FieldError(f"expected an integer, got {value!r}")
                value = int(value)
            elif not _is_finite(value):
                raise FieldError(f"expected a finite number, got {value!r}")
            if self.min is not None and value < self.min:
                raise FieldError(f"{value} is below the minimum {self.min:g}{self.unit or ''}")
            if self.max is not None and value > self.max:
                raise FieldError(f"{value} is above the maximum {self.max:g}{self.unit or ''}")
        elif self.type == "boolean":
            if from_text and isinstance(value, str):
                lowered = value.strip().lower()
                if lowered in ("true", "1", "yes", "oui"):
                    value = True
                elif lowered in ("false", "0", "no", "non"):
                    value = False
            if not isinstance(value, bool):
                raise FieldError(f"expected true or false, got {value!r}")
        elif self.type == "date":
            if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
                return value
            if not isinstance(value, str):
                raise FieldError(f"expected a date (YYYY-MM-DD), got {_kind_of(value)}")
            try:
                value = dt.date.fromisoformat(value.strip())
            except ValueError:
                raise FieldError(f"expected a date (YYYY-MM-DD), got {value!r}") from None
            return value
        if self.enum is not None and value not in self.enum:
            raise FieldError(f"{value!r} is not one of: {', '.join(map(str, self.enum))}")
        return value

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "required": self.required}
        for key in ("label", "unit", "min", "max"):
            if getattr(self, key) not in (None, ""):
                out[key] = getattr(self, key)
        if self.enum is not None:
            out["enum"] = list(self.enum)
        return out


@dataclass(frozen=True)
class CommandSpec:
    name: str
    label: str
    params: tuple[FieldSpec, ...]
    roles: tuple[str, ...]
    confirm: bool = False    # the sender confirms before it goes out (a sensitive action)
    approval: bool = False   # a second person approves before it goes out (the most sensitive)
    retry: bool = True       # may be sent again when unanswered (the device does it once: same id)

    @property
    def param(self) -> dict[str, FieldSpec]:
        return {p.name: p for p in self.params}

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "roles": list(self.roles), "confirm": self.confirm, "approval": self.approval,
                "retry": self.retry, "params": {p.name: p.describe() for p in self.params}}


@dataclass(frozen=True)
class KindSpec:
    """Everything citypilot knows about one kind of equipment."""

    name: str
    label: str
    label_fr: str
    fiware_type: str
    domain: str
    service: str
    geometry: str
    reporting_interval_s: int | None
    reported_by: tuple[str, ...]
    attributes: tuple[FieldSpec, ...]
    telemetry: tuple[FieldSpec, ...]
    commands: tuple[CommandSpec, ...]
    restricted: bool = False  # public-safety equipment: visible to police, supervisors and admins only

    @property
    def attribute(self) -> dict[str, FieldSpec]:
        return {a.name: a for a in self.attributes}

    @cached_property
    def telemetry_field(self) -> dict[str, FieldSpec]:
        """The telemetry fields by name, built once: ingestion looks them up for every reading."""
        return {t.name: t for t in self.telemetry}

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.name, "label": self.label, "label_fr": self.label_fr, "fiware_type": self.fiware_type,
            "domain": self.domain, "service": self.service, "geometry": self.geometry,
            "reporting_interval_s": self.reporting_interval_s, "reported_by": list(self.reported_by),
            "restricted": self.restricted,
            "attributes": {a.name: a.describe() for a in self.attributes},
            "telemetry": {t.name: t.describe() for t in self.telemetry},
            "commands": {c.name: c.describe() for c in self.commands},
        }


@dataclass(frozen=True)
class Catalog:
    kinds: Mapping[str, KindSpec]
    services: Mapping[str, str]  # service id -> label
    domains: tuple[str, ...] = field(default=())

    def kind(self, name: str) -> KindSpec:
        try:
            return self.kinds[name]
        except KeyError:
            raise FieldError(f"unknown kind {name!r} (known: {', '.join(sorted(self.kinds))})") from None

    def restricted_kinds(self) -> list[str]:
        return sorted(k for k, spec in self.kinds.items() if spec.restricted)


def _is_finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float (a JSON body can carry one)
        return False


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def has_control_characters(text: str) -> bool:
    """True if the text holds a control character other than tab and line breaks (NUL included:
    PostgreSQL text cannot store it, and no legitimate name or address contains one)."""
    return _CONTROL.search(text) is not None


def _kind_of(value: Any) -> str:
    return {str: "text", bool: "a boolean", int: "a number", float: "a number", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def _field(where: str, name: str, raw: Any) -> FieldSpec:
    if not NAME_RE.match(name):
        raise CatalogError(f"{where}: field name {name!r} must be lowercase letters, digits and _")
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}.{name}: expected a table or a type name")
    unknown = set(raw) - {"type", "label", "required", "unit", "enum", "min", "max", "max_length"}
    if unknown:
        raise CatalogError(f"{where}.{name}: unknown key(s) {', '.join(sorted(unknown))}")
    if raw.get("type") not in FIELD_TYPES:
        raise CatalogError(f"{where}.{name}: type must be one of {', '.join(FIELD_TYPES)}")
    enum = raw.get("enum")
    return FieldSpec(name=name, type=raw["type"], label=raw.get("label", ""), required=bool(raw.get("required", False)),
                     unit=raw.get("unit"), enum=tuple(enum) if enum is not None else None,
                     min=raw.get("min"), max=raw.get("max"), max_length=int(raw.get("max_length", 200)))


def _fields(where: str, table: Any) -> tuple[FieldSpec, ...]:
    if table is None:
        return ()
    if not isinstance(table, dict):
        raise CatalogError(f"{where}: expected a table")
    return tuple(_field(where, name, raw) for name, raw in table.items())


def parse_catalog(document: Mapping[str, Any], roles: tuple[str, ...]) -> Catalog:
    """Build and check a catalogue from its TOML document; ``roles`` are the roles that exist."""
    services = document.get("services") or {}
    if not isinstance(services, dict) or not services:
        raise CatalogError("[services] must list at least one service")
    service_labels = {}
    for sid, spec in services.items():
        if not NAME_RE.match(sid) or not isinstance(spec, dict) or "label" not in spec:
            raise CatalogError(f"services.{sid}: expected a lowercase id with a label")
        service_labels[sid] = str(spec["label"])
    kinds: dict[str, KindSpec] = {}
    required_keys = {"label", "label_fr", "fiware_type", "domain", "service", "geometry"}
    allowed_keys = required_keys | {"reporting_interval_s", "reported_by", "attributes", "telemetry", "commands", "restricted"}
    for name, raw in (document.get("kinds") or {}).items():
        where = f"kinds.{name}"
        if not NAME_RE.match(name):
            raise CatalogError(f"{where}: kind names are lowercase letters, digits and _")
        missing = required_keys - set(raw)
        if missing:
            raise CatalogError(f"{where}: missing {', '.join(sorted(missing))}")
        unknown = set(raw) - allowed_keys
        if unknown:
            raise CatalogError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        if raw["service"] not in service_labels:
            raise CatalogError(f"{where}.service: unknown service {raw['service']!r}")
        if raw["geometry"] not in GEOMETRIES:
            raise CatalogError(f"{where}.geometry: must be one of {', '.join(GEOMETRIES)}")
        commands = []
        for cname, craw in (raw.get("commands") or {}).items():
            bad_roles = set(craw.get("roles", ())) - set(roles)
            if not craw.get("roles") or bad_roles:
                raise CatalogError(f"{where}.commands.{cname}: roles must be a non-empty list of known roles"
                                   + (f" (unknown: {', '.join(sorted(bad_roles))})" if bad_roles else ""))
            commands.append(CommandSpec(name=cname, label=craw.get("label", cname),
                                        params=_fields(f"{where}.commands.{cname}.params", craw.get("params")),
                                        roles=tuple(craw["roles"]), confirm=bool(craw.get("confirm", False)),
                                        approval=bool(craw.get("approval", False)), retry=bool(craw.get("retry", True))))
        interval = raw.get("reporting_interval_s")
        if interval is not None and (not isinstance(interval, int) or interval <= 0):
            raise CatalogError(f"{where}.reporting_interval_s: a positive number of seconds")
        kinds[name] = KindSpec(
            name=name, label=raw["label"], label_fr=raw["label_fr"], fiware_type=raw["fiware_type"],
            domain=raw["domain"], service=raw["service"], geometry=raw["geometry"],
            reporting_interval_s=interval, reported_by=tuple(raw.get("reported_by", ())),
            attributes=_fields(f"{where}.attributes", raw.get("attributes")),
            telemetry=_fields(f"{where}.telemetry", raw.get("telemetry")),
            commands=tuple(commands), restricted=bool(raw.get("restricted", False)),
        )
    if not kinds:
        raise CatalogError("[kinds] must describe at least one kind")
    for spec in kinds.values():
        for reporter in spec.reported_by:
            if reporter not in kinds:
                raise CatalogError(f"kinds.{spec.name}.reported_by: unknown kind {reporter!r}")
    domains = tuple(sorted({k.domain for k in kinds.values()}))
    return Catalog(kinds=kinds, services=service_labels, domains=domains)


@lru_cache(maxsize=1)
def default_catalog() -> Catalog:
    """The catalogue shipped with citypilot."""
    from citypilot.auth.roles import ROLES

    text = resources.files("citypilot.equipment").joinpath("catalog.toml").read_text("utf-8")
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"catalog.toml: {exc}") from None
    return parse_catalog(document, tuple(ROLES))
