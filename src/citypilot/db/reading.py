"""Connections for reads only.

The pool's connections run in transactions (``autocommit`` off), so that what a request writes is
written together or not at all. For a read that is two round trips too many: the driver opens the
transaction with ``BEGIN`` before the query and the pool rolls it back when the connection comes back.
On the reference machine a round trip costs the API process about 0.15 ms of CPU, and every
authenticated request starts with a read (its session).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool


@asynccontextmanager
async def reading(pool: AsyncConnectionPool) -> AsyncIterator[psycopg.AsyncConnection]:
    """A pooled connection in autocommit for the block: each query is one round trip. Only for reads:
    nothing written in it would be atomic."""
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        try:
            yield conn
        finally:
            if conn.info.transaction_status == TransactionStatus.IDLE:
                await conn.set_autocommit(False)
            else:  # interrupted mid-query: not reusable as it is; the pool replaces a closed connection
                await conn.close()
