"""Effective configuration: defaults, then an optional TOML file, then environment variables.

Every setting is described once in ``SETTINGS`` (its type, default, environment variable, TOML key and
whether it is secret), so that ``citypilot config`` can print the whole effective configuration with
where each value came from, and a typo in a TOML file or a wrong type in a variable is a precise error
instead of a silently ignored value.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit, urlunsplit

import platformdirs


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or unknown."""


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    help: str
    secret: bool = False
    url: bool = False  # a URL whose password part is masked when printed

    @property
    def env(self) -> str:
        return "CITYPILOT_" + self.name.upper()

    @property
    def toml_path(self) -> tuple[str, str]:
        section, _, key = self.name.partition("_")
        return section, key


def _default_data_dir() -> str:
    return platformdirs.user_data_dir("citypilot", appauthor=False)


# Setting names are "<section>_<key>": CITYPILOT_NATS_PORT in the environment is [nats] port in TOML.
SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", str, None, "Data directory (embedded PostgreSQL and NATS stores, generated secret)."),
    Setting("http_host", str, "127.0.0.1", "Address the HTTP server listens on."),
    Setting("http_port", int, 8080, "Port the HTTP server listens on."),
    Setting("http_max_body_bytes", int, 64 * 1024 * 1024, "Largest accepted request body (uploads, imports)."),
    Setting("database_url", str, None, "External PostgreSQL URL; unset = embedded server in the data directory.", url=True),
    Setting("database_pool_size", int, 10, "Largest number of PostgreSQL connections per process."),
    Setting("nats_url", str, None, "External NATS URL; unset = embedded nats-server.", url=True),
    Setting("nats_host", str, "127.0.0.1", "Address the embedded nats-server listens on."),
    Setting("nats_port", int, 14222, "Client port of the embedded nats-server."),
    Setting("nats_monitor_port", int, 18222, "HTTP monitoring port of the embedded nats-server (0 = off)."),
    Setting("mqtt_host", str, "127.0.0.1", "Address the embedded MQTT listener (the device endpoint) listens on."),
    Setting("mqtt_port", int, 11883, "MQTT listener port of the embedded nats-server (the device endpoint)."),
    Setting("mqtt_url", str, None, "MQTT endpoint devices use when NATS is external (e.g. mqtt://nats.example:1883).", url=True),
    Setting("auth_secret_key", str, None, "Key that signs bearer tokens; unset = generated once in the data directory.", secret=True),
    Setting("auth_token_ttl_minutes", int, 480, "Lifetime of a login token (a control-room shift), 1 to 10080."),
    Setting("metrics_token", str, None, "If set, /metrics requires 'Authorization: Bearer <token>'.", secret=True),
    Setting("ingest_workers", int, 1, "Ingest workers run inside `citypilot serve` (0: only `citypilot worker` processes ingest)."),
    Setting("ingest_batch_size", int, 2500, "Messages a worker takes from the stream and commits at once."),
    Setting("ingest_max_message_bytes", int, 256 * 1024, "Largest device message applied; larger ones are dead-lettered."),
    Setting("ingest_max_future_s", int, 300, "How far ahead of the server clock a device timestamp may be."),
    Setting("ingest_max_age_days", int, 7, "How late a reading may arrive (older ones are dead-lettered)."),
    Setting("ingest_retention_days", int, 90, "Days of readings kept (older daily partitions are dropped)."),
    Setting("ingest_stream_max_bytes", int, 10 * 1024**3, "Disk the ingest stream may use while workers catch up."),
    Setting("ingest_stream_replicas", int, 1, "Copies of the ingest stream on a NATS cluster (3 in production; 1 embedded)."),
    Setting("offline_grace_percent", int, 50, "A device is offline after its reporting interval plus this share of it..."),
    Setting("offline_min_grace_s", int, 10, "...but never less than this grace, in seconds."),
    Setting("alarms_rules_dir", str, None, "Directory of alarm-rule files (*.toml); unset = the rules shipped with citypilot. "
                                           "Edits are picked up within seconds; a file with an error is refused."),
    Setting("alarms_engine", bool, True, "Run the alarm engine in this process (one leader runs at a time)."),
    Setting("notify_config", str, None, "TOML file of outbound notification channels (webhooks, e-mail); unset = in-app only."),
    Setting("map_style_url", str, None, "MapLibre style URL of a tile server for the web map; unset = the communes' "
                                        "outlines only (works with no internet)."),
    Setting("requests_services_file", str, None, "TOML file of the citizens' request categories (Open311 services); "
                                                 "unset = the categories shipped with citypilot."),
    Setting("requests_duplicate_radius_m", int, 50, "An open request of the same category this close (metres)..."),
    Setting("requests_duplicate_window_h", int, 72, "...and reported within this many hours: a new report is linked to it."),
    Setting("requests_auto_work_order", bool, True, "Open a work order for the service in charge with each new request."),
    Setting("requests_photo_max_bytes", int, 8 * 1024 * 1024, "Largest photo accepted with a request or a work order."),
    Setting("open311_jurisdiction_id", str, "dijon-metropole.fr", "This server's Open311 jurisdiction_id."),
    Setting("dispatch_routing_url", str, None, "OSRM-compatible routing service for travel times; unset = straight "
                                               "line with a detour factor."),
    Setting("dispatch_stale_after_s", int, 120, "A vehicle position older than this is not used to dispatch."),
    Setting("dispatch_detour_percent", int, 130, "Road distance as a share of the straight line (straight-line mode)."),
    Setting("commands_ack_timeout_s", int, 3, "A command a device has not answered in this many seconds is sent again..."),
    Setting("commands_max_attempts", int, 3, "...up to this many times in all (if its kind allows), then it has timed out."),
    Setting("commands_ttl_s", int, 60, "A command not carried out this long after it was authorised has expired."),
    Setting("commands_approval_threshold", int, 1000, "A batch to more assets than this needs a second person's approval."),
    Setting("lighting_rollup_every_s", int, 600, "Seconds between passes of the daily per-light energy roll-up "
                                                 "(the monthly KPI by street); 0 = not in this process."),
    Setting("log_level", str, "info", "debug, info, warning or error."),
    Setting("log_format", str, "json", "json (one JSON object per line) or console."),
)
_BY_NAME = {s.name: s for s in SETTINGS}
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Config:
    """The effective configuration of one citypilot process."""

    data_dir: Path
    http_host: str
    http_port: int
    http_max_body_bytes: int
    database_url: str | None
    database_pool_size: int
    nats_url: str | None
    nats_host: str
    nats_port: int
    nats_monitor_port: int
    mqtt_host: str
    mqtt_port: int
    mqtt_url: str | None
    auth_secret_key: str | None
    auth_token_ttl_minutes: int
    metrics_token: str | None
    ingest_workers: int
    ingest_batch_size: int
    ingest_max_message_bytes: int
    ingest_max_future_s: int
    ingest_max_age_days: int
    ingest_retention_days: int
    ingest_stream_max_bytes: int
    ingest_stream_replicas: int
    offline_grace_percent: int
    offline_min_grace_s: int
    alarms_rules_dir: str | None
    alarms_engine: bool
    notify_config: str | None
    map_style_url: str | None
    requests_services_file: str | None
    requests_duplicate_radius_m: int
    requests_duplicate_window_h: int
    requests_auto_work_order: bool
    requests_photo_max_bytes: int
    open311_jurisdiction_id: str
    dispatch_routing_url: str | None
    dispatch_stale_after_s: int
    dispatch_detour_percent: int
    commands_ack_timeout_s: int
    commands_max_attempts: int
    commands_ttl_s: int
    commands_approval_threshold: int
    lighting_rollup_every_s: int
    log_level: str
    log_format: str
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def embedded_nats(self) -> bool:
        return self.nats_url is None

    def describe(self) -> list[tuple[str, str, str]]:
        """(setting, printable value, source) for every setting, secrets masked."""
        rows = []
        for setting in SETTINGS:
            value = getattr(self, setting.name)
            rows.append((setting.name, mask(setting, value), self.sources.get(setting.name, "default")))
        return rows


def mask(setting: Setting, value: Any) -> str:
    """Printable form of a value: secrets become '********', URL passwords too."""
    if value is None:
        return "(unset)"
    if setting.secret:
        return "********"
    if setting.url:
        return mask_url(str(value))
    return str(value)


def mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        if parts.username and parts.scheme in ("nats", "tls", "ws", "wss"):  # nats://TOKEN@host: the user part is a token
            return urlunsplit(parts._replace(netloc="********@" + parts.netloc.rsplit("@", 1)[1]))
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:********@{netloc}"))


def _coerce(setting: Setting, raw: Any, origin: str) -> Any:
    if setting.type is int:
        if isinstance(raw, bool) or not isinstance(raw, (int, str)):  # a TOML 8080.5 is not silently truncated
            raise ConfigError(f"{origin}: expected an integer, got {raw!r}")
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{origin}: expected an integer, got {raw!r}") from None
        if value < 0:
            raise ConfigError(f"{origin}: must not be negative, got {value}")
        return value
    if setting.type is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return raw.strip().lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{origin}: expected true or false, got {raw!r}")
    if not isinstance(raw, str):
        raise ConfigError(f"{origin}: expected a string, got {raw!r}")
    return raw


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            document = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for section, table in document.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: top-level key {section!r} must be a [section]")
        for key, raw in table.items():
            name = f"{section}_{key}"
            if name not in _BY_NAME:
                known = ", ".join(f"[{s.toml_path[0]}] {s.toml_path[1]}" for s in SETTINGS)
                raise ConfigError(f"{path}: unknown setting [{section}] {key} (known: {known})")
            values[name] = raw
    return values


def load_config(
    config_file: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the effective configuration.

    Precedence, lowest first: defaults, the TOML file (``config_file`` or ``CITYPILOT_CONFIG``), the
    environment, then explicit ``overrides`` (command-line options).
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {s.name: s.default for s in SETTINGS}
    sources: dict[str, str] = {}

    path = config_file or environ.get("CITYPILOT_CONFIG")
    if path:
        path = Path(path).expanduser()
        for name, raw in _read_toml(path).items():
            values[name] = _coerce(_BY_NAME[name], raw, f"{path}: [{_BY_NAME[name].toml_path[0]}] {_BY_NAME[name].toml_path[1]}")
            sources[name] = str(path)

    for setting in SETTINGS:
        raw = environ.get(setting.env)
        if raw is not None and raw != "":
            values[setting.name] = _coerce(setting, raw, setting.env)
            sources[setting.name] = "environment"

    for name, raw in (overrides or {}).items():
        if raw is not None:
            values[name] = _coerce(_BY_NAME[name], raw, f"--{name.replace('_', '-')}")
            sources[name] = "command line"

    if values["data_dir"] is None:
        values["data_dir"] = _default_data_dir()
    values["data_dir"] = Path(values["data_dir"]).expanduser().resolve()
    def origin(name: str) -> str:
        """Where a value came from, as the person must fix it: variable, file and key, or option."""
        setting, source = _BY_NAME[name], sources.get(name)
        if source == "command line":
            return f"--{name.replace('_', '-')}"
        if source and source != "environment":
            return f"{source}: [{setting.toml_path[0]}] {setting.toml_path[1]}"
        return setting.env

    values["log_level"] = str(values["log_level"]).lower()
    if values["log_level"] not in LOG_LEVELS:
        raise ConfigError(f"{origin('log_level')}: must be one of {', '.join(LOG_LEVELS)}, got {values['log_level']!r}")
    if values["log_format"] not in ("json", "console"):
        raise ConfigError(f"{origin('log_format')}: must be json or console, got {values['log_format']!r}")
    for port in ("http_port", "nats_port", "mqtt_port", "nats_monitor_port"):
        if values[port] > 65535 or (values[port] == 0 and port != "nats_monitor_port"):
            raise ConfigError(f"{origin(port)}: {values[port]} is not a valid TCP port")
    if not 1 <= values["ingest_stream_replicas"] <= 5:
        raise ConfigError(f"{origin('ingest_stream_replicas')}: 1 to 5 replicas, got {values['ingest_stream_replicas']}")
    if not 1 <= values["ingest_batch_size"] <= 10_000:
        raise ConfigError(f"{origin('ingest_batch_size')}: 1 to 10000 messages, got {values['ingest_batch_size']}")
    if values["ingest_max_age_days"] > values["ingest_retention_days"]:
        raise ConfigError(f"{origin('ingest_max_age_days')}: a reading may not arrive later than it is kept "
                          f"({values['ingest_retention_days']} days of retention)")
    if not 1 <= values["auth_token_ttl_minutes"] <= 7 * 24 * 60:
        raise ConfigError(f"{origin('auth_token_ttl_minutes')}: a token lives 1 to 10080 minutes, "
                          f"got {values['auth_token_ttl_minutes']}")
    for url_name, schemes in (("database_url", ("postgresql", "postgres")), ("nats_url", ("nats", "tls", "ws", "wss"))):
        url = values[url_name]
        if url is not None and urlsplit(url).scheme not in schemes:
            raise ConfigError(f"{origin(url_name)}: expected a {schemes[0]}:// URL, got {mask_url(url)!r}")
    if not 1 <= values["requests_duplicate_radius_m"] <= 1000:
        raise ConfigError(f"{origin('requests_duplicate_radius_m')}: 1 to 1000 metres, got {values['requests_duplicate_radius_m']}")
    if not 100 <= values["dispatch_detour_percent"] <= 300:
        raise ConfigError(f"{origin('dispatch_detour_percent')}: 100 to 300 %, got {values['dispatch_detour_percent']}")
    if not 1 <= values["commands_ack_timeout_s"] <= 300:
        raise ConfigError(f"{origin('commands_ack_timeout_s')}: 1 to 300 seconds, got {values['commands_ack_timeout_s']}")
    if not 1 <= values["commands_max_attempts"] <= 10:
        raise ConfigError(f"{origin('commands_max_attempts')}: 1 to 10, got {values['commands_max_attempts']}")
    if not values["commands_ack_timeout_s"] <= values["commands_ttl_s"] <= 86_400:
        raise ConfigError(f"{origin('commands_ttl_s')}: from the ack timeout to 86400 seconds, got {values['commands_ttl_s']}")
    if not 1 <= values["commands_approval_threshold"] <= 1_000_000:
        raise ConfigError(f"{origin('commands_approval_threshold')}: 1 to 1000000 assets, got {values['commands_approval_threshold']}")
    if values["lighting_rollup_every_s"] and not 10 <= values["lighting_rollup_every_s"] <= 86_400:
        raise ConfigError(f"{origin('lighting_rollup_every_s')}: 0 (off) or 10 to 86400 seconds, "
                          f"got {values['lighting_rollup_every_s']}")
    if values["dispatch_routing_url"] is not None and urlsplit(values["dispatch_routing_url"]).scheme not in ("http", "https"):
        raise ConfigError(f"{origin('dispatch_routing_url')}: expected an http:// or https:// URL")
    return Config(**values, sources=sources)


def config_fields() -> list[str]:
    return [f.name for f in fields(Config) if f.name != "sources"]
