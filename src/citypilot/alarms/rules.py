"""Alarm rule files: what raises an alarm, written by administrators in TOML and checked at load.

A rule file holds three kinds of tables (docs/administration/alarm-rules.md explains them for
administrators)::

    [[rule]]                              # one alarm type of one kind of equipment
    id = "street-light-lamp-failure"      # unique across all loaded files: ^[a-z0-9][a-z0-9-]{0,63}$
    kind = "street_light"                 # a kind of the catalogue
    type = "lamp_failure"                 # the alarm type: ^[a-z][a-z0-9_]{0,63}$, (kind, type) unique
    severity = "minor"                    # critical | major | minor | warning
    title = "Lamp failure ({lamp_technology})"   # <= 200 characters; {field} placeholders of the kind
    when = "fault == 'lamp_failure'"      # exactly one trigger: when, on_event or on_connectivity
    clear_when = "fault == 'none'"        # optional, with when or on_event (hysteresis)
    for = "30m"                           # optional, with when: the condition must hold this long
    # on_event = ["fire_alarm"]           # device event codes; clear_event = [...] optional
    # on_connectivity = "offline"         # or "unreachable"; cleared when the device is back online
    notify = ["lighting", "police"]       # optional; default: the kind's service

    [[correlation]]                       # most children of one gateway failing: one gateway alarm
    id, kind, types, min_fraction, min_count, type, severity, title, notify (optional)

    [[storm]]                             # many alarms in one commune in a short time: one alarm
    id, by ("commune", optional), window, min_alarms, severity, title ({commune} and {count} only)

Everything is checked at load (keys, value types, kinds, fields, enumerated values, expressions) and
the first mistake is raised as a ``RuleError`` with the file, the line and the reason, because a
rule that loads but never fires is worse than a refused file. Keeping the rules in force when a new
file is refused is the caller's job. tomllib gives no line numbers, so ``Locator`` (citypilot.tomllines) finds them by
scanning the text: the n-th ``[[rule]]`` header, then the first ``key =`` line below it.

Pure domain: no I/O beyond reading the files ``load_rules`` is given.
"""

from __future__ import annotations

import difflib
import re
import string
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, NoReturn, Sequence

from citypilot.equipment.catalog import (
    Catalog,
    FieldSpec,
    KindSpec,
    has_control_characters,
)

from citypilot.tomllines import Locator, TomlSyntaxError, parse_toml

from .expressions import Expression, ExpressionError, compile_expression

SEVERITIES = ("critical", "major", "minor", "warning")  # highest first
CONNECTIVITY = ("offline", "unreachable")
STORM_BY = ("commune",)
STORM_TYPE = "alarm_storm"
ASSET_PLACEHOLDERS = ("id", "name")  # a rule's title may also name the asset: "Lamp failure at {name}"
MAX_TITLE = 200
MIN_DURATION_S = 1.0
MAX_DURATION_S = 7 * 86400.0
ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}\Z")
TYPE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")
EVENT_RE = re.compile(r"^[a-z0-9_]{1,64}\Z")  # the device protocol's event codes
_DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")

_RULE_KEYS = ("id", "kind", "type", "severity", "title", "when", "clear_when", "for", "on_event",
              "clear_event", "on_connectivity", "notify")
_CORRELATION_KEYS = ("id", "kind", "types", "min_fraction", "min_count", "type", "severity", "title", "notify")
_STORM_KEYS = ("id", "by", "window", "min_alarms", "severity", "title")
_TRIGGERS = ("when", "on_event", "on_connectivity")


class RuleError(ValueError):
    """A rule file refused: ``path``, 1-based ``line`` (0 when the file itself cannot be read), ``reason``."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class Rule:
    """One alarm type of one kind of equipment, and what raises and clears it."""

    id: str
    kind: str
    type: str
    severity: str
    title: str
    when: Expression | None
    clear_when: Expression | None
    for_s: float
    on_event: tuple[str, ...]
    clear_event: tuple[str, ...]
    on_connectivity: str | None
    notify: tuple[str, ...]
    source: str  # "path:line" of its [[rule]] header, for operators and administrators
    _names: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        read = {n for n in title_placeholders(self.title) if n not in ASSET_PLACEHOLDERS}
        for expression in (self.when, self.clear_when):
            if expression is not None:
                read |= expression.names
        object.__setattr__(self, "_names", frozenset(read))

    def names(self) -> frozenset[str]:
        """The fields the rule reads (conditions and title), computed once: the engine skips a rule
        when none of them changed, on every reading."""
        return self._names

    def render_title(self, values: Mapping[str, Any]) -> str:
        return render_title(self.title, values)


@dataclass(frozen=True)
class Correlation:
    """When enough children of one gateway have these alarms at once: one alarm on the gateway."""

    id: str
    kind: str  # the children's kind
    gateway_kinds: tuple[str, ...]  # the catalogue's reported_by of that kind
    types: tuple[str, ...]
    min_fraction: float
    min_count: int
    type: str
    severity: str
    title: str  # placeholders: {count} (children in alarm) and {total} (children of the gateway)
    notify: tuple[str, ...]
    source: str

    def render_title(self, values: Mapping[str, Any]) -> str:
        return render_title(self.title, values)


@dataclass(frozen=True)
class Storm:
    """Many alarms in one zone within a window: grouped under one alarm so operators see one event."""

    id: str
    by: str
    window_s: float
    min_alarms: int
    type: str
    severity: str
    title: str  # placeholders: {commune} and {count}
    source: str

    def render_title(self, values: Mapping[str, Any]) -> str:
        return render_title(self.title, values)


@dataclass(frozen=True)
class RuleSet:
    """All the rules in force, indexed for the engine's hot path."""

    rules: tuple[Rule, ...] = ()
    correlations: tuple[Correlation, ...] = ()
    storms: tuple[Storm, ...] = ()
    files: tuple[str, ...] = ()
    _by_kind: Mapping[str, tuple[Rule, ...]] = field(init=False, repr=False, compare=False)
    _by_id: Mapping[str, Rule] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_kind: dict[str, list[Rule]] = {}
        for rule in self.rules:
            by_kind.setdefault(rule.kind, []).append(rule)
        object.__setattr__(self, "_by_kind", {k: tuple(v) for k, v in by_kind.items()})
        object.__setattr__(self, "_by_id", {r.id: r for r in self.rules})

    def for_kind(self, kind: str) -> tuple[Rule, ...]:
        return self._by_kind.get(kind, ())

    def by_id(self, rule_id: str) -> Rule | None:
        return self._by_id.get(rule_id)


# --- durations and titles -------------------------------------------------------------------------

def parse_duration(text: str) -> float:
    """"90s", "30m", "2h", "7d" or combinations such as "1h30m", in seconds, from 1 s to 7 days."""
    if not isinstance(text, str):
        raise ValueError(f"expected a duration such as \"30m\", got {_kind_of(text)}")
    match = _DURATION_RE.match(text.strip().lower())
    if not text.strip() or match is None:
        raise ValueError(f"{text!r} is not a duration: write a number followed by s, m, h or d "
                         "(90s, 30m, 2h, 1d; combined: 1h30m)")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    total = float(days * 86400 + hours * 3600 + minutes * 60 + seconds)
    if not MIN_DURATION_S <= total <= MAX_DURATION_S:
        raise ValueError(f"{text!r} is out of range: from 1s to 7d")
    return total


@lru_cache(maxsize=1024)
def _title_segments(title: str) -> tuple[tuple[str, str | None], ...]:
    """The title as (literal text, placeholder or None) pairs; raises ValueError if malformed."""
    segments = []
    for literal, name, spec, conversion in string.Formatter().parse(title):
        if name is not None and (spec or conversion):
            raise ValueError(f"placeholder {{{name}}}: write plain field names such as {{power_w}}, without formatting")
        if name is not None and not name.isidentifier():
            raise ValueError(f"placeholder {{{name}}}: write a field name between braces, such as {{power_w}}"
                             if name else "an empty placeholder {}: write a field name between braces")
        segments.append((literal, name))
    return tuple(segments)


def title_placeholders(title: str) -> tuple[str, ...]:
    try:
        return tuple(name for _, name in _title_segments(title) if name is not None)
    except ValueError:
        return ()


def render_title(title: str, values: Mapping[str, Any]) -> str:
    """The title with its placeholders filled in; a missing or unknown value shows as "?"."""
    try:
        segments = _title_segments(title)
    except ValueError:
        return title
    out = []
    for literal, name in segments:
        out.append(literal)
        if name is not None:
            out.append(_shown(values.get(name) if isinstance(values, Mapping) else None))
    return "".join(out)


def _shown(value: Any) -> str:
    """A value as a title shows it: never raises (a device may send anything), never very long."""
    if value is None:
        return "?"
    if isinstance(value, bool):
        return "true" if value else "false"
    try:
        shown = str(value)
    except Exception:  # noqa: BLE001 - e.g. an integer too long to print
        return "?"
    return shown if len(shown) <= 80 else shown[:79] + "…"


# --- locating lines -------------------------------------------------------------------------------

class _Table:
    """One [[rule]], [[correlation]] or [[storm]] table being checked: errors carry its lines."""

    def __init__(self, path: str, locator: Locator, section: str, index: int, raw: Any, catalog: Catalog) -> None:
        self.path, self.locator, self.section, self.index, self.raw, self.catalog = path, locator, section, index, raw, catalog
        self.line = locator.header(section, index)
        ident = raw.get("id") if isinstance(raw, dict) else None
        self.label = f"[[{section}]] {ident}" if isinstance(ident, str) and ID_RE.match(ident) else f"[[{section}]] #{index + 1}"

    def line_of(self, key: str | None) -> int:
        return self.line if key is None or key not in self.raw else self.locator.key(self.section, self.index, key)

    def fail(self, key: str | None, reason: str) -> NoReturn:
        raise RuleError(self.path, self.line_of(key), f"{self.label}: {reason}")

    def check_keys(self, allowed: Sequence[str], required: Sequence[str]) -> None:
        if not isinstance(self.raw, dict):
            raise RuleError(self.path, self.line, f"{self.label}: expected a table, got {_kind_of(self.raw)}")
        for key in self.raw:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean {close[0]}?)" if close else f" (allowed: {', '.join(allowed)})"
                self.fail(key, f"unknown key {key!r}{hint}")
        for key in required:
            if key not in self.raw:
                self.fail(None, f"missing the required key {key!r}")

    # --- typed values ---------------------------------------------------------------------------

    def text(self, key: str, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
        value = self.raw[key]
        if not isinstance(value, str):
            self.fail(key, f"{key} must be text, got {_kind_of(value)}")
        if pattern is not None and not pattern.match(value):
            self.fail(key, f"{key} {value!r} must be {what}")
        return value

    def choice(self, key: str, allowed: Sequence[str]) -> str:
        value = self.text(key)
        if value not in allowed:
            self.fail(key, f"{key} {value!r} must be one of {', '.join(allowed)}")
        return value

    def kind(self, key: str = "kind") -> KindSpec:
        name = self.text(key)
        if name not in self.catalog.kinds:
            close = difflib.get_close_matches(name, list(self.catalog.kinds), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            self.fail(key, f"unknown kind {name!r} ({hint}known: {', '.join(sorted(self.catalog.kinds))})")
        return self.catalog.kinds[name]

    def integer(self, key: str, minimum: int) -> int:
        value = self.raw[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"{key} must be a whole number, got {_kind_of(value)}")
        if value < minimum:
            self.fail(key, f"{key} must be at least {minimum}, got {value}")
        return value

    def duration(self, key: str) -> float:
        try:
            return parse_duration(self.raw[key])
        except ValueError as exc:
            self.fail(key, f"{key}: {exc}")

    def codes(self, key: str, pattern: re.Pattern[str], what: str) -> tuple[str, ...]:
        value = self.raw[key]
        if not isinstance(value, list) or not value:
            self.fail(key, f"{key} must be a non-empty list, such as [\"{what}\"]")
        for item in value:
            if not isinstance(item, str) or not pattern.match(item):
                self.fail(key, f"{key}: {item!r} is not a valid code (lowercase letters, digits and _)")
        if len(set(value)) != len(value):
            self.fail(key, f"{key} lists the same value twice")
        return tuple(value)

    def notify(self, default: tuple[str, ...]) -> tuple[str, ...]:
        if "notify" not in self.raw:
            return default
        value = self.raw["notify"]
        if not isinstance(value, list) or not value:
            self.fail("notify", "notify must be a non-empty list of services, such as [\"lighting\"]")
        for service in value:
            if service not in self.catalog.services:
                self.fail("notify", f"notify: unknown service {service!r} (known: {', '.join(sorted(self.catalog.services))})")
        if len(set(value)) != len(value):
            self.fail("notify", "notify lists the same service twice")
        return tuple(value)

    def title(self, allowed: Sequence[str], what: str) -> str:
        value = self.text("title")
        if not value.strip() or len(value) > MAX_TITLE or has_control_characters(value) or "\n" in value:
            self.fail("title", f"title must be one line of 1 to {MAX_TITLE} characters")
        try:
            segments = _title_segments(value)
        except ValueError as exc:
            self.fail("title", f"title: {exc}")
        for _, name in segments:
            if name is not None and name not in allowed:
                close = difflib.get_close_matches(name, list(allowed), n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                self.fail("title", f"title: unknown placeholder {{{name}}} ({hint}{what}: {', '.join(sorted(allowed))})")
        return value

    def expression(self, key: str, fields: Mapping[str, FieldSpec]) -> Expression:
        text = self.text(key)
        try:
            return compile_expression(text, fields)
        except ExpressionError as exc:
            self.fail(key, f"{key}, column {exc.column}: {exc.reason}")


# --- parsing one file -----------------------------------------------------------------------------

def kind_fields(spec: KindSpec) -> dict[str, FieldSpec]:
    """The names a rule of this kind may read: identity-sheet attributes and telemetry (which wins)."""
    return {**spec.attribute, **spec.telemetry_field}


@dataclass
class _Parsed:
    rules: list[Rule] = field(default_factory=list)
    correlations: list[Correlation] = field(default_factory=list)
    storms: list[Storm] = field(default_factory=list)
    lines: list[tuple[Rule | Correlation | Storm, int, int]] = field(default_factory=list)  # (item, id line, types line)


def _parse(text: str, path: str, catalog: Catalog) -> _Parsed:
    try:
        document = parse_toml(text)
    except TomlSyntaxError as exc:
        raise RuleError(path, exc.line, exc.reason) from None
    locator = Locator(text, ("rule", "correlation", "storm"))
    parsed = _Parsed()
    for key, value in document.items():
        if key not in ("rule", "correlation", "storm"):
            raise RuleError(path, locator.top(key), f"unknown key {key!r}: a rule file holds [[rule]], [[correlation]] "
                                                     "and [[storm]] tables only")
        if not isinstance(value, list):
            raise RuleError(path, locator.top(key), f"write [[{key}]] (with double brackets): each {key} is one "
                                                     "table of a list")
    for index, raw in enumerate(document.get("rule", ())):
        table = _Table(path, locator, "rule", index, raw, catalog)
        rule = _rule(table)
        parsed.rules.append(rule)
        parsed.lines.append((rule, table.line_of("id"), 0))
    for index, raw in enumerate(document.get("correlation", ())):
        table = _Table(path, locator, "correlation", index, raw, catalog)
        correlation = _correlation(table)
        parsed.correlations.append(correlation)
        parsed.lines.append((correlation, table.line_of("id"), table.line_of("types")))
    for index, raw in enumerate(document.get("storm", ())):
        table = _Table(path, locator, "storm", index, raw, catalog)
        storm = _storm(table)
        parsed.storms.append(storm)
        parsed.lines.append((storm, table.line_of("id"), 0))
    return parsed


def _rule(t: _Table) -> Rule:
    t.check_keys(_RULE_KEYS, ("id", "kind", "type", "severity", "title"))
    rule_id = t.text("id", ID_RE, "lowercase letters, digits and -, at most 64 characters")
    spec = t.kind()
    alarm_type = t.text("type", TYPE_RE, "lowercase letters, digits and _, starting with a letter, at most 64 characters")
    severity = t.choice("severity", SEVERITIES)
    fields = kind_fields(spec)
    title = t.title([*fields, *ASSET_PLACEHOLDERS], f"fields of {spec.name}, id and name")
    triggers = [k for k in t.raw if k in _TRIGGERS]
    if not triggers:
        t.fail(None, "a rule needs a trigger: when, on_event or on_connectivity")
    if len(triggers) > 1:
        t.fail(triggers[1], f"a rule has exactly one trigger, this one has {' and '.join(triggers)}")
    trigger = triggers[0]
    for key, needs in (("for", ("when",)), ("clear_event", ("on_event",)), ("clear_when", ("when", "on_event"))):
        if key in t.raw and trigger not in needs:
            t.fail(key, f"{key} goes with {' or '.join(needs)}, not with {trigger}"
                   + (" (the alarm clears when the device is back online)" if trigger == "on_connectivity" else ""))
    when = t.expression("when", fields) if trigger == "when" else None
    clear_when = t.expression("clear_when", fields) if "clear_when" in t.raw else None
    on_event = t.codes("on_event", EVENT_RE, "fire_alarm") if trigger == "on_event" else ()
    clear_event = t.codes("clear_event", EVENT_RE, "fire_reset") if "clear_event" in t.raw else ()
    if set(on_event) & set(clear_event):
        t.fail("clear_event", f"{', '.join(sorted(set(on_event) & set(clear_event)))} both raises and clears the alarm")
    connectivity = None
    if trigger == "on_connectivity":
        connectivity = t.choice("on_connectivity", CONNECTIVITY)
        if spec.reporting_interval_s is None:
            t.fail("on_connectivity", f"{spec.name} has no reporting interval in the catalogue: it is never marked offline")
        if connectivity == "unreachable" and not spec.reported_by:
            t.fail("on_connectivity", f"{spec.name} reports for itself (no reported_by in the catalogue): "
                                      "it is never unreachable, only offline")
    return Rule(id=rule_id, kind=spec.name, type=alarm_type, severity=severity, title=title, when=when,
                clear_when=clear_when, for_s=t.duration("for") if "for" in t.raw else 0.0, on_event=on_event,
                clear_event=clear_event, on_connectivity=connectivity, notify=t.notify((spec.service,)),
                source=f"{t.path}:{t.line}")


def _correlation(t: _Table) -> Correlation:
    t.check_keys(_CORRELATION_KEYS, tuple(k for k in _CORRELATION_KEYS if k != "notify"))
    correlation_id = t.text("id", ID_RE, "lowercase letters, digits and -, at most 64 characters")
    spec = t.kind()
    if not spec.reported_by:
        t.fail("kind", f"{spec.name} has no gateway (reported_by) in the catalogue: nothing to correlate under")
    types = t.codes("types", TYPE_RE, "lamp_failure")
    fraction = t.raw["min_fraction"]
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        t.fail("min_fraction", f"min_fraction must be a number above 0 and at most 1, got {fraction!r}")
    min_count = t.integer("min_count", 2)
    alarm_type = t.text("type", TYPE_RE, "lowercase letters, digits and _, starting with a letter, at most 64 characters")
    severity = t.choice("severity", SEVERITIES)
    title = t.title(("count", "total"), "allowed")
    services = tuple(dict.fromkeys(t.catalog.kinds[g].service for g in spec.reported_by))
    return Correlation(id=correlation_id, kind=spec.name, gateway_kinds=spec.reported_by, types=types,
                       min_fraction=float(fraction), min_count=min_count, type=alarm_type, severity=severity,
                       title=title, notify=t.notify(services), source=f"{t.path}:{t.line}")


def _storm(t: _Table) -> Storm:
    t.check_keys(_STORM_KEYS, ("id", "window", "min_alarms", "severity", "title"))
    storm_id = t.text("id", ID_RE, "lowercase letters, digits and -, at most 64 characters")
    by = t.choice("by", STORM_BY) if "by" in t.raw else "commune"
    return Storm(id=storm_id, by=by, window_s=t.duration("window"), min_alarms=t.integer("min_alarms", 2),
                 type=STORM_TYPE, severity=t.choice("severity", SEVERITIES), title=t.title(("commune", "count"), "allowed"),
                 source=f"{t.path}:{t.line}")


# --- checks across files --------------------------------------------------------------------------

class _Registry:
    """What is already defined, across the files loaded so far: ids and (kind, alarm type) pairs."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}
        self.kind_types: dict[tuple[str, str], str] = {}  # rules' and correlations' (kind, type) -> source
        self.rule_types: set[tuple[str, str]] = set()

    def add(self, path: str, parsed: _Parsed) -> None:
        for item, line, _ in parsed.lines:
            if item.id in self.ids:
                raise RuleError(path, line, f"duplicate id {item.id!r}: already defined at {self.ids[item.id]}")
            self.ids[item.id] = f"{path}:{line}"
            if isinstance(item, Rule):
                pairs = [(item.kind, item.type)]
                self.rule_types.add((item.kind, item.type))
            elif isinstance(item, Correlation):
                pairs = [(gateway, item.type) for gateway in item.gateway_kinds]
            else:
                continue
            for pair in pairs:
                if pair in self.kind_types:
                    raise RuleError(path, _line(item), f"{item.id}: alarm type {pair[1]!r} of {pair[0]} is already "
                                                           f"defined at {self.kind_types[pair]}")
                self.kind_types[pair] = item.source

    def check_correlations(self, files: Sequence[tuple[str, _Parsed]]) -> None:
        for path, parsed in files:
            for correlation, _, types_line in parsed.lines:
                if not isinstance(correlation, Correlation):
                    continue
                for alarm_type in correlation.types:
                    if (correlation.kind, alarm_type) not in self.rule_types:
                        defined = sorted(t for k, t in self.rule_types if k == correlation.kind)
                        raise RuleError(path, types_line,
                                        f"[[correlation]] {correlation.id}: no [[rule]] of {correlation.kind} has the "
                                        f"type {alarm_type!r} (defined: {', '.join(defined) or 'none'})")


def _line(item: Rule | Correlation | Storm) -> int:
    return int(item.source.rsplit(":", 1)[1])


def parse_rules(text: str, path: str, catalog: Catalog) -> tuple[list[Rule], list[Correlation], list[Storm]]:
    """Parse and check one rule file's text. Checks needing the other files are load_rules's."""
    parsed = _parse(text, path, catalog)
    _Registry().add(path, parsed)
    return parsed.rules, parsed.correlations, parsed.storms


def _files(paths: Sequence[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            out.extend(sorted(p for p in path.glob("*.toml") if p.is_file()))
        elif path.is_file():
            out.append(path)
        else:
            raise RuleError(str(path), 0, "no such file or directory")
    unique: dict[Path, Path] = {}
    for path in out:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def load_rules(paths: Sequence[Path], catalog: Catalog) -> RuleSet:
    """Load rule files and directories (their *.toml, sorted); raise the first RuleError found."""
    registry = _Registry()
    loaded: list[tuple[str, _Parsed]] = []
    for file in _files(paths):
        name = str(file)
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise RuleError(name, 0, f"cannot be read: {exc.strerror or exc}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RuleError(name, data[: exc.start].count(b"\n") + 1, "not UTF-8 text") from None
        parsed = _parse(text, name, catalog)
        registry.add(name, parsed)
        loaded.append((name, parsed))
    registry.check_correlations(loaded)
    return RuleSet(rules=tuple(r for _, p in loaded for r in p.rules),
                   correlations=tuple(c for _, p in loaded for c in p.correlations),
                   storms=tuple(s for _, p in loaded for s in p.storms),
                   files=tuple(name for name, _ in loaded))


def default_rules_dir() -> Path:
    """The rule files shipped with citypilot (src/citypilot/alarms/rules/)."""
    return Path(str(resources.files("citypilot.alarms").joinpath("rules")))


def load_default_rules(catalog: Catalog) -> RuleSet:
    return load_rules([default_rules_dir()], catalog)


def _kind_of(value: Any) -> str:
    return {str: "text", bool: "true or false", int: "a number", float: "a number", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)
