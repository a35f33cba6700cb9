"""Sunset and sunrise at Dijon, which switch the street lights (astral: the NOAA solar equations)."""

from __future__ import annotations

import datetime as dt

from citypilot.lighting.astro import DIJON
from citypilot.lighting.astro import sunrise_sunset as _day

from .clock import PARIS

__all__ = ["DIJON", "is_dark", "sunrise_sunset"]


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
