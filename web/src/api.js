// The REST API, same origin: the session cookie set at login goes with every request (the browser
// adds the Origin header that the server checks on state-changing requests). Errors are problem
// documents: ApiError carries their status, detail and the whole document (its `field`, `errors`,
// a conflict's `current`); a request that never reached the server is a NetworkError.

export class ApiError extends Error {
  constructor(status, detail, body = null) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
    this.body = body && typeof body === "object" ? body : null;
  }

  // The problem's type without its URN prefix ("version-conflict"), or "".
  get type() {
    const type = this.body && typeof this.body.type === "string" ? this.body.type : "";
    return type.slice(type.lastIndexOf(":") + 1);
  }
}

export class NetworkError extends Error {
  constructor(cause) {
    super(cause && cause.message ? cause.message : "network unreachable");
    this.name = "NetworkError";
  }
}

let onUnauthenticated = () => {};

export function whenUnauthenticated(callback) {
  onUnauthenticated = callback;
}

// body: sent as JSON, or as it is when it is a Blob (a photo, with the Blob's type). headers: extra
// headers (If-Match). withStatus: resolve to {status, data} (201 new and 200 existing differ).
export async function api(path, { method = "GET", body, signal, quiet401 = false, headers, withStatus = false } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json", ...(headers || {}) }, signal };
  if (typeof Blob !== "undefined" && body instanceof Blob) {
    init.headers["Content-Type"] = body.type || "application/octet-stream";
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new NetworkError(err);
  }
  if (response.status === 204) return withStatus ? { status: 204, data: null } : null;
  const type = response.headers.get("content-type") || "";
  let data;
  try {
    data = type.includes("json") ? await response.json() : await response.text();
  } catch (err) {
    throw new NetworkError(err); // the connection dropped in the middle of the answer
  }
  if (!response.ok) {
    const detail = typeof data === "object" && data ? data.detail || data.title : String(data).slice(0, 200);
    if (response.status === 401 && !quiet401) onUnauthenticated();
    throw new ApiError(response.status, detail, data);
  }
  return withStatus ? { status: response.status, data } : data;
}

// Every page of a listing with `next_cursor` (at most `pages` pages).
export async function allPages(path, params, pages = 4) {
  const items = [];
  let cursor = null;
  for (let page = 0; page < pages; page++) {
    const data = await api(`${path}${query({ ...params, cursor })}`);
    items.push(...data.items);
    cursor = data.next_cursor;
    if (!cursor) break;
  }
  return { items, truncated: Boolean(cursor) };
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === "") continue;
    search.set(key, Array.isArray(value) ? value.join(",") : String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

// Runs the tasks with at most `limit` in flight (23 commune summaries, not 23 requests at once).
export async function limited(tasks, limit = 4) {
  const results = new Array(tasks.length);
  let next = 0;
  async function worker() {
    while (next < tasks.length) {
      const index = next++;
      try {
        results[index] = await tasks[index]();
      } catch (error) {
        results[index] = error;
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  return results;
}
