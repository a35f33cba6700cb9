"""The operators' live feed over a real WebSocket: a real uvicorn server in this process (on the ``stack``
under test) and the ``websockets`` client library, as a browser or an integrator would connect.

Every test writes journal entries of its own type family (``t<uid>.*``) and filters on it, so that
entries written by other tests in the same database never confuse it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import socket
import statistics
import threading
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable
from urllib.parse import urlencode

import psycopg
import pytest
from prometheus_client import REGISTRY
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from citypilot.journal.entries import NewEntry
from citypilot.journal.store import append
from citypilot.live import hub as hub_module
from citypilot.runtime.ports import free_port

from ..conftest import PASSWORD
from .conftest import LAT, LON, reading, utcnow

pytestmark = pytest.mark.integration
DIJON, CHENOVE = "21231", "21166"


@dataclasses.dataclass
class LiveServer:
    url: str
    app: Any
    database_url: str
    nats_url: str

    @property
    def hub(self) -> hub_module.LiveHub:
        return self.app.state.context.extra["live"]


@pytest.fixture(scope="module")
def live_server(stack: Any, tokens: dict[str, str]) -> Any:
    """citypilot's application served by uvicorn on a free port, next to the test client's (it shares the
    stack's database and bus; the other app keeps the ingest workers, the alarm engine and the broker's users)."""
    import uvicorn

    from citypilot.api.app import create_app

    config = dataclasses.replace(stack.config, ingest_workers=0,
                                 **({"alarms_engine": False} if hasattr(stack.config, "alarms_engine") else {}))
    app = create_app(config, dataclasses.replace(stack.endpoints, nats_server=None))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on",
                                           ws="websockets-sansio"))
    thread = threading.Thread(target=server.run, name="live-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield LiveServer(f"ws://127.0.0.1:{port}/api/v1/live", app, stack.endpoints.database_url,
                         stack.endpoints.nats_url)
    finally:
        server.should_exit = True
        thread.join(20)


@pytest.fixture
def family(uid: str) -> str:
    """This test's own journal type family."""
    return f"t{uid.lower()}"


def note(family: str, name: str = "note", **fields: Any) -> NewEntry:
    base: dict[str, Any] = dict(at=utcnow(), domain="lighting", type=f"{family}.{name}", summary=f"live test {name}",
                                commune=DIJON, lat=LAT, lon=LON)
    return NewEntry(**{**base, **fields})


class Feed:
    """One live-feed connection, read frame by frame."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.pending: list[dict[str, Any]] = []

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame; an ``events`` frame (a burst) is read as the event frames it carries."""
        if not self.pending:
            self.pending = unbatch(json.loads(await asyncio.wait_for(self.ws.recv(), timeout)))
        return self.pending.pop(0)

    async def frame(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.next(max(deadline - time.monotonic(), 0.01))
            if predicate(frame):
                return frame

    async def events(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while len(out) < count:
            out.append(await self.frame(lambda f: f["type"] == "event", timeout))
        return out

    async def quiet(self, seconds: float) -> list[dict[str, Any]]:
        """Event frames received within ``seconds`` (expected: none)."""
        out = []
        try:
            while True:
                out.append(await self.frame(lambda f: f["type"] == "event", seconds))
        except TimeoutError:
            return out

    async def closed(self, timeout: float = 5.0) -> tuple[int | None, str, list[dict[str, Any]]]:
        """Read to the end: (close code, reason, frames received before it)."""
        frames, self.pending = self.pending, []
        try:
            while True:
                frames += unbatch(json.loads(await asyncio.wait_for(self.ws.recv(), timeout)))
        except ConnectionClosed:
            pass
        return self.ws.close_code, self.ws.close_reason or "", frames


def unbatch(frame: dict[str, Any]) -> list[dict[str, Any]]:
    if frame["type"] == "events":
        assert len(frame["events"]) >= 2 and all(f["type"] == "event" for f in frame["events"])
        return frame["events"]
    return [frame]


def url(server: LiveServer, token: str | None = None, **params: Any) -> str:
    query = {k: v for k, v in {"access_token": token, **params}.items() if v is not None}
    return f"{server.url}?{urlencode(query)}" if query else server.url


@asynccontextmanager
async def feed(server: LiveServer, token: str | None = None, hello: bool = True, **kwargs: Any) -> AsyncIterator[Feed]:
    options = {k: kwargs.pop(k) for k in ("additional_headers", "origin", "compression", "max_queue", "sock")
               if k in kwargs}
    async with connect(url(server, token, **kwargs), proxy=None, open_timeout=5, close_timeout=2, max_size=None,
                       **options) as ws:
        client = Feed(ws)
        if hello:
            first = await client.next()
            assert first["type"] == "hello", first
        yield client


async def journal_conn(server: LiveServer) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(server.database_url, autocommit=True)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def disconnects(reason: str) -> float:
    return REGISTRY.get_sample_value("citypilot_live_disconnects_total", {"reason": reason}) or 0.0


# --- who may connect ---------------------------------------------------------------------------------------

def test_refused_connections_get_a_code_and_a_reason(live_server, tokens, stack):
    async def scenario() -> None:
        for token, code, words in ((None, 4401, "authentication required"), ("not-a-token", 4401, "invalid"),
                                   (tokens["dpo"], 4403, "dpo role"),
                                   (tokens["operator"] + "x", 4401, "invalid")):
            async with feed(live_server, token, hello=False) as client:
                got, reason, frames = await client.closed()
                assert got == code and words in reason, (token, got, reason)
                assert frames == [{"type": "error", "code": code, "detail": frames[0]["detail"]}]
        for params, words in (({"commune": "99999"}, "commune: unknown commune"), ({"severity": "loud"}, "severity"),
                              ({"last_event_id": "-1"}, "last_event_id"), ({"colour": "red"}, "colour: unknown"),
                              ({"kind": "camera"}, "may not see camera")):
            async with feed(live_server, tokens["operator"], hello=False, **params) as client:
                got, reason, _ = await client.closed()
                assert got == 4400 and words in reason, (params, got, reason)
        # The session cookie: only from the application's own origin (a WebSocket is not bound by CORS).
        cookie = {"Cookie": f"citypilot_session={tokens['operator']}"}
        async with feed(live_server, hello=False, additional_headers=cookie, origin="http://evil.example") as client:
            got, reason, _ = await client.closed()
            assert got == 4403 and "cross-origin" in reason
        host = live_server.url.split("/")[2]
        async with feed(live_server, additional_headers=cookie, origin=f"http://{host}") as client:
            pass  # hello received
        async with feed(live_server, additional_headers={"Authorization": f"Bearer {tokens['read_only']}"}):
            pass

    run(scenario())


# --- what each one sees -------------------------------------------------------------------------------------

def test_restricted_entries_reach_public_safety_roles_only(live_server, tokens, family):
    async def scenario() -> None:
        async with feed(live_server, tokens["operator"], type=f"{family}.*") as operator, \
                feed(live_server, tokens["police"], type=f"{family}.*") as police, \
                await journal_conn(live_server) as conn:
            await append(conn, [note(family, "intrusion", restricted=True, domain="public_safety"),
                                note(family, "camera", kind="camera", domain="public_safety"),
                                note(family, "open", summary="for everyone")])
            seen_by_police = [e["entry"]["type"] for e in await police.events(3)]
            assert seen_by_police == [f"{family}.intrusion", f"{family}.camera", f"{family}.open"]
            assert [e["entry"]["type"] for e in await operator.events(1)] == [f"{family}.open"]
            assert await operator.quiet(0.3) == []

    run(scenario())


def test_filters_by_commune_domain_and_severity(live_server, tokens, family):
    async def scenario() -> None:
        everything = {"type": f"{family}.*"}
        async with feed(live_server, tokens["operator"], **everything, commune=CHENOVE) as chenove, \
                feed(live_server, tokens["operator"], **everything, domain="traffic") as traffic, \
                feed(live_server, tokens["operator"], **everything, severity="major") as major, \
                feed(live_server, tokens["operator"], **everything, bbox="5.0,47.3,5.02,47.31") as zone, \
                await journal_conn(live_server) as conn:
            ids = await append(conn, [
                note(family, "a", commune=CHENOVE, severity="warning"),
                note(family, "b", domain="traffic", severity="critical", lat=47.305, lon=5.01),
                note(family, "c", severity="major"),
                note(family, "d"),  # no severity
            ])
            assert [e["id"] for e in await chenove.events(1)] == [ids[0]]
            assert [e["id"] for e in await traffic.events(1)] == [ids[1]]
            assert [e["id"] for e in await major.events(2)] == [ids[1], ids[2]]
            assert [e["id"] for e in await zone.events(1)] == [ids[1]]
            # A filter frame replaces the whole filter: from then on, Chenôve's client follows traffic instead.
            await chenove.ws.send(json.dumps({"type": "filter", "filter": {"domain": ["traffic"], "type": [f"{family}.*"]}}))
            applied = await chenove.frame(lambda f: f["type"] == "filter_applied")
            assert applied["filter"]["domain"] == ["traffic"] and applied["filter"]["commune"] == []
            more = await append(conn, [note(family, "e", commune=CHENOVE), note(family, "f", domain="traffic")])
            assert [e["id"] for e in await chenove.quiet(0.5)] == [more[1]]
            for client in (traffic, major, zone):
                assert all(e["id"] not in ids for e in await client.quiet(0.1))

    run(scenario())


def test_an_appended_entry_arrives_within_a_second(live_server, tokens, family):
    latencies = []

    async def scenario() -> None:
        async with feed(live_server, tokens["supervisor"], type=f"{family}.*") as client, \
                await journal_conn(live_server) as conn:
            assert (REGISTRY.get_sample_value("citypilot_live_clients") or 0) >= 1
            for i in range(5):
                started = time.perf_counter()
                entry_id, = await append(conn, [note(family, f"n{i}")])  # autocommit: committed on return
                event = await client.frame(lambda f: f["type"] == "event", 2.0)
                latencies.append(time.perf_counter() - started)
                assert event["id"] == entry_id and event["entry"]["type"] == f"{family}.n{i}"
                await asyncio.sleep(0.05)

    events_before = REGISTRY.get_sample_value("citypilot_live_frames_total", {"type": "event"}) or 0.0
    run(scenario())
    assert (REGISTRY.get_sample_value("citypilot_live_frames_total", {"type": "event"}) or 0.0) >= events_before + 5
    print(f"\nlive feed append->receive latency: median {statistics.median(latencies) * 1000:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms over {len(latencies)}")
    assert max(latencies) < 1.0, latencies


def test_the_feed_survives_losing_its_database_connections(live_server, tokens, family):
    async def scenario() -> None:
        async with feed(live_server, tokens["operator"], type=f"{family}.*") as client, \
                await journal_conn(live_server) as conn:
            before, = await append(conn, [note(family, "before")])
            assert [e["id"] for e in await client.events(1)] == [before]
            killed = await (await conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'citypilot-live' AND datname = current_database()")).fetchone()
            assert killed[0] >= 2
            during = await append(conn, [note(family, f"during{i}") for i in range(3)])
            await asyncio.sleep(0.5)
            after = await append(conn, [note(family, "after")])
            assert [e["id"] for e in await client.events(4, 10.0)] == during + after
            assert await client.quiet(0.3) == []

    run(scenario())


def test_a_revoked_session_ends_the_feed(live_server, accounts, city, family):
    r = city.client.post("/api/v1/auth/login", json={"username": accounts["operator"], "password": PASSWORD})
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    city.client.cookies.clear()
    live_server.hub.session_interval = 0.5

    async def scenario() -> None:
        async with feed(live_server, token, type=f"{family}.*") as client:
            r = await asyncio.to_thread(city.client.post, "/api/v1/auth/logout",
                                        headers={"Authorization": f"Bearer {token}"})
            assert r.status_code in (200, 204), r.text
            got, reason, frames = await client.closed(5.0)
            assert got == 4401 and "session ended" in reason, (got, reason)
        async with feed(live_server, token, hello=False) as client:  # and it cannot come back
            assert (await client.closed())[0] == 4401

    try:
        run(scenario())
    finally:
        live_server.hub.session_interval = 60.0


# --- resume without gap ---------------------------------------------------------------------------------------

def test_resume_gets_exactly_the_missed_entries_then_live_ones(live_server, tokens, family, city):
    light, = city.import_assets({"id": "SL-1", "kind": "street_light"})

    async def scenario() -> None:
        async with await journal_conn(live_server) as conn:
            async with feed(live_server, tokens["operator"], type=f"{family}.*") as client:
                first = await append(conn, [note(family, f"before{i}") for i in range(3)])
                assert [e["id"] for e in await client.events(3)] == first
            last_seen = first[0]
            missed = await append(conn, [note(family, f"away{i}") for i in range(4)])
            # The twin moved while we were away: the resumed client gets its current values.
            await asyncio.to_thread(city.publish, [(light, "telemetry", reading(utcnow(), power_w=42.0))])
            await asyncio.to_thread(city.wait_state, light, lambda s: s["values"].get("power_w") == 42.0, "the reading")

            # Entries keep being appended while the client reconnects and catches up: the junction between
            # the database replay and the live tail must have no gap and no duplicate.
            async def keep_appending() -> list[int]:
                async with await journal_conn(live_server) as writer:
                    out = []
                    for i in range(30):
                        out += await append(writer, [note(family, f"live{i}")])
                        await asyncio.sleep(0.01)
                    return out

            appender = asyncio.create_task(keep_appending())
            async with connect(url(live_server, tokens["operator"], type=f"{family}.*", last_event_id=last_seen),
                               proxy=None, max_size=None) as ws:
                client = Feed(ws)
                hello = await client.next()
                assert hello["type"] == "hello" and hello["resumed_from"] == last_seen
                live = await appender
                expected = first[1:] + missed + live
                frames = []
                while len([f for f in frames if f["type"] == "event"]) < len(expected):
                    frames.append(await client.next())
                received = [f["id"] for f in frames if f["type"] == "event"]
                assert received == expected
                assert await client.quiet(0.3) == []
                snapshot = [d for f in frames if f["type"] == "twin" and f.get("snapshot") for d in f["deltas"]]
                mine = [d for d in snapshot if d["asset"] == light]
                assert mine and mine[0]["changed"]["power_w"] == 42.0 and mine[0]["kind"] == "street_light", snapshot

    run(scenario())


def test_resume_too_far_back_or_from_an_unknown_id_resets(live_server, tokens, family, monkeypatch):
    monkeypatch.setattr(hub_module, "MAX_REPLAY", 5)

    async def scenario() -> None:
        async with await journal_conn(live_server) as conn, \
                feed(live_server, tokens["operator"], type=f"{family}.*", twin="false") as watcher:
            ids = await append(conn, [note(family, f"n{i}") for i in range(8)])
            # The hub's tail has passed them (on an external PostgreSQL its notification may lag the insert):
            # only then is ids[0] more than MAX_REPLAY entries behind its head.
            assert [e["id"] for e in await watcher.events(8)] == ids
            for last in (ids[0], ids[-1] + 1_000_000):  # too far back; an id the journal never had
                async with connect(url(live_server, tokens["operator"], type=f"{family}.*", last_event_id=last,
                                       twin="false"), proxy=None) as ws:
                    client = Feed(ws)
                    hello, reset = await client.next(), await client.next()
                    assert hello["type"] == "hello" and hello["resumed_from"] == (None if last == ids[0] else last)
                    assert reset["type"] == "reset" and reset["head"] >= hello["head"] >= ids[-1]
                    assert await client.quiet(0.2) == []  # nothing replayed
                    new, = await append(conn, [note(family, "after")])
                    assert [e["id"] for e in await client.events(1)] == [new]

    run(scenario())


# --- misbehaving clients ------------------------------------------------------------------------------------

def test_garbage_closes_only_the_client_that_sent_it(live_server, tokens, family):
    async def scenario() -> None:
        async with feed(live_server, tokens["operator"], type=f"{family}.*") as good, \
                await journal_conn(live_server) as conn:
            for garbage, code, words in (("not json", 4400, "not JSON"), (b"\x00\x01", 1003, "binary"),
                                         ('{"type": "subscribe"}', 4400, "unknown frame type 'subscribe'"),
                                         ("[1, 2]", 4400, "a frame is a JSON object"),
                                         (json.dumps({"type": "filter", "pad": "x" * 17000}), 4400, "larger than"),
                                         (json.dumps({"type": "filter", "filter": {"severity": "loud"}}), 4400,
                                          "severity"),
                                         (json.dumps({"type": "filter", "severity": "major"}), 4400, "filter")):
                async with feed(live_server, tokens["operator"], type=f"{family}.*") as bad:
                    await bad.ws.send(garbage)
                    got, reason, _ = await bad.closed()
                    assert got == code and words in reason, (garbage, got, reason)
                entry_id, = await append(conn, [note(family)])
                assert [e["id"] for e in await good.events(1)] == [entry_id]
            await good.ws.send(json.dumps({"type": "pong"}))  # allowed, and ignored
            entry_id, = await append(conn, [note(family)])
            assert [e["id"] for e in await good.events(1)] == [entry_id]

    run(scenario())


def test_a_client_that_does_not_read_is_cut_off_without_slowing_the_others(live_server, tokens, family):
    hub = live_server.hub
    slow_before = disconnects("slow_reader")

    async def scenario() -> None:
        # A tiny receive window and no reading at all: the server's outbox for it fills up.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        host, port = live_server.url.split("/")[2].split(":")
        sock.connect((host, int(port)))
        # Room for a whole appended batch (100 entries, ~1 MB): only a blocked socket can fill it.
        hub.client_options = {"max_frames": 150, "max_bytes": 2_000_000, "close_timeout": 30.0}
        try:
            async with feed(live_server, tokens["operator"], type=f"{family}.*", sock=sock, compression=None,
                            max_queue=1) as slow:
                hub.client_options = {}
                async with feed(live_server, tokens["operator"], type=f"{family}.*", compression=None) as fast, \
                        await journal_conn(live_server) as conn:
                    batches, per_batch = 12, 100
                    started = time.monotonic()
                    ids: list[int] = []

                    async def read_all() -> list[int]:
                        got: list[int] = []
                        while len(got) < batches * per_batch:
                            got += [e["id"] for e in await fast.events(1, 10.0)]
                        return got

                    reader = asyncio.create_task(read_all())
                    for _ in range(batches):  # ~12 MB of entries, incompressible
                        ids += await append(conn, [note(family, data={"blob": os.urandom(5000).hex()})
                                                   for _ in range(per_batch)])
                    assert await reader == ids
                    elapsed = time.monotonic() - started
                    assert disconnects("slow_reader") == slow_before + 1
                    assert len(hub.clients) >= 1
                got, reason, frames = await slow.closed(10.0)
                assert (got, reason) == (4002, "not reading fast enough"), (got, reason)
                events = len([f for f in frames if f["type"] == "event"])
                assert 150 < events < len(ids), events  # it had received some before its socket filled up
                print(f"\nfast client read {len(ids)} entries (~12 MB) in {elapsed:.2f} s; the slow one was cut off "
                      f"after {events}")
        finally:
            hub.client_options = {}

    run(scenario())


# --- twin deltas ----------------------------------------------------------------------------------------------

def test_twin_deltas_are_coalesced_to_one_per_asset_per_second(live_server, tokens, city):
    light, camera = city.import_assets({"id": "SL-1", "kind": "street_light"}, {"id": "CAM-1", "kind": "camera"})

    base = utcnow()

    async def publish(nc: Any, kind: str, asset: str, i: int, changed: dict[str, Any]) -> str:
        ts = (base + dt.timedelta(milliseconds=i)).isoformat()
        await nc.publish(f"citypilot.twin.{kind}", json.dumps(
            [{"asset": asset, "ts": ts, "changed": changed, "back_online": False, "new": False}]).encode())
        return ts

    def mine(frame: dict[str, Any], asset: str) -> list[dict[str, Any]]:
        return [d for d in frame.get("deltas", []) if d["asset"] == asset] if frame["type"] == "twin" else []

    async def scenario() -> None:
        import nats

        nc = await nats.connect(live_server.nats_url)
        try:
            async with feed(live_server, tokens["operator"], type="none.*") as operator, \
                    feed(live_server, tokens["police"], type="none.*", kind="camera,street_light") as police, \
                    feed(live_server, tokens["operator"], type="none.*", commune=CHENOVE) as elsewhere:
                # Wait for a flush to have just happened, so that the burst below falls within one second.
                await publish(nc, "street_light", light, 0, {"probe": True})
                await operator.frame(lambda f: bool(mine(f, light)), 3.0)
                await police.frame(lambda f: bool(mine(f, light)), 3.0)
                burst_at = time.monotonic()
                await publish(nc, "street_light", light, 1, {"lamp_on": True})
                latest = ""
                for i in range(10, 1, -1):  # the newest first: the merge keeps the latest ts, not the last one
                    ts = await publish(nc, "street_light", light, i, {"power_w": float(i)})
                    latest = latest or ts
                await publish(nc, "camera", camera, 1, {"recording": True})
                await nc.flush()
                assert time.monotonic() - burst_at < 1.0
                frames = []
                deadline = time.monotonic() + 2.5
                while time.monotonic() < deadline:
                    try:
                        frames.append((time.monotonic(), await operator.next(max(deadline - time.monotonic(), 0.01))))
                    except TimeoutError:
                        break
                deltas = [(at, d) for at, f in frames for d in mine(f, light)]
                assert len(deltas) == 1, deltas
                delta = deltas[0][1]
                assert delta["changed"] == {"lamp_on": True, "power_w": 2.0} and delta["kind"] == "street_light"
                assert delta["ts"] == latest
                assert not any(mine(f, camera) for _, f in frames)  # restricted kind: not for an operator
                got_camera = await police.frame(lambda f: bool(mine(f, camera)), 3.0)
                assert mine(got_camera, camera)[0]["changed"] == {"recording": True}
                assert not [f for f in await _drain(elsewhere, 0.3) if mine(f, light)]  # another commune
        finally:
            await nc.close()

    run(scenario())


async def _drain(client: Feed, seconds: float) -> list[dict[str, Any]]:
    out = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            out.append(await client.next(max(deadline - time.monotonic(), 0.01)))
    except TimeoutError:
        pass
    return out


def test_access_tokens_are_kept_out_of_uvicorn_logs():
    import logging

    from citypilot.api.routes.live import HideAccessToken

    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" [accepted]',
                               ("127.0.0.1:5000", "/api/v1/live?commune=21231&access_token=eyJ.secret.sig&twin=false"),
                               None)
    assert HideAccessToken().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "WebSocket /api/v1/live?commune=21231&access_token=***&twin=false" [accepted]'
    assert any(isinstance(f, HideAccessToken) for f in logging.getLogger("uvicorn.error").filters)
