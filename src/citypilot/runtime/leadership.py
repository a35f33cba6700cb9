"""One leader in the whole deployment for a background duty (offline detection, the alarm engine, the
notification dispatcher), chosen by PostgreSQL: the process holding a session advisory lock leads.

If the leader dies, or its connection to PostgreSQL is cut, the lock goes with the connection and
another process takes over at its next attempt. The leader's ``lead`` function should touch its
connection now and then (``SELECT 1``): a failure there ends its lead, since the lock is gone.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

import psycopg


async def pause(stop: asyncio.Event, seconds: float, wake: asyncio.Event | None = None) -> None:
    """Sleep up to ``seconds``; return early when ``stop`` (or ``wake``) is set."""
    waits = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waits.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waits:
            waiter.cancel()
    if wake is not None:
        wake.clear()


async def run_as_leader(database_url: str, lock_id: int, stop: asyncio.Event,
                        lead: Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]], *, duty: str,
                        log: logging.Logger, retry_s: float = 2.0, stepped_down: Callable[[], None] = lambda: None) -> None:
    """Try to take ``lock_id`` every ``retry_s`` seconds until ``stop``; while it is held, run ``lead``
    (which returns when ``stop`` is set, or raises when the database goes). Errors never end the loop:
    a duty that stops for good is worse than one that retries."""
    while not stop.is_set():
        try:
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as leader:
                got = (await (await leader.execute("SELECT pg_try_advisory_lock(%s)", (lock_id,))).fetchone())[0]
                if got:
                    log.info(f"leading {duty}")
                    await lead(leader)
        except (psycopg.Error, OSError) as exc:
            log.warning(f"{duty} interrupted", extra={"error": str(exc)[:300]})
        except Exception as exc:
            log.exception(f"{duty} failed; trying again", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
        finally:
            stepped_down()
        await pause(stop, retry_s)
