// The layer switches and the legend: one checkbox per domain present on the map, the open alarms'
// rings and the communes' names; the legend says what the colours mean.

import { h } from "./dom.js";
import { onLanguageChange, t } from "./i18n.js";
import { OVERDUE_COLOR, PRIORITY_COLORS, REQUEST_COLOR } from "./intervention-layers.js";
import { cssColor, domainColor, SEVERITY_COLORS, STATE_COLORS } from "./palette.js";

export function setupLayerPanel(list, app, domainLabel, onChange) {
  const render = () => {
    const items = app.store.groups.filter((g) => g.size > 0).map((g) => ({
      name: g.name, label: domainLabel(g.name), count: g.size, color: cssColor(domainColor(g.name)) }));
    items.push({ name: "alarms", label: t("domain_alarms"), color: cssColor(SEVERITY_COLORS[1]), ring: true });
    if (app.interventions) {
      items.push({ name: "interventions", label: t("domain_interventions"), color: cssColor(PRIORITY_COLORS.high), glyph: "◆",
        count: app.interventions.orders.size + app.interventions.requests.size });
    }
    items.push({ name: "communes", label: t("domain_communes"), color: "rgb(203 213 225)", text: true });
    list.replaceChildren(...items.map((item) => {
      const input = h("input", { type: "checkbox", name: `layer-${item.name}`, checked: app.layers.isVisible(item.name),
        dataset: { layer: item.name } });
      input.addEventListener("change", () => {
        app.layers.setVisible(item.name, input.checked);
        onChange();
      });
      return h("li", null, h("label", { class: "layer-toggle", title: t("layers_title") }, input,
        item.glyph ? h("span", { class: "glyph", style: `color:${item.color}`, "aria-hidden": "true" }, item.glyph)
          : h("span", { class: `swatch${item.ring ? " ring" : ""}${item.text ? " text" : ""}`, style: `--swatch:${item.color}` }),
        h("span", { class: "layer-name" }, item.label),
        item.count !== undefined ? h("span", { class: "layer-count", dataset: { countFor: item.name } }, String(item.count)) : null));
    }));
    const legend = document.getElementById("legend");
    const entry = (rgb, label) => h("li", null, h("span", { class: "swatch", style: `--swatch:${cssColor(rgb)}` }), label);
    legend.replaceChildren(
      entry(SEVERITY_COLORS[1], t("sev_critical")), entry(SEVERITY_COLORS[2], t("sev_major")),
      entry(SEVERITY_COLORS[3], t("sev_minor")), entry(SEVERITY_COLORS[4], t("sev_warning")),
      entry(STATE_COLORS[1], t("conn_offline")), entry(STATE_COLORS[2], t("conn_unreachable")),
      entry(STATE_COLORS[3], t("conn_never")));
    if (app.interventions) {
      const glyph = (text, rgb, label, ring) => h("li", null, h("span", { class: `glyph${ring ? " ring" : ""}`,
        style: `color:${cssColor(rgb)}`, "aria-hidden": "true" }, text), label);
      legend.append(
        glyph("◆", PRIORITY_COLORS.urgent, `${t("legend_order")} ${t("prio_urgent")}`),
        glyph("◆", PRIORITY_COLORS.high, `${t("legend_order")} ${t("prio_high")}`),
        glyph("◆", PRIORITY_COLORS.normal, `${t("legend_order")} ${t("prio_normal")}`),
        glyph("◆", PRIORITY_COLORS.low, `${t("legend_order")} ${t("prio_low")}`),
        glyph("○", OVERDUE_COLOR, t("legend_overdue"), true),
        glyph("▲", REQUEST_COLOR, t("legend_request")));
    }
  };
  render();
  onLanguageChange(render);
  return render;
}
