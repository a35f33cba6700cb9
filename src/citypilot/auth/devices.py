"""Credentials of devices and gateways: the HTTP ingest endpoint and the MQTT device endpoint.

A credential is ``cpd_<id>_<secret>``: the id finds it, the secret proves it. Shown once, when issued.
Only hashes are stored. For HTTP, a SHA-256 of the secret: enough for a 256-bit random secret (a slow
password hash protects guessable human passwords, and would cost every ingest request 50 ms). For
MQTT, where the broker checks the password itself, a bcrypt hash of the whole token (nats-server
knows no other hash): on MQTT the user name is ``cpd_<id>`` and the password the whole token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import bcrypt
import psycopg
from psycopg.rows import dict_row

PREFIX = "cpd_"

# bcrypt's lowest cost (2^4 rounds, ~1 ms here). A slow hash protects guessable passwords; these tokens
# carry a 256-bit random secret that no hashing speed makes guessable. What the cost does buy is broker
# CPU: nats-server verifies the bcrypt hash at every CONNECT, and again for every connected client at
# every configuration reload. When a city's 34,000 lights reconnect together after a power cut, cost 4
# is ~34 CPU-seconds of broker work; bcrypt's usual cost 10 would be ~35 minutes.
BCRYPT_COST = 4


@dataclass(frozen=True)
class DeviceIdentity:
    device_id: str
    credential_id: str


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def mqtt_username(credential_id: str) -> str:
    """A credential's user name on the MQTT device endpoint: the token's public part."""
    return f"{PREFIX}{credential_id}"


def mqtt_password_hash(token: str) -> str:
    """bcrypt hash of a whole token (60 bytes, under bcrypt's 72-byte limit). nats-server accepts the
    ``$2b$`` prefix Python's bcrypt writes (checked against nats-server 2.15)."""
    return bcrypt.hashpw(token.encode(), bcrypt.gensalt(BCRYPT_COST)).decode()


async def issue(conn: psycopg.AsyncConnection, device_id: str, created_by: str) -> tuple[str, str]:
    """(credential id, full token). The token is not stored and cannot be shown again."""
    credential_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    token = f"{PREFIX}{credential_id}_{secret}"
    await conn.execute("INSERT INTO device_credentials (id, device_id, secret_hash, mqtt_password_hash, created_by) "
                       "VALUES (%s, %s, %s, %s, %s)",
                       (credential_id, device_id, _hash(secret), mqtt_password_hash(token), created_by))
    return credential_id, token


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
        await cur.execute("SELECT id, %s || id AS mqtt_username, mqtt_password_hash IS NOT NULL AS mqtt, created_at, "
                          "created_by, revoked_at FROM device_credentials WHERE device_id = %s ORDER BY created_at",
                          (PREFIX, device_id))
        rows = await cur.fetchall()
    for row in rows:
        for key in ("created_at", "revoked_at"):
            if row[key] is not None:
                row[key] = row[key].isoformat()
    return rows
