"""The workers' agreement on who consumes which partition of the ingest stream, on a real PostgreSQL
(advisory locks): members count each other, a partition has one holder, and a worker whose connection
dies loses its partitions to the others at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from citypilot.ingest.partitions import Leases, plan


@pytest.fixture
def empty_database(stack: Any) -> Iterator[str]:
    """A database of its own on the stack's server: the workers serving the other tests hold their own
    locks in theirs (members are counted per database)."""
    name = f"leases_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack.endpoints.database_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield make_conninfo(**{**conninfo_to_dict(stack.endpoints.database_url), "dbname": name})
    finally:
        with psycopg.connect(stack.endpoints.database_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def _scenario(database_url: str) -> dict[str, Any]:
    first, second = Leases(database_url, 16), Leases(database_url, 16)
    seen: dict[str, Any] = {}
    await first.open()
    try:
        seen["alone"] = await first.members()
        seen["first_took"] = sorted(await first.take(plan(first.owned, await first.members(), 16).take))
        await second.open()
        seen["together"] = await second.members()
        seen["second_took_while_all_held"] = await second.take(16)
        decision = plan(first.owned, await first.members(), 16)
        seen["give_back"] = decision.give_back
        for partition in decision.give_back:
            await first.release(partition)
        seen["second_took"] = sorted(await second.take(plan(second.owned, await second.members(), 16).take))
        await first.conn.close()  # the first worker dies: its locks go with its connection
        # ...once its server process has ended, which takes a moment on a busy machine.
        for _ in range(100):
            seen["after_death"] = await second.members()
            if seen["after_death"] == 1:
                break
            await asyncio.sleep(0.05)
        seen["second_took_over"] = sorted(await second.take(plan(second.owned, await second.members(), 16).take))
        seen["second_holds"] = sorted(second.owned)
    finally:
        await first.close()
        await second.close()
    return seen


def test_two_workers_share_the_partitions_and_the_survivor_takes_them_all(empty_database):
    seen = asyncio.run(_scenario(empty_database))
    assert seen["alone"] == 1 and seen["first_took"] == list(range(16))
    assert seen["together"] == 2 and seen["second_took_while_all_held"] == []  # one holder per partition
    assert seen["give_back"] == list(range(8, 16))
    assert seen["second_took"] == list(range(8, 16))
    assert seen["after_death"] == 1
    assert seen["second_took_over"] == list(range(8)) and seen["second_holds"] == list(range(16))
