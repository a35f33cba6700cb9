"""Outbound notifications against real servers, no mocks: a local HTTP server that records what it is
sent and answers as scripted, an aiosmtpd SMTP server, and a migrated database of the stack's PostgreSQL
(a database of this module's own, so the dispatchers of other tests never take its rows or its lock)."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import hashlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, Mapping
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest
from aiosmtpd.controller import Controller
from prometheus_client import REGISTRY
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from citypilot.db.migrations import migrate
from citypilot.notify.channels import Channel, WebhookChannel
from citypilot.notify.config import NotifyConfig, parse_notify_config
from citypilot.notify.dispatcher import NotificationDispatcher
from citypilot.notify.outbox import AlarmNotice, enqueue
from citypilot.runtime.ports import free_port

UTC = dt.timezone.utc
SECRET = "whsec-test-0123456789"
ENV = {"TEST_WEBHOOK_SECRET": SECRET}


# --- the servers ----------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 that answers POSTs with the scripted statuses (then 200)."""

    script: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.received.append(Received(self.path, dict(self.headers.items()), body))
                    status = receiver.script.pop(0) if receiver.script else 200
                answer = b"bad payload" if status == 400 else b"oops" if status >= 500 else b""
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/citypilot"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class MailSink:
    """aiosmtpd handler: keeps every message; refuses recipients at nobody@ with a permanent 550."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted for delivery"


@pytest.fixture(scope="module")
def notify_database(stack: Any) -> Iterator[str]:
    name = f"notify_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack.endpoints.database_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = make_conninfo(**{**conninfo_to_dict(stack.endpoints.database_url), "dbname": name})
    try:
        migrate(url)
        yield url
    finally:
        with psycopg.connect(stack.endpoints.database_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def db(notify_database: str) -> str:
    """The module's database with an empty outbox."""
    with psycopg.connect(notify_database, autocommit=True) as conn:
        conn.execute("DELETE FROM notifications")
    return notify_database


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mail() -> Iterator[tuple[MailSink, int]]:
    sink = MailSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    yield sink, port
    controller.stop()


# --- helpers --------------------------------------------------------------------------------------


def webhook_config(url: str, extra: str = "") -> NotifyConfig:
    return parse_notify_config(f"""
[[channel]]
name = "lighting-webhook"
type = "webhook"
url = "{url}"
secret_env = "TEST_WEBHOOK_SECRET"
services = ["lighting"]
{extra}
""", Path("notify.toml"), ENV)


def notice(alarm_id: int, severity: str = "major", event: str = "raised", services: tuple[str, ...] = ("lighting",),
           occurrence: int = 1) -> AlarmNotice:
    return AlarmNotice(alarm_id=alarm_id, occurrence=occurrence, event=event, severity=severity, services=services,
                       title="Lamp failure", type="lamp_failure", asset_id="SL-000123", kind="streetlight",
                       commune="Dijon", at=dt.datetime.now(UTC), state="raised", restricted=False,
                       data={"lamp_current_a": 0.0})


async def new_alarm(conn: psycopg.AsyncConnection[Any], severity: str = "major") -> int:
    """An alarms row for the notifications to refer to (the engine's, simplified)."""
    now = dt.datetime.now(UTC)
    row = await (await conn.execute(
        "INSERT INTO alarms (source, type, rule_id, domain, severity, state, title, first_seen, raised_at, last_seen)"
        " VALUES (%s, 'lamp_failure', 'lamp', 'lighting', %s, 'raised', 'Lamp failure', %s, %s, %s) RETURNING id",
        (f"SL-{uuid.uuid4().hex[:10]}", severity, now, now, now))).fetchone()
    assert row is not None
    return int(row[0])


def outbox(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        cur = conn.execute("SELECT key, channel, status, attempts, last_error, sent_at, next_attempt_at, payload,"
                           " service, severity, event FROM notifications ORDER BY id")
        names = [c.name for c in cur.description or ()]
        return [dict(zip(names, row)) for row in cur.fetchall()]


def with_pool(url: str, scenario: Callable[[AsyncConnectionPool], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with AsyncConnectionPool(url, min_size=1, max_size=4, open=False) as pool:
            await pool.open(wait=True, timeout=10)
            return await scenario(pool)
    return asyncio.run(main())


async def write(pool: AsyncConnectionPool, config: NotifyConfig, *specs: dict[str, Any],
                now: dt.datetime | None = None) -> tuple[list[int], int]:
    """Create one alarm per spec and enqueue its notice in the same transaction, as the engine does."""
    async with pool.connection() as conn:
        ids = [await new_alarm(conn, spec.get("severity", "major")) for spec in specs]
        inserted = await enqueue(conn, config, [notice(i, **spec) for i, spec in zip(ids, specs)],
                                 now or dt.datetime.now(UTC))
    return ids, inserted


def counted(channel: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("citypilot_notifications_total", {"channel": channel, "outcome": outcome}) or 0.0


def verify(secret: str, header: str, body: bytes, tolerance_s: int = 300) -> bool:
    """What an integrator's receiver does (docs/integrators/webhooks.md)."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    timestamp = int(parts["t"])
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return abs(time.time() - timestamp) <= tolerance_s and hmac.compare_digest(expected, parts["v1"])


def no_wait(attempt: int) -> float:
    return 0.0


# --- webhooks -------------------------------------------------------------------------------------


def test_a_webhook_is_delivered_once_with_a_signature_the_receiver_verifies(db, receiver):
    config = webhook_config(receiver.url)
    before = counted("lighting-webhook", "sent")

    async def scenario(pool: AsyncConnectionPool) -> tuple[list[int], int, int, int]:
        ids, inserted = await write(pool, config, {})
        dispatcher = NotificationDispatcher(pool, config, db)
        try:
            return ids, inserted, await dispatcher.send_due(), await dispatcher.send_due()
        finally:
            await dispatcher.aclose()

    (alarm_id,), inserted, first, second = with_pool(db, scenario)
    assert (inserted, first, second) == (1, 1, 0)
    assert len(receiver.received) == 1
    request = receiver.received[0]
    assert request.path == "/hooks/citypilot"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Citypilot-Delivery"] == f"{alarm_id}:1:raised:lighting-webhook"
    assert request.headers["Citypilot-Event"] == "raised"
    assert verify(SECRET, request.headers["Citypilot-Signature"], request.body)
    assert not verify("another-secret", request.headers["Citypilot-Signature"], request.body)
    body = json.loads(request.body)
    assert body["id"] == alarm_id and body["severity"] == "major" and body["asset"] == "SL-000123"
    assert body["services"] == ["lighting"] and dt.datetime.fromisoformat(body["at"]).tzinfo is not None
    (row,) = outbox(db)
    assert row["status"] == "sent" and row["attempts"] == 1 and row["sent_at"] is not None
    assert row["last_error"] is None and row["service"] == "lighting" and row["payload"] == body
    assert counted("lighting-webhook", "sent") == before + 1


def test_a_server_error_is_retried_until_it_is_delivered(db, receiver):
    receiver.script = [500]
    config = webhook_config(receiver.url)

    async def scenario(pool: AsyncConnectionPool) -> list[list[dict[str, Any]]]:
        await write(pool, config, {})
        dispatcher = NotificationDispatcher(pool, config, db, retry_delay=no_wait)
        seen = []
        try:
            for _ in range(2):
                assert await dispatcher.send_due() == 1
                seen.append(outbox(db))
        finally:
            await dispatcher.aclose()
        return seen

    after_500, after_200 = with_pool(db, scenario)
    assert after_500[0]["status"] == "pending" and after_500[0]["attempts"] == 1
    assert after_500[0]["last_error"] == "HTTP 500: oops"
    assert after_200[0]["status"] == "sent" and after_200[0]["attempts"] == 2
    assert [r.headers["Citypilot-Delivery"] for r in receiver.received] == [after_200[0]["key"]] * 2


def test_a_client_error_fails_at_once_and_endless_server_errors_fail_at_the_last_attempt(db, receiver):
    receiver.script = [400] + [503] * 8
    config = webhook_config(receiver.url)
    before = counted("lighting-webhook", "failed")

    async def scenario(pool: AsyncConnectionPool) -> int:
        dispatcher = NotificationDispatcher(pool, config, db, retry_delay=no_wait)
        try:
            await write(pool, config, {})
            assert await dispatcher.send_due() == 1
            await write(pool, config, {})
            rounds = 0
            while await dispatcher.send_due():
                rounds += 1
            return rounds
        finally:
            await dispatcher.aclose()

    rounds = with_pool(db, scenario)
    refused, unavailable = outbox(db)
    assert refused["status"] == "failed" and refused["attempts"] == 1
    assert refused["last_error"] == "HTTP 400: bad payload"
    assert rounds == 8 and unavailable["status"] == "failed" and unavailable["attempts"] == 8
    assert unavailable["last_error"] == "gave up after 8 attempts: HTTP 503: oops"
    assert len(receiver.received) == 9
    assert counted("lighting-webhook", "failed") == before + 2


def test_a_notification_for_a_removed_channel_fails_with_the_reason(db, receiver):
    old = webhook_config(receiver.url)
    new = NotifyConfig.empty()  # the administrator removed the channel

    async def scenario(pool: AsyncConnectionPool) -> None:
        await write(pool, old, {})
        dispatcher = NotificationDispatcher(pool, new, db)
        try:
            assert await dispatcher.send_due() == 0
        finally:
            await dispatcher.aclose()

    with_pool(db, scenario)
    (row,) = outbox(db)
    assert row["status"] == "failed"
    assert row["last_error"] == "channel lighting-webhook is no longer in the notification configuration"
    assert receiver.received == []


# --- the outbox -----------------------------------------------------------------------------------


def test_a_notice_enqueued_twice_is_one_notification_and_a_rollback_leaves_none(db, receiver):
    config = webhook_config(receiver.url)

    async def scenario(pool: AsyncConnectionPool) -> tuple[int, int, int, int]:
        async with pool.connection() as conn:
            alarm_id = await new_alarm(conn)
        now = dt.datetime.now(UTC)
        async with pool.connection() as conn:
            first = await enqueue(conn, config, [notice(alarm_id)], now)
        async with pool.connection() as conn:  # a replay of the same transition, and one in the same batch
            again = await enqueue(conn, config, [notice(alarm_id), notice(alarm_id)], now)
            next_occurrence = await enqueue(conn, config, [notice(alarm_id, occurrence=2)], now)
        with pytest.raises(RuntimeError):
            async with pool.connection() as conn:
                async with conn.transaction():
                    await enqueue(conn, config, [notice(alarm_id, event="escalated")], now)
                    raise RuntimeError("the alarm transition failed")
        unrouted = 0
        async with pool.connection() as conn:
            unrouted = await enqueue(conn, config, [notice(alarm_id, services=("roads",), occurrence=3)], now)
        return first, again, next_occurrence, unrouted

    first, again, next_occurrence, unrouted = with_pool(db, scenario)
    assert (first, again, next_occurrence, unrouted) == (1, 0, 1, 0)
    assert [(r["key"].split(":", 1)[1], r["status"]) for r in outbox(db)] == [
        ("1:raised:lighting-webhook", "pending"), ("2:raised:lighting-webhook", "pending")]


def test_quiet_hours_defer_a_major_but_not_a_critical(db, receiver):
    paris = ZoneInfo("Europe/Paris")
    local = dt.datetime.now(paris)
    window = f"{local - dt.timedelta(hours=1):%H:%M}-{local + dt.timedelta(hours=2):%H:%M}"  # quiet now
    config = webhook_config(receiver.url, f'quiet_hours = "{window}"')

    async def scenario(pool: AsyncConnectionPool) -> int:
        await write(pool, config, {"severity": "major"}, {"severity": "critical"})
        dispatcher = NotificationDispatcher(pool, config, db)
        try:
            return await dispatcher.send_due()
        finally:
            await dispatcher.aclose()

    assert with_pool(db, scenario) == 1
    major, critical = outbox(db)
    assert critical["status"] == "sent" and critical["severity"] == "critical"
    assert major["status"] == "pending" and major["attempts"] == 0
    later = major["next_attempt_at"] - dt.datetime.now(UTC)
    assert dt.timedelta(hours=1, minutes=58) < later <= dt.timedelta(hours=2)  # at the end of the quiet hours
    assert [json.loads(r.body)["severity"] for r in receiver.received] == ["critical"]


# --- e-mail ----------------------------------------------------------------------------------------


def email_config(port: int, to: str = "poste@police.example.org") -> NotifyConfig:
    return parse_notify_config(f"""
base_url = "https://citypilot.example.org"

[smtp]
host = "127.0.0.1"
port = {port}
starttls = false
sender = "citypilot@example.org"
timeout_s = 5

[[channel]]
name = "police-mail"
type = "email"
to = ["{to}"]
services = ["police"]
""", Path("notify.toml"), {})


def test_an_email_is_received_by_the_smtp_server_with_the_right_subject(db, mail):
    sink, port = mail
    config = email_config(port)

    async def scenario(pool: AsyncConnectionPool) -> int:
        ids, _ = await write(pool, config, {"services": ("police",)})
        dispatcher = NotificationDispatcher(pool, config, db)
        try:
            assert await dispatcher.send_due() == 1
        finally:
            await dispatcher.aclose()
        return ids[0]

    alarm_id = with_pool(db, scenario)
    (sender, recipients, content), = sink.messages
    assert sender == "citypilot@example.org" and recipients == ["poste@police.example.org"]
    message = email.message_from_bytes(content, policy=email.policy.default)
    assert message["Subject"] == "[citypilot] MAJOR lamp_failure — SL-000123 (Dijon): Lamp failure"
    assert message["X-Citypilot-Delivery"] == f"{alarm_id}:1:raised:police-mail"
    body = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert f"#{alarm_id}" in body and f"https://citypilot.example.org/alarms/{alarm_id}" in body
    (row,) = outbox(db)
    assert row["status"] == "sent" and row["attempts"] == 1


def test_a_refused_recipient_fails_and_an_unreachable_server_is_retried(db, mail):
    sink, port = mail
    refusing = email_config(port, to="nobody@police.example.org")
    unreachable = email_config(free_port())

    async def scenario(pool: AsyncConnectionPool) -> None:
        await write(pool, refusing, {"services": ("police",)})
        dispatcher = NotificationDispatcher(pool, refusing, db)
        try:
            assert await dispatcher.send_due() == 1
        finally:
            await dispatcher.aclose()
        await write(pool, unreachable, {"services": ("police",)})
        dispatcher = NotificationDispatcher(pool, unreachable, db)
        try:
            assert await dispatcher.send_due() == 1
        finally:
            await dispatcher.aclose()

    with_pool(db, scenario)
    refused, retried = outbox(db)
    assert refused["status"] == "failed" and "550" in refused["last_error"]
    assert "nobody@police.example.org" in refused["last_error"]
    assert retried["status"] == "pending" and retried["attempts"] == 1
    assert "connection error" in retried["last_error"]
    assert retried["next_attempt_at"] > dt.datetime.now(UTC)  # after the backoff
    assert sink.messages == []


# --- one sender -----------------------------------------------------------------------------------


class Tallied:
    """Wraps a real channel and counts what one dispatcher sent through it."""

    def __init__(self, inner: Channel) -> None:
        self.inner = inner
        self.name = inner.name
        self.sent: list[str] = []

    async def send(self, key: str, event: str, payload: Mapping[str, Any]) -> None:
        await self.inner.send(key, event, payload)
        self.sent.append(key)


def test_only_the_leader_sends_and_another_dispatcher_takes_over_when_it_stops(db, receiver):
    config = webhook_config(receiver.url)

    async def wait_sent(count: int) -> None:
        deadline = time.monotonic() + 5
        while sum(r["status"] == "sent" for r in outbox(db)) < count:
            assert time.monotonic() < deadline, outbox(db)
            await asyncio.sleep(0.05)

    async def scenario(pool: AsyncConnectionPool) -> tuple[Tallied, Tallied, list[bool]]:
        async with httpx.AsyncClient(timeout=5) as client:
            first, second = (Tallied(WebhookChannel(config.channels[0], client)) for _ in range(2))
            one = NotificationDispatcher(pool, config, db, channels={first.name: first}, tick_s=0.05,
                                         leader_retry_s=0.1)
            two = NotificationDispatcher(pool, config, db, channels={second.name: second}, tick_s=0.05,
                                         leader_retry_s=0.1)
            stop_one, stop_two = asyncio.Event(), asyncio.Event()
            task_one = asyncio.create_task(one.run(stop_one))
            await asyncio.sleep(0.3)  # the first takes the lead
            task_two = asyncio.create_task(two.run(stop_two))
            await asyncio.sleep(0.3)
            leading = [one.leading, two.leading]
            await write(pool, config, *({} for _ in range(5)))
            one.wake()
            two.wake()
            await wait_sent(5)
            stop_one.set()
            await task_one  # its lock goes with its connection
            await write(pool, config, {})
            await wait_sent(6)
            leading.append(two.leading)
            stop_two.set()
            await task_two
        return first, second, leading

    first, second, leading = with_pool(db, scenario)
    assert leading == [True, False, True]
    assert len(first.sent) == 5 and len(second.sent) == 1
    keys = [r.headers["Citypilot-Delivery"] for r in receiver.received]
    assert len(keys) == len(set(keys)) == 6
