// The field tablet's screens, drawn from the predicted tasks and the queue: a card per task (what,
// where, what citizens said, the navigation link, large buttons for the next moves, the photo), the
// team's status, and the queue with its conflicts (what changed; apply again or drop) and refusals.

import { h } from "./dom.js";
import { formatNumber, formatTime, t } from "./i18n.js";
import { changes, possible } from "./tablet-actions.js";

const TEAM_CHOICES = ["available", "busy", "off_duty"];

export function distance(m) {
  if (m === null || m === undefined) return "";
  return m < 1000 ? `${Math.round(m)} m` : `${formatNumber(m / 1000, 1)} km`;
}

function actionLabel(item) {
  if (item.kind === "photo") return t("fld_act_photo");
  if (item.kind === "team_status") return t("fld_act_team_status", { s: t(`team_${item.status}`) });
  return t(`fld_act_${item.action}`);
}

function said(requests) {
  const parts = requests.filter((r) => r.description || (r.attributes && Object.keys(r.attributes).length));
  if (!parts.length) return null;
  return h("div", { class: "said" }, h("h4", null, t("fld_said")), parts.map((r) => h("blockquote", null,
    r.description || "",
    r.attributes && Object.keys(r.attributes).length
      ? h("div", { class: "t-muted" }, Object.entries(r.attributes).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(", ") : v}`).join(" · "))
      : null,
    r.reports > 1 ? h("div", { class: "t-muted" }, t("req_reports", { n: r.reports })) : null)));
}

export function taskCard(task, { draft, onAct, onOpenDone, onDraft, onCancelDone, onPhoto }) {
  const can = possible(task);
  const waiting = task.pending.filter((i) => i.state !== "refused");
  const button = (action, label, primary) => h("button", {
    type: "button", class: `big${primary ? " primary" : ""}`, disabled: !can[action],
    dataset: { action, testid: `task-${action}` }, onclick: () => (action === "done" ? onOpenDone(task) : onAct(task, action)),
  }, label);
  const next = can.on_site && task.state === "en_route" ? "on_site" : can.en_route ? "en_route" : can.done ? "done" : null;
  const photoInput = h("input", { type: "file", accept: "image/*", capture: "environment", class: "visually-hidden",
    dataset: { testid: "task-photo-input" }, onchange: (event) => {
      const file = event.target.files && event.target.files[0];
      if (file) onPhoto(task, file);
      event.target.value = "";
    } });
  let doneForm = null;
  if (draft !== undefined && can.done) {
    const area = h("textarea", { name: "note", rows: "3", maxlength: "4000", required: true, "aria-label": t("fld_done_note"),
      placeholder: t("fld_done_note"), dataset: { testid: "done-note" }, oninput: (event) => onDraft(task, event.target.value) });
    area.value = draft;
    doneForm = h("form", { class: "done-form", dataset: { testid: "done-form" }, onsubmit: (event) => {
      event.preventDefault();
      const note = area.value.trim();
      if (!note) {
        area.focus();
        return;
      }
      onAct(task, "done", note);
    } }, h("label", null, t("fld_done_note"), area),
    h("div", { class: "t-buttons" },
      h("button", { type: "submit", class: "big primary", dataset: { testid: "done-submit" } }, t("fld_done_send")),
      h("button", { type: "button", class: "big", onclick: () => onCancelDone(task) }, t("act_cancel"))));
  }
  return h("li", { class: `task prio-${task.priority}${waiting.length ? " pending" : ""}`,
    dataset: { testid: "task", orderId: String(task.id), state: task.state, version: String(task.version),
      pending: String(waiting.length) } },
  h("header", { class: "task-head" },
    h("span", { class: `prio prio-${task.priority}` }, t(`prio_${task.priority}`)),
    h("h3", null, `#${task.id} ${task.title}`),
    h("span", { class: `state state-${task.state}`, dataset: { testid: "task-state" } }, t(`wo_state_${task.state}`)),
    task.accepted_at ? h("span", { class: "t-muted" }, t("fld_accepted")) : null,
    task.conflict ? h("span", { class: "pending-badge conflict-badge" }, t("fld_conflict_badge"))
      : waiting.length ? h("span", { class: "pending-badge" }, t("fld_pending")) : null),
  h("p", { class: "where" }, [
    task.address ? h("span", null, task.address) : null,
    task.distance_m != null ? h("span", { class: "t-muted" }, t("fld_away", { d: distance(task.distance_m) })) : null,
    h("span", { class: task.overdue && (task.overdue.response || task.overdue.resolution) ? "late" : "t-muted" },
      t("fld_due", { t: formatTime(task.sla_resolution_due) })),
  ].filter(Boolean).flatMap((part, k) => (k ? [" · ", part] : [part]))),
  task.description ? h("p", { class: "desc" }, task.description) : null,
  said(task.requests || []),
  h("div", { class: "t-buttons" },
    h("a", { class: "big nav", href: task.navigation, dataset: { testid: "task-navigate" } }, t("fld_navigate")),
    can.accept ? button("accept", t("fld_accept")) : null,
    button("en_route", t("fld_en_route"), next === "en_route"),
    button("on_site", t("fld_on_site"), next === "on_site"),
    button("done", t("fld_done"), next === "done"),
    h("label", { class: "big photo", dataset: { testid: "task-photo" } }, photoInput, t("fld_photo"),
      task.photos.length ? ` (${task.photos.length})` : "")),
  doneForm);
}

export function teamView(team, pending, { onStatus }) {
  if (!team) return h("p", { class: "t-muted" }, t("fld_team_none"));
  const status = pending ? pending.status : team.effective_status || team.status;
  return h("div", { class: "team-box" },
    h("p", null, h("strong", null, team.name), ` · ${team.id}`, " · ",
      h("span", { class: `state team-${status}`, dataset: { testid: "team-state" } }, t(`team_${status}`)),
      pending ? h("span", { class: "pending-badge" }, t("fld_pending")) : null),
    h("div", { class: "t-buttons", role: "group", "aria-label": t("fld_team_is") },
      TEAM_CHOICES.map((choice) => h("button", { type: "button", class: `big${status === choice ? " primary" : ""}`,
        "aria-pressed": String(status === choice), dataset: { testid: `team-${choice}` },
        onclick: () => onStatus(choice) }, t(`team_${choice}`)))));
}

export function queueItem(item, { task, blocked, onApply, onDrop, onDismiss }) {
  const what = `${actionLabel(item)} · #${item.work_order_id || ""}`;
  if (item.state === "conflict") {
    const current = item.current || {};
    const changed = changes(item.seen, current);
    const others = (current.version || 0) - (item.seen ? item.seen.version : item.base_version);
    return h("li", { class: "conflict", role: "alert", dataset: { testid: "conflict", actionId: item.id, orderId: String(item.work_order_id) } },
      h("h3", null, t("fld_conflict_title")),
      h("p", null, t("fld_conflict_what", { action: actionLabel(item), id: item.work_order_id })),
      h("p", null, t("fld_changes")),
      h("ul", { class: "changes", dataset: { testid: "conflict-changes" } },
        changed.map((c) => h("li", null, t("fld_change", { what: t(`fld_field_${c.what}`) === `fld_field_${c.what}` ? c.what : t(`fld_field_${c.what}`),
          a: c.what === "state" ? t(`wo_state_${c.a}`) : c.a, b: c.what === "state" ? t(`wo_state_${c.b}`) : c.b }))),
        others > 0 ? h("li", null, t("fld_change_version", { n: others })) : null),
      item.reason ? h("p", { class: "t-muted" }, item.reason) : null,
      h("div", { class: "t-buttons" },
        h("button", { type: "button", class: "big primary", dataset: { testid: "conflict-apply" }, onclick: () => onApply(item) }, t("fld_apply")),
        h("button", { type: "button", class: "big", dataset: { testid: "conflict-drop" }, onclick: () => onDrop(item) }, t("fld_drop"))));
  }
  if (item.state === "refused") {
    return h("li", { class: "refused", dataset: { testid: "refused", actionId: item.id } },
      h("p", null, h("strong", null, what), " — ", t("fld_refused", { reason: item.reason || "" })),
      h("button", { type: "button", class: "big", dataset: { testid: "refused-dismiss" }, onclick: () => onDismiss(item) }, t("fld_dismiss")));
  }
  return h("li", { class: "waiting", dataset: { testid: "queued-item", actionId: item.id, kind: item.kind, action: item.action || "" } },
    h("span", null, what), task ? h("span", { class: "t-muted" }, ` ${task.title}`) : null,
    h("span", { class: "t-muted" }, ` · ${formatTime(item.at)}${blocked ? ` · ${t("fld_blocked")}` : ""}`));
}
