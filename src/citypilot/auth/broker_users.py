"""Who may connect to the MQTT device endpoint, and what each may do there.

Every active credential of a device that is not retired becomes one broker user: its name is the
credential's public part (``cpd_<id>``, the token's first two fields), its password the whole token,
and it may publish only under its own device's topics and subscribe only to its own command topic.
A gateway publishes for its children on its own topics, so it needs nothing more.

The broker checks passwords itself, against bcrypt hashes in its configuration (``devices.py`` hashes
each new token for it). This module builds the user list from the database's rows (``device_users``,
pure); the embedded broker's adapter (``runtime/embedded_nats.py``) writes it into the broker's
configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import psycopg

from citypilot.ingest import protocol
from citypilot.registry.sheet import ASSET_ID_RE

from .devices import mqtt_username

NOTIFY_CHANNEL = "citypilot_device_access"  # raised by the triggers of migration 0003

ACTIVE_MQTT_CREDENTIALS = (
    "SELECT c.id, c.device_id, c.mqtt_password_hash FROM device_credentials c JOIN assets a ON a.id = c.device_id "
    "WHERE c.revoked_at IS NULL AND c.mqtt_password_hash IS NOT NULL AND a.status <> 'retired' ORDER BY c.id")


@dataclass(frozen=True)
class BrokerUser:
    """One user of the broker. ``None`` permissions mean unrestricted (citypilot's own processes)."""

    username: str
    password_hash: str  # bcrypt
    publish: tuple[str, ...] | None
    subscribe: tuple[str, ...] | None


def command_subject(device_id: str) -> str:
    return protocol.COMMAND_TOPIC.format(device=device_id).replace("/", ".")


def device_user(credential_id: str, device_id: str, password_hash: str) -> BrokerUser:
    return BrokerUser(mqtt_username(credential_id), password_hash,
                      publish=(protocol.subject(device_id, ">"),), subscribe=(command_subject(device_id),))


def device_users(rows: Iterable[tuple[str, str, str | None]]) -> list[BrokerUser]:
    """Broker users of (credential id, device id, bcrypt hash) rows, in a stable order. A row without a
    hash (issued before MQTT credentials existed) or whose device id could not be a subject token is
    left out: such a credential works over HTTP only."""
    users = [device_user(credential_id, device_id, password_hash)
             for credential_id, device_id, password_hash in rows
             if password_hash and ASSET_ID_RE.match(device_id)]
    return sorted(users, key=lambda user: user.username)


def load_device_users(database_url: str) -> list[BrokerUser]:
    """The broker users the database allows now (at start, before the broker opens its ports)."""
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        return device_users(conn.execute(ACTIVE_MQTT_CREDENTIALS).fetchall())


async def load_device_users_async(conn: psycopg.AsyncConnection) -> list[BrokerUser]:
    cur = await conn.execute(ACTIVE_MQTT_CREDENTIALS)
    return device_users(await cur.fetchall())
