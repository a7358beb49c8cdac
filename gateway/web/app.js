// The web app's shell: sign-in, then the app frame. Lit renders into the light DOM, so app.css styles it all.
import { LitElement, html, nothing } from "./vendor/lit.js";
import { ApiError, NetworkError, client } from "./client.js";
import { t } from "./strings.js";

function describe(error) {
  if (error instanceof NetworkError) return t("unreachable");
  if (error instanceof ApiError) {
    if (error.status === 401) return t("tokenRejected");
    if (error.status === 404 || error.status === 405) return t("signInUnavailable");
    return t("signInFailed", { detail: error.detail || `HTTP ${error.status}` });
  }
  return t("signInFailed", { detail: String(error) });
}

class StewardApp extends LitElement {
  static properties = {
    state: { state: true }, // "loading", "signed-out" or "signed-in"
    session: { state: true },
    error: { state: true },
    busy: { state: true },
  };

  constructor() {
    super();
    this.state = "loading";
    this.session = null;
    this.error = "";
    this.busy = false;
  }

  createRenderRoot() {
    return this;
  }

  connectedCallback() {
    super.connectedCallback();
    this.load();
  }

  async load() {
    try {
      this.session = await client.session();
      this.error = "";
    } catch (error) {
      this.session = null;
      this.error = error instanceof NetworkError ? t("unreachable") : "";
    }
    this.state = this.session ? "signed-in" : "signed-out";
  }

  async signIn(event) {
    event.preventDefault();
    if (this.busy) return;
    const input = this.querySelector("#token");
    const token = input.value.trim();
    if (!token) {
      this.error = t("tokenMissing");
      input.focus();
      return;
    }
    this.busy = true;
    try {
      this.session = await client.signIn(token);
      this.error = "";
      this.state = "signed-in";
    } catch (error) {
      this.error = describe(error);
      await this.updateComplete;
      this.querySelector("#token")?.focus();
    } finally {
      this.busy = false;
    }
  }

  async signOut() {
    try {
      await client.signOut();
    } catch (error) {
      this.error = t("signOutFailed", { detail: error instanceof ApiError ? error.detail : t("unreachable") });
      return;
    }
    this.session = null;
    this.error = "";
    this.state = "signed-out";
  }

  render() {
    if (this.state === "loading") return html`<p class="loading" role="status">${t("loading")}</p>`;
    return this.state === "signed-in" ? this.renderFrame() : this.renderSignIn();
  }

  renderSignIn() {
    const failed = Boolean(this.error);
    return html`
      <main id="main" class="sign-in">
        <form class="card" @submit=${this.signIn} novalidate>
          <h1><img class="logo" src=${new URL("./icon.svg", import.meta.url)} alt="" width="32" height="32" />${t("appName")}</h1>
          <h2>${t("signInTitle")}</h2>
          <p class="intro">${t("signInIntro")}</p>
          <label for="token">${t("tokenLabel")}</label>
          <input id="token" name="token" type="password" autocomplete="off" spellcheck="false" required
            aria-invalid=${failed ? "true" : "false"} aria-describedby=${failed ? "sign-in-error" : nothing} />
          <p id="sign-in-error" class="error" role="alert">${this.error}</p>
          <button type="submit" ?disabled=${this.busy}>${this.busy ? t("signingIn") : t("signInButton")}</button>
        </form>
      </main>
    `;
  }

  renderFrame() {
    return html`
      <a class="skip" href="#main">${t("skipToContent")}</a>
      <header class="top">
        <span class="brand"><img class="logo" src=${new URL("./icon.svg", import.meta.url)} alt="" width="24" height="24" />${t("appName")}</span>
        <span class="user" title=${t("signedInAs", { user: this.session.user_id })}>
          <span class="user-label">${t("signedInLabel")}</span> <strong>${this.session.user_id}</strong>
        </span>
        <button type="button" class="secondary" @click=${this.signOut}>${t("signOut")}</button>
      </header>
      ${this.error ? html`<p class="error banner" role="alert">${this.error}</p>` : nothing}
      <div class="frame">
        <nav class="conversations" aria-labelledby="conversations-title">
          <h2 id="conversations-title">${t("conversationsTitle")}</h2>
          <p class="empty">${t("conversationsEmpty")}</p>
        </nav>
        <main id="main" class="conversation" tabindex="-1">
          <p class="empty">${t("mainEmpty")}</p>
        </main>
      </div>
    `;
  }
}

customElements.define("steward-app", StewardApp);
