"""``citypilot serve``: bring up the infrastructure, then the HTTP server, and stop both cleanly."""

from __future__ import annotations

import asyncio
import logging

import typer
import uvicorn

from citypilot.bus.connection import check_nats
from citypilot.config import Config
from citypilot.runtime.errors import StartupError
from citypilot.runtime.infrastructure import Infrastructure

from .common import fail, require_free_http_port, sigterm_as_interrupt

log = logging.getLogger("citypilot.serve")


def check_alarm_files(config: Config) -> None:
    """The alarm rules, the notification channels and the request categories, read before anything
    starts: a control centre must not start with files it cannot read (file, line and reason, exit 2)."""
    from pathlib import Path

    from citypilot.alarms.rules import RuleError
    from citypilot.alarms.rules_source import RuleSource
    from citypilot.citizens.services import ServicesError, load_services
    from citypilot.equipment.catalog import default_catalog
    from citypilot.notify.config import NotifyConfigError, load_notify_config

    try:
        RuleSource(config.alarms_rules_dir, default_catalog())
        load_notify_config(Path(config.notify_config).expanduser() if config.notify_config else None)
        load_services(config.requests_services_file, dict(default_catalog().services))
    except (RuleError, NotifyConfigError, ServicesError) as exc:
        fail(str(exc), 2)


def tune_gc() -> None:
    """Keep the garbage collector off the request path: what start-up built (modules, the app, the
    catalogue, the communes) lives as long as the process, so it is frozen out of every later collection,
    and the youngest generation is collected every 20,000 allocations instead of 700. Why: with the
    default settings, collections walked the start-up objects again and again and showed as the slow
    tail of the API's answers (measured with ``citypilot bench requests``)."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def run_server(config: Config) -> None:
    require_free_http_port(config)
    check_alarm_files(config)
    infra = Infrastructure(config)
    # uvicorn handles SIGINT/SIGTERM while it runs, shuts down gracefully, then re-raises the signal:
    # with SIGTERM turned into KeyboardInterrupt, that lands in the ``finally`` that stops the servers.
    try:
        with sigterm_as_interrupt():
            endpoints = infra.start()
            if endpoints.nats_url:
                asyncio.run(check_nats(endpoints.nats_url))
            from citypilot.api.app import create_app

            app = create_app(config, endpoints)
            server = uvicorn.Server(uvicorn.Config(app, host=config.http_host, port=config.http_port, log_config=None,
                                                   access_log=False, lifespan="on", server_header=False))
            tune_gc()
            typer.echo(f"citypilot serving on http://{config.http_host}:{config.http_port} "
                       f"(devices: {endpoints.mqtt_url or 'MQTT endpoint not configured'}); Ctrl-C stops it.")
            server.run()
    except StartupError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass
    finally:
        infra.stop()
        log.info("citypilot stopped")
