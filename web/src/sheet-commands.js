// The asset sheet's commands: one button per command of the asset's kind (enabled for the roles the
// catalogue lists), an inline form typed from the command's parameters with the reason, a preview (the
// server's dry run), sending, the confirmation step, following the batch to each device's answer, and
// the asset's recent commands. The server checks everything (parameters, role, interlocks): the form
// never second-guesses it and shows its problem documents where they belong.

import { api, ApiError, NetworkError, query } from "./api.js";
import { h } from "./dom.js";
import { formatDuration, formatNumber, formatTime, lang, t } from "./i18n.js";
import { uuid } from "./uuid.js";

const POLL_MS = 500;
const FOLLOW_MS = 30_000;
const HISTORY_LIMIT = 10;
const REASON_MIN = 3;
const REASON_MAX = 500;
const BATCH_OVER = new Set(["finished", "cancelled"]);
const OUTCOMES = new Set(["requested", "sent", "done", "rejected", "failed", "timed_out", "expired", "refused", "cancelled"]);

export function paramsText(params) {
  return Object.entries(params || {}).map(([k, v]) => `${k}=${typeof v === "number" ? formatNumber(v, 2) : v}`).join(", ");
}

function statusLabel(status) {
  return OUTCOMES.has(status) ? t(`cmd_status_${status}`) : String(status);
}

function commandLabel(name, spec) {
  if (!spec) return name;
  return (lang() === "fr" && spec.label_fr) || spec.label || name;
}

export class SheetCommands {
  // spec: the kind's catalogue entry; user: () => {username, role, service}.
  constructor({ asset, spec, user }) {
    this.asset = asset;
    this.spec = spec;
    this.user = user;
    this.open = null; // the command whose form is shown
    this.values = {}; // what was typed, kept across a redraw (a language switch)
    this.reason = "";
    this.busy = false;
    this.preview = null; // {data} or {error}
    this.error = null; // an ApiError or NetworkError of the last request
    this.batch = null; // the batch sent, as the server last described it
    this.following = false;
    this.followToken = 0;
    this.attempt = null; // {body, key}: the Idempotency-Key of a request whose answer never came
    this.history = null; // the asset's recent commands, or {error}
    this.who = new Map(); // batch id -> who asked (a batch never changes hands)
    this.historyTimer = 0;
    this.awaitingConfirm = false;
    this.el = {};
  }

  get commands() {
    return Object.entries(this.spec?.commands || {});
  }

  // Why the user may not send this command, or null.
  refusal(c) {
    const me = this.user() || {};
    if (!(c.roles || []).includes(me.role)) return t("cmd_roles_only", { roles: (c.roles || []).join(", ") });
    if (me.role === "service_coordinator" && me.service && this.asset.service && me.service !== this.asset.service) {
      return t("cmd_other_service", { service: this.asset.service });
    }
    return null;
  }

  view() {
    const commands = this.commands;
    const buttons = commands.length ? h("div", { class: "commands", role: "group", "aria-label": t("sheet_commands") },
      commands.map(([name, c]) => {
        const why = this.refusal(c);
        return h("button", {
          type: "button", class: `command${this.open === name ? " active" : ""}`, disabled: Boolean(why),
          "aria-disabled": why ? "true" : null, "aria-expanded": why ? null : String(this.open === name),
          "aria-controls": why ? null : "command-form", title: why || commandLabel(name, c),
          dataset: { command: name, testid: "command-button" }, onclick: () => this.toggle(name),
        }, commandLabel(name, c));
      })) : h("p", { class: "muted" }, "—");
    // A disabled button's tooltip is out of the keyboard's reach: why, in words, under the buttons.
    const whys = [...new Set(commands.map(([, c]) => this.refusal(c)).filter(Boolean))];
    const note = whys.length ? h("p", { class: "muted small", dataset: { testid: "command-roles-note" } }, whys.join(" · ")) : null;
    this.el.formBox = h("div", { class: "command-form-box" });
    this.el.history = h("div", { class: "command-history-box" });
    this._drawForm();
    this._drawHistory();
    const root = h("div", { class: "commands-box" }, buttons, note, this.el.formBox,
      h("h4", { class: "subhead" }, t("cmd_recent")), this.el.history);
    this.el.root = root;
    if (this.history === null) this.loadHistory();
    return root;
  }

  toggle(name) {
    if (this.busy) return;
    this.stopFollowing();
    this.open = this.open === name ? null : name;
    this.values = {};
    this.reason = ""; // a reason is given for one command, not carried over to another
    this.preview = null;
    this.error = null;
    this.batch = null;
    this.attempt = null;
    this._redrawButtons();
    this._drawForm();
    if (this.open) this.el.formBox.querySelector("input, select, textarea")?.focus();
  }

  close() {
    const name = this.open;
    this.toggle(this.open);
    this.el.root?.querySelector(`button.command[data-command="${CSS.escape(name || "")}"]`)?.focus();
  }

  // The sheet closed or shows another asset: stop following the batch.
  destroy() {
    this.stopFollowing();
    clearTimeout(this.historyTimer);
    this.el = {};
  }

  _redrawButtons() {
    for (const button of this.el.root?.querySelectorAll("button.command") || []) {
      const on = button.dataset.command === this.open;
      button.classList.toggle("active", on);
      if (!button.disabled) button.setAttribute("aria-expanded", String(on));
    }
  }

  // --- the form -------------------------------------------------------------------------------------

  _drawForm() {
    const box = this.el.formBox;
    if (!box) return;
    const c = this.open && this.spec?.commands?.[this.open];
    if (!c) {
      box.replaceChildren();
      return;
    }
    const name = this.open;
    const fields = Object.entries(c.params || {}).map(([param, p]) => this._field(param, p));
    const reasonId = "command-reason";
    const reason = h("textarea", { id: reasonId, name: "reason", rows: "2", required: true, minlength: String(REASON_MIN),
      maxlength: String(REASON_MAX), "aria-describedby": "command-reason-hint", dataset: { testid: "command-reason" },
      oninput: (event) => { this.reason = event.currentTarget.value; } });
    reason.value = this.reason;
    this.el.send = h("button", { type: "submit", class: "primary", dataset: { action: "send" }, disabled: this.busy || null },
      t("cmd_send"));
    this.el.previewButton = h("button", { type: "button", dataset: { action: "preview" }, disabled: this.busy || null,
      onclick: () => this.runPreview() }, t("cmd_preview"));
    this.el.previewBox = h("div", { class: "command-preview", dataset: { testid: "command-preview" }, "aria-live": "polite" });
    this.el.errorBox = h("div", { class: "command-error-box" });
    this.el.resultBox = h("div", { class: "command-result-box", "aria-live": "polite" });
    const form = h("form", { id: "command-form", class: "action-form command-form", novalidate: true,
      "aria-label": commandLabel(name, c), dataset: { testid: "command-form", command: name } },
      h("p", { class: "command-title" }, commandLabel(name, c),
        c.confirm ? h("span", { class: "tag" }, t("cmd_tag_confirm")) : null,
        c.approval ? h("span", { class: "tag" }, t("cmd_tag_approval")) : null),
      fields,
      h("div", { class: "question" },
        h("label", { for: reasonId }, `${t("reason")} *`), reason,
        h("p", { id: "command-reason-hint", class: "muted small" }, t("cmd_reason_hint", { min: REASON_MIN, max: REASON_MAX })),
        h("p", { class: "field-error", role: "alert", hidden: true, dataset: { errorFor: "reason" } })),
      h("div", { class: "form-buttons" }, this.el.previewButton, this.el.send,
        h("button", { type: "button", dataset: { action: "close" }, onclick: () => this.close() }, t("close"))),
      this.el.errorBox, this.el.previewBox, this.el.resultBox);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.send();
    });
    form.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.stopPropagation(); // the form closes, not the sheet
        if (!this.busy) this.close();
      }
    });
    box.replaceChildren(form);
    this._drawPreview();
    this._drawError();
    this._drawResult();
  }

  _field(param, p) {
    const id = `command-param-${param}`;
    const label = `${p.label || param}${p.unit ? ` (${p.unit})` : ""}${p.required ? " *" : ""}`;
    const kept = this.values[param];
    const key = `params.${param}`; // as the server names it in a problem's `field`
    const common = { id, name: key, required: p.required || null, dataset: { param } };
    let control;
    if (Array.isArray(p.enum)) {
      control = h("select", { ...common, onchange: (e) => { this.values[param] = e.currentTarget.value; } },
        h("option", { value: "" }, p.required ? t("cmd_choose") : "—"),
        p.enum.map((v) => h("option", { value: String(v), selected: String(v) === kept }, String(v))));
    } else if (p.type === "integer" || p.type === "number") {
      control = h("input", { ...common, type: "number", inputmode: p.type === "integer" ? "numeric" : "decimal",
        step: p.type === "integer" ? "1" : "any", min: p.min ?? null, max: p.max ?? null,
        oninput: (e) => { this.values[param] = e.currentTarget.value; } });
      if (kept !== undefined) control.value = kept;
    } else if (p.type === "boolean") {
      control = h("input", { ...common, type: "checkbox", checked: kept === true || null, required: null,
        onchange: (e) => { this.values[param] = e.currentTarget.checked; } });
      return h("div", { class: "question" }, h("label", { class: "check" }, control, " ", label),
        h("p", { class: "field-error", role: "alert", hidden: true, dataset: { errorFor: key } }));
    } else {
      control = h("input", { ...common, type: "text", maxlength: "500",
        oninput: (e) => { this.values[param] = e.currentTarget.value; } });
      if (kept !== undefined) control.value = kept;
    }
    const range = p.min != null || p.max != null ? h("p", { class: "muted small" },
      t("cmd_range", { min: p.min ?? "…", max: p.max ?? "…" })) : null;
    return h("div", { class: "question" }, h("label", { for: id }, label), control, range,
      h("p", { class: "field-error", role: "alert", hidden: true, dataset: { errorFor: key } }));
  }

  // The parameters as typed, in the JSON types the catalogue gives (empty ones left out).
  _params() {
    const c = this.spec.commands[this.open];
    const out = {};
    for (const [param, p] of Object.entries(c.params || {})) {
      const el = this.el.formBox.querySelector(`[data-param="${CSS.escape(param)}"]`);
      if (!el) continue;
      if (p.type === "boolean") {
        out[param] = el.checked;
        continue;
      }
      const text = el.value.trim();
      if (text === "") continue;
      if (Array.isArray(p.enum)) {
        const match = p.enum.find((v) => String(v) === text);
        out[param] = match === undefined ? text : match;
      } else if (p.type === "integer" || p.type === "number") {
        const n = Number(text.replace(",", "."));
        out[param] = Number.isFinite(n) ? n : text; // the server says what is wrong with it
      } else {
        out[param] = text;
      }
    }
    return out;
  }

  _targets() {
    return { command: this.open, assets: [this.asset.id], params: this._params() };
  }

  // While a request is in flight no other goes: Send, Preview, Confirm and Cancel wait for its answer.
  _setBusy(busy) {
    this.busy = busy;
    const form = this.el.formBox?.querySelector("form");
    if (!form) return;
    for (const button of form.querySelectorAll('button[data-action]:not([data-action="close"])')) button.disabled = busy;
    form.setAttribute("aria-busy", String(busy));
    if (!busy && this.awaitingConfirm) { // the confirmation step just came: Enter (or Space) confirms
      this.awaitingConfirm = false;
      form.querySelector('[data-action="confirm"]')?.focus();
    }
  }

  _clearErrors() {
    this.error = null;
    const form = this.el.formBox?.querySelector("form");
    if (!form) return;
    for (const el of form.querySelectorAll(".field-error")) {
      el.hidden = true;
      el.textContent = "";
    }
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    this._drawError();
  }

  // A problem naming a field (`params.level_pct`, `reason`, or pydantic's `errors`): shown under it.
  _fieldError(field, message) {
    const form = this.el.formBox?.querySelector("form");
    const box = form?.querySelector(`.field-error[data-error-for="${CSS.escape(field)}"]`);
    if (!box) return false;
    box.textContent = message;
    box.hidden = false;
    form.querySelector(`[name="${CSS.escape(field)}"]`)?.setAttribute("aria-invalid", "true");
    return true;
  }

  _showError(err) {
    this.error = err;
    this._drawError();
    const body = err instanceof ApiError ? err.body : null;
    let marked = false;
    if (body && typeof body.field === "string") marked = this._fieldError(body.field, err.detail || err.message);
    for (const e of (body && Array.isArray(body.errors) ? body.errors : [])) {
      if (e && typeof e.field === "string") marked = this._fieldError(e.field, e.message || err.detail) || marked;
    }
    if (marked) this.el.formBox.querySelector('[aria-invalid="true"]')?.focus();
  }

  _drawError() {
    const box = this.el.errorBox;
    if (!box) return;
    const err = this.error;
    if (!err) {
      box.replaceChildren();
      return;
    }
    const detail = err instanceof NetworkError ? t("cmd_unreachable") : err.detail || err.message;
    const body = err instanceof ApiError ? err.body : null;
    const refused = body && Array.isArray(body.refused) && body.refused.length > 1 ? body.refused : [];
    box.replaceChildren(h("div", { class: "command-error", role: "alert", dataset: { testid: "command-error",
      status: String(err.status || ""), field: (body && body.field) || "" } },
    h("p", null, `${err.status ? `${err.status} · ` : ""}${detail}`),
    refused.length ? h("ul", null, refused.map((r) => h("li", null, `${r.asset_id}: ${r.reason}`))) : null));
  }

  // --- preview ---------------------------------------------------------------------------------------

  async runPreview() {
    if (this.busy || !this.open) return;
    this._clearErrors();
    this.preview = null;
    this._drawPreview();
    this._setBusy(true);
    const command = this.open;
    try {
      const data = await api("/api/v1/commands/preview", { method: "POST", body: this._targets() });
      if (this.open !== command) return;
      this.preview = { data };
      this._drawPreview();
    } catch (err) {
      if (this.open === command) this._showError(err);
    } finally {
      this._setBusy(false);
    }
  }

  _drawPreview() {
    const box = this.el.previewBox;
    if (!box) return;
    const p = this.preview?.data;
    if (!p) {
      box.replaceChildren();
      box.hidden = true;
      return;
    }
    box.hidden = false;
    const lines = [];
    const mine = (p.refused || []).find((r) => r.asset_id === this.asset.id) || (p.refused || [])[0];
    if (!p.sendable) {
      lines.push(h("p", { class: "command-refused", dataset: { testid: "preview-refused" } },
        t("cmd_preview_refused", { reason: mine ? mine.reason : "—" })));
    } else {
      lines.push(h("p", null, t("cmd_preview_sendable", { n: p.sendable, total: p.assets })));
      if (mine) lines.push(h("p", { class: "command-refused" }, t("cmd_preview_refused", { reason: mine.reason })));
      if (p.needs_confirmation) lines.push(h("p", { class: "notice", dataset: { testid: "preview-confirm" } }, t("cmd_needs_confirmation")));
      if (p.needs_approval) lines.push(h("p", { class: "notice", dataset: { testid: "preview-approval" } }, t("cmd_needs_approval")));
    }
    lines.push(h("p", { class: "muted small" }, t("cmd_as_sent"), " ",
      h("code", null, `${p.command}(${paramsText(p.params)})`)));
    if (p.preview && typeof p.preview.message === "string") {
      lines.push(h("div", { class: "panel-preview", dataset: { testid: "panel-preview" } },
        h("p", { class: "muted small" }, t("cmd_panel_shows")),
        h("pre", { class: "panel-message" }, p.preview.message),
        p.preview.duration_s ? h("p", { class: "muted small" }, t("cmd_panel_cleared", { d: formatDuration(p.preview.duration_s) })) : null));
    }
    box.replaceChildren(h("p", { class: "subhead" }, t("cmd_preview_heading")), ...lines);
  }

  // --- sending, confirming, following -----------------------------------------------------------------

  async send() {
    if (this.busy || !this.open) return;
    this._clearErrors();
    const reason = (this.el.formBox.querySelector('[name="reason"]')?.value || "").trim();
    if (reason.length < REASON_MIN || reason.length > REASON_MAX) {
      this._fieldError("reason", t("cmd_reason_hint", { min: REASON_MIN, max: REASON_MAX }));
      this.el.formBox.querySelector('[name="reason"]')?.focus();
      return;
    }
    this.stopFollowing();
    this.batch = null;
    this._drawResult();
    const body = { ...this._targets(), reason };
    const text = JSON.stringify(body);
    // A fresh key for each click (Send is disabled while one is in flight, so a double click is one
    // command); the same key again only when the last try never got an answer, so that the server
    // answers with that batch rather than making a second one.
    const key = this.attempt && this.attempt.body === text ? this.attempt.key : uuid();
    this.attempt = { body: text, key };
    this._setBusy(true);
    const command = this.open;
    try {
      const batch = await api("/api/v1/commands", { method: "POST", body, headers: { "Idempotency-Key": key } });
      this.attempt = null;
      if (this.open !== command) return;
      this._followed(batch);
    } catch (err) {
      if (!(err instanceof NetworkError)) this.attempt = null;
      if (this.open === command) this._showError(err);
      if (err instanceof ApiError && err.status === 409 && err.body && err.body.batch_id) this.scheduleHistory();
    } finally {
      this._setBusy(false);
    }
  }

  async step(action) {
    if (this.busy || !this.batch) return;
    this._clearErrors();
    this._setBusy(true);
    try {
      const batch = await api(`/api/v1/commands/batches/${encodeURIComponent(this.batch.id)}/${action}`,
        { method: "POST", body: action === "cancel" ? { reason: t("cmd_cancel_reason") } : undefined });
      this._followed(batch);
    } catch (err) {
      this._showError(err); // expired, or already cancelled by a supervisor: the batch is as it was
    } finally {
      this._setBusy(false);
    }
  }

  // A batch as the server described it: show it and follow it while its commands wait for answers.
  _followed(batch) {
    this.batch = batch;
    this._drawResult();
    this.scheduleHistory();
    if (batch.status !== "pending_confirmation" && !BATCH_OVER.has(batch.status)) this.follow();
    else this.stopFollowing();
  }

  async follow() {
    const token = ++this.followToken;
    this.following = true;
    this._drawResult();
    const until = Date.now() + FOLLOW_MS;
    while (token === this.followToken && Date.now() < until) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      if (token !== this.followToken) return;
      try {
        const batch = await api(`/api/v1/commands/batches/${encodeURIComponent(this.batch.id)}`);
        if (token !== this.followToken) return;
        this.batch = batch;
        this._drawResult();
        if (BATCH_OVER.has(batch.status)) break;
      } catch {
        // a missed poll: the next one tries again
      }
    }
    if (token !== this.followToken) return;
    this.following = false;
    this._drawResult();
    this.scheduleHistory();
  }

  stopFollowing() {
    this.followToken++;
    this.following = false;
  }

  _drawResult() {
    const box = this.el.resultBox;
    if (!box) return;
    const b = this.batch;
    if (!b) {
      box.replaceChildren();
      return;
    }
    const parts = [h("p", { class: "subhead" }, t("cmd_batch_status", { status: t(`cmd_batch_${b.status}`) }),
      this.following ? h("span", { class: "muted small" }, ` · ${t("cmd_following")}`) : null)];
    if (b.status === "pending_confirmation") {
      parts.push(h("div", { class: "confirm-step", dataset: { testid: "command-confirm-step" } },
        h("p", null, t("cmd_confirm_prompt", { what: `${b.command}(${paramsText(b.params)})`, n: b.total })),
        h("div", { class: "form-buttons" },
          h("button", { type: "button", class: "primary", dataset: { action: "confirm" }, disabled: this.busy || null,
            onclick: () => this.step("confirm") }, t("cmd_confirm")),
          h("button", { type: "button", dataset: { action: "cancel" }, disabled: this.busy || null,
            onclick: () => this.step("cancel") }, t("act_cancel")))));
    } else if (b.status === "pending_approval") {
      parts.push(h("p", { class: "notice", dataset: { testid: "command-awaiting-approval" } }, t("cmd_awaiting_approval")));
      if (!this.following) parts.push(h("p", { class: "muted small" }, t("cmd_still_waiting")));
    } else if (b.status === "authorised" && !this.following) {
      parts.push(h("p", { class: "muted small" }, t("cmd_no_answer_yet")));
    }
    const items = b.items || [];
    if (items.length && b.status !== "pending_confirmation") {
      parts.push(h("ul", { class: "command-outcomes" }, items.map((i) => h("li", {
        class: `outcome outcome-${i.status}`, dataset: { testid: "command-outcome", asset: i.asset_id, status: i.status } },
      h("span", { class: `status-badge st-${i.status}` }, statusLabel(i.status)), " ",
      items.length > 1 || i.asset_id !== this.asset.id ? h("span", { class: "mono" }, `${i.asset_id} `) : null,
      i.reason ? h("span", { class: "outcome-reason" }, i.reason) : null))));
    }
    const hadFocus = box.contains(document.activeElement);
    box.replaceChildren(h("div", { class: "command-result", role: "status",
      dataset: { testid: "command-result", batchId: b.id, status: b.status } }, parts));
    if (b.status === "pending_confirmation") {
      this.awaitingConfirm = this.busy; // drawn by a request in flight: focus goes to Confirm when it settles
      if (!this.busy && hadFocus) box.querySelector('[data-action="confirm"]')?.focus();
    } else if (hadFocus) {
      this.el.formBox?.querySelector('[data-action="send"]')?.focus(); // the focused button is gone
    }
  }

  // --- the asset's recent commands ---------------------------------------------------------------------

  scheduleHistory() {
    clearTimeout(this.historyTimer);
    this.historyTimer = setTimeout(() => this.loadHistory(), 250);
  }

  async loadHistory() {
    const assetId = this.asset.id;
    try {
      const data = await api(`/api/v1/commands${query({ asset: assetId, limit: HISTORY_LIMIT })}`);
      for (const c of data.items) if (c.batch_id && c.requested_by) this.who.set(c.batch_id, c.requested_by);
      if (assetId !== this.asset.id) return;
      this.history = { items: data.items };
    } catch (err) {
      this.history = { error: err };
    }
    this._drawHistory();
  }

  _drawHistory() {
    const box = this.el.history;
    if (!box) return;
    const hst = this.history;
    if (!hst) {
      box.replaceChildren(h("p", { class: "muted small" }, t("sheet_loading")));
      return;
    }
    if (hst.error) {
      const forbidden = hst.error instanceof ApiError && hst.error.status === 403;
      box.replaceChildren(h("p", { class: "muted small" }, forbidden ? t("cmd_history_forbidden") : `${t("error")}: ${hst.error.detail || hst.error.message}`));
      return;
    }
    if (!hst.items.length) {
      box.replaceChildren(h("p", { class: "muted small", dataset: { testid: "command-history-empty" } }, t("cmd_history_none")));
      return;
    }
    box.replaceChildren(h("table", { class: "command-history", dataset: { testid: "command-history" } },
      h("thead", null, h("tr", null, ["cmd_when", "cmd_what", "cmd_who", "cmd_status"].map((k) => h("th", { scope: "col" }, t(k))))),
      h("tbody", null, hst.items.map((c) => h("tr", {
        dataset: { testid: "command-history-item", commandId: c.id, command: c.command, status: c.status } },
      h("td", { class: "mono" }, formatTime(c.created_at)),
      h("td", null, commandLabel(c.command, this.spec?.commands?.[c.command]),
        Object.keys(c.params || {}).length ? h("span", { class: "muted" }, ` (${paramsText(c.params)})`) : null,
        c.requested_reason ? h("span", { class: "muted small block" }, c.requested_reason) : null),
      h("td", null, c.requested_by || this.who.get(c.batch_id) || "—"),
      h("td", { title: c.reason || null },
        h("span", { class: `status-badge st-${c.status}` }, statusLabel(c.status)),
        c.reason ? h("span", { class: "muted small block" }, c.reason) : null))))));
  }
}
