"""Per-asset interlocks: may this command go to this asset, given what the registry and the twin say?

Pure: the command service gathers the facts (``AssetFacts``) and asks ``refusal``; a non-None answer is
the reason the asset is left untouched, shown to the operator and journaled. Tested with hypothesis in
tests/unit/test_safety_interlocks.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .junctions import UnsafeCommand, check_command, standard_plans

# Lowest dimming level by street type when the sheet gives no ``safety_floor_pct``: where people cross
# or climb, the light never goes below this (EN 13201 lighting classes leave a crossing or a stair
# brighter than the street around it).
DEFAULT_FLOOR_PCT: Mapping[str, float] = {"crossing": 60.0, "stairs": 50.0, "pedestrian": 30.0}
BOLLARD_REASONS = ("emergency", "fire_brigade", "ambulance", "police", "service_vehicle", "delivery", "maintenance",
                   "event")
BOLLARD_DEFAULT_S = 600
BOLLARD_MAX_S = 3600
# The fault values that mean "do not touch" for each kind (a junction with a lamp out may still be
# sent to a safer mode: see SAFER).
_FAULT_FIELDS = ("fault",)
# Commands that only ever make equipment safer: allowed even in fault.
SAFER = {("traffic_controller", "set_mode", "flashing_amber"), ("traffic_controller", "set_mode", "all_red"),
         ("bollard_site", "raise", None), ("information_panel", "clear", None)}


@dataclass(frozen=True)
class AssetFacts:
    id: str
    kind: str
    status: str                          # registry: planned, in_service, out_of_service, retired
    attributes: Mapping[str, Any] = field(default_factory=dict)
    connectivity: str | None = None      # twin: online, offline, unreachable; None = never heard from
    values: Mapping[str, Any] = field(default_factory=dict)


def safety_floor(facts: AssetFacts) -> float:
    """The lowest dimming level allowed for a street light (0 when it may be switched off)."""
    explicit = facts.attributes.get("safety_floor_pct")
    if isinstance(explicit, (int, float)) and not isinstance(explicit, bool):
        return float(explicit)
    return DEFAULT_FLOOR_PCT.get(str(facts.attributes.get("street_type")), 0.0)


def _fault(facts: AssetFacts) -> str | None:
    for name in _FAULT_FIELDS:
        value = facts.values.get(name)
        if value not in (None, "none", "ok"):
            return str(value)
    if facts.values.get("position") == "fault" or facts.values.get("mains") == "fault":
        return "fault"
    return None


def refusal(facts: AssetFacts, command: str, params: Mapping[str, Any]) -> str | None:
    """Why ``command`` must not be sent to this asset, or None when it may."""
    if facts.status == "retired":
        return f"{facts.id} is retired"
    if facts.status != "in_service":
        return f"{facts.id} is {facts.status.replace('_', ' ')}, not in service"
    if facts.connectivity is None:
        return f"{facts.id} has never reported: nothing is known of its state"
    if facts.connectivity != "online":
        return f"{facts.id} is {facts.connectivity}: a command would not reach it"
    safer = (facts.kind, command, params.get("mode")) in SAFER or (facts.kind, command, None) in SAFER
    fault = _fault(facts)
    if fault is not None and not safer:
        return f"{facts.id} is in fault ({fault})"
    if facts.kind == "street_light":
        floor = safety_floor(facts)
        where = facts.attributes.get("street_type") or "this street"
        if command == "dim" and float(params.get("level_pct", 100)) < floor:
            return f"{params.get('level_pct'):g} % is below the safety floor of {floor:g} % ({where})"
        if command == "switch" and params.get("state") == "off" and floor > 0:
            return f"a light with a safety floor of {floor:g} % ({where}) is never switched off from here"
    elif facts.kind == "traffic_controller":
        if params.get("revert_after_s") is not None and params.get("mode") == "normal":
            return "revert_after_s brings a junction back to normal after flashing amber or all-red, not after normal"
        try:
            check_command(command, device_params(facts.kind, command, params), standard_plans(),
                          bus_priority=bool(facts.attributes.get("bus_priority", True)))
        except UnsafeCommand as exc:
            return str(exc)
        if command == "set_mode" and params.get("mode") == "normal" and facts.values.get("fault") == "conflict":
            return "a conflict fault is active: back to normal only after a technician's reset on site"
    elif facts.kind == "bollard_site" and command == "lower":
        reason = params.get("reason")
        if reason not in BOLLARD_REASONS:
            return f"bollards are lowered only for an authorised reason ({', '.join(BOLLARD_REASONS)}), not {reason!r}"
        duration = params.get("duration_s", BOLLARD_DEFAULT_S)
        if not isinstance(duration, int) or isinstance(duration, bool) or not 10 <= duration <= BOLLARD_MAX_S:
            return f"bollards stay lowered 10 to {BOLLARD_MAX_S} s, then rise again by themselves; got {duration!r}"
    return None


def with_defaults(kind: str, command: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters as sent: a lowered bollard always carries its re-raise delay."""
    out = dict(params)
    if kind == "bollard_site" and command == "lower":
        out.setdefault("duration_s", BOLLARD_DEFAULT_S)
    return out


# Parameters that tell the control centre what to do next, not the device: never sent to it.
CONTROL_CENTRE_PARAMS: Mapping[tuple[str, str], frozenset[str]] = {
    ("traffic_controller", "set_mode"): frozenset({"revert_after_s"}),
}


def device_params(kind: str, command: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters the device receives: the command's own, without the control centre's."""
    ours = CONTROL_CENTRE_PARAMS.get((kind, command), frozenset())
    return {k: v for k, v in params.items() if k not in ours}


def follow_up(kind: str, command: str, params: Mapping[str, Any]) -> tuple[str, float, dict[str, Any]] | None:
    """(command, after seconds, its parameters) the control centre sends by itself once this one is done:
    bollards rise again, an expiring panel message is cleared (the device does it too; this is the
    second line), a junction put on flashing amber for an emergency vehicle's passage goes back to normal."""
    if kind == "bollard_site" and command == "lower":
        return "raise", float(params.get("duration_s", BOLLARD_DEFAULT_S)), {}
    if kind == "information_panel" and command == "display" and params.get("duration_s"):
        return "clear", float(params["duration_s"]), {}
    if kind == "traffic_controller" and command == "set_mode" and params.get("revert_after_s"):
        return "set_mode", float(params["revert_after_s"]), {"mode": "normal"}
    return None
