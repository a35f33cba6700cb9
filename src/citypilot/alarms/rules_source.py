"""The rules in force, and picking up an administrator's edits without a restart.

Every few seconds the files' names, sizes and modification times are compared with the last load; on
a change the whole set is loaded again. A set with an error is refused (logged with file, line and
reason, and shown by ``GET /api/v1/alarms/rules``); the rules in force stay in force.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from citypilot.equipment.catalog import Catalog

from .rules import RuleError, RuleSet, default_rules_dir, load_rules

log = logging.getLogger("citypilot.alarms")


def _fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
    try:
        files = sorted(directory.glob("*.toml"))
        return tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    except OSError:
        return ()


class RuleSource:
    def __init__(self, directory: str | Path | None, catalog: Catalog) -> None:
        self.directory = Path(directory).expanduser() if directory else default_rules_dir()
        self.catalog = catalog
        self.version = 0
        self.loaded_at: dt.datetime | None = None
        self.last_error: str | None = None
        self.last_error_at: dt.datetime | None = None
        self._fingerprint = _fingerprint(self.directory)
        if not self.directory.is_dir():
            raise RuleError(str(self.directory), 0, "the alarm-rules directory does not exist")
        self.rules: RuleSet = load_rules([self.directory], catalog)  # at start, an error stops the process
        self._loaded()

    def _loaded(self) -> None:
        self.version += 1
        self.loaded_at = dt.datetime.now(dt.timezone.utc)
        self.last_error = self.last_error_at = None

    def poll(self) -> bool:
        """Reload if the files changed; True when a new set is in force."""
        fingerprint = _fingerprint(self.directory)
        if fingerprint == self._fingerprint:
            return False
        self._fingerprint = fingerprint
        try:
            rules = load_rules([self.directory], self.catalog)
        except RuleError as exc:
            self.last_error, self.last_error_at = str(exc), dt.datetime.now(dt.timezone.utc)
            log.error("alarm rules refused; the rules in force stay in force", extra={"error": str(exc)})
            return False
        self.rules = rules
        self._loaded()
        log.info("alarm rules reloaded", extra={"rules": len(rules.rules), "files": len(rules.files)})
        return True

    def describe(self) -> dict[str, object]:
        rules = self.rules
        return {"directory": str(self.directory), "version": self.version,
                "loaded_at": self.loaded_at.isoformat() if self.loaded_at else None,
                "files": list(rules.files), "last_error": self.last_error,
                "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
                "rules": [{"id": r.id, "kind": r.kind, "type": r.type, "severity": r.severity, "title": r.title,
                           "when": r.when.text if r.when else None,
                           "clear_when": r.clear_when.text if r.clear_when else None, "for_s": r.for_s,
                           "on_event": list(r.on_event), "clear_event": list(r.clear_event),
                           "on_connectivity": r.on_connectivity, "notify": list(r.notify), "source": r.source}
                          for r in rules.rules],
                "correlations": [{"id": c.id, "kind": c.kind, "types": list(c.types), "min_fraction": c.min_fraction,
                                  "min_count": c.min_count, "type": c.type, "severity": c.severity} for c in rules.correlations],
                "storms": [{"id": s.id, "by": s.by, "window_s": s.window_s, "min_alarms": s.min_alarms,
                            "severity": s.severity} for s in rules.storms]}
