"""`citypilot sim` as a user types it: bad options refused with a clear message, the registry written."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from citypilot.cli.main import app
from citypilot.sim.scenarios import SCENARIOS

runner = CliRunner()
DOCS = Path(__file__).resolve().parents[2] / "docs" / "operators" / "simulator.md"


def sim(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, ["sim", *args], env=env)


@pytest.mark.parametrize("args, message", [
    (["--scenario", "tsunami"], "unknown scenario 'tsunami': one of normal, snow, flood"),
    (["--scale", "0"], "--scale 0: must be a whole number from 1"),
    (["--scale", "-2"], "--scale -2"),
    (["--scale", "51"], "--scale 51"),
    (["--speed", "0"], "--speed 0.0: must be above 0"),
    (["--speed", "-3"], "--speed -3.0"),
    (["--speed", "1e9"], "at most 3600"),
    (["--speed", "nan"], "--speed nan"),
    (["--start", "yesterday"], "--start 'yesterday': expected an ISO 8601 date"),
    (["--mqtt", "http://example.org"], "expected mqtt://"),
    (["--mqtt", "mqtt://127.0.0.1:99999"], "--mqtt"),
])
def test_bad_options_are_refused_before_anything_starts(args, message):
    result = sim(*args, "--duration", "1")
    assert result.exit_code == 2, result.output
    assert message in result.output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_broker_is_named(tmp_path):
    port = free_port()  # nothing listens there
    result = sim("--mqtt", f"mqtt://127.0.0.1:{port}", "--duration", "1")
    assert result.exit_code == 1
    assert f"cannot reach the MQTT broker at mqtt://127.0.0.1:{port}" in result.output


def test_without_a_running_citypilot_it_says_what_to_start(tmp_path):
    result = sim("--duration", "1", env={"CITYPILOT_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 1
    assert "start `citypilot serve` first, or give --mqtt" in result.output


@pytest.mark.parametrize("name, first", [("city.csv", b"id,kind,name"), ("city.geojson", b'{"type":"FeatureCollection"')])
def test_the_registry_is_written_for_an_import(tmp_path, name, first):
    path = tmp_path / name
    result = sim("--write-registry", str(path))
    assert result.exit_code == 0, result.output
    assert path.read_bytes().startswith(first)
    assert "37,118 assets" in result.output and f"citypilot assets import {path}" in result.output
    assert not list(tmp_path.glob("*.part"))


def test_the_registry_cannot_be_written_where_there_is_no_directory(tmp_path):
    result = sim("--write-registry", str(tmp_path / "missing" / "city.csv"))
    assert result.exit_code == 1 and "cannot write" in result.output


def test_every_scenario_is_documented_for_operators_as_the_code_runs_it():
    text = " ".join(DOCS.read_text().split())
    for scenario in SCENARIOS.values():
        assert f"`{scenario.name}`" in text
        assert " ".join(scenario.operator_sees.split()) in text, scenario.name


def test_by_default_it_logs_in_to_the_embedded_broker_of_the_data_directory(tmp_path):
    from citypilot.cli.sim import default_target
    from citypilot.config import load_config
    from citypilot.runtime.embedded_nats import INTERNAL_USER, internal_secret

    secret = internal_secret(tmp_path)  # what `citypilot serve` writes at its first start
    config = load_config(environ={"CITYPILOT_DATA_DIR": str(tmp_path), "CITYPILOT_MQTT_PORT": "12345"})
    target = default_target(config, None, None)
    assert (target.host, target.port, target.username, target.password) == ("127.0.0.1", 12345, INTERNAL_USER, secret)
    assert secret not in str(target), "the password is never printed"
    external = load_config(environ={"CITYPILOT_DATA_DIR": str(tmp_path), "CITYPILOT_NATS_URL": "nats://nats.example:4222",
                                    "CITYPILOT_MQTT_URL": "mqtt://nats.example:1883"})
    assert str(default_target(external, "sim", "pw")) == "mqtt://sim@nats.example:1883"
