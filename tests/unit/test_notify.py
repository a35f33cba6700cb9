"""Outbound notifications without servers: the configuration file and its errors, routing, quiet
hours (midnight and daylight-saving changes), the retry schedule, the webhook signature, the e-mail."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from citypilot.notify.channels import (
    DeliveryError,
    WebhookChannel,
    build_email,
    email_subject,
    encode_payload,
    signature,
)
from citypilot.notify.config import (
    NotifyConfig,
    NotifyConfigError,
    load_notify_config,
    parse_duration,
    parse_notify_config,
)
from citypilot.notify.outbox import AlarmNotice, notification_key, payload, routes
from citypilot.notify.quiet import (
    BACKOFF_CAP_S,
    MAX_ATTEMPTS,
    QuietHours,
    backoff,
    deferred_until,
)

PARIS = ZoneInfo("Europe/Paris")
UTC = dt.timezone.utc
ENV = {"CITYPILOT_WEBHOOK_SECRET_LIGHTING": "s3cret-lighting", "CITYPILOT_SMTP_PASSWORD": "mail-pass"}

FULL = """\
base_url = "https://citypilot.example.org/"

[smtp]
host = "smtp.example.org"
port = 587
starttls = true
username = "citypilot"
password_env = "CITYPILOT_SMTP_PASSWORD"
sender = "citypilot@example.org"
timeout_s = 10

[[channel]]
name = "lighting-webhook"
type = "webhook"
url = "https://gmao.example.org/hooks/citypilot"
secret_env = "CITYPILOT_WEBHOOK_SECRET_LIGHTING"
services = ["lighting"]
min_severity = "minor"
events = ["raised", "escalated", "cleared"]
quiet_hours = "22:00-07:00"
timezone = "Europe/Paris"
quiet_except = ["critical"]

[[channel]]
name = "police-mail"
type = "email"
to = ["poste@police.example.org"]
services = ["police"]

[[channel]]
name = "supervisors-mail"
type = "email"
to = ["astreinte@example.org", "chef@example.org"]

[[channel]]
name = "everything"
type = "email"
to = ["log@example.org"]
services = ["*"]
events = ["raised"]

[escalation]
critical = "5m"
major = "15m"
minor = "2h"
channels = ["supervisors-mail"]
"""


def parse(text: str, environ: dict[str, str] | None = None) -> NotifyConfig:
    return parse_notify_config(text, Path("notify.toml"), ENV if environ is None else environ)


def error(text: str, environ: dict[str, str] | None = None) -> NotifyConfigError:
    with pytest.raises(NotifyConfigError) as caught:
        parse(text, environ)
    return caught.value


def notice(event: str = "raised", severity: str = "major", services: tuple[str, ...] = ("lighting",),
           restricted: bool = False, **over: object) -> AlarmNotice:
    fields: dict[str, object] = dict(
        alarm_id=42, occurrence=1, event=event, severity=severity, services=services, title="Lamp failure",
        type="lamp_failure", asset_id="SL-000123", kind="streetlight", commune="Dijon",
        at=dt.datetime(2025, 6, 1, 20, 13, 5, tzinfo=UTC), state="raised", restricted=restricted,
        data={"lamp_current_a": 0.0})
    fields.update(over)
    return AlarmNotice(**fields)  # type: ignore[arg-type]


# --- the configuration file -------------------------------------------------------------------------


def test_the_documented_example_loads_with_its_defaults():
    config = parse(FULL)
    assert [c.name for c in config.channels] == ["lighting-webhook", "police-mail", "supervisors-mail", "everything"]
    hook = config.channels[0]
    assert hook.type == "webhook" and hook.url == "https://gmao.example.org/hooks/citypilot"
    assert hook.secret == b"s3cret-lighting" and "s3cret" not in repr(hook)
    assert hook.min_severity == "minor" and hook.events == ("raised", "escalated", "cleared")
    assert hook.quiet_hours == QuietHours(dt.time(22), dt.time(7), PARIS)
    assert hook.quiet_except == frozenset({"critical"})
    police = config.channel("police-mail")
    assert police is not None and police.to == ("poste@police.example.org",)
    assert police.min_severity == "warning" and police.events == ("raised", "escalated")
    assert police.quiet_hours is None and police.timezone.key == "Europe/Paris"
    assert config.escalation == {"critical": 300.0, "major": 900.0, "minor": 7200.0}
    assert config.escalation_channels == ("supervisors-mail",)
    assert config.smtp is not None and config.smtp.password == "mail-pass" and "mail-pass" not in repr(config.smtp)
    assert config.smtp.port == 587 and config.smtp.starttls and config.smtp.timeout_s == 10.0
    assert config.base_url == "https://citypilot.example.org"


def test_no_file_means_no_channel_and_a_missing_file_is_an_error(tmp_path):
    assert load_notify_config(None) == NotifyConfig.empty() and NotifyConfig.empty().channels == ()
    with pytest.raises(NotifyConfigError, match="file not found"):
        load_notify_config(tmp_path / "absent.toml")
    path = tmp_path / "notify.toml"
    path.write_text(FULL)
    assert len(load_notify_config(path, ENV).channels) == 4


def test_a_toml_syntax_error_gives_its_line():
    err = error('[[channel]]\nname = "a"\ntype = webhook\n')
    assert err.line == 3 and "not valid TOML" in err.reason and str(err).startswith("notify.toml:3: ")


@pytest.mark.parametrize(("edit", "line", "words"), [
    # (replace this, with that) in FULL; the line the error points at; words the reason contains
    (('min_severity = "minor"', 'min_severity = "minor"\ncolour = "red"'), 19, ["unknown key 'colour'"]),
    (('name = "police-mail"', 'name = "Police Mail"'), 25, ["'Police Mail'", "a-z"]),
    (('name = "everything"', 'name = "police-mail"'), 36, ["used twice"]),
    (('type = "email"\nto = ["poste', 'type = "sms"\nto = ["poste'), 26, ["'sms'", "webhook, email"]),
    (('url = "https://gmao', 'url = "ftp://gmao'), 15, ["http:// or https://"]),
    (('secret_env = "CITYPILOT_WEBHOOK_SECRET_LIGHTING"', 'secret_env = "hunter2 hunter2"'), 16,
     ["must name an environment variable"]),
    (('min_severity = "minor"', 'min_severity = "high"'), 18, ["'high'", "critical, major, minor, warning"]),
    (('events = ["raised", "escalated", "cleared"]', 'events = ["raised", "acknowledged"]'), 19,
     ["'acknowledged'"]),
    (('quiet_hours = "22:00-07:00"', 'quiet_hours = "22h-7h"'), 20, ["22:00-07:00"]),
    (('quiet_hours = "22:00-07:00"', 'quiet_hours = "25:00-07:00"'), 20, ["00 to 23"]),
    (('quiet_hours = "22:00-07:00"', 'quiet_hours = "07:00-07:00"'), 20, ["same time"]),
    (('timezone = "Europe/Paris"', 'timezone = "Europe/Dijon"'), 21, ["unknown time zone"]),
    (('quiet_except = ["critical"]', 'quiet_except = ["urgent"]'), 22, ["'urgent'"]),
    (('to = ["poste@police.example.org"]', 'to = ["poste"]'), 27, ["not an e-mail address"]),
    (('to = ["poste@police.example.org"]\n', ''), 24, ["needs to ="]),
    (('services = ["police"]', 'services = []'), 28, ["receives nothing"]),
    (('services = ["*"]', 'services = ["*", "police"]'), 39, ['"*" already means every service']),
    (('events = ["raised"]\n', 'events = []\n'), 40, ["events is empty"]),
    (('port = 587', 'port = "587"'), 5, ["port must be an integer, not a string"]),
    (('port = 587', 'port = 70000'), 5, ["between 1 and 65535"]),
    (('sender = "citypilot@example.org"', 'sender = "citypilot"'), 9, ["not an e-mail address"]),
    (('password_env = "CITYPILOT_SMTP_PASSWORD"\n', ''), 7, ["username needs password_env"]),
    (('host = "smtp.example.org"\n', ''), 3, ["host is required"]),
    (('timeout_s = 10', 'timeout_s = 0'), 10, ["timeout_s"]),
    (('major = "15m"', 'major = "15 minutes"'), 44, ['"15m"']),
    (('major = "15m"', 'major = "0m"'), 44, ["not a duration"]),
    (('minor = "2h"', 'minor = "2h"\nurgent = "1m"'), 46, ["unknown key 'urgent'"]),
    (('channels = ["supervisors-mail"]', 'channels = ["supervisor-mail"]'), 46, ["'supervisor-mail'", "known:"]),
    (('base_url = "https://citypilot.example.org/"', 'base_url = "citypilot.example.org"'), 1, ["base_url"]),
    (('[escalation]', 'colour = "red"\n[escalation]'), 42, ["channel 'everything': unknown key 'colour'"]),
    (('base_url =', 'colour = "red"\nbase_url ='), 1, ["the top level: unknown key 'colour'"]),
    (('[escalation]', '[escalations]'), 42, ["unknown key 'escalations'"]),
    (('[[channel]]\nname = "police-mail"', '[[channels]]\nname = "police-mail"'), 24, ["unknown key 'channels'"]),
])
def test_every_mistake_is_an_error_with_its_line(edit, line, words):
    old, new = edit
    assert old in FULL
    err = error(FULL.replace(old, new, 1))
    assert err.line == line, err
    for word in words:
        assert word in str(err), err
    assert err.path == Path("notify.toml")


def test_a_missing_secret_variable_is_named():
    err = error(FULL, {"CITYPILOT_SMTP_PASSWORD": "x"})
    assert err.line == 16 and "CITYPILOT_WEBHOOK_SECRET_LIGHTING is not set" in err.reason
    assert "lighting-webhook" in err.reason
    err = error(FULL, {"CITYPILOT_WEBHOOK_SECRET_LIGHTING": "x", "CITYPILOT_SMTP_PASSWORD": ""})
    assert err.line == 8 and "CITYPILOT_SMTP_PASSWORD is not set" in err.reason


def test_an_email_channel_needs_an_smtp_table_and_an_escalation_channel_its_event():
    without_smtp = FULL[FULL.index("[[channel]]"):]
    err = error(without_smtp)
    assert "needs an [smtp] table" in err.reason and err.line == 15  # the type line of police-mail
    err = error(FULL.replace('to = ["astreinte@example.org", "chef@example.org"]',
                             'to = ["astreinte@example.org"]\nevents = ["raised"]'))
    assert 'must include "escalated"' in err.reason and err.line == 34


def test_durations():
    assert [parse_duration(t) for t in ("90s", "15m", "2h")] == [90.0, 900.0, 7200.0]
    for bad in ("", "15", "1d", "-5m", "1.5h", "0s"):
        with pytest.raises(ValueError):
            parse_duration(bad)


# --- routing -----------------------------------------------------------------------------------------


def names(config: NotifyConfig, n: AlarmNotice) -> list[str]:
    return [c.name for c in routes(config, n)]


def test_routes_follow_services_severity_and_events():
    config = parse(FULL)
    assert names(config, notice()) == ["lighting-webhook", "everything"]
    assert names(config, notice(severity="warning")) == ["everything"]            # below the webhook's minor
    assert names(config, notice(event="cleared")) == ["lighting-webhook"]         # only the webhook wants clears
    assert names(config, notice(services=("roads",))) == ["everything"]
    assert names(config, notice(services=("roads", "police"))) == ["police-mail", "everything"]


def test_escalations_also_go_to_the_escalation_channels_whatever_their_services():
    config = parse(FULL)
    assert names(config, notice(event="escalated")) == ["lighting-webhook", "supervisors-mail"]
    assert names(config, notice(event="escalated", services=("roads",))) == ["supervisors-mail"]
    assert names(config, notice(event="raised", services=("roads",))) == ["everything"]  # not the supervisors


def test_restricted_alarms_reach_named_services_and_supervisors_not_catch_all_channels():
    config = parse(FULL)
    assert names(config, notice(services=("police",), restricted=True)) == ["police-mail"]
    assert names(config, notice(event="escalated", services=("police",), restricted=True)) == [
        "police-mail", "supervisors-mail"]
    opted_in = parse(FULL.replace('services = ["*"]', 'services = ["*"]\nrestricted = true'))
    assert names(opted_in, notice(services=("police",), restricted=True)) == ["police-mail", "everything"]


def test_key_and_payload():
    n = notice(at=dt.datetime(2025, 6, 1, 22, 13, 5, tzinfo=PARIS))
    assert notification_key(n, "police-mail") == "42:1:raised:police-mail"
    body = payload(n, "https://cp.example.org")
    assert body["at"] == "2025-06-01T22:13:05+02:00" and body["url"] == "https://cp.example.org/alarms/42"
    assert {"id", "occurrence", "event", "severity", "type", "title", "asset", "kind", "commune", "at", "state",
            "services", "data"} <= set(body)
    assert "url" not in payload(n)


# --- quiet hours -------------------------------------------------------------------------------------


def paris(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=PARIS)


def test_quiet_hours_across_midnight():
    night = QuietHours(dt.time(22), dt.time(7), PARIS)
    assert not night.active(paris(2025, 6, 1, 21, 59))
    assert night.active(paris(2025, 6, 1, 22, 0)) and night.active(paris(2025, 6, 2, 3, 0))
    assert night.active(paris(2025, 6, 2, 6, 59)) and not night.active(paris(2025, 6, 2, 7, 0))
    assert night.ends_after(paris(2025, 6, 1, 23, 30)) == paris(2025, 6, 2, 7, 0)   # tomorrow morning
    assert night.ends_after(paris(2025, 6, 2, 1, 0)) == paris(2025, 6, 2, 7, 0)     # this morning
    assert night.ends_after(paris(2025, 6, 2, 1, 0)).tzinfo == UTC
    assert night.ends_after(paris(2025, 6, 2, 12, 0)) == paris(2025, 6, 2, 12, 0)  # not quiet: now
    day = QuietHours(dt.time(12), dt.time(14), PARIS)
    assert day.active(paris(2025, 6, 2, 13, 0)) and not day.active(paris(2025, 6, 2, 23, 0))
    assert day.ends_after(paris(2025, 6, 2, 12, 30)) == paris(2025, 6, 2, 14, 0)
    with pytest.raises(ValueError, match="naive"):
        night.active(dt.datetime(2025, 6, 2, 1, 0))


def test_quiet_hours_across_daylight_saving_changes():
    night = QuietHours(dt.time(22), dt.time(7), PARIS)
    # Spring forward (30 March 2025, 02:00 CET -> 03:00 CEST): the night is an hour shorter.
    start = paris(2025, 3, 29, 22, 0)
    end = night.ends_after(start)
    assert end == dt.datetime(2025, 3, 30, 5, 0, tzinfo=UTC) and end - start == dt.timedelta(hours=8)
    assert night.active(dt.datetime(2025, 3, 30, 4, 59, tzinfo=UTC))       # 06:59 CEST
    assert not night.active(dt.datetime(2025, 3, 30, 5, 0, tzinfo=UTC))    # 07:00 CEST
    # Fall back (26 October 2025, 03:00 CEST -> 02:00 CET): an hour longer.
    start = paris(2025, 10, 25, 22, 0)
    end = night.ends_after(start)
    assert end == dt.datetime(2025, 10, 26, 6, 0, tzinfo=UTC) and end - start == dt.timedelta(hours=10)
    # A window ending inside the skipped hour ends when the clock jumps over it.
    early = QuietHours(dt.time(23), dt.time(2, 30), PARIS)
    jump = dt.datetime(2025, 3, 30, 1, 0, tzinfo=UTC)  # 02:00 CET becomes 03:00 CEST
    assert early.ends_after(dt.datetime(2025, 3, 30, 0, 40, tzinfo=UTC)) == jump
    assert early.active(jump - dt.timedelta(seconds=1)) and not early.active(jump)
    # A window ending in the repeated hour ends at its first occurrence.
    assert early.ends_after(dt.datetime(2025, 10, 26, 0, 10, tzinfo=UTC)) == dt.datetime(2025, 10, 26, 0, 30,
                                                                                         tzinfo=UTC)


def test_deferral_spares_exempt_severities():
    config = parse(FULL)
    hook = config.channels[0]
    night = paris(2025, 6, 1, 23, 0)
    assert deferred_until(hook, "major", night) == paris(2025, 6, 2, 7, 0)
    assert deferred_until(hook, "critical", night) is None
    assert deferred_until(hook, "major", paris(2025, 6, 1, 12, 0)) is None
    assert deferred_until(config.channels[1], "major", night) is None  # no quiet hours on that channel


# --- retries -----------------------------------------------------------------------------------------


def test_backoff_doubles_then_is_capped_with_a_little_jitter():
    assert [backoff(n, rand=lambda: 0.0) for n in range(1, 6)] == [5.0, 10.0, 20.0, 40.0, 80.0]
    assert backoff(30, rand=lambda: 0.0) == BACKOFF_CAP_S == 900.0
    assert 4.5 <= backoff(1) <= 5.0 and backoff(1, rand=lambda: 1.0) == 4.5
    assert all(backoff(n) <= BACKOFF_CAP_S for n in range(1, 100))
    assert len({backoff(3) for _ in range(50)}) > 1  # jittered
    assert MAX_ATTEMPTS == 8


# --- the webhook's signature -------------------------------------------------------------------------


def test_signature_is_hmac_sha256_of_timestamp_dot_body():
    body = encode_payload({"id": 42, "title": "Panne d'éclairage"})
    assert body == '{"id":42,"title":"Panne d\'éclairage"}'.encode()
    value = signature(b"k3y", 1700000000, body)
    expected = hmac.new(b"k3y", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert value == f"t=1700000000,v1={expected}"


def test_webhook_request_headers_and_status_classes():
    config = parse(FULL)
    seen: list[httpx.Request] = []
    statuses = iter([204, 500, 429, 408, 400, 404, 301])

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = next(statuses)
        return httpx.Response(status, text="nope" if status >= 400 else "",
                              headers={"Location": "https://elsewhere.example/"} if status == 301 else {})

    outcomes: list[tuple[bool, str]] = []

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            hook = WebhookChannel(config.channels[0], client, clock=lambda: 1700000000.5)
            await hook.send("42:1:raised:lighting-webhook", "raised", {"id": 42})
            for _ in range(6):
                with pytest.raises(DeliveryError) as caught:
                    await hook.send("k", "raised", {"id": 42})
                outcomes.append((caught.value.permanent, caught.value.reason))

    asyncio.run(scenario())
    request = seen[0]
    assert request.method == "POST" and str(request.url) == "https://gmao.example.org/hooks/citypilot"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Citypilot-Delivery"] == "42:1:raised:lighting-webhook"
    assert request.headers["Citypilot-Event"] == "raised"
    t, v1 = (part.split("=", 1)[1] for part in request.headers["Citypilot-Signature"].split(","))
    assert t == "1700000000"
    assert hmac.compare_digest(v1, hmac.new(b"s3cret-lighting", f"{t}.".encode() + request.content,
                                            hashlib.sha256).hexdigest())
    assert json.loads(request.content) == {"id": 42}
    assert [p for p, _ in outcomes] == [False, False, False, True, True, True]
    assert outcomes[0][1] == "HTTP 500: nope" and "not followed" in outcomes[5][1]


def test_webhook_connection_errors_are_retryable():
    config = parse(FULL)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async def attempt(handler: Any) -> DeliveryError:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            with pytest.raises(DeliveryError) as caught:
                await WebhookChannel(config.channels[0], client).send("k", "raised", {})
        return caught.value

    for handler, words in ((refuse, "connection error"), (slow, "timeout")):
        err = asyncio.run(attempt(handler))
        assert not err.permanent and words in err.reason


# --- the e-mail ----------------------------------------------------------------------------------


def test_email_subject_and_body():
    config = parse(FULL)
    assert config.smtp is not None
    spec = config.channel("supervisors-mail")
    assert spec is not None
    n = notice(at=dt.datetime(2025, 6, 1, 20, 13, 5, tzinfo=UTC))
    message = build_email(spec, config.smtp, "42:1:escalated:supervisors-mail", "raised",
                          payload(n, config.base_url))
    assert message["Subject"] == "[citypilot] MAJOR lamp_failure — SL-000123 (Dijon): Lamp failure"
    assert message["From"] == "citypilot@example.org"
    assert message["To"] == "astreinte@example.org, chef@example.org"
    assert message["X-Citypilot-Delivery"] == "42:1:escalated:supervisors-mail"
    assert message["Auto-Submitted"] == "auto-generated" and message["Message-ID"].endswith("@example.org>")
    body = message.get_content()
    for line in ("Alarm:     #42 (occurrence 1)", "Severity:  major", "State:     raised",
                 "Asset:     SL-000123 (streetlight)", "Commune:   Dijon",
                 "Time:      2025-06-01 22:13:05 CEST (Europe/Paris)",
                 "Link:      https://citypilot.example.org/alarms/42", "  lamp_current_a: 0.0"):
        assert line in body, body
    assert message.get_content_type() == "text/plain"


def test_email_subject_variants_and_header_safety():
    base = payload(notice())
    assert email_subject("escalated", base).startswith("[citypilot] ESCALATED MAJOR lamp_failure — ")
    assert email_subject("cleared", base).startswith("[citypilot] CLEARED MAJOR ")
    assert email_subject("raised", {**base, "asset": None}) == "[citypilot] MAJOR lamp_failure — Dijon: Lamp failure"
    assert email_subject("raised", {**base, "asset": None, "commune": None}) == (
        "[citypilot] MAJOR lamp_failure: Lamp failure")
    assert "\n" not in email_subject("raised", {**base, "title": "two\nlines\r\nBcc: x@y"})
