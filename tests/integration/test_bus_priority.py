"""Bus priority per line: the junctions' request events, through the ingest stream, to the KPI."""

from __future__ import annotations

import datetime as dt
import json

from .conftest import eventually, iso, problem, utcnow


def _request(ts: dt.datetime, data: dict) -> bytes:
    return json.dumps({"ts": iso(ts), "code": "bus_priority", "severity": "info", "data": data}).encode()


def test_share_of_requests_served_and_bus_time_saved_per_line(city):
    north, south = city.import_assets({"id": "TL-N", "kind": "traffic_controller"},
                                      {"id": "TL-S", "kind": "traffic_controller"})
    line_a, line_b = city.id("LA"), city.id("LB")
    t0 = utcnow() - dt.timedelta(hours=2)
    at = [t0 + dt.timedelta(seconds=10 * k) for k in range(8)]
    messages = [
        (north, "event", _request(at[0], {"line": line_a, "granted": True, "saved_s": 40.0})),
        (north, "event", _request(at[1], {"line": line_a, "granted": False, "saved_s": 0})),
        (south, "event", _request(at[2], {"line": line_a, "granted": True, "saved_s": 30.5})),
        (south, "event", _request(at[3], {"line": line_b, "granted": True, "saved_s": 44.0})),
        # what devices get wrong counts for nothing: a granted that is not a boolean, absurd savings
        (south, "event", _request(at[4], {"line": line_b, "granted": "yes", "saved_s": 50})),
        (south, "event", _request(at[5], {"line": line_b, "granted": True, "saved_s": -12})),
        (south, "event", _request(at[6], {"line": line_b, "granted": True, "saved_s": 1e9})),
    ]
    messages.append(messages[0])  # redelivered: the same event, counted once
    city.publish(messages)

    def mine():
        r = city.client.get("/api/v1/kpi/bus-priority", headers=city.headers("operator"))
        assert r.status_code == 200, r.text
        got = {row["line"]: row for row in r.json()["lines"] if row["line"] in (line_a, line_b)}
        return got if sum(row["requests"] for row in got.values()) == 7 else None

    lines = eventually(mine, "the requests counted per line")
    assert lines[line_a] == {"line": line_a, "junctions": 2, "requests": 3, "granted": 2, "share_served_pct": 66.7,
                             "time_saved_s": 70.5, "time_saved_per_granted_s": 35.2}
    assert lines[line_b] == {"line": line_b, "junctions": 1, "requests": 4, "granted": 3, "share_served_pct": 75.0,
                             "time_saved_s": 44.0, "time_saved_per_granted_s": 14.7}

    # a period: only the requests inside it; the network's figures add the lines up
    r = city.client.get("/api/v1/kpi/bus-priority", headers=city.headers("read_only"),
                        params={"since": iso(at[0] - dt.timedelta(seconds=1)), "until": iso(at[2])})
    assert r.status_code == 200, r.text
    body = r.json()
    window = {row["line"]: row for row in body["lines"] if row["line"] in (line_a, line_b)}
    assert list(window) == [line_a] and window[line_a]["requests"] == 2 and window[line_a]["granted"] == 1
    assert body["network"]["requests"] >= 2

    # a period with nothing in it: no share rather than 0 %
    empty = city.client.get("/api/v1/kpi/bus-priority", headers=city.headers(), params={
        "since": "2001-01-01T00:00:00+01:00", "until": "2001-01-02T00:00:00+01:00"}).json()
    assert empty["lines"] == [] and empty["network"] == {"requests": 0, "granted": 0, "share_served_pct": None,
                                                         "time_saved_s": 0.0, "time_saved_per_granted_s": None}


def test_bad_periods_and_callers_are_refused(city):
    url = "/api/v1/kpi/bus-priority"
    assert problem(city.client.get(url, headers=city.headers(), params={"since": "2026-11-01T00:00:00"}),
                   400)["field"] == "since"
    assert problem(city.client.get(url, headers=city.headers(), params={
        "since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"}), 400)["field"] == "since"
    assert problem(city.client.get(url, headers=city.headers(), params={
        "since": "2020-01-01T00:00:00Z", "until": "2026-11-01T00:00:00Z"}), 400)["field"] == "since"
    problem(city.client.get(url, headers=city.headers(), params={"since": "yesterday"}), 422)
    problem(city.client.get(url), 401)
    problem(city.client.get(url, headers=city.headers("dpo")), 403)
    # the interventions KPI checks its period the same way
    assert problem(city.client.get("/api/v1/kpi/interventions", headers=city.headers(),
                                   params={"until": "2026-11-01T00:00:00"}), 400)["field"] == "until"
    ok = city.client.get("/api/v1/kpi/interventions", headers=city.headers(),
                         params={"since": "2026-11-01T00:00:00Z", "until": "2026-11-02T00:00:00Z"})
    assert ok.status_code == 200, ok.text
