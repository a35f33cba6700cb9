def test_ready(app_client):
    r = app_client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"database": "ok", "nats": "ok"}


def test_me(app_client, auth):
    r = app_client.get("/api/v1/auth/me", headers=auth("operator"))
    assert r.status_code == 200 and r.json()["role"] == "operator"
