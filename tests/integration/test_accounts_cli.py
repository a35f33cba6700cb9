"""`citypilot user ...` as an administrator types it, against each stack's database."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ..conftest import PASSWORD, Stack

pytestmark = pytest.mark.integration
CITYPILOT = str(Path(sys.executable).parent / "citypilot")


def _cli(stack: Stack, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYPILOT_")}
    env.update(CITYPILOT_DATA_DIR=str(stack.config.data_dir), CITYPILOT_DATABASE_URL=stack.endpoints.database_url)
    return subprocess.run([CITYPILOT, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60)


def test_user_add_then_login_then_disable(stack, app_client):
    name = "coord-" + uuid.uuid4().hex[:6]
    added = _cli(stack, "user", "add", name, "--role", "service_coordinator", "--service", "lighting",
                 "--display-name", "Chef éclairage", "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    assert f"user {name} created with role service_coordinator (lighting)" in added.stdout
    listed = _cli(stack, "user", "list")
    line = next(l for l in listed.stdout.splitlines() if l.startswith(name))
    assert "service_coordinator" in line and "lighting" in line

    login = app_client.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD})
    assert login.status_code == 200 and login.json()["service"] == "lighting"
    token = login.json()["access_token"]
    app_client.cookies.clear()

    assert _cli(stack, "user", "passwd", name, "--password-stdin", stdin="a-brand-new-password\n").returncode == 0
    assert app_client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401, \
        "a password change must end the open sessions"
    assert app_client.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD}).status_code == 401
    assert app_client.post("/api/v1/auth/login", json={"username": name, "password": "a-brand-new-password"}).status_code == 200
    app_client.cookies.clear()

    assert _cli(stack, "user", "disable", name).returncode == 0
    assert app_client.post("/api/v1/auth/login", json={"username": name, "password": "a-brand-new-password"}).status_code == 401
    assert "(disabled)" in next(l for l in _cli(stack, "user", "list").stdout.splitlines() if l.startswith(name))

    import psycopg

    with psycopg.connect(stack.endpoints.database_url) as conn:
        entries = conn.execute("SELECT type, actor, data FROM journal WHERE type LIKE 'account.%%' AND data->>'username' = %s "
                               "ORDER BY id", (name,)).fetchall()
    assert [e[0] for e in entries] == ["account.created", "account.updated", "account.updated"]
    assert all(e[1].startswith("cli") for e in entries), "terminal actions are journaled with the system user"
    assert entries[1][2] == {"username": name, "password": "changed"} and entries[2][2]["disabled"] is True


@pytest.mark.parametrize("args, stdin, message", [
    (["--role", "mayor"], PASSWORD, "unknown role 'mayor'"),
    (["--role", "field_agent"], PASSWORD, "must name its service"),
    (["--role", "operator", "--service", "nowhere"], PASSWORD, "unknown service 'nowhere'"),
    (["--role", "operator"], "short", "at least 10 characters"),
    (["--role", "operator"], "", "no password on standard input"),
])
def test_user_add_refuses_bad_input_and_writes_nothing(stack, args, stdin, message):
    name = "bad-" + uuid.uuid4().hex[:6]
    result = _cli(stack, "user", "add", name, *args, "--password-stdin", stdin=stdin + "\n" if stdin else "")
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert name not in _cli(stack, "user", "list").stdout


def test_duplicate_user_and_unknown_user_are_clear_errors(stack):
    name = "dup-" + uuid.uuid4().hex[:6]
    assert _cli(stack, "user", "add", name, "--role", "read_only", "--password-stdin", stdin=PASSWORD + "\n").returncode == 0
    again = _cli(stack, "user", "add", name, "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    assert again.returncode == 1 and f"user '{name}' already exists" in again.stderr
    line = next(l for l in _cli(stack, "user", "list").stdout.splitlines() if l.startswith(name))
    assert "read_only" in line, "a refused duplicate must not change the existing account"
    missing = _cli(stack, "user", "disable", "ghost-" + name)
    assert missing.returncode == 1 and "no user" in missing.stderr


def test_the_last_administrator_cannot_be_disabled_or_demoted(stack, tmp_path):
    """On a registry with a single admin, the commands refuse what would lock everyone out."""
    import psycopg

    from citypilot.db.migrations import migrate

    name = f"lastadmin_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(stack.endpoints.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = stack.endpoints.database_url.replace("/citypilot?", f"/{name}?") if stack.backend == "embedded" \
        else stack.endpoints.database_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        migrate(url)
        solo = Stack(stack.backend, stack.config, stack.endpoints.__class__(url, None, None, True, True))
        assert _cli(solo, "user", "add", "chief", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n").returncode == 0
        refused = _cli(solo, "user", "disable", "chief")
        assert refused.returncode == 1 and "last enabled administrator" in refused.stderr
        refused = _cli(solo, "user", "role", "chief", "operator")
        assert refused.returncode == 1 and "last enabled administrator" in refused.stderr
        assert _cli(solo, "user", "add", "deputy", "--role", "operator", "--password-stdin", stdin=PASSWORD + "\n").returncode == 0
        assert _cli(solo, "user", "role", "deputy", "admin").returncode == 0
        assert _cli(solo, "user", "disable", "chief").returncode == 0
        listing = _cli(solo, "user", "list").stdout
        assert "(disabled)" in next(l for l in listing.splitlines() if l.startswith("chief"))
        assert " admin " in next(l for l in listing.splitlines() if l.startswith("deputy"))
    finally:
        with psycopg.connect(stack.endpoints.database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
