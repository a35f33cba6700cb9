// The interventions in the control room, wired together: the live store of open work orders and
// requests and its map layer, the "Interventions" tab (orders, teams), the work-order sheet, the
// switchboard's call form, and the links from alarms and asset sheets to work orders.

import { api } from "./api.js";
import { $ } from "./dom.js";
import { lang, t } from "./i18n.js";
import { InterventionLayers } from "./intervention-layers.js";
import { InterventionStore } from "./interventions.js";
import { categoryNamer, OrderSheet } from "./order-sheet.js";
import { Switchboard } from "./switchboard.js";
import { OrderPanel } from "./work-orders.js";

// As the API decides (auth/roles.py): who opens work orders, who logs calls.
const ORDER_CREATORS = new Set(["admin", "supervisor", "operator", "service_coordinator"]);
const REQUEST_TAKERS = new Set(["admin", "supervisor", "operator", "service_coordinator", "switchboard"]);

// The store and its layer exist before the map's layers are built (they are one of its layer sources).
export function createInterventionStore(app) {
  app.interventions = new InterventionStore({ onChange: (what, ids) => app.desk && app.desk.changed(what, ids) });
  app.interventionLayers = new InterventionLayers(app.interventions);
  app.extraLayers = [app.interventionLayers];
}

export class InterventionDesk {
  constructor(app, { scheduleCommit, sheetWidth, communeName, openSheet, closeSheet }) {
    this.app = app;
    this.scheduleCommit = scheduleCommit;
    this.sheetWidth = sheetWidth;
    this.openSheet = openSheet;
    this.closeSheet = closeSheet;
    this.services = [];
    this.categories = [];
    const role = () => app.user.role;
    this.canOpenOrder = () => ORDER_CREATORS.has(role());
    this.canTakeCalls = () => REQUEST_TAKERS.has(role());
    this.serviceLabel = (id) => {
      const key = `service_${id}`;
      const text = t(key);
      if (text !== key) return text;
      return this.services.find((s) => s.id === id)?.label || id;
    };
    this.categoryName = categoryNamer(() => this.categories);
    this.orderSheet = new OrderSheet({
      root: $("#order-sheet"), store: app.interventions, user: () => app.user, serviceLabel: this.serviceLabel, communeName,
      categoryName: (code) => this.categoryName(code),
      onClose: () => { app.interventionLayers.selectOrder(null); scheduleCommit(); },
      onOpenAsset: (assetId) => this.openSheet(assetId),
      onFly: (order) => this.flyToOrder(order),
    });
    this.panel = new OrderPanel({
      root: $("#orders-panel"), store: app.interventions, services: () => this.services, serviceLabel: this.serviceLabel,
      communeName, onSelect: (order) => this.openOrder(order.id),
      onTeam: (team) => { if (team.position && app.map) app.map.flyTo(team.position.lon, team.position.lat, 15, this._inset()); },
    });
    this.switchboard = new Switchboard({
      root: $("#call-panel"),
      onLocation: (call) => { app.interventionLayers.setCall(call); scheduleCommit(); },
      onSaved: (request) => { if (request.work_order_id) app.interventions.refreshOrder(request.work_order_id); },
      flyTo: (lon, lat) => { if (app.map) app.map.flyTo(lon, lat, 17, 0); },
    });
    const toggle = $('[data-testid="call-toggle"]');
    toggle.hidden = !this.canTakeCalls();
    toggle.addEventListener("click", () => this.toggleCall());
  }

  // What the catalogue gives: the city's services (filters, labels) and the request categories.
  async load() {
    const [services, categories] = await Promise.all([
      api("/api/v1/services").catch(() => []),
      api("/api/v1/requests/services").then((d) => d.services).catch(() => []), // names of the categories
    ]);
    this.services = services;
    this.categories = categories;
    if (this.canTakeCalls() && categories.length) {
      this.switchboard.categories = categories;
      this.switchboard._fillCategories();
    }
    this.panel.fillFilters();
    await this.app.interventions.load();
    if (this.app.user.role === "switchboard") this.switchboard.open(); // the switchboard's desk is the call form
  }

  get callOpen() {
    return this.switchboard.isOpen;
  }

  toggleCall() {
    if (!this.canTakeCalls()) return;
    if (!this.switchboard.isOpen) {
      // The call form covers the map's left side: the sheets on its right would leave no map to click on.
      if (this.orderSheet.isOpen) this.orderSheet.close();
      if (this.app.sheet.isOpen) this.closeSheet();
    }
    this.switchboard.toggle();
  }

  // "n": a new call (the form opens, or its first field takes the focus).
  newCall() {
    if (!this.canTakeCalls()) return;
    if (this.switchboard.isOpen) this.switchboard.focusFirst();
    else this.toggleCall();
  }

  _inset() {
    return this.orderSheet.isOpen || this.app.sheet.isOpen ? this.sheetWidth() : 0;
  }

  flyToOrder(order) {
    this.app.interventionLayers.selectOrder(order);
    this.scheduleCommit();
    if (this.app.map && typeof order.lon === "number") this.app.map.flyTo(order.lon, order.lat, 16, this.sheetWidth());
  }

  openOrder(orderId, options) {
    if (this.app.sheet.isOpen) this.closeSheet();
    return this.orderSheet.open(orderId, options);
  }

  // The alarm's work order (the open one, or a new one), opened in the sheet.
  async workOrderFromAlarm(alarm) {
    const { status, data } = await api(`/api/v1/alarms/${alarm.id}/work-order`, { method: "POST", withStatus: true });
    this.app.interventions.putOrder(data);
    return this.openOrder(data.id, { notice: t(status === 201 ? "wo_created_from_alarm" : "wo_existing_for_alarm", { id: data.id }) });
  }

  // A click on the map: the switchboard places its call; otherwise an order (or a request's order) under
  // the pointer opens. Returns whether the click was used.
  click(lngLat, radiusM) {
    if (this.switchboard.isOpen) {
      this.switchboard.placeAt(lngLat);
      return true;
    }
    if (!this.app.layers.isVisible("interventions")) return false;
    const hit = this.app.interventions.nearest(lngLat.lng, lngLat.lat, radiusM);
    if (!hit) return false;
    const orderId = hit.kind === "order" ? hit.item.id : hit.item.work_order_id;
    if (!orderId) return false;
    this.openOrder(orderId);
    return true;
  }

  applyEntries(entries) {
    this.app.interventions.applyEntries(entries);
  }

  changed(what, ids) {
    this.scheduleCommit();
    this.panel.changed(what);
    this.orderSheet.changed(ids);
    if (this.app.sheet.isOpen) this.app.sheet.refreshInterventions();
    const n = this.app.interventions.orders.size;
    $("#orders-count").textContent = n ? String(n) : "";
    const count = document.querySelector('[data-count-for="interventions"]');
    if (count) count.textContent = String(n + this.app.interventions.requests.size);
  }

  relabel() {
    this.panel.relabel();
    this.switchboard.relabel();
    if (this.orderSheet.isOpen) this.orderSheet.render();
    document.documentElement.lang = lang();
  }
}
