"""Signalised junctions: what a timing plan must satisfy, and what the hypervisor may ask a controller.

A junction has signal groups (a traffic stream: ``V1`` the north-south vehicles, ``P1`` a pedestrian
crossing, ``B1`` a bus lane). Some pairs conflict: their streams cross, so they must never be green at
once. Between the end of one's green and the start of a conflicting one's, the *intergreen* time lets
the clearing stream leave the junction (amber, then red); it depends on the direction: (clearing,
entering). Each group has a minimum green (pedestrians must be able to start crossing).

A plan is a cycle (seconds) and, for each group, its green windows (start, duration) within the cycle.
``check_plan`` accepts a plan only if every conflicting pair's windows are separated, cyclically, by
at least their intergreens, every green lasts its minimum, and the cycle stays within bounds. The
hypervisor never sets a signal group itself: it may only ask for a mode (a validated plan, flashing
amber, all-red) or a bus-priority request, which the controller grants within the plan's limits
(``check_command``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

AMBER_S = 3.0                 # amber after every vehicle green (part of the intergreen)
MIN_CYCLE_S = 30
MAX_CYCLE_S = 180             # past this, pedestrians give up and cross on red
MAX_BUS_HOLD_S = 20.0         # a bus may hold the green at most this long, whatever a plan says
MODES = ("normal", "flashing_amber", "all_red")
# What may be asked of a junction controller: modes, a validated plan, a bus-priority request. Nothing
# that names a signal group.
SAFE_COMMANDS = ("set_mode", "select_plan", "bus_priority")


class UnsafeCommand(ValueError):
    """The hypervisor will not ask this of a junction: the reason says why."""


@dataclass(frozen=True)
class Layout:
    """A junction's signal groups and the constraints between them (the controller's conflict matrix)."""

    groups: tuple[str, ...]
    conflicts: frozenset[frozenset[str]]
    intergreen_s: Mapping[tuple[str, str], float]  # (clearing, entering) -> seconds; one per conflicting ordered pair
    min_green_s: Mapping[str, float]
    bus_groups: frozenset[str] = frozenset()

    def conflicting(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self.conflicts

    def intergreen(self, clearing: str, entering: str) -> float:
        return self.intergreen_s[(clearing, entering)]

    def problems(self) -> list[str]:
        """What makes this layout unusable (an incomplete matrix): it must be fixed before any plan is checked."""
        out = []
        names = set(self.groups)
        if len(names) != len(self.groups) or not self.groups:
            out.append("signal groups must be named, each once")
        for pair in self.conflicts:
            if len(pair) != 2 or not pair <= names:
                out.append(f"conflict {sorted(pair)} names an unknown group")
                continue
            a, b = sorted(pair)
            for clearing, entering in ((a, b), (b, a)):
                value = self.intergreen_s.get((clearing, entering))
                if value is None:
                    out.append(f"no intergreen from {clearing} to {entering}")
                elif value < AMBER_S:
                    out.append(f"intergreen from {clearing} to {entering} ({value:g} s) is shorter than the amber")
        for group in self.groups:
            if self.min_green_s.get(group, 0) <= 0:
                out.append(f"no minimum green for {group}")
        return out


@dataclass(frozen=True)
class Plan:
    number: int
    cycle_s: float
    greens: Mapping[str, tuple[tuple[float, float], ...]]  # group -> ((start, duration), ...)
    bus_hold_max_s: float = 0.0
    label: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def green_at(self, group: str, position: float) -> bool:
        """Is ``group`` green at ``position`` seconds into the cycle?"""
        for start, duration in self.greens.get(group, ()):
            if (position - start) % self.cycle_s < duration:
                return True
        return False


def _separation(a: tuple[float, float], b: tuple[float, float], cycle: float) -> tuple[float, float]:
    """(time from the end of window a to the start of b, from the end of b to the start of a), cyclically."""
    offset = (b[0] - a[0]) % cycle
    return offset - a[1], (cycle - offset) - b[1]


def check_plan(layout: Layout, plan: Plan) -> list[str]:
    """Every reason ``plan`` is unsafe on ``layout`` (empty: the plan may run)."""
    out = layout.problems()
    if out:
        return out
    if not 1 <= plan.number <= 255:
        out.append(f"plan number {plan.number} is not between 1 and 255")
    if not MIN_CYCLE_S <= plan.cycle_s <= MAX_CYCLE_S:
        out.append(f"cycle {plan.cycle_s:g} s is outside {MIN_CYCLE_S}-{MAX_CYCLE_S} s")
        return out
    if not 0 <= plan.bus_hold_max_s <= MAX_BUS_HOLD_S:
        out.append(f"bus hold {plan.bus_hold_max_s:g} s is outside 0-{MAX_BUS_HOLD_S:g} s")
    for group in plan.greens:
        if group not in layout.groups:
            out.append(f"plan gives green to {group!r}, which is not a signal group of this junction")
    for group in layout.groups:
        windows = plan.greens.get(group, ())
        if not windows:
            out.append(f"{group} never gets green")
        for start, duration in windows:
            if not 0 <= start < plan.cycle_s:
                out.append(f"{group} starts at {start:g} s, outside the cycle")
            if duration < layout.min_green_s[group]:
                out.append(f"{group} green of {duration:g} s is shorter than its minimum {layout.min_green_s[group]:g} s")
            if duration >= plan.cycle_s:
                out.append(f"{group} is green for the whole cycle")
        for i, a in enumerate(windows):  # a group's own windows must not overlap
            for b in windows[i + 1:]:
                gap_ab, gap_ba = _separation(a, b, plan.cycle_s)
                if gap_ab < 0 or gap_ba < 0:
                    out.append(f"{group} has overlapping green windows")
    if out:
        return out
    for pair in sorted(layout.conflicts, key=sorted):
        a_name, b_name = sorted(pair)
        for a in plan.greens[a_name]:
            for b in plan.greens[b_name]:
                gap_ab, gap_ba = _separation(a, b, plan.cycle_s)
                need_ab, need_ba = layout.intergreen(a_name, b_name), layout.intergreen(b_name, a_name)
                if gap_ab < need_ab:
                    out.append(f"{b_name} starts {gap_ab:g} s after {a_name} ends; the intergreen is {need_ab:g} s")
                if gap_ba < need_ba:
                    out.append(f"{a_name} starts {gap_ba:g} s after {b_name} ends; the intergreen is {need_ba:g} s")
    return out


def check_command(name: str, params: Mapping[str, Any], plans: Mapping[int, Plan], *,
                  bus_priority: bool = True) -> dict[str, Any]:
    """The command the hypervisor may send to a junction controller, normalised, or UnsafeCommand.

    ``plans`` are the controller's programmed plans that passed ``check_plan``: a plan number that is
    not among them is refused (the controller would run something nobody checked)."""
    if name not in SAFE_COMMANDS:
        raise UnsafeCommand(f"{name!r} is not a command a junction may be given (only {', '.join(SAFE_COMMANDS)}): "
                            "the hypervisor never sets signal groups itself")
    allowed = {"set_mode": {"mode"}, "select_plan": {"plan"}, "bus_priority": {"group", "line", "vehicle"}}[name]
    unknown = set(params) - allowed
    if unknown:
        raise UnsafeCommand(f"{name} takes no {', '.join(sorted(unknown))}")
    if name == "set_mode":
        mode = params.get("mode")
        if mode not in MODES:
            raise UnsafeCommand(f"mode {mode!r} is not one of {', '.join(MODES)}")
        return {"mode": mode}
    if name == "select_plan":
        plan = params.get("plan")
        if isinstance(plan, bool) or not isinstance(plan, int):
            raise UnsafeCommand(f"plan must be a plan number, got {plan!r}")
        if plan == 0:
            return {"plan": 0}  # back to the controller's own timetable
        if plan not in plans:
            known = ", ".join(str(p) for p in sorted(plans)) or "none"
            raise UnsafeCommand(f"plan {plan} is not a checked plan of this junction (checked: {known})")
        return {"plan": plan}
    if not bus_priority:
        raise UnsafeCommand("this junction has no bus priority")
    return {k: v for k, v in params.items() if k in allowed}


# --- The standard layout of the simulated junctions (and a sensible default for a four-arm junction) ---

def four_arm_layout() -> Layout:
    """A four-arm junction: main road V1, side road V2, a bus lane B1 along the main road, pedestrian
    crossings P1 (across the side road, walking with the main road) and P2 (across the main road)."""
    groups = ("V1", "V2", "B1", "P1", "P2")
    pairs = [("V1", "V2"), ("V1", "P2"), ("B1", "V2"), ("B1", "P2"), ("V2", "P1"), ("P1", "P2")]
    intergreen: dict[tuple[str, str], float] = {}
    for a, b in pairs:
        # Vehicles clear in 5 s (3 s amber + 2 s all-red); pedestrians clearing a crossing need 7 s.
        intergreen[(a, b)] = 7.0 if a.startswith("P") else 5.0
        intergreen[(b, a)] = 7.0 if b.startswith("P") else 5.0
    return Layout(groups=groups, conflicts=frozenset(frozenset(p) for p in pairs), intergreen_s=intergreen,
                  min_green_s={"V1": 10, "V2": 8, "B1": 6, "P1": 6, "P2": 6}, bus_groups=frozenset({"B1"}))


def standard_plans() -> dict[int, Plan]:
    """The simulated controllers' plans: 1 night, 2 morning peak, 3 day, 4 evening peak. Main-road
    phase (V1, B1, P1) then side-road phase (V2) then pedestrians across the main road (P2)."""
    def plan(number: int, main: float, side: float, walk: float, label: str) -> Plan:
        # Phase 1 from 0; P1's pedestrians clear before V2 enters (7 s); V2 then P2 (which do not
        # conflict, but the crossing waits for the side road to clear); P2's pedestrians clear before phase 1.
        side_start = main + 7
        walk_start = side_start + side + 5
        cycle = walk_start + walk + 7
        return Plan(number, cycle, {"V1": ((0, main),), "B1": ((0, main),), "P1": ((0, main),),
                                    "V2": ((side_start, side),), "P2": ((walk_start, walk),)},
                    bus_hold_max_s=10.0, label=label)
    return {1: plan(1, 20, 10, 8, "night"), 2: plan(2, 45, 20, 10, "morning peak"),
            3: plan(3, 35, 20, 10, "day"), 4: plan(4, 50, 25, 10, "evening peak")}
