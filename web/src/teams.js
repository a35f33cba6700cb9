// The field teams, for the coordinators: each team's status, how old its vehicle's last position is
// (a position older than the dispatch limit is not used to recommend it), its open orders and members.

import { api } from "./api.js";
import { h } from "./dom.js";
import { formatDuration, t } from "./i18n.js";

const STALE_S = 120; // the server's default dispatch_stale_after_s: an older position is shown as stale
const REFRESH_MS = 30000;

export function teamStatusLabel(status) {
  const key = `team_${status}`;
  const text = t(key);
  return text === key ? status : text;
}

export class TeamList {
  constructor({ list, status, serviceLabel, onSelect }) {
    this.list = list;
    this.status = status;
    this.serviceLabel = serviceLabel;
    this.onSelect = onSelect;
    this.teams = [];
    this.shown = false;
    this.timer = 0;
    this.loading = null;
    this.service = "";
  }

  show(on) {
    this.shown = on;
    clearInterval(this.timer);
    if (on) {
      this.load();
      this.timer = setInterval(() => this.load(), REFRESH_MS);
    }
  }

  setService(service) {
    this.service = service;
    if (this.shown) this.render();
  }

  async load() {
    if (this.loading) return this.loading;
    this.loading = api("/api/v1/teams").then((data) => {
      this.teams = data.items;
      this.loadedAt = Date.now();
      this.render();
    }).catch((err) => {
      this.status.textContent = `${t("error")}: ${err.detail || err.message}`;
      this.status.hidden = false;
    }).finally(() => { this.loading = null; });
    return this.loading;
  }

  // A team changed (the feed's team.status, an order assigned): read the list again while it is shown.
  changed() {
    if (this.shown) this.load();
  }

  render() {
    if (!this.shown) return;
    const teams = this.teams.filter((team) => !this.service || team.service === this.service);
    this.list.replaceChildren(...teams.map((team) => this._item(team)));
    this.status.textContent = teams.length ? "" : t("no_teams");
    this.status.hidden = teams.length > 0;
  }

  _item(team) {
    const status = team.effective_status || team.status;
    const age = team.position ? team.position.age_s + (Date.now() - this.loadedAt) / 1000 : null;
    const stale = age === null || age > STALE_S;
    const select = () => this.onSelect(team);
    return h("li", { class: `team status-${status}`, tabindex: "0", dataset: { testid: "team-item", teamId: team.id, status },
      onclick: select, onkeydown: (event) => { if (event.key === "Enter") select(); } },
    h("div", { class: "team-line" },
      h("span", { class: "team-name" }, team.name),
      h("span", { class: `team-status status-${status}` }, teamStatusLabel(status))),
    h("div", { class: "team-meta" },
      h("span", null, `${team.id} · ${this.serviceLabel(team.service)}`),
      h("span", { class: stale ? "stale" : null, title: t("team_position_title") },
        age === null ? t("team_no_position") : t("team_position_age", { age: formatDuration(age) })),
      h("span", null, t("team_open_orders", { n: team.open_orders })),
      team.members.length ? h("span", null, team.members.join(", ")) : null));
  }
}
