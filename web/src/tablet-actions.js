// The field agent's actions as the tablet keeps them, and what they mean for the task list before
// the server has answered: an action queued offline already shows (the order "en route", "waiting to
// be sent"), and the next action is based on the version the previous one will make. Pure functions.
//
// A queued item: {id (uuid), seq, user, kind: "action" | "photo" | "team_status", state: "waiting" |
// "conflict" | "refused", at, ...}; an action has work_order_id, action, base_version, note, and `seen`
// (the order as the agent saw it, to tell what changed on a conflict); a photo has work_order_id and
// blob; a team status has team_id and status.

export const FIELD_ACTIONS = ["accept", "en_route", "on_site", "done"];
// Actions that make a new version of the order (a comment does not).
const BUMPS = new Set(FIELD_ACTIONS);
const MOVES = { en_route: ["assigned"], on_site: ["assigned", "en_route"], done: ["on_site"] };

export function bumpsVersion(action) {
  return BUMPS.has(action);
}

// The tasks as they will be once the queue is applied. Refused actions are left out; so is an action
// in conflict, and those queued after it on the same order, until the agent decides (the task shows
// the order as the server has it now).
export function predict(tasks, queue) {
  const byId = new Map(tasks.map((task) => [task.id, { ...task, pending: [], photos: [], conflict: false }]));
  for (const item of queue) {
    const task = byId.get(item.work_order_id);
    if (!task) continue;
    if (item.kind === "photo") {
      task.photos.push(item);
      continue;
    }
    if (item.kind !== "action") continue;
    task.pending.push(item);
    if (item.state === "conflict") task.conflict = true;
    if (item.state === "refused" || task.conflict) continue;
    if (item.action === "accept") task.accepted_at = task.accepted_at || item.at;
    if (MOVES[item.action]) {
      task.state = item.action;
      task.accepted_at = task.accepted_at || item.at;
    }
    if (item.action === "done") task.outcome_note = item.note;
    if (bumpsVersion(item.action)) task.version = item.base_version + 1;
  }
  return [...byId.values()];
}

// Which buttons a task offers now.
export function possible(task) {
  return {
    accept: !task.accepted_at && ["assigned", "en_route", "on_site"].includes(task.state),
    en_route: MOVES.en_route.includes(task.state),
    on_site: MOVES.on_site.includes(task.state),
    done: MOVES.done.includes(task.state),
  };
}

// After a conflict on `resolved` (applied again or dropped), the order's remaining actions are based
// on its current version, one after the other. Returns the items to store again.
export function rebase(queue, resolved, currentVersion, drop) {
  let version = currentVersion;
  const changed = [];
  for (const item of queue) {
    if (item.kind !== "action" || item.work_order_id !== resolved.work_order_id || item.state === "refused") continue;
    if (item.seq < resolved.seq) continue;
    if (drop && item.id === resolved.id) continue;
    changed.push({ ...item, base_version: version, state: "waiting", current: undefined, reason: undefined });
    if (bumpsVersion(item.action)) version += 1;
  }
  return changed;
}

// A refused action did not make a new version: the order's later actions are based one lower.
export function afterRefusal(queue, refused) {
  if (!bumpsVersion(refused.action)) return [];
  return queue.filter((item) => item.kind === "action" && item.work_order_id === refused.work_order_id
    && item.seq > refused.seq && item.state === "waiting").map((item) => ({ ...item, base_version: item.base_version - 1 }));
}

// What changed between the order the agent acted on and the order now: [{what, a, b}].
export function changes(seen, current) {
  const out = [];
  for (const what of ["state", "team_id", "priority", "title"]) {
    if (seen && current && seen[what] !== current[what]) out.push({ what, a: seen[what] ?? "—", b: current[what] ?? "—" });
  }
  return out;
}
