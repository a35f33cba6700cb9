"""Junction safety, proved with hypothesis: plan checks, the command filter, and the simulated controller.

The central property (issue 8): for any sequence of commands, malicious or malformed ones included, and
any programmed plans, the simulated controller never shows conflicting greens, never opens a group
before its intergreen has passed, and never cuts a green short of its minimum.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citypilot.safety.junctions import (AMBER_S, Layout, Plan, UnsafeCommand, check_command, check_plan,
                                        four_arm_layout, standard_plans)
from citypilot.sim.model import CommandRefused
from citypilot.sim.signals import GREEN, OPEN, SignalController

LAYOUT = four_arm_layout()
GROUPS = LAYOUT.groups


# --- check_plan ---------------------------------------------------------------------------------

def test_the_standard_plans_pass_and_each_named_flaw_is_caught() -> None:
    for plan in standard_plans().values():
        assert check_plan(LAYOUT, plan) == []
    good = standard_plans()[3]
    greens = dict(good.greens)
    clash = Plan(9, good.cycle_s, {**greens, "V2": ((5, 20),)})  # side road green with the main road
    assert any("intergreen" in p for p in check_plan(LAYOUT, clash))
    short = Plan(9, good.cycle_s, {**greens, "P2": ((greens["P2"][0][0], 2),)})
    assert any("shorter than its minimum 6" in p for p in check_plan(LAYOUT, short))
    assert any("never gets green" in p for p in check_plan(LAYOUT, Plan(9, good.cycle_s, {k: v for k, v in greens.items() if k != "P2"})))
    assert any("outside 30-180" in p for p in check_plan(LAYOUT, Plan(9, 400, greens)))
    assert any("not a signal group" in p for p in check_plan(LAYOUT, Plan(9, good.cycle_s, {**greens, "X9": ((0, 10),)})))
    tight = Plan(9, good.cycle_s, {**greens, "V2": ((greens["V2"][0][0] - 3, greens["V2"][0][1]),)})
    assert sorted(check_plan(LAYOUT, tight)) == ["V2 starts 4 s after B1 ends; the intergreen is 5 s",
                                                 "V2 starts 4 s after P1 ends; the intergreen is 7 s",
                                                 "V2 starts 4 s after V1 ends; the intergreen is 5 s"]


def test_an_incomplete_conflict_matrix_is_refused_before_any_plan() -> None:
    broken = Layout(groups=("A", "B"), conflicts=frozenset({frozenset({"A", "B"})}), intergreen_s={("A", "B"): 5},
                    min_green_s={"A": 5, "B": 5})
    assert "no intergreen from B to A" in check_plan(broken, Plan(1, 60, {"A": ((0, 10),), "B": ((20, 10),)}))
    with pytest.raises(ValueError, match="no intergreen from B to A"):
        SignalController(broken, {})


windows = st.tuples(st.floats(0, 179, allow_nan=False), st.floats(0.5, 90, allow_nan=False))
plans = st.builds(lambda number, cycle, greens, hold: Plan(number, cycle, greens, bus_hold_max_s=hold),
                  st.integers(1, 12), st.floats(20, 200, allow_nan=False),
                  st.dictionaries(st.sampled_from(GROUPS + ("X9",)), st.lists(windows, min_size=1, max_size=2).map(tuple),
                                  min_size=1, max_size=6),
                  st.floats(0, 30, allow_nan=False))


@settings(max_examples=400, deadline=None)
@given(plans)
def test_a_plan_that_passes_never_has_conflicting_greens_or_short_intergreens(plan: Plan) -> None:
    """Sampled over the cycle, a plan ``check_plan`` accepts never makes two conflicting groups green, and
    every conflicting start comes at least the intergreen after the other's end."""
    if check_plan(LAYOUT, plan):
        return
    step = 0.25
    samples = [i * step for i in range(int(plan.cycle_s / step))]
    for position in samples:
        green = [g for g in GROUPS if plan.green_at(g, position)]
        for i, a in enumerate(green):
            for b in green[i + 1:]:
                assert not LAYOUT.conflicting(a, b), (position, a, b)
        for g in green:  # nothing conflicting was green within the intergreen before
            for other in GROUPS:
                if LAYOUT.conflicting(g, other):
                    back = LAYOUT.intergreen(other, g) - 1e-6
                    assert not any(plan.green_at(other, (position - d) % plan.cycle_s)
                                   for d in (back, back / 2)), (position, other, g)


# --- check_command ------------------------------------------------------------------------------

def test_only_modes_checked_plans_and_bus_requests_reach_a_junction() -> None:
    checked = standard_plans()
    assert check_command("set_mode", {"mode": "flashing_amber"}, checked) == {"mode": "flashing_amber"}
    assert check_command("select_plan", {"plan": 2}, checked) == {"plan": 2}
    for name, params, reason in [
        ("set_group", {"group": "V1", "aspect": "green"}, "never sets signal groups"),
        ("set_mode", {"mode": "all_green"}, "is not one of"),
        ("set_mode", {"mode": "normal", "group": "V1"}, "takes no group"),
        ("select_plan", {"plan": 42}, r"not a checked plan of this junction \(checked: 1, 2, 3, 4\)"),
        ("select_plan", {"plan": "2"}, "must be a plan number"),
        ("select_plan", {"plan": True}, "must be a plan number"),
    ]:
        with pytest.raises(UnsafeCommand, match=reason):
            check_command(name, params, checked)


# --- the simulated controller -------------------------------------------------------------------

class Watcher:
    """An independent monitor: it sees every tick's aspects and checks the three safety properties."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.previous: dict[str, str] = {g: "red" for g in layout.groups}
        self.opened: dict[str, float] = {g: -math.inf for g in layout.groups}
        self.closed: dict[str, float] = {g: -math.inf for g in layout.groups}
        self.greens_seen = 0

    def __call__(self, c: SignalController) -> None:
        now = c.t
        for g in self.layout.groups:
            was, is_ = self.previous[g], c.aspect[g]
            if was != GREEN and is_ == GREEN:
                self.greens_seen += 1
                self.opened[g] = now
                for other in self.layout.groups:
                    if self.layout.conflicting(g, other):
                        assert now - self.closed[other] >= self.layout.intergreen(other, g) - 1e-9, \
                            f"{g} opened {now - self.closed[other]:.2f} s after {other} closed"
            if was == GREEN and is_ != GREEN:
                self.closed[g] = now
                assert now - self.opened[g] >= self.layout.min_green_s[g] - 1e-9, f"{g} green cut short"
        open_ = [g for g in self.layout.groups if c.aspect[g] in OPEN]
        for i, a in enumerate(open_):
            for b in open_[i + 1:]:
                assert not self.layout.conflicting(a, b), f"conflicting {a} and {b} open at {now:.1f} s"
        assert c.fault is None, "the controller's conflict monitor tripped"
        self.previous = dict(c.aspect)


junk = st.recursive(st.none() | st.booleans() | st.integers(-10, 300) | st.floats(allow_nan=True) | st.text(max_size=8),
                    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
                    max_leaves=6)
commands = st.one_of(
    st.tuples(st.just("set_mode"), st.fixed_dictionaries({"mode": st.sampled_from(["normal", "flashing_amber", "all_red"])})),
    st.tuples(st.just("select_plan"), st.fixed_dictionaries({"plan": st.integers(0, 12)})),
    st.tuples(st.just("bus_priority"), st.just({})),
    st.tuples(st.sampled_from(["set_group", "force_green", "set_mode", "select_plan", "bus_priority", ""]),
              st.dictionaries(st.sampled_from(["mode", "plan", "group", "aspect", "x"]), junk, max_size=3)),
)
steps = st.lists(st.one_of(st.tuples(st.just("wait"), st.floats(0.1, 40, allow_nan=False)),
                           st.tuples(st.just("command"), commands),
                           st.tuples(st.just("timetable"), st.integers(0, 12)),
                           st.tuples(st.just("reset"), st.none())), max_size=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.integers(1, 12), plans, max_size=4), steps, st.booleans())
def test_no_command_sequence_ever_shows_conflicting_greens(programmed: dict[int, Plan], script: list[tuple[str, Any]],
                                                          standard: bool) -> None:
    """Any plans (most of them unsafe: refused at programming), any commands, any timing: the watcher
    never sees conflicting groups open, an intergreen cut or a green shorter than its minimum."""
    controller = SignalController(LAYOUT, {**(standard_plans() if standard else {}), **programmed})
    for number, plan in controller.plans.items():
        assert check_plan(LAYOUT, plan) == [] and plan.number == number
    watcher = Watcher(LAYOUT)
    controller.watch = watcher
    for action, arg in script:
        if action == "wait":
            controller.advance(arg)
        elif action == "command":
            name, params = arg
            try:
                controller.command(name, params)
            except CommandRefused:
                pass
        elif action == "timetable":
            controller.set_timetable(arg)
        else:
            controller.reset_fault()
    controller.advance(200)


def test_the_controller_runs_its_plan_and_serves_a_bus_within_the_plan_limit() -> None:
    controller = SignalController(LAYOUT, standard_plans(), default_plan=3)
    watcher = Watcher(LAYOUT)
    controller.watch = watcher
    controller.advance(2 * 84 + 10)
    assert watcher.greens_seen >= 2 * len(GROUPS)  # every group got green, every cycle
    while controller.aspect["B1"] != GREEN:
        controller.advance(1)
    assert "held up to 10 s" in controller.command("bus_priority", {})
    with pytest.raises(CommandRefused, match="already given this cycle"):
        controller.command("bus_priority", {})
    controller.advance(30)
    assert controller.bus_granted == 1 and controller.bus_saved_s == pytest.approx(10)


def test_leaving_flashing_amber_starts_all_red_for_the_longest_intergreen() -> None:
    controller = SignalController(LAYOUT, standard_plans())
    controller.advance(30)
    controller.command("set_mode", {"mode": "flashing_amber"})
    controller.advance(15)
    assert set(controller.aspect.values()) == {"flashing_amber"}
    controller.command("set_mode", {"mode": "normal"})
    controller.advance(6.5)
    assert set(controller.aspect.values()) == {"red"}
    controller.advance(1.5)
    assert controller.aspect["V1"] == GREEN


def test_a_refused_plan_is_never_run_and_says_why() -> None:
    clash = Plan(7, 60, {"V1": ((0, 30),), "V2": ((10, 20),), "B1": ((0, 30),), "P1": ((0, 30),), "P2": ((40, 10),)})
    controller = SignalController(LAYOUT, {**standard_plans(), 7: clash})
    assert 7 not in controller.plans and any("intergreen" in p for p in controller.refused_plans[7])
    with pytest.raises(CommandRefused, match="not a checked plan"):
        controller.command("select_plan", {"plan": 7})
    assert AMBER_S == 3
