// Aggregation at low zoom: below AGGREGATE_BELOW_ZOOM, each fixed domain (not the vehicles, few and
// moving, which stay points) is drawn as one circle per non-empty cell of a grid instead of one point
// per asset. The grid is square in Web Mercator, CELL_PX screen pixels wide at the integer zoom level
// it is built for (about 400 m at zoom 12, 800 m at 11, 1.7 km at 10 at Dijon's latitude), so it does
// not move when the map pans and is rebuilt only when the zoom crosses a whole level. A circle's
// radius grows with the square root of its count and its colour is the worst state among its assets.
//
// Each grid keeps, in typed arrays, the cell of every member and per cell a count per state category;
// an asset whose look changes moves one count from its old category to its new one and recolours
// its cell only (a few array writes), so the 1 Hz live update stays as cheap as with points.

import { domainColor, SEVERITY_COLORS, STATE_COLORS } from "./palette.js";

export const AGGREGATE_BELOW_ZOOM = 13;
export const CELL_PX = 32;
const LABEL_MIN = 10; // cells with fewer assets carry no count label
const CATEGORIES = 8; // critical, major, minor, warning, offline, unreachable, never heard from, normal
const NORMAL = 7;
const DENSE_MAX = 1 << 22; // a dense cell lookup up to this many grid slots, a Map beyond

// The category of asset i, worst first: its worst open alarm, else its connectivity.
export function category(store, i) {
  const severity = store.alarm[i];
  if (severity) return severity - 1;
  const state = store.state[i];
  return state === 0 ? NORMAL : state >= 3 ? 6 : state + 3;
}

// The integer zoom level the map aggregates at, or null when it draws points.
export function aggregationLevel(zoom) {
  return zoom < AGGREGATE_BELOW_ZOOM ? Math.max(0, Math.floor(zoom)) : null;
}

export function cellRadius(count) {
  return Math.min(16, 3 + 1.2 * Math.sqrt(count));
}

export class CellGrid {
  constructor(store, group, level) {
    this.level = level;
    this.group = group;
    const n = group.size;
    const members = group.members;
    const scale = (512 * 2 ** level) / CELL_PX; // cells across the world at this level
    const cx = new Int32Array(n);
    const cy = new Int32Array(n);
    let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
    for (let o = 0; o < n; o++) {
      const i = members[o];
      const s = Math.max(-0.9999, Math.min(0.9999, Math.sin((store.lat[i] * Math.PI) / 180))); // Mercator's bounds
      const x = Math.floor((store.lon[i] / 360 + 0.5) * scale);
      const y = Math.floor((0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI)) * scale);
      cx[o] = x; cy[o] = y;
      if (x < minX) minX = x;
      if (x > maxX) maxX = x;
      if (y < minY) minY = y;
      if (y > maxY) maxY = y;
    }
    const cols = maxX - minX + 1;
    const slots = n ? cols * (maxY - minY + 1) : 0;
    const dense = slots <= DENSE_MAX ? new Int32Array(slots).fill(-1) : null;
    const sparse = dense ? null : new Map();
    this.cellOf = new Int32Array(n);
    let cells = 0;
    for (let o = 0; o < n; o++) {
      const key = (cy[o] - minY) * cols + (cx[o] - minX);
      let c = dense ? dense[key] : sparse.get(key);
      if (c === undefined || c < 0) {
        c = cells++;
        if (dense) dense[key] = c;
        else sparse.set(key, c);
      }
      this.cellOf[o] = c;
    }
    this.size = cells;
    this.cat = new Uint8Array(n);
    this.counts = new Uint32Array(cells * CATEGORIES);
    this.totals = new Uint32Array(cells);
    const sums = new Float64Array(cells * 2);
    for (let o = 0; o < n; o++) {
      const i = members[o];
      const c = this.cellOf[o];
      const k = category(store, i);
      this.cat[o] = k;
      this.counts[c * CATEGORIES + k]++;
      this.totals[c]++;
      sums[c * 2] += store.lon[i];
      sums[c * 2 + 1] += store.lat[i];
    }
    // A circle sits at the mean position of its assets (inside the cell, where they are).
    this.positions = new Float32Array(cells * 2);
    this.radii = new Float32Array(cells);
    this.colors = new Uint8Array(cells * 4);
    this.labels = [];
    this.normal = domainColor(group.name);
    for (let c = 0; c < cells; c++) {
      const total = this.totals[c];
      const lon = sums[c * 2] / total;
      const lat = sums[c * 2 + 1] / total;
      this.positions[c * 2] = lon;
      this.positions[c * 2 + 1] = lat;
      this.radii[c] = cellRadius(total);
      this._paint(c);
      if (total >= LABEL_MIN) this.labels.push({ position: [lon, lat], text: String(total) });
    }
    this.version = 0;
    this.colorDirty = false;
    this.data = { length: cells, attributes: {
      getPosition: { value: this.positions, size: 2 },
      getFillColor: { value: this.colors, size: 4, normalized: true },
      getRadius: { value: this.radii, size: 1 } } };
  }

  // The colour of cell c: its worst category's.
  _paint(c) {
    const base = c * CATEGORIES;
    let k = 0;
    while (k < NORMAL && this.counts[base + k] === 0) k++;
    const rgb = k < 4 ? SEVERITY_COLORS[k + 1] : k < NORMAL ? STATE_COLORS[k - 3] : this.normal;
    const o = c * 4;
    this.colors[o] = rgb[0];
    this.colors[o + 1] = rgb[1];
    this.colors[o + 2] = rgb[2];
    this.colors[o + 3] = k < 4 ? 255 : k < NORMAL ? Math.max(rgb[3], 200) : 235;
  }

  // Member o (the asset's slot in its group) is now in category k.
  touch(o, k) {
    const old = this.cat[o];
    if (old === k) return;
    const c = this.cellOf[o];
    this.counts[c * CATEGORIES + old]--;
    this.counts[c * CATEGORIES + k]++;
    this.cat[o] = k;
    this._paint(c);
    this.colorDirty = true;
  }

  // The cell drawn under a point (lon, lat), with its distance in pixels, or null.
  pick(lon, lat, metresPerPixel, slackPx) {
    const kx = (111320 * Math.cos((lat * Math.PI) / 180)) / metresPerPixel;
    const ky = 110540 / metresPerPixel;
    let best = -1;
    let bestD = Infinity;
    for (let c = 0; c < this.size; c++) {
      const dx = (this.positions[c * 2] - lon) * kx;
      const dy = (this.positions[c * 2 + 1] - lat) * ky;
      const d = Math.sqrt(dx * dx + dy * dy);
      if (d <= this.radii[c] + slackPx && d - this.radii[c] < bestD) {
        bestD = d - this.radii[c];
        best = c;
      }
    }
    return best < 0 ? null : { lon: this.positions[best * 2], lat: this.positions[best * 2 + 1], distance: bestD };
  }
}
