// The field tablet (/tablet): the team's task list and the agent's actions on it, made to keep working
// through network drops. Every action (accept, en route, on site, done with its note, a photo, the
// team's status) goes first into the tablet's own queue (IndexedDB, tablet-queue.js) with its id and
// the version of the order it was based on; the queue is sent when the network is there
// (tablet-sync.js), and what the server could not apply waits for the agent's decision. A light page
// without the map's libraries; a service worker lets it open without network.

import { api, ApiError, NetworkError, query, whenUnauthenticated } from "./api.js";
import { $ } from "./dom.js";
import { applyTranslations, formatTime, lang, onLanguageChange, setLanguage, t } from "./i18n.js";
import { login, logout, me } from "./login.js";
import { possible, predict, rebase } from "./tablet-actions.js";
import { TabletStore } from "./tablet-queue.js";
import { Syncer } from "./tablet-sync.js";
import { queueItem, taskCard, teamView } from "./tablet-tasks.js";
import { uuid } from "./uuid.js";

const USER_KEY = "citypilot.tablet.user";
const REFRESH_MS = 30000;
const PHOTO_MAX_SIDE = 2048;
const PHOTO_SHRINK_ABOVE = 1.5 * 1024 * 1024;

const state = {
  user: null, store: null, syncer: null, tasks: [], tasksAt: null, fromCache: false, team: null, queue: [],
  drafts: new Map(), position: null, refreshing: null, applied: false, started: false, flash: null,
};
let readyResolve;
const ready = new Promise((resolve) => { readyResolve = resolve; });

// --- network and header -----------------------------------------------------------------------------

function showNet() {
  const el = $("#net-status");
  const online = navigator.onLine;
  el.dataset.online = String(online);
  el.textContent = online ? t("fld_online") : t("fld_offline");
}

function showError(message) {
  const box = $("#app-error");
  box.textContent = message || "";
  box.hidden = !message;
}

// --- the server's view ------------------------------------------------------------------------------

function cacheKey(what) {
  return `${what}:${state.user.username}`;
}

async function refresh() {
  if (!state.user || state.user.role !== "field_agent") return;
  if (state.refreshing) return state.refreshing;
  state.refreshing = (async () => {
    try {
      const where = state.position ? query({ lat: state.position.lat.toFixed(6), lon: state.position.lon.toFixed(6) }) : "";
      const [team, tasks] = await Promise.all([
        api("/api/v1/teams/me").catch((err) => { if (err instanceof ApiError && err.status === 404) return null; throw err; }),
        api(`/api/v1/field/tasks${where}`).catch((err) => {
          if (err instanceof ApiError && err.status === 404) return { items: [] }; // in no team
          throw err;
        }),
      ]);
      state.team = team;
      state.tasks = tasks.items;
      state.tasksAt = new Date().toISOString();
      state.fromCache = false;
      showError("");
      await state.store.set(cacheKey("tasks"), { items: state.tasks, at: state.tasksAt });
      await state.store.set(cacheKey("team"), team);
    } catch (err) {
      if (err instanceof NetworkError || (err instanceof ApiError && err.status >= 500)) {
        state.fromCache = true; // the tablet works from what it kept
      } else if (!(err instanceof ApiError && err.status === 401)) {
        showError(`${t("error")}: ${err.detail || err.message}`);
      }
    } finally {
      state.refreshing = null;
    }
    await render();
    readyResolve(true);
  })();
  return state.refreshing;
}

// An order as the server answered it (an applied action, a conflict): the task list follows.
function mergeTask(order) {
  const k = state.tasks.findIndex((task) => task.id === order.id);
  if (k < 0) return;
  state.tasks[k] = { ...state.tasks[k], ...order }; // an order no longer the team's leaves at the next refresh
  state.store.set(cacheKey("tasks"), { items: state.tasks, at: state.tasksAt });
}

// --- the agent's actions ----------------------------------------------------------------------------

// seq: taken when the agent acted, before anything asynchronous (a photo picked just after a step
// must not overtake it in the queue).
async function enqueue(item, seq = state.store.nextSeq()) {
  await state.store.put({ id: uuid(), seq, user: state.user.username, at: new Date().toISOString(),
    state: "waiting", ...item });
  await render();
  state.syncer.run();
}

// The agent's actions are queued one after the other, each seeing the queue the previous one left.
let acting = Promise.resolve();
function serially(work) {
  acting = acting.then(work, work);
  return acting;
}

// The task as the queue leaves it now (not as last drawn: two quick taps must not queue one move twice).
function act(shown, action, note) {
  const seq = state.store.nextSeq();
  return serially(() => queueAction(shown, action, note, seq));
}

async function queueAction(shown, action, note, seq) {
  const queue = await state.store.queue(state.user.username);
  const task = predict(state.tasks, queue).find((t) => t.id === shown.id);
  if (!task || !possible(task)[action]) return;
  if (action === "done") state.drafts.delete(task.id);
  await enqueue({ kind: "action", work_order_id: task.id, action, base_version: task.version, note: note || undefined,
    seen: { state: task.state, team_id: task.team_id, priority: task.priority, title: task.title, version: task.version } }, seq);
}

function photo(task, file) {
  const seq = state.store.nextSeq();
  const shrunk = shrink(file);
  return serially(async () => {
    const blob = await shrunk;
    await enqueue({ kind: "photo", work_order_id: task.id, blob, type: blob.type, size: blob.size }, seq);
    flash(t("fld_photo_kept"));
  });
}

function setTeamStatus(status) {
  if (!state.team) return Promise.resolve();
  const seq = state.store.nextSeq();
  return serially(async () => {
    for (const item of await state.store.queue(state.user.username)) {
      if (item.kind === "team_status" && item.state === "waiting") await state.store.remove(item.id); // the last word counts
    }
    await enqueue({ kind: "team_status", team_id: state.team.id, status }, seq);
  });
}

// A conflict: the agent applies the action on the order as it is now, or drops it.
async function resolve(item, drop) {
  const current = item.current;
  const queue = await state.store.queue(state.user.username);
  const changed = rebase(queue, item, current.version, drop);
  if (drop) await state.store.remove(item.id);
  await state.store.putAll(changed);
  mergeTask(current);
  await render();
  state.syncer.run();
}

async function dismiss(item) {
  await state.store.remove(item.id);
  await render();
}

// A phone photo of several megabytes is scaled down before it waits in the queue (the server keeps at
// most 4096 px anyway): less to store, less to send over a weak network.
async function shrink(file) {
  if (file.size <= PHOTO_SHRINK_ABOVE || typeof createImageBitmap !== "function") return file;
  try {
    const bitmap = await createImageBitmap(file);
    const scale = Math.min(1, PHOTO_MAX_SIDE / Math.max(bitmap.width, bitmap.height));
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(bitmap.width * scale);
    canvas.height = Math.round(bitmap.height * scale);
    canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    const blob = await new Promise((done) => canvas.toBlob(done, "image/jpeg", 0.85));
    return blob && blob.size < file.size ? blob : file;
  } catch {
    return file;
  }
}

// A short message in place of the list's status line (a photo kept...).
function flash(message) {
  state.flash = { text: message, until: Date.now() + 4000 };
  render();
  setTimeout(() => render(), 4100);
}

// --- drawing ----------------------------------------------------------------------------------------

// Drawing reads the queue (asynchronous): calls while one runs make one more pass after it.
let drawing = null;
let redraw = false;
function render() {
  if (drawing) {
    redraw = true;
    return drawing;
  }
  drawing = (async () => {
    try {
      do {
        redraw = false;
        await draw();
      } while (redraw);
    } finally {
      drawing = null;
    }
  })();
  return drawing;
}

async function draw() {
  if (!state.user || !state.store) return;
  state.queue = await state.store.queue(state.user.username);
  const tasks = predict(state.tasks, state.queue);
  const focused = document.activeElement;
  const focusNote = focused && focused.dataset && focused.dataset.testid === "done-note"
    ? { id: focused.closest('[data-testid="task"]').dataset.orderId, at: focused.selectionStart } : null;
  const handlers = {
    onAct: act, onPhoto: photo,
    onOpenDone: (task) => { state.drafts.set(task.id, state.drafts.get(task.id) || ""); render().then(() => {
      document.querySelector(`[data-testid="task"][data-order-id="${task.id}"] textarea`)?.focus(); }); },
    onDraft: (task, text) => state.drafts.set(task.id, text),
    onCancelDone: (task) => { state.drafts.delete(task.id); render(); },
  };
  const list = $("#task-list");
  list.replaceChildren(...tasks.map((task) => taskCard(task, { ...handlers, draft: state.drafts.get(task.id) })));
  if (!tasks.length) list.replaceChildren(Object.assign(document.createElement("li"), { className: "t-muted empty", textContent: t("fld_no_tasks") }));
  if (focusNote) {
    const area = list.querySelector(`[data-order-id="${focusNote.id}"] textarea`);
    if (area) {
      area.focus();
      area.setSelectionRange(focusNote.at, focusNote.at);
    }
  }
  $("#tasks-status").textContent = state.flash && state.flash.until > Date.now() ? state.flash.text
    : state.tasksAt ? t(state.fromCache ? "fld_cached" : "fld_updated", { t: formatTime(state.tasksAt) }) : "";

  const byId = new Map(state.tasks.map((task) => [task.id, task]));
  const conflicted = new Set(state.queue.filter((i) => i.state === "conflict").map((i) => i.work_order_id));
  $("#queue-list").replaceChildren(...state.queue.map((item) => queueItem(item, {
    task: byId.get(item.work_order_id), blocked: item.state === "waiting" && item.kind === "action" && conflicted.has(item.work_order_id),
    onApply: (i) => resolve(i, false), onDrop: (i) => resolve(i, true), onDismiss: dismiss })));
  $("#queue").hidden = state.queue.length === 0;
  const waiting = state.queue.filter((i) => i.state === "waiting" || i.state === "conflict").length;
  const pill = $("#queue-count");
  pill.dataset.count = String(waiting);
  pill.dataset.conflicts = String(state.queue.filter((i) => i.state === "conflict").length);
  pill.textContent = waiting ? (state.syncer && state.syncer.sending && navigator.onLine
    ? t("fld_queue_sending", { n: waiting }) : t("fld_queue", { n: waiting })) : t("fld_queue_none");
  pill.classList.toggle("has-waiting", waiting > 0);

  const pendingStatus = [...state.queue].reverse().find((i) => i.kind === "team_status" && i.state === "waiting");
  $("#team-body").replaceChildren(teamView(state.team, pendingStatus, { onStatus: setTeamStatus }));
}

// --- start ------------------------------------------------------------------------------------------

function showLogin(note) {
  $("#app").hidden = true;
  for (const el of document.querySelectorAll(".app-only")) el.hidden = true;
  $("#login-view").hidden = false;
  const box = $("#login-note");
  box.textContent = note || "";
  box.hidden = !note;
  $("#login").querySelector('[name="username"]').focus();
}

async function start(user) {
  state.user = user;
  try {
    localStorage.setItem(USER_KEY, JSON.stringify({ username: user.username, role: user.role, service: user.service }));
  } catch {
    // not kept: an offline start then needs the network once
  }
  $("#login-view").hidden = true;
  $("#app").hidden = false;
  for (const el of document.querySelectorAll(".app-only")) el.hidden = false;
  $('[data-testid="user"]').textContent = user.username;
  if (user.role !== "field_agent") {
    showError(t("fld_not_agent"));
    readyResolve(false);
    return;
  }
  state.store = state.store || await TabletStore.open();
  const cached = await state.store.get(cacheKey("tasks"));
  if (cached) {
    state.tasks = cached.items;
    state.tasksAt = cached.at;
    state.fromCache = true;
  }
  state.team = await state.store.get(cacheKey("team"));
  if (state.syncer) clearTimeout(state.syncer.timer);
  state.syncer = new Syncer({
    store: state.store, user: user.username,
    onChange: () => {
      render();
      if (state.applied && !state.syncer.running) {
        state.applied = false;
        refresh();
      }
    },
    onApplied: (order) => { state.applied = true; mergeTask(order); },
    onCurrent: (order) => mergeTask(order),
    onUnauthenticated: () => showLogin(t("fld_login_again")),
  });
  await render();
  if (!navigator.onLine) readyResolve(true);
  refresh();
  state.syncer.run();
  if (!state.started) {
    state.started = true;
    setInterval(() => { if (navigator.onLine && state.user) refresh(); }, REFRESH_MS);
    watchPosition();
  }
}

function watchPosition() {
  if (!navigator.geolocation) return;
  try {
    navigator.geolocation.watchPosition((pos) => {
      const first = !state.position;
      state.position = { lat: pos.coords.latitude, lon: pos.coords.longitude };
      if (first) refresh(); // the order of the tasks depends on where the team is
    }, () => {}, { enableHighAccuracy: false, maximumAge: 60000, timeout: 20000 });
  } catch {
    // no position: the server orders by the team vehicle's position
  }
}

function registerServiceWorker() {
  if (!("serviceWorker" in navigator)) return Promise.resolve(false);
  return navigator.serviceWorker.register("/tablet/sw.js", { scope: "/tablet" })
    .then(() => navigator.serviceWorker.ready).then(() => true).catch((err) => {
      console.warn("no service worker: the page needs the network to open", err);
      return false;
    });
}

window.citypilotTablet = {
  ready,
  offlineReady: null,
  state,
  queue: () => (state.store && state.user ? state.store.queue(state.user.username) : Promise.resolve([])),
  sync: () => state.syncer && state.syncer.run(),
  refresh,
};

async function boot() {
  applyTranslations();
  showNet();
  window.citypilotTablet.offlineReady = registerServiceWorker();
  $('[data-testid="lang-switch"]').addEventListener("click", () => setLanguage(lang() === "fr" ? "en" : "fr"));
  onLanguageChange(() => { showNet(); render(); });
  $('[data-testid="logout"]').addEventListener("click", async () => {
    await logout();
    try {
      localStorage.removeItem(USER_KEY);
    } catch {
      // nothing kept
    }
    location.reload();
  });
  $("#refresh").addEventListener("click", () => { refresh(); if (state.syncer) state.syncer.run(); });
  window.addEventListener("online", () => {
    showNet();
    if (state.syncer) state.syncer.run();
    refresh();
  });
  window.addEventListener("offline", () => { showNet(); render(); });
  whenUnauthenticated(() => showLogin(t("fld_login_again")));

  const form = $("#login");
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
      await start(session);
    } catch (err) {
      error.textContent = `${t("login_failed")}: ${err.detail || err.message}`;
    } finally {
      button.disabled = false;
    }
  });

  let user = null;
  try {
    user = await me();
  } catch (err) {
    if (err instanceof NetworkError) {
      try {
        user = JSON.parse(localStorage.getItem(USER_KEY) || "null"); // no network: work from what is kept
      } catch {
        user = null;
      }
    }
  }
  if (user) await start(user);
  else showLogin();
}

boot();
