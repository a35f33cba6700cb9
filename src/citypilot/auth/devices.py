"""Credentials of devices and gateways (HTTP ingest today, MQTT later).

A credential is ``cpd_<id>_<secret>``: the id finds it, the secret proves it. Only a SHA-256 of the
secret is stored. That is enough for a 256-bit random secret (a slow password hash protects
guessable human passwords, and would cost every ingest request 50 ms). Shown once, when issued.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

PREFIX = "cpd_"


@dataclass(frozen=True)
class DeviceIdentity:
    device_id: str
    credential_id: str


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def issue(conn: psycopg.AsyncConnection, device_id: str, created_by: str) -> tuple[str, str]:
    """(credential id, full token). The token is not stored and cannot be shown again."""
    credential_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    await conn.execute("INSERT INTO device_credentials (id, device_id, secret_hash, created_by) VALUES (%s, %s, %s, %s)",
                       (credential_id, device_id, _hash(secret), created_by))
    return credential_id, f"{PREFIX}{credential_id}_{secret}"


async def verify(conn: psycopg.AsyncConnection, token: str) -> DeviceIdentity | None:
    if not token.startswith(PREFIX) or token.count("_") < 2:
        return None
    credential_id, _, secret = token[len(PREFIX):].partition("_")
    row = await (await conn.execute(
        "SELECT c.device_id, c.secret_hash FROM device_credentials c JOIN assets a ON a.id = c.device_id "
        "WHERE c.id = %s AND c.revoked_at IS NULL AND a.status <> 'retired'", (credential_id,))).fetchone()
    if row is None or not hmac.compare_digest(row[1], _hash(secret)):
        return None
    return DeviceIdentity(row[0], credential_id)


async def revoke(conn: psycopg.AsyncConnection, device_id: str, credential_id: str) -> bool:
    cur = await conn.execute("UPDATE device_credentials SET revoked_at = now() WHERE id = %s AND device_id = %s "
                             "AND revoked_at IS NULL", (credential_id, device_id))
    return cur.rowcount > 0


async def list_for(conn: psycopg.AsyncConnection, device_id: str) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT id, created_at, created_by, revoked_at FROM device_credentials WHERE device_id = %s "
                          "ORDER BY created_at", (device_id,))
        rows = await cur.fetchall()
    for row in rows:
        for key in ("created_at", "revoked_at"):
            if row[key] is not None:
                row[key] = row[key].isoformat()
    return rows
