"""The astronomical clock of Dijon's lighting cabinets: sunrise and sunset (astral, NOAA equations).

Here, in the domain, so that the lighting policy depends on nothing of the simulator; the simulator's
``sim.sun`` uses it too, so the simulated cabinets and the plan agree to the second.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo

from astral import Observer
from astral.sun import sun

PARIS = ZoneInfo("Europe/Paris")
DIJON = Observer(latitude=47.3220, longitude=5.0415, elevation=245)


@lru_cache(maxsize=1024)
def sunrise_sunset(date: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """Sunrise and sunset at Dijon on ``date`` (local date), as aware local datetimes."""
    times = sun(DIJON, date=date, tzinfo=PARIS)
    return times["sunrise"], times["sunset"]
