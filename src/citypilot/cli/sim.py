"""``citypilot sim``: run the virtual city against a citypilot's MQTT endpoint, or write its registry."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
from dataclasses import dataclass
from pathlib import Path

import typer

from citypilot.config import Config
from citypilot.sim.city import MAX_SCALE, City, build_city
from citypilot.sim.clock import PARIS, SimClock, local
from citypilot.sim.runner import MqttTarget, Runner, SimError, Stats
from citypilot.sim.scenarios import SCENARIOS
from citypilot.sim.simulation import Simulation

from .common import fail

MAX_SPEED = 3600.0  # an hour a second: faster, a bus would jump kilometres between two positions


@dataclass(frozen=True)
class SimOptions:
    seed: int
    scale: int
    speed: float
    start: dt.datetime
    scenario: str
    connections: int
    duration_s: float | None


def parse_start(text: str | None) -> dt.datetime:
    """``--start``: an ISO 8601 date or date-time; without a time zone it is Dijon's local time."""
    if not text:
        return dt.datetime.now(dt.timezone.utc)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        fail(f"--start {text!r}: expected an ISO 8601 date and time, e.g. 2026-01-15T17:30 or 2026-01-15T17:30+01:00", 2)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=PARIS)
    if not dt.datetime(1971, 1, 1, tzinfo=dt.timezone.utc) <= moment <= dt.datetime(2200, 1, 1, tzinfo=dt.timezone.utc):
        fail(f"--start {text!r}: out of range (1971 to 2200)", 2)
    return moment


def check_options(scale: int, speed: float, scenario: str) -> None:
    """Bad options are refused before anything starts, with what is accepted."""
    if scenario not in SCENARIOS:
        fail(f"unknown scenario {scenario!r}: one of {', '.join(SCENARIOS)}", 2)
    if not 1 <= scale <= MAX_SCALE:
        fail(f"--scale {scale}: must be a whole number from 1 (Dijon) to {MAX_SCALE}", 2)
    if not 0 < speed <= MAX_SPEED:  # also refuses NaN
        fail(f"--speed {speed}: must be above 0 and at most {MAX_SPEED:g} (1 is real time)", 2)


def describe(city: City) -> str:
    counts = city.counts()
    return ", ".join(f"{n:,} {kind}" for kind, n in counts.items())


def default_target(config: Config, username: str | None, password: str | None) -> MqttTarget:
    """The MQTT endpoint of the configured citypilot: its embedded broker (logged in as citypilot's own
    user, read from the data directory) or the configured ``mqtt_url``."""
    if config.nats_url is None:
        from citypilot.runtime.embedded_nats import INTERNAL_SECRET_FILE, internal_login

        if username:
            return MqttTarget("127.0.0.1", config.mqtt_port, username, password)
        if not (config.data_dir / "nats" / INTERNAL_SECRET_FILE).is_file():  # read it, never create it
            fail(f"no embedded citypilot in {config.data_dir}: start `citypilot serve` first, or give --mqtt", 1)
        try:
            user, secret = internal_login(config.data_dir)
        except (OSError, ValueError):
            fail(f"no embedded citypilot in {config.data_dir}: start `citypilot serve` first, or give --mqtt", 1)
        return MqttTarget("127.0.0.1", config.mqtt_port, user, secret)
    if not config.mqtt_url:
        fail("NATS is external and no MQTT endpoint is configured: give --mqtt (or set CITYPILOT_MQTT_URL)", 2)
    return MqttTarget.parse(config.mqtt_url, username, password)


def status_line(sim: Simulation, stats: Stats, elapsed_s: float) -> str:
    rate = stats.messages / elapsed_s if elapsed_s else 0.0
    readings = stats.readings / elapsed_s if elapsed_s else 0.0
    return (f"{local(sim.clock.now()):%Y-%m-%d %H:%M} Dijon | {stats.messages:,} messages ({rate:,.0f}/s), "
            f"{stats.readings:,} readings ({readings:,.0f}/s), {stats.commands} commands")


async def run_city(sim: Simulation, target: MqttTarget, options: SimOptions, *, quiet: bool = False,
                   handle_signals: bool = True) -> Stats:
    """Connect, run until Ctrl-C/SIGTERM (when ``handle_signals``) or the duration, disconnect."""
    runner = Runner(sim, target, options.connections)
    await runner.connect()
    if handle_signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, runner.stop)
    if not quiet:
        typer.echo(f"citypilot sim: {describe(sim.city)} on {target}; scenario {options.scenario}, speed {options.speed:g}, "
                   f"simulated start {local(options.start):%Y-%m-%d %H:%M} (Dijon). Ctrl-C stops it.")

    def report(stats: Stats) -> None:
        if not quiet:
            typer.echo(status_line(sim, stats, runner.elapsed()))
    try:
        return await runner.run(options.duration_s, report)
    finally:
        await runner.close()
        if not quiet:
            typer.echo(status_line(sim, runner.stats, runner.elapsed()) + " - stopped")


def run_sim(options: SimOptions, target: MqttTarget) -> None:
    """Run the city until Ctrl-C (the options were checked by ``check_options``)."""
    city = build_city(options.seed, options.scale)
    sim = Simulation(city, SimClock(options.start, options.speed), options.scenario, options.seed)
    try:
        asyncio.run(run_city(sim, target, options))
    except SimError as exc:
        fail(str(exc), 1)


def write_registry(path: Path, fmt: str | None, seed: int, scale: int) -> None:
    from citypilot.sim.registry_file import registry_bytes

    fmt = fmt or ("geojson" if path.suffix.lower() in (".geojson", ".json") else "csv")
    if fmt not in ("csv", "geojson"):
        fail(f"--format {fmt!r}: csv or geojson", 2)
    city = build_city(seed, scale)
    data = registry_bytes(city, fmt)
    try:
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)  # a reader never sees half a registry
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}", 1)
    typer.echo(f"wrote {path} ({fmt}, {len(city.assets):,} assets: {describe(city)}); import it with "
               f"`citypilot assets import {path}`")
