// The live feed (docs/integrators/live-feed.md): one WebSocket from this origin, authenticated by
// the session cookie. Journal entries come in id order; the id of the last one handled is sent back
// on reconnection so that nothing is missed. Twin deltas are not replayed: a long absence ends in a
// twin_reset, after which the map is reloaded.

const RETRY_MIN_MS = 1000;
const RETRY_SPREAD_MS = 2000;
const NO_RETRY = new Set([4400, 4403]);

export class LiveFeed {
  constructor({ onHello, onEvents, onTwin, onReset, onTwinReset, onStatus, onUnauthenticated }) {
    this.handlers = { onHello, onEvents, onTwin, onReset, onTwinReset, onStatus, onUnauthenticated };
    this.lastEventId = null;
    this.bytes = 0;
    this.socket = null;
    this.stopped = false;
    this.retryTimer = null;
  }

  start() {
    this.stopped = false;
    this._connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    if (this.socket) this.socket.close(1000, "logout");
    this.socket = null;
  }

  _connect() {
    const params = new URLSearchParams({ twin: "true" });
    if (this.lastEventId !== null) params.set("last_event_id", String(this.lastEventId));
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/api/v1/live?${params}`);
    this.socket = socket;
    this.handlers.onStatus("connecting");
    socket.onmessage = (message) => {
      const data = message.data;
      this.bytes += typeof data === "string" ? data.length : data.byteLength || data.size || 0;
      const start = performance.now();
      let frame;
      try {
        frame = JSON.parse(data);
      } catch {
        return;
      }
      this._dispatch(frame, performance.now() - start);
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.stopped) return;
      if (event.code === 4401) {
        this.handlers.onStatus("lost");
        this.handlers.onUnauthenticated();
        return;
      }
      if (NO_RETRY.has(event.code)) {
        this.handlers.onStatus("error", event.reason);
        return;
      }
      this.handlers.onStatus("lost");
      this.retryTimer = setTimeout(() => this._connect(), RETRY_MIN_MS + Math.random() * RETRY_SPREAD_MS);
    };
  }

  _dispatch(frame, parseMs) {
    switch (frame.type) {
      case "hello":
        this.handlers.onStatus("connected");
        if (this.lastEventId === null) this.lastEventId = frame.head;
        this.handlers.onHello(frame);
        break;
      case "event":
        this.handlers.onEvents([frame.entry]);
        this.lastEventId = frame.id;
        break;
      case "events":
        this.handlers.onEvents(frame.events.map((e) => e.entry));
        if (frame.events.length) this.lastEventId = frame.events[frame.events.length - 1].id;
        break;
      case "twin":
        this.handlers.onTwin(frame, parseMs);
        break;
      case "reset":
        this.lastEventId = frame.head;
        this.handlers.onReset(frame);
        break;
      case "twin_reset":
        this.handlers.onTwinReset(frame);
        break;
      case "ping":
        break;
      case "error":
        this.handlers.onStatus("error", frame.detail);
        break;
      default:
        break;
    }
  }
}
