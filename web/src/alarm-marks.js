// Which assets the map marks with an open alarm, and in which severity: the worst of the active
// (raised or acknowledged) alarms known for the asset. The map snapshot gives the starting marks;
// the alarm list and the feed then tell each alarm's changes.

import { SEVERITY } from "./assets.js";

const ACTIVE = new Set(["raised", "acknowledged"]);

export class AlarmMarks {
  constructor(getStore) {
    this.getStore = getStore;
    this.byAsset = new Map(); // asset id -> Map(alarm id -> severity index)
  }

  reset() {
    this.byAsset.clear();
  }

  // An alarm as it is now (from the list, an action's answer or a feed entry).
  update(alarm) {
    if (!alarm.asset_id || alarm.id == null) return;
    let known = this.byAsset.get(alarm.asset_id);
    const active = ACTIVE.has(alarm.state);
    if (active) {
      if (!known) this.byAsset.set(alarm.asset_id, (known = new Map()));
      known.set(alarm.id, SEVERITY[alarm.severity] || SEVERITY.warning);
    } else if (known) {
      known.delete(alarm.id);
    } else {
      known = new Map();
    }
    const store = this.getStore();
    const i = store && store.indexOf(alarm.asset_id);
    if (i === undefined || i === null) return;
    let worst = 0;
    for (const severity of known.values()) if (worst === 0 || severity < worst) worst = severity;
    if (active) {
      // keep a worse mark the snapshot gave (an alarm this page was not told about, such as a folded one)
      const current = store.alarm[i];
      store.setAlarm(i, current && current < worst ? current : worst);
    } else {
      store.setAlarm(i, worst); // the alarm ended: show the next worst known, or unmark
    }
    if (known.size === 0) this.byAsset.delete(alarm.asset_id);
  }
}
