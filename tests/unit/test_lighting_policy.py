"""The lighting policy and its energy figures: floors, daylight, adaptive and presence dimming, nights
that follow the sun at Dijon, forecasts against the pre-LED baseline."""

from __future__ import annotations

import datetime as dt
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citypilot.lighting import energy, policy
from citypilot.lighting.astro import PARIS, sunrise_sunset
from citypilot.sim.city import build_city
from citypilot.sim.lighting import Lighting, street_activity

STREET_TYPES = [*policy.PROGRAMMES, "crossing", "stairs", None]
moments = st.datetimes(min_value=dt.datetime(2024, 1, 1), max_value=dt.datetime(2030, 12, 31),
                       timezones=st.just(PARIS))
floors = st.floats(min_value=0, max_value=100, allow_nan=False)
activities = st.none() | st.floats(min_value=-1, max_value=2, allow_nan=False)


def local(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=PARIS)


def dark(moment: dt.datetime) -> bool:
    return policy.night_at(moment) is not None


@settings(max_examples=400, deadline=None)
@given(moments, st.sampled_from(STREET_TYPES), floors, activities, st.booleans(),
       st.none() | st.floats(min_value=-10, max_value=1000, allow_nan=False), st.booleans())
def test_the_planned_level_is_off_by_day_and_within_floor_and_100_at_night(moment, street_type, floor, activity,
                                                                          presence, since, corridor):
    level = policy.planned_level(moment, street_type, floor_pct=floor, activity=activity, presence_detection=presence,
                                 since_detection_s=since, corridor=corridor)
    if dark(moment):
        assert floor <= level <= 100.0
    else:
        assert level == 0.0


@settings(max_examples=200, deadline=None)
@given(st.floats(), st.floats(), st.none() | st.floats(), st.booleans(), st.booleans())
def test_no_input_takes_a_level_below_the_floor_or_above_100(programme, floor, activity, presence, detected):
    level = policy.adjusted_level(50.0 if math.isnan(programme) else programme, floor_pct=floor, activity=activity,
                                  presence_detection=presence, detected=detected)
    assert policy.clamp_floor(floor) <= level <= 100.0


@settings(max_examples=300, deadline=None)
@given(moments, st.sampled_from(list(policy.PROGRAMMES)), st.floats(min_value=-5, max_value=5, allow_nan=False))
def test_adaptive_dimming_takes_off_at_most_half_and_nothing_when_busy(moment, street_type, activity):
    if not dark(moment):
        return
    programme = policy.programme_level(moment, street_type)
    level = policy.planned_level(moment, street_type, activity=activity)
    assert 0.5 * programme - 1e-9 <= level <= programme
    busy = policy.planned_level(moment, street_type, activity=policy.ADAPTIVE_FULL_ACTIVITY)
    assert busy == programme == policy.planned_level(moment, street_type)
    assert policy.planned_level(moment, street_type, activity=0.0) == pytest.approx(programme / 2)


def test_less_activity_means_less_light():
    moment = local(2026, 12, 7, 23, 30)
    levels = [policy.planned_level(moment, "bypass", activity=a) for a in np.linspace(0, 1, 11)]
    assert levels == sorted(levels) and levels[0] == 35.0 and levels[-1] == 70.0


@settings(max_examples=200, deadline=None)
@given(moments, floors, st.floats(min_value=0, max_value=policy.PRESENCE_HOLD_S, exclude_max=True))
def test_presence_gives_full_light_during_the_hold_and_the_minimum_after(moment, floor, since):
    if not dark(moment):
        return
    assert policy.planned_level(moment, "pedestrian", floor_pct=floor, presence_detection=True,
                                since_detection_s=since) == 100.0
    if policy.programme_level(moment, "pedestrian") < 100:
        idle = policy.planned_level(moment, "pedestrian", floor_pct=floor, presence_detection=True,
                                    since_detection_s=policy.PRESENCE_HOLD_S + 1)
        assert idle == max(floor, policy.PRESENCE_IDLE_PCT)


def test_the_programmes_at_known_moments_in_december():
    assert policy.planned_level(local(2026, 12, 7, 12), "residential") == 0.0
    assert policy.planned_level(local(2026, 12, 7, 18), "residential") == 100.0
    assert policy.planned_level(local(2026, 12, 7, 23), "residential") == 50.0
    assert policy.planned_level(local(2026, 12, 8, 6), "residential") == 80.0
    assert policy.planned_level(local(2026, 12, 7, 23, 30), "commercial") == 60.0
    assert policy.planned_level(local(2026, 12, 7, 23, 30), "commercial", floor_pct=75) == 75.0
    assert policy.planned_level(local(2026, 12, 7, 17, 30), "residential", corridor=True) == 40.0
    assert policy.planned_level(local(2026, 12, 7, 23), "bypass", corridor=True) == 20.0
    assert policy.planned_level(local(2026, 12, 7, 23), "stairs") == 50.0  # lit as housing


def test_the_timeline_follows_the_sun_december_nights_are_longer_than_june_ones():
    for day in (dt.date(2026, 12, 21), dt.date(2026, 6, 21), dt.date(2026, 3, 29)):  # 29 March: clocks go forward
        sunset = sunrise_sunset(day)[1]
        sunrise = sunrise_sunset(day + dt.timedelta(days=1))[0]
        for street_type in policy.PROGRAMMES:
            segments = policy.night_timeline(day, street_type, floor_pct=30)
            assert segments[0].start == sunset and segments[-1].end == sunrise
            assert all(a.end == b.start for a, b in itertools.pairwise(segments)), "contiguous"
            assert all(s.start < s.end and 30 <= s.level_pct <= 100 for s in segments)
    december = policy.night_of(dt.date(2026, 12, 21))
    june = policy.night_of(dt.date(2026, 6, 21))
    assert december.hours > 15 and june.hours < 8.5
    assert december.sunset.hour == 16 and june.sunset.hour == 21
    # In June the 22:00 dimming starts minutes after sunset; in December five hours after.
    june_res = policy.night_timeline(dt.date(2026, 6, 21), "residential")
    assert (june_res[1].start - june_res[0].start) < dt.timedelta(minutes=30)


def test_each_programme_is_written_with_valid_windows():
    with pytest.raises(ValueError):
        policy.Window("dusk", "22:00", 50)
    with pytest.raises(ValueError):
        policy.Window("22:00", "05:00", 120)
    assert set(policy.PROGRAMMES) == {"residential", "commercial", "bypass", "pedestrian", "ecological_corridor"}


def test_the_floor_comes_from_the_interlocks():
    assert policy.light_profile({"street_type": "bypass", "safety_floor_pct": 50.0}) == ("bypass", 50.0, False, False)
    assert policy.light_profile({"street_type": "crossing"})[1] == 60.0
    assert policy.light_profile({"street_type": "pedestrian", "presence_detection": True,
                                 "ecological_corridor": True}) == ("pedestrian", 30.0, True, True)


# --- energy ---------------------------------------------------------------------------------------------

NOVEMBER = (local(2026, 11, 1), local(2026, 12, 1))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(list(policy.PROGRAMMES)), floors, st.booleans(), st.dates(dt.date(2025, 1, 1), dt.date(2029, 12, 1)),
       st.integers(1, 40))
def test_the_forecast_is_never_above_the_dark_hours_at_full_power(street_type, floor, presence, day, days):
    start = dt.datetime.combine(day, dt.time(), PARIS)
    end = start + dt.timedelta(days=days)
    full = energy.baseline_kwh(1000.0, start, end)  # kWh of a 1 kW lamp dusk to dawn = the dark hours
    forecast = energy.forecast_kwh(1000.0, start, end, street_type, floor_pct=floor, presence_detection=presence)
    assert full * floor / 100 - 1e-6 <= forecast <= full + 1e-6
    assert 7.9 * days <= full <= 15.5 * days


def test_a_led_residential_month_beats_its_sodium_baseline_by_the_contract_goal():
    start, end = NOVEMBER
    forecast = energy.forecast_kwh(39.0, start, end, "residential", floor_pct=30)
    baseline = energy.baseline_kwh(energy.pre_led_power_w({"street_type": "residential"}), start, end)
    dark_hours = energy.baseline_kwh(1000.0, start, end)
    assert 14 * 30 < dark_hours < 15.5 * 30  # November nights at Dijon: 14 to 15 h
    assert baseline == pytest.approx(0.1 * dark_hours)
    assert forecast < baseline
    saving = energy.saving_pct(forecast, baseline)
    assert saving is not None and saving > energy.GOAL_SAVING_PCT and energy.meets_goal(saving) is True
    assert energy.meets_goal(64.9) is False and energy.meets_goal(None) is None


def test_pre_led_power_from_the_sheet_else_sodium_by_street_type():
    assert energy.pre_led_power_w({"pre_led_power_w": 131.0, "street_type": "bypass"}) == 131.0
    assert [energy.pre_led_power_w({"street_type": t}) for t in ("residential", "commercial", "bypass")] == [100, 150, 250]
    assert energy.pre_led_power_w({}) == energy.PRE_LED_FALLBACK_W


def test_savings_and_forecast_gaps_are_none_without_data():
    assert energy.saving_pct(None, 100.0) is None and energy.saving_pct(10.0, 0.0) is None
    assert energy.saving_pct(35.0, 100.0) == pytest.approx(65.0)
    assert energy.vs_forecast_pct(110.0, 100.0) == pytest.approx(10.0) and energy.vs_forecast_pct(None, 5.0) is None


def test_span_hours_match_the_scalar_forecast():
    start, end = NOVEMBER
    spans = energy.SpanHours(start, end)
    key = ("commercial", 30.0, False, False)
    mid = local(2026, 11, 10, 19, 17)
    got = spans.hours(key, [start.timestamp(), mid.timestamp()], [end.timestamp(), end.timestamp()])
    assert got[0] * 52 / 1000 == pytest.approx(energy.forecast_kwh(52.0, start, end, "commercial", floor_pct=30))
    assert got[1] * 52 / 1000 == pytest.approx(energy.forecast_kwh(52.0, mid, end, "commercial", floor_pct=30))
    dark = spans.hours(None, [start.timestamp()], [end.timestamp()])
    assert dark[0] == pytest.approx(energy.baseline_kwh(1000.0, start, end))


# --- the simulator follows the policy -------------------------------------------------------------------

@pytest.fixture(scope="module")
def city():
    return build_city(seed=1, scale=1)


def test_the_simulated_lights_follow_the_policy_and_never_go_below_their_floor(city):
    moment = local(2026, 12, 7, 23, 30)
    lighting = Lighting(city, np.random.default_rng(3), moment)
    lit = lighting.lit
    assert lit.mean() > 0.95
    assert (lighting.level[lit] >= lighting.floor[lit]).all()
    lights = {a.id: a for a in city.assets if a.kind == "street_light"}
    for i in np.flatnonzero(lit)[::97]:
        attrs = lights[lighting.light_ids[i]].attributes
        street_type, floor, corridor, presence = policy.light_profile(attrs)
        detected = lighting.presence_until[i] > moment.timestamp()
        activity = street_activity(moment) if attrs.get("adaptive_dimming") else None
        expected = policy.planned_level(moment, street_type, floor_pct=floor, presence_detection=presence,
                                        since_detection_s=0.0 if detected else None, corridor=corridor,
                                        activity=activity)
        assert lighting.level[i] == expected
    # late at night, lights with a traffic counter burn below their programme; corridors low
    kinds = {k: np.array([lights[i].attributes.get(k) is True for i in lighting.light_ids]) for k in
             ("adaptive_dimming", "ecological_corridor")}
    commercial = np.array([lights[i].attributes["street_type"] == "commercial" for i in lighting.light_ids])
    assert kinds["adaptive_dimming"].any() and kinds["ecological_corridor"].any()
    busy_floor = lighting.floor[commercial & lit]
    assert (lighting.level[commercial & lit] < 60.0).all() and (lighting.level[commercial & lit] >= busy_floor).all()
    corridors = kinds["ecological_corridor"] & lit
    still = corridors & ~lighting.presence
    assert still.any() and set(np.unique(lighting.level[still])) == {20.0}, "after the first hour, corridors burn at 20 %"
    assert set(np.unique(lighting.level[corridors & lighting.presence])) <= {10.0, 100.0}, "footpaths idle lower"
    # a night of passers-by: some footpath lights at full, the rest idle at their floor
    lighting.advance(moment + dt.timedelta(minutes=1), 60)
    footpaths = lighting.presence & lighting.lit
    assert set(np.unique(lighting.level[footpaths])) <= {10.0, 30.0, 100.0}  # idle at the floor: 10 % on corridors
    assert 0 < (lighting.level[footpaths] == 100.0).sum() < footpaths.sum() / 10
    # a named programme still applies by command, and a dim below the floor is held at the floor
    cab = lighting.cabinet_ids[0]
    lighting.command(cab, cab, "apply_programme", {"programme": "eco"}, moment)
    first = lighting.lights_count(0)
    assert set(lighting.level[:first][lighting.lit[:first]]) <= {40.0, 50.0}
    light = lighting.light_ids[int(np.flatnonzero(lighting.lit)[0])]
    lighting.command(cab, light, "dim", {"level_pct": 5}, moment)
    assert lighting.level[lighting.light_index[light]] == lighting.floor[lighting.light_index[light]]
    lighting.command(cab, cab, "apply_programme", {"programme": "auto"}, moment)
    assert lighting.programme[0] == "auto"
