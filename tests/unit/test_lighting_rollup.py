"""Which days the daily lighting-energy roll-up rolls, and its loop surviving the database's absence
(the roll-up itself, on a database: tests/integration/test_lighting_energy.py)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

import psycopg

from citypilot.lighting import rollup
from citypilot.lighting.rollup import days_to_roll

TODAY = dt.date(2026, 11, 20)


def day(n: int) -> dt.date:
    """``n`` days before TODAY."""
    return TODAY - dt.timedelta(days=n)


def test_every_day_not_rolled_from_the_first_light_reading_to_yesterday():
    assert days_to_roll(day(5), TODAY, {}, 90) == [day(5), day(4), day(3), day(2), day(1)]
    assert days_to_roll(TODAY, TODAY, {}, 90) == []   # today is not over
    assert days_to_roll(None, TODAY, {}, 90) == []    # no light has ever reported
    settled = {d: TODAY for d in (day(5), day(4), day(3))}
    assert days_to_roll(day(5), TODAY, settled, 90) == [day(2), day(1)]


def test_never_further_back_than_the_horizon():
    assert days_to_roll(day(500), TODAY, {}, 3) == [day(3), day(2), day(1)]


def test_yesterday_is_rolled_again_once_the_next_day():
    # Rolled just after midnight: yesterday is done for today...
    assert days_to_roll(day(1), TODAY, {day(1): TODAY}, 90) == []
    # ...and the next day, when it is the day before yesterday, rolled once more for late readings.
    tomorrow = TODAY + dt.timedelta(days=1)
    assert days_to_roll(day(1), tomorrow, {day(1): TODAY}, 90) == [day(1), TODAY]
    assert days_to_roll(day(1), tomorrow, {day(1): tomorrow, TODAY: tomorrow}, 90) == []
    # A day rolled on its day after and never since (the service was down) is rolled once more too.
    assert days_to_roll(day(9), TODAY, {day(9): day(8)} | {day(n): TODAY for n in range(1, 9)}, 90) == [day(9)]


def test_the_local_day_has_23_or_25_hours_when_the_clocks_change():
    for date, hours in ((dt.date(2026, 3, 29), 23), (dt.date(2026, 10, 25), 25), (dt.date(2026, 11, 20), 24)):
        start, end = rollup.day_bounds(date)
        assert end.timestamp() - start.timestamp() == hours * 3600 and start.hour == 0 and start.date() == date


class _AbsentDatabase:
    def __init__(self) -> None:
        self.attempts = 0

    @contextlib.asynccontextmanager
    async def connection(self):
        self.attempts += 1
        raise psycopg.OperationalError("connection refused")
        yield  # pragma: no cover


def test_the_loop_logs_a_database_error_and_tries_again(caplog):
    pool = _AbsentDatabase()

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(rollup.run(pool, stop, every_s=0.01))  # type: ignore[arg-type]
        while pool.attempts < 3:
            await asyncio.sleep(0.01)
        assert not task.done()
        stop.set()
        await asyncio.wait_for(task, 1)

    with caplog.at_level(logging.WARNING, logger="citypilot.lighting.rollup"):
        asyncio.run(main())
    assert pool.attempts >= 3
    assert "lighting energy roll-up failed" in caplog.text
