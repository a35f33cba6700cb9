"""PostgreSQL: connections and schema migrations (core PostgreSQL >= 15, no extension)."""

from __future__ import annotations

import msgspec
import psycopg.types.json

_configured = False


def use_fast_json() -> None:
    """Have psycopg encode and decode json/jsonb with msgspec instead of the standard library (several
    times faster on the ingest path, where every batch reads back the twin's values). Same JSON."""
    global _configured
    if not _configured:
        encoder = msgspec.json.Encoder()
        psycopg.types.json.set_json_dumps(encoder.encode)
        psycopg.types.json.set_json_loads(msgspec.json.decode)
        _configured = True
