// The "Interventions" tab beside the map: the work orders under filters (service, state, priority,
// overdue only), the most pressing first and the overdue ones marked; and the teams. The open orders
// come from the live store; done or cancelled ones are read from the API when asked for.

import { api, query } from "./api.js";
import { h, perFrame } from "./dom.js";
import { formatTime, t } from "./i18n.js";
import { isOverdue, nextDue, OPEN_STATES, ORDER_STATES, PRIORITIES } from "./interventions.js";
import { TeamList } from "./teams.js";

const MAX_SHOWN = 300;

export function stateLabel(state) {
  return t(`wo_state_${state}`);
}

export function orderItem(order, { serviceLabel, communeName, onSelect }) {
  const overdue = isOverdue(order);
  const select = () => onSelect(order);
  return h("li", {
    class: `order prio-${order.priority}${overdue ? " overdue" : ""}`, tabindex: "0",
    dataset: { testid: "order-item", orderId: String(order.id), state: order.state, priority: order.priority,
      overdue: String(overdue) },
    onclick: select, onkeydown: (event) => { if (event.key === "Enter" && event.target === event.currentTarget) select(); },
  },
  h("div", { class: "order-line" },
    h("span", { class: `prio-badge prio-${order.priority}` }, t(`prio_${order.priority}`)),
    h("span", { class: "order-title" }, `#${order.id} ${order.title}`),
    overdue ? h("span", { class: "overdue-badge" }, t("wo_overdue")) : null),
  h("div", { class: "order-meta" },
    h("span", { class: `wo-state wo-state-${order.state}` }, stateLabel(order.state)),
    h("span", null, serviceLabel(order.service)),
    order.team_id ? h("span", null, `${t("wo_team")} ${order.team_id}`) : h("span", { class: "muted" }, t("wo_no_team")),
    order.commune ? h("span", null, communeName(order.commune)) : null,
    order.open !== false ? h("span", { class: overdue ? "late" : null }, t("wo_due", { t: formatTime(nextDue(order)) })) : null));
}

export class OrderPanel {
  constructor({ root, store, services, serviceLabel, communeName, onSelect, onTeam }) {
    this.root = root;
    this.store = store;
    this.services = services; // () => [{id, label}]
    this.serviceLabel = serviceLabel;
    this.communeName = communeName;
    this.onSelect = onSelect;
    this.filters = { service: "", state: "open", priority: "", overdue: false };
    this.view = "orders";
    this.active = false;
    this.fetched = null; // orders read from the API for a state the store does not keep
    this.fetchToken = 0;
    this.scheduleRender = perFrame(() => this.render());
    this._build(onTeam);
  }

  _build(onTeam) {
    const select = (id, label) => h("label", null, h("span", null, label), h("select", { id }));
    this.viewButtons = ["orders", "teams"].map((view) => h("button", {
      type: "button", class: "segment", "aria-pressed": String(view === this.view), dataset: { view, testid: `view-${view}` },
      onclick: () => this.setView(view) }, t(`view_${view}`)));
    this.filterBox = h("div", { class: "filters order-filters" },
      select("o-service", t("wo_filter_service")), select("o-state", t("wo_filter_state")),
      select("o-priority", t("wo_filter_priority")),
      h("label", { class: "check" }, h("input", { type: "checkbox", id: "o-overdue" }), " ", h("span", null, t("wo_filter_overdue"))));
    this.listStatus = h("p", { class: "muted list-status", hidden: true });
    this.list = h("ul", { class: "order-list", dataset: { testid: "order-list" }, "aria-label": t("view_orders") });
    this.teamStatus = h("p", { class: "muted list-status", hidden: true });
    this.teamList = h("ul", { class: "team-list", dataset: { testid: "team-list" }, "aria-label": t("view_teams"), hidden: true });
    this.teams = new TeamList({ list: this.teamList, status: this.teamStatus, serviceLabel: this.serviceLabel, onSelect: onTeam });
    this.root.replaceChildren(h("div", { class: "segments", role: "group" }, this.viewButtons), this.filterBox,
      h("div", { class: "list-scroll" }, this.listStatus, this.list, this.teamStatus, this.teamList));
    this.fillFilters();
    for (const id of ["o-service", "o-state", "o-priority", "o-overdue"]) {
      this.root.querySelector(`#${id}`).addEventListener("change", () => this._filtersChanged());
    }
  }

  fillFilters() {
    const service = this.root.querySelector("#o-service");
    const state = this.root.querySelector("#o-state");
    const priority = this.root.querySelector("#o-priority");
    service.replaceChildren(new Option(t("filter_all"), ""), ...this.services().map((s) => new Option(this.serviceLabel(s.id), s.id)));
    state.replaceChildren(new Option(t("wo_state_open"), "open"), ...ORDER_STATES.map((s) => new Option(stateLabel(s), s)),
      new Option(t("filter_all"), "all"));
    priority.replaceChildren(new Option(t("filter_all"), ""), ...PRIORITIES.map((p) => new Option(t(`prio_${p}`), p)));
    service.value = this.filters.service;
    state.value = this.filters.state;
    priority.value = this.filters.priority;
  }

  relabel() {
    this.fillFilters();
    const labels = this.root.querySelectorAll(".order-filters label > span");
    ["wo_filter_service", "wo_filter_state", "wo_filter_priority", "wo_filter_overdue"].forEach((key, k) => { labels[k].textContent = t(key); });
    for (const button of this.viewButtons) button.textContent = t(`view_${button.dataset.view}`);
    this.render();
    this.teams.render();
  }

  _filtersChanged() {
    this.filters = {
      service: this.root.querySelector("#o-service").value, state: this.root.querySelector("#o-state").value,
      priority: this.root.querySelector("#o-priority").value, overdue: this.root.querySelector("#o-overdue").checked,
    };
    this.teams.setService(this.filters.service);
    this.fetched = null;
    if (this._fromStore()) this.render();
    else this._fetch();
  }

  _fromStore() {
    return this.filters.state === "open" || OPEN_STATES.includes(this.filters.state);
  }

  async _fetch() {
    const token = ++this.fetchToken;
    const f = this.filters;
    this.listStatus.textContent = t("sheet_loading");
    this.listStatus.hidden = false;
    try {
      const data = await api(`/api/v1/work-orders${query({ state: f.state === "all" ? "" : f.state, service: f.service,
        priority: f.priority, overdue: f.overdue ? "true" : "", limit: 200 })}`);
      if (token !== this.fetchToken) return;
      this.fetched = data.items;
      this.render();
    } catch (err) {
      if (token !== this.fetchToken) return;
      this.listStatus.textContent = `${t("error")}: ${err.detail || err.message}`;
    }
  }

  setView(view) {
    this.view = view;
    for (const button of this.viewButtons) button.setAttribute("aria-pressed", String(button.dataset.view === view));
    this.filterBox.querySelector("#o-state").closest("label").hidden = view === "teams";
    this.filterBox.querySelector("#o-priority").closest("label").hidden = view === "teams";
    this.filterBox.querySelector("#o-overdue").closest("label").hidden = view === "teams";
    this.list.hidden = view !== "orders";
    this.listStatus.hidden = view !== "orders" || !this.listStatus.textContent;
    this.teamList.hidden = view !== "teams";
    this.teamStatus.hidden = view !== "teams" || !this.teamStatus.textContent;
    this.teams.show(this.active && view === "teams");
    if (view === "orders") this.render();
  }

  show(active) {
    this.active = active;
    this.setView(this.view);
  }

  // The store changed (orders, requests, teams, or the clock).
  changed(what) {
    if (what.has("teams") || what.has("orders")) this.teams.changed();
    if (!this._fromStore() && what.has("orders")) {
      clearTimeout(this.refetch);
      this.refetch = setTimeout(() => this._fetch(), 1000);
    }
    this.scheduleRender();
  }

  _matches(order) {
    const f = this.filters;
    if (f.service && order.service !== f.service) return false;
    if (f.priority && order.priority !== f.priority) return false;
    if (f.state !== "open" && f.state !== "all" && order.state !== f.state) return false;
    if (f.overdue && !isOverdue(order)) return false;
    return true;
  }

  render() {
    if (!this.active || this.view !== "orders") return;
    let orders;
    if (this._fromStore()) {
      orders = this.store.sortedOrders((o) => this._matches(o));
    } else if (this.fetched) {
      orders = this.fetched.filter((o) => this._matches(o));
    } else {
      return;
    }
    const focused = document.activeElement && this.list.contains(document.activeElement)
      ? document.activeElement.closest('[data-testid="order-item"]')?.dataset.orderId : null;
    const items = orders.slice(0, MAX_SHOWN).map((order) => orderItem(order, this));
    this.list.replaceChildren(...items);
    if (focused) this.list.querySelector(`[data-order-id="${focused}"]`)?.focus();
    const unreadable = !this.store.readable.orders;
    this.listStatus.textContent = unreadable ? t("wo_not_allowed") : orders.length === 0 ? t("wo_none")
      : orders.length > MAX_SHOWN ? t("more_alarms", { n: MAX_SHOWN }) : "";
    this.listStatus.hidden = this.listStatus.textContent === "";
  }
}
