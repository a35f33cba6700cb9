"""Password hashing with argon2id (argon2-cffi's defaults, RFC 9106 low-memory profile)."""

from __future__ import annotations

from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 10
MAX_LENGTH = 1024


class WeakPassword(ValueError):
    pass


@lru_cache(maxsize=1)
def _hasher() -> PasswordHasher:
    return PasswordHasher()


def check_strength(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"a password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"a password has at most {MAX_LENGTH} characters")


def hash_password(password: str) -> str:
    check_strength(password)
    return _hasher().hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True if the password matches. With no stored hash (unknown user) a dummy hash is checked, so
    that the answer takes the same time whether or not the account exists."""
    target = stored_hash or _dummy_hash()
    try:
        ok = _hasher().verify(target, password[:MAX_LENGTH])
    except (VerificationError, InvalidHashError):
        return False
    return ok and stored_hash is not None


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher().hash("citypilot-dummy-password")
