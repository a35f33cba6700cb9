"""The rule engine: from what the twin, the devices and offline detection say, decide which alarms are
raised and cleared (pure: no I/O; the service feeds it and the store applies its decisions).

It keeps in memory what it needs to decide quickly: each asset's facts (kind, commune, gateway, sheet
attributes) and latest telemetry, the alarms it knows active, the ``for`` conditions waiting for their
delay, and recent raises per commune (storms).

Correlation happens here, before anything is written, so that a power cut turns into one alarm per
cabinet rather than hundreds of lamp alarms: a child alarm (a lamp failure) whose gateway has most of
its children failing is *folded* under one gateway alarm, raised once. Storms: when many alarms are
raised in one commune within a short window, one storm alarm is raised and the next ones are folded
under it, so that the operator reads one line and the services are told once. Critical alarms (fire,
intrusion) and public-safety ones are never folded: they must stay in sight.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict, deque
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

from citypilot.equipment.catalog import Catalog

from .lifecycle import Raise
from .rules import Correlation, Rule, RuleSet, Storm

Key = tuple[str, str]


@dataclass
class AssetFacts:
    id: str
    kind: str
    commune: str | None
    lat: float | None
    lon: float | None
    service: str | None
    reported_by: str | None
    attributes: dict[str, Any] = field(default_factory=dict)
    name: str | None = None


@dataclass(frozen=True)
class Clear:
    source: str
    type: str
    at: dt.datetime
    reason: str

    @property
    def key(self) -> Key:
        return (self.source, self.type)


@dataclass(frozen=True)
class Fold:
    """Put an active alarm under a correlation or storm alarm."""

    child: Key
    parent: Key


Decision = Raise | Clear | Fold


@dataclass
class ActiveInfo:
    rule_id: str
    severity: str
    commune: str | None
    restricted: bool
    parent: Key | None = None


class Engine:
    def __init__(self, rules: RuleSet, catalog: Catalog) -> None:
        self.rules = rules
        self.catalog = catalog
        self.assets: dict[str, AssetFacts] = {}
        self.values: dict[str, dict[str, Any]] = {}
        self.active: dict[Key, ActiveInfo] = {}
        self.pending: dict[tuple[str, str], dt.datetime] = {}   # (asset, rule id) -> condition true since
        self.children: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))  # gateway -> kind -> n
        self.recent: dict[str, deque[tuple[dt.datetime, Key]]] = defaultdict(deque)  # commune -> raises
        self.storm_last: dict[str, dt.datetime] = {}
        self._correlation_by_kind: dict[str, list[Correlation]] = defaultdict(list)
        for corr in rules.correlations:
            self._correlation_by_kind[corr.kind].append(corr)
        self._kinds_with_state_rules = {r.kind for r in rules.rules if r.when is not None or r.clear_when is not None}

    # -- loading ---------------------------------------------------------------------------------------
    def add_asset(self, facts: AssetFacts) -> None:
        old = self.assets.get(facts.id)
        if old is not None and old.reported_by:
            self.children[old.reported_by][old.kind] -= 1
        self.assets[facts.id] = facts
        if facts.reported_by:
            self.children[facts.reported_by][facts.kind] += 1

    def needs_values(self, kind: str) -> bool:
        return kind in self._kinds_with_state_rules

    def set_values(self, asset_id: str, values: Mapping[str, Any]) -> None:
        self.values[asset_id] = dict(values)

    def add_active(self, source: str, type_: str, rule_id: str, severity: str, commune: str | None,
                   restricted: bool, parent: Key | None = None) -> None:
        self.active[(source, type_)] = ActiveInfo(rule_id, severity, commune, restricted, parent)

    def forget(self, key: Key) -> None:
        """An alarm cleared by an operator: the engine may raise it again when its condition returns."""
        self.active.pop(key, None)

    # -- inputs ----------------------------------------------------------------------------------------
    def reconcile(self, now: dt.datetime) -> list[Decision]:
        """Evaluate every state rule over every known asset (at start: catch up with what changed while
        no engine was running): raise what holds and is not raised, clear what is raised and no longer holds."""
        out: list[Decision] = []
        for asset_id, values in self.values.items():
            facts = self.assets.get(asset_id)
            if facts is not None:
                out += self._evaluate(facts, values, None, now, now)
        return self._finish(out, now)

    def on_twin(self, asset_id: str, at: dt.datetime, changed: Mapping[str, Any], now: dt.datetime) -> list[Decision]:
        facts = self.assets.get(asset_id)
        if facts is None or not self.needs_values(facts.kind):
            return []
        values = self.values.setdefault(asset_id, {})
        values.update(changed)
        return self._evaluate(facts, values, frozenset(changed), at, now)

    def on_event(self, asset_id: str, code: str, at: dt.datetime, data: Mapping[str, Any]) -> list[Decision]:
        facts = self.assets.get(asset_id)
        if facts is None:
            return []
        out: list[Decision] = []
        for rule in self.rules.for_kind(facts.kind):
            key = (asset_id, rule.type)
            if code in rule.on_event:
                out.append(self._raise(rule, facts, at, {"event": code, **({"event_data": dict(data)} if data else {})}))
            elif code in rule.clear_event and key in self.active:
                out.append(Clear(asset_id, rule.type, at, f"device reported {code}"))
        return out

    def on_connectivity(self, asset_id: str, state: str, at: dt.datetime) -> list[Decision]:
        facts = self.assets.get(asset_id)
        if facts is None:
            return []
        out: list[Decision] = []
        for rule in self.rules.for_kind(facts.kind):
            if rule.on_connectivity is None:
                continue
            key = (asset_id, rule.type)
            if rule.on_connectivity == state and key not in self.active:
                out.append(self._raise(rule, facts, at, {"connectivity": state}))
            elif state == "online" and key in self.active:
                out.append(Clear(asset_id, rule.type, at, "back online"))
        return out

    def tick(self, now: dt.datetime) -> list[Decision]:
        """Time passing: ``for`` conditions that have held long enough; storms that have calmed down."""
        out: list[Decision] = []
        for (asset_id, rule_id), since in list(self.pending.items()):
            rule = self.rules.by_id(rule_id)
            facts = self.assets.get(asset_id)
            if rule is None or facts is None:
                del self.pending[(asset_id, rule_id)]
                continue
            if (now - since).total_seconds() >= rule.for_s:
                del self.pending[(asset_id, rule_id)]
                if (asset_id, rule.type) not in self.active and rule.when is not None and rule.when(self._view(facts)):
                    out.append(self._raise(rule, facts, now, {"held_since": since.isoformat()}))
        for storm in self.rules.storms:
            for commune, last in list(self.storm_last.items()):
                key = (f"commune:{commune}", storm.type)
                if key in self.active and (now - last).total_seconds() >= storm.window_s:
                    out.append(Clear(key[0], key[1], now, f"no new alarm in {commune} for {storm.window_s:g} s"))
                    del self.storm_last[commune]
        return self._finish(out, now)

    def finish(self, decisions: list[Decision], now: dt.datetime) -> list[Decision]:
        """Correlate and group one batch's decisions, and update what the engine knows is active."""
        return self._finish(decisions, now)

    # -- evaluation ------------------------------------------------------------------------------------
    def _view(self, facts: AssetFacts) -> dict[str, Any]:
        return {**facts.attributes, **self.values.get(facts.id, {})}

    def _evaluate(self, facts: AssetFacts, values: Mapping[str, Any], changed: frozenset[str] | None,
                  at: dt.datetime, now: dt.datetime) -> list[Decision]:
        out: list[Decision] = []
        view: dict[str, Any] | None = None
        for rule in self.rules.for_kind(facts.kind):
            if rule.when is None and rule.clear_when is None:
                continue
            if changed is not None and not (rule.names() & changed):
                continue  # nothing this rule reads has changed
            if view is None:
                view = {**facts.attributes, **values}
            key = (facts.id, rule.type)
            if key in self.active:
                # Cleared only when the condition is known to be over: a value that stops coming (unknown)
                # does not clear an alarm.
                gone = rule.clear_when(view) if rule.clear_when is not None else (
                    rule.when is not None and rule.when.truth(view) is False)
                if gone:
                    out.append(Clear(facts.id, rule.type, at, "condition no longer holds"))
                continue
            if rule.when is None:
                continue
            holds = rule.when(view)
            pending_key = (facts.id, rule.id)
            if not holds:
                self.pending.pop(pending_key, None)
            elif rule.for_s > 0:
                self.pending.setdefault(pending_key, at)
            else:
                out.append(self._raise(rule, facts, at, {}))
        return out

    def _raise(self, rule: Rule, facts: AssetFacts, at: dt.datetime, data: dict[str, Any]) -> Raise:
        spec = self.catalog.kinds.get(facts.kind)
        return Raise(source=facts.id, type=rule.type, rule_id=rule.id, domain=spec.domain if spec else "operations",
                     severity=rule.severity, title=rule.render_title(self._view(facts) | {"id": facts.id, "name": facts.name}),
                     at=at, asset_id=facts.id, kind=facts.kind, service=facts.service,
                     notify=rule.notify or ((spec.service,) if spec else ()), commune=facts.commune, lat=facts.lat,
                     lon=facts.lon, restricted=bool(spec and spec.restricted), data=data)

    # -- correlation and storms ------------------------------------------------------------------------
    def _finish(self, decisions: list[Decision], now: dt.datetime) -> list[Decision]:
        out: list[Decision] = []
        raises = [d for d in decisions if isinstance(d, Raise)]
        clears = [d for d in decisions if isinstance(d, Clear)]
        new_keys = {r.key for r in raises if r.key not in self.active}
        # What will be active after this batch, for the counts.
        for r in raises:
            if r.key not in self.active:
                self.active[r.key] = ActiveInfo(r.rule_id, r.severity, r.commune, r.restricted, r.parent)
        for c in clears:
            self.active.pop(c.key, None)
        parents: dict[Key, Key] = {}
        correlated = self._correlate(raises, clears, parents, now)
        candidates = [r for r in raises if r.key in new_keys and r.key not in parents]
        candidates += [d for d in correlated if isinstance(d, Raise)]
        stormed = self._storms(candidates, parents, now)
        extra = [*stormed, *correlated]
        # Parents first (storms, then gateways), so that the store can link children to them; the
        # batch's own decisions keep their order (a raise then a clear of one alarm is not a clear then
        # a raise); folds and the parents' clears last.
        ordered = [d for d in extra if isinstance(d, Raise)] + list(decisions) + [d for d in extra if not isinstance(d, Raise)]
        for d in ordered:
            if isinstance(d, Raise) and d.key in parents and d.parent is None:
                d = replace(d, parent=parents[d.key])
            out.append(d)
        return out

    def _children_active(self, corr: Correlation, gateways: set[str]) -> dict[str, list[Key]]:
        """The active child alarms of these gateways, in one pass over the active alarms (a city-wide
        power cut touches a thousand gateways at once: not a pass per gateway)."""
        types = set(corr.types)
        out: dict[str, list[Key]] = {g: [] for g in gateways}
        for key in self.active:
            if key[1] in types and (facts := self.assets.get(key[0])) is not None and facts.kind == corr.kind \
                    and facts.reported_by in out:
                out[facts.reported_by].append(key)
        return out

    def _correlate(self, raises: list[Raise], clears: list[Clear], parents: dict[Key, Key], now: dt.datetime) -> list[Decision]:
        out: list[Decision] = []
        touched: dict[tuple[str, str], Correlation] = {}
        for d in [*raises, *clears]:
            facts = self.assets.get(d.source)
            if facts is None or not facts.reported_by:
                continue
            for corr in self._correlation_by_kind.get(facts.kind, ()):
                if d.type in corr.types:
                    touched[(facts.reported_by, corr.id)] = corr
        new_raise_keys = {r.key for r in raises}
        by_correlation: dict[str, dict[str, list[Key]]] = {}
        for corr_id in {c.id for c in touched.values()}:
            corr = next(c for c in touched.values() if c.id == corr_id)
            by_correlation[corr_id] = self._children_active(corr, {g for g, cid in touched if cid == corr_id})
        for (gateway, _), corr in touched.items():
            children = by_correlation[corr.id][gateway]
            total = max(1, self.children[gateway][corr.kind])
            parent_key = (gateway, corr.type)
            holds = len(children) >= corr.min_count and len(children) / total >= corr.min_fraction
            gateway_facts = self.assets.get(gateway)
            if holds and gateway_facts is not None:
                if parent_key not in self.active:
                    spec = self.catalog.kinds.get(gateway_facts.kind)
                    out.insert(0, Raise(source=gateway, type=corr.type, rule_id=corr.id,
                                        domain=spec.domain if spec else "operations", severity=corr.severity,
                                        title=corr.render_title({"count": len(children), "total": total}),
                                        at=now, asset_id=gateway, kind=gateway_facts.kind,
                                        service=gateway_facts.service,
                                        notify=corr.notify or ((spec.service,) if spec else ()),
                                        commune=gateway_facts.commune, lat=gateway_facts.lat, lon=gateway_facts.lon,
                                        restricted=bool(spec and spec.restricted),
                                        data={"failing": len(children), "of": total}))
                    self.active[parent_key] = ActiveInfo(corr.id, corr.severity, gateway_facts.commune, False)
                for child in children:
                    info = self.active[child]
                    if info.parent != parent_key:
                        info.parent = parent_key
                        parents[child] = parent_key
                        if child not in new_raise_keys:
                            out.append(Fold(child, parent_key))
            elif parent_key in self.active and len(children) < corr.min_count:
                out.append(Clear(gateway, corr.type, now, f"{len(children)} of {total} left failing"))
                self.active.pop(parent_key, None)
        return out

    def _storms(self, raises: list[Raise], parents: dict[Key, Key], now: dt.datetime) -> list[Decision]:
        out: list[Decision] = []
        raised_keys = {r.key for r in raises}
        for storm in self.rules.storms:
            for r in raises:
                if r.severity == "critical" or r.restricted or r.commune is None or r.type == storm.type:
                    continue
                window = self.recent[r.commune]
                window.append((now, r.key))
                while window and (now - window[0][0]).total_seconds() > storm.window_s:
                    window.popleft()
                storm_key = (f"commune:{r.commune}", storm.type)
                if storm_key in self.active:
                    parents[r.key] = storm_key
                    self.active[r.key].parent = storm_key
                    self.storm_last[r.commune] = now
                elif len(window) >= storm.min_alarms:
                    out.insert(0, self._storm_raise(storm, r.commune, len(window), now))
                    self.active[storm_key] = ActiveInfo(storm.id, storm.severity, r.commune, False)
                    self.storm_last[r.commune] = now
                    for _, key in window:
                        if key in self.active and self.active[key].parent is None:
                            self.active[key].parent = storm_key
                            parents[key] = storm_key
                            if key not in raised_keys:
                                out.append(Fold(key, storm_key))
        return out

    def _storm_raise(self, storm: Storm, commune: str, count: int, now: dt.datetime) -> Raise:
        return Raise(source=f"commune:{commune}", type=storm.type, rule_id=storm.id, domain="operations",
                     severity=storm.severity, title=storm.render_title({"commune": commune, "count": count}),
                     at=now, commune=commune, notify=(), data={"alarms": count})


def facts_from_row(row: Mapping[str, Any]) -> AssetFacts:
    return AssetFacts(id=row["id"], kind=row["kind"], commune=row.get("commune"), lat=row.get("lat"), lon=row.get("lon"),
                      service=row.get("service"), reported_by=row.get("reported_by"),
                      attributes=dict(row.get("attributes") or {}), name=row.get("name"))


def active_keys(decisions: Iterable[Decision]) -> set[Key]:
    return {d.key for d in decisions if isinstance(d, Raise)}
