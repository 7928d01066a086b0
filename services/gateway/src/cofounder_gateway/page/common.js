// What every page of /app shares: signing in (a one-time login code from the URL's fragment,
// or a pasted token, kept in this tab's sessionStorage only), calling the API, formatting.
// No framework, no build step, nothing loaded from another origin (docs/adr/0008-build-page.md).

export const FOUNDER = "cofounder.token";
export const OPERATOR = "cofounder.admin-token";

/** An API error: the HTTP status and the problem's stable type (e.g. build_not_found). */
export class ApiError extends Error {
  constructor(status, type, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.type = type;
  }
}

/** The element with this id (throws when the page lacks it: a bug, not a state). */
export function $(id) {
  const found = document.getElementById(id);
  if (!found) throw new Error(`no #${id}`);
  return found;
}

/** A new element with a class and text (text only: nothing is ever parsed as HTML). */
export function el(tag, className, text) {
  const made = document.createElement(tag);
  if (className) made.className = className;
  if (text !== undefined && text !== null) made.textContent = String(text);
  return made;
}

/** Calls the API with the token kept under `key`; JSON in and out; ApiError on failure. */
export async function api(path, { method = "GET", body, key = FOUNDER, auth = true } = {}) {
  const headers = { Accept: "application/json" };
  if (auth) {
    const token = sessionStorage.getItem(key);
    if (!token) throw new ApiError(401, "unauthenticated", "not signed in");
    headers.Authorization = `Bearer ${token}`;
  }
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    throw new ApiError(response.status, data && data.type, data && data.detail);
  }
  return data;
}

/**
 * Signs the page in and resolves when it is: with `#code=` in the URL (a one-time login code:
 * exchanged for a session token, then wiped from the address bar and the history entry), with
 * a token this tab already holds, or with the form the page shows. `key`: where the token is
 * kept; `redeem`: whether a login code is accepted (the operator's page takes the admin token).
 */
export async function signIn({ key = FOUNDER, redeem = true } = {}) {
  const form = $("sign-in-form");
  const error = $("sign-in-error");
  const fragment = new URLSearchParams(location.hash.slice(1));
  const code = fragment.get("code");
  if (code !== null) {
    history.replaceState(null, "", location.pathname + location.search);
    if (redeem) {
      try {
        const session = await api("/v1/login-codes/redeem", {
          method: "POST",
          body: { code },
          auth: false,
        });
        sessionStorage.setItem(key, session.token);
      } catch (exc) {
        error.textContent =
          exc.status === 401
            ? "That sign-in link was used already or has expired: ask for a new one, or paste a token."
            : `Signing in failed: ${exc.message}`;
      }
    }
  }
  const signOut = $("sign-out");
  signOut.onclick = () => {
    sessionStorage.removeItem(key);
    location.reload();
  };
  if (sessionStorage.getItem(key)) {
    signOut.hidden = false;
    return;
  }
  $("sign-in").hidden = false;
  $("content").hidden = true;
  $("token-input").focus();
  await new Promise((resolve) => {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token-input").value.trim();
      if (!value) return;
      sessionStorage.setItem(key, value);
      $("token-input").value = "";
      resolve();
    });
  });
  $("sign-in").hidden = true;
  signOut.hidden = false;
}

/** Shows the sign-in form again after the API refused the token (expired, revoked). */
export function signedOut(key, message) {
  sessionStorage.removeItem(key);
  $("content").hidden = true;
  $("sign-in").hidden = false;
  $("sign-out").hidden = true;
  $("sign-in-error").textContent = message;
  $("sign-in-form").addEventListener(
    "submit",
    (event) => {
      event.preventDefault();
      const value = $("token-input").value.trim();
      if (!value) return;
      sessionStorage.setItem(key, value);
      location.reload();
    },
    { once: true },
  );
}

const NUMBER = new Intl.NumberFormat("en-US");

export function count(value) {
  return NUMBER.format(value || 0);
}

/** Micros of the plan's currency: four decimals below one unit, two above (as the CLI). */
export function money(micros) {
  const units = (micros || 0) / 1e6;
  return units < 1 ? units.toFixed(4) : NUMBER.format(Number(units.toFixed(2)));
}

/** A `<time>` for an RFC 3339 instant, shown in the reader's time zone. */
export function when(iso, { date = false } = {}) {
  const node = el("time");
  if (!iso) return node;
  const at = new Date(iso);
  node.dateTime = iso;
  node.textContent = date ? at.toLocaleString() : at.toLocaleTimeString();
  node.title = at.toLocaleString();
  return node;
}

export function seconds(ms) {
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

export const ENDED = new Set(["ready", "failed", "cancelled"]);

/** A status as a badge (its text is the status: colour is never the only cue). */
export function badge(status) {
  return el("span", `badge status-${status}`, status);
}
