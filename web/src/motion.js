// Vehicles glide between their reports instead of jumping: each move is spread over the time the
// vehicle took to report it (one report late, but smooth), drawn at a modest frame rate, and only
// while something moves. A vehicle that reports again mid-way continues from where it is drawn.

const FRAME_MS = 100; // 10 redraws a second while a vehicle moves: smooth to the eye, cheap for the page
const MIN_MS = 300;
const MAX_MS = 5000;

export class VehicleMotion {
  constructor(store, onFrame) {
    this.store = store;
    this.onFrame = onFrame;
    this.moves = new Map(); // asset index -> {fromLon, fromLat, toLon, toLat, start, duration}
    this.lastReport = new Map();
    this.enabled = true;
    this.running = false;
    this.lastFrame = 0;
  }

  // A new position reported for asset i (a moving domain).
  moveTo(i, lon, lat, now = performance.now()) {
    const g = this.store.group(i);
    const o = this.store.local[i] * 2;
    const previous = this.lastReport.get(i);
    this.lastReport.set(i, now);
    this.store.setPosition(i, lon, lat);
    if (!this.enabled || previous === undefined) {
      g.positions[o] = lon;
      g.positions[o + 1] = lat;
      g.positionDirty = true;
      return;
    }
    const duration = Math.min(MAX_MS, Math.max(MIN_MS, now - previous));
    this.moves.set(i, { fromLon: g.positions[o], fromLat: g.positions[o + 1], toLon: lon, toLat: lat, start: now, duration });
    if (!this.running) {
      this.running = true;
      requestAnimationFrame((time) => this._tick(time));
    }
  }

  _tick(time) {
    if (time - this.lastFrame < FRAME_MS - 4) {
      requestAnimationFrame((t) => this._tick(t));
      return;
    }
    this.lastFrame = time;
    const now = performance.now();
    for (const [i, m] of this.moves) {
      const g = this.store.group(i);
      const o = this.store.local[i] * 2;
      const k = Math.min(1, (now - m.start) / m.duration);
      g.positions[o] = m.fromLon + (m.toLon - m.fromLon) * k;
      g.positions[o + 1] = m.fromLat + (m.toLat - m.fromLat) * k;
      g.positionDirty = true;
      if (k >= 1) this.moves.delete(i);
    }
    this.onFrame();
    if (this.moves.size) requestAnimationFrame((t) => this._tick(t));
    else this.running = false;
  }
}
