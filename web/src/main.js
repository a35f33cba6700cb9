// The control room's start: log in (or find the session), load the map snapshot, the catalogue and
// the alarms, open the live feed, and wire the panels together. window.citypilot exposes what the
// browser tests and the benchmark read (see web/README.md).

import * as maplibregl from "maplibre-gl";
import { AlarmMarks } from "./alarm-marks.js";
import { AlarmPanel } from "./alarms.js";
import { api, query, whenUnauthenticated } from "./api.js";
import { AssetStore, MOVING_DOMAINS, STATE } from "./assets.js";
import { AGGREGATE_BELOW_ZOOM } from "./clusters.js";
import { $, perFrame } from "./dom.js";
import { EventPanel } from "./events.js";
import { createInterventionStore, InterventionDesk } from "./interventions-room.js";
import { applyTranslations, lang, onLanguageChange, setLanguage, t } from "./i18n.js";
import { KpiBoard } from "./kpi.js";
import { MapLayers } from "./layers.js";
import { setupLayerPanel } from "./layer-panel.js";
import { LiveFeed } from "./live.js";
import { login, logout, me } from "./login.js";
import { CityMap, communeLabels } from "./map.js";
import { VehicleMotion } from "./motion.js";
import { AssetSheet } from "./sheet.js";
import { armSound, beep, isMuted, setMuted } from "./sound.js";

/* global __WORKER_URL__ */
maplibregl.setWorkerUrl(new URL(__WORKER_URL__, location.href).href);

const ALARM_HANDLERS = new Set(["admin", "supervisor", "operator", "police", "service_coordinator"]);
const MAX_SAMPLES = 10000;
const PICK_RADIUS_PX = 12;

const perf = { loadMs: null, phases: {}, updates: [], updateDeltas: [], parse: [], commits: [], longTasks: [], drawn: false };
let readyResolve;
let readyReject;
const ready = new Promise((resolve, reject) => { readyResolve = resolve; readyReject = reject; });
ready.catch(() => {}); // a failed start is shown in the page; a waiting test still sees the rejection

const app = {
  user: null, store: null, map: null, layers: null, motion: null, live: null, kinds: {}, communes: null,
  communeNames: new Map(), alarms: null, events: null, sheet: null, kpi: null, marks: null,
  interventions: null, interventionLayers: null, extraLayers: [], desk: null,
  loaded: false, queued: [], awaitingDraw: false,
};
const TABS = ["alarms", "events", "orders"];

function sample(list, value) {
  list.push(value);
  if (list.length > MAX_SAMPLES) list.splice(0, list.length - MAX_SAMPLES);
}

if (typeof PerformanceObserver !== "undefined" && PerformanceObserver.supportedEntryTypes?.includes("longtask")) {
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) sample(perf.longTasks, entry.duration);
  }).observe({ type: "longtask", buffered: true });
}

Object.defineProperty(perf, "wsBytes", { enumerable: true, get: () => (app.live ? app.live.bytes : 0) });
Object.defineProperty(perf, "drawCalls", {
  enumerable: true,
  get: () => {
    const stats = app.map && app.map.deck && app.map.deck.stats; // deck.gl draws each visible layer with one call
    const rendered = stats && stats.get("Layers rendered");
    return rendered && Number.isFinite(rendered.lastSampleCount) ? rendered.lastSampleCount : null;
  },
});

// --- the map's data ---------------------------------------------------------------------------------

const commitLayers = perFrame(() => {
  if (!app.map || !app.layers) return;
  const start = performance.now();
  app.map.setLayers(app.layers.build());
  sample(perf.commits, performance.now() - start);
});

function scheduleCommit() {
  if (app.layers && app.layers.dirty) commitLayers();
}

// One twin frame (what the feed sends once a second): only the changed assets' bytes are written.
function applyTwinFrame(frame) {
  const start = performance.now();
  const store = app.store;
  if (!store || !app.loaded) {
    app.queued.push(["twin", frame]);
    return 0;
  }
  const deltas = frame.deltas || [];
  const sheetAsset = app.sheet && app.sheet.assetId;
  const index = store.index;
  for (let k = 0; k < deltas.length; k++) {
    const delta = deltas[k];
    const i = index.get(delta.asset);
    if (i === undefined) continue;
    const changed = delta.changed;
    if (changed) {
      store.applyChanged(i, changed);
      if (changed.lat !== undefined && changed.lon !== undefined && store.group(i).moving) {
        app.motion.moveTo(i, changed.lon, changed.lat);
      }
    }
    if (delta.asset === sheetAsset) app.sheet.applyDelta(delta);
  }
  scheduleCommit();
  const ms = performance.now() - start;
  sample(perf.updates, ms);
  sample(perf.updateDeltas, deltas.length);
  return ms;
}

const CONNECTIVITY = { "connectivity.online": STATE.online, "connectivity.offline": STATE.offline,
  "connectivity.unreachable": STATE.unreachable };

function applyEntries(entries) {
  if (!app.loaded) {
    app.queued.push(["events", entries]);
    return;
  }
  const store = app.store;
  for (const entry of entries) {
    const state = CONNECTIVITY[entry.type];
    if (state !== undefined && entry.asset_id) {
      const i = store.indexOf(entry.asset_id);
      if (i !== undefined) store.setState(i, state);
    }
    if (app.sheet.assetId && entry.asset_id === app.sheet.assetId) app.sheet.applyEntry(entry);
  }
  app.alarms.applyEntries(entries);
  app.events.add(entries);
  app.desk.applyEntries(entries);
  scheduleCommit();
  updateCriticalBanner();
}

function drainQueue() {
  const queued = app.queued;
  app.queued = [];
  for (const [kind, payload] of queued) {
    if (kind === "twin") applyTwinFrame(payload);
    else applyEntries(payload);
  }
}

async function loadVehiclePositions() {
  const kinds = app.store.kinds.filter((k) => k === "bus" || k === "service_vehicle" || app.kinds[k]?.telemetry?.lat);
  if (!kinds.length) return;
  let cursor = null;
  for (let page = 0; page < 10; page++) {
    const data = await api(`/api/v1/twin${query({ kind: kinds, limit: 1000, cursor })}`);
    for (const item of data.items) {
      const values = item.state && item.state.values;
      const i = app.store.indexOf(item.id);
      if (i !== undefined && values && typeof values.lat === "number" && typeof values.lon === "number") {
        app.motion.moveTo(i, values.lon, values.lat);
      }
    }
    cursor = data.next_cursor;
    if (!cursor) break;
  }
  scheduleCommit();
}

function buildStore(snapshot) {
  app.store = new AssetStore(snapshot);
  app.motion = new VehicleMotion(app.store, scheduleCommit);
  const visible = app.layers ? app.layers.visible : null;
  app.layers = new MapLayers(app.store, communeLabels(app.communes));
  app.layers.extras = app.extraLayers;
  if (visible) app.layers.visible = visible;
  if (app.map) app.layers.setZoom(app.map.map.getZoom());
  $('[data-testid="asset-count"]').textContent = String(app.store.count);
}

async function reloadSnapshot() {
  const snapshot = await api("/api/v1/twin/map");
  buildStore(snapshot);
  for (const alarm of app.alarms.alarms.values()) app.marks.update(alarm);
  app.map && app.map.setLayers(app.layers.build());
  loadVehiclePositions().catch(() => {});
}

// --- selection: the map, the alarm list and the events all lead to an asset ---------------------------

function flyTo(assetId, sheetOpening = false) {
  const i = app.store ? app.store.indexOf(assetId) : undefined;
  if (i === undefined) return false;
  const [lon, lat] = app.store.drawnPosition(i);
  if (app.map) app.map.flyTo(lon, lat, 17, sheetOpening || app.sheet.isOpen ? sheetWidth() : 0);
  app.layers.select(i);
  commitLayers();
  return true;
}

// The sheet covers the map's right side (on a wide screen): a flight centres in what stays visible.
function sheetWidth() {
  const map = $("#map");
  return map.clientWidth > 900 ? 400 : 0;
}

function openSheet(assetId) {
  if (app.desk && app.desk.orderSheet.isOpen) app.desk.orderSheet.close();
  const i = app.store ? app.store.indexOf(assetId) : undefined;
  if (i !== undefined) {
    app.layers.select(i);
    commitLayers();
  }
  return app.sheet.open(assetId);
}

function select(target) {
  if (target.domain === "interventions" && target.data && target.data.work_order_id && app.desk) {
    app.desk.openOrder(target.data.work_order_id);
    return;
  }
  const assetId = target.asset_id;
  if (assetId && flyTo(assetId, true)) {
    openSheet(assetId);
  } else if (typeof target.lon === "number" && typeof target.lat === "number" && app.map) {
    app.map.flyTo(target.lon, target.lat, 14, app.sheet.isOpen ? sheetWidth() : 0);
  } else if (assetId) {
    openSheet(assetId);
  }
}

// A click opens the nearest asset's sheet; at low zoom (aggregated cells) it opens a vehicle's, or
// zooms in on the cell clicked, far enough for its assets to be points.
function onMapClick(lngLat) {
  if (!app.store) return;
  const metresPerPixel = app.map.metersPerPixel(lngLat.lat);
  if (app.desk && app.desk.click(lngLat, PICK_RADIUS_PX * metresPerPixel)) return;
  const aggregated = app.layers.level !== null;
  const shown = (name) => app.layers.isVisible(name) && (!aggregated || MOVING_DOMAINS.has(name));
  const i = app.store.nearest(lngLat.lng, lngLat.lat, PICK_RADIUS_PX * metresPerPixel, shown);
  if (i >= 0) {
    openSheet(app.store.ids[i]);
    return;
  }
  const cell = aggregated ? app.layers.cellAt(lngLat.lng, lngLat.lat, metresPerPixel) : null;
  if (cell) app.map.flyTo(cell.lon, cell.lat, AGGREGATE_BELOW_ZOOM + 1, app.sheet.isOpen ? sheetWidth() : 0);
}

// The zoom crossed a whole level below the threshold (or the threshold): cells or points are redrawn.
function onZoom() {
  if (app.layers && app.layers.setZoom(app.map.map.getZoom())) commitLayers();
}

// --- header -----------------------------------------------------------------------------------------

const updateCriticalBanner = perFrame(() => {
  const banner = $("#critical-banner");
  const n = app.alarms ? app.alarms.unacknowledgedCritical() : 0;
  banner.hidden = n === 0;
  banner.textContent = t("critical_banner", { n });
});

function setLiveStatus(status, detail) {
  const el = $("#live-status");
  el.dataset.status = status;
  el.textContent = status === "connected" ? t("live_connected") : status === "connecting" ? t("live_connecting")
    : status === "error" ? `${t("error")}: ${detail || ""}` : t("live_lost");
}

function setupHeader() {
  $('[data-testid="lang-switch"]').addEventListener("click", () => setLanguage(lang() === "fr" ? "en" : "fr"));
  $('[data-testid="logout"]').addEventListener("click", async () => {
    if (app.live) app.live.stop();
    await logout();
    location.reload();
  });
  const mute = $("#mute");
  const showMute = () => {
    mute.setAttribute("aria-pressed", String(isMuted()));
    mute.textContent = isMuted() ? t("muted") : t("mute");
  };
  mute.addEventListener("click", () => { setMuted(!isMuted()); showMute(); });
  onLanguageChange(showMute);
  showMute();
  $('[data-testid="kpi-toggle"]').addEventListener("click", () => {
    app.kpi.toggle();
    $('[data-testid="kpi-toggle"]').setAttribute("aria-expanded", String(app.kpi.isOpen));
  });
  $("#critical-banner").addEventListener("click", () => {
    $("#f-severity").value = "critical";
    $("#f-severity").dispatchEvent(new Event("change"));
    showTab("alarms");
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "n" && !event.ctrlKey && !event.metaKey && !event.altKey && app.desk && !typing(event.target)) {
      event.preventDefault();
      app.desk.newCall();
      return;
    }
    if (event.key !== "Escape") return;
    if (app.kpi && app.kpi.isOpen) {
      app.kpi.close();
      $('[data-testid="kpi-toggle"]').setAttribute("aria-expanded", "false");
    } else if (app.desk && app.desk.orderSheet.isOpen) {
      app.desk.orderSheet.close();
    } else if (app.sheet && app.sheet.isOpen) {
      app.sheet.close();
    }
  });
}

// A key pressed in a field is typing, not a shortcut.
function typing(target) {
  return target && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
}

function showTab(name) {
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    const on = tab.dataset.tab === name;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $(`#${tab.getAttribute("aria-controls")}`).hidden = !on;
  }
  $("#f-shelved-box").hidden = name !== "alarms";
  $("#feed-filters").hidden = name === "orders";
  app.events.show(name === "events");
  app.desk.panel.show(name === "orders");
}

function setupSide() {
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    tab.addEventListener("click", () => showTab(tab.dataset.tab));
    tab.addEventListener("keydown", (event) => {
      if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
        const step = event.key === "ArrowRight" ? 1 : TABS.length - 1;
        const next = TABS[(TABS.indexOf(tab.dataset.tab) + step) % TABS.length];
        showTab(next);
        $(`[data-tab="${next}"]`).focus();
      }
    });
  }
  const domain = $("#f-domain");
  const commune = $("#f-commune");
  const severity = $("#f-severity");
  const shelved = $("#f-shelved");
  const fill = () => {
    const keep = [domain.value, commune.value, severity.value];
    domain.replaceChildren(new Option(t("filter_all"), ""),
      ...[...app.store.domainNames, "operations"].map((d) => new Option(t(`domain_${d}`), d)));
    commune.replaceChildren(new Option(t("filter_all"), ""),
      ...[...app.communeNames].sort((a, b) => a[1].localeCompare(b[1], lang())).map(([id, name]) => new Option(name, id)));
    severity.replaceChildren(new Option(t("filter_all"), ""),
      ...["critical", "major", "minor", "warning"].map((s) => new Option(t(`sev_${s}`), s)));
    [domain.value, commune.value, severity.value] = keep;
  };
  fill();
  onLanguageChange(fill);
  const changed = () => {
    const filters = { domain: domain.value, commune: commune.value, severity: severity.value };
    app.events.setFilters(filters);
    app.alarms.setFilters({ ...filters, shelved: shelved.checked }).catch(showError);
  };
  for (const el of [domain, commune, severity, shelved]) el.addEventListener("change", changed);
}

function showError(err) {
  const box = $("#app-error");
  box.textContent = `${t("error")}: ${err.detail || err.message}`;
  box.hidden = false;
  setTimeout(() => { box.hidden = true; }, 8000);
}

// --- start ------------------------------------------------------------------------------------------

async function startApp(user) {
  const started = performance.now();
  app.user = user;
  document.body.classList.add("logged-in");
  $("#login-view").hidden = true;
  $("#app").hidden = false;
  for (const el of document.querySelectorAll(".app-only")) el.hidden = false;
  $('[data-testid="user"]').textContent = user.username;
  $('[data-testid="user"]').title = user.role;

  let helloSeen;
  const hello = new Promise((resolve) => { helloSeen = resolve; });
  app.live = new LiveFeed({
    onHello: () => helloSeen(),
    onEvents: applyEntries,
    onTwin: (frame, parseMs) => { sample(perf.parse, parseMs); applyTwinFrame(frame); },
    onReset: () => app.alarms.load({ forget: true }).catch(showError),
    onTwinReset: () => reloadSnapshot().catch(showError),
    onStatus: setLiveStatus,
    onUnauthenticated: () => location.reload(),
  });
  app.live.start();
  const phase = (name) => { perf.phases[name] = Math.round(performance.now() - started); };
  const metadata = Promise.all([api("/api/v1/ui/config"), api("/api/v1/communes"), api("/api/v1/kinds")]);
  // The snapshot is read after the feed said hello: whatever changes after the read comes on the feed.
  await Promise.race([hello, new Promise((resolve) => setTimeout(resolve, 3000))]);
  phase("hello");
  const snapshotLoaded = api("/api/v1/twin/map");
  const [config, communes, kinds] = await metadata;
  phase("catalogue");
  app.communes = communes;
  for (const f of communes.features) app.communeNames.set(String(f.id ?? f.properties.insee), f.properties.name);
  app.kinds = Object.fromEntries(kinds.map((k) => [k.kind, k]));
  const communeName = (id) => (id ? app.communeNames.get(id) || id : "");
  const domainLabel = (d) => { const s = t(`domain_${d}`); return s === `domain_${d}` ? d : s; };
  let mapIdle = Promise.resolve();
  try {
    app.map = new CityMap($("#map"), {
      styleUrl: config.map_style_url, communes, onClick: onMapClick,
      onAfterRender: () => {
        if (app.awaitingDraw) {
          app.awaitingDraw = false;
          perf.loadMs = performance.now() - started;
          perf.drawn = true;
          readyResolve(app.store.count);
        }
      },
    });
    phase("map");
    app.map.map.once("load", () => phase("basemap_load"));
    app.map.map.on("zoom", onZoom);
    mapIdle = app.map.whenIdle(4000);
  } catch (err) {
    console.error(err);
    app.map = null;
    $("#map-error").hidden = false;
  }
  const snapshot = await snapshotLoaded;
  phase("snapshot");
  createInterventionStore(app);
  buildStore(snapshot);
  phase("store");

  app.marks = new AlarmMarks(() => app.store);
  app.sheet = new AssetSheet({ root: $("#sheet"), kinds: () => app.kinds, communeName, user: () => app.user,
    onClose: () => { app.layers.select(null); commitLayers(); },
    interventions: {
      alarmsOf: (assetId) => [...app.alarms.alarms.values()].filter((a) => a.asset_id === assetId && !a.parent_id),
      ordersOf: (assetId) => app.interventions.ordersOfAsset(assetId),
      canOpenOrder: () => app.desk.canOpenOrder(),
      onWorkOrder: (alarm) => app.desk.workOrderFromAlarm(alarm),
      onOpenOrder: (id) => app.desk.openOrder(id),
    } });
  app.desk = new InterventionDesk(app, { scheduleCommit, sheetWidth, communeName, openSheet,
    closeSheet: () => app.sheet.close() });
  app.kpi = new KpiBoard({ root: $("#kpi-board"), kinds: () => app.kinds, domainLabel,
    communes: () => communes.features.map((f) => ({ insee: String(f.id ?? f.properties.insee), name: f.properties.name }))
      .sort((a, b) => a.name.localeCompare(b.name)),
    interventions: { serviceLabel: app.desk.serviceLabel, onOpenOrder: (id) => {
      app.kpi.close();
      $('[data-testid="kpi-toggle"]').setAttribute("aria-expanded", "false");
      app.desk.openOrder(id);
    } } });
  app.alarms = new AlarmPanel({
    list: $('[data-testid="alarm-list"]'), status: $("#alarm-status"), communeName,
    canAct: () => ALARM_HANDLERS.has(app.user.role),
    onSelect: select,
    onChange: (alarm) => {
      app.marks.update(alarm);
      scheduleCommit();
      updateCriticalBanner();
      if (app.sheet.isOpen && alarm.asset_id === app.sheet.assetId) app.sheet.refreshInterventions();
    },
    onCritical: () => { beep(); updateCriticalBanner(); },
    canOpenOrder: () => app.desk.canOpenOrder(),
    onWorkOrder: (alarm) => app.desk.workOrderFromAlarm(alarm),
  });
  const interventionsLoaded = app.desk.load().catch(showError);
  const alarmsLoaded = app.alarms.load().catch(showError); // while the basemap gets ready
  app.events = new EventPanel({ list: $('[data-testid="event-list"]'), status: $("#event-status"), communeName, onSelect: select });
  setupSide();
  setupLayerPanel($("#layer-list"), app, domainLabel, () => commitLayers());
  onLanguageChange(() => {
    app.alarms.relabel();
    app.events.render();
    if (app.sheet.isOpen) app.sheet.render();
    if (app.kpi.isOpen) app.kpi.render();
    app.desk.relabel();
    updateCriticalBanner();
  });

  if (app.map) {
    await mapIdle;
    phase("basemap");
    app.awaitingDraw = true;
    app.map.setLayers(app.layers.build());
    setTimeout(() => { // no frame drawn (a hidden page, a lost GPU): do not keep the tests waiting
      if (app.awaitingDraw) {
        app.awaitingDraw = false;
        perf.loadMs = performance.now() - started;
        readyResolve(app.store.count);
      }
    }, 15000);
  } else {
    perf.loadMs = performance.now() - started;
    readyResolve(app.store.count);
  }

  await alarmsLoaded;
  await interventionsLoaded;
  app.loaded = true;
  drainQueue();
  updateCriticalBanner();
  loadVehiclePositions().catch(() => {});
}

window.citypilot = {
  ready,
  perf,
  assetCount: () => (app.store ? app.store.count : 0),
  flyTo: (assetId) => flyTo(assetId),
  openSheet,
  openOrder: (orderId) => app.desk.openOrder(orderId),
  applyTwinFrame,
  get app() {
    return app;
  },
};

async function boot() {
  applyTranslations();
  armSound();
  setupHeader();
  whenUnauthenticated(() => location.reload());
  const user = await me();
  const start = (session) => startApp(session).catch((err) => {
    showError(err);
    readyReject(err);
  });
  if (user) {
    start(user);
    return;
  }
  $("#login-view").hidden = false;
  const form = $("#login");
  form.querySelector('[name="username"]').focus();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = $("#login-error");
    error.textContent = "";
    const data = new FormData(form);
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      const session = await login(String(data.get("username")), String(data.get("password")));
      form.reset();
      start(session);
    } catch (err) {
      error.textContent = `${t("login_failed")}: ${err.detail || err.message}`;
      button.disabled = false;
    }
  });
}

boot();
