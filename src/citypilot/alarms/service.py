"""Running the alarm engine: one leader in the whole deployment, fed by the changes stream.

The leader (a PostgreSQL advisory lock, like offline detection) loads the registry, the twin values
the rules read and the active alarms, reconciles (evaluates every state rule once: what changed while
no engine ran), then consumes the changes stream in small batches: each batch's journal entries,
alarm transitions and notifications are committed in one transaction, then acknowledged. Every
second it lets time pass (``for`` conditions, storms calming down); every few seconds it re-reads the
active alarms (an operator may have cleared one) and escalates alarms left unacknowledged too long.

If the leader dies, its lock goes with its connection; another process takes over and resumes from
the durable consumer. A failed commit is retried after reloading the engine from the database, so
the in-memory state never drifts from what was written.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any, Callable

import msgspec
import psycopg
from nats.aio.msg import Msg
from prometheus_client import Counter, Histogram
from psycopg_pool import AsyncConnectionPool

from citypilot.equipment.catalog import Catalog
from citypilot.journal import store as journal
from citypilot.journal.entries import DEVICE, SYSTEM, NewEntry
from citypilot.notify.config import NotifyConfig
from citypilot.runtime.leadership import run_as_leader

from . import store
from .apply import apply_decisions, record
from .changes import DELIVER_SUBJECT
from .engine import Decision, Engine, facts_from_row
from .lifecycle import SEVERITIES, escalate
from .rules_source import RuleSource

log = logging.getLogger("citypilot.alarms")
LEADER_LOCK = 0x4350414C  # "CPAL"
BATCH_LINGER_S = 0.02
BATCH_MAX = 500
TICK_S = 1.0
SYNC_EVERY_S = 5.0
ASSETS_EVERY_S = 10.0
DEFAULT_ESCALATION = {"critical": 300.0, "major": 900.0, "minor": 7200.0}

TRANSITIONS = Counter("citypilot_alarm_transitions_total", "Alarm transitions written by the engine", ["type"])
ENGINE_BATCH = Histogram("citypilot_alarm_engine_batch_seconds", "Time to evaluate and commit one batch of changes",
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
_json = msgspec.json.Decoder()


def _ts(value: Any, default: dt.datetime) -> dt.datetime:
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
        except ValueError:
            return default
    return default


def _severity(value: Any) -> str | None:
    return value if value in SEVERITIES else None


class AlarmService:
    def __init__(self, pool: AsyncConnectionPool, nc: Any, catalog: Catalog, source: RuleSource,
                 notify_config: NotifyConfig | None, database_url: str) -> None:
        self.pool = pool
        self.nc = nc
        self.catalog = catalog
        self.source = source
        self.rules = source.rules
        self.notify_config = notify_config
        self.database_url = database_url
        escalation = dict(notify_config.escalation) if notify_config is not None and notify_config.escalation else {}
        self.escalation = escalation or dict(DEFAULT_ESCALATION)
        self.engine = Engine(self.rules, catalog)
        self.leading = False
        self._buffer: list[Msg] = []
        self._wake = asyncio.Event()
        self._assets_loaded_until: dt.datetime | None = None
        self._unknown: dict[str, float] = {}  # asset id -> monotonic time until which it is known unknown
        self.after_commit: Callable[[], None] = lambda: None  # wakes the notification dispatcher

    # -- leadership ------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        def stepped_down() -> None:
            self.leading = False

        await run_as_leader(self.database_url, LEADER_LOCK, stop, lambda leader: self._lead(stop, leader),
                            duty="the alarm engine", log=log, stepped_down=stepped_down)

    async def _lead(self, stop: asyncio.Event, leader: psycopg.AsyncConnection) -> None:
        await self.load()
        await self._commit(self.engine.reconcile(_now()), [])
        subscription = await self.nc.subscribe(DELIVER_SUBJECT, cb=self._on_msg, pending_msgs_limit=20_000)
        self.leading = True
        last_tick = last_sync = last_assets = time.monotonic()
        try:
            while not stop.is_set():
                if len(self._buffer) < BATCH_MAX:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout=BATCH_LINGER_S if self._buffer else TICK_S / 4)
                    except asyncio.TimeoutError:
                        pass
                if self._buffer:
                    msgs, self._buffer = self._buffer[:BATCH_MAX], self._buffer[BATCH_MAX:]
                    await self.handle(msgs)
                now = time.monotonic()
                if now - last_tick >= TICK_S:
                    last_tick = now
                    await leader.execute("SELECT 1")  # still leading? (a lost connection ends the lead)
                    await self._commit(self.engine.tick(_now()), [])
                if now - last_sync >= SYNC_EVERY_S:
                    last_sync = now
                    if self.source.poll():  # an administrator's edit: the new rules, over the same state
                        self.rules = self.source.rules
                        await self.load()
                        await self._commit(self.engine.reconcile(_now()), [])
                    await self.sync_active()
                    await self.escalate_due()
                if now - last_assets >= ASSETS_EVERY_S:
                    last_assets = now
                    await self.refresh_assets()
        finally:
            try:
                await subscription.unsubscribe()
            except Exception:
                pass
            self._buffer.clear()  # unacknowledged: redelivered to the next leader

    async def _on_msg(self, msg: Msg) -> None:
        self._buffer.append(msg)
        if len(self._buffer) == 1 or len(self._buffer) >= BATCH_MAX:
            self._wake.set()

    # -- state -----------------------------------------------------------------------------------------
    async def load(self) -> None:
        """Rebuild the engine from the database: registry, the twin values the rules read, active alarms."""
        self.engine = Engine(self.rules, self.catalog)
        self._assets_loaded_until = None
        await self.refresh_assets()
        kinds = [k for k in self.catalog.kinds if self.engine.needs_values(k)]
        async with self.pool.connection() as conn:
            async with conn.cursor() as cur:
                await cur.execute("SELECT asset_id, values FROM twin WHERE kind = ANY(%s)", (kinds,))
                async for asset_id, values in cur:
                    self.engine.set_values(asset_id, values or {})
        await self.sync_active()

    async def refresh_assets(self) -> None:
        async with self.pool.connection() as conn:
            now_row = await (await conn.execute("SELECT now()")).fetchone()
            query = "SELECT id, kind, commune, lat, lon, service, reported_by, attributes, name FROM assets WHERE status <> 'retired'"
            params: tuple[Any, ...] = ()
            if self._assets_loaded_until is not None:
                query += " AND updated_at >= %s"
                params = (self._assets_loaded_until - dt.timedelta(seconds=5),)
            async with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
                await cur.execute(query, params)
                async for row in cur:
                    self.engine.add_asset(facts_from_row(row))
        self._assets_loaded_until = now_row[0]

    async def sync_active(self) -> None:
        """The active alarms as the database has them (an operator may have cleared one)."""
        async with self.pool.connection() as conn:
            active = await store.load_active(conn)
        keys_by_id = {a.id: a.key for a in active}
        self.engine.active.clear()
        for a in active:
            parent = keys_by_id.get(a.parent_id) if a.parent_id is not None else None
            self.engine.add_active(a.source, a.type, a.rule_id, a.severity, a.commune, a.restricted, parent)

    # -- a batch of changes ----------------------------------------------------------------------------
    async def handle(self, msgs: list[Msg]) -> None:
        started = time.perf_counter()
        while True:
            now = _now()
            decisions: list[Decision] = []
            entries: list[NewEntry] = []
            bodies = []
            for msg in msgs:
                try:
                    bodies.append((msg.subject, _json.decode(msg.data)))
                except msgspec.DecodeError as exc:
                    log.warning("unreadable change ignored", extra={"subject": msg.subject, "error": str(exc)[:200]})
            try:
                await self._resolve(bodies)
                for subject, body in bodies:
                    try:
                        decisions += self._read(subject, body, now, entries)
                    except (ValueError, TypeError, KeyError, AttributeError) as exc:
                        log.warning("unreadable change ignored", extra={"subject": subject, "error": str(exc)[:200]})
                decisions = self.engine.finish(decisions, now)
                await self._commit(decisions, entries)
                break
            except psycopg.Error as exc:
                log.warning("alarm batch not committed; reloading and retrying", extra={"error": str(exc)[:300]})
                await asyncio.sleep(1.0)
                await self.load()
        for msg in msgs:
            if msg.reply:
                await self.nc.publish(msg.reply, b"")
        ENGINE_BATCH.observe(time.perf_counter() - started)

    async def _resolve(self, bodies: list[tuple[str, Any]]) -> None:
        """Assets the engine has not heard of yet (registered since its last refresh): look them up, with
        their twin values, before deciding anything about them. Ids found unknown are not asked again
        for a while (a stream of changes about a retired asset costs no query each time)."""
        wanted: set[str] = set()
        for subject, body in bodies:
            if subject.startswith("citypilot.twin.") and isinstance(body, list):
                wanted.update(d.get("asset") for d in body if isinstance(d, dict) and isinstance(d.get("asset"), str))
            elif isinstance(body, dict) and isinstance(body.get("asset"), str):
                wanted.add(body["asset"])
        now = time.monotonic()
        missing = [i for i in wanted if i not in self.engine.assets and self._unknown.get(i, 0) < now]
        if not missing:
            return
        async with self.pool.connection() as conn:
            async with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
                # The assets, the gateways they report through and everything else those report for: a
                # cabinet's alarm correlates its lights, counted among all of them.
                await cur.execute("WITH gateways AS (SELECT reported_by AS id FROM assets WHERE id = ANY(%(ids)s) "
                                  "AND reported_by IS NOT NULL) "
                                  "SELECT id, kind, commune, lat, lon, service, reported_by, attributes, name FROM assets "
                                  "WHERE status <> 'retired' AND (id = ANY(%(ids)s) OR id IN (SELECT id FROM gateways) "
                                  "OR reported_by IN (SELECT id FROM gateways))", {"ids": missing})
                found = [facts_from_row(row) for row in await cur.fetchall() if row["id"] not in self.engine.assets]
            for facts in found:
                self.engine.add_asset(facts)
            needing = [f.id for f in found if self.engine.needs_values(f.kind)]
            if needing:
                for asset_id, values in await (await conn.execute(
                        "SELECT asset_id, values FROM twin WHERE asset_id = ANY(%s)", (needing,))).fetchall():
                    self.engine.set_values(asset_id, values or {})
        known = {f.id for f in found}
        for asset_id in missing:
            if asset_id not in known:
                self._unknown[asset_id] = now + 30.0
        if len(self._unknown) > 100_000:
            self._unknown = {k: v for k, v in self._unknown.items() if v > now}

    def _read(self, subject: str, body: Any, now: dt.datetime, entries: list[NewEntry]) -> list[Decision]:
        parts = subject.split(".")
        if parts[1] == "twin":
            out: list[Decision] = []
            for delta in body:
                changed = delta.get("changed") or {}
                if changed:
                    out += self.engine.on_twin(delta["asset"], _ts(delta.get("ts"), now), changed, now)
            return out
        asset_id = body["asset"]
        facts = self.engine.assets.get(asset_id)
        kind = (facts.kind if facts else None) or body.get("kind")
        spec = self.catalog.kinds.get(kind or "")
        common = dict(asset_id=asset_id, kind=kind, domain=spec.domain if spec else "operations",
                      restricted=bool(spec and spec.restricted), service=facts.service if facts else None)
        if parts[1] == "connectivity":
            state = body["connectivity"]
            why = {"offline": f"silent since {body.get('last_seen', '?')}",
                   "unreachable": f"its gateway {body.get('via', '?')} is offline", "online": "heard from again"}.get(state, "")
            entries.append(NewEntry(at=now, type=f"connectivity.{state}", summary=f"{asset_id} {state}: {why}",
                                    actor=SYSTEM, data={k: v for k, v in body.items() if k not in ("asset", "kind")}, **common))
            return self.engine.on_connectivity(asset_id, state, now)
        if parts[1] == "device-event":
            at = _ts(body.get("ts"), now)
            code = body["code"]
            text = body.get("message") or code
            entries.append(NewEntry(at=at, type="device.event", summary=f"{asset_id}: {text}", actor=DEVICE,
                                    severity=_severity(body.get("severity")),
                                    data={"code": code, "severity": body.get("severity"), "message": body.get("message"),
                                          "data": body.get("data") or {}}, **common))
            return self.engine.on_event(asset_id, code, at, body.get("data") or {})
        return []

    async def _commit(self, decisions: list[Decision], entries: list[NewEntry]) -> None:
        if not decisions and not entries:
            return
        async with self.pool.connection() as conn:
            async with conn.transaction():
                await journal.append(conn, entries)
                transitions = await apply_decisions(conn, decisions, self.notify_config, _now())
        for _, journal_type in transitions:
            TRANSITIONS.labels(journal_type).inc()
        if transitions:
            self.after_commit()

    async def escalate_due(self) -> int:
        """Alarms raised and still unacknowledged past their severity's delay (not shelved, not folded)."""
        severities = list(self.escalation)
        delays = [self.escalation[s] for s in severities]
        now = _now()
        async with self.pool.connection() as conn:
            async with conn.transaction():
                rows = await (await conn.execute(
                    f"SELECT {store.COLUMNS} FROM alarms a JOIN unnest(%s::text[], %s::float8[]) AS d(severity, secs) "
                    "USING (severity) WHERE a.state = 'raised' AND a.escalated_at IS NULL AND a.parent_id IS NULL "
                    "AND (a.shelved_until IS NULL OR a.shelved_until <= now()) "
                    "AND a.raised_at < now() - make_interval(secs => d.secs) ORDER BY a.id FOR UPDATE OF a SKIP LOCKED LIMIT 500",
                    (severities, delays))).fetchall()
                if not rows:
                    return 0
                escalated = [escalate(store.alarm_from_row(r), now)[0] for r in rows]
                escalated = await store.save(conn, escalated)
                await record(conn, [(a, "alarm.escalated", SYSTEM, now,
                                     {"unacknowledged_for_s": round((now - a.raised_at).total_seconds())}) for a in escalated],
                             self.notify_config, now)
        TRANSITIONS.labels("alarm.escalated").inc(len(escalated))
        self.after_commit()
        return len(escalated)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
