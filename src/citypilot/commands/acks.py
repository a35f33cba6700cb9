"""Devices' answers to commands, applied by the ingest worker in its batch's transaction.

An acknowledgement travels like any device message (MQTT -> the durable stream -> a worker), so it is
at-least-once and never lost; applying it is idempotent: only a command still waiting for its answer
(``sent``, or ``timed_out`` when the answer comes late: the device's word beats our guess) changes.
An answer that names no command sent to that device (a forged or confused one) changes nothing and is
dead-lettered with its reason and journaled.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psycopg
from psycopg.types.json import Jsonb

from citypilot.equipment.catalog import Catalog
from citypilot.journal import store as journal
from citypilot.journal.entries import DEVICE, NewEntry

from .lifecycle import answer_state
from .service import outcome_entry

MAX_REASON = 500


class Ack(msgspec.Struct, forbid_unknown_fields=False):
    id: str
    status: str
    asset: str | None = None
    reason: str | None = None
    ts: dt.datetime | None = None


_decode = msgspec.json.Decoder(Ack).decode


@dataclass
class Received:
    device: str
    payload: bytes
    received_at: dt.datetime
    seq: int


@dataclass
class AckResult:
    applied: list[dict[str, Any]] = field(default_factory=list)   # {id, batch, asset, status}
    duplicates: int = 0
    refused: list[tuple[Received, str, str]] = field(default_factory=list)  # (message, reason code, reason)


def parse(item: Received) -> tuple[Ack | None, str | None]:
    try:
        ack = _decode(item.payload)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return None, f"not a command acknowledgement: {exc}"
    if answer_state(ack.status) is None:
        return None, f"status {ack.status!r} is not one of done, rejected, failed"
    if len(ack.id) > 64:
        return None, "command id longer than 64 characters"
    return ack, None


_APPLY = """
UPDATE commands c SET status = a.status, reason = a.reason, answered_at = a.received_at, answer = a.answer,
       next_attempt_at = NULL,
       follow_up_at = CASE WHEN a.status = 'done' AND c.follow_up IS NOT NULL
                           THEN a.received_at + make_interval(secs => (c.follow_up->>'after_s')::float8) END
FROM jsonb_to_recordset(%s::jsonb) AS a(id text, device text, asset text, status text, reason text,
                                         received_at timestamptz, answer jsonb)
WHERE c.id = a.id AND c.device_id = a.device AND (a.asset IS NULL OR a.asset = c.asset_id)
  AND c.status IN ('sent', 'timed_out')
RETURNING c.id, c.batch_id, c.asset_id, c.status, c.reason, c.answer,
          (SELECT jsonb_build_object('id', b.id, 'kind', b.kind, 'command', b.command, 'params', b.params,
                                     'reason', b.reason, 'requested_by', b.requested_by)
           FROM command_batches b WHERE b.id = c.batch_id)
"""


async def apply(conn: psycopg.AsyncConnection, catalog: Catalog, items: list[Received]) -> AckResult:
    """Apply answers in the caller's transaction; say which were applied, repeated or refused."""
    result = AckResult()
    wanted: dict[tuple[str, str], tuple[Received, Ack]] = {}
    for item in items:
        ack, problem = parse(item)
        if ack is None:
            result.refused.append((item, "malformed", problem or "malformed"))
            continue
        wanted[(item.device, ack.id)] = (item, ack)  # a device repeating itself in one batch: the last word
    if not wanted:
        return result
    documents = [{"id": ack.id, "device": item.device, "asset": ack.asset, "status": ack.status,
                  "reason": (ack.reason or None) and ack.reason[:MAX_REASON].replace("\x00", ""),
                  "received_at": item.received_at.isoformat(),
                  "answer": msgspec.json.decode(item.payload)} for item, ack in wanted.values()]
    rows = await (await conn.execute(_APPLY, (Jsonb(documents),))).fetchall()
    done = {(r[0]) for r in rows}
    entries: list[NewEntry] = []
    for command_id, batch_id, asset_id, status, reason, answer, batch in rows:
        result.applied.append({"id": command_id, "batch": batch_id, "asset": asset_id, "status": status})
        entries.append(outcome_entry(catalog, batch, asset_id, command_id, status, reason, actor=DEVICE, answer=answer))
    rest = [(item, ack) for (device, cid), (item, ack) in wanted.items() if cid not in done]
    if rest:
        known = {r[0]: r for r in await (await conn.execute(
            "SELECT id, device_id, asset_id, status FROM commands WHERE id = ANY(%s)", ([a.id for _, a in rest],))).fetchall()}
        for item, ack in rest:
            row = known.get(ack.id)
            if row is not None and row[1] == item.device and (ack.asset is None or ack.asset == row[2]) \
                    and row[3] not in ("requested",):
                result.duplicates += 1  # answered already: a redelivery or a repeat changes nothing
                continue
            if row is None:
                why = f"acknowledges command {ack.id!r}, which was never sent"
            elif row[1] != item.device:
                why = f"acknowledges command {ack.id!r}, which was sent to another device"
            elif ack.asset is not None and ack.asset != row[2]:
                why = f"acknowledges command {ack.id!r} for {ack.asset}, but it was for {row[2]}"
            else:
                why = f"acknowledges command {ack.id!r} before it was sent"
            result.refused.append((item, "unknown_command", why))
            entries.append(NewEntry(at=item.received_at, domain="operations", type="command.unknown_ack", severity="minor",
                                    actor=DEVICE, asset_id=None, summary=f"{item.device} {why}",
                                    data={"device": item.device, "command_id": ack.id[:64], "status": ack.status}))
    if entries:
        await journal.append(conn, entries)
    return result
