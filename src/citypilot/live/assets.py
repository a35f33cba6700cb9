"""The registry facts that twin deltas are filtered on, kept in memory by each API process.

A delta names only its asset and kind; filtering by commune or zone needs the asset's position, and
looking it up per delta would cost a query per message. The index is loaded whole at start and then
refreshed from ``assets.updated_at`` (the pattern of ``ingest.store.RegistryCache``); an asset met in a
delta before the next refresh is looked up once, and an unknown id is remembered for a while so that
a flood of deltas for it costs no query each.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Iterable

import psycopg

from .filters import AssetFacts, Vocabulary

_COLUMNS = "id, kind, commune, lat, lon"


class AssetIndex:
    def __init__(self, vocabulary: Vocabulary, negative_ttl: float = 30.0) -> None:
        self.vocabulary = vocabulary
        self.facts: dict[str, AssetFacts] = {}
        self.loaded_until: dt.datetime | None = None
        self.negative_ttl = negative_ttl
        self._unknown: dict[str, float] = {}

    def get(self, asset_id: str) -> AssetFacts | None:
        return self.facts.get(asset_id)

    def _remember(self, asset_id: str, kind: str, commune: str | None, lat: float | None, lon: float | None) -> None:
        self.facts[asset_id] = AssetFacts(kind=kind, domain=self.vocabulary.kind_domains.get(kind), commune=commune,
                                          lat=lat, lon=lon, restricted=kind in self.vocabulary.restricted_kinds)
        self._unknown.pop(asset_id, None)

    def guess(self, kind: str) -> AssetFacts:
        """Facts for an asset the registry does not know (yet): its kind only, so that a client filtering
        on commune or zone does not get it, and visibility still holds."""
        return AssetFacts(kind=kind, domain=self.vocabulary.kind_domains.get(kind),
                          restricted=kind in self.vocabulary.restricted_kinds)

    async def refresh(self, conn: psycopg.AsyncConnection) -> int:
        """Load what changed since the last refresh (everything the first time); return how many rows."""
        since = self.loaded_until
        now = (await (await conn.execute("SELECT now()")).fetchone())[0]  # type: ignore[index]
        query, params = f"SELECT {_COLUMNS} FROM assets", ()
        if since is not None:
            query += " WHERE updated_at >= %s"
            params = (since - dt.timedelta(seconds=5),)  # overlap: commits that started before our look
        count = 0
        async with conn.cursor() as cur:
            await cur.execute(query, params)
            async for asset_id, kind, commune, lat, lon in cur:
                self._remember(asset_id, kind, commune, lat, lon)
                count += 1
        self.loaded_until = now
        return count

    async def resolve(self, conn: psycopg.AsyncConnection, ids: Iterable[str]) -> None:
        """Look up ids missing from the index, unless recently found unknown."""
        now = time.monotonic()
        wanted = [i for i in set(ids) if i not in self.facts and self._unknown.get(i, 0) < now]
        if not wanted:
            return
        rows = await (await conn.execute(f"SELECT {_COLUMNS} FROM assets WHERE id = ANY(%s)", (wanted,))).fetchall()
        for asset_id, kind, commune, lat, lon in rows:
            self._remember(asset_id, kind, commune, lat, lon)
        for asset_id in wanted:
            if asset_id not in self.facts:
                self._unknown[asset_id] = now + self.negative_ttl
        if len(self._unknown) > 100_000:  # bounded under a flood of made-up ids
            self._unknown = {k: v for k, v in self._unknown.items() if v > now}
