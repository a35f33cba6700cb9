// The switchboard: a citizen's phone call logged as a request in a few keystrokes. "n" opens the form
// with the focus on its first field; Enter goes to the next field, Ctrl+Enter saves, Esc closes.
// The place is an address from the local index (type-ahead) or a click on the map. Before saving, the
// open requests of the same category nearby are listed, and the one the call would be linked to is
// named, so that the agent can tell the caller "already reported".

import { AddressSearch } from "./address-search.js";
import { api, ApiError } from "./api.js";
import { questionFields, readAnswers } from "./attributes-form.js";
import { fill, h, restoreFocus } from "./dom.js";
import { formatNumber, formatTime, lang, t } from "./i18n.js";

const LOCATION_FIELDS = new Set(["lat", "lon", "long", "address", "address_string", "address_id"]);

function labelled(id, key, control, errorFor) {
  return h("div", { class: "field" }, h("label", { for: id, dataset: { i18nKey: key } }, t(key)), control,
    h("p", { class: "field-error", role: "alert", hidden: true, dataset: { errorFor } }));
}

export class Switchboard {
  constructor({ root, onLocation, onSaved, flyTo }) {
    this.root = root;
    this.onLocation = onLocation; // ({lon, lat, nearby}) | null: the map marks the call's place
    this.onSaved = onSaved;
    this.flyTo = flyTo;
    this.categories = [];
    this.location = null; // {lat, lon, label, address_id, exact, from: "address" | "map"}
    this.nearby = null;
    this.nearbyToken = 0;
    this.returnFocus = null;
    this._build();
  }

  get isOpen() {
    return !this.root.hidden;
  }

  _build() {
    const input = (id, name, type, extra) => h("input", { id, name, type, ...extra });
    this.form = h("form", { id: "call-form", class: "call-form", novalidate: true, autocomplete: "off" },
      h("fieldset", { class: "call-caller" }, h("legend", { dataset: { i18nKey: "call_caller" } }, t("call_caller")),
        h("div", { class: "row" },
          labelled("call-first-name", "call_first_name", input("call-first-name", "first_name", "text", { maxlength: "100" }), "first_name"),
          labelled("call-last-name", "call_last_name", input("call-last-name", "last_name", "text", { maxlength: "100" }), "last_name")),
        h("div", { class: "row" },
          labelled("call-phone", "call_phone", input("call-phone", "phone", "tel", { maxlength: "30", inputmode: "tel" }), "phone"),
          labelled("call-email", "call_email", input("call-email", "email", "email", { maxlength: "254" }), "email"))),
      labelled("call-category", "call_category", h("select", { id: "call-category", name: "service_code", required: true }), "service_code"),
      h("div", { class: "questions", dataset: { testid: "call-questions" } }),
      h("fieldset", { class: "call-place" }, h("legend", { dataset: { i18nKey: "call_place" } }, t("call_place")),
        h("div", { class: "combo" },
          h("label", { for: "call-address", dataset: { i18nKey: "call_address" } }, t("call_address")),
          h("input", { id: "call-address", name: "address", type: "text", maxlength: "300", spellcheck: "false",
            placeholder: t("call_address_placeholder"), dataset: { i18nPlaceholderKey: "call_address_placeholder" } }),
          h("ul", { id: "call-address-list", class: "suggestions", hidden: true, dataset: { testid: "address-suggestions" } })),
        h("p", { class: "location", dataset: { testid: "call-location" }, "aria-live": "polite" }),
        h("p", { class: "field-error", role: "alert", hidden: true, dataset: { errorFor: "location" } })),
      labelled("call-description", "call_description", h("textarea", { id: "call-description", name: "description", rows: "3",
        maxlength: "4000" }), "description"),
      h("section", { class: "nearby", dataset: { testid: "call-nearby" }, "aria-live": "polite", hidden: true }),
      h("p", { class: "error", role: "alert", dataset: { testid: "call-error" }, hidden: true }),
      h("div", { class: "form-buttons" },
        h("button", { type: "submit", class: "primary", dataset: { testid: "call-save" }, title: "Ctrl+Enter" }, t("call_save")),
        h("button", { type: "button", dataset: { testid: "call-new" }, onclick: () => this.newCall() }, t("call_new"))));
    this.result = h("div", { class: "call-result", tabindex: "-1", dataset: { testid: "call-result" }, hidden: true, role: "status" });
    this.root.replaceChildren(
      h("header", { class: "panel-head" },
        h("h2", { id: "call-title" }, t("call_title")),
        h("span", { class: "muted small" }, t("call_keys")),
        h("button", { type: "button", class: "icon close", "aria-label": t("close"), title: t("close"), onclick: () => this.close() }, "×")),
      h("div", { class: "call-body" }, this.result, this.form));
    this.category = this.form.querySelector("#call-category");
    this.questions = this.form.querySelector(".questions");
    this.address = new AddressSearch({
      input: this.form.querySelector("#call-address"), listbox: this.form.querySelector("#call-address-list"),
      onPick: (a) => this.setLocation({ lat: a.lat, lon: a.lon, label: a.label, address_id: a.address_id, exact: a.exact, from: "address" }),
      onType: () => { if (this.location && this.location.from === "address") this.setLocation(null, { keepText: true }); },
    });
    this.category.addEventListener("change", () => { this._questions(); this._checkNearby(); });
    this.form.addEventListener("submit", (event) => { event.preventDefault(); this.save(); });
    this.form.addEventListener("keydown", (event) => this._key(event));
    this.root.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.stopPropagation();
        this.close();
      }
    });
  }

  async loadCategories() {
    if (this.categories.length) return this.categories;
    const data = await api("/api/v1/requests/services");
    this.categories = data.services;
    this._fillCategories();
    return this.categories;
  }

  categoryName(c) {
    return lang() === "fr" && c.name_fr ? c.name_fr : c.name;
  }

  _fillCategories() {
    const keep = this.category.value;
    const groups = new Map();
    for (const c of this.categories) {
      if (!groups.has(c.group)) groups.set(c.group, []);
      groups.get(c.group).push(c);
    }
    this.category.replaceChildren(new Option(t("call_choose"), ""), ...[...groups].map(([group, list]) =>
      h("optgroup", { label: group }, list.map((c) => new Option(this.categoryName(c), c.code)))));
    this.category.value = keep;
  }

  relabel() {
    for (const el of this.root.querySelectorAll("[data-i18n-key]")) el.textContent = t(el.dataset.i18nKey);
    for (const el of this.root.querySelectorAll("[data-i18n-placeholder-key]")) el.placeholder = t(el.dataset.i18nPlaceholderKey);
    this.root.querySelector("#call-title").textContent = t("call_title");
    this.form.querySelector('[data-testid="call-save"]').textContent = t("call_save");
    this.form.querySelector('[data-testid="call-new"]').textContent = t("call_new");
    if (this.categories.length) this._fillCategories();
    this._showLocation();
    this._renderNearby();
  }

  _selected() {
    return this.categories.find((c) => c.code === this.category.value) || null;
  }

  _questions() {
    const c = this._selected();
    this.questions.replaceChildren(...(c ? questionFields(c.attributes, "call-q") : []));
  }

  async open() {
    if (!this.isOpen) this.returnFocus = document.activeElement;
    this.root.hidden = false;
    document.querySelector('[data-testid="call-toggle"]')?.setAttribute("aria-expanded", "true");
    this.focusFirst();
    try {
      await this.loadCategories();
    } catch (err) {
      this._error(`${t("error")}: ${err.detail || err.message}`);
    }
  }

  focusFirst() {
    this.form.querySelector("#call-first-name").focus();
  }

  close() {
    if (!this.isOpen) return;
    this.root.hidden = true;
    document.querySelector('[data-testid="call-toggle"]')?.setAttribute("aria-expanded", "false");
    this.onLocation(null);
    restoreFocus(this.returnFocus, this.root);
  }

  toggle() {
    if (this.isOpen) this.close();
    else this.open();
  }

  // A new call: an empty form, the last result kept on screen until the next save.
  newCall({ keepResult = false } = {}) {
    this.form.reset();
    this.questions.replaceChildren();
    this.address.reset();
    this._clearErrors();
    if (!keepResult) this.result.hidden = true;
    this.setLocation(null);
    this.focusFirst();
  }

  // A click on the map while the form is open places the call there.
  placeAt(lngLat) {
    this.address.reset();
    this.setLocation({ lat: lngLat.lat, lon: lngLat.lng, label: null, address_id: null, exact: true, from: "map" });
  }

  setLocation(location, { keepText = false } = {}) {
    this.location = location;
    if (!location && !keepText) this.address.input.value = "";
    this._setError("location", "");
    this._showLocation();
    this.nearby = null;
    this._renderNearby();
    this.onLocation(location ? { lon: location.lon, lat: location.lat, nearby: [] } : null);
    if (location && location.from === "address") this.flyTo(location.lon, location.lat);
    this._checkNearby();
  }

  _showLocation() {
    const box = this.form.querySelector('[data-testid="call-location"]');
    const l = this.location;
    box.dataset.lat = l ? String(l.lat) : "";
    box.dataset.lon = l ? String(l.lon) : "";
    box.dataset.from = l ? l.from : "";
    if (!l) {
      box.textContent = t("call_place_hint");
      box.className = "location muted";
      return;
    }
    const where = l.label || `${l.lat.toFixed(5)}, ${l.lon.toFixed(5)}`;
    box.className = "location";
    box.textContent = `${where}${l.from === "map" ? ` (${t("call_from_map")})` : ""}${l.exact ? "" : ` (${t("call_address_approx")})`}`;
  }

  async _checkNearby() {
    const c = this._selected();
    const l = this.location;
    const token = ++this.nearbyToken;
    if (!c || !l) {
      this.nearby = null;
      this._renderNearby();
      return;
    }
    try {
      const params = new URLSearchParams({ service_code: c.code, lat: String(l.lat), lon: String(l.lon) });
      const data = await api(`/api/v1/requests/nearby?${params}`);
      if (token !== this.nearbyToken) return;
      this.nearby = data;
      this._renderNearby();
      this.onLocation({ lon: l.lon, lat: l.lat, nearby: data.items });
    } catch (err) {
      if (token !== this.nearbyToken) return;
      this.nearby = { error: err.detail || err.message, items: [] };
      this._renderNearby();
    }
  }

  _renderNearby() {
    const box = this.form.querySelector('[data-testid="call-nearby"]');
    const n = this.nearby;
    if (!n) {
      box.hidden = true;
      box.replaceChildren();
      return;
    }
    box.hidden = false;
    if (n.error) {
      box.replaceChildren(h("p", { class: "error" }, `${t("error")}: ${n.error}`));
      return;
    }
    const parts = [];
    const linked = n.items.find((r) => r.id === n.would_link_to);
    if (linked) {
      parts.push(h("p", { class: "duplicate", role: "alert", dataset: { testid: "duplicate-warning", requestId: String(linked.id) } },
        h("strong", null, t("call_duplicate_title")), " ",
        t("call_duplicate_text", { id: linked.id, n: linked.reports, when: formatTime(linked.requested_at) })));
    }
    parts.push(h("h3", null, n.items.length ? t("call_nearby", { r: n.radius_m }) : t("call_nearby_none", { r: n.radius_m })));
    if (n.items.length) {
      parts.push(h("ul", { class: "nearby-list" }, n.items.map((r) => h("li", { dataset: { testid: "nearby-item", requestId: String(r.id) },
        class: r.id === n.would_link_to ? "would-link" : null },
      h("strong", null, `#${r.id}`), ` · ${formatNumber(r.distance_m, 0)} m · ${t("req_reports", { n: r.reports })} · ${formatTime(r.requested_at)}`,
      r.address ? h("div", { class: "muted small" }, r.address) : null,
      r.description ? h("div", { class: "small" }, r.description.slice(0, 160)) : null,
      r.status_notes ? h("div", { class: "muted small" }, `${t("req_notes")} ${r.status_notes}`) : null))));
    }
    box.replaceChildren(...parts);
  }

  _key(event) {
    const target = event.target;
    if (event.key !== "Enter" || event.defaultPrevented) return;
    if (event.ctrlKey || event.metaKey) {
      event.preventDefault();
      this.save();
      return;
    }
    // Enter in a one-line field goes to the next field (the form is saved with Ctrl+Enter or the button).
    if (target.tagName === "INPUT" && target.type !== "checkbox") {
      event.preventDefault();
      const fields = [...this.form.querySelectorAll("input, select, textarea, button")].filter((el) => !el.disabled && el.offsetParent !== null);
      const next = fields[fields.indexOf(target) + 1];
      if (next) next.focus();
    }
  }

  _clearErrors() {
    for (const el of this.root.querySelectorAll(".field-error")) {
      el.hidden = true;
      el.textContent = "";
    }
    for (const el of this.root.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    this._error("");
  }

  _setError(field, message) {
    const key = LOCATION_FIELDS.has(field) ? "location" : field;
    const box = this.root.querySelector(`.field-error[data-error-for="${CSS.escape(key)}"]`);
    if (!box) return false;
    box.textContent = message;
    box.hidden = !message;
    const control = key === "location" ? this.address.input : this.form.querySelector(`[name="${CSS.escape(key)}"]`);
    if (control) {
      if (message) control.setAttribute("aria-invalid", "true");
      else control.removeAttribute("aria-invalid");
    }
    return true;
  }

  _error(message) {
    const box = this.form.querySelector('[data-testid="call-error"]');
    box.textContent = message;
    box.hidden = !message;
  }

  _body() {
    const c = this._selected();
    const data = new FormData(this.form);
    const text = (name) => String(data.get(name) || "").trim() || null;
    const body = { service_code: c ? c.code : "", first_name: text("first_name"), last_name: text("last_name"),
      phone: text("phone"), email: text("email"), description: text("description"),
      attributes: c ? readAnswers(this.questions, c.attributes) : {} };
    const l = this.location;
    if (l) {
      Object.assign(body, { lat: l.lat, lon: l.lon });
      if (l.label) body.address = l.label;
      if (l.address_id) body.address_id = l.address_id;
    } else if (text("address")) {
      body.address = text("address"); // not picked: the server looks it up in the same index
    }
    for (const key of Object.keys(body)) if (body[key] === null) delete body[key];
    return body;
  }

  async save() {
    this._clearErrors();
    const body = this._body();
    let missing = false;
    if (!body.service_code) missing = this._setError("service_code", t("call_need_category"));
    if (body.lat === undefined && !body.address) missing = this._setError("location", t("call_need_place")) || missing;
    if (missing) {
      this.root.querySelector('[aria-invalid="true"]')?.focus();
      return;
    }
    const button = this.form.querySelector('[data-testid="call-save"]');
    button.disabled = true;
    try {
      const { status, data } = await api("/api/v1/requests", { method: "POST", body, withStatus: true });
      this._showResult(data, status);
      this.onSaved(data);
      this.newCall({ keepResult: true });
      this.result.focus();
    } catch (err) {
      this._showProblem(err);
    } finally {
      button.disabled = false;
    }
  }

  _showProblem(err) {
    let placed = false;
    const body = err instanceof ApiError ? err.body : null;
    if (body && body.field) placed = this._setError(body.field, err.detail);
    for (const e of (body && body.errors) || []) placed = this._setError(String(e.field).split(".")[0], e.message) || placed;
    if (!placed) this._error(`${t("error")}: ${err.detail || err.message}`);
    this.root.querySelector('[aria-invalid="true"]')?.focus();
  }

  _showResult(request, status) {
    const linked = status === 200 || request.linked;
    this.result.dataset.requestId = String(request.id);
    this.result.dataset.linked = String(Boolean(linked));
    this.result.className = `call-result${linked ? " linked" : ""}`;
    fill(this.result,
      h("p", null, h("strong", null, linked ? t("call_saved_linked", { id: request.id }) : t("call_saved_new", { id: request.id }))),
      h("p", { class: "small" }, linked ? t("call_saved_linked_text", { n: request.reports })
        : t("call_saved_new_text", { when: request.expected_at ? formatTime(request.expected_at) : "—" })),
      request.work_order_id ? h("p", { class: "muted small" }, t("call_work_order", { id: request.work_order_id })) : null);
    this.result.hidden = false;
  }
}
