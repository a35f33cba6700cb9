// The "interventions" layer of the map: open work orders as diamonds coloured by priority (an overdue
// one circled in red), open citizens' requests as small violet triangles, the selected order circled
// in white, and the switchboard's call location with the nearby requests it would be linked to.
// A few hundred items at most: their arrays are rebuilt when the store's version changes.

import { ScatterplotLayer, TextLayer } from "@deck.gl/layers";
import { isOverdue } from "./interventions.js";

export const PRIORITY_COLORS = {
  urgent: [255, 69, 120], high: [255, 159, 10], normal: [100, 210, 255], low: [174, 174, 186],
};
export const REQUEST_COLOR = [191, 90, 242];
export const OVERDUE_COLOR = [255, 59, 48];
const ORDER_GLYPH = "◆";
const REQUEST_GLYPH = "▲";
const FONT = 'system-ui, "DejaVu Sans", "Segoe UI Symbol", sans-serif';

export class InterventionLayers {
  constructor(store) {
    this.store = store;
    this.builtVersion = -1;
    this.cache = null;
    this.selectedOrder = null; // {lon, lat} of the order shown in the order sheet
    this.call = null; // {lon, lat, nearby: [{lon, lat}]} while the switchboard places a call
    this.extraVersion = 0;
    this.builtExtra = -1;
    this.built = null;
    this.builtShown = null;
  }

  get dirty() {
    return this.builtVersion !== this.store.version || this.builtExtra !== this.extraVersion;
  }

  selectOrder(order) {
    this.selectedOrder = order ? { lon: order.lon, lat: order.lat } : null;
    this.extraVersion++;
  }

  setCall(call) {
    this.call = call;
    this.extraVersion++;
  }

  _data() {
    if (this.cache && this.builtVersion === this.store.version) return this.cache;
    this.builtVersion = this.store.version;
    const now = Date.now();
    const orders = [...this.store.orders.values()];
    const requests = [...this.store.requests.values()].filter((r) => typeof r.lon === "number");
    this.cache = {
      orders: orders.map((o) => ({ position: [o.lon, o.lat], color: PRIORITY_COLORS[o.priority] || PRIORITY_COLORS.normal })),
      overdue: orders.filter((o) => isOverdue(o, now)).map((o) => [o.lon, o.lat]),
      requests: requests.map((r) => [r.lon, r.lat]),
      version: this.builtVersion,
    };
    return this.cache;
  }

  // The deck.gl layers, drawn above the assets (the same objects while nothing changed: deck.gl skips them).
  layers(visible) {
    const shown = visible.has("interventions");
    if (!this.dirty && this.built && this.builtShown === shown) return this.built;
    this.builtExtra = this.extraVersion;
    this.builtShown = shown;
    const data = this._data();
    const v = data.version;
    const out = [
      new TextLayer({
        id: "intervention-requests", data: data.requests, visible: shown, getPosition: (d) => d, getText: () => REQUEST_GLYPH,
        getSize: 13, getColor: [...REQUEST_COLOR, 255], fontFamily: FONT, characterSet: [REQUEST_GLYPH, ORDER_GLYPH],
        outlineWidth: 3, outlineColor: [11, 16, 22, 255], fontSettings: { sdf: true }, pickable: false,
        getPixelOffset: [9, -9], updateTriggers: { getPosition: v },
      }),
      new ScatterplotLayer({
        id: "intervention-overdue", data: data.overdue, visible: shown, getPosition: (d) => d, filled: false, stroked: true,
        radiusUnits: "pixels", getRadius: 11, lineWidthUnits: "pixels", getLineWidth: 2.5,
        getLineColor: [...OVERDUE_COLOR, 255], pickable: false, updateTriggers: { getPosition: v },
      }),
      new TextLayer({
        id: "intervention-orders", data: data.orders, visible: shown, getPosition: (d) => d.position, getText: () => ORDER_GLYPH,
        getSize: 17, getColor: (d) => [...d.color, 255], fontFamily: FONT, characterSet: [REQUEST_GLYPH, ORDER_GLYPH],
        outlineWidth: 3, outlineColor: [11, 16, 22, 255], fontSettings: { sdf: true }, pickable: false,
        updateTriggers: { getPosition: v, getColor: v },
      }),
    ];
    if (this.selectedOrder) {
      out.push(new ScatterplotLayer({
        id: "intervention-selected", data: [[this.selectedOrder.lon, this.selectedOrder.lat]], getPosition: (d) => d,
        filled: false, stroked: true, radiusUnits: "pixels", getRadius: 15, lineWidthUnits: "pixels", getLineWidth: 2.5,
        getLineColor: [255, 255, 255, 255], pickable: false, updateTriggers: { getPosition: this.extraVersion },
      }));
    }
    if (this.call) {
      out.push(new ScatterplotLayer({
        id: "call-nearby", data: this.call.nearby || [], getPosition: (d) => [d.lon, d.lat], filled: false, stroked: true,
        radiusUnits: "pixels", getRadius: 12, lineWidthUnits: "pixels", getLineWidth: 2, getLineColor: [...REQUEST_COLOR, 255],
        pickable: false, updateTriggers: { getPosition: this.extraVersion },
      }), new ScatterplotLayer({
        id: "call-location", data: [[this.call.lon, this.call.lat]], getPosition: (d) => d, radiusUnits: "pixels",
        getRadius: 7, getFillColor: [255, 214, 10, 255], stroked: true, lineWidthUnits: "pixels", getLineWidth: 3,
        getLineColor: [11, 16, 22, 255], pickable: false, updateTriggers: { getPosition: this.extraVersion },
      }));
    }
    this.built = out;
    return out;
  }
}
