"""The equipment registry over HTTP, against the real application and both backends.

The database is shared by every test of a session: each test names its assets with its own ``uid``
prefix and scopes every list, count and export to them (``q=<uid>`` matches ids by prefix).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

LAT, LON = 47.3220, 5.0415  # central Dijon (commune 21231)
PARIS = (48.85, 2.35)
PROBLEM_JSON = "application/problem+json"
LETTERS = str.maketrans("0123456789", "ghijklmnop")


# --- helpers ------------------------------------------------------------------------------------------

def problem(response: Any, status: int) -> dict[str, Any]:
    """Assert a problem document with this status; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0].strip() == PROBLEM_JSON, response.headers
    body = response.json()
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def has_error(body: dict[str, Any], *, field: str | None = None, line: int | None = None,
              contains: str | None = None) -> bool:
    for err in body.get("errors", []):
        if field is not None and err.get("field") != field:
            continue
        if line is not None and err.get("line") != line:
            continue
        if contains is not None and contains.lower() not in err.get("message", "").lower():
            continue
        return True
    return False


def light(asset_id: str, lat: float = LAT, lon: float = LON, **extra: Any) -> dict[str, Any]:
    return {"id": asset_id, "kind": "street_light", "name": f"Light {asset_id}", "lat": lat, "lon": lon, **extra}


def create(client: Any, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/api/v1/assets", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def ids_of(client: Any, headers: dict[str, str], **params: Any) -> list[str]:
    r = client.get("/api/v1/assets", params={"limit": 1000, **params}, headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["next_cursor"] is None
    return [item["id"] for item in body["items"]]


def history(client: Any, headers: dict[str, str], asset_id: str) -> list[dict[str, Any]]:
    r = client.get(f"/api/v1/assets/{asset_id}/history", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def csv_bytes(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def import_file(client: Any, headers: dict[str, str], data: bytes, content_type: str = "text/csv",
                **params: Any) -> Any:
    return client.post("/api/v1/assets/import", content=data, params=params,
                       headers={**headers, "Content-Type": content_type})


def assert_absent(client: Any, headers: dict[str, str], *asset_ids: str) -> None:
    for asset_id in asset_ids:
        r = client.get(f"/api/v1/assets/{asset_id}", headers=headers)
        problem(r, 404)


CSV_HEADER = "id,kind,name,lat,lon,status,reported_by,attr.lamp_power_w,attr.circuits"


# --- create, read, commune ------------------------------------------------------------------------

def test_create_assigns_commune_and_returns_location_and_etag(app_client, auth, accounts, uid):
    admin = auth("admin")
    r = app_client.post("/api/v1/assets", headers=admin, json=light(
        f"{uid}-SL-1", address="1 place Darcy", manufacturer="Comatelec", installed_on="2018-10-02",
        attributes={"lamp_power_w": 39, "street_type": "commercial"}))
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/api/v1/assets/{uid}-SL-1"
    assert r.headers["etag"] == '"1"'
    created = r.json()
    assert created["commune"] == "21231" and created["commune_name"] == "Dijon"
    assert created["service"] == "lighting"  # the kind's default service
    assert created["status"] == "in_service"
    assert created["attributes"] == {"lamp_power_w": 39, "street_type": "commercial"}
    assert created["version"] == 1

    got = app_client.get(r.headers["location"], headers=auth("operator"))
    assert got.status_code == 200, got.text
    assert got.headers["etag"] == '"1"'
    asset = got.json()
    for key in ("id", "kind", "name", "lat", "lon", "commune", "commune_name", "address", "manufacturer",
                "installed_on", "attributes"):
        assert asset[key] == created[key], key
    assert [h["action"] for h in asset["history"]] == ["created"]
    entry = asset["history"][0]
    assert entry["actor"] == accounts["admin"]
    assert entry["changes"]["name"] == {"from": None, "to": f"Light {uid}-SL-1"}
    assert entry["changes"]["commune"] == {"from": None, "to": "21231"}

    # Another commune: the point decides, and a matching commune given explicitly is accepted.
    chenove = create(app_client, admin, light(f"{uid}-SL-2", 47.29138, 5.00638, commune="21166"))
    assert chenove["commune"] == "21166" and chenove["commune_name"] == "Chenôve"


def test_wrong_commune_is_refused(app_client, auth, uid):
    r = app_client.post("/api/v1/assets", headers=auth("admin"), json=light(f"{uid}-SL-1", commune="21166"))
    body = problem(r, 422)
    assert has_error(body, field="commune", contains="21231")
    assert_absent(app_client, auth("admin"), f"{uid}-SL-1")


def test_commune_name_contradicting_the_location_is_refused(app_client, auth, uid):
    admin = auth("admin")
    data = csv_bytes("id,kind,name,lat,lon,commune,commune_name",
                     f"{uid}-SL-1,street_light,A,{LAT},{LON},21231,Dijon",
                     f"{uid}-SL-2,street_light,B,{LAT},{LON},,Paris")
    body = problem(import_file(app_client, admin, data), 422)
    assert has_error(body, line=3, field="commune_name", contains="Dijon")
    assert_absent(app_client, admin, f"{uid}-SL-1", f"{uid}-SL-2")
    data = csv_bytes("id,kind,name,lat,lon,commune,commune_name",
                     f"{uid}-SL-1,street_light,A,{LAT},{LON},21231,Dijon",
                     f"{uid}-SL-2,street_light,B,47.29138,5.00638,,chenove")  # case and accents do not matter
    r = import_file(app_client, admin, data)
    assert r.status_code == 200, r.text
    assert app_client.get(f"/api/v1/assets/{uid}-SL-2", headers=admin).json()["commune_name"] == "Chenôve"


def test_duplicate_id_on_create_is_409(app_client, auth, uid):
    admin = auth("admin")
    create(app_client, admin, light(f"{uid}-SL-1"))
    r = app_client.post("/api/v1/assets", headers=admin, json=light(f"{uid}-SL-1", name="Other"))
    body = problem(r, 409)
    assert f"{uid}-SL-1" in body["detail"]
    assert app_client.get(f"/api/v1/assets/{uid}-SL-1", headers=admin).json()["name"] == f"Light {uid}-SL-1"


@pytest.mark.parametrize("change, field, words", [
    ({"kind": "spaceship"}, "kind", "spaceship"),
    ({"lat": PARIS[0], "lon": PARIS[1]}, "lat", "outside"),
    ({"lat": 95.0}, "lat", "latitude"),
    ({"lon": -200}, "lon", "longitude"),
    ({"lat": "abc"}, "lat", "number"),
    ({"colour": "red"}, "colour", "unknown field"),
    ({"attributes": {"wattage": 30}}, "attributes.wattage", "unknown attribute"),
    ({"attributes": {"lamp_power_w": "strong"}}, "attributes.lamp_power_w", "number"),
    ({"status": "broken"}, "status", "broken"),
    ({"id": "bad id!"}, "id", "not a valid id"),
])
def test_invalid_sheet_is_a_precise_422(app_client, auth, uid, change, field, words):
    body = light(f"{uid}-SL-1")
    body.update(change)
    r = app_client.post("/api/v1/assets", headers=auth("admin"), json=body)
    doc = problem(r, 422)
    assert has_error(doc, field=field, contains=words), doc
    assert_absent(app_client, auth("admin"), f"{uid}-SL-1")


def test_reported_by_must_exist_and_be_of_an_allowed_kind(app_client, auth, uid):
    admin = auth("admin")
    r = app_client.post("/api/v1/assets", headers=admin, json=light(f"{uid}-SL-1", reported_by=f"{uid}-CAB-404"))
    body = problem(r, 422)
    assert has_error(body, field="reported_by", contains=f"{uid}-CAB-404")
    assert_absent(app_client, admin, f"{uid}-SL-1")

    create(app_client, admin, {"id": f"{uid}-TC-1", "kind": "traffic_controller", "name": "Junction", "lat": LAT,
                               "lon": LON})
    r = app_client.post("/api/v1/assets", headers=admin, json=light(f"{uid}-SL-1", reported_by=f"{uid}-TC-1"))
    assert has_error(problem(r, 422), field="reported_by", contains="lighting_cabinet")

    create(app_client, admin, {"id": f"{uid}-CAB-1", "kind": "lighting_cabinet", "name": "Cabinet", "lat": LAT,
                               "lon": LON})
    assert create(app_client, admin, light(f"{uid}-SL-1", reported_by=f"{uid}-CAB-1"))["reported_by"] == f"{uid}-CAB-1"


def test_get_unknown_asset_is_404_problem(app_client, auth, uid):
    problem(app_client.get(f"/api/v1/assets/{uid}-NOPE", headers=auth("admin")), 404)
    problem(app_client.get(f"/api/v1/assets/{uid}-NOPE/history", headers=auth("admin")), 404)


# --- update, retire, history -----------------------------------------------------------------------

def test_patch_is_partial_versioned_and_recorded(app_client, auth, accounts, uid):
    admin, supervisor = auth("admin"), auth("supervisor")
    asset_id = f"{uid}-SL-1"
    create(app_client, admin, light(asset_id, address="2 rue X", attributes={"lamp_power_w": 39}))

    r = app_client.patch(f"/api/v1/assets/{asset_id}", headers={**supervisor, "If-Match": '"1"'},
                         json={"name": "Renamed", "attributes": {"lamp_power_w": 30}})
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == '"2"'
    updated = r.json()
    assert updated["name"] == "Renamed" and updated["attributes"] == {"lamp_power_w": 30}
    assert updated["address"] == "2 rue X" and updated["lat"] == LAT and updated["version"] == 2  # untouched

    # A stale If-Match is refused and changes nothing.
    r = app_client.patch(f"/api/v1/assets/{asset_id}", headers={**admin, "If-Match": '"1"'}, json={"name": "Stale"})
    body = problem(r, 412)
    assert body["current_version"] == 2
    assert app_client.get(f"/api/v1/assets/{asset_id}", headers=admin).json()["name"] == "Renamed"

    # The id cannot change.
    r = app_client.patch(f"/api/v1/assets/{asset_id}", headers=admin, json={"id": f"{uid}-SL-2"})
    assert has_error(problem(r, 422), field="id")
    assert_absent(app_client, admin, f"{uid}-SL-2")

    # Moving the asset re-assigns its commune; null clears an optional field.
    r = app_client.patch(f"/api/v1/assets/{asset_id}", headers=admin,
                         json={"lat": 47.29138, "lon": 5.00638, "address": None})
    assert r.status_code == 200, r.text
    assert r.json()["commune"] == "21166" and r.json()["address"] is None

    # An invalid change is refused and leaves the asset as it was.
    r = app_client.patch(f"/api/v1/assets/{asset_id}", headers=admin, json={"lat": PARIS[0], "lon": PARIS[1]})
    problem(r, 422)
    assert app_client.get(f"/api/v1/assets/{asset_id}", headers=admin).json()["version"] == 3

    items = history(app_client, admin, asset_id)
    assert [h["action"] for h in items] == ["updated", "updated", "created"]  # newest first
    move, rename, _ = items
    assert rename["actor"] == accounts["supervisor"]
    assert rename["changes"] == {"name": {"from": f"Light {asset_id}", "to": "Renamed"},
                                 "attributes": {"from": {"lamp_power_w": 39}, "to": {"lamp_power_w": 30}}}
    assert move["actor"] == accounts["admin"]
    assert move["changes"]["commune"] == {"from": "21231", "to": "21166"}
    assert move["changes"]["address"] == {"from": "2 rue X", "to": None}
    assert set(move["changes"]) == {"lat", "lon", "commune", "address"}


def test_patch_merges_attributes_key_by_key(app_client, auth, uid):
    """RFC 7396 merge: the attributes sent change, the others stay, null removes one."""
    admin = auth("admin")
    create(app_client, admin, light(f"{uid}-M1", attributes={"lamp_power_w": 39, "street_type": "commercial",
                                                             "pole_height_m": 8}))
    r = app_client.patch(f"/api/v1/assets/{uid}-M1", headers=admin,
                         json={"attributes": {"lamp_power_w": 30, "pole_height_m": None}})
    assert r.status_code == 200, r.text
    assert r.json()["attributes"] == {"lamp_power_w": 30, "street_type": "commercial"}
    latest = history(app_client, admin, f"{uid}-M1")[0]
    assert latest["changes"]["attributes"]["to"] == {"lamp_power_w": 30, "street_type": "commercial"}
    bad = app_client.patch(f"/api/v1/assets/{uid}-M1", headers=admin, json={"attributes": {"lamp_power_w": -5}})
    assert bad.status_code == 422 and has_error(bad.json(), field="attributes.lamp_power_w")


def test_patch_needs_a_body_and_a_well_formed_if_match(app_client, auth, uid):
    admin = auth("admin")
    create(app_client, admin, light(f"{uid}-SL-1"))
    problem(app_client.patch(f"/api/v1/assets/{uid}-SL-1", headers=admin, json={}), 422)
    problem(app_client.patch(f"/api/v1/assets/{uid}-SL-1", headers={**admin, "If-Match": "yesterday"},
                             json={"name": "x"}), 400)
    problem(app_client.patch(f"/api/v1/assets/{uid}-NOPE", headers=admin, json={"name": "x"}), 404)


def test_retire_keeps_the_asset_with_the_reason_in_its_history(app_client, auth, accounts, uid):
    admin = auth("admin")
    asset_id = f"{uid}-SL-1"
    create(app_client, admin, light(asset_id))
    r = app_client.post(f"/api/v1/assets/{asset_id}/retire", headers=auth("supervisor"),
                        json={"reason": "pole knocked down by a lorry"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "retired"
    asset = app_client.get(f"/api/v1/assets/{asset_id}", headers=admin).json()
    assert asset["status"] == "retired"
    latest = history(app_client, admin, asset_id)[0]
    assert latest["action"] == "retired"
    assert latest["note"] == "pole knocked down by a lorry"
    assert latest["actor"] == accounts["supervisor"]
    assert latest["changes"] == {"status": {"from": "in_service", "to": "retired"}}
    assert ids_of(app_client, admin, q=uid, status="retired") == [asset_id]
    assert ids_of(app_client, admin, q=uid, status="in_service") == []

    # A reason is required; unknown fields are refused.
    problem(app_client.post(f"/api/v1/assets/{asset_id}/retire", headers=admin, json={}), 422)
    body = problem(app_client.post(f"/api/v1/assets/{asset_id}/retire", headers=admin,
                                   json={"reason": "old", "when": "now"}), 422)
    assert has_error(body, field="when")
    problem(app_client.post(f"/api/v1/assets/{uid}-NOPE/retire", headers=admin, json={"reason": "gone"}), 404)


def test_concurrent_writers_do_not_overwrite_each_other(stack, uid):
    """Two creates of one id: one wins, the other is told it exists. Two updates: neither is lost."""
    import asyncio

    from psycopg_pool import AsyncConnectionPool

    from citypilot.equipment.catalog import default_catalog
    from citypilot.geo.communes import metropole
    from citypilot.registry import repository as repo
    from citypilot.registry import service

    catalog, communes = default_catalog(), metropole()
    common = dict(catalog=catalog, communes=communes)

    async def main() -> None:
        async with AsyncConnectionPool(stack.endpoints.database_url, min_size=3, max_size=3, open=False) as pool:
            await pool.open(wait=True, timeout=15)
            for n in range(3):
                asset_id = f"{uid}-SL-{n}"
                outcomes = await asyncio.gather(
                    *(service.create_asset(pool, light(asset_id, name=actor), actor=actor, **common)
                      for actor in ("alice", "bob")), return_exceptions=True)
                winners = [o["name"] for o in outcomes if isinstance(o, dict)]
                assert len(winners) == 1, outcomes
                assert sum(isinstance(o, repo.AssetExists) for o in outcomes) == 1, outcomes
                async with pool.connection() as conn:
                    assert (await repo.get_asset(conn, asset_id))["name"] == winners[0]
                    assert [h["action"] for h in await repo.asset_history(conn, asset_id)] == ["created"]

            asset_id = f"{uid}-SL-0"
            update = dict(actor="carol", hide_kinds=[], **common)
            outcomes = await asyncio.gather(
                service.update_asset(pool, asset_id, {"name": "Renamed"}, expected_version=1, **update),
                service.update_asset(pool, asset_id, {"address": "Quai"}, expected_version=1, **update),
                return_exceptions=True)
            assert sum(isinstance(o, repo.VersionConflict) for o in outcomes) == 1, outcomes
            outcomes = await asyncio.gather(
                service.update_asset(pool, asset_id, {"name": "Renamed again"}, expected_version=None, **update),
                service.update_asset(pool, asset_id, {"model": "Ampera"}, expected_version=None, **update))
            async with pool.connection() as conn:
                final = await repo.get_asset(conn, asset_id)
            assert (final["name"], final["model"], final["version"]) == ("Renamed again", "Ampera", 4)

    asyncio.run(main())


# --- list: filters and pagination ------------------------------------------------------------------

def test_list_filters(app_client, auth, uid):
    admin = auth("admin")
    token = uid.translate(LETTERS)  # a word of letters only, for full-text search
    cab = f"{uid}-CAB-1"
    create(app_client, admin, {"id": cab, "kind": "lighting_cabinet", "name": f"Cabinet {token}", "lat": LAT,
                               "lon": LON})
    create(app_client, admin, light(f"{uid}-SL-1", name=f"Place de la Libération {token}", reported_by=cab))
    create(app_client, admin, light(f"{uid}-SL-2", LAT + 0.004, LON + 0.004, name=f"Rue Chabot-Charny {token}",
                                    reported_by=cab, status="planned"))
    create(app_client, admin, light(f"{uid}-SL-3", 47.29138, 5.00638, name=f"Chenôve centre {token}"))
    create(app_client, admin, {"id": f"{uid}-TC-1", "kind": "traffic_controller", "name": f"Carrefour {token}",
                               "lat": LAT - 0.004, "lon": LON - 0.004})
    everything = [cab, f"{uid}-SL-1", f"{uid}-SL-2", f"{uid}-SL-3", f"{uid}-TC-1"]

    assert ids_of(app_client, admin, q=uid) == everything  # ordered by id
    assert ids_of(app_client, admin, q=uid, kind="street_light") == [f"{uid}-SL-1", f"{uid}-SL-2", f"{uid}-SL-3"]
    assert ids_of(app_client, admin, q=uid, kind="lighting_cabinet,traffic_controller") == [cab, f"{uid}-TC-1"]
    assert ids_of(app_client, admin, q=uid, commune="21166") == [f"{uid}-SL-3"]
    assert ids_of(app_client, admin, q=uid, commune="21231,21166") == everything
    assert ids_of(app_client, admin, q=uid, status="planned") == [f"{uid}-SL-2"]
    assert ids_of(app_client, admin, q=uid, service="traffic") == [f"{uid}-TC-1"]
    assert ids_of(app_client, admin, reported_by=cab) == [f"{uid}-SL-1", f"{uid}-SL-2"]
    # bbox is min_lon,min_lat,max_lon,max_lat
    assert ids_of(app_client, admin, q=uid, bbox=f"{LON + 0.002},{LAT + 0.002},{LON + 0.006},{LAT + 0.006}") == [
        f"{uid}-SL-2"]
    assert ids_of(app_client, admin, q=uid, bbox=f"{LON - 0.001},{LAT - 0.001},{LON + 0.001},{LAT + 0.001}") == [
        cab, f"{uid}-SL-1"]
    # near: 0.004° of latitude and longitude is ~530 m away
    r = app_client.get("/api/v1/assets", params={"q": uid, "near": f"{LAT},{LON}", "radius_m": 100}, headers=admin)
    assert r.status_code == 200, r.text
    assert [i["id"] for i in r.json()["items"]] == [cab, f"{uid}-SL-1"]
    assert all(i["distance_m"] < 1 for i in r.json()["items"])
    assert ids_of(app_client, admin, q=uid, near=f"{LAT},{LON}", radius_m=800) == [
        cab, f"{uid}-SL-1", f"{uid}-SL-2", f"{uid}-TC-1"]
    # filters combine
    assert ids_of(app_client, admin, q=uid, kind="street_light", commune="21231", status="in_service") == [
        f"{uid}-SL-1"]

    # Text search ignores accents and case, and matches word prefixes.
    for q in (f"liberation {token}", f"LIBÉRATION {token}", f"libe {token}", f"Place Libération {token}"):
        assert ids_of(app_client, admin, q=q) == [f"{uid}-SL-1"], q
    assert ids_of(app_client, admin, q=f"chenove {token}") == [f"{uid}-SL-3"]
    assert ids_of(app_client, admin, q=f"dijon {token}") == [cab, f"{uid}-SL-1", f"{uid}-SL-2", f"{uid}-TC-1"]
    assert ids_of(app_client, admin, q=f"cabinet {token}") == [cab]  # also the kind's label
    assert ids_of(app_client, admin, q=f"liberation {token}x") == []


def test_cursor_pagination_visits_every_asset_once_in_id_order(app_client, auth, uid):
    admin = auth("admin")
    rows = [CSV_HEADER.split(",")[:5]] + [[f"{uid}-P-{i:02d}", "parking_sensor", f"Bay {i}", f"{LAT + i * 0.0002}",
                                          f"{LON}"] for i in range(11)]
    r = import_file(app_client, admin, csv_bytes(*(",".join(row) for row in rows)))
    assert r.status_code == 200, r.text
    expected = sorted(row[0] for row in rows[1:])

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"q": uid, "limit": 3, **({"cursor": cursor} if cursor else {})}
        r = app_client.get("/api/v1/assets", params=params, headers=auth("operator"))
        assert r.status_code == 200, r.text
        page = r.json()
        pages += 1
        assert len(page["items"]) <= 3
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 20
    assert seen == expected
    assert pages == 4

    for bad in ("not-a-cursor!", "eyJ4IjogMX0", "e30"):  # garbage, {"x": 1}, {}
        body = problem(app_client.get("/api/v1/assets", params={"cursor": bad}, headers=admin), 400)
        assert "cursor" in body["detail"]


def test_near_lists_nearest_first_across_pages(app_client, auth, uid):
    """With near, the closest assets come first, and paging keeps that order without gaps or repeats."""
    admin = auth("admin")
    offsets = [7, 2, 9, 0, 4, 1, 8, 3, 6, 5]  # created out of distance order
    lines = [CSV_HEADER.split(",")[:5]] + [[f"{uid}-N-{k}", "parking_sensor", f"Bay {k}", f"{LAT + k * 0.0003:.6f}",
                                            f"{LON}"] for k in offsets]
    assert import_file(app_client, admin, csv_bytes(*(",".join(row) for row in lines))).status_code == 200
    seen: list[str] = []
    distances: list[float] = []
    cursor = None
    while True:
        params = {"near": f"{LAT},{LON}", "radius_m": 400, "q": uid, "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = app_client.get("/api/v1/assets", params=params, headers=admin).json()
        seen += [item["id"] for item in page["items"]]
        distances += [item["distance_m"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"{uid}-N-{k}" for k in range(10)]
    assert distances == sorted(distances) and distances[0] == 0.0 and 30 < distances[1] < 37
    # A cursor from a nearest-first list is refused on a list by id, and the other way round.
    first = app_client.get("/api/v1/assets", params={"near": f"{LAT},{LON}", "q": uid, "limit": 2}, headers=admin).json()
    assert app_client.get("/api/v1/assets", params={"q": uid, "cursor": first["next_cursor"]}, headers=admin).status_code == 400


@pytest.mark.parametrize("params, words", [
    ({"bbox": "5,47,5.1"}, "bbox"),
    ({"bbox": "a,b,c,d"}, "bbox"),
    ({"bbox": "5.1,47,5.0,47.5"}, "bbox"),  # min > max
    ({"bbox": "5,47,nan,47.5"}, "bbox"),
    ({"near": "47.32"}, "near"),
    ({"near": "47.32,abc"}, "near"),
    ({"near": "95,5"}, "near"),
    ({"near": "47.32,5.04", "radius_m": 0}, "radius"),
    ({"near": "47.32,5.04", "radius_m": 10_000_000}, "radius"),
    ({"kind": "spaceship"}, "spaceship"),
    ({"kind": "street_light,spaceship"}, "spaceship"),
    ({"commune": "75056"}, "75056"),
    ({"status": "broken"}, "broken"),
    ({"service": "magic"}, "magic"),
    ({"limit": 0}, "limit"),
    ({"radius_m": 300}, "near"),
    ({"q": "%%--"}, "letters or digits"),
])
def test_bad_list_parameters_are_400_or_422(app_client, auth, params, words):
    r = app_client.get("/api/v1/assets", params=params, headers=auth("admin"))
    status = 422 if "limit" in params else 400
    body = problem(r, status)
    assert words in json.dumps(body).lower()


# --- import --------------------------------------------------------------------------------------

def _light_csv(uid: str, power: dict[int, str] | None = None) -> bytes:
    power = power or {}
    lines = [CSV_HEADER,
             f"{uid}-CAB-1,lighting_cabinet,Armoire {uid},{LAT},{LON},,,,4"]
    for i in range(1, 5):
        lines.append(f"{uid}-SL-{i},street_light,Lampe {i},{LAT + i * 0.0005},{LON},in_service,{uid}-CAB-1,"
                     f"{power.get(i, '39')},")
    return csv_bytes(*lines)


def _history_counts(client: Any, headers: dict[str, str], ids: list[str]) -> dict[str, int]:
    return {asset_id: len(history(client, headers, asset_id)) for asset_id in ids}


def test_csv_import_is_idempotent_and_updates_only_changed_rows(app_client, auth, accounts, uid):
    admin = auth("admin")
    ids = [f"{uid}-CAB-1"] + [f"{uid}-SL-{i}" for i in range(1, 5)]
    r = import_file(app_client, admin, _light_csv(uid))
    assert r.status_code == 200, r.text
    assert r.json() == {"dry_run": False, "created": 5, "updated": 0, "unchanged": 0, "total": 5}
    assert ids_of(app_client, admin, q=uid) == ids
    cab = app_client.get(f"/api/v1/assets/{uid}-CAB-1", headers=admin).json()
    assert cab["attributes"] == {"circuits": 4} and cab["commune"] == "21231"
    sl = app_client.get(f"/api/v1/assets/{uid}-SL-1", headers=admin).json()
    assert sl["reported_by"] == f"{uid}-CAB-1" and sl["attributes"] == {"lamp_power_w": 39}
    assert sl["history"][0]["actor"] == accounts["admin"] and sl["history"][0]["action"] == "created"
    before = _history_counts(app_client, admin, ids)
    assert set(before.values()) == {1}

    r = import_file(app_client, admin, _light_csv(uid))
    assert r.status_code == 200, r.text
    assert r.json() == {"dry_run": False, "created": 0, "updated": 0, "unchanged": 5, "total": 5}
    assert _history_counts(app_client, admin, ids) == before
    assert app_client.get(f"/api/v1/assets/{uid}-SL-1", headers=admin).json()["version"] == 1

    r = import_file(app_client, admin, _light_csv(uid, power={3: "25"}))
    assert r.status_code == 200, r.text
    assert r.json() == {"dry_run": False, "created": 0, "updated": 1, "unchanged": 4, "total": 5}
    after = _history_counts(app_client, admin, ids)
    assert after == {**before, f"{uid}-SL-3": 2}
    latest = history(app_client, admin, f"{uid}-SL-3")[0]
    assert latest["action"] == "updated"
    assert latest["changes"] == {"attributes": {"from": {"lamp_power_w": 39}, "to": {"lamp_power_w": 25}}}
    assert app_client.get(f"/api/v1/assets/{uid}-SL-3", headers=admin).json()["version"] == 2


def test_dry_run_writes_nothing(app_client, auth, uid):
    admin = auth("admin")
    r = import_file(app_client, admin, _light_csv(uid), dry_run="true")
    assert r.status_code == 200, r.text
    assert r.json() == {"dry_run": True, "created": 5, "updated": 0, "unchanged": 0, "total": 5}
    assert ids_of(app_client, admin, q=uid) == []
    # A dry run reports the same problems as a real import.
    bad = _light_csv(uid).replace(f"{LAT + 0.001},".encode(), b"abc,")
    body = problem(import_file(app_client, admin, bad, dry_run="true"), 422)
    assert has_error(body, line=4, field="lat")
    # ... including those only the registry can see: a dry run that passes means the import will.
    ghost = _light_csv(uid).replace(f",{uid}-CAB-1,39".encode(), f",{uid}-GHOST,39".encode(), 1)
    body = problem(import_file(app_client, admin, ghost, dry_run="true"), 422)
    assert has_error(body, line=3, field="reported_by", contains=f"{uid}-GHOST")
    assert ids_of(app_client, admin, q=uid) == []


def test_geojson_import_is_idempotent(app_client, auth, uid):
    admin = auth("admin")
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": f"{uid}-BUS-1", "geometry": {"type": "Point", "coordinates": [LON, LAT]},
         "properties": {"kind": "bus", "name": "Bus 1", "attributes": {"capacity": 90, "energy": "hydrogen"}}},
        {"type": "Feature", "geometry": {"type": "LineString",
                                         "coordinates": [[LON, LAT], [LON + 0.002, LAT + 0.001]]},
         "properties": {"id": f"{uid}-BOL-1", "kind": "bollard_site", "name": "Rue des Forges",
                        "attributes": {"bollards": 3}}},
    ]}
    data = json.dumps(doc).encode()
    r = import_file(app_client, admin, data, content_type="application/geo+json")
    assert r.status_code == 200, r.text
    assert r.json()["created"] == 2
    bol = app_client.get(f"/api/v1/assets/{uid}-BOL-1", headers=admin).json()
    assert bol["geometry"]["type"] == "LineString" and bol["commune"] == "21231"
    assert LON <= bol["lon"] <= LON + 0.002 and LAT <= bol["lat"] <= LAT + 0.001  # a point on the line
    bus = app_client.get(f"/api/v1/assets/{uid}-BUS-1", headers=admin).json()
    assert (bus["lat"], bus["lon"], bus["geometry"]) == (LAT, LON, None)

    # ?format= overrides the content type
    r = import_file(app_client, admin, data, content_type="application/octet-stream", format="geojson")
    assert r.status_code == 200, r.text
    assert (r.json()["created"], r.json()["updated"], r.json()["unchanged"]) == (0, 0, 2)


def test_import_is_all_or_nothing(app_client, auth, uid):
    admin = auth("admin")
    data = csv_bytes(CSV_HEADER,
                     f"{uid}-SL-1,street_light,Lampe 1,{LAT},{LON},,,39,",
                     f"{uid}-SL-2,street_light,Lampe 2,{LAT},{LON},,,39,",
                     f"{uid}-SL-3,street_light,Lampe 3,abc,{LON},,,39,",
                     f"{uid}-SL-4,street_light,Lampe 4,{LAT},{LON},,,39,")
    body = problem(import_file(app_client, admin, data), 422)
    assert has_error(body, line=4, field="lat", contains="abc")
    assert [e["line"] for e in body["errors"]] == [4]
    assert_absent(app_client, admin, f"{uid}-SL-1", f"{uid}-SL-2", f"{uid}-SL-4")

    # A problem only the database can see (a reporter that does not exist) also writes nothing.
    data = csv_bytes(CSV_HEADER,
                     f"{uid}-SL-1,street_light,Lampe 1,{LAT},{LON},,,39,",
                     f"{uid}-SL-2,street_light,Lampe 2,{LAT},{LON},,{uid}-GHOST,39,",
                     f"{uid}-SL-3,street_light,Lampe 3,{LAT},{LON},,,39,")
    body = problem(import_file(app_client, admin, data), 422)
    assert has_error(body, line=3, field="reported_by", contains=f"{uid}-GHOST")
    assert_absent(app_client, admin, f"{uid}-SL-1", f"{uid}-SL-2", f"{uid}-SL-3")

    # An invalid file leaves existing assets untouched.
    create(app_client, admin, light(f"{uid}-SL-1", attributes={"lamp_power_w": 10}))
    problem(import_file(app_client, admin, data), 422)
    asset = app_client.get(f"/api/v1/assets/{uid}-SL-1", headers=admin).json()
    assert asset["attributes"] == {"lamp_power_w": 10} and asset["version"] == 1


def test_import_reports_every_problem_with_line_and_field(app_client, auth, uid):
    admin = auth("admin")
    data = csv_bytes(CSV_HEADER,
                     f"{uid}-SL-1,street_light,Lampe 1,{LAT},{LON},,,39,",
                     f"{uid}-SL-2,spaceship,Lampe 2,{LAT},{LON},,,,",
                     f"{uid}-SL-3,street_light,Lampe 3,{PARIS[0]},{PARIS[1]},,,,",
                     f"{uid}-SL-1,street_light,Lampe 1 bis,{LAT},{LON},,,,",
                     f"{uid}-SL-5,street_light,Lampe 5,{LAT},{LON},,,5000,")
    body = problem(import_file(app_client, admin, data), 422)
    assert has_error(body, line=3, field="kind", contains="spaceship")
    assert has_error(body, line=4, field="lat", contains="outside")
    assert has_error(body, line=5, field="id", contains="line 2")  # the duplicate names both lines
    assert has_error(body, line=6, field="attr.lamp_power_w", contains="maximum")
    assert body["error_count"] == 4
    assert_absent(app_client, admin, f"{uid}-SL-1", f"{uid}-SL-5")


@pytest.mark.parametrize("content, content_type, line, field, words", [
    ("id,kind,name,lat,lon\nX-1,street_light,A,47.32,5.04\nX-2,street_light,B,47.32,5.04,extra\n", "text/csv",
     3, None, "cells"),
    ('id,kind,name,lat,lon\nX-1,street_light,"unterminated,47.32,5.04\n', "text/csv", 2, None, "csv"),
    ("id,kind,name,colour\nX-1,street_light,A,red\n", "text/csv", 1, "colour", "unknown column"),
    ("id,name,lat,lon\nX-1,A,47.32,5.04\n", "text/csv", 1, "kind", "missing"),
    ("id,kind,name,lat,lon,attr.wattage\nX-1,street_light,A,47.32,5.04,3\n", "text/csv", 2, "attr.wattage",
     "unknown attribute"),
    ('{"type": "FeatureCollection", "features": [\n{"type": "Feature",\n}]}', "application/geo+json", 3, None,
     "json"),
    ('{"type": "Feature", "geometry": {"type": "Point", "coordinates": ["a", "b"]}, "properties": {}}',
     "application/geo+json", None, "geometry", "lon, lat"),
    ('{"type": "Topology"}', "application/geo+json", None, "type", "featurecollection"),
    ('{"type": "FeatureCollection", "features": []}', "application/geo+json", None, None, "no asset"),
    (b"\xef\xbb\xbf \n", "text/csv", None, None, "empty"),
    (b"id,kind,name\nX-1,street_light,Caf\xe9\n", "text/csv", None, None, "utf-8"),
])
def test_malformed_files_are_precise_422(app_client, auth, content, content_type, line, field, words):
    data = content if isinstance(content, bytes) else content.encode()
    body = problem(import_file(app_client, auth("admin"), data, content_type=content_type), 422)
    assert body["errors"], body
    err = body["errors"][0]
    assert err.get("line") == line, body
    assert err["field"] == field, body
    assert words in err["message"].lower(), body


def test_import_refuses_empty_body_and_unknown_format(app_client, auth):
    admin = auth("admin")
    problem(import_file(app_client, admin, b""), 400)
    problem(import_file(app_client, admin, b"id\n", format="xlsx"), 422)


def test_oversized_upload_is_413(stack, auth, uid):
    from fastapi.testclient import TestClient

    from citypilot.api.app import create_app

    small = create_app(dataclasses.replace(stack.config, http_max_body_bytes=1000), stack.endpoints)
    admin = auth("admin")
    lines = [CSV_HEADER] + [f"{uid}-SL-{i:03d},street_light,Lampe {i},{LAT},{LON},,,39," for i in range(40)]
    big = csv_bytes(*lines)
    assert len(big) > 1000
    with TestClient(small, base_url="http://testserver") as client:
        body = problem(import_file(client, admin, big), 413)
        assert "1000" in body["detail"]
        # Without a Content-Length (chunked upload) the limit holds too.
        r = client.post("/api/v1/assets/import", content=iter([big[:600], big[600:]]),
                        headers={**admin, "Content-Type": "text/csv"})
        problem(r, 413)
        assert_absent(client, admin, f"{uid}-SL-000")
        # A file under the limit goes through the same application.
        r = import_file(client, admin, csv_bytes(*lines[:3]))
        assert r.status_code == 200, r.text
        assert r.json()["created"] == 2


# --- authorization -------------------------------------------------------------------------------

def test_registry_roles(app_client, auth, uid):
    admin = auth("admin")
    asset_id = f"{uid}-SL-1"
    create(app_client, admin, light(asset_id))
    for role in ("read_only", "operator", "switchboard", "field_agent", "service_coordinator", "police"):
        headers = auth(role)
        assert ids_of(app_client, headers, q=uid) == [asset_id], role
        assert app_client.get(f"/api/v1/assets/{asset_id}", headers=headers).status_code == 200, role
        assert app_client.get(f"/api/v1/assets/{asset_id}/history", headers=headers).status_code == 200, role
        r = app_client.get("/api/v1/assets/export", params={"q": uid}, headers=headers)
        assert r.status_code == 200 and asset_id in r.text, role
    for role in ("read_only", "operator", "police", "service_coordinator", "dpo"):
        headers = auth(role)
        problem(app_client.post("/api/v1/assets", json=light(f"{uid}-SL-{role}"), headers=headers), 403)
        problem(import_file(app_client, headers, csv_bytes("id,kind,name,lat,lon",
                                                           f"{uid}-SL-9,street_light,A,{LAT},{LON}")), 403)
        problem(app_client.patch(f"/api/v1/assets/{asset_id}", json={"name": "x"}, headers=headers), 403)
        problem(app_client.post(f"/api/v1/assets/{asset_id}/retire", json={"reason": "because"}, headers=headers), 403)
    dpo = auth("dpo")
    problem(app_client.get("/api/v1/assets", headers=dpo), 403)
    problem(app_client.get(f"/api/v1/assets/{asset_id}", headers=dpo), 403)
    problem(app_client.get("/api/v1/assets/export", headers=dpo), 403)
    for method, path in (("GET", "/api/v1/assets"), ("GET", f"/api/v1/assets/{asset_id}"),
                         ("POST", "/api/v1/assets"), ("POST", "/api/v1/assets/import"),
                         ("GET", "/api/v1/assets/export")):
        r = app_client.request(method, path, json={} if method == "POST" else None)
        problem(r, 401)
    problem(app_client.get("/api/v1/assets", headers={"Authorization": "Bearer not-a-token"}), 401)
    asset = app_client.get(f"/api/v1/assets/{asset_id}", headers=admin).json()
    assert asset["name"] == f"Light {asset_id}" and asset["status"] == "in_service" and asset["version"] == 1
    assert_absent(app_client, admin, f"{uid}-SL-9")


def test_restricted_kinds_are_seen_by_public_safety_roles_only(app_client, auth, uid):
    admin = auth("admin")
    cam = f"{uid}-CAM-1"
    create(app_client, admin, {"id": cam, "kind": "camera", "name": "Place du Bareuzai", "lat": LAT, "lon": LON,
                               "attributes": {"camera_type": "ptz", "recording_days": 15}})
    create(app_client, admin, light(f"{uid}-SL-1"))
    for role in ("admin", "supervisor", "police"):
        headers = auth(role)
        assert app_client.get(f"/api/v1/assets/{cam}", headers=headers).status_code == 200, role
        assert ids_of(app_client, headers, q=uid) == [cam, f"{uid}-SL-1"], role
        assert ids_of(app_client, headers, q=uid, kind="camera") == [cam], role
        r = app_client.get("/api/v1/assets/export", params={"q": uid}, headers=headers)
        assert cam in r.text and "attr.camera_type" in r.text, role
    for role in ("operator", "read_only", "switchboard", "service_coordinator", "field_agent"):
        headers = auth(role)
        problem(app_client.get(f"/api/v1/assets/{cam}", headers=headers), 404)
        problem(app_client.get(f"/api/v1/assets/{cam}/history", headers=headers), 404)
        assert ids_of(app_client, headers, q=uid) == [f"{uid}-SL-1"], role
        assert ids_of(app_client, headers, q=uid, kind="camera") == [], role
        assert ids_of(app_client, headers, near=f"{LAT},{LON}", radius_m=50, q=uid) == [f"{uid}-SL-1"], role
        for fmt in ("csv", "geojson"):
            r = app_client.get("/api/v1/assets/export", params={"q": uid, "format": fmt}, headers=headers)
            assert r.status_code == 200, r.text
            assert f"{uid}-SL-1" in r.text and cam not in r.text and "camera" not in r.text, (role, fmt)


# --- export and round trip -----------------------------------------------------------------------

def _round_trip_assets(client: Any, headers: dict[str, str], uid: str) -> list[str]:
    cab = f"{uid}-CAB-1"
    assets = [
        {"id": cab, "kind": "lighting_cabinet", "name": "Armoire, \"Darcy\"", "lat": LAT, "lon": LON,
         "address": "Place Darcy\nDijon", "installed_on": "2015-03-02",
         "attributes": {"circuits": 6, "contracted_power_kva": 36.5, "energy_meter_id": "PDL 0042"}},
        light(f"{uid}-SL-1", name="Rue de la Liberté 12", reported_by=cab, manufacturer="Comatelec",
              model="Ampera Midi", attributes={"lamp_power_w": 39, "street_type": "commercial",
                                               "presence_detection": True, "pole_height_m": 7.5}),
        light(f"{uid}-SL-2", LAT + 0.001, LON + 0.001, status="planned", installed_on="2099-01-01",
              attributes={"lamp_power_w": 22.25, "presence_detection": False}),
        {"id": f"{uid}-AQ-1", "kind": "air_quality_station", "name": "Station Trémouille", "lat": LAT - 0.002,
         "lon": LON + 0.003, "attributes": {"pollutants": "NO2, PM10; O3"}},
        {"id": f"{uid}-BOL-1", "kind": "bollard_site", "name": "Rue des Forges",
         "geometry": {"type": "LineString", "coordinates": [[5.0401, 47.3221], [5.041234567, 47.32254321],
                                                            [5.0427, 47.3228]]},
         "attributes": {"bollards": 2, "access_zone": "secteur piéton"}},
        {"id": f"{uid}-PK-1", "kind": "parking_sensor", "name": "Place", "lat": LAT + 0.0031, "lon": LON - 0.0027,
         "geometry": {"type": "Polygon", "coordinates": [[[LON - 0.0028, LAT + 0.003], [LON - 0.0026, LAT + 0.003],
                                                          [LON - 0.0026, LAT + 0.0032], [LON - 0.0028, LAT + 0.003]]]},
         "status": "out_of_service"},
    ]
    for body in assets:
        create(client, headers, body)
    return sorted(a["id"] for a in assets)


@pytest.mark.parametrize("fmt, content_type", [("csv", "text/csv"), ("geojson", "application/geo+json")])
def test_export_reimports_unchanged(app_client, auth, uid, fmt, content_type):
    admin = auth("admin")
    ids = _round_trip_assets(app_client, admin, uid)
    before = {i: app_client.get(f"/api/v1/assets/{i}", headers=admin).json() for i in ids}

    r = app_client.get("/api/v1/assets/export", params={"q": uid, "format": fmt}, headers=admin)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv" if fmt == "csv" else "application/geo+json")
    assert "attachment" in r.headers["content-disposition"]
    exported = r.content
    if fmt == "csv":
        header = exported.decode().splitlines()[0].split(",")
        assert {"attr.lamp_power_w", "attr.pollutants", "attr.bollards", "geometry", "commune"} <= set(header)
        assert "LINESTRING (5.0401 47.3221, 5.041234567 47.32254321, 5.0427 47.3228)" in exported.decode()
    else:
        doc = json.loads(exported)
        assert [f["id"] for f in doc["features"]] == ids
        line = next(f for f in doc["features"] if f["id"] == f"{uid}-BOL-1")
        assert line["geometry"]["type"] == "LineString"
        assert line["properties"]["attributes"] == {"bollards": 2, "access_zone": "secteur piéton"}

    r = import_file(app_client, admin, exported, content_type=content_type)
    assert r.status_code == 200, r.text
    assert r.json() == {"dry_run": False, "created": 0, "updated": 0, "unchanged": len(ids), "total": len(ids)}
    after = {i: app_client.get(f"/api/v1/assets/{i}", headers=admin).json() for i in ids}
    assert after == before

    # The export, edited in a spreadsheet, updates what was edited and nothing else.
    edited = exported.replace("Rue des Forges".encode(), "Rue des Forges (nord)".encode())
    r = import_file(app_client, admin, edited, content_type=content_type)
    assert r.json() == {"dry_run": False, "created": 0, "updated": 1, "unchanged": len(ids) - 1, "total": len(ids)}
    assert history(app_client, admin, f"{uid}-BOL-1")[0]["changes"] == {
        "name": {"from": "Rue des Forges", "to": "Rue des Forges (nord)"}}


def test_large_export_streams_in_batches_and_reimports_unchanged(app_client, auth, uid):
    """More assets than one streamed batch (2,000): no row lost or repeated at the seams."""
    admin = auth("admin")
    count = 2_345
    lines = ["id,kind,name,lat,lon,attr.max_stay_min"] + [
        f"{uid}-P-{i:05d},parking_sensor,Bay {i},{LAT + (i % 50) * 0.0001},{LON + (i // 50) * 0.0001},{1 + i % 600}"
        for i in range(count)]
    r = import_file(app_client, admin, csv_bytes(*lines))
    assert r.status_code == 200, r.text
    assert r.json()["created"] == count
    expected = [f"{uid}-P-{i:05d}" for i in range(count)]
    for fmt, content_type in (("csv", "text/csv"), ("geojson", "application/geo+json")):
        r = app_client.get("/api/v1/assets/export", params={"q": uid, "format": fmt}, headers=auth("operator"))
        assert r.status_code == 200, r.text
        if fmt == "csv":
            exported = [line.split(",")[0] for line in r.text.splitlines()[1:]]
        else:
            exported = [f["id"] for f in json.loads(r.content)["features"]]
        assert exported == expected, fmt
        r = import_file(app_client, admin, r.content, content_type=content_type)
        assert r.status_code == 200, r.text
        assert (r.json()["created"], r.json()["updated"], r.json()["unchanged"]) == (0, 0, count), fmt


def test_largest_geometry_survives_a_csv_round_trip(app_client, auth, uid):
    """A line of 9,000 points (the registry takes up to 10,000) makes a WKT cell far over csv's 128 KiB default."""
    admin = auth("admin")
    coords = [[5.03 + i * 0.000004, LAT + (i % 2) * 0.0001] for i in range(9_000)]
    create(app_client, admin, {"id": f"{uid}-BOL-1", "kind": "bollard_site", "name": "Long",
                               "geometry": {"type": "LineString", "coordinates": coords}})
    exported = app_client.get("/api/v1/assets/export", params={"q": uid}, headers=admin).content
    assert len(exported) > 200_000
    r = import_file(app_client, admin, exported)
    assert r.status_code == 200, r.text
    assert (r.json()["created"], r.json()["updated"], r.json()["unchanged"]) == (0, 0, 1)


def test_export_applies_filters(app_client, auth, uid):
    admin = auth("admin")
    ids = _round_trip_assets(app_client, admin, uid)
    r = app_client.get("/api/v1/assets/export", params={"q": uid, "kind": "street_light", "format": "geojson"},
                       headers=admin)
    assert [f["id"] for f in r.json()["features"]] == [f"{uid}-SL-1", f"{uid}-SL-2"]
    r = app_client.get("/api/v1/assets/export", params={"q": uid, "status": "planned,out_of_service"}, headers=admin)
    lines = r.text.splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == [f"{uid}-PK-1", f"{uid}-SL-2"]
    r = app_client.get("/api/v1/assets/export",
                       params={"q": uid, "near": f"{LAT},{LON}", "radius_m": 30, "format": "geojson"}, headers=admin)
    assert [f["id"] for f in r.json()["features"]] == [f"{uid}-CAB-1", f"{uid}-SL-1"]
    r = app_client.get("/api/v1/assets/export", params={"q": f"{uid}-ZZZ", "format": "geojson"}, headers=admin)
    assert r.json() == {"type": "FeatureCollection", "features": []}
    r = app_client.get("/api/v1/assets/export", params={"q": f"{uid}-ZZZ"}, headers=admin)
    assert r.text.splitlines()[0].startswith("id,kind,name,lat,lon") and len(r.text.splitlines()) == 1
    problem(app_client.get("/api/v1/assets/export", params={"format": "xlsx"}, headers=admin), 422)
    problem(app_client.get("/api/v1/assets/export", params={"kind": "spaceship"}, headers=admin), 400)
    assert len(ids) == 6
