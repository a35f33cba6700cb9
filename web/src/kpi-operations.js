// The KPI board's operations cards: street lighting's saving this month against the contract's goal
// (GET /api/v1/kpi/lighting-energy/monthly, the cabinets' meters per commune: actual, programme
// forecast, pre-LED baseline) and bus priority per line over the last 24 hours
// (GET /api/v1/kpi/bus-priority: requests, share served, bus time saved).

import { h } from "./dom.js";
import { formatDuration, formatNumber, t } from "./i18n.js";

const kwh = (v) => (v === null || v === undefined ? "—" : `${formatNumber(v, 0)} kWh`);
const pct = (v) => (v === null || v === undefined ? "—" : `${formatNumber(v, 1)} %`);

export function lightingGoalCard(m) {
  const total = m.total || {};
  const meets = total.saving_pct === null || total.saving_pct === undefined ? null : total.saving_pct >= m.goal_saving_pct;
  return h("section", { class: "kpi-card", dataset: { testid: "kpi-lighting-goal" } },
    h("h3", null, t("kpi_goal_title", { month: m.month })),
    h("p", { class: "kpi-big" }, pct(total.saving_pct),
      h("span", { class: `kpi-badge ${meets === null ? "" : meets ? "good" : "poor"}`, dataset: { testid: "kpi-goal-badge" } },
        ` ${meets === null ? t("kpi_goal_no_data") : meets ? t("kpi_goal_met") : t("kpi_goal_missed")}`)),
    h("div", { class: "kpi-row" }, h("span", { class: "kpi-label" }, t("kpi_goal_target")),
      h("span", { class: "kpi-value" }, pct(m.goal_saving_pct))),
    h("div", { class: "kpi-row" }, h("span", { class: "kpi-label" }, t("kpi_goal_actual")),
      h("span", { class: "kpi-value" }, kwh(total.actual_kwh))),
    h("div", { class: "kpi-row" }, h("span", { class: "kpi-label" }, t("kpi_goal_forecast")),
      h("span", { class: "kpi-value" }, kwh(total.forecast_kwh)),
      h("span", { class: "kpi-detail" }, total.vs_forecast_pct === null || total.vs_forecast_pct === undefined ? ""
        : `${total.vs_forecast_pct > 0 ? "+" : ""}${formatNumber(total.vs_forecast_pct, 1)} %`)),
    h("div", { class: "kpi-row" }, h("span", { class: "kpi-label" }, t("kpi_goal_baseline")),
      h("span", { class: "kpi-value" }, kwh(total.baseline_kwh))),
    h("p", { class: "muted small" }, t(m.partial_month ? "kpi_goal_note_partial" : "kpi_goal_note")));
}

export function busPriorityCard(b) {
  const lines = b.lines || [];
  return h("section", { class: "kpi-card wide", dataset: { testid: "kpi-bus-priority" } },
    h("h3", null, t("kpi_bus_title")),
    lines.length ? h("table", { class: "kpi-table" },
      h("thead", null, h("tr", null, ["kpi_bus_line", "kpi_bus_requests", "kpi_bus_served", "kpi_bus_saved", "kpi_bus_per_bus"]
        .map((k, i) => h("th", { scope: "col", class: i ? "num" : null }, t(k))))),
      h("tbody", null, [...lines.map((l) => [l.line ?? "?", l, false]), ["Σ", b.network, true]].map(([name, f, total]) =>
        h("tr", { class: total ? "total" : null, dataset: { testid: "kpi-bus-row", line: name } },
          h("th", { scope: "row" }, name),
          h("td", { class: "num" }, String(f.requests)),
          h("td", { class: "num" }, pct(f.share_served_pct)),
          h("td", { class: "num" }, formatDuration(f.time_saved_s)),
          h("td", { class: "num" }, f.time_saved_per_granted_s === null ? "—" : `${formatNumber(f.time_saved_per_granted_s, 0)} s`)))))
      : h("p", { class: "muted" }, t("kpi_bus_none")),
    h("p", { class: "muted small" }, t("kpi_bus_note")));
}
