"""Versioned schema migrations, applied at start.

Each migration is ``migrations/NNNN_name.sql``, applied once, in order, each in its own transaction,
and recorded with its checksum. A PostgreSQL advisory lock serialises concurrent starts: two processes
starting together both succeed, one applies and the other finds the work done. Editing a migration
that was already applied is refused (its checksum no longer matches): write a new one instead.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

LOCK_KEY = 0x43495459_50494C4F & 0x7FFFFFFFFFFFFFFF  # "CITYPILO": our advisory lock id
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("citypilot.db").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version number: {versions}")
    return found


def migrate(url: str) -> list[int]:
    """Apply pending migrations; return the versions applied by this call."""
    applied_now: list[int] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            conn.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
                                version integer PRIMARY KEY,
                                name text NOT NULL,
                                checksum text NOT NULL,
                                applied_at timestamptz NOT NULL DEFAULT now())""")
            done = {v: c for v, c in conn.execute("SELECT version, checksum FROM schema_migrations")}
            for migration in available_migrations():
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version:04d}_{migration.name} was changed after it was applied; "
                            "add a new migration instead of editing an applied one")
                    continue
                with conn.transaction():
                    conn.execute(migration.sql)
                    conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                                 (migration.version, migration.name, migration.checksum))
                applied_now.append(migration.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return applied_now


def current_version(url: str) -> int | None:
    with psycopg.connect(url) as conn:
        try:
            row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        except psycopg.errors.UndefinedTable:
            return None
        return row[0] if row else None
