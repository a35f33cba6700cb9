"""The command path: ask, confirm, approve, send, retry, answer, follow up.

``request`` checks everything before anything is written (the kind's command, the caller's role,
the parameters), then, per asset, the service and the safety interlocks; refused assets are recorded
with their reason, the rest wait for confirmation and approval when the command needs them, or go out
at once. Nothing is sent inside a transaction: commands are committed as ``sent`` first, then
published (core NATS, which the MQTT listener delivers to the device's QoS 1 subscription). A publish
lost there is sent again by the sweeper after the ack timeout, with the same id: a device does a
command once, however many times it receives it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import msgspec
import psycopg
from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool

from citypilot.auth.accounts import Principal
from citypilot.equipment.catalog import Catalog
from citypilot.ingest import protocol
from citypilot.journal import store as journal
from citypilot.journal.entries import SYSTEM, NewEntry
from citypilot.safety.interlocks import device_params, follow_up, refusal, with_defaults

from . import store
from .lifecycle import CommandError, after_confirmation, check_approve, check_cancel, check_confirm, first_state
from .policy import APPROVERS, check_params, check_role, check_service, command_spec, needs_approval, needs_confirmation

log = logging.getLogger("citypilot.commands")
_encode = msgspec.json.Encoder().encode
ROUTE_SHOWN = 200
RESULT_SUBJECT = "citypilot.command.result"   # after each committed set of answers: [{id, batch, asset, status}]
PENDING_TTL_S = 15 * 60                      # a batch not confirmed or approved by then is cancelled
SENT = Counter("citypilot_commands_sent_total", "Commands published to devices (first sends and retries)", ["attempt"])
OUTCOMES = Counter("citypilot_commands_outcomes_total", "Commands ended, by outcome", ["status"])


@dataclass(frozen=True)
class Settings:
    ack_timeout_s: float = 5
    max_attempts: int = 3
    ttl_s: float = 60
    approval_threshold: int = 1000


# Due follow-ups, taken once (FOR UPDATE SKIP LOCKED: one sweeper sends each), with the newest later
# command of the same family to the asset that supersedes it, if any.
_DUE_FOLLOW_UPS = """
UPDATE commands c SET follow_up_done = true
FROM (SELECT id FROM commands WHERE follow_up_at <= %s AND NOT follow_up_done ORDER BY follow_up_at LIMIT 500
      FOR UPDATE SKIP LOCKED) d
WHERE c.id = d.id
RETURNING c.id, c.asset_id, c.kind, c.follow_up,
    (SELECT n.id FROM commands n WHERE n.asset_id = c.asset_id AND n.created_at > c.created_at
       AND n.command IN (c.command, c.follow_up->>'command') AND n.status IN ('sent', 'done')
     ORDER BY n.created_at DESC LIMIT 1)
"""


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def fingerprint(kind: str, command: str, params: Mapping[str, Any], selector: Mapping[str, Any]) -> str:
    return hashlib.sha256(_encode([kind, command, params, selector])).hexdigest()[:16]


class Commands:
    def __init__(self, pool: AsyncConnectionPool, nats: Any, catalog: Catalog, settings: Settings) -> None:
        self.pool = pool
        self.nats = nats
        self.catalog = catalog
        self.settings = settings

    # --- asking -----------------------------------------------------------------------------------

    async def plan(self, who: Principal, *, command: str, selector: Mapping[str, Any], params: Mapping[str, Any],
                   kind: str | None = None) -> dict[str, Any]:
        """What ``request`` would do, writing nothing: the assets, those refused and why, the steps needed."""
        async with self.pool.connection() as conn:
            found = await store.targets(conn, {**selector, **({"kind": kind} if kind else {})})
        if not found:
            raise CommandError(422, "no asset matches", field="targets")
        kinds = {t.facts.kind for t in found}
        if len(kinds) > 1:
            raise CommandError(422, f"one command goes to one kind of equipment; these are {', '.join(sorted(kinds))}",
                               field="targets")
        missing = sorted(set(selector.get("assets") or ()) - {t.facts.id for t in found})
        if missing:
            raise CommandError(404, f"unknown asset{'s' if len(missing) > 1 else ''}: {', '.join(missing[:10])}",
                               code="unknown-asset", field="targets")
        kind_spec, spec = command_spec(self.catalog, kinds.pop(), command)
        check_role(kind_spec, spec, who.role)
        clean = with_defaults(kind_spec.name, command, check_params(spec, params))
        rows: list[tuple[str, str, str, str, str | None]] = []
        for t in found:
            why = check_service(who.role, who.service, t.service, t.facts.id) or refusal(t.facts, command, clean)
            rows.append((store.new_id(), t.facts.id, t.device_id, "refused" if why else "requested", why))
        sendable = sum(1 for r in rows if r[3] == "requested")
        approval = needs_approval(spec, sendable, self.settings.approval_threshold)
        confirm = needs_confirmation(spec, sendable)
        out = {"kind": kind_spec.name, "command": command, "params": clean, "assets": len(rows), "sendable": sendable,
               "refused": [{"asset_id": r[1], "reason": r[4]} for r in rows if r[3] == "refused"],
               "needs_confirmation": confirm and sendable > 0, "needs_approval": approval and sendable > 0,
               "retry": spec.retry, "rows": rows}
        if selector.get("path"):
            out["route"] = [r[1] for r in rows[:ROUTE_SHOWN]]  # the junctions in the order the vehicle meets them
        return out

    async def request(self, who: Principal, *, command: str, selector: Mapping[str, Any], params: Mapping[str, Any],
                      reason: str, kind: str | None = None, idempotency_key: str | None = None,
                      parent: str | None = None) -> dict[str, Any]:
        """Record (and send, if nothing stands in the way) a command to the assets ``selector`` names.

        ``parent``: the command this one follows up (a bollard raised again after its lowering). The
        operator confirmed the lowering with its duration, so the raise is not held for a second
        confirmation; the interlocks still apply."""
        if idempotency_key:
            async with self.pool.connection() as conn:
                existing = await store.batch_by_key(conn, who.username, idempotency_key)
                if existing is not None:
                    return await self._replayed(conn, existing, kind, command, params, selector)
        planned = await self.plan(who, command=command, selector=selector, params=params, kind=kind)
        rows, clean = planned["rows"], planned["params"]
        state = first_state(planned["needs_confirmation"] and parent is None,
                            planned["needs_approval"] and parent is None) if planned["sendable"] else "finished"
        at = now()
        batch = {"id": store.new_id(), "kind": planned["kind"], "command": command, "params": clean,
                 "reason": reason, "selector": {k: v for k, v in selector.items()},
                 "status": state, "requested_by": who.username, "requested_role": who.role, "requested_at": at,
                 "approval_needed": planned["needs_approval"], "authorised_at": at if state == "authorised" else None,
                 "finished_at": at if state == "finished" else None,
                 "expires_at": at + dt.timedelta(seconds=PENDING_TTL_S if state != "authorised" else self.settings.ttl_s),
                 "idempotency_key": idempotency_key, "parent_command": parent, "total": len(rows)}
        batch["selector"]["fingerprint"] = fingerprint(planned["kind"], command, params, selector)
        async with self.pool.connection() as conn:
            async with conn.transaction():
                async with journal.deferred(conn):
                    await store.insert_batch(conn, batch, rows,
                                             max_attempts=self.settings.max_attempts if planned["retry"] else 1,
                                             follow_up=self._follow_up(planned["kind"], command, clean))
                    await journal.append(conn, [self._batch_entry(batch, who.username, "command.requested",
                                                                  f"{who.username} asked {self._what(batch)} of {len(rows)} "
                                                                  f"asset(s): {reason}")])
                    await journal.append(conn, [self._outcome_entry(batch, r[1], r[0], "refused", r[4], actor=who.username)
                                                for r in rows if r[3] == "refused"])
                    to_send = await store.mark_sent(conn, batch["id"], at, self.settings.ack_timeout_s, batch["expires_at"]) \
                        if state == "authorised" else []
            await self._publish(batch, to_send)
            return await self.describe(conn, batch["id"])

    async def _replayed(self, conn: psycopg.AsyncConnection, existing: dict[str, Any], kind: str | None, command: str,
                        params: Mapping[str, Any], selector: Mapping[str, Any]) -> dict[str, Any]:
        if existing["selector"].get("fingerprint") != fingerprint(existing["kind"] if kind is None else kind, command,
                                                                  params, selector):
            raise CommandError(409, "this Idempotency-Key was used for a different command", code="idempotency-conflict")
        out = await self.describe(conn, existing["id"])
        out["replayed"] = True
        return out

    def _follow_up(self, kind: str, command: str, params: Mapping[str, Any]) -> dict[str, Any] | None:
        then = follow_up(kind, command, params)
        return {"command": then[0], "after_s": then[1], "params": then[2]} if then else None

    # --- confirming, approving, cancelling ---------------------------------------------------------

    async def confirm(self, who: Principal, batch_id: str) -> dict[str, Any]:
        return await self._step(who, batch_id, "confirm")

    async def approve(self, who: Principal, batch_id: str) -> dict[str, Any]:
        return await self._step(who, batch_id, "approve")

    async def cancel(self, who: Principal, batch_id: str, why: str | None = None) -> dict[str, Any]:
        return await self._step(who, batch_id, "cancel", why)

    async def _step(self, who: Principal, batch_id: str, step: str, why: str | None = None) -> dict[str, Any]:
        async with self.pool.connection() as conn:
            to_send: list[tuple[str, str, str]] = []
            async with conn.transaction():
                async with journal.deferred(conn):
                    batch = await store.batch(conn, batch_id, lock=True)
                    if batch is None:
                        raise CommandError(404, f"no command batch {batch_id}", code="not-found")
                    kind_spec, spec = command_spec(self.catalog, batch["kind"], batch["command"])
                    at = now()
                    if batch["status"] in ("pending_confirmation", "pending_approval") and batch["expires_at"] <= at:
                        await self._expire_batch(conn, batch_id)
                        raise CommandError(409, "this batch waited too long and has expired: ask again", code="expired")
                    if step == "confirm":
                        check_role(kind_spec, spec, who.role)
                        check_confirm(batch["status"], batch["requested_by"], who.username)
                        state = after_confirmation(batch["approval_needed"])
                        await conn.execute("UPDATE command_batches SET status = %s, confirmed_by = %s, confirmed_at = %s "
                                           "WHERE id = %s", (state, who.username, at, batch_id))
                        summary = f"{who.username} confirmed {self._what(batch)}"
                    elif step == "approve":
                        if who.role not in APPROVERS:
                            raise CommandError(403, f"the {who.role} role may not approve commands "
                                                    f"(approvers: {', '.join(sorted(APPROVERS))})", code="forbidden")
                        check_role(kind_spec, spec, who.role)
                        check_approve(batch["status"], batch["requested_by"], batch["confirmed_by"], who.username)
                        state = "authorised"
                        await conn.execute("UPDATE command_batches SET approved_by = %s, approved_at = %s WHERE id = %s",
                                           (who.username, at, batch_id))
                        summary = f"{who.username} approved {self._what(batch)} asked by {batch['requested_by']}"
                    else:
                        if who.username != batch["requested_by"] and who.role not in APPROVERS:
                            raise CommandError(403, "only the person who asked, or a supervisor, may cancel", code="forbidden")
                        check_cancel(batch["status"])
                        state = "cancelled"
                        await conn.execute("UPDATE command_batches SET status = 'cancelled', finished_at = %s WHERE id = %s",
                                           (at, batch_id))
                        await conn.execute("UPDATE commands SET status = 'cancelled', reason = %s WHERE batch_id = %s "
                                           "AND status = 'requested'", (why or f"cancelled by {who.username}", batch_id))
                        summary = f"{who.username} cancelled {self._what(batch)}" + (f": {why}" if why else "")
                    if state == "authorised":
                        to_send = await self._authorise(conn, batch, at)
                    await journal.append(conn, [self._batch_entry(batch, who.username, {"confirm": "command.confirmed", "approve": "command.approved",
                                                                               "cancel": "command.cancelled"}[step],
                                                                  summary)])
            await self._publish(batch, to_send)
            return await self.describe(conn, batch_id)

    async def _authorise(self, conn: psycopg.AsyncConnection, batch: dict[str, Any], at: dt.datetime) -> list[tuple[str, str, str]]:
        """The batch may go: check each asset again (it may have changed while the batch waited), then send."""
        rows = await (await conn.execute("SELECT id, asset_id FROM commands WHERE batch_id = %s AND status = 'requested'",
                                         (batch["id"],))).fetchall()
        found = {t.facts.id: t for t in await store.targets(conn, {"assets": [r[1] for r in rows]})}
        refusals = {}
        for command_id, asset_id in rows:
            t = found.get(asset_id)
            why = "the asset is gone from the registry" if t is None else refusal(t.facts, batch["command"], batch["params"])
            if why:
                refusals[command_id] = why
        await store.refuse(conn, refusals)
        expires = at + dt.timedelta(seconds=self.settings.ttl_s)
        await conn.execute("UPDATE command_batches SET status = 'authorised', authorised_at = %s, expires_at = %s WHERE id = %s",
                           (at, expires, batch["id"]))
        return await store.mark_sent(conn, batch["id"], at, self.settings.ack_timeout_s, expires)

    async def _expire_batch(self, conn: psycopg.AsyncConnection, batch_id: str) -> None:
        await conn.execute("UPDATE command_batches SET status = 'cancelled', finished_at = now() WHERE id = %s", (batch_id,))
        await conn.execute("UPDATE commands SET status = 'expired', reason = 'not confirmed or approved in time' "
                           "WHERE batch_id = %s AND status = 'requested'", (batch_id,))

    # --- sending ----------------------------------------------------------------------------------

    async def _publish(self, batch: Mapping[str, Any], commands: Sequence[tuple[str, str, str]], attempt: int = 1) -> None:
        if not commands or self.nats is None:
            return
        expires = batch["expires_at"].isoformat() if batch.get("expires_at") else None
        for command_id, asset_id, device_id in commands:
            payload = {"id": command_id, "command": batch["command"], "asset": asset_id,
                       "params": device_params(batch["kind"], batch["command"], batch["params"])}
            if expires:
                payload["expires_at"] = expires
            try:
                await self.nats.publish(protocol.COMMAND_TOPIC.format(device=device_id).replace("/", "."), _encode(payload))
            except Exception as exc:  # committed as sent: the sweeper sends it again after the ack timeout
                log.warning("command not published; will be retried", extra={"command": command_id, "error": str(exc)[:200]})
                return
        SENT.labels("first" if attempt == 1 else "retry").inc(len(commands))
        try:
            await self.nats.flush(timeout=2)
        except Exception:
            pass

    # --- the sweeper: retries, time-outs, expiry, follow-ups --------------------------------------

    async def sweep(self) -> dict[str, int]:
        """One pass; several processes may sweep at once (rows are taken with SKIP LOCKED)."""
        out = {"retried": 0, "timed_out": 0, "expired": 0, "follow_ups": 0, "batches_finished": 0}
        at = now()
        async with self.pool.connection() as conn:
            resend: list[tuple[dict[str, Any], list[tuple[str, str, str]]]] = []
            async with conn.transaction():
                async with journal.deferred(conn):
                    rows = await (await conn.execute(
                        "SELECT c.id, c.asset_id, c.device_id, c.attempts, c.max_attempts, c.expires_at, c.batch_id, "
                        "b.command, b.params, b.kind, b.reason, b.requested_by, b.expires_at "
                        "FROM commands c JOIN command_batches b ON b.id = c.batch_id "
                        "WHERE c.status = 'sent' AND c.next_attempt_at <= %s ORDER BY c.next_attempt_at "
                        "LIMIT 5000 FOR UPDATE OF c SKIP LOCKED", (at,))).fetchall()
                    ended: dict[str, tuple[str, str]] = {}
                    again: dict[str, list[tuple[str, str, str]]] = {}
                    batches: dict[str, dict[str, Any]] = {}
                    for cid, asset, device, attempts, max_attempts, expires, bid, command, params, kind, reason, by, bexp in rows:
                        batches[bid] = {"id": bid, "command": command, "params": params, "kind": kind, "reason": reason,
                                        "requested_by": by, "expires_at": bexp}
                        if expires is not None and expires <= at:
                            ended[cid] = ("expired", "no answer before the command's expiry")
                        elif attempts >= max_attempts:
                            ended[cid] = ("timed_out", f"no answer after {attempts} attempt(s)")
                        else:
                            again.setdefault(bid, []).append((cid, asset, device))
                    if ended:
                        await conn.execute(
                            "UPDATE commands c SET status = e.status, reason = e.reason, next_attempt_at = NULL "
                            "FROM unnest(%s::text[], %s::text[], %s::text[]) AS e(id, status, reason) WHERE c.id = e.id",
                            (list(ended), [v[0] for v in ended.values()], [v[1] for v in ended.values()]))
                        by_id = {r[0]: r for r in rows}
                        await journal.append(conn, [self._outcome_entry(batches[by_id[c][6]], by_id[c][1], c, s, r)
                                                    for c, (s, r) in ended.items()])
                        for status, _ in ended.values():
                            OUTCOMES.labels(status).inc()
                            out[status] += 1
                    for bid, items in again.items():
                        await conn.execute("UPDATE commands SET attempts = attempts + 1, next_attempt_at = %s "
                                           "WHERE id = ANY(%s)", (at + dt.timedelta(seconds=self.settings.ack_timeout_s),
                                                                  [i[0] for i in items]))
                        resend.append((batches[bid], items))
                        out["retried"] += len(items)
                    # Batches that waited too long for confirmation or approval.
                    stale = await (await conn.execute(
                        "SELECT id FROM command_batches WHERE status IN ('pending_confirmation', 'pending_approval') "
                        "AND expires_at <= %s FOR UPDATE SKIP LOCKED", (at,))).fetchall()
                    for (bid,) in stale:
                        await self._expire_batch(conn, bid)
                    finished = await (await conn.execute(
                        "UPDATE command_batches b SET status = 'finished', finished_at = %s WHERE status = 'authorised' "
                        "AND NOT EXISTS (SELECT 1 FROM commands c WHERE c.batch_id = b.id AND c.status IN ('requested', 'sent')) "
                        "RETURNING id", (at,))).fetchall()
                    out["batches_finished"] = len(finished)
            for batch, items in resend:
                await self._publish(batch, items, attempt=2)
            out["follow_ups"] = await self._follow_ups(conn, at)
        return out

    async def _follow_ups(self, conn: psycopg.AsyncConnection, at: dt.datetime) -> int:
        """Send what the control centre does by itself once a command is done (bollards rise again).

        A follow-up is superseded, and not sent, when the asset was sent the same command or the
        follow-up's own since: bollards lowered again for longer must not rise at the first one's time,
        a newer panel message is not cleared at the old one's expiry, a junction an operator put on
        all-red since stays there."""
        async with conn.transaction():
            rows = await (await conn.execute(_DUE_FOLLOW_UPS, (at,))).fetchall()
        system = Principal(SYSTEM, "admin", None)
        for command_id, asset_id, kind, then, newer in rows:
            if newer is not None:
                async with conn.transaction():
                    await journal.append(conn, [NewEntry(at=now(), domain=self._domain(kind), type="command.follow_up_superseded",
                                                         severity="info", asset_id=asset_id, actor=SYSTEM,
                                                         summary=f"automatic {then['command']} of {asset_id} not sent: "
                                                                 f"command {newer} came since",
                                                         data={"command_id": command_id, "superseded_by": newer})])
                continue
            try:
                await self.request(system, command=then["command"], selector={"assets": [asset_id]},
                                   params=then.get("params") or {},
                                   reason=f"automatic {then['command']} {then['after_s']:g} s after command {command_id}",
                                   idempotency_key=f"follow-up-{command_id}", parent=command_id)
            except CommandError as exc:
                log.warning("follow-up not sent", extra={"command": command_id, "asset": asset_id, "error": exc.detail})
                async with conn.transaction():
                    await journal.append(conn, [NewEntry(at=now(), domain=self._domain(kind), type="command.follow_up_refused",
                                                         severity="major", asset_id=asset_id,
                                                         summary=f"automatic {then['command']} of {asset_id} refused: {exc.detail}",
                                                         data={"command_id": command_id})])
        return len(rows)

    async def run(self, stop: asyncio.Event, every_s: float = 0.5) -> None:
        while not stop.is_set():
            try:
                await self.sweep()
            except Exception as exc:  # the database away: try again, never stop sweeping
                log.warning("command sweep failed", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
            try:
                await asyncio.wait_for(stop.wait(), timeout=every_s)
            except asyncio.TimeoutError:
                pass

    # --- reading ----------------------------------------------------------------------------------

    async def describe(self, conn: psycopg.AsyncConnection, batch_id: str, *, items: int = 100,
                       after: str | None = None) -> dict[str, Any]:
        batch = await store.batch(conn, batch_id)
        if batch is None:
            raise CommandError(404, f"no command batch {batch_id}", code="not-found")
        batch["counts"] = await store.counts(conn, batch_id)
        batch["items"] = await store.commands_of(conn, batch_id=batch_id, limit=items, after=after)
        batch["selector"] = {k: v for k, v in batch["selector"].items() if k != "fingerprint"}
        return batch

    # --- journal ----------------------------------------------------------------------------------

    def _domain(self, kind: str) -> str:
        spec = self.catalog.kinds.get(kind)
        return spec.domain if spec else "operations"

    @staticmethod
    def _what(batch: Mapping[str, Any]) -> str:
        params = ", ".join(f"{k}={v}" for k, v in batch["params"].items())
        return f"{batch['command']}({params})"

    def _batch_entry(self, batch: Mapping[str, Any], actor: str, type_: str, summary: str) -> NewEntry:
        spec = self.catalog.kinds.get(batch["kind"])
        return NewEntry(at=now(), domain=self._domain(batch["kind"]), type=type_, actor=actor, summary=summary,
                        restricted=bool(spec and spec.restricted),
                        data={"batch_id": batch["id"], "command": batch["command"], "params": batch["params"],
                              "reason": batch["reason"], "requested_by": batch["requested_by"]})

    def _outcome_entry(self, batch: Mapping[str, Any], asset_id: str, command_id: str, status: str, reason: str | None,
                       *, actor: str = SYSTEM, answer: Any = None) -> NewEntry:
        return outcome_entry(self.catalog, batch, asset_id, command_id, status, reason, actor=actor, answer=answer)


def outcome_entry(catalog: Catalog, batch: Mapping[str, Any], asset_id: str, command_id: str, status: str,
                  reason: str | None, *, actor: str = SYSTEM, answer: Any = None) -> NewEntry:
    """The journal entry of one command's outcome, on the asset's history: who asked, why, what, and
    what the device (or the control centre) said."""
    spec = catalog.kinds.get(batch["kind"])
    params = ", ".join(f"{k}={v}" for k, v in batch["params"].items())
    severity = None if status == "done" else "minor"
    return NewEntry(at=now(), domain=spec.domain if spec else "operations", type=f"command.{status}", actor=actor,
                    severity=severity, asset_id=asset_id, restricted=bool(spec and spec.restricted),
                    summary=f"{batch['command']}({params}) asked by {batch['requested_by']}: {status.replace('_', ' ')}"
                            + (f" ({reason})" if reason else ""),
                    data={"command_id": command_id, "batch_id": batch["id"], "command": batch["command"],
                          "params": batch["params"], "reason": batch["reason"], "requested_by": batch["requested_by"],
                          "outcome": status, "answer": answer})


def settings_of(config: Any) -> Settings:
    return Settings(ack_timeout_s=config.commands_ack_timeout_s, max_attempts=config.commands_max_attempts,
                    ttl_s=config.commands_ttl_s, approval_threshold=config.commands_approval_threshold)

