// A request category's extra questions (its Open311 attributes), as form fields by datatype: string
// (one line), number, datetime, text (several lines), singlevaluelist (a choice), multivaluelist
// (ticks); and the answers read back in the form the API takes (datetime with its time zone).

import { h } from "./dom.js";
import { t } from "./i18n.js";

export function fieldName(code) {
  return `attribute[${code}]`;
}

function control(a, id) {
  const name = fieldName(a.code);
  const common = { id, name, required: a.required || null, dataset: { attribute: a.code, datatype: a.datatype } };
  switch (a.datatype) {
    case "number":
      return h("input", { ...common, type: "number", step: "any", inputmode: "decimal" });
    case "datetime":
      return h("input", { ...common, type: "datetime-local" });
    case "text":
      return h("textarea", { ...common, rows: "2", maxlength: "4000" });
    case "singlevaluelist":
      return h("select", common, new Option(a.required ? t("call_choose") : "—", ""),
        ...a.values.map((v) => new Option(v.name, v.key)));
    case "multivaluelist":
      return h("div", { class: "choices", role: "group", id, dataset: { attribute: a.code, datatype: a.datatype } },
        a.values.map((v) => h("label", { class: "check" },
          h("input", { type: "checkbox", name, value: v.key }), " ", v.name)));
    default:
      return h("input", { ...common, type: "text", maxlength: "200" });
  }
}

// The questions of a category, in their order; `prefix` makes the ids unique in the page.
export function questionFields(attributes, prefix) {
  const sorted = [...attributes].sort((x, y) => x.order - y.order);
  return sorted.map((a) => {
    const id = `${prefix}-${a.code}`;
    const label = `${a.description || a.code}${a.required ? " *" : ""}`;
    const field = control(a, id);
    const error = h("p", { class: "field-error", role: "alert", hidden: true, dataset: { errorFor: fieldName(a.code) } });
    if (a.datatype === "multivaluelist") {
      return h("fieldset", { class: "question" }, h("legend", null, label), field, error);
    }
    return h("div", { class: "question" }, h("label", { for: id }, label), field,
      a.datatype_description ? h("p", { class: "muted small" }, a.datatype_description) : null, error);
  });
}

// The answers given (empty ones left out), as the API takes them.
export function readAnswers(root, attributes) {
  const out = {};
  for (const a of attributes) {
    const name = fieldName(a.code);
    if (a.datatype === "multivaluelist") {
      const keys = [...root.querySelectorAll(`input[name="${CSS.escape(name)}"]:checked`)].map((el) => el.value);
      if (keys.length) out[a.code] = keys;
      continue;
    }
    const el = root.querySelector(`[name="${CSS.escape(name)}"]`);
    const value = el ? el.value.trim() : "";
    if (value === "") continue;
    if (a.datatype === "number") {
      out[a.code] = Number(value.replace(",", "."));
    } else if (a.datatype === "datetime") {
      const moment = new Date(value); // local time of the browser, sent with its offset (as UTC)
      out[a.code] = Number.isNaN(moment.getTime()) ? value : moment.toISOString();
    } else {
      out[a.code] = value;
    }
  }
  return out;
}
