"""From one received message to twin-ready readings, device events and rejections.

Pure domain: the registry is seen through a lookup function, time is passed in. Every way a message
can be wrong has a reason code, so that the dead-letter store, ``/metrics`` and the API say the same
thing. A message-level problem rejects the whole message; in a gateway's batch, a bad reading is
rejected alone and the others are applied.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable

import msgspec

from citypilot.equipment.catalog import Catalog, FieldError
from citypilot.registry.sheet import ASSET_ID_RE

from .payloads import EventMessage, ReadingMessage, event_decoder, reading_decoder

# reason code -> what it means (docs/protocol.md lists them too)
REASONS = {
    "oversized": "the message is larger than the limit",
    "malformed": "not valid JSON, or not the shape of the channel's payload",
    "wrong_topic": "the device published on another device's topic",
    "unknown_device": "no asset with this id in the registry",
    "retired_device": "the asset is retired",
    "not_reported_by": "a gateway reported for an asset it does not report for",
    "schema": "a value is missing, unknown for the kind, or of the wrong type",
    "invalid_value": "a value is outside what the kind allows (negative power, unknown mode...)",
    "off_map": "coordinates outside the metropole",
    "future_timestamp": "the timestamp is in the future",
    "too_old": "the timestamp is older than the accepted lateness",
    "store_error": "valid in form, but the store refused it (the error is in the reason)",
}
SEVERITIES = ("critical", "major", "minor", "warning", "info")
MAX_EVENT_DATA_DEPTH = 32


@dataclass(frozen=True)
class AssetInfo:
    id: str
    kind: str
    status: str
    reported_by: str | None


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 256 * 1024
    max_future: dt.timedelta = dt.timedelta(minutes=5)
    max_age: dt.timedelta = dt.timedelta(days=7)
    # (min lon, min lat, max lon, max lat) where coordinates may lie: the metropole and a margin
    bounds: tuple[float, float, float, float] = (4.85, 47.19, 5.25, 47.43)


@dataclass
class AcceptedReading:
    asset_id: str
    kind: str
    ts: dt.datetime
    values: dict[str, Any]


@dataclass
class AcceptedEvent:
    asset_id: str
    kind: str
    ts: dt.datetime
    code: str
    severity: str | None
    message: str | None
    data: dict[str, Any]


@dataclass
class Rejection:
    reason_code: str
    reason: str
    asset_id: str | None = None


@dataclass
class Outcome:
    """What became of one message: its readings and events, and what was rejected."""

    device_id: str | None
    readings: list[AcceptedReading] = field(default_factory=list)
    events: list[AcceptedEvent] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)

    def reject(self, code: str, reason: str, asset_id: str | None = None) -> "Outcome":
        # A reason may quote the device's bytes (msgspec names an unknown field): PostgreSQL text cannot
        # hold a NUL, and a dead letter that cannot be stored would stop the worker.
        self.rejections.append(Rejection(code, reason.replace("\x00", "\\x00"), asset_id))
        return self


Lookup = Callable[[str], AssetInfo | None]


def _check_time(ts: dt.datetime | None, received_at: dt.datetime, limits: Limits) -> tuple[dt.datetime, Rejection | None]:
    if ts is None:
        return received_at, None
    if ts > received_at + limits.max_future:
        return ts, Rejection("future_timestamp", f"timestamp {ts.isoformat()} is more than "
                                                 f"{int(limits.max_future.total_seconds())} s ahead of the server clock")
    if ts < received_at - limits.max_age:
        return ts, Rejection("too_old", f"timestamp {ts.isoformat()} is more than {limits.max_age.days} days old")
    return ts, None


def _check_values(values: dict[str, Any], kind: str, catalog: Catalog, limits: Limits) -> tuple[dict[str, Any], Rejection | None]:
    fields = catalog.kinds[kind].telemetry_field
    if not values:
        return values, Rejection("schema", "no values")
    clean: dict[str, Any] = {}
    for name, value in values.items():
        field_spec = fields.get(name)
        if field_spec is None:
            return values, Rejection("schema", f"unknown value {name!r} for a {kind} (known: {', '.join(fields)})")
        try:
            clean[name] = field_spec.coerce(value)
        except FieldError as exc:
            code = "schema" if str(exc).startswith("expected") else "invalid_value"
            return values, Rejection(code, f"{name}: {exc}")
    if "lat" in clean or "lon" in clean:
        if "lat" not in clean or "lon" not in clean:
            return values, Rejection("schema", "lat and lon go together")
        min_lon, min_lat, max_lon, max_lat = limits.bounds
        if not (min_lat <= clean["lat"] <= max_lat and min_lon <= clean["lon"] <= max_lon):
            return values, Rejection("off_map", f"({clean['lat']}, {clean['lon']}) is outside the metropole")
    return clean, None


def _check_type(declared: str | None, kind: str, catalog: Catalog) -> Rejection | None:
    if declared is not None and declared != catalog.kinds[kind].fiware_type:
        return Rejection("schema", f"type {declared!r} does not match a {kind} ({catalog.kinds[kind].fiware_type})")
    return None


def normalise(subject_device: str, channel: str, payload: bytes, *, received_at: dt.datetime, lookup: Lookup,
              catalog: Catalog, limits: Limits, authenticated_device: str | None = None) -> Outcome:
    """Validate one message published on ``subject_device``'s ``channel``."""
    outcome = Outcome(device_id=subject_device)
    if len(payload) > limits.max_message_bytes:
        return outcome.reject("oversized", f"{len(payload)} bytes, more than the limit of {limits.max_message_bytes}")
    if authenticated_device is not None and authenticated_device != subject_device:
        return outcome.reject("wrong_topic", f"device {authenticated_device} published on the topic of {subject_device}")
    device = lookup(subject_device) if ASSET_ID_RE.match(subject_device) else None
    if device is None:
        return outcome.reject("unknown_device", f"no asset {subject_device!r} in the registry")
    if device.status == "retired":
        return outcome.reject("retired_device", f"{subject_device} is retired", subject_device)

    if channel == "event":
        try:
            event: EventMessage = event_decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            return outcome.reject("malformed", str(exc))
        target = _target(event.asset, device, lookup, outcome)
        if target is None:
            return outcome
        ts, problem = _check_time(event.ts, received_at, limits)
        if problem:
            return outcome.reject(problem.reason_code, problem.reason, target.id)
        if event.severity is not None and event.severity not in SEVERITIES:
            return outcome.reject("invalid_value", f"severity {event.severity!r} is not one of {', '.join(SEVERITIES)}", target.id)
        problem_text = _unstorable(event.message) or _unstorable(event.data)
        if problem_text:
            return outcome.reject("invalid_value", f"the event's message or data {problem_text}", target.id)
        outcome.events.append(AcceptedEvent(target.id, target.kind, ts, event.code, event.severity, event.message, event.data))
        return outcome

    try:
        message: ReadingMessage = reading_decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:  # RecursionError: absurd nesting
        return outcome.reject("malformed", str(exc))
    if message.readings is not None:
        if message.values is not None:
            return outcome.reject("malformed", "a message has either values or readings, not both")
        batch = [(r.asset, r.ts or message.ts, r.values, r.type) for r in message.readings]
        if not batch:
            return outcome.reject("schema", "readings is empty")
    else:
        if message.values is None:
            return outcome.reject("schema", "no values (send values, or readings for a gateway)")
        batch = [(None, message.ts, message.values, message.type)]
    for asset_ref, ts, values, declared_type in batch:
        target = _target(asset_ref, device, lookup, outcome)
        if target is None:
            continue
        problem = _check_type(declared_type, target.kind, catalog)
        if problem is None:
            ts, problem = _check_time(ts, received_at, limits)
        if problem is None:
            values, problem = _check_values(values, target.kind, catalog, limits)
        if problem is not None:
            outcome.reject(problem.reason_code, problem.reason, target.id)
            continue
        outcome.readings.append(AcceptedReading(target.id, target.kind, ts, values))
    return outcome


def _unstorable(value: Any, max_depth: int = MAX_EVENT_DATA_DEPTH) -> str | None:
    """Why PostgreSQL could not store this JSON value (a NUL character, too deep a nesting), or None.

    Iterative: the value may be nested as deep as the decoder allows, deeper than Python recursion."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "contains a NUL character"
        elif isinstance(item, (dict, list)):
            if depth >= max_depth:
                return f"is nested deeper than {max_depth} levels"
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return None


def _target(asset_ref: str | None, device: AssetInfo, lookup: Lookup, outcome: Outcome) -> AssetInfo | None:
    """The asset a reading or event is about: the device itself, or one it reports for."""
    if asset_ref is None or asset_ref == device.id:
        return device
    well_formed = isinstance(asset_ref, str) and ASSET_ID_RE.match(asset_ref) is not None
    target = lookup(asset_ref) if well_formed else None
    if target is None:
        # The unknown id names the dead letter: a gateway reporting two unknown assets gets two.
        outcome.reject("unknown_device", f"no asset {asset_ref!r} in the registry", asset_ref if well_formed else None)
        return None
    if target.reported_by != device.id:
        outcome.reject("not_reported_by", f"{device.id} does not report for {target.id}"
                                          f" (its reporter is {target.reported_by or 'itself'})", target.id)
        return None
    if target.status == "retired":
        outcome.reject("retired_device", f"{target.id} is retired", target.id)
        return None
    return target
