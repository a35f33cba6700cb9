// The session: POST /api/v1/auth/login sets an httpOnly cookie that this page never reads; every
// later request and the live feed carry it (same origin). Logging out ends the session server-side.

import { api, ApiError } from "./api.js";

export async function me() {
  try {
    return await api("/api/v1/auth/me", { quiet401: true });
  } catch (err) {
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) return null;
    throw err;
  }
}

export async function login(username, password) {
  const session = await api("/api/v1/auth/login", { method: "POST", body: { username, password }, quiet401: true });
  return { username: session.username, role: session.role, service: session.service };
}

export async function logout() {
  try {
    await api("/api/v1/auth/logout", { method: "POST", quiet401: true });
  } catch {
    // already ended: the page reloads to the login form all the same
  }
}
