"""Sunset and sunrise at Dijon, which switch the street lights (astral: the NOAA solar equations)."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

from astral import Observer
from astral.sun import sun

from .clock import PARIS

DIJON = Observer(latitude=47.3220, longitude=5.0415, elevation=245)


@lru_cache(maxsize=64)
def _day(date: dt.date) -> tuple[dt.datetime, dt.datetime]:
    times = sun(DIJON, date=date, tzinfo=PARIS)
    return times["sunrise"], times["sunset"]


def sunrise_sunset(date: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """Sunrise and sunset at Dijon on ``date`` (local date), as aware datetimes."""
    return _day(date)


def is_dark(moment: dt.datetime, offset_s: float = 0.0) -> bool:
    """Whether street lights should be on at ``moment``: after sunset and before sunrise.

    ``offset_s`` shifts a cabinet's switching (their astronomical clocks and light sensors are not all
    set alike, by a few minutes either way)."""
    here = moment.astimezone(PARIS)
    sunrise, sunset = _day(here.date())
    shifted = here - dt.timedelta(seconds=offset_s)
    return shifted < sunrise or shifted >= sunset
