"""Line numbers for errors in the TOML files administrators edit (alarm rules, request categories).

tomllib gives no line numbers once a document has parsed, and an administrator needs to know which
line of their file is wrong. ``parse_toml`` turns a syntax error into (line, reason); ``Locator`` finds
the lines of array-of-tables headers (``[[rule]]``, ``[[service]]``) and of keys below them by
scanning the text.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any, Iterable

_ANY_TABLE_RE = re.compile(r"^\s*\[")
_TOML_LINE_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


class TomlSyntaxError(ValueError):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


def parse_toml(text: str) -> dict[str, Any]:
    """The document, or ``TomlSyntaxError`` with the 1-based line and a reason without tomllib's suffix."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_LINE_RE.search(message)
        line = int(match.group(1)) if match else max(len(text.splitlines()), 1)
        reason = _TOML_LINE_RE.sub("", message).replace(" (at end of document)", " at the end of the file")
        raise TomlSyntaxError(line, f"TOML syntax error: {reason}") from None


class Locator:
    """Line numbers of the ``[[section]]`` headers named in ``sections`` and of keys below them.

    A header written inside a multi-line string would fool it; the line would only be off, and the
    error itself stays right.
    """

    def __init__(self, text: str, sections: Iterable[str]) -> None:
        names = "|".join(re.escape(s) for s in sections)
        header_re = re.compile(rf"^\s*\[\[\s*({names})\s*\]\]\s*(?:#.*)?$")
        self.lines = text.splitlines()
        self.headers: dict[str, list[int]] = {}
        self.tables: list[int] = []
        for number, line in enumerate(self.lines, start=1):
            match = header_re.match(line)
            if match:
                self.headers.setdefault(match.group(1), []).append(number)
            if _ANY_TABLE_RE.match(line):
                self.tables.append(number)

    def header(self, section: str, index: int) -> int:
        found = self.headers.get(section, [])
        return found[index] if index < len(found) else self.top(section)

    def key(self, section: str, index: int, key: str) -> int:
        start = self.header(section, index)
        end = next((n for n in self.tables if n > start), len(self.lines) + 1)
        pattern = re.compile(rf"""^\s*(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*[=.]""")
        return next((n for n in range(start + 1, end) if pattern.match(self.lines[n - 1])), start)

    def top(self, key: str) -> int:
        pattern = re.compile(rf"""^\s*(?:\[+\s*)?(?:{re.escape(key)}|"{re.escape(key)}")\s*[=.\]]""")
        return next((n for n, line in enumerate(self.lines, start=1) if pattern.match(line)), 1)
