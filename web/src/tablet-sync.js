// Sends the tablet's queue when the network is there: the field actions with POST /api/v1/field/sync
// (each answered applied, duplicate, refused or conflict), the photos with their own id (sending one
// twice stores it once) and the team's status. In queue order; one action per order in each batch
// (the next one is based on the version the previous one makes, so it waits for its answer). A
// failure of the network or the server is retried with a growing delay (1 s, 2 s, 4 s... 1 min);
// the browser's "online" event retries at once. Conflicts and refusals stay in the queue until the
// agent decides.

import { api, ApiError, NetworkError } from "./api.js";
import { afterRefusal } from "./tablet-actions.js";

const MAX_BATCH = 100;
const MAX_DELAY_MS = 60000;
const OFFLINE_CHECK_MS = 30000; // navigator.onLine can be wrong: look again now and then

function retryable(err) {
  return err instanceof NetworkError || (err instanceof ApiError && (err.status >= 500 || err.status === 408 || err.status === 429));
}

export class Syncer {
  constructor({ store, user, onChange, onApplied, onCurrent, onUnauthenticated }) {
    this.store = store;
    this.user = user;
    this.onChange = onChange; // the queue changed (redraw)
    this.onApplied = onApplied; // (work_order) the server's order after an applied action
    this.onCurrent = onCurrent; // (work_order) the order as it is now, told by a conflict
    this.onUnauthenticated = onUnauthenticated;
    this.running = false;
    this.again = false;
    this.failures = 0;
    this.timer = 0;
    this.sending = 0;
    this.lastError = null;
  }

  schedule(ms) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.run(), ms);
  }

  _backoff() {
    this.failures += 1;
    const base = Math.min(MAX_DELAY_MS, 1000 * 2 ** (this.failures - 1));
    this.schedule(base * (0.75 + Math.random() * 0.5));
  }

  async run() {
    if (this.running) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    if (!navigator.onLine) {
      this.schedule(OFFLINE_CHECK_MS);
      return;
    }
    this.running = true;
    try {
      for (let round = 0; round < 50; round++) {
        this.again = false;
        const progressed = await this._round();
        if (!progressed && !this.again) break;
      }
      this.failures = 0;
      this.lastError = null;
    } catch (err) {
      this.lastError = err;
      if (err instanceof ApiError && err.status === 401) {
        this.onUnauthenticated();
      } else {
        this._backoff();
      }
    } finally {
      this.running = false;
      this.sending = 0;
      this.onChange();
    }
  }

  // One pass over the queue; whether anything was answered.
  async _round() {
    const queue = await this.store.queue(this.user);
    const blocked = new Set(queue.filter((i) => i.kind === "action" && i.state === "conflict").map((i) => i.work_order_id));
    const sendable = queue.filter((i) => i.state === "waiting" && !(i.kind === "action" && blocked.has(i.work_order_id)));
    if (!sendable.length) return false;
    this.sending = sendable.length;
    this.onChange();
    let progressed = false;
    let batch = [];
    const touched = new Set(); // orders with an action in this round: their next one waits for its answer
    const flush = async () => {
      if (batch.length) progressed = (await this._sendActions(batch, queue)) || progressed;
      batch = [];
    };
    for (const item of sendable) {
      if (item.kind === "action") {
        if (touched.has(item.work_order_id)) continue;
        touched.add(item.work_order_id);
        batch.push(item);
        if (batch.length >= MAX_BATCH) await flush();
        continue;
      }
      await flush();
      progressed = (await this._sendOther(item)) || progressed;
    }
    await flush();
    return progressed;
  }

  async _sendActions(batch, queue) {
    const body = { actions: batch.map((i) => ({ id: i.id, work_order_id: i.work_order_id, action: i.action,
      base_version: i.base_version, ...(i.note ? { note: i.note } : {}), at: i.at })) };
    let answer;
    try {
      answer = await api("/api/v1/field/sync", { method: "POST", body, quiet401: true });
    } catch (err) {
      if (retryable(err) || (err instanceof ApiError && err.status === 401)) throw err;
      // The batch itself was refused (it should not be): say so on each item rather than retry forever.
      await this.store.putAll(batch.map((i) => ({ ...i, state: "refused", reason: err.detail || err.message })));
      return true;
    }
    const byId = new Map(batch.map((i) => [i.id, i]));
    for (const result of answer.results) {
      const item = byId.get(result.id);
      if (!item) continue;
      if (result.status === "applied") {
        await this.store.remove(item.id);
        if (result.work_order) this.onApplied(result.work_order);
      } else if (result.status === "conflict") {
        await this.store.put({ ...item, state: "conflict", current: result.work_order, reason: result.reason });
        if (result.work_order) this.onCurrent(result.work_order);
      } else {
        await this.store.put({ ...item, state: "refused", reason: result.reason, code: result.code });
        await this.store.putAll(afterRefusal(queue, item));
      }
    }
    return true;
  }

  async _sendOther(item) {
    try {
      if (item.kind === "photo") {
        await api(`/api/v1/work-orders/${item.work_order_id}/photos?photo_id=${encodeURIComponent(item.id)}`,
          { method: "POST", body: item.blob, quiet401: true });
      } else if (item.kind === "team_status") {
        await api(`/api/v1/teams/${encodeURIComponent(item.team_id)}/status`,
          { method: "POST", body: { status: item.status }, quiet401: true });
      }
      await this.store.remove(item.id);
    } catch (err) {
      if (retryable(err) || (err instanceof ApiError && err.status === 401)) throw err;
      await this.store.put({ ...item, state: "refused", reason: err.detail || err.message });
    }
    return true;
  }
}
