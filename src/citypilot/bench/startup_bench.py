"""``citypilot bench startup``: how long ``citypilot serve`` takes to answer /readyz, and to stop.

A cold start (empty data directory: initdb, first migration, JetStream store created) then warm
restarts on the same data, each a real ``citypilot serve`` process on free ports, as an administrator
would run it.
"""

from __future__ import annotations

import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from citypilot.runtime.ports import free_port


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def _one_run(env: dict[str, str], port: int, timeout: float = 60) -> tuple[float, float]:
    start = time.perf_counter()
    process = subprocess.Popen([str(Path(sys.executable).parent / "citypilot"), "serve"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not _ready(port):
            if process.poll() is not None:
                raise RuntimeError(f"citypilot serve exited with code {process.returncode}")
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"not ready after {timeout} s")
            time.sleep(0.02)
        ready = time.perf_counter() - start
    finally:
        stop_start = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    return ready, time.perf_counter() - stop_start


def run_startup_benchmark(warm_runs: int = 3) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="citypilot-bench-") as tmp:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CITYPILOT_")}
        env.update(CITYPILOT_DATA_DIR=tmp, CITYPILOT_HTTP_PORT=str(port), CITYPILOT_NATS_PORT=str(free_port()),
                   CITYPILOT_MQTT_PORT=str(free_port()), CITYPILOT_NATS_MONITOR_PORT="0", CITYPILOT_LOG_LEVEL="warning")
        cold_ready, cold_stop = _one_run(env, port)
        warm = [_one_run(env, port) for _ in range(warm_runs)]
    return {
        "benchmark": "serve_startup", "configuration": "embedded PostgreSQL + NATS",
        "cold_start_to_ready_s": round(cold_ready, 2), "cold_stop_s": round(cold_stop, 2),
        "warm_start_to_ready_s_median": round(statistics.median(r for r, _ in warm), 2),
        "warm_stop_s_median": round(statistics.median(s for _, s in warm), 2), "warm_runs": warm_runs,
        "target_ready_s": 15,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
