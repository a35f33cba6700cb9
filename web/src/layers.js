// The deck.gl layers: one ScatterplotLayer per domain fed with its group's binary buffers, a ring
// layer for the assets with an open alarm, and the communes' names. A changed colour or position is
// sent to the GPU by giving deck.gl a new attribute descriptor over the same typed array and bumping
// the layer's updateTriggers; nothing else is recomputed. Below AGGREGATE_BELOW_ZOOM the fixed domains
// are drawn as aggregated cells instead (clusters.js), each with its count labels.

import { ScatterplotLayer, TextLayer } from "@deck.gl/layers";
import { aggregationLevel, CellGrid } from "./clusters.js";
import { SEVERITY_COLORS } from "./palette.js";

const SIZES = {
  lighting: { radius: 5, min: 1.3, max: 5 },
  parking: { radius: 4, min: 1.5, max: 5 },
  transport: { radius: 14, min: 3.5, max: 9 },
  vehicles: { radius: 14, min: 3.5, max: 9 },
};
const DEFAULT_SIZE = { radius: 10, min: 2.5, max: 8 };
const FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif';

export class MapLayers {
  constructor(store, communeLabels) {
    this.store = store;
    this.visible = new Set([...store.domainNames, "alarms", "communes", "interventions"]);
    this.extras = []; // other layer sources drawn on top (the interventions): {layers(visible), dirty}
    this.communeLabels = communeLabels;
    this.alarmData = null;
    this.alarmVersionBuilt = -1;
    this.layerCache = new Map();
    this.selected = null;
    this.level = null; // the zoom level the fixed domains are aggregated at, or null (points)
  }

  // The map's zoom changed: whether the drawing changes (the zoom crossed a whole level below the
  // threshold, or the threshold itself); the cells are rebuilt by the next build().
  setZoom(zoom) {
    const level = aggregationLevel(zoom);
    if (level === this.level) return false;
    this.level = level;
    return true;
  }

  // The aggregated cell drawn under a point, among the visible domains: {lon, lat} or null.
  cellAt(lon, lat, metresPerPixel, slackPx = 4) {
    let best = null;
    for (const group of this.store.groups) {
      if (!group.cells || !this.visible.has(group.name)) continue;
      const hit = group.cells.pick(lon, lat, metresPerPixel, slackPx);
      if (hit && (!best || hit.distance < best.distance)) best = hit;
    }
    return best;
  }

  isVisible(name) {
    return this.visible.has(name);
  }

  setVisible(name, on) {
    if (on) this.visible.add(name);
    else this.visible.delete(name);
  }

  // New descriptors for the buffers written since the last call: deck.gl uploads only those.
  _flush(group) {
    if (group.colorDirty) {
      group.colorDirty = false;
      group.colorVersion++;
      group.data.attributes.getFillColor = { value: group.colors, size: 4, normalized: true };
      this.layerCache.delete(group.name);
    }
    if (group.positionDirty) {
      group.positionDirty = false;
      group.positionVersion++;
      group.data.attributes.getPosition = { value: group.positions, size: 2 };
      this.layerCache.delete(group.name);
    }
  }

  _domainLayer(group) {
    const cached = this.layerCache.get(group.name);
    const visible = this.visible.has(group.name);
    if (cached && cached.props.visible === visible) return cached;
    const size = SIZES[group.name] || DEFAULT_SIZE;
    const layer = new ScatterplotLayer({
      id: `domain-${group.name}`,
      data: group.data,
      visible,
      pickable: false, // picking is done on the CPU over the typed arrays (map.js): no GPU read-back on hover
      radiusUnits: "meters",
      getRadius: size.radius,
      radiusMinPixels: size.min,
      radiusMaxPixels: size.max,
      stroked: false,
      updateTriggers: { getFillColor: group.colorVersion, getPosition: group.positionVersion },
    });
    this.layerCache.set(group.name, layer);
    return layer;
  }

  // The group's cells at the current level (built on a level change; its colours kept up by the store).
  _cells(group) {
    if (!group.cells || group.cells.level !== this.level) group.cells = new CellGrid(this.store, group, this.level);
    const grid = group.cells;
    if (grid.colorDirty) {
      grid.colorDirty = false;
      grid.version++;
      grid.data.attributes.getFillColor = { value: grid.colors, size: 4, normalized: true };
    }
    return grid;
  }

  _cellLayer(group, grid) {
    const key = `cells-${group.name}`;
    const visible = this.visible.has(group.name);
    const cached = this.layerCache.get(key);
    if (cached && cached.props.visible === visible && cached.props.data === grid.data
      && cached.props.updateTriggers.getFillColor === grid.version) return cached;
    const layer = new ScatterplotLayer({
      id: key,
      data: grid.data,
      visible,
      pickable: false, // picked on the CPU too (cellAt)
      radiusUnits: "pixels",
      stroked: true,
      lineWidthUnits: "pixels",
      getLineWidth: 1,
      getLineColor: [11, 16, 22, 220],
      updateTriggers: { getFillColor: grid.version },
    });
    this.layerCache.set(key, layer);
    return layer;
  }

  _countLayer(group, grid) {
    const key = `counts-${group.name}`;
    const visible = this.visible.has(group.name);
    const cached = this.layerCache.get(key);
    if (cached && cached.props.visible === visible && cached.props.data === grid.labels) return cached;
    const layer = new TextLayer({
      id: key,
      data: grid.labels,
      visible,
      getPosition: (d) => d.position,
      getText: (d) => d.text,
      getSize: 10,
      getColor: [241, 245, 249, 255],
      fontFamily: FONT,
      fontWeight: 600,
      characterSet: "0123456789",
      outlineWidth: 2,
      outlineColor: [11, 16, 22, 255],
      fontSettings: { sdf: true },
      pickable: false,
    });
    this.layerCache.set(key, layer);
    return layer;
  }

  _alarmLayer() {
    const store = this.store;
    if (this.alarmVersionBuilt !== store.alarmVersion || !this.alarmData) {
      this.alarmVersionBuilt = store.alarmVersion;
      const list = store.alarmed();
      const positions = new Float32Array(list.length * 2);
      const colors = new Uint8Array(list.length * 4);
      list.forEach((i, k) => {
        const [lon, lat] = store.drawnPosition(i);
        positions[k * 2] = lon;
        positions[k * 2 + 1] = lat;
        const c = SEVERITY_COLORS[store.alarm[i]];
        colors.set([c[0], c[1], c[2], 255], k * 4);
      });
      this.alarmData = { length: list.length, attributes: {
        getPosition: { value: positions, size: 2 }, getLineColor: { value: colors, size: 4, normalized: true } } };
      this.layerCache.delete("alarms");
    }
    const cached = this.layerCache.get("alarms");
    const visible = this.visible.has("alarms");
    if (cached && cached.props.visible === visible) return cached;
    const layer = new ScatterplotLayer({
      id: "open-alarms",
      data: this.alarmData,
      visible,
      pickable: false,
      filled: false,
      stroked: true,
      radiusUnits: "meters",
      getRadius: 28,
      radiusMinPixels: 6,
      radiusMaxPixels: 18,
      lineWidthUnits: "pixels",
      getLineWidth: 2,
      updateTriggers: { getLineColor: this.alarmVersionBuilt, getPosition: this.alarmVersionBuilt },
    });
    this.layerCache.set("alarms", layer);
    return layer;
  }

  _labelLayer() {
    const visible = this.visible.has("communes");
    const cached = this.layerCache.get("communes");
    if (cached && cached.props.visible === visible) return cached;
    const layer = new TextLayer({
      id: "commune-names",
      data: this.communeLabels,
      visible,
      getPosition: (d) => d.position,
      getText: (d) => d.name,
      getSize: 12,
      sizeMinPixels: 10,
      getColor: [203, 213, 225, 200],
      fontFamily: FONT,
      fontWeight: 600,
      characterSet: "auto",
      outlineWidth: 2,
      outlineColor: [11, 16, 22, 255],
      fontSettings: { sdf: true },
      pickable: false,
    });
    this.layerCache.set("communes", layer);
    return layer;
  }

  select(i) {
    this.selected = i;
    this.layerCache.delete("selection");
  }

  _selectionLayer() {
    const [lon, lat] = this.store.drawnPosition(this.selected);
    const cached = this.layerCache.get("selection");
    if (cached && cached.props.data[0][0] === lon && cached.props.data[0][1] === lat) return cached;
    const layer = new ScatterplotLayer({
      id: "selection",
      data: [[lon, lat]],
      getPosition: (d) => d,
      filled: false,
      stroked: true,
      radiusUnits: "pixels",
      getRadius: 13,
      lineWidthUnits: "pixels",
      getLineWidth: 2.5,
      getLineColor: [255, 255, 255, 255],
      pickable: false,
    });
    this.layerCache.set("selection", layer);
    return layer;
  }

  // The layer list for deck.gl: unchanged layers are the same objects (deck.gl skips them at once).
  build() {
    const layers = [this._labelLayer()];
    const counts = [];
    for (const group of this.store.groups) {
      if (group.size === 0) continue;
      this._flush(group);
      if (this.level !== null && !group.moving) {
        const grid = this._cells(group);
        layers.push(this._cellLayer(group, grid));
        counts.push(this._countLayer(group, grid));
      } else {
        group.cells = null; // points: the store stops counting
        layers.push(this._domainLayer(group));
      }
    }
    layers.push(...counts, this._alarmLayer());
    if (this.selected !== null) layers.push(this._selectionLayer());
    for (const extra of this.extras) layers.push(...extra.layers(this.visible));
    return layers;
  }

  // Whether any buffer changed since the last build (the caller then hands deck.gl a new list).
  get dirty() {
    if (this.alarmVersionBuilt !== this.store.alarmVersion) return true;
    if (this.extras.some((extra) => extra.dirty)) return true;
    for (const group of this.store.groups) {
      if (group.colorDirty || group.positionDirty || (group.cells !== null && group.cells.colorDirty)) return true;
    }
    return false;
  }
}
