"""Alarms inside a citypilot process: the rules in force, the engine, the notification dispatcher.

Every ``citypilot serve`` process runs them; the engine and the dispatcher each elect one leader in
the whole deployment (PostgreSQL advisory locks), the others wait to take over.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from psycopg_pool import AsyncConnectionPool

from citypilot.config import Config
from citypilot.equipment.catalog import Catalog
from citypilot.notify.config import NotifyConfig, load_notify_config
from citypilot.notify.dispatcher import NotificationDispatcher

from .changes import ensure_changes_stream
from .rules_source import RuleSource
from .service import AlarmService

log = logging.getLogger("citypilot.alarms")


class AlarmRuntime:
    def __init__(self, config: Config, pool: AsyncConnectionPool, nc: Any, catalog: Catalog, database_url: str) -> None:
        # Both raise with file, line and reason: a control centre must not start with rules it cannot read.
        self.rules = RuleSource(config.alarms_rules_dir, catalog)
        self.notify_config: NotifyConfig = load_notify_config(Path(config.notify_config).expanduser()
                                                              if config.notify_config else None)
        self.config = config
        self.nc = nc
        self.service = AlarmService(pool, nc, catalog, self.rules, self.notify_config, database_url) \
            if config.alarms_engine else None
        self.dispatcher = NotificationDispatcher(pool, self.notify_config, database_url) \
            if config.alarms_engine and self.notify_config.channels else None
        if self.service is not None and self.dispatcher is not None:
            self.service.after_commit = self.dispatcher.wake
        self.stop_event = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def prepare(self) -> None:
        """Before the ingest workers publish: the stream that keeps their changes for the engine."""
        await ensure_changes_stream(self.nc, replicas=self.config.ingest_stream_replicas)

    async def start(self) -> None:
        if self.service is not None:
            self.tasks.append(asyncio.create_task(self.service.run(self.stop_event), name="alarm-engine"))
        if self.dispatcher is not None:
            self.tasks.append(asyncio.create_task(self.dispatcher.run(self.stop_event), name="notifications"))

    async def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        if self.tasks:
            _, pending = await asyncio.wait(self.tasks, timeout=timeout)
            for task in pending:
                task.cancel()
        if self.dispatcher is not None:
            await self.dispatcher.aclose()

    def wake_notifications(self) -> None:
        """After an operator's action that notifies (a clear): send now rather than at the next tick.
        (Only the dispatcher of the leading process sends; elsewhere its next tick does.)"""
        if self.dispatcher is not None:
            self.dispatcher.wake()
