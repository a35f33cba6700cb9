// The asset's identity sheet, beside the map: who it is (attributes), how it is now (the live twin,
// kept current from the feed), what happened to it (its journal), a chart of one telemetry value over
// the last 24 hours, and the commands its kind allows with the asset's recent ones (sheet-commands.js).

import { api, query } from "./api.js";
import { drawChart } from "./chart.js";
import { fill, h } from "./dom.js";
import { formatNumber, formatTime, lang, t } from "./i18n.js";
import { SheetCommands } from "./sheet-commands.js";

const CHART_HOURS = 24;
const CHART_BUCKET = "30min";
const NOT_CHARTED = new Set(["lat", "lon", "heading_deg"]); // a position is on the map, not in a chart

function show(value) {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value === "number") return formatNumber(value, 2);
  if (typeof value === "boolean") return value ? "✓" : "✗";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function rows(pairs) {
  return h("dl", { class: "facts" }, pairs.flatMap(([label, value, attrs]) => [h("dt", null, label), h("dd", attrs || null, value)]));
}

export class AssetSheet {
  constructor({ root, kinds, communeName, onClose, interventions, user }) {
    this.root = root;
    this.user = user || (() => null); // () => {username, role, service}: who may send which command
    // {alarmsOf(id), ordersOf(id), canOpenOrder(), onWorkOrder(alarm), onOpenOrder(id)}: the asset's open
    // alarms, each with a button that opens its work order, and the asset's open work orders.
    this.interventions = interventions || null;
    this.kinds = kinds; // () => {kind: spec}
    this.communeName = communeName;
    this.onClose = onClose;
    this.assetId = null;
    this.asset = null;
    this.state = null;
    this.history = [];
    this.metric = null;
    this.returnFocus = null;
    this.openToken = 0;
    this.commands = null; // the SheetCommands of the asset shown
  }

  get isOpen() {
    return !this.root.hidden;
  }

  async open(assetId) {
    const token = ++this.openToken;
    if (!this.isOpen) this.returnFocus = document.activeElement;
    this.assetId = assetId;
    this.asset = null;
    this.state = null;
    this.history = [];
    this.ownAlarms = new Map(); // the asset's open alarms, whatever the alarm list's filters
    this.metric = null;
    this.commands?.destroy();
    this.commands = null;
    this.root.dataset.asset = assetId;
    this.root.hidden = false;
    this._skeleton(assetId);
    this.root.querySelector('[data-testid="sheet-title"]').focus();
    try {
      const [asset, twin, journal, alarms] = await Promise.all([
        api(`/api/v1/assets/${encodeURIComponent(assetId)}`),
        api(`/api/v1/twin/${encodeURIComponent(assetId)}`),
        api(`/api/v1/journal${query({ asset: assetId, limit: 25 })}`).catch(() => ({ items: [] })),
        this.interventions ? api(`/api/v1/alarms${query({ asset: assetId, limit: 50 })}`).catch(() => ({ items: [] }))
          : { items: [] },
      ]);
      if (token !== this.openToken) return;
      for (const alarm of alarms.items) this.ownAlarms.set(alarm.id, alarm);
      this.asset = asset;
      this.state = twin.state;
      this.history = journal.items || [];
      this.commands = new SheetCommands({ asset, spec: this._spec(), user: this.user });
      this.render();
      this._loadChart(token);
    } catch (err) {
      if (token !== this.openToken) return;
      this.root.querySelector(".sheet-body").replaceChildren(
        h("p", { class: "error", role: "alert" }, `${t("sheet_not_found")} (${err.detail || err.message})`));
    }
  }

  close() {
    if (!this.isOpen) return;
    this.openToken++;
    this.commands?.destroy();
    this.commands = null;
    this.root.hidden = true;
    this.assetId = null;
    delete this.root.dataset.asset;
    this.onClose();
    if (this.returnFocus && document.contains(this.returnFocus)) this.returnFocus.focus();
  }

  _skeleton(assetId) {
    this.root.replaceChildren(
      h("header", { class: "panel-head" },
        h("h2", { id: "sheet-title", class: "sheet-title", tabindex: "-1", dataset: { testid: "sheet-title" } }, assetId),
        h("button", { type: "button", class: "icon close", "aria-label": t("close"), title: t("close"), onclick: () => this.close() }, "×")),
      h("div", { class: "sheet-body" }, h("p", { class: "muted" }, t("sheet_loading"))));
  }

  _spec() {
    return this.asset ? this.kinds()[this.asset.kind] : null;
  }

  kindLabel(spec) {
    if (!spec) return this.asset ? this.asset.kind : "";
    return lang() === "fr" ? spec.label_fr || spec.label : spec.label;
  }

  render() {
    if (!this.asset) return;
    const a = this.asset;
    const spec = this._spec();
    this.root.querySelector('[data-testid="sheet-title"]').textContent = a.name || a.id;
    const attributes = Object.entries(a.attributes || {});
    const body = this.root.querySelector(".sheet-body");
    fill(body,
      h("p", { class: "sheet-kind" }, `${this.kindLabel(spec)} · ${a.id}`),
      rows([
        [t("f_commune"), `${a.commune_name || this.communeName(a.commune)} (${a.commune})`],
        [t("f_status"), a.status],
        [t("f_service"), a.service],
        a.address ? [t("f_address"), a.address] : null,
      ].filter(Boolean)),
      h("section", { class: "sheet-section" }, h("h3", null, t("sheet_state")), this._stateView()),
      this.interventions ? h("section", { class: "sheet-section", dataset: { testid: "sheet-interventions" } },
        h("h3", null, t("sheet_interventions")), h("div", { class: "interventions-box" }, this._interventionsView())) : null,
      h("section", { class: "sheet-section chart-section" }, h("h3", null, t("sheet_chart")), this._chartControls(spec),
        h("div", { class: "chart-box" })),
      h("section", { class: "sheet-section", dataset: { testid: "sheet-commands" } }, h("h3", null, t("sheet_commands")),
        this.commands ? this.commands.view() : h("p", { class: "muted" }, "—")),
      attributes.length ? h("section", { class: "sheet-section" }, h("h3", null, t("sheet_attributes")),
        rows(attributes.map(([k, v]) => [spec?.attributes?.[k]?.label || k, withUnit(v, spec?.attributes?.[k])]))) : null,
      h("section", { class: "sheet-section" }, h("h3", null, t("sheet_history")), h("div", { class: "history-box" }, this._historyView())),
    );
    if (this.chartPoints) this._drawChart();
  }

  _stateView() {
    const s = this.state;
    if (!s) return h("p", { class: "muted", dataset: { testid: "sheet-state" } }, t("sheet_no_state"));
    const spec = this._spec();
    const values = Object.entries(s.values || {});
    return h("div", { dataset: { testid: "sheet-state" } },
      rows([
        [t("f_connectivity"), t(`conn_${s.connectivity || "never"}`), { class: `conn conn-${s.connectivity || "never"}` }],
        [t("f_last_seen"), formatTime(s.last_seen)],
        [t("f_reported"), formatTime(s.ts)],
        ...values.map(([k, v]) => [spec?.telemetry?.[k]?.label || k, withUnit(v, spec?.telemetry?.[k])]),
      ]));
  }

  _interventionsView() {
    const x = this.interventions;
    const known = new Map(this.ownAlarms);
    for (const alarm of x.alarmsOf(this.assetId)) known.set(alarm.id, alarm); // the live list's is the latest word
    const alarms = [...known.values()].filter((a) => !a.parent_id
      && (a.state === "raised" || a.state === "acknowledged" || a.state === "cleared"));
    const orders = x.ordersOf(this.assetId);
    if (!alarms.length && !orders.length) return h("p", { class: "muted" }, t("sheet_no_interventions"));
    const allowed = x.canOpenOrder();
    return h("ul", { class: "sheet-interventions" },
      orders.map((o) => h("li", null, h("button", { type: "button", class: "link", dataset: { orderId: String(o.id) },
        onclick: () => x.onOpenOrder(o.id) }, `#${o.id} ${o.title}`), ` · ${t(`wo_state_${o.state}`)}`)),
      alarms.map((a) => h("li", { dataset: { alarmId: String(a.id) } },
        h("span", { class: `sev-badge sev-${a.severity}` }, t(`sev_${a.severity}`)), " ", a.title || a.type, " ",
        h("button", { type: "button", class: "act", dataset: { action: "work-order", alarmId: String(a.id) }, disabled: !allowed,
          title: allowed ? t("act_work_order_title") : t("wo_act_not_allowed"),
          onclick: (event) => this._workOrder(event.currentTarget, a) }, t("act_work_order")))));
  }

  async _workOrder(button, alarm) {
    button.disabled = true;
    try {
      await this.interventions.onWorkOrder(alarm);
    } catch (err) {
      button.after(h("p", { class: "error small", role: "alert" }, `${t("error")}: ${err.detail || err.message}`));
    } finally {
      button.disabled = false;
    }
  }

  // The asset's alarms or work orders changed: redraw that section only.
  refreshInterventions() {
    if (!this.asset || !this.interventions) return;
    this.root.querySelector(".interventions-box")?.replaceChildren(this._interventionsView());
  }

  _historyView() {
    if (!this.history.length) return h("p", { class: "muted" }, t("sheet_no_history"));
    return h("ol", { class: "history" }, this.history.map((e) => h("li", { class: `sev-${e.severity || "none"}` },
      h("span", { class: "event-time" }, formatTime(e.at)), " ", h("span", null, e.summary))));
  }

  _numericFields(spec) {
    return Object.entries(spec?.telemetry || {})
      .filter(([name, f]) => ["number", "integer", "boolean"].includes(f.type) && !NOT_CHARTED.has(name))
      .map(([name]) => name);
  }

  _chartControls(spec) {
    const fields = this._numericFields(spec);
    if (!fields.length) return null;
    this.metric ??= fields[0];
    if (fields.length === 1) return h("p", { class: "muted small" }, labelOf(spec, this.metric));
    const select = h("select", { "aria-label": t("sheet_chart"), onchange: () => { this.metric = select.value; this._loadChart(this.openToken); } },
      fields.map((f) => h("option", { value: f, selected: f === this.metric }, labelOf(spec, f))));
    return select;
  }

  async _loadChart(token) {
    const spec = this._spec();
    if (!this.metric || !spec) return;
    const to = new Date();
    const from = new Date(to.getTime() - CHART_HOURS * 3600 * 1000);
    this.chartPoints = null;
    try {
      const data = await api(`/api/v1/twin/${encodeURIComponent(this.assetId)}/series${query({
        from: from.toISOString(), to: to.toISOString(), metric: this.metric, bucket: CHART_BUCKET })}`);
      if (token !== this.openToken) return;
      this.chartPoints = { points: data.points, from, to, unit: spec.telemetry[this.metric]?.unit || "" };
      this._drawChart();
    } catch {
      // no chart: the rest of the sheet stands
    }
  }

  _drawChart() {
    const box = this.root.querySelector(".chart-box");
    if (!box || !this.chartPoints) return;
    const { points, from, to, unit } = this.chartPoints;
    box.replaceChildren(points.length ? drawChart(points, { from, to, unit }) : h("p", { class: "muted" }, t("sheet_no_series")));
  }

  // A twin delta for this asset: merge it into the state shown.
  applyDelta(delta) {
    if (!this.asset || delta.asset !== this.assetId) return;
    this.state = this.state || { values: {}, connectivity: "online" };
    this.state.values = { ...(this.state.values || {}), ...delta.changed };
    this.state.ts = delta.ts;
    this.state.last_seen = new Date().toISOString();
    this.state.connectivity = "online";
    const view = this.root.querySelector('[data-testid="sheet-state"]');
    if (view) view.replaceWith(this._stateView());
  }

  // A journal entry about this asset: first in its history; a connectivity change updates the state.
  applyEntry(entry) {
    if (!this.asset || entry.asset_id !== this.assetId) return;
    this.history.unshift(entry);
    this.history.length = Math.min(this.history.length, 50);
    if (entry.type.startsWith("command.")) this.commands?.scheduleHistory(); // one of its commands moved on
    if (entry.type.startsWith("connectivity.") && this.state) this.state.connectivity = entry.type.slice("connectivity.".length);
    if (entry.type.startsWith("alarm.") && entry.alarm_id != null && entry.data && entry.data.state) {
      const known = this.ownAlarms.get(entry.alarm_id);
      this.ownAlarms.set(entry.alarm_id, { ...(known || {}), id: entry.alarm_id, asset_id: entry.asset_id,
        severity: entry.severity, title: entry.data.title, type: entry.data.type, state: entry.data.state,
        parent_id: entry.data.parent_id ?? null });
      this.refreshInterventions();
    }
    this.root.querySelector(".history-box")?.replaceChildren(this._historyView());
    const view = this.root.querySelector('[data-testid="sheet-state"]');
    if (view) view.replaceWith(this._stateView());
  }
}

function labelOf(spec, name) {
  const f = spec?.telemetry?.[name];
  return f ? `${f.label || name}${f.unit ? ` (${f.unit})` : ""}` : name;
}

function withUnit(value, field) {
  const text = show(value);
  return field?.unit && typeof value === "number" ? `${text} ${field.unit}` : text;
}
