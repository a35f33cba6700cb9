"""Local accounts and login sessions, stored in PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from .passwords import hash_password, verify_password
from .roles import ROLES, ROLES_WITH_SERVICE
from .tokens import TokenClaims

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")


class AccountError(ValueError):
    pass


class UserExists(AccountError):
    pass


class UnknownUser(AccountError):
    pass


class LastAdmin(AccountError):
    pass


@dataclass(frozen=True)
class Principal:
    """Who is calling: an authenticated user with a role (and a service for per-service roles)."""

    username: str
    role: str
    service: str | None
    session_id: str | None = None


def check_account(username: str, role: str, service: str | None, services: dict[str, str]) -> None:
    if not USERNAME_RE.match(username):
        raise AccountError(f"invalid user name {username!r}: 2 to 64 lowercase letters, digits, '.', '_' or '-'")
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
    if role in ROLES_WITH_SERVICE and not service:
        raise AccountError(f"a {role} account must name its service (--service; services: {', '.join(services)})")
    if service is not None and service not in services:
        raise AccountError(f"unknown service {service!r} (services: {', '.join(services)})")


async def add_user(conn: psycopg.AsyncConnection, username: str, role: str, password: str, *, services: dict[str, str],
                   service: str | None = None, display_name: str | None = None) -> None:
    check_account(username, role, service, services)
    password_hash = await asyncio.to_thread(hash_password, password)
    try:
        await conn.execute("INSERT INTO users (username, display_name, role, service, password_hash) VALUES (%s, %s, %s, %s, %s)",
                           (username, display_name, role, service, password_hash))
    except psycopg.errors.UniqueViolation:
        raise UserExists(f"user {username!r} already exists") from None


async def set_password(conn: psycopg.AsyncConnection, username: str, password: str) -> None:
    password_hash = await asyncio.to_thread(hash_password, password)
    cur = await conn.execute("UPDATE users SET password_hash = %s, password_changed_at = now() WHERE username = %s",
                             (password_hash, username))
    if cur.rowcount == 0:
        raise UnknownUser(f"no user {username!r}")
    await conn.execute("UPDATE sessions SET revoked_at = now() WHERE username = %s AND revoked_at IS NULL", (username,))


async def _keep_an_admin(conn: psycopg.AsyncConnection, username: str) -> None:
    """Refuse a change that would leave no enabled administrator (nobody could manage accounts)."""
    rows = await (await conn.execute(
        "SELECT username FROM users WHERE role = 'admin' AND NOT disabled ORDER BY username FOR UPDATE")).fetchall()
    if [r[0] for r in rows] == [username]:
        raise LastAdmin(f"{username} is the last enabled administrator; give another account the admin role first")


async def set_disabled(conn: psycopg.AsyncConnection, username: str, disabled: bool) -> None:
    if disabled:
        await _keep_an_admin(conn, username)
    cur = await conn.execute("UPDATE users SET disabled = %s WHERE username = %s", (disabled, username))
    if cur.rowcount == 0:
        raise UnknownUser(f"no user {username!r}")
    if disabled:
        await conn.execute("UPDATE sessions SET revoked_at = now() WHERE username = %s AND revoked_at IS NULL", (username,))


async def set_role(conn: psycopg.AsyncConnection, username: str, role: str, service: str | None, *,
                   services: dict[str, str]) -> None:
    """Give an account another role (and service); it applies to its open sessions at once."""
    check_account(username, role, service, services)
    if role != "admin":
        await _keep_an_admin(conn, username)
    cur = await conn.execute("UPDATE users SET role = %s, service = %s WHERE username = %s", (role, service, username))
    if cur.rowcount == 0:
        raise UnknownUser(f"no user {username!r}")


async def list_users(conn: psycopg.AsyncConnection) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT username, display_name, role, service, disabled, created_at FROM users ORDER BY username")
        rows = await cur.fetchall()
    for row in rows:
        row["created_at"] = row["created_at"].isoformat()
    return rows


async def authenticate(conn: psycopg.AsyncConnection, username: str, password: str) -> Principal | None:
    """The principal if the credentials are right and the account enabled; None otherwise (same cost)."""
    row = await (await conn.execute("SELECT password_hash, role, service, disabled FROM users WHERE username = %s",
                                    (username,))).fetchone()
    stored = row[0] if row else None
    ok = await asyncio.to_thread(verify_password, stored, password)
    if not ok or row is None or row[3]:
        return None
    return Principal(username, row[1], row[2])


async def open_session(conn: psycopg.AsyncConnection, claims: TokenClaims, client: str | None) -> None:
    await conn.execute("INSERT INTO sessions (id, username, expires_at, client) VALUES (%s, %s, %s, %s)",
                       (claims.session_id, claims.username, claims.expires_at, (client or "")[:200]))


async def resolve_session(conn: psycopg.AsyncConnection, claims: TokenClaims) -> Principal | None:
    row = await (await conn.execute(
        """SELECT u.role, u.service FROM sessions s JOIN users u ON u.username = s.username
           WHERE s.id = %s AND s.username = %s AND s.revoked_at IS NULL AND s.expires_at > now() AND NOT u.disabled""",
        (claims.session_id, claims.username))).fetchone()
    if row is None:
        return None
    return Principal(claims.username, row[0], row[1], claims.session_id)


async def revoke_session(conn: psycopg.AsyncConnection, session_id: str) -> None:
    await conn.execute("UPDATE sessions SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL", (session_id,))


async def purge_expired_sessions(conn: psycopg.AsyncConnection, older_than: dt.timedelta = dt.timedelta(days=7)) -> int:
    cur = await conn.execute("DELETE FROM sessions WHERE expires_at < now() - %s", (older_than,))
    return cur.rowcount
