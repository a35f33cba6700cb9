"""The MQTT device endpoint is authenticated: each device logs in with its own credential and may only
speak on its own topics; the broker learns of issued, revoked and retired credentials while serving.

Real clients (gmqtt and Debian's ``mosquitto_pub``, MQTT 3.1.1) against the embedded nats-server that
the ``stack`` fixture started in this process. The external NATS of the test machine has no MQTT
listener, and citypilot does not manage its users (docs/administration/production.md): embedded only,
but for ``citypilot nats-users``, which prints the users block an external NATS's operator installs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from citypilot.ingest import protocol
from citypilot.runtime.embedded_nats import find_nats_server, mqtt_login
from citypilot.runtime.ports import free_port

from .conftest import eventually, reading, utcnow

pytestmark = pytest.mark.integration
NOT_AUTHORISED = 5  # MQTT 3.1.1 CONNACK return code
CITYPILOT = str(Path(sys.executable).parent / "citypilot")


@pytest.fixture
def embedded(stack: Any) -> None:
    if stack.backend != "embedded":
        pytest.skip("the external NATS (127.0.0.1:4222) has no MQTT listener, and its users are its operator's")


async def mqtt_connect(port: int, username: str | None, password: str | None) -> Any:
    """A gmqtt client (MQTT 3.1.1, no automatic reconnection) logged in as ``username``; raises
    gmqtt's MQTTConnectError when the broker refuses the login."""
    import gmqtt
    from gmqtt.mqtt.constants import MQTTv311

    client = gmqtt.Client(f"citypilot-test-{uuid.uuid4().hex[:8]}")
    client.set_config({"reconnect_retries": 0})
    client.disconnected = asyncio.Event()
    client.on_disconnect = lambda *args: client.disconnected.set()
    if username is not None:
        client.set_auth_credentials(username, password)
    await client.connect("127.0.0.1", port, version=MQTTv311, keepalive=30)
    return client


async def refused_code(port: int, username: str | None, password: str | None) -> int | None:
    """The CONNACK refusal code of a login, None if it was accepted."""
    from gmqtt.mqtt.handler import MQTTConnectError

    try:
        client = await mqtt_connect(port, username, password)
    except MQTTConnectError as exc:
        return exc._code
    await client.disconnect()
    return None


async def publish_acknowledged(client: Any, items: list[tuple[str, bytes]]) -> None:
    for topic, payload in items:
        client.publish(topic, payload, qos=1)
    await asyncio.wait_for(client._persistent_storage.wait_empty(), 10)  # every PUBACK received


def mosquitto_pub(port: int, topic: str, message: bytes, *login: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", topic,
                           "-i", f"citypilot-test-{uuid.uuid4().hex[:8]}", "-m", message.decode(), *login],
                          capture_output=True, text=True, timeout=20)


def broker_log(stack: Any) -> str:
    return (stack.config.data_dir / "nats" / "nats-server.log").read_text(errors="replace")


@pytest.mark.usefixtures("embedded")
def test_a_device_logs_in_with_its_credential_and_its_readings_reach_the_twin(city, stack):
    """Issued while serve runs, the credential works at once (no restart), with gmqtt and mosquitto_pub."""
    light, cabinet = city.import_assets({"id": "SL-1", "kind": "street_light"},
                                        {"id": "CAB-1", "kind": "lighting_cabinet"})
    credential_id, token = city.credential(light)
    username = f"cpd_{credential_id}"
    assert token.startswith(username + "_")
    port, ts = stack.config.mqtt_port, utcnow().replace(microsecond=0)

    async def device() -> None:
        client = await mqtt_connect(port, username, token)
        try:
            await publish_acknowledged(client, [(protocol.topic(light, "telemetry"), reading(ts, power_w=31.5))])
        finally:
            await client.disconnect()

    asyncio.run(device())
    city.wait_state(light, lambda s: s["values"].get("power_w") == 31.5, "the device's own reading")

    done = mosquitto_pub(port, protocol.topic(light, "telemetry"), reading(ts + dt.timedelta(seconds=1), power_w=32.0),
                         "-u", username, "-P", token)
    assert done.returncode == 0, done.stderr
    city.wait_state(light, lambda s: s["values"].get("power_w") == 32.0, "mosquitto_pub's reading")

    # The same token is the login of one device only: under another credential's name it is refused.
    cabinet_id, _ = city.credential(cabinet)
    assert asyncio.run(refused_code(port, f"cpd_{cabinet_id}", token)) == NOT_AUTHORISED


@pytest.mark.usefixtures("embedded")
def test_a_device_cannot_speak_for_another_device(city, stack):
    """Publishing on another device's topic: the broker drops the message (it still answers PUBACK at
    QoS 1 and keeps the connection open), so nothing of it enters the stream or reaches the twin; it
    logs a 'Publish Violation', which serve turns into a dead letter. Subscribing to another device's command topic is refused in the SUBACK
    (0x80); the device's own command topic is granted and delivers."""
    import nats

    mine, other = city.import_assets({"id": "SL-1", "kind": "street_light"}, {"id": "SL-2", "kind": "street_light"})
    credential_id, token = city.credential(mine)
    port, ts = stack.config.mqtt_port, utcnow().replace(microsecond=0)

    async def scenario() -> tuple[list[str], dict[int, tuple[int, ...]], list[bytes], bool]:
        nc = await nats.connect(stack.endpoints.nats_url)
        seen: list[str] = []

        async def on_message(msg: Any) -> None:
            if msg.subject.split(".")[2] in (mine, other):
                seen.append(msg.subject)

        await nc.subscribe(f"{protocol.SUBJECT_ROOT}.>", cb=on_message)
        await nc.flush()
        client = await mqtt_connect(port, f"cpd_{credential_id}", token)
        granted: dict[int, tuple[int, ...]] = {}
        commands: list[bytes] = []
        client.on_subscribe = lambda _client, mid, qos, _props: granted.__setitem__(mid, qos)
        client.on_message = lambda _client, _topic, payload, _qos, _props: commands.append(payload) or 0
        try:
            # The other device's topic first, then its own: the broker forwards a connection's messages
            # in order, so once the second is seen on the bus, the first would have been seen before it.
            await publish_acknowledged(client, [(protocol.topic(other, "telemetry"), reading(ts, power_w=99.0)),
                                                (protocol.topic(mine, "telemetry"), reading(ts, power_w=12.0))])
            still_connected = client.is_connected
            for _ in range(100):
                if protocol.subject(mine, "telemetry") in seen:
                    break
                await asyncio.sleep(0.05)
            own_mid = client.subscribe(protocol.COMMAND_TOPIC.format(device=mine), qos=1)
            other_mid = client.subscribe(protocol.COMMAND_TOPIC.format(device=other), qos=1)
            for _ in range(100):
                if own_mid in granted and other_mid in granted:
                    break
                await asyncio.sleep(0.05)
            await nc.publish(protocol.COMMAND_TOPIC.format(device=mine).replace("/", "."), b'{"command": "mine"}')
            await nc.publish(protocol.COMMAND_TOPIC.format(device=other).replace("/", "."), b'{"command": "other"}')
            await nc.flush()
            for _ in range(100):
                if commands:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)  # a command for the other device would have come by now
            return seen, {0: granted.get(own_mid, ()), 1: granted.get(other_mid, ())}, commands, still_connected
        finally:
            await client.disconnect()
            await nc.close()

    seen, granted, commands, still_connected = asyncio.run(scenario())
    assert still_connected, "NATS keeps the connection open after a refused publish"
    assert seen == [protocol.subject(mine, "telemetry")], seen
    assert granted == {0: (1,), 1: (0x80,)}
    assert commands == [b'{"command": "mine"}']
    city.wait_state(mine, lambda s: s["values"].get("power_w") == 12.0, "the device's own reading")
    assert city.state(other) is None
    # The refusal, read from the broker's log, is a dead letter of the device whose topic was tried
    # (without payload: the broker does not keep it), and counted in /metrics.
    letters = eventually(lambda: city.dead_letters(other) or None, "the refusal dead-lettered", timeout=10)
    assert [(d["reason_code"], d["source"], d["subject"], d["payload_size"]) for d in letters] == [
        ("wrong_topic", "mqtt", protocol.subject(other, "telemetry"), 0)]
    assert "not logged in as the device of this topic" in letters[0]["reason"]
    assert "citypilot_mqtt_publish_refused_total" in city.client.get("/metrics").text
    log = broker_log(stack)
    assert f'Publish Violation - Subject "{protocol.subject(other, "telemetry")}"' in log
    assert f'Subscription Violation - Subject "{protocol.COMMAND_TOPIC.format(device=other).replace("/", ".")}"' in log


@pytest.mark.usefixtures("embedded")
def test_a_login_without_a_valid_password_is_refused_at_connect(city, stack):
    """Anonymous, wrong password, unknown user: CONNACK 5 (not authorised), nothing published. The NATS
    client port refuses anonymous connections too, and device credentials."""
    import nats

    light, = city.import_assets({"id": "SL-1", "kind": "street_light"})
    credential_id, token = city.credential(light)
    port, username = stack.config.mqtt_port, f"cpd_{credential_id}"
    for login in ((None, None), (username, None), (username, token[:-1] + ("A" if token[-1] != "A" else "B")),
                  ("cpd_000000000000", token), (username, ""), ("citypilot", token)):
        assert asyncio.run(refused_code(port, *login)) == NOT_AUTHORISED, login
    for args in ((), ("-u", username), ("-u", username, "-P", "wrong")):
        done = mosquitto_pub(port, protocol.topic(light, "telemetry"), reading(utcnow(), power_w=1.0), *args)
        assert done.returncode != 0 and "not authorised" in done.stderr.lower(), (args, done.stderr)
    assert city.state(light) is None

    async def nats_login(login: str) -> None:
        host_port = stack.endpoints.nats_url.rsplit("@", 1)[1]
        await nats.connect(f"nats://{login}{host_port}", allow_reconnect=False, max_reconnect_attempts=0,
                           connect_timeout=5)

    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        asyncio.run(nats_login(""))
    # A device's own credential opens MQTT only, not the NATS client port meant for citypilot's processes.
    assert asyncio.run(refused_code(port, username, token)) is None
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        asyncio.run(nats_login(f"{username}:{token}@"))


@pytest.mark.usefixtures("embedded")
def test_a_revoked_credential_is_disconnected_and_refused_without_restarting(city, stack):
    """When the revocation is answered, the broker has reloaded: the device's live connection is closed
    and its next login refused. The device's other credential keeps working."""
    light, = city.import_assets({"id": "SL-1", "kind": "street_light"})
    revoked_id, revoked_token = city.credential(light)
    kept_id, kept_token = city.credential(light)
    port = stack.config.mqtt_port

    async def scenario() -> None:
        revoked = await mqtt_connect(port, f"cpd_{revoked_id}", revoked_token)
        kept = await mqtt_connect(port, f"cpd_{kept_id}", kept_token)
        try:
            response = await asyncio.to_thread(city.client.delete, f"/api/v1/assets/{light}/credentials/{revoked_id}",
                                               headers=city.headers())
            assert response.status_code == 204, response.text
            # Already applied when the answer arrives: no waiting, no retry.
            assert await refused_code(port, f"cpd_{revoked_id}", revoked_token) == NOT_AUTHORISED
            await asyncio.wait_for(revoked.disconnected.wait(), 1)
            assert kept.is_connected and not kept.disconnected.is_set()
            await publish_acknowledged(kept, [(protocol.topic(light, "telemetry"), reading(utcnow(), power_w=7.0))])
        finally:
            await kept.disconnect()
        assert await refused_code(port, f"cpd_{revoked_id}", revoked_token) == NOT_AUTHORISED
        assert await refused_code(port, f"cpd_{kept_id}", kept_token) is None

    asyncio.run(scenario())
    city.wait_state(light, lambda s: s["values"].get("power_w") == 7.0, "the kept credential's reading")


@pytest.mark.usefixtures("embedded")
def test_retiring_an_asset_or_changing_credentials_outside_the_api_reaches_the_broker(city, stack):
    """A change the API did not make (here straight in SQL, as an import or another process would) is
    announced by the database; the serving process reloads the broker all the same. A credential without
    an MQTT hash (issued before migration 0003) still works over HTTP, not over MQTT."""
    light, bus = city.import_assets({"id": "SL-1", "kind": "street_light"}, {"id": "BUS-1", "kind": "bus"})
    light_id, light_token = city.credential(light)
    bus_id, bus_token = city.credential(bus)
    port = stack.config.mqtt_port
    assert asyncio.run(refused_code(port, f"cpd_{light_id}", light_token)) is None

    r = city.client.post(f"/api/v1/assets/{bus}/retire", json={"reason": "sold"}, headers=city.headers())
    assert r.status_code == 200, r.text
    eventually(lambda: asyncio.run(refused_code(port, f"cpd_{bus_id}", bus_token)) == NOT_AUTHORISED,
               "the retired bus refused by the broker", timeout=5)

    city.sql("UPDATE device_credentials SET mqtt_password_hash = NULL WHERE id = %s", (light_id,))
    eventually(lambda: asyncio.run(refused_code(port, f"cpd_{light_id}", light_token)) == NOT_AUTHORISED,
               "a credential without an MQTT hash refused by the broker", timeout=5)
    r = city.post(light_token, [{"device": light, "channel": "telemetry", "payload": {"values": {"power_w": 3.0}}}])
    assert r.status_code == 202, r.text
    listed = city.client.get(f"/api/v1/assets/{light}/credentials", headers=city.headers()).json()
    assert [(c["mqtt_username"], c["mqtt"]) for c in listed] == [(f"cpd_{light_id}", False)]


@pytest.mark.usefixtures("embedded")
def test_citypilots_internal_user_is_not_a_device(stack):
    """The internal login the tests and benchmarks use is the data directory's, refused once altered."""
    user, password = mqtt_login(stack.config.mqtt_port)
    assert user == "citypilot"
    assert (stack.config.data_dir / "nats" / "internal-secret").read_text().strip() == password
    assert asyncio.run(refused_code(stack.config.mqtt_port, user, password)) is None
    assert asyncio.run(refused_code(stack.config.mqtt_port, user, password + "x")) == NOT_AUTHORISED


def test_nats_users_prints_the_users_block_of_an_external_nats(city, stack, tmp_path):
    """The block `citypilot nats-users` prints, put into a NATS of one's own, lets citypilot (with the
    password given) and each device (with its token) in, and nobody else."""
    import nats

    light, retired = city.import_assets({"id": "SL-1", "kind": "street_light"}, {"id": "SL-2", "kind": "street_light"})
    credential_id, token = city.credential(light)
    retired_id, retired_token = city.credential(retired)
    r = city.client.post(f"/api/v1/assets/{retired}/retire", json={"reason": "removed"}, headers=city.headers())
    assert r.status_code == 200, r.text
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYPILOT_")}
    env.update(CITYPILOT_DATABASE_URL=stack.endpoints.database_url, CITYPILOT_DATA_DIR=str(tmp_path / "data"))
    printed = subprocess.run([CITYPILOT, "nats-users", "--password-stdin"], input="bus-pa55word\n", env=env,
                             capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    assert f'user: "cpd_{credential_id}"' in printed.stdout and f'"citypilot.v1.{light}.>"' in printed.stdout
    assert f"cpd_{retired_id}" not in printed.stdout and "bus-pa55word" not in printed.stdout

    client_port, mqtt_port = free_port(), free_port()
    config = tmp_path / "nats.conf"
    config.write_text(f'server_name: own\nlisten: "127.0.0.1:{client_port}"\njetstream {{ store_dir: "{tmp_path}/js" }}\n'
                      f'mqtt {{ listen: "127.0.0.1:{mqtt_port}" }}\n{printed.stdout}')
    server = subprocess.Popen([str(find_nats_server()), "-c", str(config)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        async def logins() -> tuple[int | None, int | None, int | None]:
            for _ in range(100):
                try:
                    nc = await nats.connect(f"nats://citypilot:bus-pa55word@127.0.0.1:{client_port}",
                                            allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=1)
                    break
                except Exception:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("citypilot's user could not log in to a NATS using the printed block")
            await nc.close()
            return (await refused_code(mqtt_port, f"cpd_{credential_id}", token),
                    await refused_code(mqtt_port, f"cpd_{retired_id}", retired_token),
                    await refused_code(mqtt_port, None, None))

        assert asyncio.run(logins()) == (None, NOT_AUTHORISED, NOT_AUTHORISED)
    finally:
        server.terminate()
        server.wait(10)


@pytest.mark.usefixtures("embedded")
def test_a_credential_change_the_broker_has_not_taken_is_not_reported_as_done(city, stack, monkeypatch):
    """When the broker cannot reload (simulated here: its refresh raises), the change stays committed,
    but the answers say it is not in force: the new token comes back with ``mqtt_active: false``, the
    revocation with 202 (a connected device may still be connected), and /metrics shows the lag."""
    light, = city.import_assets({"id": "SL-1", "kind": "street_light"})
    context = city.client.app.state.context

    async def broker_refuses() -> None:
        from citypilot.runtime.broker_sync import STALE

        STALE.set(1)
        raise RuntimeError("reload refused")

    monkeypatch.setattr(context.broker_users, "refresh", broker_refuses)
    issued = city.client.post(f"/api/v1/assets/{light}/credentials", headers=city.headers())
    assert issued.status_code == 201 and issued.json()["mqtt_active"] is False and "warning" in issued.json()
    revoked = city.client.delete(f"/api/v1/assets/{light}/credentials/{issued.json()['credential_id']}",
                                 headers=city.headers())
    assert revoked.status_code == 202 and revoked.json()["mqtt_disconnected"] is False
    assert "citypilot_broker_users_stale 1.0" in city.client.get("/metrics").text
    monkeypatch.undo()  # the real refresh, for the next tests
    listed = city.client.get(f"/api/v1/assets/{light}/credentials", headers=city.headers()).json()
    assert listed and all(c["revoked_at"] for c in listed)  # committed all the same
