"""Who may connect to the MQTT device endpoint: the user list and the broker configuration it becomes."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import bcrypt
import pytest

from citypilot.auth.broker_users import BrokerUser, device_user, device_users
from citypilot.auth.devices import BCRYPT_COST, mqtt_password_hash, mqtt_username
from citypilot.runtime.embedded_nats import (INTERNAL_USER, NatsPorts, find_nats_server, internal_secret, render_config,
                                             render_users)

HASH = "$2b$04$qyAp8lc33fTEbMifTNdM8ObnTzmgYCKpu4eWxIC7jS3YrdaXK2yhu"
PORTS = NatsPorts("127.0.0.1", 14222, 11883, 0)


def test_a_device_may_publish_under_its_own_topics_and_subscribe_to_its_own_commands_only():
    user = device_user("0a1b2c3d4e5f", "SL-000042", HASH)
    assert user == BrokerUser("cpd_0a1b2c3d4e5f", HASH, publish=("citypilot.v1.SL-000042.>",),
                              subscribe=("citypilot.cmd.v1.SL-000042",))


def test_device_users_leave_out_credentials_without_an_mqtt_hash_and_sort_by_name():
    rows = [("bbbbbbbbbbbb", "CAB-1", HASH), ("aaaaaaaaaaaa", "SL-1", HASH),
            ("cccccccccccc", "SL-2", None),           # issued before MQTT credentials: HTTP only
            ("dddddddddddd", "SL.3", HASH)]           # could not be a subject token (never an asset id)
    assert [(u.username, u.publish) for u in device_users(rows)] == [
        ("cpd_aaaaaaaaaaaa", ("citypilot.v1.SL-1.>",)), ("cpd_bbbbbbbbbbbb", ("citypilot.v1.CAB-1.>",))]
    assert device_users([]) == []


def test_the_mqtt_password_hash_is_a_cheap_bcrypt_of_the_whole_token():
    token = "cpd_0a1b2c3d4e5f_" + "x" * 43
    hashed = mqtt_password_hash(token)
    assert hashed.startswith(f"$2b$0{BCRYPT_COST}$")
    assert bcrypt.checkpw(token.encode(), hashed.encode())
    assert not bcrypt.checkpw(b"cpd_0a1b2c3d4e5f_wrong", hashed.encode())
    assert mqtt_username("0a1b2c3d4e5f") == "cpd_0a1b2c3d4e5f"


def test_the_users_block_has_the_internal_user_unrestricted_and_no_anonymous_user():
    text = "\n".join(render_users(HASH, [device_user("0a1b2c3d4e5f", "SL-1", HASH)]))
    assert f'{{ user: "{INTERNAL_USER}", password: "{HASH}" }}' in text
    assert ('{ user: "cpd_0a1b2c3d4e5f", password: "' + HASH + '", allowed_connection_types: ["MQTT"], '
            'permissions: { publish: { allow: ["citypilot.v1.SL-1.>"] }, subscribe: { allow: '
            '["citypilot.cmd.v1.SL-1"] } } }') in text
    assert "no_auth_user" not in text


@pytest.mark.parametrize("user", [
    BrokerUser('cpd_x", permissions: {}', HASH, ("a",), ("b",)),       # would end the string and grant all
    BrokerUser("cpd_x", HASH, ('citypilot.v1.X.>"] } }\n', ), ("b",)),
    BrokerUser("cpd_x", HASH, None, None),                             # a device is never unrestricted
    BrokerUser(INTERNAL_USER, HASH, ("a",), ("b",)),
    BrokerUser("cpd_x\n", HASH, ("a",), ("b",)),                       # a final newline
])
def test_nothing_unexpected_is_written_into_the_configuration(user):
    with pytest.raises(ValueError):
        render_users(HASH, [user])


def test_nats_server_accepts_the_generated_configuration(tmp_path):
    users = [device_user(f"{i:012x}", f"SL-{i}", mqtt_password_hash(f"cpd_{i:012x}_secret")) for i in range(3)]
    config = tmp_path / "nats.conf"
    config.write_text(render_config(PORTS, tmp_path / "js", bcrypt.hashpw(b"s", bcrypt.gensalt(4)).decode(), users))
    checked = subprocess.run([str(find_nats_server()), "-t", "-c", str(config)], capture_output=True, text=True,
                             timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_internal_secret_is_made_once_and_private(tmp_path: Path):
    first = internal_secret(tmp_path)
    assert len(first) >= 43 and internal_secret(tmp_path) == first
    path = tmp_path / "nats" / "internal-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["internal-secret"]  # no temporary file left behind


def test_an_empty_or_short_internal_secret_file_is_refused_not_used(tmp_path):
    """An empty secret would let anyone in as citypilot with an empty password."""
    from citypilot.runtime.embedded_nats import INTERNAL_SECRET_FILE, internal_secret
    from citypilot.runtime.errors import StartupError

    created = internal_secret(tmp_path)
    assert len(created) >= 32 and internal_secret(tmp_path) == created
    for content in ("", "\n", "short"):
        (tmp_path / "nats" / INTERNAL_SECRET_FILE).write_text(content)
        with pytest.raises(StartupError, match="no usable secret"):
            internal_secret(tmp_path)


def test_an_asset_id_with_a_final_newline_is_not_an_asset_id():
    from citypilot.registry.sheet import ASSET_ID_RE

    assert ASSET_ID_RE.match("SL-1") and not ASSET_ID_RE.match("SL-1\n")
