// One work order beside the map: what it is, what it answers (citizens' requests, an alarm), its
// photos and history, and the actions the caller may take. Every change sends the version the page
// showed (If-Match): when someone else changed the order meanwhile, the server answers 409 with the
// order as it is now; the sheet shows it and lets the user redo the action on it, or leave it.

import { api, ApiError } from "./api.js";
import { fill, h, restoreFocus } from "./dom.js";
import { formatDuration, formatNumber, formatTime, has, lang, t } from "./i18n.js";
import { overdueOf } from "./interventions.js";
import { teamStatusLabel } from "./teams.js";
import { stateLabel } from "./work-orders.js";

const OPEN = ["new", "assigned", "en_route", "on_site"];
// action: the states it applies to, whether it needs a text (and which field), who may.
const ACTIONS = {
  assign: { states: ["new", "assigned", "en_route"], who: "dispatch" },
  unassign: { states: ["assigned", "en_route"], who: "dispatch" },
  confirm: { states: ["done"], unconfirmed: true, who: "dispatch" },
  reopen: { states: ["done"], unconfirmed: true, who: "dispatch", text: "note" },
  cancel: { states: OPEN, who: "dispatch", text: "reason" },
  comment: { states: null, who: "comment", text: "note" },
};

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(Boolean).flatMap(([label, value, attrs]) => [h("dt", null, label),
    h("dd", attrs || null, value)]));
}

export class OrderSheet {
  constructor({ root, store, user, serviceLabel, communeName, categoryName, onClose, onOpenAsset, onFly }) {
    this.root = root;
    this.store = store;
    this.user = user;
    this.serviceLabel = serviceLabel;
    this.communeName = communeName;
    this.categoryName = categoryName;
    this.onClose = onClose;
    this.onOpenAsset = onOpenAsset;
    this.onFly = onFly;
    this.order = null;
    this.orderId = null;
    this.token = 0;
    this.busy = false;
    this.conflict = null;
    this.notice = "";
    this.returnFocus = null;
  }

  get isOpen() {
    return !this.root.hidden;
  }

  mayDispatch(order = this.order) {
    const user = this.user();
    if (!user || !order) return false;
    return user.role === "admin" || user.role === "supervisor"
      || (user.role === "service_coordinator" && user.service === order.service);
  }

  mayComment(order = this.order) {
    return this.mayDispatch(order) || this.user()?.role === "operator";
  }

  async open(orderId, { notice = "" } = {}) {
    const token = ++this.token;
    if (!this.isOpen) this.returnFocus = document.activeElement;
    this.orderId = orderId;
    this.order = null;
    this.conflict = null;
    this.pendingLive = null;
    this.notice = notice;
    this.root.hidden = false;
    this.root.dataset.orderId = String(orderId);
    this.root.replaceChildren(
      h("header", { class: "panel-head" },
        h("h2", { id: "order-title", class: "sheet-title", tabindex: "-1", dataset: { testid: "order-title" } }, `${t("wo_title")} #${orderId}`),
        h("button", { type: "button", class: "icon close", "aria-label": t("close"), title: t("close"), onclick: () => this.close() }, "×")),
      h("div", { class: "sheet-body" }, h("p", { class: "muted" }, t("sheet_loading"))));
    this.root.querySelector("#order-title").focus();
    try {
      const order = await api(`/api/v1/work-orders/${orderId}`);
      if (token !== this.token) return null;
      this.order = order;
      this.store.putOrder(order);
      this.render();
      this.onFly(order);
      return order;
    } catch (err) {
      if (token !== this.token) return null;
      this.root.querySelector(".sheet-body").replaceChildren(h("p", { class: "error", role: "alert" },
        `${t("wo_not_found")} (${err.detail || err.message})`));
      return null;
    }
  }

  close() {
    if (!this.isOpen) return;
    this.token++;
    this.root.hidden = true;
    this.orderId = null;
    this.order = null;
    delete this.root.dataset.orderId;
    this.onClose();
    restoreFocus(this.returnFocus, this.root);
  }

  // The store says these orders changed (the live feed): read the one shown again, unless the user is
  // in the middle of sending (the answer to that brings it).
  changed(ids) {
    if (!this.isOpen || !this.order || this.busy || !ids.has(this.orderId)) return;
    clearTimeout(this.reloadTimer);
    this.reloadTimer = setTimeout(() => this._reload(true), 150);
  }

  async _reload(fromFeed = false) {
    const token = this.token;
    try {
      const order = await api(`/api/v1/work-orders/${this.orderId}`);
      if (token !== this.token || !this.order) return;
      if (fromFeed && order.version !== this.order.version) {
        if (this.root.querySelector('[data-testid="order-form"], [data-testid="assign-box"]')) {
          // The user is preparing an action on what the sheet shows: it stays as it was (the action is
          // based on it, and the server will say it changed); a line says that it did.
          this.pendingLive = order;
          this._staleNotice(order);
          return;
        }
        this.notice = t("wo_changed_live", { v: order.version });
      }
      this.order = order;
      this.pendingLive = null;
      this.render();
    } catch {
      // the sheet keeps what it showed
    }
  }

  _staleNotice(order) {
    let line = this.root.querySelector('[data-testid="order-stale"]');
    if (!line) {
      line = h("p", { class: "notice stale-notice", role: "status", dataset: { testid: "order-stale" } });
      this.root.querySelector('[data-testid="order-actions"]')?.prepend(line);
    }
    line.replaceChildren(t("wo_changed_meanwhile", { v: order.version, state: stateLabel(order.state) }), " ",
      h("button", { type: "button", class: "link", onclick: () => {
        this.order = this.pendingLive || this.order;
        this.pendingLive = null;
        this._clearForms();
        this.render();
      } }, t("wo_show_current")));
  }

  render() {
    const o = this.order;
    if (!o) return;
    this.root.dataset.state = o.state;
    this.root.dataset.version = String(o.version);
    this.root.dataset.team = o.team_id || "";
    this.root.querySelector("#order-title").textContent = `${t("wo_title")} #${o.id}`;
    const openForm = this.root.querySelector('[data-testid="order-form"]');
    const assignBox = this.root.querySelector('[data-testid="assign-box"]');
    const late = overdueOf(o);
    const body = this.root.querySelector(".sheet-body");
    fill(body,
      this.notice ? h("p", { class: "notice", role: "status", dataset: { testid: "order-notice" } }, this.notice) : null,
      h("p", { class: "order-heading" }, h("strong", null, o.title)),
      h("p", { class: "badges" },
        h("span", { class: `prio-badge prio-${o.priority}` }, t(`prio_${o.priority}`)),
        h("span", { class: `wo-state wo-state-${o.state}`, dataset: { testid: "order-state" } }, stateLabel(o.state)),
        o.confirmed_at ? h("span", { class: "wo-state wo-state-confirmed" }, t("wo_confirmed")) : null,
        late.response || late.resolution ? h("span", { class: "overdue-badge" }, t("wo_overdue")) : null),
      facts([
        [t("f_service"), this.serviceLabel(o.service)],
        [t("wo_category"), this.categoryName(o.category)],
        [t("wo_origin"), t(`wo_origin_${o.origin}`)],
        [t("wo_team"), o.team_id || t("wo_no_team"), { dataset: { testid: "order-team" } }],
        [t("wo_created"), `${formatTime(o.created_at)} · ${o.created_by}`],
        o.planned_for ? [t("wo_planned"), formatTime(o.planned_for)] : null,
        [t("wo_response_due"), formatTime(o.sla_response_due), late.response ? { class: "late" } : null],
        [t("wo_resolution_due"), formatTime(o.sla_resolution_due), late.resolution ? { class: "late" } : null],
        o.on_site_at ? [t("wo_on_site_at"), formatTime(o.on_site_at)] : null,
        o.done_at ? [t("wo_done_at"), formatTime(o.done_at)] : null,
        o.commune ? [t("f_commune"), this.communeName(o.commune)] : null,
        o.address ? [t("f_address"), o.address] : null,
        o.asset_id ? [t("sheet"), h("button", { type: "button", class: "link", onclick: () => this.onOpenAsset(o.asset_id) }, o.asset_id)] : null,
        o.alarm_id ? [t("wo_alarm"), `#${o.alarm_id}`] : null,
      ]),
      o.description ? h("p", { class: "order-text" }, o.description) : null,
      o.outcome_note ? h("p", { class: "order-text outcome" }, h("span", { class: "muted" }, `${t("wo_outcome")} `), o.outcome_note) : null,
      this._actions(),
      this.conflict ? this._conflictBox() : null,
      h("p", { class: "error", role: "alert", dataset: { testid: "order-error" }, hidden: true }),
      this._requests(o.requests || []),
      this._photos(o.photos || []),
      this._history(o.history || []),
    );
    // A form being typed in, or the team choice, survives a refresh from the feed.
    if (openForm) body.querySelector('[data-testid="order-actions"]').append(openForm);
    if (assignBox && ACTIONS.assign.states.includes(o.state)) body.querySelector('[data-testid="order-actions"]').append(assignBox);
    if (this.pendingLive) this._staleNotice(this.pendingLive);
  }

  _actions() {
    const o = this.order;
    const buttons = Object.entries(ACTIONS).filter(([, spec]) => (!spec.states || spec.states.includes(o.state))
      && (!spec.unconfirmed || !o.confirmed_at)).map(([action, spec]) => {
      const allowed = spec.who === "dispatch" ? this.mayDispatch() : this.mayComment();
      return h("button", { type: "button", class: `act act-${action}${action === "assign" ? " primary" : ""}`,
        dataset: { action }, disabled: !allowed || this.busy, title: allowed ? t(`wo_act_${action}_title`) : t("wo_act_not_allowed"),
        onclick: () => this._start(action) }, t(`wo_act_${action}`));
    });
    return h("section", { class: "sheet-section" }, h("h3", null, t("wo_actions")),
      h("div", { class: "order-actions", dataset: { testid: "order-actions" } }, h("div", { class: "action-buttons" }, buttons)));
  }

  _start(action) {
    const spec = ACTIONS[action];
    this._clearForms();
    if (action === "assign") {
      this._assignBox();
    } else if (spec.text) {
      this._form(action, spec.text);
    } else {
      this._send(action, {});
    }
  }

  _clearForms() {
    for (const el of this.root.querySelectorAll('[data-testid="order-form"], [data-testid="assign-box"]')) el.remove();
  }

  _form(action, field) {
    const area = h("textarea", { name: field, required: true, maxlength: "4000", rows: "3", "aria-label": t(`wo_field_${field}`),
      placeholder: t(`wo_field_${field}`) });
    const form = h("form", { class: "action-form", dataset: { testid: "order-form", action } }, area,
      h("div", { class: "form-buttons" },
        h("button", { type: "submit", class: "primary" }, t(`wo_act_${action}`)),
        h("button", { type: "button", onclick: () => form.remove() }, t("act_cancel"))));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this._send(action, { [field]: area.value.trim() });
    });
    form.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.stopPropagation();
        form.remove();
      }
    });
    this.root.querySelector('[data-testid="order-actions"]').append(form);
    area.focus();
  }

  async _assignBox() {
    const o = this.order;
    const box = h("div", { class: "assign-box", dataset: { testid: "assign-box" } }, h("p", { class: "muted" }, t("wo_recommending")));
    this.root.querySelector('[data-testid="order-actions"]').append(box);
    box.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.stopPropagation();
        box.remove();
      }
    });
    const [advice, teams] = await Promise.all([
      api(`/api/v1/work-orders/${o.id}/recommendations?limit=5`).catch((err) => ({ error: err })),
      api(`/api/v1/teams?service=${encodeURIComponent(o.service)}`).catch(() => ({ items: [] })),
    ]);
    if (!box.isConnected) return;
    const assignButton = (teamId) => h("button", { type: "button", class: "primary", dataset: { action: "assign-team", teamId },
      onclick: () => this._send("assign", { team_id: teamId }) }, t("wo_act_assign"));
    const parts = [];
    if (advice.error) {
      parts.push(h("p", { class: "error" }, `${t("error")}: ${advice.error.detail || advice.error.message}`));
    } else {
      parts.push(h("h4", null, t("wo_recommended")), h("p", { class: "muted small routing" },
        t("wo_routing", { how: has(`routing_${advice.routing}`) ? t(`routing_${advice.routing}`) : advice.routing })));
      parts.push(advice.recommendations.length ? h("ol", { class: "recommendations" }, advice.recommendations.map((r) => h("li", {
        dataset: { testid: "recommendation", teamId: r.team_id } },
      h("div", { class: "rec-main" }, h("strong", null, r.name || r.team_id), ` · ${r.team_id}`,
        h("div", { class: "rec-meta" },
          h("span", null, `${formatNumber(r.distance_m / 1000, 1)} km`),
          h("span", null, t("wo_eta", { t: formatDuration(r.travel_s) })),
          h("span", null, teamStatusLabel(r.status)),
          h("span", { class: "muted" }, t("team_position_age", { age: formatDuration(r.position_age_s) })))),
      r.team_id === o.team_id && o.state === "assigned" ? h("span", { class: "muted small" }, t("wo_current_team")) : assignButton(r.team_id))))
        : h("p", { class: "muted" }, t("wo_no_recommendation")));
      if (advice.excluded.length) {
        parts.push(h("h4", null, t("wo_excluded")), h("ul", { class: "excluded" }, advice.excluded.map((e) => h("li", {
          dataset: { testid: "excluded", teamId: e.team_id } }, h("strong", null, e.team_id), `: ${e.reason}`))));
      }
    }
    const recommended = new Set(advice.error ? [] : advice.recommendations.map((r) => r.team_id));
    const others = teams.items.filter((team) => !recommended.has(team.id) && (team.id !== o.team_id || o.state !== "assigned"));
    if (others.length) {
      const select = h("select", { "aria-label": t("wo_other_team") }, others.map((team) => new Option(`${team.name} (${team.id}) · ${teamStatusLabel(team.effective_status || team.status)}`, team.id)));
      parts.push(h("div", { class: "other-team" }, h("label", null, t("wo_other_team"), " ", select),
        h("button", { type: "button", onclick: () => this._send("assign", { team_id: select.value }) }, t("wo_act_assign"))));
    }
    parts.push(h("div", { class: "form-buttons" }, h("button", { type: "button", class: "cancel", onclick: () => box.remove() }, t("act_cancel"))));
    box.replaceChildren(...parts);
    box.querySelector("button.primary, select")?.focus();
  }

  async _send(action, body) {
    const o = this.order;
    if (!o || this.busy) return;
    this.busy = true;
    const error = () => this.root.querySelector('[data-testid="order-error"]');
    for (const b of this.root.querySelectorAll(".order-actions button")) b.disabled = true;
    try {
      if (action === "comment") {
        await api(`/api/v1/work-orders/${o.id}/comments`, { method: "POST", body });
      } else {
        const updated = await api(`/api/v1/work-orders/${o.id}/${action}`, { method: "POST", body,
          headers: { "If-Match": `"${o.version}"` } });
        this.store.putOrder(updated);
        this.order = { ...o, ...updated };
      }
      this.conflict = null;
      this.pendingLive = null;
      this.notice = t(`wo_sent_${action}`, { team: body.team_id || "" });
      this._clearForms();
      this.busy = false;
      this.render();
      await this._reload();
    } catch (err) {
      this.busy = false;
      if (err instanceof ApiError && err.status === 409 && err.type === "version-conflict" && err.body?.current) {
        // Someone else's change came first: show the order as it is now; the user decides.
        this.conflict = { action, body, mine: o.version, current: err.body.current, detail: err.detail };
        this.pendingLive = null;
        this.order = { ...o, ...err.body.current };
        this.store.putOrder(err.body.current);
        this._clearForms();
        this.notice = "";
        this.render();
        this._reload();
        this.root.querySelector('[data-testid="order-conflict"] button')?.focus();
        return;
      }
      this.render();
      const box = error();
      box.textContent = `${t("error")}: ${err.detail || err.message}`;
      box.hidden = false;
    }
  }

  _conflictBox() {
    const c = this.conflict;
    const now = c.current;
    const redo = () => {
      this.conflict = null;
      this._send(c.action, c.body); // with the version now shown
    };
    const applies = !ACTIONS[c.action].states || (ACTIONS[c.action].states.includes(now.state) && !(ACTIONS[c.action].unconfirmed && now.confirmed_at));
    return h("div", { class: "conflict", role: "alert", dataset: { testid: "order-conflict" } },
      h("p", null, h("strong", null, t("wo_conflict_title"))),
      h("p", null, t("wo_conflict_text", { mine: c.mine, v: now.version, state: stateLabel(now.state),
        team: now.team_id || t("wo_no_team") })),
      h("p", { class: "muted small" }, t("wo_conflict_yours", { action: t(`wo_act_${c.action}`) })),
      h("div", { class: "form-buttons" },
        h("button", { type: "button", class: "primary", disabled: !applies, dataset: { action: "redo" }, onclick: redo },
          t("wo_conflict_redo")),
        h("button", { type: "button", dataset: { action: "forget" }, onclick: () => { this.conflict = null; this.render(); } },
          t("wo_conflict_forget"))),
      applies ? null : h("p", { class: "muted small" }, t("wo_conflict_not_applicable")));
  }

  _requests(requests) {
    if (!requests.length) return null;
    return h("section", { class: "sheet-section" }, h("h3", null, t("wo_requests")),
      h("ul", { class: "order-requests", dataset: { testid: "order-requests" } }, requests.map((r) => h("li", null,
        h("div", null, h("strong", null, `#${r.id}`), ` ${this.categoryName(r.service_code)} · ${t(`req_status_${r.status}`)}`,
          r.reports > 1 ? h("span", { class: "muted" }, ` · ${t("req_reports", { n: r.reports })}`) : null),
        r.address ? h("div", { class: "muted small" }, r.address) : null,
        r.description ? h("div", { class: "order-text" }, r.description) : null,
        attributesText(r.attributes) ? h("div", { class: "muted small" }, attributesText(r.attributes)) : null,
        r.status_notes ? h("div", { class: "muted small" }, `${t("req_notes")} ${r.status_notes}`) : null))));
  }

  _photos(photos) {
    if (!photos.length) return null;
    return h("section", { class: "sheet-section" }, h("h3", null, t("wo_photos")),
      h("div", { class: "photos", dataset: { testid: "order-photos" } }, photos.map((p) => h("a", { href: p.url, target: "_blank",
        rel: "noopener", title: `${p.uploaded_by} · ${formatTime(p.uploaded_at)}` },
      h("img", { src: p.url, alt: t("wo_photo_alt", { by: p.uploaded_by }), loading: "lazy", width: "96", height: "72" })))));
  }

  _history(history) {
    return h("section", { class: "sheet-section" }, h("h3", null, t("sheet_history")),
      history.length ? h("ol", { class: "history", dataset: { testid: "order-history" } }, history.map((e) => h("li", null,
        h("span", { class: "event-time" }, formatTime(e.at)), " ", h("span", null, e.summary),
        e.data && e.data.note ? h("div", { class: "muted small" }, e.data.note) : null)))
        : h("p", { class: "muted" }, t("sheet_no_history")));
  }
}

export function attributesText(attributes) {
  if (!attributes || typeof attributes !== "object") return "";
  return Object.entries(attributes).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(", ") : v}`).join(" · ");
}

// The name of a request category in the page's language (from GET /api/v1/requests/services).
export function categoryNamer(categories) {
  return (code) => {
    const c = categories().find((s) => s.code === code);
    if (!c) return code;
    return lang() === "fr" && c.name_fr ? c.name_fr : c.name;
  };
}
