// The REST API, same origin: the session cookie set at login goes with every request (the browser
// adds the Origin header that the server checks on state-changing requests). Errors are problem
// documents: ApiError carries their status and detail.

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

let onUnauthenticated = () => {};

export function whenUnauthenticated(callback) {
  onUnauthenticated = callback;
}

export async function api(path, { method = "GET", body, signal, quiet401 = false } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" }, signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const detail = typeof data === "object" && data ? data.detail || data.title : String(data).slice(0, 200);
    if (response.status === 401 && !quiet401) onUnauthenticated();
    throw new ApiError(response.status, detail);
  }
  return data;
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
