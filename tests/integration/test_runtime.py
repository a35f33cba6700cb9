"""The runtime as an administrator meets it: `citypilot serve` starting, answering, stopping; migrations;
clear messages when something is wrong. These run real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from citypilot.db.migrations import MigrationError, available_migrations, migrate
from citypilot.runtime.ports import free_port

from ..conftest import EXTERNAL_PG, PASSWORD, Stack, create_external_database, embedded_environ

pytestmark = pytest.mark.integration
CITYPILOT = str(Path(sys.executable).parent / "citypilot")


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYPILOT_")}
    env.update(extra)
    return env


def _processes_using(data_dir: Path) -> list[str]:
    """Command lines of live processes that mention the data directory (postgres, nats-server)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(data_dir) in cmdline and ("postgres" in cmdline or "nats-server" in cmdline):
            found.append(cmdline)
    return found


def _wait_ready(port: int, process: subprocess.Popen, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if process.poll() is not None:
            raise AssertionError(f"citypilot serve exited early: {process.stderr.read().decode()[-2000:]}")
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
            if response.status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"/readyz did not answer 200 within {timeout} s")


def _serve(env: dict[str, str]) -> subprocess.Popen:
    """A real `citypilot serve` process (its output kept for failure messages)."""
    return subprocess.Popen([CITYPILOT, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _stop(process: subprocess.Popen, sig: int) -> int:
    process.send_signal(sig)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError("citypilot serve did not stop within 30 s")


@pytest.mark.slow
def test_serve_on_embedded_defaults_is_ready_fast_stops_cleanly_and_reuses_its_data(tmp_path):
    env = _env(embedded_environ(tmp_path / "data"))
    port = int(env["CITYPILOT_HTTP_PORT"])
    serve = _serve(env)
    try:
        elapsed = _wait_ready(port, serve, timeout=15)
        assert elapsed < 15
        # An admin command while the server runs shares its embedded PostgreSQL.
        added = subprocess.run([CITYPILOT, "user", "add", "chief", "--role", "supervisor", "--password-stdin"],
                               env=env, input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)
        assert added.returncode == 0, added.stderr
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200, "the admin command stopped the server"
        _worker_joins_and_strangers_are_refused(env)
    finally:
        code = _stop(serve, signal.SIGTERM)
    output = serve.stdout.read().decode() + serve.stderr.read().decode()
    assert code == 0, output[-2000:]
    assert _processes_using(tmp_path / "data") == [], "embedded servers left running after SIGTERM"
    nats_dir = tmp_path / "data" / "nats"
    secret = (nats_dir / "internal-secret").read_text().strip()
    assert '"nats": "nats://citypilot:********@' in output  # logged, masked
    for where, text in (("serve's output", output), ("the broker's log", (nats_dir / "nats-server.log").read_text()),
                        ("the broker's configuration", (nats_dir / "nats-server.conf").read_text())):
        assert secret not in text, f"the internal NATS password is in {where}"
    for private in ("internal-secret", "nats-server.conf"):
        assert (nats_dir / private).stat().st_mode & 0o077 == 0, private

    # Second start: same data, the account is still there; Ctrl-C (SIGINT) stops it as cleanly.
    serve = _serve(env)
    try:
        _wait_ready(port, serve, timeout=15)
        login = httpx.post(f"http://127.0.0.1:{port}/api/v1/auth/login", json={"username": "chief", "password": PASSWORD})
        assert login.status_code == 200
    finally:
        code = _stop(serve, signal.SIGINT)
    assert code in (0, 130)
    assert _processes_using(tmp_path / "data") == []


def _worker_joins_and_strangers_are_refused(env: dict[str, str]) -> None:
    """With embedded defaults, `citypilot worker` logs in to serve's NATS as citypilot's internal user;
    a client without a login is refused on the NATS and MQTT ports."""
    import nats

    worker = subprocess.Popen([CITYPILOT, "worker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = worker.stdout.readline().decode()  # empty if it exits
    worker.send_signal(signal.SIGTERM)
    code = worker.wait(timeout=30)
    assert "ingest worker" in line and code == 0, line + worker.stderr.read().decode()[-2000:]

    async def anonymous() -> None:
        await nats.connect(f"nats://127.0.0.1:{env['CITYPILOT_NATS_PORT']}", allow_reconnect=False,
                           max_reconnect_attempts=0, connect_timeout=5)

    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        asyncio.run(anonymous())
    published = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", env["CITYPILOT_MQTT_PORT"], "-q", "1",
                                "-t", "citypilot/v1/SL-1/telemetry", "-m", "{}"], capture_output=True, text=True, timeout=20)
    assert published.returncode != 0 and "not authorised" in published.stderr.lower(), published.stderr


@pytest.mark.slow
def test_serve_recovers_from_a_killed_previous_run(tmp_path):
    """After SIGKILL (no cleanup at all), the next start still works and stops everything."""
    env = _env(embedded_environ(tmp_path / "data"))
    port = int(env["CITYPILOT_HTTP_PORT"])
    serve = _serve(env)
    _wait_ready(port, serve, timeout=15)
    serve.kill()
    serve.wait()
    serve = _serve(env)
    try:
        _wait_ready(port, serve, timeout=20)
    finally:
        _stop(serve, signal.SIGTERM)
    assert _processes_using(tmp_path / "data") == []


def _run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([CITYPILOT, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_taken_nats_port_gives_a_clear_message(tmp_path):
    env = _env(embedded_environ(tmp_path / "data"))
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        env["CITYPILOT_NATS_PORT"] = str(blocker.getsockname()[1])
        result = _run(["serve"], env)
    assert result.returncode != 0
    assert f"port {env['CITYPILOT_NATS_PORT']}" in result.stderr and "CITYPILOT_NATS_PORT" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert _processes_using(tmp_path / "data") == [], "PostgreSQL must be stopped when NATS cannot start"


def test_taken_http_port_gives_a_clear_message(tmp_path):
    env = _env(embedded_environ(tmp_path / "data"))
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        result = _run(["serve", "--port", str(blocker.getsockname()[1])], env)
    assert result.returncode != 0
    assert "another program is listening" in result.stderr and "--port" in result.stderr
    assert "Traceback" not in result.stderr


def test_database_down_gives_a_clear_message_without_the_password(tmp_path):
    env = _env(embedded_environ(tmp_path / "data"))
    env["CITYPILOT_DATABASE_URL"] = f"postgresql://citypilot:hunter2-secret@127.0.0.1:{free_port()}/citypilot"
    result = _run(["serve"], env)
    assert result.returncode == 1
    assert "cannot connect to PostgreSQL" in result.stderr
    assert "hunter2-secret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_nats_down_gives_a_clear_message(tmp_path):
    url, drop = create_external_database()
    try:
        env = _env(embedded_environ(tmp_path / "data"))
        env.update(CITYPILOT_DATABASE_URL=url, CITYPILOT_NATS_URL=f"nats://127.0.0.1:{free_port()}")
        result = _run(["serve"], env)
    finally:
        drop()
    assert result.returncode == 1
    assert "cannot connect to NATS" in result.stderr and "CITYPILOT_NATS_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_prints_every_setting_with_secrets_masked(tmp_path):
    toml = tmp_path / "citypilot.toml"
    toml.write_text('[http]\nport = 9090\n[metrics]\ntoken = "metrics-secret-token"\n')
    env = _env({"CITYPILOT_AUTH_SECRET_KEY": "very-secret-signing-key",
                "CITYPILOT_DATABASE_URL": "postgresql://city:db-password-9@db.example:5432/citypilot"})
    result = _run(["--config", str(toml), "config"], env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for secret in ("very-secret-signing-key", "db-password-9", "metrics-secret-token"):
        assert secret not in out
    assert "postgresql://city:********@db.example:5432/citypilot" in out
    assert "CITYPILOT_HTTP_PORT" in out and "9090" in out and str(toml) in out
    assert "CITYPILOT_NATS_PORT" in out and "14222  (default)" in out


def test_config_errors_name_the_setting(tmp_path):
    toml = tmp_path / "citypilot.toml"
    toml.write_text("[http]\nprot = 9090\n")
    result = _run(["--config", str(toml), "config"], _env({}))
    assert result.returncode == 2 and "unknown setting [http] prot" in result.stderr
    result = _run(["config"], _env({"CITYPILOT_HTTP_PORT": "eighty"}))
    assert result.returncode == 2 and "CITYPILOT_HTTP_PORT" in result.stderr and "'eighty'" in result.stderr


def test_help_lists_every_command():
    result = _run(["--help"], _env({}))
    assert result.returncode == 0
    for command in ("serve", "worker", "config", "user", "assets", "db", "bench", "nats-users"):
        assert command in result.stdout


# --- migrations, on the stack's own server (embedded and external) ----------------------------------

@pytest.fixture
def fresh_database(stack: Stack):
    name = f"mig_{os.getpid()}_{time.monotonic_ns() % 10**8}"
    with psycopg.connect(stack.endpoints.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, rest = stack.endpoints.database_url.partition("/citypilot")
    if stack.backend == "external":
        base, _, rest = stack.endpoints.database_url.rpartition("/")
        url = f"{base}/{name}"
    else:
        url = f"{base}/{name}{rest}"
    yield url
    with psycopg.connect(stack.endpoints.database_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_migrations_apply_once_and_twice_is_a_no_op(fresh_database):
    versions = [m.version for m in available_migrations()]
    assert migrate(fresh_database) == versions
    assert migrate(fresh_database) == []
    with psycopg.connect(fresh_database) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == versions


def test_migrations_from_two_processes_at_once(fresh_database):
    code = "import sys; from citypilot.db.migrations import migrate; print(migrate(sys.argv[1]))"
    procs = [subprocess.Popen([sys.executable, "-c", code, fresh_database], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    applied = sorted(out.strip() for out, _ in outputs)
    versions = [m.version for m in available_migrations()]
    assert applied == sorted(["[]", str(versions)])
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(versions)


def test_an_edited_applied_migration_is_refused(fresh_database):
    migrate(fresh_database)
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(fresh_database)


def test_asset_history_is_append_only(fresh_database):
    migrate(fresh_database)
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("INSERT INTO asset_history (asset_id, actor, action, source, changes) VALUES ('A1', 'x', 'created', 't', '{}')")
        for statement in ("UPDATE asset_history SET actor = 'y'", "DELETE FROM asset_history", "TRUNCATE asset_history"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement)
        assert conn.execute("SELECT actor FROM asset_history").fetchall() == [("x",)]


def test_external_server_is_postgresql_15_or_newer():
    with psycopg.connect(EXTERNAL_PG) as conn:
        assert conn.info.server_version >= 150000


def test_import_benchmark_runs_on_a_throwaway_database_and_checks_idempotence(tmp_path):
    import json

    env = _env({"CITYPILOT_DATA_DIR": str(tmp_path / "never-used")})
    result = _run(["bench", "import", "--assets", "300"], env, timeout=120)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["first_import_result"] == {"created": 300, "updated": 0, "unchanged": 0}
    assert figures["reimport_same_result"] == {"created": 0, "updated": 0, "unchanged": 300}
    assert figures["reimport_1pct_changed_result"]["updated"] == 3
    assert figures["first_import_s"] > 0 and "embedded PostgreSQL" in figures["database"]
    assert not (tmp_path / "never-used").exists(), "the benchmark must not touch the configured data directory"


@pytest.mark.slow
def test_a_second_serve_on_the_same_data_directory_is_refused_and_the_first_keeps_running(tmp_path):
    env = _env(embedded_environ(tmp_path / "data"))
    port = int(env["CITYPILOT_HTTP_PORT"])
    first = _serve(env)
    try:
        _wait_ready(port, first, timeout=15)
        second = _run(["serve", "--port", str(free_port())], env)
        assert second.returncode == 1
        assert f"another citypilot (pid {first.pid}) is already serving" in second.stderr
        assert "Traceback" not in second.stderr
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["nats"] == "ok"
    finally:
        _stop(first, signal.SIGTERM)
    assert _processes_using(tmp_path / "data") == []


@pytest.mark.slow
def test_alarms_benchmark_runs_end_to_end_on_a_throwaway_stack(tmp_path):
    """A short, light run of `citypilot bench alarms`: the figures it prints come from a real feed."""
    import json

    env = _env({"CITYPILOT_DATA_DIR": str(tmp_path / "never-used")})
    result = _run(["bench", "alarms", "--rate", "300", "--duration", "20", "--clients", "3", "--twin-clients", "1",
                   "--power-cut-lights", "124", "--probes-per-s", "2"], env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    steady, during_cut = figures["fault_to_websocket_ms"], figures["fault_to_websocket_during_power_cut_ms"]
    assert steady["probes"] >= 20 and steady["samples"] + during_cut["samples"] == 3 * steady["probes"], \
        "every probe reached every client"
    assert figures["clients"]["closed_by_server"] == 0 and figures["clients"]["twin_frames_min"] > 0
    cut = figures["power_cut"]
    assert cut["lights"] == 124 and cut["all_alarms_in_s"] is not None
    # One alarm per cabinet (some of them may be folded in turn under a storm alarm of their commune).
    assert cut["cabinet_alarms"] == 4 and cut["lamp_alarms_folded"] == 124 and cut["top_level_alarms"] <= 6
    assert not (tmp_path / "never-used").exists(), "the benchmark must not touch the configured data directory"
