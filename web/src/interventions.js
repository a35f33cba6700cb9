// The open interventions the control room shows: the open work orders and the open citizens'
// requests, loaded once and kept current from the live feed. The feed's entries (domain
// "interventions": workorder.*, request.*, team.status) say which order or request changed; the page
// reads that one again (a handful a minute in a busy city) rather than rebuilding it from the entry.

import { allPages, api, ApiError } from "./api.js";
import { perFrame } from "./dom.js";

export const PRIORITIES = ["urgent", "high", "normal", "low"];
export const ORDER_STATES = ["new", "assigned", "en_route", "on_site", "done", "cancelled"];
export const OPEN_STATES = ["new", "assigned", "en_route", "on_site"];
const REFRESH_DELAY_MS = 250;
const CLOCK_MS = 30000; // an order becomes overdue as time passes, without any event

// Which SLA deadlines an order misses now (the server's rule, workorders/lifecycle.py).
export function overdueOf(order, now = Date.now()) {
  if (order.state === "cancelled") return { response: false, resolution: false };
  const onSite = order.on_site_at || (order.state === "done" ? order.done_at : null);
  const at = (iso) => (iso ? new Date(iso).getTime() : now);
  return {
    response: at(onSite) > new Date(order.sla_response_due).getTime(),
    resolution: at(order.done_at) > new Date(order.sla_resolution_due).getTime(),
  };
}

export function isOverdue(order, now) {
  const o = overdueOf(order, now);
  return o.response || o.resolution;
}

// The deadline that matters next: being on site, then being done.
export function nextDue(order) {
  return order.on_site_at || order.done_at ? order.sla_resolution_due : order.sla_response_due;
}

export class InterventionStore {
  constructor({ onChange }) {
    this.onChange = onChange; // (what: Set of "orders" | "requests" | "teams", ids) after a change
    this.orders = new Map();
    this.requests = new Map();
    this.readable = { orders: true, requests: true };
    this.version = 0;
    this.pendingOrders = new Set();
    this.pendingRequests = new Set();
    this.teamsChanged = false;
    this.timer = 0;
    this.notify = perFrame(() => this._notify());
    this.changed = new Set();
    this.changedOrders = new Set();
    this.clock = setInterval(() => { this.version++; this.changed.add("clock"); this.notify(); }, CLOCK_MS);
  }

  async load() {
    const [orders, requests] = await Promise.all([
      allPages("/api/v1/work-orders", { state: "open", limit: 500 }).catch((err) => this._unreadable("orders", err)),
      allPages("/api/v1/requests", { status: "open", limit: 500 }).catch((err) => this._unreadable("requests", err)),
    ]);
    this.orders.clear();
    this.requests.clear();
    for (const order of orders?.items || []) this.orders.set(order.id, order);
    for (const request of requests?.items || []) this.requests.set(request.id, request);
    this._changed("orders");
    this._changed("requests");
  }

  _unreadable(what, err) {
    if (err instanceof ApiError && (err.status === 403 || err.status === 503)) {
      this.readable[what] = false; // this role does not read them: the layer stays empty
      return null;
    }
    throw err;
  }

  _changed(what, id) {
    this.version++;
    this.changed.add(what);
    if (what === "orders" && id !== undefined) this.changedOrders.add(id);
    this.notify();
  }

  _notify() {
    const what = this.changed;
    const ids = this.changedOrders;
    this.changed = new Set();
    this.changedOrders = new Set();
    this.onChange(what, ids);
  }

  // Entries from the live feed, in id order.
  applyEntries(entries) {
    let any = false;
    for (const entry of entries) {
      if (entry.domain !== "interventions") continue;
      const data = entry.data || {};
      if (entry.type.startsWith("workorder.") && data.work_order_id != null && this.readable.orders) {
        this.pendingOrders.add(data.work_order_id);
        any = true;
      } else if (entry.type.startsWith("request.") && data.request_id != null && this.readable.requests) {
        this.pendingRequests.add(data.request_id);
        any = true;
      } else if (entry.type.startsWith("team.")) {
        this.teamsChanged = true;
        any = true;
      }
    }
    if (any && !this.timer) this.timer = setTimeout(() => this._refresh(), REFRESH_DELAY_MS);
  }

  async _refresh() {
    this.timer = 0;
    const orders = [...this.pendingOrders];
    const requests = [...this.pendingRequests];
    this.pendingOrders.clear();
    this.pendingRequests.clear();
    if (this.teamsChanged) {
      this.teamsChanged = false;
      this.changed.add("teams");
      this.notify();
    }
    await Promise.all([...orders.map((id) => this.refreshOrder(id)), ...requests.map((id) => this.refreshRequest(id))]);
  }

  // Read one order again; an order no longer open leaves the map. Returns it (null: gone from sight).
  async refreshOrder(id) {
    try {
      const order = await api(`/api/v1/work-orders/${id}`);
      this.putOrder(order);
      return order;
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        this.orders.delete(id);
        this._changed("orders", id);
        return null;
      }
      return undefined; // the feed will tell again; a failed read is not a deletion
    }
  }

  // An order as the API just gave it (a read, an action's answer).
  putOrder(order) {
    if (OPEN_STATES.includes(order.state)) {
      const { requests, photos, history, ...summary } = order; // the map needs the summary only
      this.orders.set(order.id, { ...this.orders.get(order.id), ...summary });
    } else {
      this.orders.delete(order.id);
    }
    this._changed("orders", order.id);
  }

  async refreshRequest(id) {
    try {
      const request = await api(`/api/v1/requests/${id}`);
      if (request.status === "open") {
        const { reports_detail, photos, history, work_order, ...summary } = request;
        this.requests.set(id, summary);
      } else {
        this.requests.delete(id);
      }
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) return;
      this.requests.delete(id);
    }
    this._changed("requests");
  }

  ordersOfAsset(assetId) {
    return [...this.orders.values()].filter((o) => o.asset_id === assetId);
  }

  // The open orders, filtered, most pressing first.
  sortedOrders(filter = () => true) {
    const now = Date.now();
    const rank = (p) => PRIORITIES.indexOf(p);
    return [...this.orders.values()].filter(filter).sort((a, b) => (isOverdue(b, now) - isOverdue(a, now))
      || (rank(a.priority) - rank(b.priority)) || String(nextDue(a)).localeCompare(String(nextDue(b))) || a.id - b.id);
  }

  // The nearest order or request to a point within `radiusM` metres: {kind, item} or null.
  nearest(lon, lat, radiusM) {
    const cos = Math.cos((lat * Math.PI) / 180);
    let best = null;
    let bestD = radiusM * radiusM;
    const visit = (kind, item) => {
      const dx = (item.lon - lon) * 111320 * cos;
      const dy = (item.lat - lat) * 110540;
      const d = dx * dx + dy * dy;
      if (d <= bestD) {
        bestD = d;
        best = { kind, item };
      }
    };
    for (const r of this.requests.values()) visit("request", r);
    for (const o of this.orders.values()) visit("order", o); // orders win a tie: they are drawn on top
    return best;
  }
}
