// The console's JSON API (same origin, relative to /admin/). State-changing calls carry the CSRF token.

let csrf = "";

export function setCsrf(token) { csrf = token || ""; }

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.error || body.message)) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function answer(response) {
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

export function url(path, params) {
  const u = new URL(`api/${path}`, document.baseURI);
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null) u.searchParams.set(key, value);
  }
  return u;
}

export async function get(path, params) {
  return answer(await fetch(url(path, params), { credentials: "same-origin" }));
}

export async function post(path, body) {
  return answer(await fetch(url(path), {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json", "x-csrf-token": csrf },
    body: JSON.stringify(body || {}),
  }));
}

export function act(action, fields) { return post("action", { action, ...fields }); }
