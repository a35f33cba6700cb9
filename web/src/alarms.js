// The alarm feed beside the map: the open alarms, worst and unacknowledged first, kept up to date
// from the live feed; acknowledge, clear, shelve and comment in place. Each item is a keyed element
// updated where it stands, so that an inline form being typed in survives a burst of changes.

import { api, query } from "./api.js";
import { h, perFrame } from "./dom.js";
import { formatTime, t } from "./i18n.js";

const SEVERITY_RANK = { critical: 1, major: 2, minor: 3, warning: 4 };
const STATE_RANK = { raised: 0, acknowledged: 1, cleared: 2, closed: 3 };
const MAX_SHOWN = 500;
export const SEVERITY_LEVELS = ["critical", "major", "minor", "warning"];

export function severitiesFrom(minimum) {
  if (!minimum) return [];
  return SEVERITY_LEVELS.slice(0, SEVERITY_LEVELS.indexOf(minimum) + 1);
}

// The alarm as an alarm.* journal entry tells it (its data holds the alarm after the change).
export function alarmFromEntry(entry) {
  const d = entry.data || {};
  return {
    id: entry.alarm_id, asset_id: entry.asset_id, kind: entry.kind, domain: entry.domain, commune: entry.commune,
    severity: entry.severity, lat: entry.lat, lon: entry.lon, restricted: entry.restricted, service: entry.service,
    state: d.state, title: d.title, type: d.type, source: d.source, count: d.count, occurrence: d.occurrence,
    parent_id: d.parent_id ?? null, first_seen: d.first_seen, last_seen: d.last_seen,
    shelved_until: d.shelved_until || null,
    shelved: Boolean(d.shelved_until && new Date(d.shelved_until) > new Date()),
    raised_at: entry.type === "alarm.raised" ? entry.at : undefined,
  };
}

export class AlarmPanel {
  constructor({ list, status, canAct, communeName, onSelect, onChange, onCritical, canOpenOrder, onWorkOrder }) {
    this.list = list;
    this.canOpenOrder = canOpenOrder || (() => false);
    this.onWorkOrder = onWorkOrder; // (alarm) => Promise: opens the alarm's work order
    this.status = status;
    this.canAct = canAct;
    this.communeName = communeName;
    this.onSelect = onSelect;
    this.onChange = onChange;
    this.onCritical = onCritical;
    this.alarms = new Map();
    this.elements = new Map();
    this.flashing = new Map();
    this.filters = { domain: "", commune: "", severity: "", shelved: false };
    this.truncated = false;
    this.scheduleRender = perFrame(() => this.render());
    this.loadToken = 0;
  }

  matches(alarm) {
    const f = this.filters;
    if (alarm.state === "closed" || alarm.parent_id) return false;
    if (isShelved(alarm) !== f.shelved) return false;
    if (f.domain && alarm.domain !== f.domain) return false;
    if (f.commune && alarm.commune !== f.commune) return false;
    if (f.severity && SEVERITY_RANK[alarm.severity] > SEVERITY_RANK[f.severity]) return false;
    return true;
  }

  setFilters(filters) {
    Object.assign(this.filters, filters);
    return this.load();
  }

  // The open alarms under the filters, from the API. forget: drop what the page knew first (after the
  // feed's reset, when alarms may have closed unseen); otherwise what the feed told is kept.
  async load({ forget = false } = {}) {
    const token = ++this.loadToken;
    const f = this.filters;
    const items = [];
    let cursor = null;
    for (let page = 0; page < 4; page++) { // at most 2,000: a control room does not read more in a list
      const data = await api(`/api/v1/alarms${query({ limit: 500, shelved: f.shelved, domain: f.domain,
        commune: f.commune, severity: severitiesFrom(f.severity), cursor })}`);
      items.push(...data.items);
      cursor = data.next_cursor;
      if (!cursor) break;
    }
    if (token !== this.loadToken) return;
    if (forget) {
      for (const alarm of this.alarms.values()) {
        if (!items.some((item) => item.id === alarm.id)) this.onChange({ ...alarm, state: "closed" });
      }
      this.alarms.clear();
    }
    for (const item of items) this.alarms.set(item.id, item);
    for (const item of items) this.onChange(item);
    this.truncated = Boolean(cursor);
    for (const alarm of this.alarms.values()) alarm._dirty = true;
    this.scheduleRender();
  }

  // alarm.* entries from the feed, in id order.
  applyEntries(entries) {
    for (const entry of entries) {
      if (!entry.type.startsWith("alarm.") || entry.alarm_id == null) continue;
      const update = alarmFromEntry(entry);
      const known = this.alarms.get(update.id);
      const alarm = known ? Object.assign(known, stripUndefined(update)) : update;
      alarm._dirty = true;
      if (alarm.state === "closed") {
        this.alarms.delete(alarm.id);
      } else {
        this.alarms.set(alarm.id, alarm);
      }
      this.onChange(alarm);
      if (entry.type === "alarm.raised" && alarm.severity === "critical" && !alarm.shelved && !alarm.parent_id) {
        this.flashing.set(alarm.id, Date.now() + 10000);
        this.onCritical(alarm);
      }
    }
    this.scheduleRender();
  }

  get(alarmId) {
    return this.alarms.get(alarmId);
  }

  unacknowledgedCritical() {
    let n = 0;
    for (const a of this.alarms.values()) {
      if (a.severity === "critical" && a.state === "raised" && !a.parent_id && !isShelved(a)) n++;
    }
    return n;
  }

  sorted() {
    const shown = [];
    for (const alarm of this.alarms.values()) if (this.matches(alarm)) shown.push(alarm);
    shown.sort((a, b) => (STATE_RANK[a.state] - STATE_RANK[b.state])
      || (SEVERITY_RANK[a.severity] - SEVERITY_RANK[b.severity])
      || String(b.last_seen || "").localeCompare(String(a.last_seen || "")) || b.id - a.id);
    return shown;
  }

  render() {
    const shown = this.sorted();
    const limit = Math.min(shown.length, MAX_SHOWN);
    const keep = new Set();
    let cursor = this.list.firstElementChild;
    for (let k = 0; k < limit; k++) {
      const alarm = shown[k];
      keep.add(alarm.id);
      let el = this.elements.get(alarm.id);
      if (!el) {
        el = this._create(alarm);
        this.elements.set(alarm.id, el);
      } else if (alarm._dirty) {
        this._update(el, alarm);
      }
      alarm._dirty = false;
      if (el !== cursor) this.list.insertBefore(el, cursor);
      else cursor = cursor.nextElementSibling;
    }
    for (const [id, el] of this.elements) {
      if (!keep.has(id)) {
        el.remove();
        this.elements.delete(id);
      }
    }
    const now = Date.now();
    for (const [id, until] of this.flashing) {
      const el = this.elements.get(id);
      if (until < now) {
        this.flashing.delete(id);
        if (el) el.classList.remove("flash");
      } else if (el) el.classList.add("flash");
    }
    this.status.textContent = shown.length === 0 ? t("no_alarms")
      : shown.length > MAX_SHOWN || this.truncated ? t("more_alarms", { n: limit }) : "";
    this.status.hidden = this.status.textContent === "";
  }

  // Language changed: rebuild the items' texts.
  relabel() {
    for (const alarm of this.alarms.values()) alarm._dirty = true;
    this.render();
  }

  _create(alarm) {
    const el = h("li", { class: "alarm", tabindex: "0", dataset: { testid: "alarm-item" } });
    el.addEventListener("click", (event) => {
      if (event.target.closest("button, form, textarea, input")) return;
      this.onSelect(this.alarms.get(Number(el.dataset.alarmId)) || alarm);
    });
    el.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && event.target === el) this.onSelect(this.alarms.get(Number(el.dataset.alarmId)) || alarm);
    });
    el.append(h("div", { class: "alarm-main" }), h("div", { class: "alarm-actions" }), h("div", { class: "alarm-error", role: "alert", hidden: true }));
    this._update(el, alarm);
    return el;
  }

  _update(el, alarm) {
    el.dataset.alarmId = String(alarm.id);
    el.dataset.severity = alarm.severity;
    el.dataset.state = alarm.state;
    el.dataset.asset = alarm.asset_id || "";
    el.className = `alarm sev-${alarm.severity} state-${alarm.state}${this.flashing.has(alarm.id) ? " flash" : ""}`;
    const where = [alarm.asset_id || alarm.source, this.communeName(alarm.commune)].filter(Boolean).join(" · ");
    const main = el.querySelector(".alarm-main");
    main.replaceChildren(
      h("div", { class: "alarm-line" },
        h("span", { class: `sev-badge sev-${alarm.severity}` }, t(`sev_${alarm.severity}`)),
        h("span", { class: "alarm-title" }, alarm.title || alarm.type),
        alarm.count > 1 ? h("span", { class: "alarm-count" }, t("count_times", { n: alarm.count })) : null),
      h("div", { class: "alarm-meta" },
        h("span", null, where),
        h("span", null, formatTime(alarm.last_seen || alarm.raised_at)),
        h("span", { class: `state-badge state-${alarm.state}` }, t(`state_${alarm.state}`)),
        isShelved(alarm) ? h("span", { class: "shelved-badge" }, t("shelved_until", { t: formatTime(alarm.shelved_until) })) : null),
    );
    this._actions(el, alarm);
  }

  _actions(el, alarm) {
    const box = el.querySelector(".alarm-actions");
    const allowed = this.canAct();
    const title = allowed ? null : t("not_allowed");
    const button = (action, label, enabled, tip) => h("button", {
      type: "button", class: `act act-${action}`, dataset: { action }, disabled: !allowed || !enabled,
      title: title || (tip ? t(tip) : null), onclick: (event) => { event.stopPropagation(); this._act(el, action); },
    }, t(label));
    const active = alarm.state === "raised" || alarm.state === "acknowledged";
    box.replaceChildren(
      button("acknowledge", "act_acknowledge", alarm.state === "raised" || alarm.state === "cleared", "act_acknowledge_title"),
      button("clear", "act_clear", active, "act_clear_title"),
      isShelved(alarm) ? button("unshelve", "act_unshelve", true) : button("shelve", "act_shelve", alarm.state !== "closed", "act_shelve_title"),
      button("comment", "act_comment", alarm.state !== "closed"),
      this.onWorkOrder ? h("button", {
        type: "button", class: "act act-work-order", dataset: { action: "work-order" },
        disabled: !this.canOpenOrder() || alarm.state === "closed",
        title: this.canOpenOrder() ? t("act_work_order_title") : t("wo_act_not_allowed"),
        onclick: (event) => { event.stopPropagation(); this._workOrder(el); },
      }, t("act_work_order")) : null,
    );
  }

  async _workOrder(el) {
    const alarm = this.alarms.get(Number(el.dataset.alarmId));
    const error = el.querySelector(".alarm-error");
    error.hidden = true;
    try {
      await this.onWorkOrder(alarm);
    } catch (err) {
      error.textContent = `${t("error")}: ${err.detail || err.message}`;
      error.hidden = false;
    }
  }

  async _act(el, action) {
    const id = Number(el.dataset.alarmId);
    if (action === "acknowledge" || action === "unshelve") {
      await this._send(el, id, action, action === "acknowledge" ? {} : undefined);
      return;
    }
    this._openForm(el, id, action);
  }

  _openForm(el, id, action) {
    for (const open of this.list.querySelectorAll('[data-testid="action-form"]')) open.remove(); // one at a time
    const field = action === "comment"
      ? h("textarea", { name: "text", required: true, maxlength: "2000", rows: "2", "aria-label": t("comment_text"), placeholder: t("comment_text") })
      : h("textarea", { name: "reason", required: true, minlength: "3", maxlength: "500", rows: "2", "aria-label": t("reason"), placeholder: t("reason") });
    const minutes = action === "shelve"
      ? h("label", { class: "minutes" }, t("minutes"), " ", h("input", { name: "minutes", type: "number", min: "1", max: "10080", value: "60", required: true }))
      : null;
    const form = h("form", { class: "action-form", dataset: { testid: "action-form", action } },
      minutes, field,
      h("div", { class: "form-buttons" },
        h("button", { type: "submit", class: "primary" }, t("act_submit")),
        h("button", { type: "button", class: "cancel", onclick: () => { form.remove(); el.focus(); } }, t("act_cancel"))));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const body = action === "comment" ? { text: data.get("text") }
        : action === "shelve" ? { reason: data.get("reason"), minutes: Number(data.get("minutes")) }
          : { reason: data.get("reason") };
      if (await this._send(el, id, action, body)) form.remove();
    });
    form.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.stopPropagation();
        form.remove();
        el.focus();
      }
    });
    el.append(form);
    field.focus();
  }

  async _send(el, id, action, body) {
    const path = action === "comment" ? "comments" : action;
    const error = el.querySelector(".alarm-error");
    error.hidden = true;
    for (const b of el.querySelectorAll("button")) b.disabled = true;
    try {
      const alarm = await api(`/api/v1/alarms/${id}/${path}`, { method: "POST", body });
      const known = this.alarms.get(id);
      const merged = known ? Object.assign(known, alarm) : alarm;
      merged._dirty = true;
      if (merged.state === "closed") this.alarms.delete(id);
      else this.alarms.set(id, merged);
      this.onChange(merged);
      this._update(el, merged);
      this.scheduleRender();
      return true;
    } catch (err) {
      error.textContent = `${t("error")}: ${err.detail || err.message}`;
      error.hidden = false;
      const known = this.alarms.get(id);
      if (known) this._actions(el, known);
      for (const b of el.querySelectorAll(".action-form button")) b.disabled = false;
      return false;
    }
  }
}

// Shelved until a time: once it passes, the alarm is back in sight without waiting for an event.
export function isShelved(alarm) {
  if (alarm.shelved_until) return new Date(alarm.shelved_until).getTime() > Date.now();
  return Boolean(alarm.shelved);
}

function stripUndefined(object) {
  for (const key of Object.keys(object)) if (object[key] === undefined) delete object[key];
  return object;
}
