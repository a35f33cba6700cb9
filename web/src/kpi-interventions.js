// The intervention KPIs of the board (GET /api/v1/kpi/interventions, orders opened in the last 30
// days): response time (opened -> team on site) and resolution time (-> reported done) per service,
// mean and median, with the share within each order's own SLA deadlines; the backlog of open orders;
// and the overdue ones, each a link to its order.

import { h } from "./dom.js";
import { formatDuration, formatNumber, formatTime, t } from "./i18n.js";
import { PRIORITIES } from "./interventions.js";
import { stateLabel } from "./work-orders.js";

function pct(value) {
  return value === null || value === undefined ? "—" : `${formatNumber(value, 1)} %`;
}

function level(value) {
  return value === null || value === undefined ? "" : value >= 95 ? "good" : value >= 80 ? "fair" : "poor";
}

function timesTable(rows, label) {
  const head = ["", t("kpi_wo_orders"), t("kpi_wo_response"), t("kpi_wo_median"), t("kpi_wo_in_sla"),
    t("kpi_wo_resolution"), t("kpi_wo_median"), t("kpi_wo_in_sla")];
  return h("table", { class: "kpi-table" },
    h("thead", null, h("tr", null, head.map((text, k) => h("th", { scope: "col", class: k ? "num" : null }, text)))),
    h("tbody", null, rows.map(([key, f, total]) => h("tr", { class: total ? "total" : null, dataset: { testid: "kpi-wo-row", key } },
      h("th", { scope: "row" }, label(key)),
      h("td", { class: "num" }, String(f.orders)),
      h("td", { class: "num" }, formatDuration(f.response.mean_s)),
      h("td", { class: "num" }, formatDuration(f.response.median_s)),
      h("td", { class: `num ${level(f.response.within_sla_pct)}` }, pct(f.response.within_sla_pct)),
      h("td", { class: "num" }, formatDuration(f.resolution.mean_s)),
      h("td", { class: "num" }, formatDuration(f.resolution.median_s)),
      h("td", { class: `num ${level(f.resolution.within_sla_pct)}` }, pct(f.resolution.within_sla_pct))))));
}

export function interventionCards(k, { serviceLabel, onOpenOrder }) {
  const services = Object.entries(k.by_service).sort((a, b) => a[0].localeCompare(b[0]));
  const b = k.backlog;
  const times = h("section", { class: "kpi-card wide", dataset: { testid: "kpi-interventions" } },
    h("h3", null, t("kpi_wo_times")),
    services.length ? timesTable([...services, ["all", k.overall, true]], (key) => (key === "all" ? "Σ" : serviceLabel(key)))
      : h("p", { class: "muted" }, t("kpi_wo_no_orders")),
    h("p", { class: "muted small" }, t("kpi_wo_note", { requests: k.requests.received, linked: k.requests.linked_duplicates })));
  const max = Math.max(1, ...Object.values(b.by_service));
  const backlog = h("section", { class: "kpi-card", dataset: { testid: "kpi-backlog" } },
    h("h3", null, t("kpi_wo_backlog")),
    h("p", { class: "kpi-totals" },
      h("strong", null, String(b.open)), ` ${t("kpi_wo_open")} · `,
      h("strong", { class: b.overdue ? "late" : null }, String(b.overdue)), ` ${t("kpi_wo_overdue")} · `,
      h("strong", null, String(b.planned_ahead)), ` ${t("kpi_wo_planned")} · `,
      h("strong", null, String(k.requests.open)), ` ${t("kpi_wo_requests_open")}`),
    h("p", { class: "small" }, ["new", "assigned", "en_route", "on_site"].map((s) => `${stateLabel(s)} ${b.by_state[s] || 0}`).join(" · ")),
    h("p", { class: "small" }, PRIORITIES.map((p) => `${t(`prio_${p}`)} ${b.by_priority[p] || 0}`).join(" · ")),
    Object.entries(b.by_service).sort((x, y) => y[1] - x[1]).map(([service, n]) => h("div", { class: "kpi-row" },
      h("span", { class: "kpi-label" }, serviceLabel(service)),
      h("span", { class: "kpi-bar", role: "presentation" }, h("span", { class: "kpi-fill", style: `width:${(100 * n) / max}%` })),
      h("span", { class: "kpi-value" }, String(n)))));
  const overdue = h("section", { class: "kpi-card", dataset: { testid: "kpi-overdue" } },
    h("h3", null, t("kpi_wo_overdue_list")),
    k.overdue.length ? h("ul", { class: "overdue-list" }, k.overdue.map((o) => h("li", null,
      h("button", { type: "button", class: "link", dataset: { orderId: String(o.id) }, onclick: () => onOpenOrder(o.id) }, `#${o.id} ${o.title}`),
      h("div", { class: "muted small" }, `${t(`prio_${o.priority}`)} · ${stateLabel(o.state)} · ${serviceLabel(o.service)}`
        + `${o.team_id ? ` · ${o.team_id}` : ""} · ${t("wo_due", { t: formatTime(o.sla_resolution_due) })}`))))
      : h("p", { class: "muted" }, t("kpi_none")));
  return [times, backlog, overdue];
}
