"""Sending the outbox: one dispatcher in the whole deployment, with retries and a record of each outcome.

Leadership: the process holding a PostgreSQL session advisory lock sends; if it dies, its connection
closes, the lock is released and another process takes over at its next attempt (as the connectivity
watch does). Claiming moves a row's ``next_attempt_at`` a lease ahead, in a short transaction with
``FOR UPDATE SKIP LOCKED``: even two senders (a leader that lost its lock without noticing yet) never
claim the same row, no transaction stays open during a slow send, and a row claimed by a process that
died is due again when its lease ends. Delivery is therefore *at least once*: a receiver deduplicates
on the ``Citypilot-Delivery`` key.

Sends run as independent tasks, at most ``PER_CHANNEL_IN_FLIGHT`` per channel and ``MAX_IN_FLIGHT`` in
all, so a webhook that times out holds its own slots, not the e-mails'.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import Counter as Tally
from dataclasses import dataclass
from typing import Any, Callable

import httpx
import psycopg
from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool

from citypilot.runtime.leadership import pause, run_as_leader

from .channels import USER_AGENT, Channel, DeliveryError, build_channels
from .config import NotifyConfig
from .quiet import MAX_ATTEMPTS, UTC, backoff, deferred_until

log = logging.getLogger("citypilot.notify")
LEADER_LOCK = 0x4350_4E54          # "CPNT"
TICK_S = 0.5                       # how often the leader looks for due rows (wake() looks at once)
LEADER_RETRY_S = 5.0               # how often a follower tries to take the lead
LEADER_CHECK_S = 5.0               # how often the leader checks its lock connection is alive
LEASE_S = 120.0                    # a claimed row is due again after this if its outcome was never recorded
MAX_IN_FLIGHT = 100
PER_CHANNEL_IN_FLIGHT = 20
CLAIM_LIMIT = 200
HTTP_TIMEOUT_S = 10.0

NOTIFICATIONS = Counter("citypilot_notifications_total", "Outbound notification attempts by outcome",
                        ["channel", "outcome"])

_CLAIM_SQL = """
WITH wanted(channel, n) AS (SELECT * FROM unnest(%(channels)s::text[], %(limits)s::int[])),
due AS (
    SELECT d.id, d.next_attempt_at FROM wanted w CROSS JOIN LATERAL (
        SELECT id, next_attempt_at FROM notifications
        WHERE status = 'pending' AND channel = w.channel AND next_attempt_at <= now()
        ORDER BY next_attempt_at, id LIMIT w.n
        FOR UPDATE SKIP LOCKED) d
    ORDER BY d.next_attempt_at, d.id LIMIT %(limit)s
)
UPDATE notifications n SET next_attempt_at = now() + make_interval(secs => %(lease)s)
FROM due WHERE n.id = due.id
RETURNING n.id, n.key, n.channel, n.severity, n.event, n.payload, n.attempts
"""

# Rows for a channel the administrator removed: nobody will ever send them, say so.
_ORPHANS_SQL = """
UPDATE notifications SET status = 'failed',
    last_error = 'channel ' || channel || ' is no longer in the notification configuration'
WHERE status = 'pending' AND next_attempt_at <= now() AND NOT (channel = ANY(%(channels)s::text[]))
RETURNING channel
"""
_SENT_SQL = "UPDATE notifications SET status = 'sent', sent_at = now(), attempts = %s, last_error = NULL WHERE id = %s"
_RETRY_SQL = "UPDATE notifications SET attempts = %s, next_attempt_at = %s, last_error = %s WHERE id = %s"
_FAILED_SQL = "UPDATE notifications SET status = 'failed', attempts = %s, last_error = %s WHERE id = %s"
_DEFER_SQL = "UPDATE notifications SET next_attempt_at = %s WHERE id = %s"


@dataclass(frozen=True)
class Claimed:
    id: int
    key: str
    channel: str
    severity: str
    event: str
    payload: dict[str, Any]
    attempts: int


class NotificationDispatcher:
    def __init__(self, pool: AsyncConnectionPool, config: NotifyConfig, database_url: str, *,
                 channels: dict[str, Channel] | None = None, retry_delay: Callable[[int], float] = backoff,
                 tick_s: float = TICK_S, leader_retry_s: float = LEADER_RETRY_S) -> None:
        self.pool = pool
        self.config = config
        self.database_url = database_url
        self.retry_delay = retry_delay
        self.tick_s = tick_s
        self.leader_retry_s = leader_retry_s
        self._client: httpx.AsyncClient | None = None
        if channels is None:
            self._client = httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, follow_redirects=False,
                                             headers={"User-Agent": USER_AGENT})
            channels = build_channels(config, self._client)
        self.channels = channels
        self.leading = False
        self._wake = asyncio.Event()
        self._in_flight: dict[int, asyncio.Task[str]] = {}
        self._per_channel: Tally[str] = Tally()
        self._backlog = False  # the last claim was cut short by a limit: claim again as slots free up

    def wake(self) -> None:
        """Look for due rows now (the alarm engine calls it after committing an enqueue)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Try to lead; while leading, send what is due every tick (and on wake()) until ``stop``."""
        def stepped_down() -> None:
            self.leading = False

        try:
            await run_as_leader(self.database_url, LEADER_LOCK, stop, lambda leader: self._lead(leader, stop),
                                duty="outbound notifications", log=log, retry_s=self.leader_retry_s,
                                stepped_down=stepped_down)
        finally:
            await self._drain()
            await self.aclose()

    async def _lead(self, leader: psycopg.AsyncConnection[Any], stop: asyncio.Event) -> None:
        self.leading = True
        loop = asyncio.get_running_loop()
        checked = loop.time()
        while not stop.is_set():
            try:
                await self._start_due()
            except (psycopg.Error, OSError) as exc:  # the database is away: try again next tick
                log.warning("notification claim failed", extra={"error": str(exc)[:300]})
            except Exception:  # a bug must not stop the notifications for good: log it, try again
                log.exception("notification claim failed")
            if loop.time() - checked >= LEADER_CHECK_S:
                await leader.execute("SELECT 1")  # a dead lock connection means the lock is gone: step down
                checked = loop.time()
            await pause(stop, self.tick_s, self._wake)

    async def send_due(self) -> int:
        """Claim what is due, send it, record the outcomes; return how many were attempted."""
        tasks = await self._start_due()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        return len(tasks)

    async def aclose(self) -> None:
        """Close the HTTP client this dispatcher created (injected channels are the caller's)."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- claiming and sending -------------------------------------------------------------------

    async def _start_due(self) -> list[asyncio.Task[str]]:
        free = MAX_IN_FLIGHT - len(self._in_flight)
        names = list(self.channels)
        limits = [max(0, PER_CHANNEL_IN_FLIGHT - self._per_channel[n]) for n in names]
        async with self.pool.connection() as conn:
            orphans = await (await conn.execute(_ORPHANS_SQL, {"channels": names})).fetchall()
            rows = []
            if free > 0 and any(limits):
                rows = await (await conn.execute(_CLAIM_SQL, {
                    "channels": names, "limits": limits, "limit": min(free, CLAIM_LIMIT), "lease": LEASE_S,
                })).fetchall()
        claimed_per_channel = Tally(row[2] for row in rows)
        self._backlog = (len(rows) >= min(free, CLAIM_LIMIT)
                         or any(claimed_per_channel[n] >= limit for n, limit in zip(names, limits)))
        for channel, count in Tally(channel for (channel,) in orphans).items():
            NOTIFICATIONS.labels(channel, "failed").inc(count)
            log.error("notifications failed: channel no longer configured", extra={"channel": channel,
                                                                                   "count": count})
        tasks = []
        for row in rows:
            claimed = Claimed(*row)
            task = asyncio.create_task(self._deliver(claimed), name=f"notify-{claimed.key}")
            self._in_flight[claimed.id] = task
            self._per_channel[claimed.channel] += 1
            task.add_done_callback(lambda _t, c=claimed: self._done(c))
            tasks.append(task)
        return tasks

    def _done(self, claimed: Claimed) -> None:
        self._in_flight.pop(claimed.id, None)
        self._per_channel[claimed.channel] -= 1
        if self._backlog:
            self._wake.set()  # a slot is free and more may be waiting for it

    async def _deliver(self, claimed: Claimed) -> str:
        """Send one claimed row and record the outcome; never raises (a DB error leaves the lease)."""
        channel = self.channels[claimed.channel]
        spec = self.config.channel(claimed.channel)
        now = dt.datetime.now(UTC)
        if spec is not None:
            later = deferred_until(spec, claimed.severity, now)
            if later is not None:  # quiet hours began while it waited (a retry, a dispatcher down)
                return await self._record(claimed, "deferred", _DEFER_SQL, (later, claimed.id))
        attempts = claimed.attempts + 1
        try:
            await channel.send(claimed.key, claimed.event, claimed.payload)
        except DeliveryError as exc:
            if exc.permanent or attempts >= MAX_ATTEMPTS:
                reason = exc.reason if exc.permanent else f"gave up after {attempts} attempts: {exc.reason}"
                log.error("notification failed", extra={"key": claimed.key, "channel": claimed.channel,
                                                        "attempts": attempts, "error": reason})
                return await self._record(claimed, "failed", _FAILED_SQL, (attempts, reason, claimed.id))
            retry_at = now + dt.timedelta(seconds=self.retry_delay(attempts))
            if spec is not None:
                retry_at = deferred_until(spec, claimed.severity, retry_at) or retry_at
            log.warning("notification will be retried", extra={"key": claimed.key, "channel": claimed.channel,
                                                               "attempts": attempts, "retry_at": retry_at.isoformat(),
                                                               "error": exc.reason})
            return await self._record(claimed, "retry", _RETRY_SQL, (attempts, retry_at, exc.reason, claimed.id))
        except Exception as exc:  # a bug in a channel must not kill the dispatcher: retry like a failure
            log.exception("notification channel error", extra={"key": claimed.key, "channel": claimed.channel})
            reason = f"internal error: {type(exc).__name__}: {exc}"[:300]
            if attempts >= MAX_ATTEMPTS:
                return await self._record(claimed, "failed", _FAILED_SQL, (attempts, reason, claimed.id))
            retry_at = now + dt.timedelta(seconds=self.retry_delay(attempts))
            return await self._record(claimed, "retry", _RETRY_SQL, (attempts, retry_at, reason, claimed.id))
        return await self._record(claimed, "sent", _SENT_SQL, (attempts, claimed.id))

    async def _record(self, claimed: Claimed, outcome: str, sql: str, params: tuple[Any, ...]) -> str:
        if outcome != "deferred":
            NOTIFICATIONS.labels(claimed.channel, outcome).inc()
        try:
            async with self.pool.connection() as conn:
                await conn.execute(sql, params)
        except (psycopg.Error, OSError) as exc:
            # The row stays claimed until its lease ends, then is sent again: at least once, never lost.
            log.warning("notification outcome not recorded", extra={"key": claimed.key, "outcome": outcome,
                                                                    "error": str(exc)[:300]})
        return outcome

    async def _drain(self, timeout: float = HTTP_TIMEOUT_S + 5) -> None:
        """Let the sends in flight finish and record their outcome before the process goes."""
        if self._in_flight:
            _, pending = await asyncio.wait(list(self._in_flight.values()), timeout=timeout)
            for task in pending:
                task.cancel()
