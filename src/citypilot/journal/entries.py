"""What a journal entry says, before it is written (pure domain: no I/O).

Entries about an asset need only name it: the store copies its commune and position from the registry,
so that every entry can be found by commune or zone without each writer looking them up.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

# The domain of entries that belong to no equipment domain (accounts, the platform itself).
OPERATIONS = "operations"
SYSTEM = "system"   # actor of what citypilot does by itself (rules, offline detection)
DEVICE = "device"   # actor of what a device reported

TYPE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$"


@dataclass(frozen=True)
class NewEntry:
    at: dt.datetime
    domain: str
    type: str                       # dotted: alarm.raised, device.event, connectivity.offline...
    summary: str
    actor: str = SYSTEM
    severity: str | None = None
    asset_id: str | None = None
    kind: str | None = None
    commune: str | None = None      # taken from the registry when the entry names an asset
    lat: float | None = None
    lon: float | None = None
    alarm_id: int | None = None
    restricted: bool = False
    service: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

# What a query may ask for: dotted lowercase names, or a family ending in '.*', comma-separated.
TYPE_QUERY = r"^[a-z][a-z0-9_.*]*(,[a-z][a-z0-9_.*]*)*$"
