// Steward's JavaScript client: the reusable piece of the web app (no DOM, no framework; fetch only).
// Sessions are cookie-based: `signIn(token)` trades an API token (or the dev token) for an HttpOnly session cookie
// that the browser sends with every same-origin request; the token itself is never stored.

/** An answer other than 2xx: its HTTP status, and the problem's stable `reason` and `detail` when it had one. */
export class ApiError extends Error {
  constructor(status, reason, detail) {
    super(detail || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.reason = reason;
    this.detail = detail;
  }
}

/** The server could not be reached (offline, refused, aborted). */
export class NetworkError extends Error {
  constructor(cause) {
    super("network error", { cause });
    this.name = "NetworkError";
  }
}

export class StewardClient {
  /** `base`: the gateway's origin ("" for the page's own); `fetch`: a fetch function (for tests). */
  constructor({ base = "", fetch = globalThis.fetch.bind(globalThis) } = {}) {
    this.base = base;
    this.fetch = fetch;
  }

  async request(method, path, body) {
    const headers = { Accept: "application/json" };
    const init = { method, headers, credentials: "same-origin", cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await this.fetch(`${this.base}${path}`, init);
    } catch (error) {
      throw new NetworkError(error);
    }
    const text = await response.text();
    let data = null;
    if (text && (response.headers.get("Content-Type") || "").includes("json")) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      throw new ApiError(response.status, data?.reason ?? "", data?.detail ?? "");
    }
    return data;
  }

  /** The signed-in session `{user_id, scopes, expire_time}`, or null when signed out (401). */
  async session() {
    try {
      return await this.request("GET", "/api/v1/session");
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return null;
      throw error;
    }
  }

  /** Sign in with an API token (or the dev token): the session, or an ApiError (401 for a token not accepted). */
  signIn(token) {
    return this.request("POST", "/api/v1/session", { token });
  }

  /** End the session: the cookie is cleared, and the session record is ended on the server. */
  async signOut() {
    try {
      await this.request("DELETE", "/api/v1/session");
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 401)) throw error; // already signed out
    }
  }
}

export const client = new StewardClient();
