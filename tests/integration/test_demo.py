"""`citypilot demo` as a newcomer runs it: the control centre comes up with the simulated metropole live in it.

The demo is a real process (embedded PostgreSQL and NATS, the API, the simulator speaking MQTT to the
embedded broker); the test reads the city through the public API only, sends a command through the
bus the way the control centre will, and stops the demo with Ctrl-C (SIGINT).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from citypilot.runtime.embedded_nats import client_url

from ..conftest import embedded_environ
from .conftest import eventually

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CITYPILOT = str(Path(sys.executable).parent / "citypilot")
DIJON = {"street_light": 34_000, "lighting_cabinet": 1_100, "traffic_controller": 113, "bus": 180, "service_vehicle": 205,
         "camera": 269, "bollard_site": 26, "information_panel": 25, "building_alarm_panel": 180,
         "parking_sensor": 1_000, "air_quality_station": 20}


class Demo:
    """A running ``citypilot demo`` and what it printed."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CITYPILOT_")}
        self.env.update(embedded_environ(data_dir))
        self.data_dir = data_dir
        self.port = int(self.env["CITYPILOT_HTTP_PORT"])
        self.process = subprocess.Popen([CITYPILOT, "demo", "--data-dir", str(data_dir), *args], env=self.env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_ready(self, timeout: float = 120.0) -> str:
        """Wait for the ready banner; return the demo password it printed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            match = re.search(r"login\s+demo / (\S+)", line)
            if match:
                return match.group(1)
        raise AssertionError("the demo did not get ready:\n" + "".join(self.output))

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def api(self, password: str) -> httpx.Client:
        client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        r = client.post("/api/v1/auth/login", json={"username": "demo", "password": password})
        assert r.status_code == 200, r.text
        client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        return client


def leftovers(data_dir: Path) -> list[str]:
    """Processes still running on the demo's data (an embedded server that was not stopped)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if str(data_dir) in cmdline:
            found.append(cmdline)
    return found


def send_command(nats_url: str, device: str, body: dict[str, Any], attempts: int = 6) -> dict[str, Any]:
    """Publish a command on the device's command subject as the control centre will, and wait for its
    acknowledgement; devices fail or lose a few commands, so try again (with a new id) until one is done."""
    import nats

    async def go() -> dict[str, Any]:
        nc = await nats.connect(nats_url)
        acks: "asyncio.Queue[dict[str, Any]]" = asyncio.Queue()

        async def on_ack(msg: Any) -> None:
            await acks.put(json.loads(msg.data))

        await nc.subscribe(f"citypilot.v1.{device}.cmd-ack", cb=on_ack)
        last: dict[str, Any] = {}
        try:
            for _ in range(attempts):
                command_id = uuid.uuid4().hex
                await nc.publish(f"citypilot.cmd.v1.{device}", json.dumps({"id": command_id, **body}).encode())
                try:
                    while True:
                        last = await asyncio.wait_for(acks.get(), 5)
                        if last.get("id") == command_id:
                            break
                except asyncio.TimeoutError:
                    continue  # no answer: a lost command
                if last["status"] == "done":
                    return last
            return last
        finally:
            await nc.close()

    return asyncio.run(go())


def test_the_demo_shows_the_whole_metropole_live_and_obeys_commands_then_stops_cleanly(tmp_path):
    data_dir = tmp_path / "demo"
    # Twenty minutes before sunset, sixty times real time: the lights come on during the test.
    demo = Demo(data_dir, "--speed", "60", "--start", "2026-11-22T16:40")
    try:
        password = demo.wait_ready()
        banner = "".join(demo.output)
        assert "37,118 created" in banner and f"http://127.0.0.1:{demo.port}" in banner
        api = demo.api(password)

        def everything_reported() -> dict[str, Any] | None:
            summary = api.get("/api/v1/twin/summary").json()
            kinds = summary["kinds"]
            counts = {kind: k["assets"] for kind, k in kinds.items()}
            return summary if counts == DIJON and summary["total"]["never_reported"] == 0 else None

        summary = eventually(everything_reported, "every asset of the metropole reported", timeout=60)
        assert summary["total"]["online"] == sum(DIJON.values())

        def positions() -> dict[str, tuple[float, float]]:
            items = api.get("/api/v1/twin", params={"kind": "bus", "limit": 500}).json()["items"]
            return {i["id"]: (i["state"]["values"]["lat"], i["state"]["values"]["lon"]) for i in items}
        first = positions()
        time.sleep(6)  # buses report every 5 s
        later = positions()
        assert sum(1 for b in first if first[b] != later[b]) > 150, "buses move on their lines"

        def lights_on() -> bool:
            values = api.get("/api/v1/twin/SL-000001").json()["state"]["values"]
            return values["power_state"] == "on" and values["power_w"] > 0 or values["fault"] != "none"
        eventually(lights_on, "street lights on after sunset", timeout=60)

        cameras = api.get("/api/v1/twin", params={"kind": "camera", "limit": 500}).json()["items"]
        assert any(c["state"]["values"]["status"] != "online" for c in cameras), "broken cameras await repair"
        broken = {c["id"] for c in cameras if c["state"]["values"]["status"] != "online"}
        camera_alarms = eventually(lambda: api.get("/api/v1/alarms", params={"kind": "camera", "limit": 500}).json()["items"],
                                   "the broken cameras raised alarms for the police", timeout=30)
        assert {a["asset_id"] for a in camera_alarms} & broken and all(a["notify"] == ["police"] for a in camera_alarms)
        assert api.get("/api/v1/journal", params={"type": "registry.imported"}).json()["items"][-1]["actor"] == "citypilot-demo"

        metrics = httpx.get(f"http://127.0.0.1:{demo.port}/metrics").text
        dead = re.search(r'citypilot_ingest_messages_total\{outcome="dead_lettered"\} (\S+)', metrics)
        assert dead and float(dead.group(1)) == 0, "nothing the simulator sends is refused"

        nats_url = client_url("127.0.0.1", int(demo.env["CITYPILOT_NATS_PORT"]), data_dir)
        ack = send_command(nats_url, "PAN-001", {"command": "display", "params": {"message": "Test de la démo"}})
        assert ack["status"] == "done", ack
        eventually(lambda: api.get("/api/v1/twin/PAN-001").json()["state"]["values"]["message"] == "Test de la démo",
                   "the panel shows the message", timeout=20)
        refused = send_command(nats_url, "TL-0001", {"command": "select_plan", "params": {"plan": 99}})
        assert refused["status"] == "rejected" and "not a checked plan" in refused["reason"]
    finally:
        code = demo.stop()
    assert code == 0, "".join(demo.output)
    assert "citypilot demo stopped" in "".join(demo.output)
    assert not leftovers(data_dir)

    # Again on the same data: the import changes nothing, and the demo login has a new password.
    again = Demo(data_dir, "--speed", "60")
    try:
        new_password = again.wait_ready()
        assert "0 created, 0 updated, 37,118 unchanged" in "".join(again.output)
        assert new_password != password
        client = httpx.Client(base_url=f"http://127.0.0.1:{again.port}")
        assert client.post("/api/v1/auth/login", json={"username": "demo", "password": password}).status_code == 401
        again.api(new_password)
    finally:
        assert again.stop() == 0
    assert not leftovers(data_dir)


def test_the_demo_refuses_a_busy_port_and_external_servers(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYPILOT_")}
    env.update(embedded_environ(tmp_path))
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([CITYPILOT, "demo", "--data-dir", str(tmp_path), "--port", str(port)], env=env,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "another program is listening" in done.stderr
    env["CITYPILOT_DATABASE_URL"] = "postgresql://postgres@127.0.0.1:5432/postgres"
    done = subprocess.run([CITYPILOT, "demo", "--data-dir", str(tmp_path)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "must not be imported into a real registry" in done.stderr
    for args, message in [(["--scenario", "tsunami"], "unknown scenario"), (["--speed", "-1"], "--speed"),
                          (["--scale", "99"], "--scale")]:
        done = subprocess.run([CITYPILOT, "demo", "--data-dir", str(tmp_path), *args], env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2 and message in done.stderr
