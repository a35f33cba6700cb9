"""Fixtures for the ingestion tests: talk to citypilot as devices do, look at it as the control room does.

``city`` is a small harness on the real application of the ``stack`` under test: it imports the test's
own assets (ids prefixed with the test's ``uid``), publishes device messages straight to the JetStream
subjects the MQTT listener feeds (works on both backends), posts to the HTTP ingest endpoint, and polls
the twin and dead-letter APIs until what is expected shows up, with a deadline rather than fixed sleeps.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import re
import time
from typing import Any, Callable, Iterable, TypeVar

import psycopg
import pytest

from citypilot.ingest import protocol

T = TypeVar("T")
LAT, LON = 47.3220, 5.0415  # central Dijon
PROBLEM_JSON = "application/problem+json"
_METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso(moment: dt.datetime) -> str:
    return moment.isoformat()


def reading(ts: dt.datetime | None = None, **values: Any) -> bytes:
    """One device's reading as it goes on the wire."""
    body: dict[str, Any] = {"values": values}
    if ts is not None:
        body["ts"] = iso(ts)
    return json.dumps(body).encode()


def eventually(probe: Callable[[], T], what: str, timeout: float = 10.0, interval: float = 0.05) -> T:
    """Call ``probe`` until it returns something truthy; fail with the last value after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what} (last seen: {last!r})"[:3000])
        time.sleep(interval)


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0].strip() == PROBLEM_JSON, response.headers
    body = response.json()
    assert body["status"] == status and body["detail"]
    return body


class City:
    """The application under test, seen by devices and by the control room."""

    def __init__(self, stack: Any, client: Any, tokens: dict[str, str], uid: str) -> None:
        self.stack = stack
        self.client = client
        self.tokens = tokens
        self.uid = uid

    # --- people -------------------------------------------------------------------------------------
    def headers(self, role: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def id(self, suffix: str) -> str:
        return f"{self.uid}-{suffix}"

    def import_assets(self, *rows: dict[str, Any]) -> list[str]:
        """Import assets (dicts with id suffix, kind, and optional lat, lon, reported_by suffix) as admin."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["id", "kind", "name", "lat", "lon", "reported_by"])
        ids = []
        for row in rows:
            asset_id = self.id(row["id"])
            ids.append(asset_id)
            writer.writerow([asset_id, row["kind"], f"{row['kind']} {asset_id}", row.get("lat", LAT),
                             row.get("lon", LON), self.id(row["reported_by"]) if row.get("reported_by") else ""])
        r = self.client.post("/api/v1/assets/import", content=out.getvalue().encode(),
                             headers={**self.headers(), "Content-Type": "text/csv"})
        assert r.status_code == 200, r.text
        assert r.json()["created"] == len(rows), r.text
        return ids

    def credential(self, asset_id: str) -> tuple[str, str]:
        r = self.client.post(f"/api/v1/assets/{asset_id}/credentials", headers=self.headers())
        assert r.status_code == 201, r.text
        return r.json()["credential_id"], r.json()["token"]

    # --- devices ------------------------------------------------------------------------------------
    def publish(self, messages: Iterable[tuple[str, str, bytes]], headers: dict[str, str] | None = None) -> list[int]:
        """Publish (device, channel, payload) to the ingest stream as the MQTT listener would; return the
        stream sequences JetStream acknowledged (every message is durably in the stream on return)."""
        return asyncio.run(publish_async(self.stack.endpoints.nats_url, list(messages), headers))

    def post(self, token: str | None, messages: list[dict[str, Any]] | bytes) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if isinstance(messages, bytes):
            return self.client.post("/api/v1/ingest", content=messages,
                                    headers={**headers, "Content-Type": "application/json"})
        return self.client.post("/api/v1/ingest", json={"messages": messages}, headers=headers)

    def introduce(self, gateway: str) -> None:
        """The gateway reports for itself first and the test waits until it is applied: a known starting
        point for tests about what it reports for. (A gateway's very first batch works too:
        test_ingest.py::test_a_new_gateways_first_batch_applies_its_lights.)"""
        self.publish([(gateway, "telemetry", reading(utcnow() - dt.timedelta(minutes=30), mains="ok"))])
        self.wait_state(gateway, lambda s: True, "the gateway known to the worker")

    # --- the control room ---------------------------------------------------------------------------
    def twin(self, asset_id: str, role: str = "admin") -> dict[str, Any]:
        r = self.client.get(f"/api/v1/twin/{asset_id}", headers=self.headers(role))
        assert r.status_code == 200, r.text
        return r.json()

    def state(self, asset_id: str) -> dict[str, Any] | None:
        return self.twin(asset_id)["state"]

    def wait_state(self, asset_id: str, predicate: Callable[[dict[str, Any]], bool], what: str,
                   timeout: float = 10.0) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            state = self.state(asset_id)
            return state if state is not None and predicate(state) else None
        return eventually(probe, f"{asset_id}: {what}", timeout)

    def series(self, asset_id: str, role: str = "admin", **params: Any) -> Any:
        params.setdefault("from", iso(utcnow() - dt.timedelta(days=8)))
        params.setdefault("to", iso(utcnow() + dt.timedelta(hours=1)))
        return self.client.get(f"/api/v1/twin/{asset_id}/series", params=params, headers=self.headers(role))

    def points(self, asset_id: str, **params: Any) -> list[dict[str, Any]]:
        r = self.series(asset_id, **params)
        assert r.status_code == 200, r.text
        return r.json()["points"]

    def dead_letters(self, device: str, role: str = "admin", **params: Any) -> list[dict[str, Any]]:
        r = self.client.get("/api/v1/ingest/dead-letters", params={"device": device, "limit": 1000, **params},
                            headers=self.headers(role))
        assert r.status_code == 200, r.text
        return r.json()["items"]

    def wait_dead_letters(self, device: str, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        items = eventually(lambda: (lambda got: got if len(got) >= count else None)(self.dead_letters(device)),
                           f"{count} dead letter(s) for {device}", timeout)
        assert len(items) == count, items
        return items

    def metrics(self) -> dict[tuple[str, str], float]:
        r = self.client.get("/metrics")
        assert r.status_code == 200, r.text
        out = {}
        for line in r.text.splitlines():
            match = _METRIC_LINE.match(line)
            if match:
                out[(match.group(1), match.group(2) or "")] = float(match.group(3))
        return out

    def sql(self, query: str, params: Any = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.stack.endpoints.database_url, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []


async def publish_async(nats_url: str, messages: list[tuple[str, str, bytes]], headers: dict[str, str] | None = None,
                        concurrency: int = 500) -> list[int]:
    import nats

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        seqs: list[int] = []
        for start in range(0, len(messages), concurrency):
            acks = await asyncio.gather(*(js.publish(protocol.subject(device, channel), payload, headers=headers,
                                                     timeout=10)
                                          for device, channel, payload in messages[start:start + concurrency]))
            seqs += [ack.seq for ack in acks]
        return seqs
    finally:
        await nc.close()


@pytest.fixture
def city(stack: Any, app_client: Any, tokens: dict[str, str], uid: str) -> City:
    return City(stack, app_client, tokens, uid)
