"""The alarm engine and lifecycle, without servers: rules in, decisions out."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from citypilot.alarms.engine import AssetFacts, Clear, Engine, Fold
from citypilot.alarms.lifecycle import (
    Raise,
    TransitionError,
    acknowledge,
    clear,
    close,
    raise_alarm,
    shelve,
    unshelve,
)
from citypilot.alarms.rules import load_default_rules, load_rules
from citypilot.equipment.catalog import default_catalog

T0 = dt.datetime(2026, 11, 21, 18, 0, tzinfo=dt.timezone.utc)
CATALOG = default_catalog()


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


@pytest.fixture
def engine() -> Engine:
    e = Engine(load_default_rules(CATALOG), CATALOG)
    e.add_asset(AssetFacts("CAB-1", "lighting_cabinet", "21231", 47.32, 5.04, "lighting", None))
    for i in range(10):
        e.add_asset(AssetFacts(f"SL-{i}", "street_light", "21231", 47.32, 5.04, "lighting", "CAB-1"))
    e.add_asset(AssetFacts("PK-1", "parking_sensor", "21231", 47.32, 5.04, "parking", None, {"bay_type": "delivery"}))
    e.add_asset(AssetFacts("BLD-1", "building_alarm_panel", "21231", 47.32, 5.04, "buildings", None))
    e.add_asset(AssetFacts("TC-1", "traffic_controller", "21231", 47.32, 5.04, "traffic", None))
    return e


def kinds(decisions):
    return [(type(d).__name__, getattr(d, "key", None) or (d.child, d.parent)) for d in decisions]


def test_a_state_rule_raises_once_and_clears_when_its_condition_goes(engine):
    out = engine.finish(engine.on_twin("SL-1", at(0), {"fault": "lamp_failure"}, at(0)), at(0))
    assert kinds(out) == [("Raise", ("SL-1", "lamp_failure"))]
    assert out[0].severity == "minor" and out[0].notify == ("lighting",) and out[0].commune == "21231"
    # The same value again, or another value the rule does not read: nothing new.
    assert engine.finish(engine.on_twin("SL-1", at(1), {"fault": "lamp_failure"}, at(1)), at(1)) == []
    assert engine.finish(engine.on_twin("SL-1", at(2), {"dimming_pct": 40}, at(2)), at(2)) == []
    out = engine.finish(engine.on_twin("SL-1", at(3), {"fault": "none"}, at(3)), at(3))
    assert kinds(out) == [("Clear", ("SL-1", "lamp_failure"))]


def test_hysteresis_keeps_the_alarm_between_the_two_thresholds(engine):
    assert kinds(engine.finish(engine.on_twin("PK-1", at(0), {"battery_pct": 8}, at(0)), at(0))) == \
        [("Raise", ("PK-1", "battery_low"))]
    assert engine.finish(engine.on_twin("PK-1", at(1), {"battery_pct": 12}, at(1)), at(1)) == []  # between 10 and 15
    assert kinds(engine.finish(engine.on_twin("PK-1", at(2), {"battery_pct": 16}, at(2)), at(2))) == \
        [("Clear", ("PK-1", "battery_low"))]


def test_a_for_condition_raises_only_after_holding_long_enough(engine):
    assert engine.finish(engine.on_twin("PK-1", at(0), {"occupied": True}, at(0)), at(0)) == []
    assert engine.tick(at(29 * 60)) == []
    out = engine.tick(at(30 * 60 + 1))
    assert kinds(out) == [("Raise", ("PK-1", "delivery_bay_overstay"))]
    assert out[0].notify == ("police",)
    # Left before the delay: nothing.
    engine.finish(engine.on_twin("PK-1", at(4000), {"occupied": False}, at(4000)), at(4000))
    engine.finish(engine.on_twin("PK-1", at(4100), {"occupied": True}, at(4100)), at(4100))
    engine.finish(engine.on_twin("PK-1", at(4200), {"occupied": False}, at(4200)), at(4200))
    assert [d for d in engine.tick(at(9000)) if d.key == ("PK-1", "delivery_bay_overstay") and type(d).__name__ == "Raise"] == []


def test_fire_is_critical_and_tells_the_police_and_the_buildings_service(engine):
    out = engine.finish(engine.on_twin("BLD-1", at(0), {"fire": "alarm"}, at(0)), at(0))
    assert kinds(out) == [("Raise", ("BLD-1", "fire_alarm"))]
    assert out[0].severity == "critical" and set(out[0].notify) == {"buildings", "police"} and out[0].restricted


def test_event_rules_repeat_and_clear_on_state(engine):
    first = engine.on_event("TC-1", "detector_fault", at(0), {})
    engine.finish(first, at(0))
    again = engine.finish(engine.on_event("TC-1", "detector_fault", at(5), {}), at(5))
    assert kinds(again) == [("Raise", ("TC-1", "detector_fault"))]  # the store counts it as a repeat
    out = engine.finish(engine.on_twin("TC-1", at(10), {"fault": "none"}, at(10)), at(10))
    assert ("Clear", ("TC-1", "detector_fault")) in kinds(out)


def test_connectivity_offline_raises_and_back_online_clears(engine):
    out = engine.finish(engine.on_connectivity("CAB-1", "offline", at(0)), at(0))
    assert kinds(out) == [("Raise", ("CAB-1", "offline"))] and out[0].severity == "major"
    assert engine.finish(engine.on_connectivity("CAB-1", "offline", at(1)), at(1)) == []
    out = engine.finish(engine.on_connectivity("CAB-1", "online", at(2)), at(2))
    assert kinds(out) == [("Clear", ("CAB-1", "offline"))]
    # Lights are not watched one by one: their cabinet is.
    assert engine.on_connectivity("SL-1", "unreachable", at(3)) == []


def test_most_lights_of_a_cabinet_failing_together_make_one_cabinet_alarm(engine):
    decisions = []
    for i in range(7):
        decisions += engine.on_twin(f"SL-{i}", at(0), {"fault": "lamp_failure"}, at(0))
    out = engine.finish(decisions, at(0))
    parents = [d for d in out if type(d).__name__ == "Raise" and d.parent is None]
    assert [p.key for p in parents] == [("CAB-1", "cabinet_lights_failure")]
    assert parents[0].data == {"failing": 7, "of": 10}
    children = [d for d in out if type(d).__name__ == "Raise" and d.parent == ("CAB-1", "cabinet_lights_failure")]
    assert len(children) == 7
    # The cabinet alarm clears when fewer than min_count lights are still failing.
    decisions = []
    for i in range(3):
        decisions += engine.on_twin(f"SL-{i}", at(60), {"fault": "none"}, at(60))
    out = engine.finish(decisions, at(60))
    assert ("Clear", ("CAB-1", "cabinet_lights_failure")) in kinds(out)


def test_a_few_failing_lights_stay_individual_then_fold_when_most_fail(engine):
    out = engine.finish(engine.on_twin("SL-0", at(0), {"fault": "lamp_failure"}, at(0)), at(0))
    assert out[0].parent is None
    decisions = []
    for i in range(1, 6):
        decisions += engine.on_twin(f"SL-{i}", at(10), {"fault": "driver_failure"}, at(10))
    out = engine.finish(decisions, at(10))
    assert any(isinstance(d, Fold) and d.child == ("SL-0", "lamp_failure") for d in out)
    assert out[0].key == ("CAB-1", "cabinet_lights_failure")  # the parent comes first, for the store


def test_a_storm_in_one_commune_is_grouped_but_never_hides_a_fire(engine):
    for i in range(30):
        engine.add_asset(AssetFacts(f"PN-{i}", "information_panel", "21054", 47.3, 5.0, "traffic", None))
    engine.add_asset(AssetFacts("BLD-2", "building_alarm_panel", "21054", 47.3, 5.0, "buildings", None))
    decisions = []
    for i in range(30):
        decisions += engine.on_twin(f"PN-{i}", at(i), {"fault": "power"}, at(i))
    out = engine.finish(decisions, at(30))
    storm = [d for d in out if type(d).__name__ == "Raise" and d.key == ("commune:21054", "alarm_storm")]
    assert len(storm) == 1
    folded = [d for d in out if (type(d).__name__ == "Raise" and d.parent == storm[0].key) or isinstance(d, Fold)]
    assert len(folded) >= 20
    fire = engine.finish(engine.on_twin("BLD-2", at(40), {"fire": "alarm"}, at(40)), at(40))
    assert fire[0].parent is None  # critical: stays in sight
    # The storm calms down after its window without new alarms.
    assert ("Clear", ("commune:21054", "alarm_storm")) in kinds(engine.tick(at(40 + 121)))


def test_reconcile_raises_what_holds_and_clears_what_does_not(engine):
    engine.set_values("SL-1", {"fault": "lamp_failure"})
    engine.set_values("SL-2", {"fault": "none"})
    engine.add_active("SL-2", "lamp_failure", "street-light-lamp-failure", "minor", "21231", False)
    out = engine.reconcile(at(0))
    assert ("Raise", ("SL-1", "lamp_failure")) in kinds(out)
    assert ("Clear", ("SL-2", "lamp_failure")) in kinds(out)


def test_unknown_assets_and_values_of_the_wrong_type_raise_nothing(engine):
    assert engine.on_twin("NOPE", at(0), {"fault": "lamp_failure"}, at(0)) == []
    assert engine.finish(engine.on_twin("SL-1", at(0), {"fault": 42}, at(0)), at(0)) == []


# --- lifecycle ------------------------------------------------------------------------------------------

def _raise(seconds: float) -> Raise:
    return Raise("SL-1", "lamp_failure", "r", "lighting", "minor", "Lamp failure", at(seconds), asset_id="SL-1")


def test_lifecycle_dedup_new_occurrence_and_replays():
    alarm, jt = raise_alarm(None, _raise(0))
    assert (jt, alarm.state, alarm.count, alarm.occurrence) == ("alarm.raised", "raised", 1, 1)
    alarm, jt = raise_alarm(alarm, _raise(10))
    assert (jt, alarm.count, alarm.last_seen) == ("alarm.repeated", 2, at(10))
    assert raise_alarm(alarm, _raise(10)) == (alarm, None)  # a redelivered verdict changes nothing
    alarm, jt = acknowledge(alarm, "ada", at(20))
    assert (jt, alarm.state, alarm.acknowledged_by) == ("alarm.acknowledged", "acknowledged", "ada")
    with pytest.raises(TransitionError) as exc:
        acknowledge(alarm, "bob", at(21))
    assert exc.value.status == 409 and "already acknowledged by ada" in exc.value.reason
    alarm, jt = clear(alarm, "system", at(30), "condition no longer holds")
    assert (jt, alarm.state) == ("alarm.cleared", "closed")  # acknowledged and cleared: nothing left to do
    assert raise_alarm(alarm, _raise(25)) == (alarm, None)  # older than the clearing
    alarm, jt = raise_alarm(alarm, _raise(40))
    assert (jt, alarm.state, alarm.occurrence, alarm.count, alarm.acknowledged_by) == ("alarm.raised", "raised", 2, 3, None)


def test_an_unacknowledged_cleared_alarm_waits_to_be_seen():
    alarm, _ = raise_alarm(None, _raise(0))
    alarm, _ = clear(alarm, "system", at(5), "gone")
    assert alarm.state == "cleared"
    with pytest.raises(TransitionError):
        clear(alarm, "ada", at(6), "again")
    alarm, jt = acknowledge(alarm, "ada", at(7))
    assert (jt, alarm.state) == ("alarm.closed", "closed")
    with pytest.raises(TransitionError) as exc:
        close(alarm, "ada", at(8))
    assert exc.value.status == 409


def test_close_needs_a_cleared_alarm_and_shelving_has_limits():
    alarm, _ = raise_alarm(None, _raise(0))
    with pytest.raises(TransitionError, match="still active"):
        close(alarm, "ada", at(1))
    with pytest.raises(TransitionError) as exc:
        shelve(alarm, "ada", at(1), at(0), "later")
    assert exc.value.status == 422
    with pytest.raises(TransitionError):
        shelve(alarm, "ada", at(1), at(8 * 86400), "too long")
    alarm, jt = shelve(alarm, "ada", at(1), at(3600), "works planned")
    assert jt == "alarm.shelved" and alarm.shelved(at(10)) and not alarm.shelved(at(3601))
    alarm, jt = unshelve(alarm, "ada", at(20))
    assert jt == "alarm.unshelved" and alarm.shelved_until is None


def test_rules_from_a_directory_load_with_the_catalogue(tmp_path: Path):
    (tmp_path / "one.toml").write_text('[[rule]]\nid = "x"\nkind = "street_light"\ntype = "dark"\nseverity = "minor"\n'
                                       'title = "Dark"\nwhen = "power_state == \'off\'"\n')
    rules = load_rules([tmp_path], CATALOG)
    e = Engine(rules, CATALOG)
    e.add_asset(AssetFacts("SL-9", "street_light", None, None, None, "lighting", None))
    assert kinds(e.finish(e.on_twin("SL-9", at(0), {"power_state": "off"}, at(0)), at(0))) == [("Raise", ("SL-9", "dark"))]
    assert isinstance(e.finish(e.on_twin("SL-9", at(1), {"power_state": "on"}, at(1)), at(1))[0], Clear)


def test_a_city_wide_blackout_is_one_storm_per_commune():
    """Every light of 600 cabinets in 23 communes failing in one batch: 18,600 lamp alarms, folded under
    600 cabinet alarms (26 a commune), folded under one storm alarm per commune."""
    e = Engine(load_default_rules(CATALOG), CATALOG)
    communes = [f"21{c:03d}" for c in range(23)]
    for c in range(600):
        e.add_asset(AssetFacts(f"CAB-{c}", "lighting_cabinet", communes[c % 23], 47.3, 5.0, "lighting", None))
        for i in range(31):
            e.add_asset(AssetFacts(f"SL-{c}-{i}", "street_light", communes[c % 23], 47.3, 5.0, "lighting", f"CAB-{c}"))
    decisions = []
    for c in range(600):
        for i in range(31):
            decisions += e.on_twin(f"SL-{c}-{i}", at(0), {"fault": "lamp_failure"}, at(0))
    out = e.finish(decisions, at(0))
    raises = [d for d in out if type(d).__name__ == "Raise"]
    top = [d for d in raises if d.parent is None]
    assert sorted(d.source for d in top) == sorted(f"commune:{c}" for c in communes)
    cabinets = [d for d in raises if d.type == "cabinet_lights_failure"]
    assert len(cabinets) == 600 and all(d.parent == (f"commune:{d.commune}", "alarm_storm") for d in cabinets)
    assert sum(1 for d in raises if d.type == "lamp_failure") == 18600
    assert all(d.parent == (d.source.replace("SL-", "CAB-").rsplit("-", 1)[0], "cabinet_lights_failure")
               for d in raises if d.type == "lamp_failure")


def test_a_shelved_alarm_tells_nobody():
    from citypilot.alarms.apply import notice_for

    alarm, _ = raise_alarm(None, _raise(0))
    alarm = replace_id(alarm)
    assert notice_for(alarm, "alarm.raised", at(0)) is not None
    shelved, _ = shelve(alarm, "ada", at(1), at(3600), "works planned")
    again, journal_type = raise_alarm(clear(shelved, "system", at(2), "gone")[0], _raise(10))
    assert journal_type == "alarm.raised" and notice_for(again, journal_type, at(10)) is None
    assert notice_for(again, "alarm.raised", at(3700)) is not None  # the shelving has expired


def replace_id(alarm):
    import dataclasses

    return dataclasses.replace(alarm, id=7, notify=("lighting",))
