"""PostgreSQL adapter of the equipment registry.

Writes go through one path, ``save_sheets``, for a single API call and for a 40,000-line import alike:
validated sheets are copied (binary COPY) into a temporary table, then one statement records a history
entry for every new or changed sheet (the diff computed in SQL) and upserts exactly those. Re-importing
the same file therefore changes nothing and writes no history. Everything happens in the caller's
transaction: a failure writes nothing.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Sequence

import psycopg
from psycopg.rows import dict_row

from citypilot.equipment.catalog import Catalog
from citypilot.geo.communes import Communes
from citypilot.geo.projection import point_to_lambert93, to_lambert93

from .sheet import AssetSheet, Problem, ValidationFailed, fold, unresolved_reporters

_COMPARED = ("kind", "name", "lat", "lon", "commune", "geometry", "address", "service", "manufacturer", "model",
             "installed_on", "status", "reported_by", "attributes")
_STAGING_COLUMNS = ("id", "kind", "name", "commune", "lat", "lon", "x", "y", "geometry", "address", "service",
                    "manufacturer", "model", "installed_on", "status", "reported_by", "attributes", "search_text")
_STAGING_TYPES = ("text", "text", "text", "text", "float8", "float8", "float8", "float8", "jsonb", "text", "text",
                  "text", "text", "date", "text", "text", "jsonb", "text")
ASSET_COLUMNS = ("id, kind, name, commune, lat, lon, geometry, address, service, manufacturer, model, installed_on, "
                 "status, reported_by, attributes, version, created_at, updated_at")
MAX_PAGE = 1000


class AssetNotFound(LookupError):
    pass


class AssetExists(ValueError):
    pass


class VersionConflict(ValueError):
    def __init__(self, current: int) -> None:
        self.current = current
        super().__init__(f"the asset is at version {current}")


@dataclass
class SaveResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    changed_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {"created": self.created, "updated": self.updated, "unchanged": self.unchanged}


def _jsonb(names: Sequence[str], alias: str) -> str:
    return "jsonb_build_object(" + ", ".join(f"'{n}', {alias}.{n}" for n in names) + ")"


_SAVE_SQL = f"""
WITH src AS (
    SELECT s.id,
           {_jsonb(_COMPARED, 's')} AS new_j,
           CASE WHEN a.id IS NULL THEN NULL ELSE {_jsonb(_COMPARED, 'a')} END AS old_j
    FROM staging_assets s LEFT JOIN assets a ON a.id = s.id
), diff AS (
    SELECT id, old_j IS NULL AS created,
           (SELECT jsonb_object_agg(n.key, jsonb_build_object('from', o.value, 'to', n.value))
              FROM jsonb_each(new_j) n LEFT JOIN jsonb_each(COALESCE(old_j, '{{}}'::jsonb)) o ON o.key = n.key
             WHERE o.value IS DISTINCT FROM n.value AND NOT (o.value IS NULL AND n.value = 'null'::jsonb)) AS changes
    FROM src
), hist AS (
    INSERT INTO asset_history (asset_id, actor, action, source, note, changes)
    SELECT id, %(actor)s,
           CASE WHEN created THEN 'created'
                WHEN changes -> 'status' ->> 'to' = 'retired' THEN 'retired'
                ELSE 'updated' END,
           %(source)s, %(note)s, changes
    FROM diff WHERE changes IS NOT NULL
    ORDER BY id
    RETURNING asset_id, action
), up AS (
    INSERT INTO assets (id, kind, name, commune, lat, lon, pt, geometry, address, service, manufacturer, model,
                        installed_on, status, reported_by, attributes, search_text)
    SELECT s.id, s.kind, s.name, s.commune, s.lat, s.lon, point(s.x, s.y), s.geometry, s.address, s.service,
           s.manufacturer, s.model, s.installed_on, s.status, s.reported_by, s.attributes, s.search_text
    FROM staging_assets s JOIN diff d ON d.id = s.id
    WHERE d.changes IS NOT NULL
    ON CONFLICT (id) DO UPDATE SET
        kind = EXCLUDED.kind, name = EXCLUDED.name, commune = EXCLUDED.commune, lat = EXCLUDED.lat,
        lon = EXCLUDED.lon, pt = EXCLUDED.pt, geometry = EXCLUDED.geometry, address = EXCLUDED.address,
        service = EXCLUDED.service, manufacturer = EXCLUDED.manufacturer, model = EXCLUDED.model,
        installed_on = EXCLUDED.installed_on, status = EXCLUDED.status, reported_by = EXCLUDED.reported_by,
        attributes = EXCLUDED.attributes, search_text = EXCLUDED.search_text,
        version = assets.version + 1, updated_at = now()
    RETURNING id
)
SELECT hist.asset_id, hist.action FROM hist JOIN up ON up.id = hist.asset_id
"""


async def _check_reporters(conn: psycopg.AsyncConnection, sheets: Sequence[AssetSheet], catalog: Catalog,
                           where: dict[str, Problem]) -> None:
    """Reporters not in the batch must exist in the registry and be of an allowed kind."""
    missing = unresolved_reporters(sheets)
    if not missing:
        return
    rows = await (await conn.execute("SELECT id, kind FROM assets WHERE id = ANY(%s)", (list(missing),))).fetchall()
    kinds = dict(rows)
    problems = []
    for sheet in sheets:
        reporter = sheet.reported_by
        if not reporter or reporter not in missing:
            continue
        origin = where[sheet.id]
        allowed = catalog.kinds[sheet.kind].reported_by
        if reporter not in kinds:
            problems.append(Problem(origin.where, "reported_by", f"no asset {reporter!r} in the registry or in this file", origin.line))
        elif kinds[reporter] not in allowed:
            problems.append(Problem(origin.where, "reported_by", f"{reporter} is a {kinds[reporter]}; a {sheet.kind} "
                                                                 f"is reported by: {', '.join(allowed)}", origin.line))
    if problems:
        raise ValidationFailed(problems[:200], len(problems))


async def lock_for_writing(conn: psycopg.AsyncConnection) -> None:
    """One writer at a time, until the caller's transaction ends.

    Taken before reading what a write depends on (does the id exist? which version is stored?), so that
    two concurrent writers cannot both decide on the same old state.
    """
    await conn.execute("LOCK TABLE assets IN SHARE ROW EXCLUSIVE MODE")


async def save_sheets(conn: psycopg.AsyncConnection, sheets: Sequence[AssetSheet], *, actor: str, source: str,
                      catalog: Catalog, communes: Communes, origins: dict[str, Problem] | None = None,
                      note: str | None = None) -> SaveResult:
    """Create or update sheets; record history for what changed. Runs inside the caller's transaction."""
    result = SaveResult()
    if not sheets:
        return result
    origins = origins or {s.id: Problem(s.id, None, "") for s in sheets}
    # One writer at a time: concurrent imports would otherwise compute their diffs on the same old rows.
    await lock_for_writing(conn)
    await _check_reporters(conn, sheets, catalog, origins)
    await conn.execute("""CREATE TEMP TABLE IF NOT EXISTS staging_assets (
        id text, kind text, name text, commune text, lat float8, lon float8, x float8, y float8, geometry jsonb,
        address text, service text, manufacturer text, model text, installed_on date, status text,
        reported_by text, attributes jsonb, search_text text) ON COMMIT DELETE ROWS""")
    await conn.execute("TRUNCATE staging_assets")
    labels = {k: spec.label for k, spec in catalog.kinds.items()}
    async with conn.cursor().copy(f"COPY staging_assets ({', '.join(_STAGING_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(list(_STAGING_TYPES))
        for s in sheets:
            await copy.write_row((
                s.id, s.kind, s.name, s.commune, s.lat, s.lon, s.x, s.y,
                psycopg.types.json.Jsonb(s.geometry) if s.geometry is not None else None,
                s.address, s.service, s.manufacturer, s.model, s.installed_on, s.status, s.reported_by,
                psycopg.types.json.Jsonb(s.attributes), s.search_text(communes.name(s.commune), labels[s.kind]),
            ))
    try:
        rows = await (await conn.execute(_SAVE_SQL, {"actor": actor, "source": source, "note": note})).fetchall()
    except psycopg.errors.UniqueViolation as exc:  # pragma: no cover - the lock makes this a bug, not input
        raise AssetExists(str(exc)) from None
    for asset_id, action in rows:
        result.changed_ids.append(asset_id)
        if action == "created":
            result.created += 1
        else:
            result.updated += 1
    result.unchanged = len(sheets) - len(rows)
    return result


def row_to_asset(row: dict[str, Any], communes: Communes) -> dict[str, Any]:
    """The API shape of a stored asset."""
    out = dict(row)
    out["commune_name"] = communes.name(row["commune"])
    for key in ("installed_on", "created_at", "updated_at"):
        if isinstance(out.get(key), (dt.date, dt.datetime)):
            out[key] = out[key].isoformat()
    return out


async def get_asset(conn: psycopg.AsyncConnection, asset_id: str, *, hide_kinds: Sequence[str] = ()) -> dict[str, Any]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {ASSET_COLUMNS} FROM assets WHERE id = %s AND kind <> ALL(%s)", (asset_id, list(hide_kinds)))
        row = await cur.fetchone()
    if row is None:
        raise AssetNotFound(asset_id)
    return row


async def asset_history(conn: psycopg.AsyncConnection, asset_id: str, limit: int = 200) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT seq, at, actor, action, source, note, changes FROM asset_history WHERE asset_id = %s "
                          "ORDER BY seq DESC LIMIT %s", (asset_id, limit))
        rows = await cur.fetchall()
    for row in rows:
        row["at"] = row["at"].isoformat()
    return rows


@dataclass
class AssetFilter:
    """What a list of assets may be narrowed by (all optional, combined with AND)."""

    kinds: list[str] = field(default_factory=list)
    communes: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    reported_by: str | None = None
    bbox: tuple[float, float, float, float] | None = None  # min lon, min lat, max lon, max lat
    near: tuple[float, float] | None = None  # lat, lon
    radius_m: float | None = None
    text: str | None = None
    hide_kinds: list[str] = field(default_factory=list)
    connectivity: str | None = None  # online, offline, unreachable (live twin), or never (no report yet)

    def where(self) -> tuple[str, dict[str, Any]]:
        clauses: list[str] = []
        params: dict[str, Any] = {}
        for name, column in (("kinds", "kind"), ("communes", "commune"), ("statuses", "status"), ("services", "service")):
            values = getattr(self, name)
            if values:
                clauses.append(f"{column} = ANY(%({name})s)")
                params[name] = values
        if self.hide_kinds:
            clauses.append("kind <> ALL(%(hide_kinds)s)")
            params["hide_kinds"] = self.hide_kinds
        if self.connectivity == "never":
            clauses.append("NOT EXISTS (SELECT 1 FROM twin t WHERE t.asset_id = assets.id)")
        elif self.connectivity:
            clauses.append("EXISTS (SELECT 1 FROM twin t WHERE t.asset_id = assets.id AND t.connectivity = %(connectivity)s)")
            params["connectivity"] = self.connectivity
        if self.reported_by:
            clauses.append("reported_by = %(reported_by)s")
            params["reported_by"] = self.reported_by
        if self.bbox:
            min_lon, min_lat, max_lon, max_lat = self.bbox
            xs, ys = to_lambert93([min_lon, min_lon, max_lon, max_lon], [min_lat, max_lat, min_lat, max_lat])
            # The projected box encloses the lat/lon box (index), the lat/lon test is exact.
            clauses.append("pt <@ box(point(%(bx1)s, %(by1)s), point(%(bx2)s, %(by2)s)) "
                           "AND lon BETWEEN %(min_lon)s AND %(max_lon)s AND lat BETWEEN %(min_lat)s AND %(max_lat)s")
            params.update(bx1=float(min(xs)) - 1, by1=float(min(ys)) - 1, bx2=float(max(xs)) + 1, by2=float(max(ys)) + 1,
                          min_lon=min_lon, max_lon=max_lon, min_lat=min_lat, max_lat=max_lat)
        if self.near:
            x, y = point_to_lambert93(self.near[1], self.near[0])
            clauses.append("pt <@ circle(point(%(nx)s, %(ny)s), %(radius)s)")
            params.update(nx=x, ny=y, radius=self.radius_m)
        if self.text:
            words = ["".join(ch for ch in w if ch.isalnum()) for w in fold(self.text).split()]
            words = [w for w in words if w]
            if words:
                clauses.append("(to_tsvector('simple', search_text) @@ to_tsquery('simple', %(tsq)s) "
                               "OR id ILIKE %(idprefix)s)")
                params["tsq"] = " & ".join(f"{w}:*" for w in words)
                params["idprefix"] = self.text.strip().replace("\\", "").replace("%", "").replace("_", "\\_") + "%"
        return (" AND ".join(clauses) or "TRUE"), params


@dataclass(frozen=True)
class Cursor:
    """Where the previous page ended: the last id, and its distance when the list is nearest-first."""

    after_id: str
    after_distance: float | None = None

    def encode(self) -> str:
        value: dict[str, Any] = {"after": self.after_id}
        if self.after_distance is not None:
            value["d"] = self.after_distance
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> "Cursor":
        try:
            padded = text + "=" * (-len(text) % 4)
            value = json.loads(base64.urlsafe_b64decode(padded.encode()))
            after, distance = value["after"], value.get("d")
            if not isinstance(after, str) or not (distance is None or isinstance(distance, (int, float))):
                raise ValueError
            return cls(after, None if distance is None else float(distance))
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, UnicodeDecodeError):
            raise ValueError("malformed cursor: pass back the next_cursor of a previous page unchanged") from None


async def list_assets(conn: psycopg.AsyncConnection, flt: AssetFilter, *, cursor: Cursor | None, limit: int
                      ) -> tuple[list[dict[str, Any]], Cursor | None]:
    """One page of assets and the cursor of the next one (None at the end).

    Ordered by id; with ``near``, nearest first (ties by id), through the GiST index's distance ordering.
    """
    where, params = flt.where()
    params.update(limit=limit + 1, after=cursor.after_id if cursor else None)
    if flt.near:
        dist = "(pt <-> point(%(nx)s, %(ny)s))"
        select = f"{ASSET_COLUMNS}, {dist} AS _distance, round({dist}::numeric, 1)::float8 AS distance_m"
        order = f"{dist}, id"
        keyset = ""
        if cursor is not None:
            if cursor.after_distance is None:
                raise ValueError("malformed cursor: this cursor belongs to a list without 'near'")
            keyset = f"AND ({dist} > %(after_d)s OR ({dist} = %(after_d)s AND id > %(after)s))"
            params["after_d"] = cursor.after_distance
    else:
        select, order = ASSET_COLUMNS, "id"
        keyset = "AND id > %(after)s" if cursor is not None else ""
    sql = f"SELECT {select} FROM assets WHERE {where} {keyset} ORDER BY {order} LIMIT %(limit)s"
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        rows = await cur.fetchall()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = Cursor(rows[-1]["id"], rows[-1].get("_distance"))
    for row in rows:
        row.pop("_distance", None)
    return rows, next_cursor


async def stream_assets(conn: psycopg.AsyncConnection, flt: AssetFilter, batch: int = 2000) -> AsyncIterator[dict[str, Any]]:
    """Every matching asset in list order, fetched in pages (for exports)."""
    cursor: Cursor | None = None
    while True:
        rows, cursor = await list_assets(conn, flt, cursor=cursor, limit=batch)
        for row in rows:
            yield row
        if cursor is None:
            return


def sheet_values(row: dict[str, Any]) -> dict[str, Any]:
    """Raw sheet values of a stored asset, to merge a partial update into before validating."""
    values = {k: row[k] for k in ("id", "kind", "name", "lat", "lon", "address", "service", "manufacturer", "model",
                                  "status", "reported_by", "attributes") if row.get(k) is not None}
    if row.get("installed_on"):
        values["installed_on"] = row["installed_on"].isoformat() if isinstance(row["installed_on"], dt.date) else row["installed_on"]
    if row.get("geometry"):
        values["geometry"] = row["geometry"]
    return values
