"""Open311 client keys (``api_key``): a city's app or a partner's portal needs one to create requests.

A key is ``o311_<id>_<secret>``: the id finds it, the secret proves it; shown once when issued, and only
a SHA-256 of the secret is kept (a 256-bit random secret needs no slow hash). Reading requests needs
no key: the specification makes them public.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

import psycopg

PREFIX = "o311_"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def issue(conn: psycopg.AsyncConnection, name: str, created_by: str) -> tuple[str, str]:
    """(client id, full key). The key is not stored and cannot be shown again."""
    client_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    await conn.execute("INSERT INTO open311_clients (id, name, key_hash, created_by) VALUES (%s, %s, %s, %s)",
                       (client_id, name, _hash(secret), created_by))
    return client_id, f"{PREFIX}{client_id}_{secret}"


async def verify(conn: psycopg.AsyncConnection, key: str) -> str | None:
    """The client id of a valid, unrevoked key; None otherwise."""
    if not key.startswith(PREFIX) or key.count("_") < 2 or len(key) > 200:
        return None
    client_id, _, secret = key[len(PREFIX):].partition("_")
    row = await (await conn.execute("SELECT key_hash FROM open311_clients WHERE id = %s AND revoked_at IS NULL",
                                    (client_id,))).fetchone()
    if row is None or not hmac.compare_digest(row[0], _hash(secret)):
        return None
    return client_id


async def revoke(conn: psycopg.AsyncConnection, client_id: str) -> bool:
    cur = await conn.execute("UPDATE open311_clients SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL",
                             (client_id,))
    return cur.rowcount > 0


async def list_all(conn: psycopg.AsyncConnection) -> list[dict[str, Any]]:
    rows = await (await conn.execute("SELECT id, name, created_at, created_by, revoked_at FROM open311_clients "
                                     "ORDER BY created_at")).fetchall()
    return [{"id": r[0], "name": r[1], "created_at": r[2].isoformat(), "created_by": r[3],
             "revoked_at": r[4].isoformat() if r[4] else None} for r in rows]
