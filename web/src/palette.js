// The map's colours, chosen for a dark control-room wall: each domain has its own hue when its
// equipment is online; an open alarm paints the asset in its severity's colour; offline, unreachable
// and never-heard-from assets are greys of decreasing strength.

export const DOMAIN_COLORS = {
  lighting: [253, 230, 138],
  traffic: [74, 222, 128],
  transport: [96, 165, 250],
  vehicles: [241, 245, 249],
  access: [192, 132, 252],
  information: [244, 114, 182],
  parking: [45, 212, 191],
  environment: [163, 230, 53],
  public_safety: [129, 140, 248],
};
const FALLBACK = [148, 163, 184];
export const SEVERITY_COLORS = [null, [255, 59, 48], [255, 149, 0], [255, 214, 10], [90, 200, 250]];
export const STATE_COLORS = [null, [100, 116, 139, 230], [120, 90, 140, 200], [71, 85, 105, 150]];

export function domainColor(name) {
  return DOMAIN_COLORS[name] || FALLBACK;
}

export function cssColor(rgb) {
  return `rgb(${rgb[0]} ${rgb[1]} ${rgb[2]})`;
}

// Writes asset i's colour into its group's colour buffer and marks the group for upload.
export function paint(store, i) {
  const g = store.groups[store.domain[i]];
  const o = store.local[i] * 4;
  const c = g.colors;
  const severity = store.alarm[i];
  const state = store.state[i];
  if (severity) {
    const s = SEVERITY_COLORS[severity];
    c[o] = s[0]; c[o + 1] = s[1]; c[o + 2] = s[2]; c[o + 3] = 255;
  } else if (state === 0) {
    const d = domainColor(g.name);
    if (store.idle[i]) {
      c[o] = d[0] >> 1; c[o + 1] = d[1] >> 1; c[o + 2] = d[2] >> 1; c[o + 3] = 170;
    } else {
      c[o] = d[0]; c[o + 1] = d[1]; c[o + 2] = d[2]; c[o + 3] = 235;
    }
  } else {
    const s = STATE_COLORS[state] || STATE_COLORS[3];
    c[o] = s[0]; c[o + 1] = s[1]; c[o + 2] = s[2]; c[o + 3] = s[3];
  }
  g.colorDirty = true;
}
