"""``citypilot bench import``: the registry import, measured on a throw-away database.

Three timed runs of the real import path (parse, validate, one transaction): a first import that
creates every asset, the same file again (must change nothing), and the file with 1 % of names changed.
Embedded by default (a temporary data directory); with CITYPILOT_DATABASE_URL, a temporary database
is created on that server and dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg_pool import AsyncConnectionPool

from citypilot.config import Config
from citypilot.db.migrations import migrate
from citypilot.equipment.catalog import default_catalog
from citypilot.geo.communes import metropole
from citypilot.registry import service
from citypilot.runtime.infrastructure import Infrastructure

from .synthetic import registry_csv


@contextlib.contextmanager
def throwaway_database(config: Config) -> Iterator[tuple[str, str]]:
    """(url, description) of an empty database that disappears afterwards."""
    if config.database_url is None:
        with tempfile.TemporaryDirectory(prefix="citypilot-bench-") as tmp:
            infra = Infrastructure(replace(config, data_dir=Path(tmp)), with_nats=False)
            try:
                url = infra.start().database_url
                yield url, "embedded"
            finally:
                infra.stop()
        return
    name = f"citypilot_bench_{os.getpid()}"
    with psycopg.connect(config.database_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(config.database_url)
    url = urlunsplit(parts._replace(path=f"/{name}"))
    try:
        migrate(url)
        yield url, "external"
    finally:
        with psycopg.connect(config.database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_import_benchmark(config: Config, count: int, seed: int) -> dict[str, Any]:
    catalog, communes = default_catalog(), metropole()
    data = registry_csv(communes, count, seed)
    changed = data.decode().splitlines()
    step = 100
    for i in range(1, len(changed), step):
        first, rest = changed[i].split(",", 1)
        kind, name, rest2 = rest.split(",", 2)
        changed[i] = ",".join([first, kind, name + " (renamed)", rest2])
    changed_data = ("\n".join(changed) + "\n").encode()
    figures: dict[str, Any] = {"benchmark": "registry_import", "assets": count, "file_bytes": len(data)}

    t = time.perf_counter()
    service.parse_and_validate(data, "csv", catalog, communes)
    figures["parse_validate_s"] = round(time.perf_counter() - t, 3)

    with throwaway_database(config) as (url, where):
        async def main() -> None:
            async with AsyncConnectionPool(url, min_size=1, max_size=2, open=False) as pool:
                await pool.open(wait=True)
                async with pool.connection() as conn:
                    version = conn.info.server_version
                figures["database"] = f"{where} PostgreSQL {version // 10000}.{version % 10000}"
                for label, payload in (("first_import", data), ("reimport_same", data), ("reimport_1pct_changed", changed_data)):
                    t0 = time.perf_counter()
                    result = await service.import_file(pool, payload, "csv", actor="bench", source="bench",
                                                       catalog=catalog, communes=communes)
                    elapsed = time.perf_counter() - t0
                    figures[f"{label}_s"] = round(elapsed, 3)
                    figures[f"{label}_result"] = result.as_dict()
                figures["first_import_assets_per_s"] = round(count / figures["first_import_s"])
        asyncio.run(main())
    figures["target_first_import_s"] = 10
    figures["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    return figures
