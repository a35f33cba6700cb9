"""The notification configuration: a TOML file an administrator edits (``CITYPILOT_NOTIFY_CONFIG``).

It is checked completely at load, so a mistake stops citypilot at start with the file, the line and
the reason, instead of an alarm that silently reaches nobody at 3 a.m. Secrets (webhook keys, the SMTP
password) are read from environment variables named in the file, never from the file itself: the file
can be kept in version control and shown in a ticket.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# The alarm severities, highest first: the alarms' own scale, not a copy of it.
from citypilot.alarms.lifecycle import SEVERITIES
from citypilot.alarms.lifecycle import SEVERITY_RANK as SEVERITY_RANK  # used by outbox.py

from .quiet import QuietHours

EVENTS = ("raised", "escalated", "cleared")
CHANNEL_TYPES = ("webhook", "email")
DEFAULT_TIMEZONE = "Europe/Paris"

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h)\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}
_QUIET = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")
_ADDRESS = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+$")

_TOP_KEYS = ("smtp", "channel", "escalation", "base_url")
_SMTP_KEYS = ("host", "port", "starttls", "username", "password_env", "sender", "timeout_s")
_COMMON_KEYS = ("name", "type", "services", "min_severity", "events", "quiet_hours", "timezone", "quiet_except",
                "restricted")
_CHANNEL_KEYS = {"webhook": _COMMON_KEYS + ("url", "secret_env"), "email": _COMMON_KEYS + ("to",)}


class NotifyConfigError(ValueError):
    """The notification file is unreadable or wrong; ``line`` is 1-based, None when not found."""

    def __init__(self, path: Path | None, line: int | None, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        where = str(path) if path is not None else "notification configuration"
        super().__init__(f"{where}:{line}: {reason}" if line else f"{where}: {reason}")


@dataclass(frozen=True)
class SmtpSpec:
    host: str
    sender: str
    port: int = 587
    starttls: bool = True
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0


@dataclass(frozen=True)
class ChannelSpec:
    """One outbound channel and which notices it receives."""

    name: str
    type: str                                   # webhook | email
    services: tuple[str, ...] = ()              # "*" = every service; () = escalations only
    min_severity: str = "warning"
    events: tuple[str, ...] = ("raised", "escalated")
    quiet_hours: QuietHours | None = None
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo(DEFAULT_TIMEZONE))
    quiet_except: frozenset[str] = frozenset({"critical"})
    restricted: bool = False                    # "*" also receives public-safety (restricted) alarms
    url: str | None = None                      # webhook
    secret: bytes | None = field(default=None, repr=False)  # webhook HMAC key, from the environment
    to: tuple[str, ...] = ()                    # email recipients


@dataclass(frozen=True)
class NotifyConfig:
    channels: tuple[ChannelSpec, ...] = ()
    escalation: dict[str, float] = field(default_factory=dict)  # severity -> seconds unacknowledged
    escalation_channels: tuple[str, ...] = ()
    smtp: SmtpSpec | None = None
    base_url: str | None = None                 # the control room's address, for links in notifications
    path: Path | None = None

    @classmethod
    def empty(cls) -> NotifyConfig:
        """No file: no outbound channel (the in-app journal and live feed still tell operators)."""
        return cls()

    def channel(self, name: str) -> ChannelSpec | None:
        return next((c for c in self.channels if c.name == name), None)


def load_notify_config(path: Path | None, environ: Mapping[str, str] = os.environ) -> NotifyConfig:
    """Read and check the whole file; raise ``NotifyConfigError`` at the first mistake."""
    if path is None:
        return NotifyConfig.empty()
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise NotifyConfigError(path, None, "file not found (check CITYPILOT_NOTIFY_CONFIG)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NotifyConfigError(path, None, f"cannot read the file: {exc}") from None
    return parse_notify_config(text, path, environ)


def parse_notify_config(text: str, path: Path | None = None,
                        environ: Mapping[str, str] = os.environ) -> NotifyConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_POSITION.search(message)
        reason = _TOML_POSITION.sub("", message).strip()
        raise NotifyConfigError(path, int(match.group(1)) if match else None, f"not valid TOML: {reason}") from None
    locator = _Locator(text.splitlines())
    top = _Table(data, path, locator, None, None, "the top level")
    top.reject_unknown(_TOP_KEYS)

    base_url = top.opt_str("base_url")
    if base_url is not None:
        base_url = _http_url(top, "base_url", base_url).rstrip("/")

    smtp = None
    if "smtp" in data:
        smtp = _smtp(top.sub("smtp"), environ)

    raw_channels = data.get("channel", [])
    if not isinstance(raw_channels, list) or not all(isinstance(c, dict) for c in raw_channels):
        raise top.error("channel", "write channels as [[channel]] tables")
    escalation_table = top.sub("escalation") if "escalation" in data else None
    escalation, escalation_channels = _escalation(escalation_table) if escalation_table else ({}, ())
    names = {c.get("name") for c in raw_channels}
    for name in escalation_channels:  # first: a typo here would otherwise read "receives nothing" below
        if name not in names:
            assert escalation_table is not None
            raise escalation_table.error("channels", f"escalation channel {name!r} is not a [[channel]] name "
                                                     f"(known: {', '.join(sorted(map(str, names))) or 'none'})")

    channels: list[ChannelSpec] = []
    for index, raw in enumerate(raw_channels):
        table = _Table(raw, path, locator, "channel", index, f"[[channel]] number {index + 1}")
        spec = _channel(table, smtp, environ, escalation_channels)
        if any(c.name == spec.name for c in channels):
            raise table.error("name", f"channel name {spec.name!r} is used twice")
        channels.append(spec)
    return NotifyConfig(channels=tuple(channels), escalation=escalation, escalation_channels=escalation_channels,
                        smtp=smtp, base_url=base_url, path=path)


def parse_duration(text: str) -> float:
    """'90s', '15m', '2h' -> seconds; ValueError otherwise."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration like \"90s\", \"15m\" or \"2h\"")
    return float(int(match.group(1)) * _DURATION_UNITS[match.group(2)])


def parse_quiet_hours(text: str, tz: ZoneInfo) -> QuietHours:
    """'22:00-07:00' -> QuietHours; ValueError otherwise."""
    match = _QUIET.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a window like \"22:00-07:00\"")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise ValueError(f"{text!r}: hours go from 00 to 23 and minutes from 00 to 59")
    start, end = dt.time(h1, m1), dt.time(h2, m2)
    if start == end:
        raise ValueError(f"{text!r} starts and ends at the same time")
    return QuietHours(start, end, tz)


# --- parts of the file --------------------------------------------------------------------------


def _smtp(table: _Table, environ: Mapping[str, str]) -> SmtpSpec:
    table.reject_unknown(_SMTP_KEYS)
    host = table.req_str("host")
    port = table.opt_int("port", 587)
    if not 1 <= port <= 65535:
        raise table.error("port", f"port {port} is not between 1 and 65535")
    sender = table.req_str("sender")
    if not _ADDRESS.match(sender):
        raise table.error("sender", f"sender {sender!r} is not an e-mail address")
    username = table.opt_str("username")
    password = None
    password_env = table.opt_str("password_env")
    if password_env is not None:
        password = _secret(table, "password_env", password_env, environ)
    elif username is not None:
        raise table.error("username", "a username needs password_env, the environment variable holding the password")
    timeout = table.opt_number("timeout_s", 10.0)
    if not 0 < timeout <= 300:
        raise table.error("timeout_s", "timeout_s must be more than 0 and at most 300 seconds")
    return SmtpSpec(host=host, sender=sender, port=port, starttls=table.opt_bool("starttls", True),
                    username=username, password=password, timeout_s=timeout)


def _escalation(table: _Table) -> tuple[dict[str, float], tuple[str, ...]]:
    table.reject_unknown(SEVERITIES + ("channels",))
    delays: dict[str, float] = {}
    for severity in SEVERITIES:
        text = table.opt_str(severity)
        if text is not None:
            try:
                delays[severity] = parse_duration(text)
            except ValueError as exc:
                raise table.error(severity, str(exc)) from None
    return delays, table.str_list("channels", ())


def _channel(table: _Table, smtp: SmtpSpec | None, environ: Mapping[str, str],
             escalation_channels: tuple[str, ...]) -> ChannelSpec:
    name = table.req_str("name")
    if not _NAME.match(name):
        raise table.error("name", f"channel name {name!r} must be 1 to 64 of a-z, 0-9 and '-', "
                                  "starting with a letter or digit")
    table.what = f"channel {name!r}"
    kind = table.req_str("type")
    if kind not in CHANNEL_TYPES:
        raise table.error("type", f"type {kind!r} is not one of {', '.join(CHANNEL_TYPES)}")
    table.reject_unknown(_CHANNEL_KEYS[kind])

    services = table.str_list("services", ())
    if "*" in services and len(services) > 1:
        raise table.error("services", '"*" already means every service: list nothing else with it')
    if not services and name not in escalation_channels:
        raise table.error("services" if "services" in table.data else None,
                          "the channel receives nothing: give it services (or [\"*\"]), "
                          "or list it in [escalation] channels")
    min_severity = table.opt_str("min_severity") or "warning"
    if min_severity not in SEVERITIES:
        raise table.error("min_severity", f"min_severity {min_severity!r} is not one of {', '.join(SEVERITIES)}")
    events = table.str_list("events", ("raised", "escalated"))
    for event in events:
        if event not in EVENTS:
            raise table.error("events", f"event {event!r} is not one of {', '.join(EVENTS)}")
    if name in escalation_channels and "escalated" not in events:
        raise table.error("events", "the channel is an [escalation] channel: its events must include \"escalated\"")
    if not events:
        raise table.error("events", "events is empty: the channel would receive nothing")

    tz_name = table.opt_str("timezone") or DEFAULT_TIMEZONE
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise table.error("timezone", f"unknown time zone {tz_name!r} (an IANA name such as \"Europe/Paris\")") from None
    quiet = None
    quiet_text = table.opt_str("quiet_hours")
    if quiet_text is not None:
        try:
            quiet = parse_quiet_hours(quiet_text, tz)
        except ValueError as exc:
            raise table.error("quiet_hours", str(exc)) from None
    quiet_except = table.str_list("quiet_except", ("critical",))
    for severity in quiet_except:
        if severity not in SEVERITIES:
            raise table.error("quiet_except", f"severity {severity!r} is not one of {', '.join(SEVERITIES)}")

    common: dict[str, Any] = dict(
        name=name, type=kind, services=services, min_severity=min_severity, events=events, quiet_hours=quiet,
        timezone=tz, quiet_except=frozenset(quiet_except), restricted=table.opt_bool("restricted", False))
    if kind == "webhook":
        url = _http_url(table, "url", table.req_str("url"))
        secret = _secret(table, "secret_env", table.req_str("secret_env"), environ)
        return ChannelSpec(**common, url=url, secret=secret.encode("utf-8"))
    if smtp is None:
        raise table.error("type", "an email channel needs an [smtp] table (the server that sends the mail)")
    to = table.str_list("to", None)
    if not to:
        raise table.error("to" if "to" in table.data else None, "an email channel needs to = [\"address\", ...]")
    for address in to:
        if not _ADDRESS.match(address):
            raise table.error("to", f"{address!r} is not an e-mail address")
    return ChannelSpec(**common, to=to)


def _secret(table: _Table, key: str, variable: str, environ: Mapping[str, str]) -> str:
    if not _ENV_NAME.match(variable):
        raise table.error(key, f"{key} must name an environment variable, not hold the secret itself")
    value = environ.get(variable, "")
    if not value:
        raise table.error(key, f"environment variable {variable} is not set (it holds the secret of {table.what})")
    return value


def _http_url(table: _Table, key: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise table.error(key, f"{key} {url!r} is not an http:// or https:// URL")
    return url


# --- reading tables with line numbers -----------------------------------------------------------


class _Locator:
    """Finds the line of a key in the source text, for error messages (tomllib gives none)."""

    _HEADER = re.compile(r"^\s*\[")

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def header(self, table: str, index: int | None) -> int | None:
        pattern = (re.compile(rf"^\s*\[\[\s*{re.escape(table)}\s*\]\]") if index is not None
                   else re.compile(rf"^\s*\[\s*{re.escape(table)}\s*\]"))
        seen = 0
        for number, line in enumerate(self.lines, 1):
            if pattern.match(line):
                if index is None or seen == index:
                    return number
                seen += 1
        return None

    def key(self, table: str | None, index: int | None, key: str) -> int | None:
        start = 0 if table is None else self.header(table, index)
        if start is None:
            return None
        if table is None:  # a top-level key, or a table: [key] or [[key]]
            line = self.header(key, None) or self.header(key, 0)
            if line:
                return line
        pattern = re.compile(rf"^\s*(?:{re.escape(key)}|\"{re.escape(key)}\"|'{re.escape(key)}')\s*=")
        for number in range(start + 1 if table else 1, len(self.lines) + 1):
            line = self.lines[number - 1]
            if pattern.match(line):
                return number
            if self._HEADER.match(line):
                break
        return start or None


@dataclass
class _Table:
    data: dict[str, Any]
    path: Path | None
    locator: _Locator
    table: str | None        # TOML table name; None at the top level
    index: int | None        # position of an array-of-tables entry
    what: str                # how error messages name it

    def sub(self, name: str) -> _Table:
        value = self.data[name]
        if not isinstance(value, dict):
            raise self.error(name, f"{name} must be a [{name}] table")
        return _Table(value, self.path, self.locator, name, None, f"[{name}]")

    def error(self, key: str | None, reason: str) -> NotifyConfigError:
        if key is None:
            line = self.locator.header(self.table, self.index) if self.table else None
        else:
            line = self.locator.key(self.table, self.index, key)
        return NotifyConfigError(self.path, line, f"{self.what}: {reason}")

    def reject_unknown(self, known: tuple[str, ...]) -> None:
        for key in self.data:
            if key not in known:
                raise self.error(key, f"unknown key {key!r} (known: {', '.join(known)})")

    def req_str(self, key: str) -> str:
        value = self.opt_str(key)
        if value is None or not value.strip():
            raise self.error(key if key in self.data else None, f"{key} is required")
        return value

    def opt_str(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is not None and not isinstance(value, str):
            raise self.error(key, f"{key} must be a string, not {_toml_type(value)}")
        return value

    def opt_int(self, key: str, default: int) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"{key} must be an integer, not {_toml_type(value)}")
        return value

    def opt_number(self, key: str, default: float) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"{key} must be a number, not {_toml_type(value)}")
        return float(value)

    def opt_bool(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"{key} must be true or false, not {_toml_type(value)}")
        return value

    def str_list(self, key: str, default: tuple[str, ...] | None) -> tuple[str, ...]:
        if key not in self.data:
            return default or ()
        value = self.data[key]
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.error(key, f"{key} must be a list of non-empty strings")
        if len(set(value)) != len(value):
            raise self.error(key, f"{key} lists the same value twice")
        return tuple(value)


def _toml_type(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)
