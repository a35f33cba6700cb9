"""``citypilot audit verify``: check the journal's hash chain, independently of the database's trigger.

Each entry's hash is SHA-256(previous hash || canonical text), the canonical text being the entry's
fields joined by U+001F (the database builds it in ``citypilot_journal_canonical``; this module rebuilds
it from the columns, so a forged trigger or function is caught too). Ids must run 1, 2, 3... without a
gap: a deleted entry is as visible as a changed one. The last hash must be the head's.

This proves that nothing was changed *inside* the chain; someone able to rewrite the whole table and
its head could rebuild a consistent chain, which is why the head hash is printed: keep it elsewhere
(a ticket, a signed e-mail) and compare later.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import AsyncIterator

import psycopg

SEPARATOR = "\x1f"
GENESIS = bytes(32)
_ROWS = """
SELECT id, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), domain, type, severity, asset_id, alarm_id,
       actor, restricted, service, summary, data::text, prev_hash, hash
FROM journal WHERE id > %s ORDER BY id LIMIT %s
"""


@dataclass
class Verdict:
    ok: bool
    entries: int
    head_id: int
    head_hash: str
    problem: str | None = None
    first_bad_id: int | None = None


def canonical(id_: int, at: str, domain: str, type_: str, severity: str | None, asset_id: str | None,
              alarm_id: int | None, actor: str, restricted: bool, service: str | None, summary: str, data: str) -> bytes:
    fields = [str(id_), at, domain, type_, severity or "", asset_id or "", "" if alarm_id is None else str(alarm_id),
              actor, "true" if restricted else "false", service or "", summary, data]
    return SEPARATOR.join(fields).encode("utf-8")


async def _rows(conn: psycopg.AsyncConnection, page: int = 5000) -> AsyncIterator[tuple]:
    last = 0
    while True:
        rows = await (await conn.execute(_ROWS, (last, page))).fetchall()
        if not rows:
            return
        for row in rows:
            yield row
        last = rows[-1][0]


async def verify(conn: psycopg.AsyncConnection) -> Verdict:
    """Walk the whole chain in id order; stop at the first broken link."""
    previous = GENESIS
    expected_id = 1
    count = 0
    async for row in _rows(conn):
        id_, at, domain, type_, severity, asset_id, alarm_id, actor, restricted, service, summary, data, prev_hash, hash_ = row
        prev_hash, hash_ = bytes(prev_hash), bytes(hash_)
        if id_ != expected_id:
            return Verdict(False, count, id_, previous.hex(), f"entry {expected_id} is missing (next is {id_})", expected_id)
        if prev_hash != previous:
            return Verdict(False, count, id_, previous.hex(), f"entry {id_} does not carry the hash of entry {id_ - 1}", id_)
        computed = hashlib.sha256(previous + canonical(id_, at, domain, type_, severity, asset_id, alarm_id, actor,
                                                       restricted, service, summary, data)).digest()
        if computed != hash_:
            return Verdict(False, count, id_, previous.hex(), f"entry {id_} was changed after it was written", id_)
        previous = hash_
        expected_id += 1
        count += 1
    head = await (await conn.execute("SELECT last_id, last_hash FROM journal_head")).fetchone()
    if head is None or head[0] != count or bytes(head[1]) != previous:
        return Verdict(False, count, count, previous.hex(),
                       f"the journal head ({head[0] if head else 'missing'}) does not match its last entry ({count})",
                       count + 1)
    return Verdict(True, count, count, previous.hex())
