// Calls to the JSON API: the bearer token kept in sessionStorage, errors as ApiError.
//
// A 401 on an authenticated call means the token expired or was revoked: the session is
// cleared and a "session-expired" event is sent, which the pages answer by showing sign-in.

const TOKEN_KEY = "rakuten.token";
const USER_KEY = "rakuten.user";

export const SESSION_EXPIRED = "session-expired";
export const UNREACHABLE =
  "The service cannot be reached. Check your connection and try again in a moment.";
export const UNAVAILABLE = "The service is unavailable right now. Please try again in a moment.";

export class ApiError extends Error {
  constructor(status, detail, retryAfter = null) {
    super(detail);
    this.name = "ApiError";
    this.status = status; // 0 when the server could not be reached
    this.detail = detail;
    this.retryAfter = retryAfter; // seconds, from Retry-After (429, 503)
  }

  get unavailable() {
    return this.status === 0 || this.status === 502 || this.status === 503 || this.status === 504;
  }
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function storedUser() {
  try {
    return JSON.parse(sessionStorage.getItem(USER_KEY) || "null");
  } catch {
    return null;
  }
}

export function saveSession(token, user) {
  sessionStorage.setItem(TOKEN_KEY, token);
  if (user) sessionStorage.setItem(USER_KEY, JSON.stringify(user));
}

export function clearSession() {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(USER_KEY);
}

function retryAfterOf(response) {
  const value = Number(response.headers.get("retry-after"));
  return Number.isFinite(value) && value > 0 ? value : null;
}

function detailOf(status, body) {
  const detail = body && body.detail;
  if (typeof detail === "string" && detail) return detail;
  if (Array.isArray(detail) && detail.length) {
    // FastAPI's validation errors: [{loc: [...], msg: "..."}]
    const first = detail[0];
    const where = (first.loc || []).filter((part) => part !== "body" && part !== "query").join(".");
    return where ? `${where}: ${first.msg}` : first.msg;
  }
  if (status >= 500) return UNAVAILABLE;
  return `The request failed (HTTP ${status}).`;
}

/**
 * Call the API. Options: method, json (object), form (FormData), query (object), signal,
 * auth (default true: send the token, and treat a 401 as an expired session).
 */
export async function api(path, { method = "GET", json, form, query, signal, auth = true } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  const headers = { Accept: "application/json" };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form; // the browser sets the multipart boundary
  }
  const token = getToken();
  if (auth && token) headers.Authorization = `Bearer ${token}`;

  let response;
  try {
    response = await fetch(url, { method, headers, body, signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, UNREACHABLE);
  }
  let payload = null;
  const type = response.headers.get("content-type") || "";
  if (type.includes("application/json")) {
    try {
      payload = await response.json();
    } catch {
      payload = null;
    }
  }
  if (response.ok) return payload;

  const error = new ApiError(response.status, detailOf(response.status, payload), retryAfterOf(response));
  if (auth && response.status === 401) {
    clearSession();
    window.dispatchEvent(new CustomEvent(SESSION_EXPIRED, { detail: error.detail }));
  }
  throw error;
}

/** Exchange a username and password for a token; returns {token, user}. */
export async function signIn(username, password) {
  const form = new URLSearchParams({ username, password });
  let response;
  try {
    response = await fetch("/login", {
      method: "POST",
      headers: { Accept: "application/json", "Content-Type": "application/x-www-form-urlencoded" },
      body: form,
    });
  } catch {
    throw new ApiError(0, UNREACHABLE);
  }
  const payload = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, detailOf(response.status, payload), retryAfterOf(response));
  saveSession(payload.access_token, { username, role: payload.role });
  const user = await api("/users/me");
  saveSession(payload.access_token, user);
  return user;
}
