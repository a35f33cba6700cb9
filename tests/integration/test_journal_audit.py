"""The journal's tamper evidence: `citypilot audit verify` finds a changed or deleted entry.

Runs in a database of its own on the stack's server: tampering must not break the shared one."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from citypilot.db.migrations import migrate
from citypilot.journal import store
from citypilot.journal.audit import verify
from citypilot.journal.entries import NewEntry

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh_db(stack) -> Iterator[str]:
    name = f"audit_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack.endpoints.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(stack.endpoints.database_url)
    url = urlunsplit(parts._replace(path=f"/{name}"))
    migrate(url)
    try:
        yield url
    finally:
        with psycopg.connect(stack.endpoints.database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def entries(n: int) -> list[NewEntry]:
    t0 = dt.datetime(2026, 11, 21, 18, 0, tzinfo=dt.timezone.utc)
    return [NewEntry(at=t0 + dt.timedelta(seconds=i), domain="lighting", type="alarm.acknowledged",
                     summary=f"entry {i} — éclairage", actor="ada", severity="minor", commune="21231", lat=47.32,
                     lon=5.04, data={"n": i, "x": 1e20, "nested": {"b": [1, 2.5, None], "a": "ü"}}) for i in range(n)]


async def _append_and_verify(url: str) -> tuple[list[int], object]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        async with conn.transaction():
            ids = await store.append(conn, entries(5))
        async with conn.transaction():
            ids += await store.append(conn, entries(3))
        return ids, await verify(conn)


def _verify(url: str):
    async def go():
        async with await psycopg.AsyncConnection.connect(url) as conn:
            return await verify(conn)
    return asyncio.run(go())


def test_the_chain_verifies_and_a_changed_entry_breaks_it(fresh_db):
    ids, verdict = asyncio.run(_append_and_verify(fresh_db))
    assert ids == list(range(1, 9)) and verdict.ok and verdict.entries == 8
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute("UPDATE journal SET summary = 'nothing happened' WHERE id = 4")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM journal WHERE id = 4")
        # Someone with the power to disable the guard changes an entry's words.
        conn.execute("ALTER TABLE journal DISABLE TRIGGER journal_append_only")
        conn.execute("UPDATE journal SET data = jsonb_set(data, '{n}', '42') WHERE id = 4")
    verdict = _verify(fresh_db)
    assert not verdict.ok and verdict.first_bad_id == 4 and "changed" in verdict.problem


def test_a_deleted_entry_is_found(fresh_db):
    asyncio.run(_append_and_verify(fresh_db))
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE journal DISABLE TRIGGER journal_append_only")
        conn.execute("DELETE FROM journal WHERE id = 8")  # the last one: only the head can tell
    verdict = _verify(fresh_db)
    assert not verdict.ok and "head" in verdict.problem
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE journal DISABLE TRIGGER journal_append_only")
        conn.execute("DELETE FROM journal WHERE id = 3")
    verdict = _verify(fresh_db)
    assert not verdict.ok and verdict.first_bad_id == 3 and "missing" in verdict.problem


def test_audit_verify_command(fresh_db, stack, tmp_path):
    import os
    import subprocess
    import sys

    asyncio.run(_append_and_verify(fresh_db))
    env = {**os.environ, "CITYPILOT_DATABASE_URL": fresh_db, "CITYPILOT_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "citypilot", "audit", "verify"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "journal chain intact: 8 entries" in done.stdout
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE journal DISABLE TRIGGER journal_append_only")
        conn.execute("UPDATE journal SET actor = 'nobody' WHERE id = 2")
    done = subprocess.run([sys.executable, "-m", "citypilot", "audit", "verify"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1 and "entry 2 was changed" in done.stderr, (done.stdout, done.stderr)
