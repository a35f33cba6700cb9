"""``citypilot demo``: the control centre on embedded defaults, with the simulated metropole living in it.

One process: it starts the embedded PostgreSQL and NATS, serves the API (ingest workers included), imports
the simulated city's registry (idempotent: a second run changes nothing), creates or resets the ``demo``
login, and runs the simulator against the embedded MQTT listener. Ctrl-C or SIGTERM stops the simulator,
the server and the embedded servers, in that order.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from pathlib import Path

import platformdirs
import typer
import uvicorn

from citypilot.config import Config
from citypilot.runtime.errors import StartupError
from citypilot.runtime.infrastructure import Endpoints, Infrastructure
from citypilot.sim.city import build_city
from citypilot.sim.clock import SimClock
from citypilot.sim.runner import MqttTarget, SimError
from citypilot.sim.simulation import Simulation

from .common import fail, require_free_http_port, sigterm_as_interrupt
from .sim import SimOptions, describe, run_city

log = logging.getLogger("citypilot.demo")
DEMO_USER = "demo"
DEMO_ROLE = "supervisor"  # sees every domain, restricted ones included, and may command; manages no accounts


def demo_data_dir() -> Path:
    """Beside the usual data directory, never in it: the demo city must not land in a real registry."""
    return Path(platformdirs.user_data_dir("citypilot-demo", appauthor=False))


async def _prepare(config: Config, endpoints: Endpoints, options: SimOptions) -> tuple[Simulation, str, dict[str, int]]:
    """Import the city and set the demo login; return the simulation, the password and the import counts."""
    from psycopg_pool import AsyncConnectionPool

    from citypilot.auth import accounts
    from citypilot.equipment.catalog import default_catalog
    from citypilot.geo.communes import metropole
    from citypilot.registry.service import import_file
    from citypilot.sim.registry_file import registry_bytes

    catalog, communes = default_catalog(), metropole()
    city = await asyncio.to_thread(build_city, options.seed, options.scale, communes)
    password = secrets.token_urlsafe(12)
    async with AsyncConnectionPool(endpoints.database_url, min_size=1, max_size=2, open=False) as pool:
        await pool.open(wait=True, timeout=15)
        result = await import_file(pool, registry_bytes(city), "csv", actor="citypilot-demo", source="demo:simulated city",
                                   catalog=catalog, communes=communes)
        async with pool.connection() as conn:
            if await (await conn.execute("SELECT 1 FROM users WHERE username = %s", (DEMO_USER,))).fetchone():
                await accounts.set_password(conn, DEMO_USER, password)  # and its old sessions are revoked
            else:
                await accounts.add_user(conn, DEMO_USER, DEMO_ROLE, password, services=dict(catalog.services),
                                        display_name="Demo supervisor")
    counts = {"created": result.created, "updated": result.updated, "unchanged": result.unchanged}
    return Simulation(city, SimClock(options.start, options.speed), options.scenario, options.seed), password, counts


async def _main(config: Config, endpoints: Endpoints, options: SimOptions, began: float) -> None:
    from citypilot.api.app import create_app
    from citypilot.runtime.embedded_nats import mqtt_login

    sim, password, counts = await _prepare(config, endpoints, options)
    app = create_app(config, endpoints)
    server = uvicorn.Server(uvicorn.Config(app, host=config.http_host, port=config.http_port, log_config=None,
                                           access_log=False, lifespan="on", server_header=False))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving  # it failed to start: raise why
            return
        await asyncio.sleep(0.05)
    url = f"http://{config.http_host}:{config.http_port}"
    target = MqttTarget("127.0.0.1", config.mqtt_port, *mqtt_login(config.mqtt_port))
    city = asyncio.create_task(run_city(sim, target, options, quiet=True, handle_signals=False))
    await asyncio.sleep(0.5)
    if city.done():
        await city  # the simulator could not connect: raise why
    typer.echo(
        f"\ncitypilot demo ready in {time.monotonic() - began:.1f} s\n"
        f"  control room    {url}/   (the live map; API {url}/api/v1, OpenAPI {url}/api/openapi.json)\n"
        f"  login           {DEMO_USER} / {password}   (role {DEMO_ROLE}; a new password each run)\n"
        f"  city            {describe(sim.city)}\n"
        f"                  registry: {counts['created']:,} created, {counts['updated']:,} updated, "
        f"{counts['unchanged']:,} unchanged\n"
        f"  simulator       scenario {options.scenario}, speed {options.speed:g}, devices on {endpoints.mqtt_url}\n"
        f"  data            {config.data_dir}\n"
        f"Ctrl-C stops everything.\n"
        f"Try:  TOKEN=$(curl -s -X POST {url}/api/v1/auth/login -H 'Content-Type: application/json' "
        f"-d '{{\"username\": \"{DEMO_USER}\", \"password\": \"{password}\"}}' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')\n"
        f"      curl -s '{url}/api/v1/twin?kind=bus&limit=3' -H \"Authorization: Bearer $TOKEN\"\n"
        f"      curl -s '{url}/api/v1/alarms?limit=5' -H \"Authorization: Bearer $TOKEN\"      # open alarms\n"
        f"      curl -s '{url}/api/v1/journal?limit=5' -H \"Authorization: Bearer $TOKEN\"     # what happened\n"
        f"      live feed: ws://{url.split('://', 1)[1]}/api/v1/live?access_token=$TOKEN  (docs/integrators/live-feed.md)\n")
    # uvicorn stops on Ctrl-C/SIGTERM; the simulator goes with it.
    done, _ = await asyncio.wait({serving, city}, return_when=asyncio.FIRST_COMPLETED)
    for task in (city, serving):
        if task not in done:
            if task is city:
                city.cancel()  # the server stopped (Ctrl-C, SIGTERM): the city goes with it
            else:
                server.should_exit = True
    await asyncio.gather(city, serving, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def run_demo(config: Config, options: SimOptions) -> None:
    began = time.monotonic()
    if config.database_url or config.nats_url:
        fail("citypilot demo runs on its own embedded servers: unset CITYPILOT_DATABASE_URL and CITYPILOT_NATS_URL "
             "(the simulated city must not be imported into a real registry)", 2)
    require_free_http_port(config, "--port")
    infra = Infrastructure(config)
    try:
        with sigterm_as_interrupt():
            typer.echo(f"citypilot demo: starting the control centre (data in {config.data_dir}) ...")
            endpoints = infra.start()
            asyncio.run(_main(config, endpoints, options, began))
    except StartupError as exc:
        fail(str(exc))
    except SimError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass
    finally:
        infra.stop()
        typer.echo("citypilot demo stopped")
