"""The live feed's hub, one per API process: tails the journal and the twin deltas, fans them out.

The journal: a dedicated connection LISTENs on ``citypilot_journal`` (a statement trigger notifies on
every insert) and wakes a reader that fetches ``journal WHERE id > cursor`` in id order, at least every
second even without a notification. Ids are committed in increasing order (migration 0004), so a cursor
never skips an entry and a lost connection costs nothing: on reconnecting, the reader carries on from
its cursor.

Twin deltas arrive on core NATS (``citypilot.twin.{kind}``, published by the ingest workers after each
committed batch) and are coalesced per asset in the hub for one second: one flush a second sends each
client at most one delta per asset, the merge of everything that changed in that second. Coalescing
once in the hub rather than once per client gives the same frames at a fraction of the work.

A resuming client (``last_event_id``) is held: live entries are kept aside while its catch-up reads the
missed ones from the database up to the hub's cursor at the moment it attached; then the held ones after
that cursor follow. The junction has neither gap nor duplicate because both sides are cut at one id.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any

import msgspec
import psycopg
from prometheus_client import Gauge
from psycopg_pool import AsyncConnectionPool

from citypilot.auth.accounts import resolve_session
from citypilot.auth.tokens import TokenClaims
from citypilot.journal.store import ENTRY_COLUMNS, head, row_to_entry

from .assets import AssetIndex
from .client import EventFrame, LiveClient, encode
from .filters import AssetFacts, Vocabulary

log = logging.getLogger("citypilot.live")

CLIENTS = Gauge("citypilot_live_clients", "Open live-feed connections in this process")

CHANNEL = "citypilot_journal"
TWIN_SUBJECT = "citypilot.twin.>"
PAGE = 5000                  # journal rows per read of the tailer
FAN_OUT_CHUNK = 100         # entries fanned out between two yields to the senders
REPLAY_PAGE = 1000           # rows per read of a client's catch-up
MAX_REPLAY = 50_000          # more missed entries than this: reset to the head instead
MAX_SNAPSHOT_ASSETS = 20_000  # more changed assets than this while away: twin_reset (re-read /api/v1/twin)
SNAPSHOT_MARGIN = dt.timedelta(seconds=5)  # deltas flushed around the last entry seen may have been missed
DELTAS_PER_FRAME = 2000
NEVER = dt.datetime.min.replace(tzinfo=dt.timezone.utc)  # ingest's "heard from, no values yet"


class _Delta(msgspec.Struct):
    asset: str
    changed: dict[str, Any] = {}
    ts: str | None = None


_deltas = msgspec.json.Decoder(list[_Delta])


def _parse_ts(value: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


class _Pending:
    """What changed for one asset since the last flush: the merge of its deltas, the latest time."""

    __slots__ = ("kind", "ts", "when", "changed")

    def __init__(self, kind: str, ts: str | None, changed: dict[str, Any]) -> None:
        self.kind, self.ts, self.when, self.changed = kind, ts, _parse_ts(ts), dict(changed)

    def merge(self, ts: str | None, changed: dict[str, Any]) -> None:
        self.changed.update(changed)
        when = _parse_ts(ts)
        if when is not None and (self.when is None or when >= self.when):
            self.ts, self.when = ts, when


class LiveHub:
    def __init__(self, database_url: str, pool: AsyncConnectionPool, nats: Any, vocabulary: Vocabulary, *,
                 poll_interval: float = 1.0, twin_interval: float = 1.0, index_interval: float = 10.0,
                 retry_interval: float = 1.5, session_interval: float = 60.0) -> None:
        self.database_url = database_url
        self.pool = pool
        self.nats = nats
        self.vocabulary = vocabulary
        self.index = AssetIndex(vocabulary)
        self.poll_interval, self.twin_interval = poll_interval, twin_interval
        self.index_interval, self.retry_interval = index_interval, retry_interval
        self.session_interval = session_interval
        self.cursor = 0  # the last journal id fanned out
        self.clients: set[LiveClient] = set()
        # Per-client limits, read when a client is made (tests make them small).
        self.client_options: dict[str, Any] = {}
        self._pending: dict[str, _Pending] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._subscription: Any = None

    @classmethod
    def from_context(cls, context: Any) -> LiveHub:
        """The hub of an API process (``api.context.AppContext``): its database, bus, catalogue, communes."""
        vocabulary = Vocabulary.from_catalog(context.catalog, context.communes.by_insee)
        return cls(context.endpoints.database_url, context.pool, context.nats, vocabulary)

    # --- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        async with self.pool.connection() as conn:
            self.cursor = await head(conn)
        self._tasks = [asyncio.create_task(self._tail_journal(), name="live-journal"),
                       asyncio.create_task(self._refresh_index(), name="live-assets"),
                       asyncio.create_task(self._recheck_sessions(), name="live-sessions")]
        if self.nats is not None:
            self._subscription = await self.nats.subscribe(TWIN_SUBJECT, cb=self._on_twin)
            self._tasks.append(asyncio.create_task(self._flush_twin(), name="live-twin"))
        log.info("live feed ready", extra={"journal_head": self.cursor, "twin": self.nats is not None})

    async def stop(self) -> None:
        if self._subscription is not None:
            try:
                await self._subscription.unsubscribe()
            except Exception:  # NATS already closed or reconnecting
                pass
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        clients = list(self.clients)
        for client in clients:
            client.close(1001, "server shutting down", "shutdown")
        await asyncio.gather(*(c.wait_closed() for c in clients), return_exceptions=True)

    # --- clients -------------------------------------------------------------------------------------
    def new_client(self, *args: Any, **kwargs: Any) -> LiveClient:
        return LiveClient(*args, **{**self.client_options, **kwargs})

    def attach(self, client: LiveClient, last_event_id: int | None) -> None:
        """Start serving a client: hello first, then events after the hub's cursor, or, resuming, the
        missed ones first (see ``_catch_up``). Synchronous up to the hello, so that no frame overtakes it."""
        client.cursor = self.cursor
        client.on_close = self._detach
        self.clients.add(client)
        CLIENTS.inc()
        client.start()
        at = self.cursor
        replay = last_event_id is not None and at - last_event_id <= MAX_REPLAY
        client.offer("hello", encode({"type": "hello", "head": at, "resumed_from": last_event_id if replay else None,
                                      "filter": client.filter.describe()}))
        if last_event_id is None:
            return
        if not replay:  # too far behind: start afresh from the head
            client.offer("reset", encode({"type": "reset", "head": at}))
            return
        client.held = []
        client.cursor = min(last_event_id, at)
        client.spawn(self._catch_up(client, last_event_id, at))

    def _detach(self, client: LiveClient) -> None:
        if client in self.clients:
            self.clients.discard(client)
            CLIENTS.dec()

    async def _catch_up(self, client: LiveClient, after: int, upto: int) -> None:
        """Replay (after, upto] from the database, then hand over to the live tail (entries held since
        ``attach``). ``after`` may be beyond ``upto``: the client saw it through another API process whose
        tail is ahead of ours (nothing to replay; held entries up to it are dropped), or the journal never
        had it (a restored database: ``reset``)."""
        try:
            if after > upto:
                async with self.pool.connection() as conn:
                    known = after <= await head(conn)
                if not known:
                    at = self.cursor
                    if await client.put("reset", encode({"type": "reset", "head": at})):
                        client.release(at)
                    return
            if client.filter.twin:
                await self._twin_snapshot(client, after)
            cursor = after
            while cursor < upto and not client.closed:
                async with self.pool.connection() as conn:
                    rows = await (await conn.execute(
                        f"SELECT {ENTRY_COLUMNS} FROM journal WHERE id > %s AND id <= %s ORDER BY id LIMIT %s",
                        (cursor, upto, REPLAY_PAGE))).fetchall()
                if not rows:
                    break
                for row in rows:  # outside the connection: waiting for a slow client holds no connection
                    frame = EventFrame(row_to_entry(row))
                    cursor = client.cursor = frame.entry_id
                    if client.filter.matches_entry(frame.entry) and not await client.put("event", frame.text):
                        return
            if not client.closed:
                client.release(max(upto, after))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("live catch-up failed", extra={"user": client.principal.username,
                                                       "error": f"{type(exc).__name__}: {exc}"})
            client.close(1011, "catch-up failed: reconnect", "error")

    async def _twin_snapshot(self, client: LiveClient, after: int) -> None:
        """Deltas are not replayed: a resuming client gets the current values of the assets that reported
        since the entry it had seen (or ``twin_reset`` when too many did)."""
        kinds = client.filter.visible_kinds(self.vocabulary)
        async with self.pool.connection() as conn:
            row = await (await conn.execute("SELECT recorded_at FROM journal WHERE id = %s", (after,))).fetchone()
            since = row[0] - SNAPSHOT_MARGIN if row else None
            rows = await (await conn.execute(
                "SELECT asset_id, kind, ts, values FROM twin WHERE (%(since)s::timestamptz IS NULL OR received_at > "
                "%(since)s) AND ts > %(never)s AND (%(kinds)s::text[] IS NULL OR kind = ANY(%(kinds)s)) "
                "ORDER BY asset_id LIMIT %(limit)s",
                {"since": since, "never": NEVER, "kinds": sorted(kinds) if kinds is not None else None,
                 "limit": MAX_SNAPSHOT_ASSETS + 1})).fetchall()
            if len(rows) > MAX_SNAPSHOT_ASSETS:
                await client.put("twin_reset", encode({"type": "twin_reset"}))
                return
            await self.index.resolve(conn, [r[0] for r in rows if self.index.get(r[0]) is None])
        deltas = [{"asset": asset, "kind": kind, "ts": ts, "changed": values} for asset, kind, ts, values in rows
                  if client.filter.matches_asset(self.index.get(asset) or self.index.guess(kind))]
        for i in range(0, len(deltas), DELTAS_PER_FRAME):
            await client.put("twin", encode({"type": "twin", "snapshot": True, "deltas": deltas[i:i + DELTAS_PER_FRAME]}))

    # --- the journal ---------------------------------------------------------------------------------
    async def _tail_journal(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True,
                                                                 application_name="citypilot-live") as listen, \
                        await psycopg.AsyncConnection.connect(self.database_url, autocommit=True,
                                                              application_name="citypilot-live") as reader:
                    await listen.execute(f"LISTEN {CHANNEL}")
                    wake = asyncio.Event()
                    wake.set()  # read at once: what was committed while we were away
                    listener = asyncio.create_task(self._listen(listen, wake))
                    try:
                        while True:
                            try:
                                await asyncio.wait_for(wake.wait(), self.poll_interval)
                            except TimeoutError:
                                pass  # the safety net: read even without a notification
                            wake.clear()
                            if listener.done():
                                listener.result()  # its connection failed: raise, reconnect both
                            await self._read_new(reader)
                    finally:
                        listener.cancel()
                        await asyncio.gather(listener, return_exceptions=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("live feed lost the journal, reconnecting", extra={
                    "error": f"{type(exc).__name__}: {exc}", "cursor": self.cursor})
                await asyncio.sleep(self.retry_interval)

    @staticmethod
    async def _listen(conn: psycopg.AsyncConnection, wake: asyncio.Event) -> None:
        async for _ in conn.notifies():
            wake.set()

    async def _read_new(self, conn: psycopg.AsyncConnection) -> None:
        while True:
            rows = await (await conn.execute(f"SELECT {ENTRY_COLUMNS} FROM journal WHERE id > %s ORDER BY id LIMIT %s",
                                             (self.cursor, PAGE))).fetchall()
            for n, row in enumerate(rows, 1):
                frame = EventFrame(row_to_entry(row))
                for client in list(self.clients):
                    client.deliver(frame)
                self.cursor = frame.entry_id
                if n % FAN_OUT_CHUNK == 0:
                    await asyncio.sleep(0)  # let the senders drain: a burst must not overflow a client that reads
            if len(rows) < PAGE:
                return

    # --- the twin ------------------------------------------------------------------------------------
    async def _on_twin(self, msg: Any) -> None:
        if not self.clients:  # nobody to tell: no work
            return
        kind = msg.subject.rsplit(".", 1)[-1]
        try:
            deltas = _deltas.decode(msg.data)
        except msgspec.DecodeError as exc:
            log.debug("unreadable twin delta", extra={"subject": msg.subject, "error": str(exc)})
            return
        pending = self._pending
        for delta in deltas:
            current = pending.get(delta.asset)
            if current is None:
                pending[delta.asset] = _Pending(kind, delta.ts, delta.changed)
            else:
                current.merge(delta.ts, delta.changed)

    async def _flush_twin(self) -> None:
        next_at = time.monotonic()
        while True:
            next_at = max(next_at + self.twin_interval, time.monotonic())
            await asyncio.sleep(next_at - time.monotonic())
            if not self._pending:
                continue
            batch, self._pending = self._pending, {}
            try:
                missing = [a for a in batch if self.index.get(a) is None]
                if missing:
                    async with self.pool.connection() as conn:
                        await self.index.resolve(conn, missing)
            except Exception as exc:  # filter on what we know; the index catches up later
                log.warning("live asset lookup failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            self._send_twin(batch)

    def _send_twin(self, batch: dict[str, _Pending]) -> None:
        items: list[tuple[AssetFacts, dict[str, Any]]] = [
            (self.index.get(asset) or self.index.guess(p.kind), {"asset": asset, "kind": p.kind, "ts": p.ts, "changed": p.changed})
            for asset, p in batch.items()]
        shared: dict[bool, list[str]] = {}  # clients without an asset filter: frames made once per visibility

        def frames(deltas: list[dict[str, Any]]) -> list[str]:
            return [encode({"type": "twin", "deltas": deltas[i:i + DELTAS_PER_FRAME]})
                    for i in range(0, len(deltas), DELTAS_PER_FRAME)]

        for client in list(self.clients):
            flt = client.filter
            if client.closed or not flt.twin:
                continue
            if flt.any_asset:
                texts = shared.get(flt.sees_restricted)
                if texts is None:
                    texts = shared[flt.sees_restricted] = frames([d for facts, d in items if flt.matches_asset(facts)])
            else:
                texts = frames([d for facts, d in items if flt.matches_asset(facts)])
            for text in texts:
                if not client.offer("twin", text):
                    break

    async def _refresh_index(self) -> None:
        while True:
            try:
                async with self.pool.connection() as conn:
                    await self.index.refresh(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("live asset index not refreshed", extra={"error": f"{type(exc).__name__}: {exc}"})
            await asyncio.sleep(self.index_interval)

    async def _recheck_sessions(self) -> None:
        """A feed outlives the request that opened it: every ``session_interval`` seconds, close the
        connections whose session was revoked (logout, password change), expired, whose account was
        disabled or whose role changed, with the same check as every HTTP request."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(min(self.session_interval, 1.0))
            if time.monotonic() - last < self.session_interval:
                continue
            last = time.monotonic()
            try:
                async with self.pool.connection() as conn:
                    for client in list(self.clients):
                        p = client.principal
                        if p.session_id is None or client.closed:
                            continue
                        current = await resolve_session(conn, TokenClaims(p.username, p.role, p.session_id, NEVER))
                        if current is None or current.role != p.role:
                            reason = "session ended (logged out, expired, account disabled or role changed): log in again"
                            client.close(4401, reason, "session_ended", detail=reason)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("live sessions not rechecked", extra={"error": f"{type(exc).__name__}: {exc}"})
