"""Bring up what citypilot needs (PostgreSQL, NATS), embedded or external, and take it down again.

``Infrastructure.start()`` returns the endpoints to connect to; with no database or NATS URL set, it
starts the private servers first. It also applies the schema migrations. Failures become a
``StartupError`` whose message says what is wrong and which setting to change: no traceback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import psycopg

from citypilot.auth.broker_users import load_device_users
from citypilot.config import Config, mask_url
from citypilot.db.migrations import MigrationError, migrate

from .embedded_nats import EmbeddedNats, NatsPorts, client_url
from .embedded_postgres import EmbeddedPostgres
from .errors import StartupError
from .lock import DataDirLock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoints:
    database_url: str
    nats_url: str | None  # with the embedded server, carries the internal user's password: print it masked
    mqtt_url: str | None
    embedded_database: bool
    embedded_nats: bool
    # The embedded nats-server when this process started it: the one that keeps its device users
    # up to date. None with an external NATS.
    nats_server: EmbeddedNats | None = field(default=None, compare=False, repr=False)

    def __repr__(self) -> str:  # the URLs may carry passwords: a repr ends up in logs and test reports
        return (f"Endpoints(database_url={mask_url(self.database_url)!r}, "
                f"nats_url={mask_url(self.nats_url) if self.nats_url else None!r}, mqtt_url={self.mqtt_url!r}, "
                f"embedded_database={self.embedded_database}, embedded_nats={self.embedded_nats})")


def nats_url_for(config: Config) -> str:
    """The NATS URL a citypilot process connects to: the configured one, or the embedded server's
    (started by ``citypilot serve``), logged in as citypilot's internal user."""
    if config.nats_url is not None:
        return config.nats_url
    return client_url(config.nats_host, config.nats_port, config.data_dir)


def check_database(url: str, embedded: bool) -> None:
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            version = conn.info.server_version
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        where = "the embedded PostgreSQL server" if embedded else f"PostgreSQL at {mask_url(url)}"
        raise StartupError(f"cannot connect to {where}: {reason}\n"
                           "Is the server running and reachable? Check CITYPILOT_DATABASE_URL "
                           "(unset it to use the embedded server).") from None
    if version < 150000:
        raise StartupError(f"PostgreSQL {version // 10000} is too old: citypilot needs PostgreSQL 15 or newer.")


class Infrastructure:
    """Owns the embedded servers (if any) for the life of one citypilot command."""

    def __init__(self, config: Config, *, with_nats: bool = True, apply_migrations: bool = True) -> None:
        self.config = config
        self.with_nats = with_nats
        self.apply_migrations = apply_migrations
        self._postgres: EmbeddedPostgres | None = None
        self._nats: EmbeddedNats | None = None
        self._lock: DataDirLock | None = None
        self.endpoints: Endpoints | None = None

    def start(self) -> Endpoints:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Endpoints:
        config = self.config
        if self.with_nats and config.embedded_nats:
            self._lock = DataDirLock(config.data_dir)
            self._lock.acquire()
        if config.embedded_database:
            self._postgres = EmbeddedPostgres(config.data_dir)
            database_url = self._postgres.start()
            log.info("embedded PostgreSQL ready", extra={"pgdata": str(self._postgres.pgdata)})
        else:
            assert config.database_url is not None
            database_url = config.database_url
        check_database(database_url, config.embedded_database)
        if self.apply_migrations:
            try:
                applied = migrate(database_url)
            except MigrationError as exc:
                raise StartupError(f"database schema: {exc}") from None
            except psycopg.Error as exc:
                raise StartupError(f"database schema migration failed: {str(exc).strip()}") from None
            if applied:
                log.info("schema migrations applied", extra={"versions": applied})

        nats_url = mqtt_url = None
        if self.with_nats:
            if config.embedded_nats:
                try:  # devices can connect as soon as the MQTT port opens
                    device_users = load_device_users(database_url)
                except psycopg.Error as exc:
                    raise StartupError(f"cannot read the device credentials: {str(exc).strip()}") from None
                self._nats = EmbeddedNats(config.data_dir, NatsPorts(config.nats_host, config.nats_port, config.mqtt_port,
                                                                     config.nats_monitor_port, config.mqtt_host),
                                          device_users)
                nats_url = self._nats.start()
                mqtt_url = self._nats.mqtt_url
                log.info("embedded NATS ready", extra={"nats": mask_url(nats_url), "mqtt": mqtt_url,
                                                       "device_users": len(device_users)})
            else:
                nats_url = config.nats_url
                mqtt_url = config.mqtt_url
        self.endpoints = Endpoints(database_url, nats_url, mqtt_url, config.embedded_database, config.embedded_nats,
                                   self._nats)
        return self.endpoints

    def stop(self) -> None:
        """Stop what we started, NATS first (it depends on nothing), then PostgreSQL."""
        if self._nats is not None:
            self._nats.stop()
            self._nats = None
        if self._postgres is not None:
            self._postgres.stop()
            self._postgres = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Endpoints:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
