"""Intervention times against their service-level agreements, the backlog and what is overdue.

Response time: from when the order was opened (a citizen's report opens its order at once) to the
team on site; resolution time: to the work reported done. Both are counted for the orders opened in
the period, per service, per category and per commune, with the share that met its own deadlines:
each order keeps the deadlines it was given, so the figures stay right after a category's SLA changes.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

_TIMES = """
SELECT {group} AS key, count(*) AS orders,
       count(*) FILTER (WHERE state = 'done') AS done,
       count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
       count(coalesce(on_site_at, done_at)) AS responded,
       avg(extract(epoch FROM coalesce(on_site_at, done_at) - created_at)) AS response_mean_s,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM coalesce(on_site_at, done_at) - created_at))
           AS response_median_s,
       count(*) FILTER (WHERE coalesce(on_site_at, done_at) <= sla_response_due) AS response_in_sla,
       count(*) FILTER (WHERE state <> 'cancelled' AND coalesce(on_site_at, done_at, now()) > sla_response_due)
           AS response_late,
       avg(extract(epoch FROM done_at - created_at)) AS resolution_mean_s,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM done_at - created_at)) AS resolution_median_s,
       count(*) FILTER (WHERE done_at <= sla_resolution_due) AS resolution_in_sla,
       count(*) FILTER (WHERE state <> 'cancelled' AND coalesce(done_at, now()) > sla_resolution_due) AS resolution_late
FROM work_orders
WHERE created_at >= %(since)s AND created_at < %(until)s AND (%(restricted)s OR NOT restricted)
GROUP BY 1 ORDER BY 1
"""


def _figures(row: Any) -> dict[str, Any]:
    (_, orders, done, cancelled, responded, r_mean, r_median, r_ok, r_late, s_mean, s_median, s_ok, s_late) = row

    def pct(part: int, whole: int) -> float | None:
        return round(100.0 * part / whole, 1) if whole else None

    rounded = (lambda v: round(float(v), 1) if v is not None else None)
    return {"orders": orders, "done": done, "cancelled": cancelled,
            "response": {"count": responded, "mean_s": rounded(r_mean), "median_s": rounded(r_median),
                         "within_sla_pct": pct(r_ok, responded), "late": r_late},
            "resolution": {"count": done, "mean_s": rounded(s_mean), "median_s": rounded(s_median),
                           "within_sla_pct": pct(s_ok, done), "late": s_late}}


async def intervention_kpis(conn: psycopg.AsyncConnection, since: dt.datetime, until: dt.datetime,
                            restricted: bool, overdue_limit: int = 50) -> dict[str, Any]:
    params = {"since": since, "until": until, "restricted": restricted}
    out: dict[str, Any] = {"since": since.isoformat(), "until": until.isoformat()}
    for name, group in (("overall", "'all'"), ("by_service", "service"), ("by_category", "category"),
                        ("by_commune", "coalesce(commune, '')")):
        rows = await (await conn.execute(_TIMES.format(group=group), params)).fetchall()
        figures = {str(r[0]): _figures(r) for r in rows}
        out[name] = figures.get("all", _figures(("all", 0, 0, 0, 0, None, None, 0, 0, None, None, 0, 0))) \
            if name == "overall" else figures
    hidden = "" if restricted else " AND NOT restricted"
    open_ = f"state IN ('new', 'assigned', 'en_route', 'on_site'){hidden}"
    late = ("(coalesce(on_site_at, now()) > sla_response_due AND on_site_at IS NULL OR now() > sla_resolution_due)")
    backlog: dict[str, Any] = {}
    for column in ("state", "service", "priority"):
        rows = await (await conn.execute(f"SELECT {column}, count(*) FROM work_orders WHERE {open_} GROUP BY 1 "
                                         "ORDER BY 1")).fetchall()
        backlog[f"by_{column}"] = {k: n for k, n in rows}
    backlog["open"] = sum(backlog["by_state"].values())
    backlog["overdue"] = (await (await conn.execute(
        f"SELECT count(*) FROM work_orders WHERE {open_} AND {late}")).fetchone())[0]
    backlog["planned_ahead"] = (await (await conn.execute(
        f"SELECT count(*) FROM work_orders WHERE {open_} AND planned_for > now()")).fetchone())[0]
    out["backlog"] = backlog
    rows = await (await conn.execute(
        f"SELECT id, title, service, category, priority, state, team_id, commune, sla_response_due, "
        f"sla_resolution_due, created_at FROM work_orders WHERE {open_} AND {late} "
        "ORDER BY least(CASE WHEN on_site_at IS NULL THEN sla_response_due END, sla_resolution_due), id "
        "LIMIT %s", (overdue_limit,))).fetchall()
    out["overdue"] = [{"id": r[0], "title": r[1], "service": r[2], "category": r[3], "priority": r[4], "state": r[5],
                       "team_id": r[6], "commune": r[7], "sla_response_due": r[8].isoformat(),
                       "sla_resolution_due": r[9].isoformat(), "created_at": r[10].isoformat()} for r in rows]
    requests = await (await conn.execute(
        "SELECT count(*) FILTER (WHERE status = 'open'), count(*) FILTER (WHERE requested_at >= %(since)s AND "
        "requested_at < %(until)s), (SELECT count(*) FROM request_reports WHERE linked AND reported_at >= %(since)s "
        "AND reported_at < %(until)s) FROM service_requests", params)).fetchone()
    out["requests"] = {"open": requests[0], "received": requests[1], "linked_duplicates": requests[2]}
    return out
