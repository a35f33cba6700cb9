"""load_config: defaults < TOML file < environment < command-line overrides, with precise errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citypilot.config import SETTINGS, Config, ConfigError, config_fields, load_config, mask_url


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "citypilot.toml"
    path.write_text(text, encoding="utf-8")
    return path


def described(config: Config) -> dict[str, tuple[str, str]]:
    return {name: (value, source) for name, value, source in config.describe()}


# --- defaults ------------------------------------------------------------------------------------------

def test_defaults_without_file_or_environment():
    config = load_config(environ={})
    assert config.http_host == "127.0.0.1"
    assert config.http_port == 8080
    assert config.nats_port == 14222
    assert config.mqtt_port == 11883
    assert config.log_level == "info"
    assert config.log_format == "json"
    assert config.database_url is None and config.embedded_database
    assert config.nats_url is None and config.embedded_nats
    assert config.data_dir.is_absolute()
    assert "citypilot" in config.data_dir.parts[-1]
    assert all(source == "default" for _, _, source in config.describe())


def test_every_setting_is_a_config_field_and_described_once():
    assert [s.name for s in SETTINGS] == config_fields()
    config = load_config(environ={})
    assert [row[0] for row in config.describe()] == [s.name for s in SETTINGS]


def test_environment_variable_names_follow_the_setting_names():
    by_name = {s.name: s for s in SETTINGS}
    assert by_name["http_port"].env == "CITYPILOT_HTTP_PORT"
    assert by_name["http_port"].toml_path == ("http", "port")
    assert by_name["nats_monitor_port"].toml_path == ("nats", "monitor_port")
    assert by_name["auth_secret_key"].env == "CITYPILOT_AUTH_SECRET_KEY"


# --- precedence ----------------------------------------------------------------------------------------

def test_toml_file_overrides_defaults(tmp_path):
    path = write_toml(tmp_path, '[http]\nport = 9000\nhost = "0.0.0.0"\n[log]\nlevel = "debug"\n')
    config = load_config(path, environ={})
    assert (config.http_port, config.http_host, config.log_level) == (9000, "0.0.0.0", "debug")
    assert config.nats_port == 14222  # untouched settings keep their default
    rows = described(config)
    assert rows["http_port"] == ("9000", str(path))
    assert rows["nats_port"] == ("14222", "default")


def test_environment_overrides_toml_and_overrides_override_environment(tmp_path):
    path = write_toml(tmp_path, '[http]\nport = 9000\nhost = "10.0.0.1"\n[nats]\nport = 5000\n')
    environ = {"CITYPILOT_HTTP_PORT": "9100", "CITYPILOT_NATS_PORT": "5100"}
    config = load_config(path, environ=environ, overrides={"http_port": 9200, "log_level": None})
    assert config.http_port == 9200          # override > environment > file
    assert config.nats_port == 5100          # environment > file
    assert config.http_host == "10.0.0.1"    # file > default
    assert config.log_level == "info"        # an override of None means "not given"
    rows = described(config)
    assert rows["http_port"][1] == "command line"
    assert rows["nats_port"][1] == "environment"
    assert rows["http_host"][1] == str(path)
    assert rows["log_level"][1] == "default"


def test_config_file_named_by_environment_variable(tmp_path):
    path = write_toml(tmp_path, "[http]\nport = 9001\n")
    config = load_config(environ={"CITYPILOT_CONFIG": str(path)})
    assert config.http_port == 9001


def test_explicit_config_file_wins_over_citypilot_config(tmp_path):
    explicit = write_toml(tmp_path, "[http]\nport = 9001\n")
    other = tmp_path / "other.toml"
    other.write_text("[http]\nport = 9002\n")
    assert load_config(explicit, environ={"CITYPILOT_CONFIG": str(other)}).http_port == 9001


def test_empty_environment_variable_is_ignored(tmp_path):
    path = write_toml(tmp_path, "[http]\nport = 9000\n")
    config = load_config(path, environ={"CITYPILOT_HTTP_PORT": ""})
    assert config.http_port == 9000
    assert described(config)["http_port"][1] == str(path)


def test_environment_integer_may_carry_surrounding_spaces():
    assert load_config(environ={"CITYPILOT_HTTP_PORT": " 8181 "}).http_port == 8181


def test_data_dir_is_expanded_and_absolute(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    config = load_config(environ={"CITYPILOT_DATA_DIR": "~/city"})
    assert config.data_dir == (tmp_path / "city").resolve()
    relative = load_config(environ={"CITYPILOT_DATA_DIR": "rel/dir"})
    assert relative.data_dir.is_absolute() and relative.data_dir.parts[-2:] == ("rel", "dir")


def test_log_level_is_case_insensitive():
    assert load_config(environ={"CITYPILOT_LOG_LEVEL": "WARNING"}).log_level == "warning"


def test_external_urls_switch_off_embedded_servers():
    config = load_config(environ={"CITYPILOT_DATABASE_URL": "postgresql://db.example/city",
                                  "CITYPILOT_NATS_URL": "nats://nats.example:4222"})
    assert not config.embedded_database and not config.embedded_nats
    assert config.database_url == "postgresql://db.example/city"


# --- errors --------------------------------------------------------------------------------------------

def test_unknown_toml_key_is_named(tmp_path):
    path = write_toml(tmp_path, "[http]\nprot = 9000\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert "[http] prot" in str(err.value)
    assert str(path) in str(err.value)
    assert "[http] port" in str(err.value)  # the known settings are listed to help fix the typo


def test_unknown_toml_section_is_named(tmp_path):
    path = write_toml(tmp_path, "[htp]\nport = 9000\n")
    with pytest.raises(ConfigError, match=r"\[htp\] port"):
        load_config(path, environ={})


def test_top_level_toml_value_must_be_a_section(tmp_path):
    path = write_toml(tmp_path, "port = 9000\n")
    with pytest.raises(ConfigError, match="'port' must be a \\[section\\]"):
        load_config(path, environ={})


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})


def test_invalid_toml(tmp_path):
    path = write_toml(tmp_path, "[http\nport = 1\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path, environ={})


@pytest.mark.parametrize("value", ["abc", "80.5", "0x50", "eighty", "1e3", "true"])
def test_wrong_type_in_environment_names_the_variable(value):
    with pytest.raises(ConfigError) as err:
        load_config(environ={"CITYPILOT_HTTP_PORT": value})
    assert "CITYPILOT_HTTP_PORT" in str(err.value)
    assert repr(value) in str(err.value)


@pytest.mark.parametrize("toml_value", ['"abc"', "8080.5", "true", "[8080]"])
def test_wrong_type_in_toml_names_the_key(tmp_path, toml_value):
    path = write_toml(tmp_path, f"[http]\nport = {toml_value}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert "[http] port" in str(err.value)
    assert "expected an integer" in str(err.value)


def test_number_where_text_is_expected_in_toml(tmp_path):
    path = write_toml(tmp_path, "[log]\nlevel = 3\n")
    with pytest.raises(ConfigError, match=r"\[log\] level: expected a string"):
        load_config(path, environ={})


def test_wrong_type_in_override_names_the_option():
    with pytest.raises(ConfigError, match="--http-port"):
        load_config(environ={}, overrides={"http_port": "many"})


@pytest.mark.parametrize("variable, value", [
    ("CITYPILOT_HTTP_PORT", "0"),
    ("CITYPILOT_HTTP_PORT", "65536"),
    ("CITYPILOT_NATS_PORT", "70000"),
    ("CITYPILOT_MQTT_PORT", "0"),
    ("CITYPILOT_NATS_MONITOR_PORT", "65536"),
])
def test_invalid_port_names_the_variable(variable, value):
    with pytest.raises(ConfigError) as err:
        load_config(environ={variable: value})
    assert variable in str(err.value)
    assert "not a valid TCP port" in str(err.value)


def test_negative_port_is_refused():
    with pytest.raises(ConfigError, match="CITYPILOT_HTTP_PORT: must not be negative"):
        load_config(environ={"CITYPILOT_HTTP_PORT": "-1"})


def test_port_limits_are_inclusive_and_monitor_port_may_be_off():
    config = load_config(environ={"CITYPILOT_HTTP_PORT": "65535", "CITYPILOT_NATS_PORT": "1",
                                  "CITYPILOT_NATS_MONITOR_PORT": "0"})
    assert (config.http_port, config.nats_port, config.nats_monitor_port) == (65535, 1, 0)


def test_invalid_port_in_toml_is_refused(tmp_path):
    path = write_toml(tmp_path, "[http]\nport = 99999\n")
    with pytest.raises(ConfigError, match=r"citypilot.toml: \[http\] port: 99999 is not a valid TCP port"):
        load_config(path, environ={})


def test_unknown_log_level_and_format():
    with pytest.raises(ConfigError, match="CITYPILOT_LOG_LEVEL: must be one of debug, info, warning, error"):
        load_config(environ={"CITYPILOT_LOG_LEVEL": "verbose"})
    with pytest.raises(ConfigError, match="CITYPILOT_LOG_FORMAT: must be json or console"):
        load_config(environ={"CITYPILOT_LOG_FORMAT": "xml"})


@pytest.mark.parametrize("minutes", ["0", "10081"])
def test_token_lifetime_must_be_sensible(minutes):
    with pytest.raises(ConfigError, match="CITYPILOT_AUTH_TOKEN_TTL_MINUTES: a token lives 1 to 10080 minutes"):
        load_config(environ={"CITYPILOT_AUTH_TOKEN_TTL_MINUTES": minutes})


def test_database_url_with_wrong_scheme_is_refused_without_leaking_the_password():
    with pytest.raises(ConfigError) as err:
        load_config(environ={"CITYPILOT_DATABASE_URL": "mysql://app:hunter2@db.example/city"})
    assert "CITYPILOT_DATABASE_URL" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_nats_url_with_wrong_scheme_is_refused():
    with pytest.raises(ConfigError, match="CITYPILOT_NATS_URL: expected a nats:// URL"):
        load_config(environ={"CITYPILOT_NATS_URL": "http://nats.example:4222"})


@pytest.mark.parametrize("url", ["postgres://h/db", "postgresql://u:p@h:5432/db"])
def test_both_postgres_schemes_are_accepted(url):
    assert load_config(environ={"CITYPILOT_DATABASE_URL": url}).database_url == url


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=12))
def test_any_environment_port_text_gives_a_port_or_a_config_error_naming_the_variable(raw):
    try:
        config = load_config(environ={"CITYPILOT_HTTP_PORT": raw})
    except ConfigError as err:
        assert "CITYPILOT_HTTP_PORT" in str(err)
    else:
        if raw == "":
            assert config.http_port == 8080
        else:
            assert config.http_port == int(raw)
            assert 1 <= config.http_port <= 65535


# --- describe() and masking --------------------------------------------------------------------------

def test_describe_masks_secrets_and_url_passwords():
    environ = {
        "CITYPILOT_AUTH_SECRET_KEY": "s3cr3t-signing-key",
        "CITYPILOT_METRICS_TOKEN": "metrics-t0ken",
        "CITYPILOT_DATABASE_URL": "postgresql://city:db-pa55@db.example:5432/city",
        "CITYPILOT_NATS_URL": "nats://bus:nats-pa55@nats.example:4222",
    }
    config = load_config(environ=environ)
    assert config.auth_secret_key == "s3cr3t-signing-key"  # the value itself is kept for use
    rows = described(config)
    assert rows["auth_secret_key"] == ("********", "environment")
    assert rows["metrics_token"][0] == "********"
    assert rows["database_url"][0] == "postgresql://city:********@db.example:5432/city"
    assert rows["nats_url"][0] == "nats://bus:********@nats.example:4222"
    printed = repr(config.describe())
    for secret in ("s3cr3t-signing-key", "metrics-t0ken", "db-pa55", "nats-pa55"):
        assert secret not in printed


def test_describe_shows_unset_values_and_plain_values():
    rows = described(load_config(environ={}))
    assert rows["auth_secret_key"] == ("(unset)", "default")
    assert rows["database_url"] == ("(unset)", "default")
    assert rows["http_port"] == ("8080", "default")


@pytest.mark.parametrize("url, expected", [
    ("postgresql://u:secret@h:5432/db", "postgresql://u:********@h:5432/db"),
    ("postgresql://u:secret@h/db?sslmode=require", "postgresql://u:********@h/db?sslmode=require"),
    ("postgresql://:secret@h/db", "postgresql://:********@h/db"),
    ("postgresql://u:p%40ss@h/db", "postgresql://u:********@h/db"),
    ("postgresql://u:p@ss@h/db", "postgresql://u:********@h/db"),
    ("postgresql://u@h/db", "postgresql://u@h/db"),
    ("postgresql://h/db", "postgresql://h/db"),
    ("nats://n1.example:4222", "nats://n1.example:4222"),
    ("nats://user:pw@n1.example:4222", "nats://user:********@n1.example:4222"),
    # nats://TOKEN@host is NATS token authentication: the user part is the secret
    ("nats://s3cr3ttoken@n1.example:4222", "nats://********@n1.example:4222"),
    ("tls://s3cr3ttoken@n1.example:4222", "tls://********@n1.example:4222"),
])
def test_mask_url(url, expected):
    assert mask_url(url) == expected


def test_nats_token_url_is_masked_in_describe():
    config = load_config(environ={"CITYPILOT_NATS_URL": "nats://s3cr3ttoken@nats.example:4222"})
    assert "s3cr3ttoken" not in repr(config.describe())


def test_endpoints_print_their_urls_masked():
    from citypilot.runtime.infrastructure import Endpoints

    endpoints = Endpoints("postgresql://city:db-pa55@db.example/city", "nats://citypilot:internal-s3cret@127.0.0.1:14222",
                          "mqtt://127.0.0.1:11883", False, True)
    printed = repr(endpoints)
    assert "db-pa55" not in printed and "internal-s3cret" not in printed
    assert "nats://citypilot:********@127.0.0.1:14222" in printed
