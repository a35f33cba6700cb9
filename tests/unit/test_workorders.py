"""Work orders and dispatch, pure parts: the lifecycle and who may move it, SLA deadlines, recurring
maintenance, and the nearest-team ranking."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citypilot.dispatch import nearest
from citypilot.dispatch.nearest import Candidate
from citypilot.workorders import lifecycle
from citypilot.workorders.lifecycle import Actor, TransitionError, WorkOrder

T0 = dt.datetime(2026, 12, 5, 8, 0, tzinfo=dt.timezone.utc)


def order(**changes) -> WorkOrder:
    base = dict(id=1, title="Lamp out", service="lighting", category="street_light", priority="normal", state="new",
                origin="request", lat=47.32, lon=5.04, sla_response_due=T0 + dt.timedelta(hours=48),
                sla_resolution_due=T0 + dt.timedelta(hours=72), created_by="system", created_at=T0, updated_at=T0)
    return WorkOrder(**{**base, **changes})


def test_the_happy_path_stamps_every_step():
    o, journal = lifecycle.assign(order(), "T1", "lighting", T0)
    assert (o.state, o.team_id, journal, o.version) == ("assigned", "T1", "workorder.assigned", 2)
    o, _ = lifecycle.accept(o, T0 + dt.timedelta(minutes=1))
    o, _ = lifecycle.advance(o, "en_route", T0 + dt.timedelta(minutes=2))
    o, _ = lifecycle.advance(o, "on_site", T0 + dt.timedelta(minutes=20))
    o, journal = lifecycle.advance(o, "done", T0 + dt.timedelta(minutes=50), "Lamp replaced")
    assert (o.state, o.outcome_note, journal) == ("done", "Lamp replaced", "workorder.done")
    assert o.assigned_at < o.accepted_at < o.en_route_at < o.on_site_at < o.done_at
    o, journal = lifecycle.confirm(o, "coord", T0 + dt.timedelta(hours=1))
    assert (o.confirmed_by, journal, o.version) == ("coord", "workorder.confirmed", 7)
    assert o.overdue(T0 + dt.timedelta(days=10)) == {"response": False, "resolution": False}


def test_illegal_moves_are_refused_with_a_reason():
    with pytest.raises(TransitionError) as caught:
        lifecycle.advance(order(), "done", T0, "x")
    assert caught.value.status == 409 and "done follows on_site" in caught.value.reason
    assigned, _ = lifecycle.assign(order(), "T1", "lighting", T0)
    with pytest.raises(TransitionError, match="a note is required"):
        lifecycle.advance(lifecycle.advance(assigned, "on_site", T0)[0], "done", T0, "  ")
    with pytest.raises(TransitionError, match="belongs to the roads service"):
        lifecycle.assign(order(), "R1", "roads", T0)
    with pytest.raises(TransitionError, match="already assigned"):
        lifecycle.assign(assigned, "T1", "lighting", T0)
    with pytest.raises(TransitionError, match="only a done order can be confirmed"):
        lifecycle.confirm(assigned, "coord", T0)
    cancelled, _ = lifecycle.cancel(assigned, T0, "duplicate")
    with pytest.raises(TransitionError, match="cannot be cancelled"):
        lifecycle.cancel(cancelled, T0, "again")
    with pytest.raises(TransitionError, match="a note is required"):
        lifecycle.cancel(assigned, T0, None)
    with pytest.raises(TransitionError, match="unknown move"):
        lifecycle.advance(assigned, "teleport", T0)


def test_a_reassignment_and_a_reopening():
    o, _ = lifecycle.advance(lifecycle.assign(order(), "T1", "lighting", T0)[0], "en_route", T0)
    o, journal = lifecycle.assign(o, "T2", "lighting", T0)
    assert (o.state, o.team_id, o.en_route_at, journal) == ("assigned", "T2", None, "workorder.reassigned")
    o, _ = lifecycle.advance(lifecycle.advance(o, "on_site", T0)[0], "done", T0, "done")
    o, journal = lifecycle.reopen(o, T0, "the lamp is out again")
    assert (o.state, o.done_at, journal) == ("assigned", None, "workorder.reopened")


def test_who_may_dispatch_and_work():
    o = order(team_id="T1", state="assigned")
    assert lifecycle.may_dispatch(Actor("c", "service_coordinator", "lighting"), o)
    assert not lifecycle.may_dispatch(Actor("c", "service_coordinator", "roads"), o)
    assert not lifecycle.may_dispatch(Actor("op", "operator"), o)
    assert lifecycle.may_work(Actor("f", "field_agent", "lighting", "T1"), o)
    assert not lifecycle.may_work(Actor("f", "field_agent", "lighting", "T2"), o)
    assert not lifecycle.may_work(Actor("f", "field_agent", "lighting", None), o)
    assert lifecycle.may_create(Actor("op", "operator"), "roads")
    assert not lifecycle.may_create(Actor("s", "switchboard"), "roads")


ACTIONS = st.sampled_from(["assign", "unassign", "accept", "en_route", "on_site", "done", "confirm", "reopen", "cancel"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(ACTIONS, st.sampled_from(["T1", "T2"]), st.sampled_from([None, "", "a note"])), max_size=25))
def test_any_sequence_of_actions_keeps_the_order_consistent(steps):
    """Whatever is tried, in any order: the state stays known, each accepted change bumps the version by
    one, a closed order stays closed, and the stamps never contradict the state."""
    o = order()
    at = T0
    for action, team, note in steps:
        at += dt.timedelta(minutes=5)
        before = o
        try:
            if action == "assign":
                o, _ = lifecycle.assign(o, team, "lighting", at)
            elif action == "unassign":
                o, _ = lifecycle.unassign(o, at)
            elif action == "accept":
                o, _ = lifecycle.accept(o, at)
            elif action in lifecycle.FIELD_MOVES:
                o, _ = lifecycle.advance(o, action, at, note)
            elif action == "confirm":
                o, _ = lifecycle.confirm(o, "c", at)
            elif action == "reopen":
                o, _ = lifecycle.reopen(o, at, note)
            else:
                o, _ = lifecycle.cancel(o, at, note)
        except TransitionError as exc:
            assert exc.status in (403, 409, 422) and exc.reason
            assert o == before
            continue
        assert o.version == before.version + 1 and o.state in lifecycle.STATES
        assert before.state != "cancelled" and not (before.confirmed_at and before.state == "done")
        assert (o.team_id is None) == (o.state == "new") or o.state in ("done", "cancelled")
        if o.state == "done":
            assert o.done_at and o.outcome_note
        if o.state in ("en_route", "on_site"):
            assert o.en_route_at and o.team_id


def test_recurring_maintenance_dates():
    first = dt.datetime(2026, 1, 31, 9, 0, tzinfo=dt.timezone.utc)
    monthly = lifecycle.check_recurrence({"every": 1, "unit": "month"})
    assert lifecycle.next_occurrence(first, monthly, first) == dt.datetime(2026, 2, 28, 9, 0, tzinfo=dt.timezone.utc)
    late = dt.datetime(2026, 5, 2, tzinfo=dt.timezone.utc)  # done very late: no pile of missed occurrences
    assert lifecycle.next_occurrence(first, monthly, late) == dt.datetime(2026, 5, 31, 9, 0, tzinfo=dt.timezone.utc)
    early = dt.datetime(2026, 1, 20, tzinfo=dt.timezone.utc)  # done before its date: the next is still a month on
    assert lifecycle.next_occurrence(first, monthly, early) == dt.datetime(2026, 2, 28, 9, 0, tzinfo=dt.timezone.utc)
    weekly = lifecycle.check_recurrence({"every": 2, "unit": "week", "until": "2026-02-10"})
    assert lifecycle.next_occurrence(first, weekly, first) is None  # 14 Feb is past the end of the series
    for wrong in ({"every": 0, "unit": "day"}, {"every": 1, "unit": "year"}, {"every": 1}, {"every": "1", "unit": "day"},
                  {"every": 1, "unit": "day", "until": "soon"}, {"every": 1, "unit": "day", "on": "monday"}):
        with pytest.raises(ValueError):
            lifecycle.check_recurrence(wrong)


# --- dispatch ---------------------------------------------------------------------------------------

def team(i: int, lat: float, lon: float, status="available", age_s=5.0, service="lighting", vtype="van") -> Candidate:
    return Candidate(f"T{i}", service, status, f"V{i}", vtype, lat, lon, T0 - dt.timedelta(seconds=age_s))


def test_the_nearest_available_team_of_the_service_first():
    site = (47.3220, 5.0415)
    teams = [team(1, 47.3300, 5.0415), team(2, 47.3230, 5.0415), team(3, 47.3225, 5.0415, status="on_scene"),
             team(4, 47.3221, 5.0415, age_s=600), team(5, 47.3222, 5.0415, service="roads"),
             team(6, 47.3240, 5.0415, vtype="sweeper"), Candidate("T7", "lighting", "available", None, None, None, None,
                                                                 None)]
    ok, excluded = nearest.eligible(teams, "lighting", T0)
    ranked = nearest.rank(ok, *site)
    assert [r.team_id for r in ranked] == ["T2", "T6", "T1"]
    assert ranked[0].distance_m == pytest.approx(111.2, abs=0.5)
    assert ranked[0].travel_s == pytest.approx(111.2 * 1.3 / (27 / 3.6), rel=0.01)
    assert {e.team_id: e.reason for e in excluded} == {"T3": "status on_scene", "T4": "position 600 s old (limit 120 s)",
                                                       "T7": "no vehicle"}


def test_routing_times_reorder_the_teams():
    ok, _ = nearest.eligible([team(1, 47.33, 5.04), team(2, 47.31, 5.04)], "lighting", T0)
    assert [r.team_id for r in nearest.rank(ok, 47.32, 5.04, travel_s=[100.0, 900.0])] == ["T1", "T2"]
    assert [r.team_id for r in nearest.rank(ok, 47.32, 5.04, travel_s=[900.0, 100.0])] == ["T2", "T1"]


def test_among_a_thousand_vehicles_the_five_nearest_are_recommended():
    import random

    rng = random.Random(7)
    fleet = [team(i, 47.25 + rng.random() * 0.15, 4.95 + rng.random() * 0.2) for i in range(1000)]
    ok, _ = nearest.eligible(fleet, "lighting", T0)
    ranked = nearest.rank(ok, 47.32, 5.04)
    distances = sorted(nearest.haversine_m(c.lat, c.lon, 47.32, 5.04) for c, _ in ok)
    assert [r.distance_m for r in ranked] == pytest.approx(distances[:5], abs=0.1)  # one vehicle type: time ~ distance
