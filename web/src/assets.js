// Every asset of the map in typed arrays, one slot per asset, never one object per asset: a 1 Hz
// update of 40,000 assets touches a few bytes per changed asset. Assets are grouped by domain (one
// map layer each); each group owns its position and colour buffers, which deck.gl uploads as they
// are (binary attributes).

import { category } from "./clusters.js";
import { paint } from "./palette.js";

export const KNOWN_DOMAINS = ["lighting", "traffic", "transport", "vehicles", "access", "information", "parking",
  "environment", "public_safety"];
export const MOVING_DOMAINS = new Set(["transport", "vehicles"]);
export const STATE = { online: 0, offline: 1, unreachable: 2, never: 3 };
export const SEVERITY = { none: 0, critical: 1, major: 2, minor: 3, warning: 4 };
export const SEVERITY_NAMES = ["none", "critical", "major", "minor", "warning"];

// Telemetry that changes how an online asset is drawn: an unlit street light, a free parking bay.
const IDLE_RULES = {
  street_light: (c) => (c.power_state === undefined ? -1 : c.power_state === "off" ? 1 : 0),
  parking_sensor: (c) => (c.occupied === undefined ? -1 : c.occupied ? 0 : 1),
};

export class AssetStore {
  constructor(snapshot) {
    const n = snapshot.count;
    this.count = n;
    this.ids = snapshot.ids;
    this.kinds = snapshot.kinds;
    this.domainNames = [...KNOWN_DOMAINS];
    for (const d of snapshot.domains) if (!this.domainNames.includes(d)) this.domainNames.push(d);
    const kindDomain = Uint8Array.from(snapshot.domains, (d) => this.domainNames.indexOf(d));
    this.kindIdle = snapshot.kinds.map((k) => IDLE_RULES[k] || null);
    this.index = new Map();
    this.kind = Uint8Array.from(snapshot.kind);
    this.domain = new Uint8Array(n);
    this.state = Uint8Array.from(snapshot.state);
    this.alarm = Uint8Array.from(snapshot.alarm);
    this.idle = new Uint8Array(n);
    this.lon = Float64Array.from(snapshot.lon);
    this.lat = Float64Array.from(snapshot.lat);
    this.local = new Uint32Array(n);
    const sizes = new Uint32Array(this.domainNames.length);
    for (let i = 0; i < n; i++) {
      this.index.set(this.ids[i], i);
      const d = kindDomain[this.kind[i]];
      this.domain[i] = d;
      this.local[i] = sizes[d]++;
    }
    this.groups = this.domainNames.map((name, d) => {
      const size = sizes[d];
      const group = {
        name, index: d, size, moving: MOVING_DOMAINS.has(name), members: new Uint32Array(size),
        positions: new Float32Array(size * 2), colors: new Uint8Array(size * 4),
        colorVersion: 0, positionVersion: 0, colorDirty: false, positionDirty: false,
        cells: null, // its CellGrid while the map aggregates (layers.js)
      };
      group.data = { length: size, attributes: {
        getPosition: { value: group.positions, size: 2 }, getFillColor: { value: group.colors, size: 4, normalized: true } } };
      return group;
    });
    for (let i = 0; i < n; i++) {
      const g = this.groups[this.domain[i]];
      const o = this.local[i];
      g.members[o] = i;
      g.positions[o * 2] = this.lon[i];
      g.positions[o * 2 + 1] = this.lat[i];
      paint(this, i);
    }
    this.alarmVersion = 0;
  }

  indexOf(assetId) {
    return this.index.get(assetId);
  }

  group(i) {
    return this.groups[this.domain[i]];
  }

  kindOf(i) {
    return this.kinds[this.kind[i]];
  }

  domainOf(i) {
    return this.domainNames[this.domain[i]];
  }

  setState(i, state) {
    if (this.state[i] === state) return false;
    this.state[i] = state;
    this.repaint(i);
    return true;
  }

  setAlarm(i, severity) {
    if (this.alarm[i] === severity) return false;
    this.alarm[i] = severity;
    this.repaint(i);
    this.alarmVersion++;
    return true;
  }

  // A twin delta: the asset reported (so it is online), and some telemetry may change its look.
  applyChanged(i, changed) {
    let repaint = false;
    if (this.state[i] !== 0) {
      this.state[i] = 0;
      repaint = true;
    }
    const rule = this.kindIdle[this.kind[i]];
    if (rule !== null) {
      const idle = rule(changed);
      if (idle >= 0 && idle !== this.idle[i]) {
        this.idle[i] = idle;
        repaint = true;
      }
    }
    if (repaint) this.repaint(i);
    return repaint;
  }

  // Asset i's look changed: its point's colour, and its count in its cell when the map aggregates.
  repaint(i) {
    paint(this, i);
    const cells = this.groups[this.domain[i]].cells;
    if (cells !== null) cells.touch(this.local[i], category(this, i));
  }

  // Where the map draws the asset now (a vehicle between two reports is somewhere in between).
  drawnPosition(i) {
    const g = this.group(i);
    const o = this.local[i] * 2;
    return [g.positions[o], g.positions[o + 1]];
  }

  setPosition(i, lon, lat) {
    this.lon[i] = lon;
    this.lat[i] = lat;
  }

  // The asset nearest a point within maxMetres among the visible domains, or -1.
  nearest(lon, lat, maxMetres, visible) {
    const kx = 111320 * Math.cos((lat * Math.PI) / 180);
    const ky = 110540;
    let best = -1;
    let bestD = maxMetres * maxMetres;
    for (const g of this.groups) {
      if (!visible(g.name)) continue;
      const p = g.positions;
      for (let o = 0; o < g.size; o++) {
        const dx = (p[o * 2] - lon) * kx;
        const dy = (p[o * 2 + 1] - lat) * ky;
        const d = dx * dx + dy * dy;
        if (d < bestD) {
          bestD = d;
          best = g.members[o];
        }
      }
    }
    return best;
  }

  // The assets with an open alarm, worst first drawn last (on top).
  alarmed() {
    const out = [];
    for (let i = 0; i < this.count; i++) if (this.alarm[i]) out.push(i);
    out.sort((a, b) => this.alarm[b] - this.alarm[a]);
    return out;
  }
}
