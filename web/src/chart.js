// A small time-series chart in inline SVG: the bucket averages as a line over the min–max band,
// with the extremes and the period written beside it. No chart library: 48 points do not need one.

import { svg } from "./dom.js";
import { formatNumber, formatTime } from "./i18n.js";

export function drawChart(points, { width = 320, height = 110, unit = "", from, to } = {}) {
  const pad = { left: 38, right: 6, top: 8, bottom: 18 };
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img", class: "chart" });
  const values = points.filter((p) => p.avg !== null && p.avg !== undefined);
  if (!values.length) return root;
  const t0 = from ? from.getTime() : Date.parse(values[0].ts);
  const t1 = to ? to.getTime() : Date.parse(values[values.length - 1].ts);
  let lo = Infinity;
  let hi = -Infinity;
  for (const p of values) {
    lo = Math.min(lo, p.min ?? p.avg);
    hi = Math.max(hi, p.max ?? p.avg);
  }
  if (hi === lo) {
    hi += 1;
    lo -= lo === 0 ? 0 : 1;
  }
  const x = (ts) => pad.left + ((Date.parse(ts) - t0) / Math.max(1, t1 - t0)) * (width - pad.left - pad.right);
  const y = (v) => pad.top + (1 - (v - lo) / (hi - lo)) * (height - pad.top - pad.bottom);
  const band = values.map((p) => `${x(p.ts).toFixed(1)},${y(p.max ?? p.avg).toFixed(1)}`)
    .concat(values.slice().reverse().map((p) => `${x(p.ts).toFixed(1)},${y(p.min ?? p.avg).toFixed(1)}`));
  root.append(
    svg("rect", { x: pad.left, y: pad.top, width: width - pad.left - pad.right, height: height - pad.top - pad.bottom, class: "chart-frame" }),
    svg("polygon", { points: band.join(" "), class: "chart-band" }),
    svg("polyline", { points: values.map((p) => `${x(p.ts).toFixed(1)},${y(p.avg).toFixed(1)}`).join(" "), class: "chart-line" }),
  );
  if (values.length <= 60) {
    for (const p of values) root.append(svg("circle", { cx: x(p.ts).toFixed(1), cy: y(p.avg).toFixed(1), r: 1.8, class: "chart-dot" }));
  }
  const digits = hi - lo < 10 ? 2 : hi - lo < 100 ? 1 : 0;
  const label = (text, attrs) => {
    const el = svg("text", attrs);
    el.textContent = text;
    root.append(el);
  };
  label(`${formatNumber(hi, digits)}${unit ? ` ${unit}` : ""}`, { x: pad.left - 4, y: pad.top + 8, class: "chart-axis", "text-anchor": "end" });
  label(formatNumber(lo, digits), { x: pad.left - 4, y: height - pad.bottom, class: "chart-axis", "text-anchor": "end" });
  label(formatTime(new Date(t0).toISOString()), { x: pad.left, y: height - 4, class: "chart-axis" });
  label(formatTime(new Date(t1).toISOString()), { x: width - pad.right, y: height - 4, class: "chart-axis", "text-anchor": "end" });
  const last = values[values.length - 1];
  root.setAttribute("aria-label", `${formatNumber(lo, digits)} – ${formatNumber(hi, digits)} ${unit}; ${formatNumber(last.avg, digits)} ${unit}`);
  return root;
}
