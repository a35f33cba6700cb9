"""Wire payloads, decoded with msgspec (about 1 µs a message: the hot path).

A message on ``telemetry`` or ``state`` is either one device's reading::

    {"ts": "2026-11-21T22:00:05+01:00", "values": {"power_w": 38.5, "dimming_pct": 70}}

or a gateway's batch for the devices it reports for (a lighting cabinet and its lights)::

    {"readings": [{"asset": "SL-1", "ts": "...", "values": {...}}, ...]}

An ``event`` message reports something that happened::

    {"ts": "...", "code": "lamp_failure", "severity": "major", "message": "...", "asset": "SL-1"}
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec

AwareDatetime = Annotated[dt.datetime, msgspec.Meta(tz=True)]
Values = dict[str, Any]


class Reading(msgspec.Struct, forbid_unknown_fields=True):
    asset: str | None = None
    ts: AwareDatetime | None = None
    values: Values = {}
    type: str | None = None  # optional FIWARE entity type of the asset, checked when present


class ReadingMessage(msgspec.Struct, forbid_unknown_fields=True):
    ts: AwareDatetime | None = None
    values: Values | None = None
    readings: list[Reading] | None = None
    type: str | None = None


class EventMessage(msgspec.Struct, forbid_unknown_fields=True):
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]
    ts: AwareDatetime | None = None
    asset: str | None = None
    severity: str | None = None
    message: Annotated[str, msgspec.Meta(max_length=500)] | None = None
    data: dict[str, Any] = {}


reading_decoder = msgspec.json.Decoder(ReadingMessage)
event_decoder = msgspec.json.Decoder(EventMessage)
