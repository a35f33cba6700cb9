"""Accounts and access control, through the real HTTP application.

The route walk reads the OpenAPI document, so a route added later is covered without editing this file:
every route refuses an unauthenticated call unless it is deliberately public, and every role outside a
route's declared roles is refused.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid

import pytest

from citypilot.auth import tokens as token_lib

from ..conftest import PASSWORD, ROLES_UNDER_TEST

pytestmark = pytest.mark.integration
# Open311 GeoReport v2 is a public interface by its specification: anyone reads the service list and the
# requests' public fields; posting a request takes a client api_key, checked by the route itself.
OPEN311_PUBLIC = {"/open311/discovery.{fmt}", "/open311/v2/discovery.{fmt}", "/open311/v2/services.{fmt}",
                  "/open311/v2/services/{name}", "/open311/v2/requests.{fmt}", "/open311/v2/requests/{name}",
                  "/open311/v2/tokens/{name}"}
DELIBERATELY_PUBLIC = {"/healthz", "/readyz", "/metrics", "/api/v1/auth/login", *OPEN311_PUBLIC}


def _operations(app_client):
    spec = app_client.get("/api/openapi.json").json()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "does-not-exist", path)


def test_openapi_is_public_and_lists_roles(app_client):
    response = app_client.get("/api/openapi.json")
    assert response.status_code == 200
    operations = list(_operations(app_client))
    assert len(operations) >= 15
    assert all("x-roles" in op for _, _, op in operations)


def test_every_route_refuses_unauthenticated_calls(app_client):
    checked = 0
    for method, path, operation in _operations(app_client):
        if operation["x-roles"] == "public":
            assert path in DELIBERATELY_PUBLIC, f"{method} {path} is public but not on the deliberate list"
            continue
        response = app_client.request(method, _concrete(path))
        assert response.status_code == 401, f"{method} {path} answered {response.status_code} without a token"
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "Bearer" in response.headers.get("www-authenticate", "")
        checked += 1
    assert checked >= 12


def test_every_route_refuses_roles_it_does_not_declare(app_client, auth):
    refused = 0
    for method, path, operation in _operations(app_client):
        roles = operation["x-roles"]
        if roles == "public":
            continue
        for role in ROLES_UNDER_TEST:
            if role in roles:
                continue
            response = app_client.request(method, _concrete(path), headers=auth(role))
            assert response.status_code == 403, f"{role} on {method} {path} answered {response.status_code}"
            refused += 1
    assert refused > 20


def test_declared_roles_get_past_authorisation(app_client, auth):
    for method, path, operation in _operations(app_client):
        roles = operation["x-roles"]
        if roles == "public" or path == "/api/v1/auth/logout":
            continue
        for role in roles:
            if role not in ROLES_UNDER_TEST:  # "device": device credentials, tested with the ingest API
                continue
            response = app_client.request(method, _concrete(path), headers=auth(role))
            assert response.status_code not in (401, 403), f"{role} refused on {method} {path}: {response.text}"


def test_garbage_and_forged_tokens_are_refused(app_client, stack):
    for header in ("Bearer not-a-token", "Bearer " + "a" * 500, "Basic dXNlcjpwYXNz"):
        assert app_client.get("/api/v1/auth/me", headers={"Authorization": header}).status_code == 401
    forged, _ = token_lib.issue("another-key-that-is-long-enough-for-hs256-0123456789", "admin", "admin", dt.timedelta(hours=1))
    assert app_client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {forged}"}).status_code == 401


def test_expired_token_is_refused(app_client, stack, accounts):
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=10)
    expired, _ = token_lib.issue(app_client.app.state.context.secret_key, accounts["operator"], "operator",
                                 dt.timedelta(hours=1), now=past)
    response = app_client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_valid_signature_without_a_session_is_refused(app_client, accounts):
    """A token signed with the right key but never issued by login (no session row) does not work."""
    token, _ = token_lib.issue(app_client.app.state.context.secret_key, accounts["admin"], "admin", dt.timedelta(hours=1))
    assert app_client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_wrong_password_does_not_reveal_whether_the_user_exists(app_client, accounts):
    existing = app_client.post("/api/v1/auth/login", json={"username": accounts["read_only"], "password": "wrong-password-1"})
    missing = app_client.post("/api/v1/auth/login", json={"username": "nobody-" + uuid.uuid4().hex[:6], "password": "wrong-password-1"})
    assert existing.status_code == missing.status_code == 401
    assert existing.json()["detail"] == missing.json()["detail"]
    assert existing.headers["content-type"].startswith("application/problem+json")


def test_login_is_throttled_after_repeated_failures(app_client, stack):
    """Five failures for one name from one address: the sixth attempt is refused even with the right password."""
    import asyncio

    import psycopg

    from citypilot.auth import accounts as acc
    from citypilot.equipment.catalog import default_catalog

    name = "throttled-" + uuid.uuid4().hex[:6]

    async def create() -> None:
        async with await psycopg.AsyncConnection.connect(stack.endpoints.database_url, autocommit=True) as conn:
            await acc.add_user(conn, name, "read_only", PASSWORD, services=dict(default_catalog().services))

    asyncio.run(create())
    for _ in range(5):
        assert app_client.post("/api/v1/auth/login", json={"username": name, "password": "wrong-password-1"}).status_code == 401
    blocked = app_client.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD})
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) > 0


def test_login_body_is_validated(app_client):
    response = app_client.post("/api/v1/auth/login", json={"username": "a", "password": "b", "extra": 1})
    assert response.status_code == 422
    assert any(e["field"] == "extra" for e in response.json()["errors"])
    assert app_client.post("/api/v1/auth/login", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422


def test_login_logout_and_session_cookie(app_client, accounts):
    login = app_client.post("/api/v1/auth/login", json={"username": accounts["supervisor"], "password": PASSWORD})
    assert login.status_code == 200
    body = login.json()
    assert body["role"] == "supervisor" and body["token_type"] == "bearer" and body["expires_in"] > 0
    cookie = login.cookies.get("citypilot_session")
    assert cookie, "the web UI needs a session cookie"
    set_cookie = login.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie

    token = body["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert app_client.get("/api/v1/auth/me", headers=headers).json()["username"] == accounts["supervisor"]
    assert app_client.post("/api/v1/auth/logout", headers=headers).status_code == 204
    after = app_client.get("/api/v1/auth/me", headers=headers)
    assert after.status_code == 401
    app_client.cookies.clear()


def test_cookie_session_refuses_cross_origin_writes(app_client, accounts):
    login = app_client.post("/api/v1/auth/login", json={"username": accounts["admin"], "password": PASSWORD})
    cookie = {"citypilot_session": login.json()["access_token"]}
    app_client.cookies.clear()
    assert app_client.get("/api/v1/auth/me", cookies=cookie).status_code == 200
    body = {"username": "csrf-" + uuid.uuid4().hex[:6], "role": "read_only", "password": PASSWORD}
    foreign = app_client.post("/api/v1/users", json=body, cookies=cookie, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    missing = app_client.post("/api/v1/users", json=body, cookies=cookie)
    assert missing.status_code == 403
    same = app_client.post("/api/v1/users", json=body, cookies=cookie, headers={"Origin": "http://testserver"})
    assert same.status_code == 201, same.text
    app_client.cookies.clear()


def test_admin_manages_accounts_and_disabling_ends_sessions(app_client, auth):
    name = "agent-" + uuid.uuid4().hex[:6]
    created = app_client.post("/api/v1/users", headers=auth("admin"),
                              json={"username": name, "role": "field_agent", "service": "lighting", "password": PASSWORD})
    assert created.status_code == 201, created.text
    duplicate = app_client.post("/api/v1/users", headers=auth("admin"),
                                json={"username": name, "role": "field_agent", "service": "lighting", "password": PASSWORD})
    assert duplicate.status_code == 409
    listed = {u["username"]: u for u in app_client.get("/api/v1/users", headers=auth("dpo")).json()}
    assert listed[name]["role"] == "field_agent" and listed[name]["service"] == "lighting"
    assert "password_hash" not in listed[name]

    token = app_client.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD}).json()["access_token"]
    assert app_client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert app_client.patch(f"/api/v1/users/{name}", headers=auth("admin"), json={"disabled": True}).status_code == 200
    assert app_client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert app_client.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD}).status_code == 401


@pytest.mark.parametrize("body, field", [
    ({"username": "Bad Name", "role": "operator", "password": PASSWORD}, None),
    ({"username": "ok-name-1", "role": "mayor", "password": PASSWORD}, "role"),
    ({"username": "ok-name-2", "role": "field_agent", "password": PASSWORD}, None),  # service missing
    ({"username": "ok-name-3", "role": "operator", "password": "short"}, None),
    ({"username": "ok-name-4", "role": "operator", "password": PASSWORD, "is_admin": True}, "is_admin"),
])
def test_invalid_accounts_are_refused_precisely(app_client, auth, body, field):
    response = app_client.post("/api/v1/users", headers=auth("admin"), json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    if field:
        assert any(e["field"] == field for e in response.json()["errors"])
    assert app_client.post("/api/v1/auth/login", json={"username": body["username"], "password": body["password"]}).status_code == 401


def test_health_readiness_and_metrics(app_client):
    assert app_client.get("/healthz").json() == {"status": "ok"}
    ready = app_client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "nats": "ok"}
    app_client.get("/api/v1/kinds")  # an unauthenticated call, counted below
    metrics = app_client.get("/metrics")
    assert metrics.status_code == 200
    assert 'citypilot_http_requests_total{method="GET",route="/api/v1/kinds",status="401"}' in metrics.text
    # The ingest stream's state, for alerting before it fills up.
    gauges = {line.split(" ")[0]: float(line.split(" ")[1]) for line in metrics.text.splitlines()
              if line.startswith(("citypilot_ingest_stream_", "citypilot_ingest_backlog"))}
    assert gauges["citypilot_ingest_stream_max_bytes"] == app_client.app.state.context.config.ingest_stream_max_bytes
    assert gauges["citypilot_ingest_stream_bytes"] >= 0 and gauges["citypilot_ingest_backlog_messages"] >= 0


def test_role_change_applies_to_open_sessions_at_once(app_client, auth):
    name = "promo-" + uuid.uuid4().hex[:6]
    assert app_client.post("/api/v1/users", headers=auth("admin"),
                           json={"username": name, "role": "read_only", "password": PASSWORD}).status_code == 201
    token = app_client.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD}).json()["access_token"]
    app_client.cookies.clear()
    mine = {"Authorization": f"Bearer {token}"}
    assert app_client.get("/api/v1/users", headers=mine).status_code == 403
    changed = app_client.patch(f"/api/v1/users/{name}", headers=auth("admin"), json={"role": "dpo"})
    assert changed.status_code == 200, changed.text
    assert app_client.get("/api/v1/auth/me", headers=mine).json()["role"] == "dpo"
    assert app_client.get("/api/v1/users", headers=mine).status_code == 200
    bad = app_client.patch(f"/api/v1/users/{name}", headers=auth("admin"), json={"role": "field_agent"})
    assert bad.status_code == 422 and "service" in bad.json()["detail"]
    missing = app_client.patch("/api/v1/users/ghost-" + name, headers=auth("admin"), json={"role": "dpo"})
    assert missing.status_code == 404
