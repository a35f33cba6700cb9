"""When a notification may go out: quiet hours and the retry schedule (pure functions, no I/O).

Quiet hours are wall-clock times in the channel's time zone ("22:00-07:00" means the night in Dijon,
summer and winter alike), so every computation goes through local time and back to UTC; the daylight
saving changes make a quiet night an hour shorter or longer, never shifted.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from .config import ChannelSpec

UTC = dt.timezone.utc
MAX_ATTEMPTS = 8              # delivery attempts before a notification is marked failed
BACKOFF_BASE_S = 5.0
BACKOFF_CAP_S = 15 * 60.0
BACKOFF_JITTER = 0.1          # up to 10 % earlier: retries of one outage do not arrive all at once


@dataclass(frozen=True)
class QuietHours:
    """A daily window [start, end) of local time in ``tz``; it wraps midnight when end <= start."""

    start: dt.time
    end: dt.time
    tz: ZoneInfo

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M} {self.tz.key}"

    def active(self, at: dt.datetime) -> bool:
        """Is ``at`` (an aware datetime) inside the window?"""
        local = _aware(at).astimezone(self.tz).time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def ends_after(self, at: dt.datetime) -> dt.datetime:
        """The first moment (UTC) at or after ``at`` outside the window: ``at`` itself when not quiet."""
        at = _aware(at).astimezone(UTC)
        if not self.active(at):
            return at
        local = at.astimezone(self.tz)
        day = local.date()
        if self.start >= self.end and local.time().replace(tzinfo=None) >= self.start:
            day += dt.timedelta(days=1)  # in the evening part of a window that wraps: it ends tomorrow
        return _first_instant_at(day, self.end, self.tz)


def _first_instant_at(day: dt.date, wall: dt.time, tz: ZoneInfo) -> dt.datetime:
    """The first UTC instant when the wall clock in ``tz`` shows ``wall`` or later on ``day``.

    An ambiguous wall time (the hour repeated in autumn) gives its first occurrence. A wall time that
    does not exist (skipped in spring) gives the moment of the jump, when the clock passes it.
    """
    naive = dt.datetime.combine(day, wall)
    first = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == naive:
        return first
    # In the gap: fold=1 reads the wall time with the offset after the jump, which lands before it.
    moment = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    while moment.astimezone(tz).replace(tzinfo=None) < naive:  # jumps happen on whole minutes: ~60 steps
        moment += dt.timedelta(minutes=1)
    return moment


def deferred_until(spec: ChannelSpec, severity: str, at: dt.datetime) -> dt.datetime | None:
    """When a notification of ``severity`` due at ``at`` may go out on ``spec``, if later than ``at``.

    None: send it now (no quiet hours, not inside them, or a severity that ignores them).
    """
    quiet = spec.quiet_hours
    if quiet is None or severity in spec.quiet_except or not quiet.active(at):
        return None
    return quiet.ends_after(at)


def backoff(attempt: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): 5, 10, 20… capped at 15 min.

    The jitter only shortens the delay, so the cap stays a real cap.
    """
    delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0 ** max(0, attempt - 1))
    return delay * (1.0 - BACKOFF_JITTER * rand())


def _aware(at: dt.datetime) -> dt.datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"a naive datetime has no meaning here (no time zone): {at!r}")
    return at
