"""The lighting programmes and the monthly energy KPI, on readings written straight into the time series.

The readings are last month's (the ingest only takes a week back): the test writes them with SQL into
the readings table's daily partitions, as the ingest worker would have. Ids and street names carry the
test's uid, and the assets stand in Bretenière, so that other tests' data in the shared database never
mixes with these figures. By street, the figures come from the daily roll-up: the tests roll the days
themselves, holding the roll-up's lock so that the application's background pass stays out meanwhile.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import psycopg
import pytest

from citypilot.lighting import energy, rollup
from citypilot.lighting.astro import PARIS

from .conftest import problem

BRETENIERE = ("21106", 47.237, 5.1014774)
ATTRS = {"lamp_power_w": 400.0, "pre_led_power_w": 1000.0, "street_type": "residential", "safety_floor_pct": 30.0}


def last_month() -> tuple[str, dt.datetime, dt.datetime]:
    first = dt.datetime.now(PARIS).date().replace(day=1)
    start_day = (first - dt.timedelta(days=1)).replace(day=1)
    start = dt.datetime.combine(start_day, dt.time(), PARIS)
    return f"{start_day:%Y-%m}", start, dt.datetime.combine(first, dt.time(), PARIS)


def partitions(city, start: dt.datetime, end: dt.datetime) -> None:
    day = start.astimezone(dt.UTC).date()
    while day <= end.astimezone(dt.UTC).date():
        lo = dt.datetime.combine(day, dt.time(), dt.UTC)
        city.sql(f"CREATE TABLE IF NOT EXISTS readings_{day:%Y%m%d} PARTITION OF readings "
                 f"FOR VALUES FROM ('{lo.isoformat()}') TO ('{(lo + dt.timedelta(days=1)).isoformat()}')")
        day += dt.timedelta(days=1)


@pytest.fixture
def lit_street(city):
    """Two cabinets in Bretenière; cabinet 1 feeds lights A and B on one street, cabinet 2 light C on
    another. Cabinet 1's meter and light A report last month; B, C and cabinet 2 never do."""
    month, start, end = last_month()
    code, lat, lon = BRETENIERE
    street, other = f"rue Lumière {city.uid}", f"allée Sombre {city.uid}"
    for suffix, kind, reported_by, address in (
            ("CAB-1", "lighting_cabinet", None, f"{street}, Bretenière"),
            ("CAB-2", "lighting_cabinet", None, f"{other}, Bretenière"),
            ("SL-A", "street_light", "CAB-1", f"1 {street}, Bretenière"),
            ("SL-B", "street_light", "CAB-1", f"3 bis {street}, Bretenière"),
            ("SL-C", "street_light", "CAB-2", f"2 {other}, Bretenière")):
        body = {"id": city.id(suffix), "kind": kind, "name": suffix, "lat": lat, "lon": lon, "address": address,
                "attributes": ATTRS if kind == "street_light" else {}}
        if reported_by:
            body["reported_by"] = city.id(reported_by)
        r = city.client.post("/api/v1/assets", headers=city.headers(), json=body)
        assert r.status_code == 201, r.text
        assert r.json()["commune"] == code
    partitions(city, start - dt.timedelta(hours=2), end + dt.timedelta(hours=2))
    hour = dt.timedelta(hours=1)
    # The meter: 1000 kWh an hour before the month, 1010 an hour in, 1300 an hour before its end, 1310
    # an hour after: interpolated, 1005 at the start and 1305 at the end, 300 kWh in the month.
    for ts, kwh in ((start - hour, 1000.0), (start + hour, 1010.0), (end - hour, 1300.0), (end + hour, 1310.0)):
        city.sql("INSERT INTO readings (asset_id, ts, received_at, values) VALUES (%s, %s, %s, jsonb_build_object("
                 "'energy_kwh', %s::float8, 'mains', 'ok'))", (city.id("CAB-1"), ts, ts, kwh))
    # Light A: 400 W every 5 minutes from 18:00 on the 5th to 06:00 on the 6th (145 readings; the last holds
    # 15 minutes): 400 W × (144 × 300 s + 900 s) = 4.9 kWh, over a span 18:00 → 06:15.
    night = dt.datetime.combine(start.date() + dt.timedelta(days=4), dt.time(18), PARIS)
    city.sql("INSERT INTO readings (asset_id, ts, received_at, values) SELECT %s, t, t, "
             "jsonb_build_object('power_w', 400.0, 'dimming_pct', 100.0, 'power_state', 'on') "
             "FROM generate_series(%s::timestamptz, %s::timestamptz, interval '5 minutes') t",
             (city.id("SL-A"), night, night + 12 * hour))
    return {"month": month, "start": start, "end": end, "street": f"{street}, Bretenière",
            "other": f"{other}, Bretenière", "night": night}


def monthly(city, role: str = "operator", **params):
    return city.client.get("/api/v1/kpi/lighting-energy/monthly", params=params, headers=city.headers(role))


async def _with_conn(city, work):
    async with await psycopg.AsyncConnection.connect(city.stack.endpoints.database_url, autocommit=True) as conn:
        return await work(conn)


def roll(city, *days: dt.date) -> list[rollup.Rolled]:
    async def work(conn):
        return [await rollup.roll_up(conn, day) for day in days]
    return asyncio.run(_with_conn(city, work))


def pending(city, today: dt.date) -> list[dt.date]:
    return asyncio.run(_with_conn(city, lambda conn: rollup.pending_days(conn, today, retention_days=90)))


def daily_rows(city, asset: str) -> dict[dt.date, tuple[Any, ...]]:
    return {row[0]: row[1:] for row in city.sql(
        "SELECT day, kwh, covered_s, first_ts, last_ts FROM light_energy_daily WHERE asset_id = %s", (asset,))}


@pytest.fixture
def rolled_by_test(city, lit_street):
    """The background roll-up held off (its lock taken) and last month's roll-up emptied: what is rolled
    up of that month is what the test rolls."""
    with psycopg.connect(city.stack.endpoints.database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (rollup.LOCK_KEY,))
        first, end = lit_street["start"].date(), lit_street["end"].date()
        conn.execute("DELETE FROM light_energy_days WHERE day >= %s AND day < %s", (first, end))
        conn.execute("DELETE FROM light_energy_daily WHERE day >= %s AND day < %s", (first, end))
        night = lit_street["night"].date()
        yield night, night + dt.timedelta(days=1)


def test_by_street_integrates_the_lights_telemetry(city, lit_street, rolled_by_test):
    evening, morning = rolled_by_test
    first, second = roll(city, evening, morning)
    assert (first.day, second.day) == (evening, morning) and first.lights >= 1 and second.lights >= 1
    r = monthly(city, month=lit_street["month"], by="street", commune="21106")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["goal_saving_pct"] == 65 and body["source"] == "light_telemetry" and body["partial_month"] is False
    assert body["through"] == morning.isoformat() and body["days_rolled_up"] == 2
    rows = {g["street"]: g for g in body["groups"]}
    lit = rows[lit_street["street"]]
    # Over 18:00 → 06:15, all dark in that month: the sodium baseline is 1000 W × 12.25 h; the residential
    # programme 100 % to 22:00 (4 h), 50 % to 05:30 (3.75 h), 80 % to 06:15 (0.6 h): 400 W × 8.35 h.
    assert lit["lights"] == 2 and lit["commune"] == "21106" and lit["commune_name"] == "Bretenière"
    assert lit["actual_kwh"] == 4.9 and lit["baseline_kwh"] in (12.2, 12.3)  # 12.25, as rounded
    assert lit["forecast_kwh"] == 3.3
    assert lit["saving_pct"] == 60.0 and lit["meets_goal"] is False
    assert lit["vs_forecast_pct"] == round(100 * (4.9 / 3.34 - 1), 1)
    period_s = (lit_street["end"] - lit_street["start"]).total_seconds()
    assert lit["coverage_pct"] == round(100 * 44_100 / (2 * period_s), 1)
    dark = rows[lit_street["other"]]  # no reading: nulls, and the plan and the baseline over the whole month
    assert dark["actual_kwh"] is None and dark["saving_pct"] is None and dark["meets_goal"] is None
    assert dark["vs_forecast_pct"] is None and dark["coverage_pct"] == 0.0
    start, end = lit_street["start"], lit_street["end"]
    assert dark["forecast_kwh"] == round(energy.forecast_kwh(400.0, start, end, "residential", floor_pct=30), 1)
    assert dark["baseline_kwh"] == round(energy.baseline_kwh(1000.0, start, end), 1)
    # Per day: 18:00 → 24:00 (72 readings, 2.4 kWh) and 00:00 → 06:15 (72 × 300 s + 900 s, 2.5 kWh).
    a = daily_rows(city, city.id("SL-A"))
    midnight = dt.datetime.combine(morning, dt.time(), PARIS)
    assert a[evening][:2] == pytest.approx((2.4, 21_600)) and a[morning][:2] == pytest.approx((2.5, 22_500))
    assert (a[evening][2], a[evening][3]) == (lit_street["night"], midnight)
    assert (a[morning][2], a[morning][3]) == (midnight, midnight + dt.timedelta(hours=6, minutes=15))
    assert daily_rows(city, city.id("SL-B")) == {}  # no reading, no row

    # Rolled again, a day gives the same figures (its rows replaced, not added to).
    roll(city, evening, morning, evening)
    assert daily_rows(city, city.id("SL-A")) == a
    again = monthly(city, month=lit_street["month"], by="street", commune="21106").json()
    assert {g["street"]: g for g in again["groups"]}[lit_street["street"]] == lit
    assert again["days_rolled_up"] == 2 and again["total"] == body["total"]


def test_by_street_counts_only_the_days_rolled_up(city, lit_street, rolled_by_test):
    evening, morning = rolled_by_test
    params = {"month": lit_street["month"], "by": "street", "commune": "21106"}
    body = monthly(city, **params).json()  # nothing rolled up yet: no data, and it says so
    assert body["through"] is None and body["days_rolled_up"] == 0
    lit = {g["street"]: g for g in body["groups"]}[lit_street["street"]]
    assert lit["actual_kwh"] is None and lit["coverage_pct"] == 0.0
    roll(city, evening)  # the evening only: the morning's readings are not integrated live
    body = monthly(city, **params).json()
    assert body["through"] == evening.isoformat() and body["days_rolled_up"] == 1
    lit = {g["street"]: g for g in body["groups"]}[lit_street["street"]]
    night, midnight = lit_street["night"], dt.datetime.combine(morning, dt.time(), PARIS)
    assert lit["actual_kwh"] == 2.4  # 400 W × 6 h
    assert lit["forecast_kwh"] == round(energy.forecast_kwh(400.0, night, midnight, "residential", floor_pct=30), 1)
    assert lit["baseline_kwh"] == round(energy.baseline_kwh(1000.0, night, midnight), 1)
    period_s = (lit_street["end"] - lit_street["start"]).total_seconds()
    assert lit["coverage_pct"] == round(100 * 21_600 / (2 * period_s), 1)
    # The cabinets' meters do not depend on the roll-up.
    cabinets = monthly(city, month=lit_street["month"], by="cabinet", commune="21106").json()
    assert "through" not in cabinets and {g["cabinet"]: g for g in cabinets["groups"]}[city.id("CAB-1")]["actual_kwh"] == 300.0


def test_a_late_reading_counts_once_its_day_is_rolled_again(city, lit_street, rolled_by_test):
    evening, morning = rolled_by_test
    roll(city, evening, morning)
    params = {"month": lit_street["month"], "by": "street", "commune": "21106"}
    assert {g["street"]: g for g in monthly(city, **params).json()["groups"]}[lit_street["street"]]["actual_kwh"] == 4.9
    # Light B's gateway delivers, late, one reading of 1200 W at 23:55: it holds 15 minutes, 5 of them
    # before midnight (0.1 kWh) and 10 after (0.2 kWh).
    late = dt.datetime.combine(evening, dt.time(23, 55), PARIS)
    city.sql("INSERT INTO readings (asset_id, ts, received_at, values) VALUES (%s, %s, now(), "
             "jsonb_build_object('power_w', 1200.0))", (city.id("SL-B"), late))
    assert {g["street"]: g for g in monthly(city, **params).json()["groups"]}[lit_street["street"]]["actual_kwh"] == 4.9
    roll(city, evening, morning)
    b = daily_rows(city, city.id("SL-B"))
    assert b[evening][:2] == pytest.approx((0.1, 300)) and b[morning][:2] == pytest.approx((0.2, 600))
    assert b[morning][2] == dt.datetime.combine(morning, dt.time(), PARIS)  # clipped to its day
    lit = {g["street"]: g for g in monthly(city, **params).json()["groups"]}[lit_street["street"]]
    assert lit["actual_kwh"] == 5.2
    # A light retired since has no data any more: its rows go when its days are rolled again.
    city.sql("UPDATE assets SET status = 'retired' WHERE id = %s", (city.id("SL-B"),))
    removed = roll(city, evening, morning)
    assert [r.removed for r in removed] == [1, 1] and daily_rows(city, city.id("SL-B")) == {}


def test_the_days_pending_a_roll_up(city, lit_street, rolled_by_test):
    evening, morning = rolled_by_test
    today = dt.datetime.now(PARIS).date()
    days = pending(city, today)
    assert evening in days and morning in days and today not in days and days == sorted(days)
    roll(city, evening)
    days = pending(city, today)
    assert evening not in days and morning in days  # rolled today, long after the day: final
    # Rolled just after its midnight, the morning is rolled again once, on its second day after.
    after = dt.datetime.combine(morning + dt.timedelta(days=1), dt.time(0, 10), PARIS)
    roll(city, morning)
    city.sql("UPDATE light_energy_days SET rolled_at = %s WHERE day = %s", (after, morning))
    assert morning not in pending(city, morning + dt.timedelta(days=1))  # yesterday, rolled already
    assert morning in pending(city, morning + dt.timedelta(days=2))      # the day before: once more
    assert morning in pending(city, today)
    roll(city, morning)
    assert morning not in pending(city, morning + dt.timedelta(days=2))
    assert morning not in pending(city, morning)  # never a day not over
    # Never further back than the readings' retention.
    far = asyncio.run(_with_conn(city, lambda conn: rollup.pending_days(conn, today, retention_days=1)))
    assert all(day >= today - dt.timedelta(days=1) for day in far)


def test_by_cabinet_and_commune_use_the_meters(city, lit_street):
    start, end = lit_street["start"], lit_street["end"]
    r = monthly(city, month=lit_street["month"], by="cabinet", commune="21106")
    assert r.status_code == 200, r.text
    rows = {g["cabinet"]: g for g in r.json()["groups"]}
    one, two = rows[city.id("CAB-1")], rows[city.id("CAB-2")]
    baseline = energy.baseline_kwh(2000.0, start, end)  # two 1000 W sodium lamps dusk to dawn, all month
    forecast = energy.forecast_kwh(800.0, start, end, "residential", floor_pct=30)
    assert one["actual_kwh"] == 300.0 and one["lights"] == 2 and one["coverage_pct"] == 100.0
    assert one["baseline_kwh"] == round(baseline, 1) and one["forecast_kwh"] == round(forecast, 1)
    assert one["saving_pct"] == round(100 * (1 - 300 / baseline), 1) and one["meets_goal"] is True
    assert two["actual_kwh"] is None and two["saving_pct"] is None and two["lights"] == 1
    r = monthly(city, month=lit_street["month"], by="commune", commune="21106")
    assert r.status_code == 200, r.text
    body = r.json()
    (group,) = body["groups"]
    assert group["commune"] == "21106" and group["cabinets"] >= 2 and group["actual_kwh"] >= 300.0
    assert body["total"]["actual_kwh"] == group["actual_kwh"] and body["meets_goal"] == group["meets_goal"]
    assert body["source"] == "cabinet_meters" and body["month"] == lit_street["month"]


def test_no_data_is_null_and_bad_parameters_are_problems(city, lit_street):
    body = monthly(city, month=lit_street["month"], by="cabinet", commune="99999").json()
    assert body["groups"] == [] and body["total"]["actual_kwh"] is None and body["meets_goal"] is None
    for month in ("2026-13", "26-11", "November", "2026-1"):
        assert problem(monthly(city, month=month), 400)["field"] == "month"
    assert problem(monthly(city, month="2999-01"), 400)["field"] == "month"
    assert problem(monthly(city, by="district"), 400)["field"] == "by"
    problem(city.client.get("/api/v1/kpi/lighting-energy/monthly"), 401)
    problem(monthly(city, "dpo"), 403)
    assert monthly(city, "read_only", month=lit_street["month"]).status_code == 200


def test_the_programmes_and_a_december_night(city):
    r = city.client.get("/api/v1/lighting/programmes", params={"date": "2026-12-21"}, headers=city.headers("read_only"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert {p["name"] for p in body["programmes"]} == {"residential", "commercial", "bypass", "pedestrian",
                                                       "ecological_corridor"}
    assert body["night"]["sunset"].startswith("2026-12-21T16:5") and body["night"]["hours"] > 15
    residential = body["timelines"]["residential"]
    assert residential[0]["from"] == body["night"]["sunset"] and residential[-1]["to"] == body["night"]["sunrise"]
    assert [s["level_pct"] for s in residential] == [100.0, 50.0, 80.0]
    problem(city.client.get("/api/v1/lighting/programmes"), 401)


def test_a_pass_rolls_the_pending_days_unless_another_process_is_rolling(city, lit_street):
    from psycopg_pool import AsyncConnectionPool

    async def a_pass():
        pool = AsyncConnectionPool(city.stack.endpoints.database_url, min_size=1, max_size=2, open=False)
        await pool.open(wait=True)
        try:
            return await rollup.roll_pending(pool)
        finally:
            await pool.close()

    evening = lit_street["night"].date()
    morning = evening + dt.timedelta(days=1)
    with psycopg.connect(city.stack.endpoints.database_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (rollup.LOCK_KEY,))  # another process rolling
        other.execute("DELETE FROM light_energy_days WHERE day IN (%s, %s)", (evening, morning))
        assert asyncio.run(a_pass()) == []
        other.execute("SELECT pg_advisory_unlock(%s)", (rollup.LOCK_KEY,))
        asyncio.run(a_pass())  # (or the application's own pass, if it came first: the same days rolled)
    today = dt.datetime.now(PARIS).date()
    assert evening not in pending(city, today) and morning not in pending(city, today)
    a = daily_rows(city, city.id("SL-A"))
    assert a[evening][0] == pytest.approx(2.4) and a[morning][0] == pytest.approx(2.5)
