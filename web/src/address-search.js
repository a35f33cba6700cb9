// A type-ahead on the local address index (GET /api/v1/addresses: the registry's streets, no online
// geocoder): the suggestions follow the typing; ↓/↑ move among them, Enter picks (the first one when
// none is highlighted), Esc closes them. A WAI-ARIA combobox with a listbox of options.

import { api, query } from "./api.js";
import { h } from "./dom.js";
import { t } from "./i18n.js";

const DELAY_MS = 120;
const LIMIT = 8;

export class AddressSearch {
  constructor({ input, listbox, onPick, onType }) {
    this.input = input;
    this.listbox = listbox;
    this.onPick = onPick;
    this.onType = onType;
    this.items = [];
    this.active = -1;
    this.timer = 0;
    this.controller = null;
    input.setAttribute("role", "combobox");
    input.setAttribute("aria-autocomplete", "list");
    input.setAttribute("aria-expanded", "false");
    input.setAttribute("aria-controls", listbox.id);
    input.setAttribute("autocomplete", "off");
    listbox.setAttribute("role", "listbox");
    input.addEventListener("input", () => {
      this.onType();
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.search(), DELAY_MS);
    });
    input.addEventListener("keydown", (event) => this._key(event));
    input.addEventListener("blur", () => setTimeout(() => this.close(), 150));
  }

  async search() {
    const text = this.input.value.trim();
    if (this.controller) this.controller.abort();
    if (text.length < 2) {
      this.close();
      return;
    }
    this.controller = new AbortController();
    try {
      const data = await api(`/api/v1/addresses${query({ q: text, limit: LIMIT })}`, { signal: this.controller.signal });
      if (text !== this.input.value.trim()) return;
      this.items = data.items;
      this.active = -1;
      this.render();
    } catch (err) {
      if (err.name !== "AbortError") this.close();
    }
  }

  render() {
    const id = this.listbox.id;
    if (!this.items.length) {
      this.listbox.replaceChildren(h("li", { class: "muted", role: "presentation" }, t("call_no_address")));
    } else {
      this.listbox.replaceChildren(...this.items.map((a, k) => h("li", {
        id: `${id}-${k}`, role: "option", "aria-selected": String(k === this.active), class: k === this.active ? "active" : null,
        dataset: { testid: "address-option", index: String(k) },
        onmousedown: (event) => { event.preventDefault(); this.pick(k); },
      }, a.label, a.exact ? null : h("span", { class: "muted small" }, ` (${t("call_address_approx")})`))));
    }
    this.listbox.hidden = false;
    this.input.setAttribute("aria-expanded", "true");
    if (this.active >= 0) this.input.setAttribute("aria-activedescendant", `${id}-${this.active}`);
    else this.input.removeAttribute("aria-activedescendant");
  }

  get isOpen() {
    return !this.listbox.hidden;
  }

  close() {
    this.listbox.hidden = true;
    this.input.setAttribute("aria-expanded", "false");
    this.input.removeAttribute("aria-activedescendant");
  }

  pick(k) {
    const address = this.items[k];
    if (!address) return;
    this.input.value = address.label;
    this.close();
    this.onPick(address);
  }

  _key(event) {
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      if (!this.isOpen) {
        if (this.items.length) this.render();
        return;
      }
      const n = this.items.length;
      if (!n) return;
      this.active = event.key === "ArrowDown" ? (this.active + 1) % n : (this.active - 1 + n) % n;
      this.render();
    } else if (event.key === "Enter") {
      if (this.isOpen && this.items.length) {
        event.preventDefault();
        this.pick(Math.max(this.active, 0));
      }
    } else if (event.key === "Escape" && this.isOpen) {
      event.preventDefault();
      event.stopPropagation();
      this.close();
    }
  }

  reset() {
    this.items = [];
    this.active = -1;
    this.input.value = "";
    this.close();
  }
}
