"""The simulator's MQTT edge: it puts what the simulated devices say on the broker, and hands them their commands.

Each device's messages always leave through the same connection (chosen from its id), at QoS 1, so a
device's messages arrive in the order it sent them, as from a real device. Commands arrive on
``citypilot/cmd/v1/{device}``; the device's acknowledgement and its new state go back through the
protocol like any report. Nothing here touches citypilot's database.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import time
import zlib
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import unquote, urlsplit

import gmqtt
import msgspec
from gmqtt.mqtt.constants import MQTTv311

from .model import Outgoing
from .simulation import Simulation

log = logging.getLogger("citypilot.sim")
TICK_S = 0.25
IN_FLIGHT_LIMIT = 20_000  # QoS 1 messages awaiting the broker's PUBACK, per connection, before the city waits
COMMAND_TOPIC = "citypilot/cmd/v1/+"
_encode = msgspec.json.Encoder().encode


class SimError(Exception):
    """The simulator cannot run (the broker is unreachable, the login is refused)."""


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str, username: str | None = None, password: str | None = None) -> "MqttTarget":
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "tcp"):
            raise SimError(f"--mqtt {url!r}: expected mqtt://[user:password@]host:port (TLS is not supported yet)")
        try:
            port = parts.port or 1883
        except ValueError as exc:
            raise SimError(f"--mqtt {url!r}: {exc}") from None
        if not parts.hostname:
            raise SimError(f"--mqtt {url!r}: no host")
        return cls(parts.hostname, port, username or (unquote(parts.username) if parts.username else None),
                   password or (unquote(parts.password) if parts.password else None))

    def __str__(self) -> str:
        return f"mqtt://{self.username + '@' if self.username else ''}{self.host}:{self.port}"


@dataclass
class Stats:
    started: float = field(default_factory=time.monotonic)
    messages: int = 0
    readings: int = 0
    commands: int = 0
    max_lag_s: float = 0.0
    by_channel: dict[str, int] = field(default_factory=dict)

    def count(self, message: Outgoing) -> None:
        self.messages += 1
        self.readings += len(message.payload.get("readings", ())) or (1 if message.channel in ("telemetry", "state") else 0)
        self.by_channel[message.channel] = self.by_channel.get(message.channel, 0) + 1


class Runner:
    def __init__(self, sim: Simulation, target: MqttTarget, connections: int = 4) -> None:
        self.sim = sim
        self.target = target
        self.connections = connections
        self.clients: list[gmqtt.Client] = []
        self.stats = Stats()
        self._stop = asyncio.Event()
        self._run_start: float | None = None

    def elapsed(self) -> float:
        """Wall seconds since ``run`` started."""
        return 0.0 if self._run_start is None else time.monotonic() - self._run_start

    async def connect(self) -> None:
        for index in range(self.connections):
            client = gmqtt.Client(f"citypilot-sim-{os.getpid()}-{index}", clean_session=True)
            if self.target.username:
                client.set_auth_credentials(self.target.username, self.target.password)
            if index == 0:
                client.on_message = self._on_command
            try:
                await asyncio.wait_for(client.connect(self.target.host, self.target.port, keepalive=30, version=MQTTv311), 10)
            except (OSError, asyncio.TimeoutError) as exc:
                await self.close()
                raise SimError(f"cannot reach the MQTT broker at {self.target}: {exc or 'timed out'}") from None
            except Exception as exc:  # gmqtt's MQTTConnectError: the broker answered and refused
                await self.close()
                code = getattr(exc, "_code", None)
                why = "not authorised (check the user name and password)" if code in (4, 5) else str(exc)
                raise SimError(f"the MQTT broker at {self.target} refused the simulator: {why}") from None
            self.clients.append(client)
        self.clients[0].subscribe(COMMAND_TOPIC, qos=1)

    def _client_for(self, device: str) -> gmqtt.Client:
        return self.clients[zlib.crc32(device.encode()) % len(self.clients)]

    def publish(self, messages: list[Outgoing]) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        for message in messages:
            payload = message.payload if "ts" in message.payload else {"ts": now, **message.payload}
            self._client_for(message.device).publish(f"citypilot/v1/{message.device}/{message.channel}",
                                                     _encode(payload), qos=1)
            self.stats.count(message)

    async def _on_command(self, client: gmqtt.Client, topic: str, payload: bytes, qos: int, properties: dict) -> int:
        device = topic.rsplit("/", 1)[-1]
        self.stats.commands += 1
        try:
            self.publish(self.sim.command(device, payload))
        except Exception:  # a command must never stop the city
            log.exception("command not handled", extra={"device": device})
        return 0

    def in_flight(self) -> int:
        return max((len(c._persistent_storage._messages) for c in self.clients), default=0)

    async def run(self, duration_s: float | None = None, report: Callable[[Stats], None] | None = None,
                  report_every_s: float = 10.0) -> Stats:
        """Run the city until ``stop()`` (or for ``duration_s`` wall seconds), a step every ``TICK_S``.

        ``Stats.max_lag_s`` says how far behind its ticks the city fell: a simulator that cannot keep up
        with its city (too large a scale for the machine) shows it there."""
        start = self._run_start = time.monotonic()
        next_report = start + report_every_s
        tick = 0
        while not self._stop.is_set():
            now = time.monotonic()
            lag = now - (start + tick * TICK_S)
            self.stats.max_lag_s = max(self.stats.max_lag_s, lag)
            wall = now - start
            if duration_s is not None and wall >= duration_s:
                break
            self.publish(self.sim.step(wall))
            while self.in_flight() > IN_FLIGHT_LIMIT and not self._stop.is_set():  # the broker is behind: wait
                await asyncio.sleep(0.05)
            if report and time.monotonic() >= next_report:
                report(self.stats)
                next_report += report_every_s
            tick = max(tick + 1, int((time.monotonic() - start) / TICK_S))  # late: skip ticks, never pile up
            try:
                await asyncio.wait_for(self._stop.wait(), max(0.0, start + tick * TICK_S - time.monotonic()))
            except asyncio.TimeoutError:
                pass
        return self.stats

    def stop(self) -> None:
        self._stop.set()

    async def close(self, wait_s: float = 5.0) -> None:
        """Wait (a little) for the broker to acknowledge what was sent, then disconnect."""
        deadline = time.monotonic() + wait_s
        while self.clients and self.in_flight() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for client in self.clients:
            try:
                await asyncio.wait_for(client.disconnect(), 2)
            except Exception:
                pass
        self.clients = []
