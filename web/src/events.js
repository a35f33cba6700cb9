// The event feed: the latest journal entries as they arrive (alarms, device events, connectivity,
// operators' actions), newest first, under the same filters as the alarms.

import { h, perFrame } from "./dom.js";
import { formatTime, t } from "./i18n.js";

const KEEP = 300;
const SEVERITY_RANK = { critical: 1, major: 2, minor: 3, warning: 4 };

export class EventPanel {
  constructor({ list, status, communeName, onSelect }) {
    this.list = list;
    this.status = status;
    this.communeName = communeName;
    this.onSelect = onSelect;
    this.entries = [];
    this.filters = { domain: "", commune: "", severity: "" };
    this.active = false; // drawn only while its tab is shown: a busy city adds many entries a second
    this.scheduleRender = perFrame(() => this.render());
  }

  show(active) {
    this.active = active;
    if (active) this.render();
  }

  matches(entry) {
    const f = this.filters;
    if (f.domain && entry.domain !== f.domain) return false;
    if (f.commune && entry.commune !== f.commune) return false;
    if (f.severity && (!entry.severity || SEVERITY_RANK[entry.severity] > SEVERITY_RANK[f.severity])) return false;
    return true;
  }

  setFilters(filters) {
    Object.assign(this.filters, filters);
    this.scheduleRender();
  }

  add(entries) {
    for (const entry of entries) this.entries.push(entry);
    if (this.entries.length > KEEP * 2) this.entries.splice(0, this.entries.length - KEEP);
    this.scheduleRender();
  }

  render() {
    if (!this.active) return;
    const shown = [];
    for (let k = this.entries.length - 1; k >= 0 && shown.length < KEEP; k--) {
      if (this.matches(this.entries[k])) shown.push(this.entries[k]);
    }
    this.list.replaceChildren(...shown.map((entry) => h("li", {
      class: `event sev-${entry.severity || "none"}`, tabindex: entry.asset_id ? "0" : null,
      dataset: { testid: "event-item", asset: entry.asset_id || "", type: entry.type },
      onclick: () => this.onSelect(entry),
      onkeydown: (event) => { if (event.key === "Enter") this.onSelect(entry); },
    },
    h("span", { class: "event-time" }, formatTime(entry.at)),
    entry.severity ? h("span", { class: `sev-badge sev-${entry.severity}` }, t(`sev_${entry.severity}`)) : null,
    h("span", { class: "event-summary" }, entry.summary),
    entry.commune ? h("span", { class: "event-commune" }, this.communeName(entry.commune)) : null)));
    this.status.textContent = shown.length ? "" : t("no_events");
    this.status.hidden = shown.length > 0;
  }
}
