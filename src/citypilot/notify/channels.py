"""The outbound channels: a signed webhook and an e-mail through SMTP.

A channel sends one notification and says how it went: nothing on success, ``DeliveryError`` otherwise,
whose ``permanent`` tells the dispatcher whether trying again could help (a server error, a timeout or
a full mailbox may pass; a refused address or a 404 will not). Channels keep no state of their own:
retries, quiet hours and bookkeeping are the dispatcher's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import smtplib
import ssl
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Callable, Mapping, Protocol

import httpx

from .config import ChannelSpec, NotifyConfig, SmtpSpec

USER_AGENT = "citypilot-notify/1"
SIGNATURE_HEADER = "Citypilot-Signature"
DELIVERY_HEADER = "Citypilot-Delivery"
EVENT_HEADER = "Citypilot-Event"
_RETRYABLE_STATUS = frozenset({408, 429})
_MAX_ERROR = 300


class DeliveryError(Exception):
    """A notification was not delivered; ``permanent``: trying again would fail the same way."""

    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason[:_MAX_ERROR])
        self.reason = reason[:_MAX_ERROR]
        self.permanent = permanent


class Channel(Protocol):
    name: str

    async def send(self, key: str, event: str, payload: Mapping[str, Any]) -> None:
        """Deliver one notification (``key`` is its idempotency key); raise DeliveryError if not."""


def encode_payload(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes that are sent and signed (compact UTF-8 JSON)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The Citypilot-Signature value: the timestamp is signed with the body, so a captured request
    cannot be replayed later than the receiver's tolerance."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class WebhookChannel:
    """POSTs the notification as JSON, signed with HMAC-SHA256; redirects are not followed (a signed
    alarm must not be handed on to wherever a compromised or misconfigured endpoint points)."""

    def __init__(self, spec: ChannelSpec, client: httpx.AsyncClient, *,
                 clock: Callable[[], float] = time.time) -> None:
        if spec.type != "webhook" or spec.url is None or spec.secret is None:
            raise ValueError(f"channel {spec.name!r} is not a webhook with a url and a secret")
        self.name = spec.name
        self.spec = spec
        self.client = client
        self.clock = clock

    def request_headers(self, key: str, event: str, body: bytes) -> dict[str, str]:
        assert self.spec.secret is not None
        return {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            DELIVERY_HEADER: key,
            EVENT_HEADER: event,
            SIGNATURE_HEADER: signature(self.spec.secret, int(self.clock()), body),
        }

    async def send(self, key: str, event: str, payload: Mapping[str, Any]) -> None:
        assert self.spec.url is not None
        body = encode_payload(payload)
        try:
            response = await self.client.post(self.spec.url, content=body,
                                              headers=self.request_headers(key, event, body), follow_redirects=False)
        except httpx.TimeoutException as exc:
            raise DeliveryError(f"timeout: {type(exc).__name__}", permanent=False) from None
        except httpx.TransportError as exc:  # refused, reset, DNS, TLS, protocol errors
            raise DeliveryError(f"connection error: {type(exc).__name__}: {exc}", permanent=False) from None
        status = response.status_code
        if 200 <= status < 300:
            return
        text = f"HTTP {status}: {_excerpt(response.text)}".rstrip(": ")
        if status in _RETRYABLE_STATUS or status >= 500:
            raise DeliveryError(text, permanent=False)
        if 300 <= status < 400:
            raise DeliveryError(f"HTTP {status} redirect to {response.headers.get('location', '?')!r} not "
                                "followed: set the channel's url to the final address", permanent=True)
        raise DeliveryError(text, permanent=True)


class EmailChannel:
    """Sends a plain-text mail through the configured SMTP server (smtplib, in a thread: it blocks)."""

    def __init__(self, spec: ChannelSpec, smtp: SmtpSpec) -> None:
        if spec.type != "email" or not spec.to:
            raise ValueError(f"channel {spec.name!r} is not an email channel with recipients")
        self.name = spec.name
        self.spec = spec
        self.smtp = smtp

    async def send(self, key: str, event: str, payload: Mapping[str, Any]) -> None:
        message = build_email(self.spec, self.smtp, key, event, payload)
        await asyncio.to_thread(self._deliver, message)

    def _deliver(self, message: EmailMessage) -> None:
        smtp = self.smtp
        try:
            with smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s) as server:
                if smtp.starttls:
                    server.starttls(context=ssl.create_default_context())
                if smtp.username:
                    server.login(smtp.username, smtp.password or "")
                refused = server.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:  # every recipient refused
            codes = [code for code, _ in exc.recipients.values()]
            raise DeliveryError(f"recipients refused: {_refusals(exc.recipients)}",
                                permanent=all(code >= 500 for code in codes)) from None
        except smtplib.SMTPResponseException as exc:
            text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
            raise DeliveryError(f"SMTP {exc.smtp_code}: {_excerpt(text)}", permanent=exc.smtp_code >= 500) from None
        except smtplib.SMTPNotSupportedError as exc:  # e.g. no STARTTLS: a configuration problem
            raise DeliveryError(f"SMTP server: {exc}", permanent=True) from None
        except (smtplib.SMTPException, OSError) as exc:  # disconnected, refused, timeout, TLS
            raise DeliveryError(f"SMTP connection error: {type(exc).__name__}: {exc}", permanent=False) from None
        if refused:  # some recipients took it: a retry would send them a second copy
            raise DeliveryError(f"delivered, but refused for {_refusals(refused)}", permanent=True)


def email_subject(event: str, payload: Mapping[str, Any]) -> str:
    """'[citypilot] MAJOR lamp_failure — SL-000123 (Dijon): Lamp failure', escalations and clearings
    marked first so they stand out in a mailbox full of raises."""
    prefix = {"escalated": "ESCALATED ", "cleared": "CLEARED "}.get(event, "")
    severity = str(payload.get("severity") or "").upper()
    head = " ".join(part for part in (f"[citypilot] {prefix}{severity}".rstrip(), str(payload.get("type") or ""))
                    if part)
    asset = payload.get("asset")
    commune = payload.get("commune")
    where = str(asset) if asset else ""
    if commune:
        where = f"{where} ({commune})" if where else str(commune)
    subject = f"{head} — {where}: {payload.get('title') or ''}" if where else f"{head}: {payload.get('title') or ''}"
    return _one_line(subject.rstrip(": "))[:200]


def email_body(spec: ChannelSpec, event: str, payload: Mapping[str, Any]) -> str:
    """Plain text for a person on call: what, where, how bad, when (in the channel's time zone), a link."""
    lines = [str(payload.get("title") or payload.get("type") or "Alarm"), ""]

    def row(label: str, value: Any) -> None:
        if value not in (None, "", [], ()):
            lines.append(f"{label + ':':<11}{value}")

    row("Alarm", f"#{payload.get('id')} (occurrence {payload.get('occurrence', 1)})")
    row("Event", {"raised": "raised", "escalated": "escalated: still not acknowledged",
                  "cleared": "cleared"}.get(event, event))
    row("Severity", payload.get("severity"))
    row("State", payload.get("state"))
    row("Type", payload.get("type"))
    asset = payload.get("asset")
    row("Asset", f"{asset} ({payload['kind']})" if asset and payload.get("kind") else asset)
    row("Commune", payload.get("commune"))
    row("Time", _local_time(payload.get("at"), spec))
    services = payload.get("services") or ()
    row("Services", ", ".join(str(s) for s in services))
    row("Link", payload.get("url"))
    data = payload.get("data") or {}
    if isinstance(data, Mapping) and data:
        lines += ["", "Details:"]
        lines += [f"  {k}: {json.dumps(v, ensure_ascii=False, default=str) if not isinstance(v, str) else v}"
                  for k, v in sorted(data.items())]
    lines += ["", "-- ", f"citypilot, channel {spec.name}. Acknowledge the alarm in the control room to stop "
                         "its escalation."]
    return "\n".join(lines) + "\n"


def build_email(spec: ChannelSpec, smtp: SmtpSpec, key: str, event: str, payload: Mapping[str, Any]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = email_subject(event, payload)
    message["From"] = smtp.sender
    message["To"] = ", ".join(spec.to)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=smtp.sender.rpartition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to an alarm
    message["X-Citypilot-Delivery"] = key
    message["X-Citypilot-Event"] = event
    message.set_content(email_body(spec, event, payload))
    return message


def build_channels(config: NotifyConfig, client: httpx.AsyncClient) -> dict[str, Channel]:
    """One channel object per configured channel; webhooks share ``client`` (one connection pool)."""
    channels: dict[str, Channel] = {}
    for spec in config.channels:
        if spec.type == "webhook":
            channels[spec.name] = WebhookChannel(spec, client)
        else:
            assert config.smtp is not None  # checked at load
            channels[spec.name] = EmailChannel(spec, config.smtp)
    return channels


def _local_time(at: Any, spec: ChannelSpec) -> str | None:
    if not at:
        return None
    try:
        moment = dt.datetime.fromisoformat(str(at))
    except ValueError:
        return str(at)
    if moment.tzinfo is None:
        return str(at)
    local = moment.astimezone(spec.timezone)
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()} ({spec.timezone.key})"


def _refusals(recipients: Mapping[str, tuple[int, bytes]]) -> str:
    return "; ".join(f"{address}: {code} {_excerpt(text.decode('utf-8', 'replace'))}"
                     for address, (code, text) in recipients.items())


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _excerpt(text: str, limit: int = 200) -> str:
    text = _one_line(text)
    return text if len(text) <= limit else text[:limit] + "…"
