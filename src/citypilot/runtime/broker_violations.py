"""Publishes the embedded broker refused, turned into dead letters and a metric.

A device logged in over MQTT may publish only on its own topics (``embedded_nats.render_users``). When
it tries another device's topic, nats-server drops the message, still answers PUBACK at QoS 1, and
writes one line to its log; it publishes no event for it, and it does not keep the payload. The process
that started the server reads the new lines of that log every second and records each refusal as a dead
letter with reason ``wrong_topic`` (what was attempted, by which MQTT client, from where; the payload
empty, since the broker never hands it over) and counts it in ``citypilot_mqtt_publish_refused_total``.
Only lines written while this process runs are read: refusals logged while it was stopped are not
recorded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool

from citypilot.ingest import protocol
from citypilot.ingest.store import DeadLetter, apply_batch

from .background import cancel

log = logging.getLogger("citypilot.broker")
REFUSED = Counter("citypilot_mqtt_publish_refused_total",
                  "MQTT publishes the embedded broker refused: a client publishing on a topic it may not use")
CHECK_EVERY_S = 1.0
MAX_READ_BYTES = 4 * 1024 * 1024  # per look: a flood of refusals is read over several seconds, not at once

# [1234] 2026/11/22 03:35:38.834510 [ERR] 127.0.0.1:42088 - mid:138 - "client-id" - Publish Violation - Subject "…"
_LINE = re.compile(r'^\[\d+\] (?P<when>\S+ \S+) \[\w+\] (?P<address>\S+) - (?P<kind>mid|cid):(?P<conn>\d+) - "(?P<client>[^"]*)"'
                   r' - Publish Violation - Subject "(?P<subject>[^"]+)"')


@dataclass(frozen=True)
class Refusal:
    when: dt.datetime  # as logged (the server's local time, to the microsecond): also what tells two apart
    address: str
    connection: str
    client: str
    subject: str


def parse(lines: list[str]) -> list[Refusal]:
    """The refused MQTT publishes among broker log lines (NATS-protocol clients are citypilot's own)."""
    found = []
    for line in lines:
        match = _LINE.match(line)
        if match and match["kind"] == "mid":
            try:
                when = dt.datetime.strptime(match["when"], "%Y/%m/%d %H:%M:%S.%f").astimezone(dt.timezone.utc)
            except ValueError:
                continue
            found.append(Refusal(when, match["address"], match["conn"], match["client"], match["subject"]))
    return found


def dead_letter(refusal: Refusal) -> DeadLetter:
    parsed = protocol.parse_subject(refusal.subject)
    return DeadLetter(
        "mqtt", refusal.subject, parsed[0] if parsed else None, parsed[0] if parsed else None, "wrong_topic",
        f"the broker refused this publish: MQTT client {refusal.client!r} (connection {refusal.connection}, from "
        f"{refusal.address}) is not logged in as the device of this topic. The broker does not keep the payload.",
        b"", None, refusal.when)


class BrokerViolationWatch:
    def __init__(self, log_file: Path, pool: AsyncConnectionPool) -> None:
        self.log_file = log_file
        self.pool = pool
        self._offset = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._offset = self.log_file.stat().st_size if self.log_file.exists() else 0  # new lines only
        self._task = asyncio.create_task(self._run(), name="broker-violations")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    def _read(self) -> tuple[list[str], int]:
        """The complete lines written since the last look, and the offset after them (not yet kept)."""
        try:
            size = self.log_file.stat().st_size
        except FileNotFoundError:
            return [], self._offset
        if size < self._offset:  # truncated (logrotate's copytruncate): start again from the top
            self._offset = 0
        if size == self._offset:
            return [], self._offset
        with self.log_file.open("rb") as handle:
            handle.seek(self._offset)
            data = handle.read(MAX_READ_BYTES)
        complete = data[:data.rfind(b"\n") + 1]  # a line being written is read whole next time
        return complete.decode("utf-8", errors="replace").splitlines(), self._offset + len(complete)

    async def check(self) -> int:
        """Record the refusals logged since the last look; return how many. If the database fails, the
        same lines are read again next time (a dead letter is recorded once: same time, asset, reason)."""
        lines, offset = self._read()
        refusals = parse(lines)
        if refusals:
            async with self.pool.connection() as conn:
                async with conn.transaction():
                    await apply_batch(conn, [], [], [dead_letter(r) for r in refusals])
            REFUSED.inc(len(refusals))
            log.warning("MQTT publishes refused by the broker", extra={
                "refused": len(refusals), "subjects": sorted({r.subject for r in refusals})[:10]})
        self._offset = offset
        return len(refusals)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(CHECK_EVERY_S)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database away: the same lines are read again at the next look
                log.error("broker refusals not recorded", extra={"error": f"{type(exc).__name__}: {exc}"})
