"""The ``since``/``until`` period of the KPI endpoints, checked once for all of them."""

from __future__ import annotations

import datetime as dt

from .problems import Problem


def checked_period(since: dt.datetime | None, until: dt.datetime | None, default: dt.timedelta,
                   longest: dt.timedelta | None = None) -> tuple[dt.datetime, dt.datetime]:
    """(since, until): until defaults to now, since to ``default`` before it; both need a time zone,
    since comes first, and the period is at most ``longest`` (400 problem+json naming the field)."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise Problem(400, f"{name} needs a time zone (e.g. 2026-11-21T08:00:00+01:00)", type_="invalid-parameter",
                          field=name)
    until = until or dt.datetime.now(dt.timezone.utc)
    since = since or until - default
    if since >= until:
        raise Problem(400, "since must be before until", type_="invalid-parameter", field="since")
    if longest is not None and until - since > longest:
        raise Problem(400, f"the period is longer than {longest.days} days: ask for less", type_="invalid-parameter",
                      field="since")
    return since, until
