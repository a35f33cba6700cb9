"""A simulated junction controller at signal-group level, with the safety a real one has built in.

The hypervisor asks it for modes, plans and bus priority (``safety/junctions.py`` says which); this
controller is the equipment side, and it is safe on its own, whatever it is told:

- it loads only programmed plans that pass ``check_plan`` (a wrong plan is refused at programming);
- a group turns green only when no conflicting group is open (green or amber) and each has been closed
  for at least its intergreen; a green lasts at least its minimum, whatever the command;
- leaving flashing amber or all-red, it holds every group red for the longest intergreen before the
  plan starts again (the start-up sequence);
- a bus-priority request holds the cycle clock (every signal stays as it is) for at most the plan's
  limit, once a cycle, while a bus group is green;
- its conflict monitor checks every tick: two conflicting groups open at once would throw it into
  flashing amber with a ``conflict`` fault. With the guards above it never trips: tests/unit/
  test_signals.py proves that with hypothesis, for any sequence of commands and any plans.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

from citypilot.safety.junctions import AMBER_S, Layout, Plan, UnsafeCommand, check_command, check_plan

from .model import CommandRefused

GREEN, AMBER, RED, FLASHING = "green", "amber", "red", "flashing_amber"
OPEN = (GREEN, AMBER)
TICK_S = 0.5


class SignalController:
    def __init__(self, layout: Layout, plans: Mapping[int, Plan], *, default_plan: int = 1) -> None:
        problems = layout.problems()
        if problems:
            raise ValueError(f"unusable junction layout: {'; '.join(problems)}")
        self.layout = layout
        self.plans: dict[int, Plan] = {}
        self.refused_plans: dict[int, list[str]] = {}
        for number, plan in plans.items():
            self.program(number, plan)
        self.timetable_plan = default_plan if default_plan in self.plans else min(self.plans, default=0)
        self.override: int | None = None
        self.pending: int | None = None
        self.running = self.timetable_plan
        self.mode = "normal"
        self.t = 0.0
        self.position = 0.0
        self.startup_until = self._startup_s()  # a controller powers up all-red
        self.aspect = {g: RED for g in layout.groups}
        self.opened_at = {g: -math.inf for g in layout.groups}
        self.closed_at = {g: -math.inf for g in layout.groups}
        self.hold_left = 0.0
        self.held_this_cycle = False
        self.fault: str | None = None
        self.bus_requests = self.bus_granted = 0
        self.bus_saved_s = 0.0
        self.watch: Callable[["SignalController"], None] | None = None  # called after every tick (tests)

    # --- programming and commands ---------------------------------------------------------------

    def program(self, number: int, plan: Plan) -> list[str]:
        """Load a plan into the controller, if it is safe; return why not otherwise."""
        problems = check_plan(self.layout, plan) if plan.number == number else [f"plan {plan.number} stored as {number}"]
        if problems:
            self.refused_plans[number] = problems
            self.plans.pop(number, None)
        else:
            self.plans[number] = plan
            self.refused_plans.pop(number, None)
        return problems

    def command(self, name: str, params: Mapping[str, Any]) -> str:
        """Do what is asked if it is safe; raise CommandRefused otherwise. Returns what was done."""
        try:
            safe = check_command(name, params, self.plans, bus_priority=bool(self.layout.bus_groups))
        except UnsafeCommand as exc:
            raise CommandRefused(str(exc)) from None
        if name == "set_mode":
            mode = safe["mode"]
            if mode == "normal" and self.fault == "conflict":
                raise CommandRefused("a conflict fault is active: flashing amber until reset on site")
            if mode != self.mode:
                self._leave_normal() if mode != "normal" else self._start_up()
                self.mode = mode
            return f"mode {mode}"
        if name == "select_plan":
            self.override = safe["plan"] or None
            self.pending = self.override or self.timetable_plan
            return f"plan {self.override or 'timetable'} from the next cycle"
        return self._bus_request()

    def _bus_request(self) -> str:
        self.bus_requests += 1
        plan = self.plans.get(self.running)
        if self.mode != "normal" or self.t < self.startup_until or plan is None:
            raise CommandRefused("not in normal operation: no bus priority")
        if plan.bus_hold_max_s <= 0:
            raise CommandRefused(f"plan {plan.number} gives no bus priority")
        if not any(self.aspect[g] == GREEN for g in self.layout.bus_groups):
            raise CommandRefused("the bus lane is red: the bus waits for its next green")
        if self.held_this_cycle:
            raise CommandRefused("priority already given this cycle")
        self.hold_left = plan.bus_hold_max_s
        self.held_this_cycle = True
        self.bus_granted += 1
        return f"green held up to {plan.bus_hold_max_s:g} s"

    def reset_fault(self) -> None:
        """A technician on site clears the fault; the controller starts up again."""
        self.fault = None
        if self.mode == "flashing_amber":
            self.mode = "normal"
            self._start_up()

    def _leave_normal(self) -> None:
        self.hold_left = 0.0

    def _start_up(self) -> None:
        self.startup_until = self.t + self._startup_s()
        self.position = 0.0
        self.held_this_cycle = False

    def _startup_s(self) -> float:
        return max(self.layout.intergreen_s.values(), default=AMBER_S)

    # --- time -----------------------------------------------------------------------------------

    def advance(self, seconds: float, *, max_ticks: int | None = None) -> None:
        """Run for ``seconds``, in ticks of TICK_S (or fewer, longer ticks when ``max_ticks`` caps them:
        the guards compare times, so coarse ticks only make greens and intergreens longer)."""
        if seconds <= 0:
            return
        ticks = math.ceil(seconds / TICK_S)
        if max_ticks is not None:
            ticks = max(1, min(ticks, max_ticks))
        step = seconds / ticks
        for _ in range(ticks):
            self._tick(step)

    def wanted(self) -> set[str]:
        """The groups the plan wants green now (none outside normal operation)."""
        plan = self.plans.get(self.running)
        if self.mode != "normal" or self.t < self.startup_until or plan is None:
            return set()
        return {g for g in self.layout.groups if plan.green_at(g, self.position)}

    def _tick(self, dt: float) -> None:
        self.t += dt
        holding = self.hold_left > 0 and self.mode == "normal"
        if holding:
            used = min(dt, self.hold_left)
            self.hold_left -= used
            self.bus_saved_s += used
        else:
            self._move_clock(dt)
        wanted = self.wanted()
        for g in self.layout.groups:
            state = self.aspect[g]
            if state == GREEN and g not in wanted and not holding:
                if self.t - self.opened_at[g] >= self.layout.min_green_s[g]:
                    self.aspect[g] = AMBER
                    self.closed_at[g] = self.t
            elif state == AMBER and self.t - self.closed_at[g] >= AMBER_S:
                self.aspect[g] = FLASHING if self.mode == "flashing_amber" else RED
            elif state in (RED, FLASHING):
                self.aspect[g] = FLASHING if self.mode == "flashing_amber" else RED
        if not holding:
            for g in self.layout.groups:
                if g in wanted and self.aspect[g] in (RED, FLASHING) and self._may_open(g):
                    self.aspect[g] = GREEN
                    self.opened_at[g] = self.t
        self._monitor()
        if self.watch is not None:
            self.watch(self)

    def _move_clock(self, dt: float) -> None:
        plan = self.plans.get(self.running)
        if plan is None or self.mode != "normal" or self.t < self.startup_until:
            return
        self.position += dt
        if self.position >= plan.cycle_s:  # a new cycle: the time for a plan change
            self.position %= plan.cycle_s
            self.held_this_cycle = False
            target = self.pending if self.pending is not None else (self.override or self.timetable_plan)
            self.pending = None
            if target in self.plans and target != self.running:
                self.running = target
                self.position = 0.0

    def _may_open(self, group: str) -> bool:
        for other in self.layout.groups:
            if other == group or not self.layout.conflicting(group, other):
                continue
            if self.aspect[other] in OPEN:
                return False
            if self.t - self.closed_at[other] < self.layout.intergreen(other, group):
                return False
        return True

    def _monitor(self) -> None:
        """The conflict monitor: conflicting groups open together throw the controller into flashing amber."""
        open_ = [g for g in self.layout.groups if self.aspect[g] in OPEN]
        for i, a in enumerate(open_):
            for b in open_[i + 1:]:
                if self.layout.conflicting(a, b):
                    self.fault = "conflict"
                    self.mode = "flashing_amber"
                    for g in self.layout.groups:
                        if self.aspect[g] == GREEN:
                            self.closed_at[g] = self.t
                        self.aspect[g] = FLASHING
                    return

    # --- what it reports ------------------------------------------------------------------------

    @property
    def plan_in_force(self) -> int:
        return self.running if self.mode == "normal" else 0

    def set_timetable(self, plan: int) -> None:
        """The plan the controller's own timetable chooses for this time of day."""
        if plan in self.plans:
            self.timetable_plan = plan


