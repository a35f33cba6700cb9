"""A local address index built from the registry's addresses: no online geocoder.

A switchboard agent types "12 rue de la lib" and needs a point on the map in a keystroke, with no
internet and no third-party service seeing citizens' addresses. The registry already knows thousands
of addresses ("12 rue de la Liberté, Dijon" on a street light's sheet): this index groups them by
street and commune, keeps the numbered points of each street, and answers prefix searches folded for
case and accents. A number that no asset carries is placed at the nearest known number of that
street (said so in the answer: ``exact`` is false). Pure: the adapter feeds it rows.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Iterable

_NUMBER_RE = re.compile(r"^\s*(\d{1,5})\s*(bis|ter|quater|[a-d])?\b[\s,]*(.*)$", re.IGNORECASE)
_SEPARATORS = re.compile(r"[\s,;'’\-]+")


def fold(text: str) -> str:
    """Lowercase, without accents, apostrophes and hyphens as spaces: 'Rue de l’Église' -> 'rue de l eglise'."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).lower()
    return " ".join(t for t in _SEPARATORS.split(plain) if t)


@dataclass(frozen=True)
class Address:
    label: str           # "12 rue de la Liberté, Dijon"
    street: str
    commune: str
    number: str | None
    lat: float
    lon: float
    exact: bool          # a registry asset stands at this number (False: placed at the nearest number or the street)
    address_id: str


@dataclass
class _Street:
    name: str
    commune: str
    key: str                                   # folded "street commune"
    numbers: dict[int, tuple[float, float]] = field(default_factory=dict)  # number -> (lat, lon)
    points: list[tuple[float, float]] = field(default_factory=list)

    def centre(self) -> tuple[float, float]:
        lats, lons = zip(*self.points)
        return sum(lats) / len(lats), sum(lons) / len(lons)


def split_address(text: str) -> tuple[str | None, str, str | None]:
    """('12', 'rue de la Liberté', 'Dijon') from '12 rue de la Liberté, Dijon'; the commune after the last comma."""
    street, commune = text, None
    if "," in text:
        street, _, commune = text.rpartition(",")
        commune = commune.strip() or None
    match = _NUMBER_RE.match(street)
    if match and match.group(3):
        return match.group(1), match.group(3).strip(" ,"), commune
    return None, street.strip(" ,"), commune


class AddressIndex:
    def __init__(self, rows: Iterable[tuple[str, float, float]]) -> None:
        """``rows``: (address, lat, lon) of the registry's assets."""
        streets: dict[str, _Street] = {}
        for address, lat, lon in rows:
            if not address:
                continue
            number, street, commune = split_address(address)
            if not street or commune is None:
                continue
            key = fold(f"{street} {commune}")
            entry = streets.get(key)
            if entry is None:
                entry = streets[key] = _Street(street, commune, key)
            entry.points.append((lat, lon))
            if number is not None:
                entry.numbers.setdefault(int(number), (lat, lon))
        self.streets = sorted(streets.values(), key=lambda s: s.key)
        self._keys = [s.key for s in self.streets]
        self._by_id = {self._street_id(s): s for s in self.streets}

    def __len__(self) -> int:
        return len(self.streets)

    @staticmethod
    def _street_id(street: _Street) -> str:
        return fold(street.commune).replace(" ", "-") + "/" + fold(street.name).replace(" ", "-")

    def _address(self, street: _Street, number: int | None) -> Address:
        if number is not None and street.numbers:
            if number in street.numbers:
                lat, lon, exact = *street.numbers[number], True
            else:
                nearest = min(street.numbers, key=lambda n: (abs(n - number), n))
                lat, lon, exact = *street.numbers[nearest], False
        else:
            (lat, lon), exact = street.centre(), number is None
        label = f"{number} {street.name}, {street.commune}" if number is not None else f"{street.name}, {street.commune}"
        sid = self._street_id(street)
        return Address(label, street.name, street.commune, str(number) if number is not None else None, round(lat, 6),
                       round(lon, 6), exact, f"{sid}/{number}" if number is not None else sid)

    def search(self, query: str, limit: int = 10) -> list[Address]:
        """Streets whose folded 'street commune' contains every word of the query (a leading number is the
        house number); those that start with the query first, then alphabetical."""
        number_text, rest, _ = split_address(query.replace(",", " "))
        number = int(number_text) if number_text else None
        words = fold(rest).split()
        if not words:
            return []
        phrase = " ".join(words)
        hits: list[tuple[int, str, _Street]] = []
        start = bisect_left(self._keys, phrase)  # the streets that start with the query, cheaply, first
        for street in self.streets[start:]:
            if not street.key.startswith(phrase):
                break
            hits.append((0, street.key, street))
            if len(hits) >= limit:
                break
        if len(hits) < limit:
            seen = {h[1] for h in hits}
            for street in self.streets:
                if street.key not in seen and all(_has_word_prefix(street.key, w) for w in words):
                    hits.append((1, street.key, street))
                    if len(hits) >= limit * 4:
                        break
        hits.sort(key=lambda h: (h[0], h[1]))
        return [self._address(street, number) for _, _, street in hits[:limit]]

    def resolve(self, address_id: str) -> Address | None:
        """The address an ``address_id`` from a search names (Open311 ``address_id``)."""
        street_id, _, number = address_id.rpartition("/")
        if street_id and number.isdigit() and street_id in self._by_id:
            return self._address(self._by_id[street_id], int(number))
        street = self._by_id.get(address_id)
        return self._address(street, None) if street else None

    def geocode(self, text: str) -> Address | None:
        """The best match for a whole address string, or None."""
        found = self.search(text, limit=1)
        return found[0] if found else None


def _has_word_prefix(key: str, word: str) -> bool:
    return key.startswith(word) or f" {word}" in key
