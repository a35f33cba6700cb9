"""Which worker consumes which partition of the ingest stream, agreed through PostgreSQL.

Every worker holds, on a connection of its own, a *member* advisory lock (so the workers can count
each other) and one *partition* lock per partition it consumes. Every ``REBALANCE_EVERY_S`` a worker
compares what it holds with its fair share, ``ceil(partitions / members)``: it takes free partitions
up to its share, and gives back what it holds beyond it, once the messages it holds from them are
committed. A worker that dies loses its connection, hence its locks: the others take its partitions
at their next look, and the server redelivers its unacknowledged messages to them.

Why PostgreSQL: every worker already needs it to commit, and a worker cut from it must stop consuming
anyway (its locks are gone, another worker may take over); no other coordinator to run.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import psycopg

MEMBER_LOCK = 0x43504D42     # "CPMB": (MEMBER_LOCK, member id), one per running worker
PARTITION_LOCK = 0x43505054  # "CPPT": (PARTITION_LOCK, partition), held by its consumer
REBALANCE_EVERY_S = 1.0

_MEMBERS_SQL = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND classid = %s::oid AND objsubid = 2
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


@dataclass(frozen=True)
class Plan:
    take: int      # how many more partitions to try to take
    give_back: list[int]


def plan(owned: set[int], members: int, partitions: int) -> Plan:
    """What a worker should do, holding ``owned`` among ``members`` workers (itself included).

    Gives back the highest-numbered partitions beyond its share, so that partition 0 (and the misfit
    consumer that goes with it) moves as rarely as possible."""
    share = math.ceil(partitions / max(members, 1))
    if len(owned) > share:
        return Plan(0, sorted(owned)[share:])
    return Plan(share - len(owned), [])


class Leases:
    """The advisory locks of one worker, on a connection of its own (autocommit: session locks)."""

    def __init__(self, database_url: str, partitions: int) -> None:
        self.database_url = database_url
        self.partitions = partitions
        self.member_id = random.randrange(1, 2**31)
        self.conn: psycopg.AsyncConnection | None = None
        self.owned: set[int] = set()

    async def open(self) -> None:
        self.conn = await psycopg.AsyncConnection.connect(self.database_url, autocommit=True,
                                                          application_name="citypilot-ingest-lease")
        await self.conn.execute("SELECT pg_advisory_lock(%s, %s)", (MEMBER_LOCK, self.member_id))
        self.owned = set()

    async def close(self) -> None:
        if self.conn is not None:
            try:
                await self.conn.close()  # releases every lock this worker held
            finally:
                self.conn = None
                self.owned = set()

    async def members(self) -> int:
        assert self.conn is not None
        row = await (await self.conn.execute(_MEMBERS_SQL, (MEMBER_LOCK,))).fetchone()
        return int(row[0]) if row else 1

    async def take(self, count: int) -> list[int]:
        """Try to lock up to ``count`` free partitions, starting from a place of our own so that workers
        starting together do not all race for the same ones."""
        assert self.conn is not None
        taken: list[int] = []
        start = self.member_id % self.partitions
        for offset in range(self.partitions):
            if len(taken) >= count:
                break
            partition = (start + offset) % self.partitions
            if partition in self.owned:
                continue
            row = await (await self.conn.execute("SELECT pg_try_advisory_lock(%s, %s)",
                                                 (PARTITION_LOCK, partition))).fetchone()
            if row and row[0]:
                self.owned.add(partition)
                taken.append(partition)
        return taken

    async def release(self, partition: int) -> None:
        assert self.conn is not None
        await self.conn.execute("SELECT pg_advisory_unlock(%s, %s)", (PARTITION_LOCK, partition))
        self.owned.discard(partition)
