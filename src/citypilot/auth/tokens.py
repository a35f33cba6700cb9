"""Signed bearer tokens (JWT, HS256). Each token names a login session that can be revoked."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from pathlib import Path

import jwt

ALGORITHM = "HS256"
ISSUER = "citypilot"


@dataclass(frozen=True)
class TokenClaims:
    username: str
    role: str
    session_id: str
    expires_at: dt.datetime


class InvalidToken(ValueError):
    pass


def issue(secret: str, username: str, role: str, ttl: dt.timedelta, now: dt.datetime | None = None) -> tuple[str, TokenClaims]:
    now = now or dt.datetime.now(dt.timezone.utc)
    claims = TokenClaims(username, role, secrets.token_urlsafe(18), now + ttl)
    token = jwt.encode({"sub": username, "role": role, "sid": claims.session_id, "iss": ISSUER,
                        "iat": int(now.timestamp()), "exp": int(claims.expires_at.timestamp())}, secret, algorithm=ALGORITHM)
    return token, claims


def decode(secret: str, token: str) -> TokenClaims:
    try:
        payload = jwt.decode(token, secret, algorithms=[ALGORITHM], issuer=ISSUER,
                             options={"require": ["sub", "sid", "exp", "iss"]})
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from None
    return TokenClaims(str(payload["sub"]), str(payload.get("role", "")), str(payload["sid"]),
                       dt.datetime.fromtimestamp(payload["exp"], dt.timezone.utc))


def load_or_create_secret(configured: str | None, data_dir: Path) -> str:
    """The configured key, else one generated once and kept (mode 600) in the data directory."""
    if configured:
        return configured
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    # Written aside then renamed, so that a reader never sees half a key; if another process created
    # the key meanwhile, its key wins and ours is discarded.
    tmp = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
    tmp.write_text(secrets.token_urlsafe(48))
    tmp.chmod(0o600)
    if path.exists():
        tmp.unlink()
    else:
        tmp.rename(path)
    return path.read_text().strip()
