// The KPI board: equipment availability by domain and by commune (from the twin summary), open
// alarms by severity and domain, and the mean time to acknowledge (from the alarm statistics); the
// lighting saving against the contract's goal and bus priority per line (kpi-operations.js).
// Availability is the share of online assets among those that report (never-heard-from ones apart).

import { api, limited, query } from "./api.js";
import { h } from "./dom.js";
import { formatDuration, formatNumber, t } from "./i18n.js";
import { SEVERITY_LEVELS } from "./alarms.js";
import { interventionCards } from "./kpi-interventions.js";
import { busPriorityCard, lightingGoalCard } from "./kpi-operations.js";

const REFRESH_MS = 30000;

function availability(c) {
  const reporting = c.assets - c.never_reported;
  return reporting > 0 ? c.online / reporting : null;
}

function bar(label, ratio, detail, className = "") {
  const pct = ratio === null ? null : Math.round(ratio * 1000) / 10;
  const level = pct === null ? "none" : pct >= 98 ? "good" : pct >= 90 ? "fair" : "poor";
  return h("div", { class: `kpi-row ${className}` },
    h("span", { class: "kpi-label" }, label),
    h("span", { class: "kpi-bar", role: "presentation" }, h("span", { class: `kpi-fill ${level}`, style: `width:${pct ?? 0}%` })),
    h("span", { class: "kpi-value" }, pct === null ? "—" : `${formatNumber(pct, 1)} %`),
    detail ? h("span", { class: "kpi-detail" }, detail) : null);
}

function countBar(label, n, max, className) {
  return h("div", { class: `kpi-row ${className || ""}` },
    h("span", { class: "kpi-label" }, label),
    h("span", { class: "kpi-bar", role: "presentation" }, h("span", { class: `kpi-fill ${className || ""}`, style: `width:${max ? (100 * n) / max : 0}%` })),
    h("span", { class: "kpi-value" }, String(n)));
}

export class KpiBoard {
  constructor({ root, kinds, communes, domainLabel, interventions }) {
    this.root = root;
    this.interventions = interventions; // {serviceLabel, onOpenOrder}: the intervention cards
    this.kinds = kinds; // () => {kind: spec}
    this.communes = communes; // () => [{insee, name}]
    this.domainLabel = domainLabel;
    this.timer = null;
    this.data = null;
    this.returnFocus = null;
  }

  get isOpen() {
    return !this.root.hidden;
  }

  toggle() {
    if (this.isOpen) this.close();
    else this.open();
  }

  open() {
    this.returnFocus = document.activeElement;
    this.root.hidden = false;
    this.render();
    this.root.querySelector(".close")?.focus();
    this.refresh();
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
  }

  close() {
    if (!this.isOpen) return;
    this.root.hidden = true;
    clearInterval(this.timer);
    this.timer = null;
    if (this.returnFocus && document.contains(this.returnFocus)) this.returnFocus.focus();
  }

  async refresh() {
    try {
      const communes = this.communes();
      const [summary, stats, perCommune, energy, works, month, buses] = await Promise.all([
        api("/api/v1/twin/summary"),
        api("/api/v1/alarms/stats"),
        limited(communes.map((c) => () => api(`/api/v1/twin/summary${query({ commune: c.insee })}`)), 4),
        api("/api/v1/kpi/lighting-energy"),
        api("/api/v1/kpi/interventions").catch(() => null), // a role that reads no work orders: no such cards
        api("/api/v1/kpi/lighting-energy/monthly").catch(() => null),
        api("/api/v1/kpi/bus-priority").catch(() => null),
      ]);
      this.data = { summary, stats, perCommune, energy, works, month, buses, error: null };
    } catch (err) {
      this.data = { ...(this.data || {}), error: err.detail || err.message };
    }
    if (this.isOpen) this.render();
  }

  render() {
    const body = this.root.querySelector(".kpi-body");
    if (!body) {
      this.root.replaceChildren(
        h("header", { class: "panel-head" },
          h("h2", { id: "kpi-title" }, t("kpi_title")),
          h("button", { type: "button", class: "icon close", "aria-label": t("close"), title: t("close"), onclick: () => this.close() }, "×")),
        h("div", { class: "kpi-body" }));
      return this.render();
    }
    this.root.querySelector("#kpi-title").textContent = t("kpi_title");
    if (!this.data) {
      body.replaceChildren(h("p", { class: "muted" }, t("kpi_loading")));
      return;
    }
    const { summary, stats, perCommune, energy, works, month, buses, error } = this.data;
    const parts = [];
    if (error) parts.push(h("p", { class: "error", role: "alert" }, `${t("error")}: ${error}`));
    if (summary) parts.push(this._domains(summary), this._communes(perCommune || []));
    if (stats) parts.push(this._alarms(stats), this._mtta(stats));
    if (energy) parts.push(this._energy(energy));
    if (month) parts.push(lightingGoalCard(month));
    if (buses) parts.push(busPriorityCard(buses));
    if (works && this.interventions) parts.push(...interventionCards(works, this.interventions));
    body.replaceChildren(...parts);
  }

  _domains(summary) {
    const kinds = this.kinds();
    const byDomain = new Map();
    for (const [kind, c] of Object.entries(summary.kinds)) {
      const domain = kinds[kind]?.domain || "operations";
      const acc = byDomain.get(domain) || { assets: 0, online: 0, offline: 0, unreachable: 0, never_reported: 0 };
      for (const key in acc) acc[key] += c[key] || 0;
      byDomain.set(domain, acc);
    }
    const total = summary.total;
    return h("section", { class: "kpi-card", dataset: { testid: "kpi-availability-domain" } },
      h("h3", null, t("kpi_availability_domain")),
      bar("Σ", availability(total), `${total.online} / ${total.assets - total.never_reported}`, "total"),
      [...byDomain.entries()].sort().map(([domain, c]) =>
        bar(this.domainLabel(domain), availability(c), `${c.online} / ${c.assets - c.never_reported}`)),
      h("p", { class: "muted small" }, t("kpi_availability_note", { n: total.never_reported })));
  }

  _communes(perCommune) {
    const communes = this.communes();
    const rows = communes.map((c, k) => ({ name: c.name, total: perCommune[k]?.total }))
      .filter((r) => r.total && r.total.assets > 0)
      .map((r) => ({ ...r, ratio: availability(r.total) }))
      .sort((a, b) => (a.ratio ?? 2) - (b.ratio ?? 2));
    return h("section", { class: "kpi-card", dataset: { testid: "kpi-availability-commune" } },
      h("h3", null, t("kpi_availability_commune")),
      rows.map((r) => bar(r.name, r.ratio, `${r.total.online} / ${r.total.assets - r.total.never_reported}`)));
  }

  _alarms(stats) {
    const open = stats.open;
    const bySeverity = SEVERITY_LEVELS.map((s) => [s, open.by_severity[s] || 0]);
    const max = Math.max(1, ...bySeverity.map(([, n]) => n));
    const byDomain = Object.entries(open.by_domain).sort((a, b) => b[1] - a[1]);
    const maxDomain = Math.max(1, ...byDomain.map(([, n]) => n));
    return h("section", { class: "kpi-card", dataset: { testid: "kpi-alarms" } },
      h("h3", null, t("kpi_alarms_severity")),
      h("p", { class: "kpi-totals" },
        h("strong", null, String(open.total)), ` ${t("kpi_open")} · `,
        h("strong", null, String(open.unacknowledged)), ` ${t("kpi_unack")} · `,
        h("strong", null, String(open.shelved)), ` ${t("kpi_shelved")}`),
      bySeverity.map(([s, n]) => countBar(t(`sev_${s}`), n, max, `sev-${s}`)),
      h("h3", null, t("kpi_alarms_domain")),
      byDomain.length ? byDomain.map(([d, n]) => countBar(this.domainLabel(d), n, maxDomain)) : h("p", { class: "muted" }, t("kpi_none")));
  }

  _energy(e) {
    // Today's lighting energy from the cabinets' meters, against the same day before LED (estimated
    // from the lights' power before and after their LED retrofit).
    const kwh = (v) => (v === null ? "—" : `${formatNumber(v, 0)} kWh`);
    return h("section", { class: "kpi-card", dataset: { testid: "kpi-energy" } },
      h("h3", null, t("kpi_energy")),
      h("p", { class: "kpi-big" }, kwh(e.energy_kwh),
        h("span", { class: "muted small" }, ` ${t(e.partial_day ? "kpi_energy_so_far" : "kpi_energy_day")}`)),
      h("div", { class: "kpi-row" }, h("span", { class: "kpi-label" }, t("kpi_energy_before_led")),
        h("span", { class: "kpi-value" }, kwh(e.before_led_kwh))),
      h("div", { class: "kpi-row" }, h("span", { class: "kpi-label" }, t("kpi_energy_saving")),
        h("span", { class: "kpi-value" }, e.saving_pct === null ? "—" : `${formatNumber(e.saving_pct, 1)} %`)),
      h("p", { class: "muted small" }, t("kpi_energy_note", { cabinets: e.cabinets_metered, lights: e.lights_with_pre_led_power })));
  }

  _mtta(stats) {
    const tta = stats.time_to_acknowledge;
    return h("section", { class: "kpi-card", dataset: { testid: "kpi-mtta" } },
      h("h3", null, t("kpi_mtta")),
      h("p", { class: "kpi-big" }, formatDuration(tta.mean_s), h("span", { class: "muted small" }, ` (${tta.acknowledged} ${t("kpi_acknowledged")})`)),
      SEVERITY_LEVELS.filter((s) => tta.by_severity[s]).map((s) => h("div", { class: "kpi-row" },
        h("span", { class: "kpi-label" }, t(`sev_${s}`)),
        h("span", { class: "kpi-value" }, formatDuration(tta.by_severity[s].mean_s)),
        h("span", { class: "kpi-detail" }, `n = ${tta.by_severity[s].acknowledged}`))));
  }
}
