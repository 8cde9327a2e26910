// The console shell: sign-in, navigation (the URL hash), the tenant filter, the live stream.

import * as api from "./api.js";
import * as events from "./events.js";
import { h, replace } from "./dom.js";
import { VIEWS } from "./views.js";
import "./notifications.js";

const TENANT_KEY = "switchboard-console-tenant";

function route() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [name, query] = raw.split("?");
  return { name: name || "cluster", params: new URLSearchParams(query || "") };
}

export function go(name, params) {
  const query = new URLSearchParams(params || {}).toString();
  location.hash = `#/${name}${query ? `?${query}` : ""}`;
}

class Console extends HTMLElement {
  connectedCallback() {
    this.session = null;
    this.main = h("main", { "data-testid": "view" });
    this.status = h("span", { class: "stream-state", "data-testid": "stream-state" }, "");
    addEventListener("hashchange", () => this.show());
    events.on("signed_out", () => this.signedOut("Your session ended."));
    events.on("replaced", () => this.replaced());
    events.on("stream", ({ state }) => { this.status.textContent = state === "open" ? "live" : state; });
    this.start();
  }

  async start() {
    try {
      this.session = await api.get("session");
      api.setCsrf(this.session.csrf);
      this.layout();
    } catch (err) {
      if (err.status === 401) this.login(); else this.fatal(err);
    }
  }

  get tenant() { return localStorage.getItem(TENANT_KEY) ?? ""; }

  get readonly() { return !this.session || this.session.role !== "admin"; }

  login(message) {
    const input = h("input", { type: "password", name: "password", autocomplete: "current-password",
      required: true, autofocus: true, "data-testid": "password" });
    const note = h("p", { class: "error", "data-testid": "login-error" }, message || "");
    const form = h("form", { class: "login", "data-testid": "login", onsubmit: async (e) => {
      e.preventDefault();
      note.textContent = "";
      try {
        this.session = await api.post("login", { password: input.value });
        api.setCsrf(this.session.csrf);
        this.layout();
      } catch (err) {
        note.textContent = err.status === 429
          ? `Too many failed sign-ins: try again in ${err.body?.retry_after ?? "a few"} s.`
          : err.message;
        input.select();
      }
    } }, h("h1", null, "Switchboard console"), h("label", null, "Password ", input),
      h("button", { type: "submit", "data-testid": "sign-in" }, "Sign in"), note);
    replace(this, form);
    input.focus();
  }

  layout() {
    const tenant = h("input", { value: this.tenant, placeholder: "(default)", size: 14,
      "data-testid": "tenant", title: "Every view shows this tenant only; empty: the default tenant",
      onchange: (e) => { localStorage.setItem(TENANT_KEY, e.target.value.trim()); this.show(); } });
    const nav = h("nav", null, VIEWS.filter((v) => v.nav).map((v) =>
      h("a", { href: `#/${v.name}`, "data-view": v.name, "data-testid": `nav-${v.name}` }, v.title)));
    const role = h("span", { class: `role ${this.session.role}`, "data-testid": "role",
      title: this.readonly ? "read-only: every view, no action" : "full control" },
      this.readonly ? "read-only" : "admin");
    const out = h("button", { class: "link", "data-testid": "sign-out", onclick: async () => {
      try { await api.post("logout"); } catch { /* the cookie is cleared below either way */ }
      this.signedOut("Signed out.");
    } }, "Sign out");
    replace(this,
      h("header", null, h("strong", { class: "brand" }, "Switchboard"), nav,
        h("span", { class: "spacer" }),
        h("label", { class: "tenant" }, "tenant ", tenant), this.status, role,
        h("span", { class: "node", title: "the node serving this console" }, this.session.node), out),
      this.readonly ? h("div", { class: "banner", "data-testid": "readonly-banner" },
        "Read-only session: actions are disabled.") : null,
      this.main);
    this.show();
  }

  show() {
    if (!this.session) return;
    const { name, params } = route();
    const view = VIEWS.find((v) => v.name === name) || VIEWS[0];
    for (const a of this.querySelectorAll("nav a")) {
      a.classList.toggle("active", a.dataset.view === (view.parent || view.name));
    }
    const el = document.createElement(view.tag);
    el.setup({ tenant: this.tenant, params, readonly: this.readonly, go });
    replace(this.main, el);
    events.open(this.tenant, view.channel ? params.get("name") : null);
  }

  signedOut(message) {
    events.close();
    this.session = null;
    this.login(message);
  }

  replaced() {
    replace(this.main, h("div", { class: "banner" }, "This console is open in another tab of the same session. ",
      h("button", { onclick: () => this.show() }, "Use it here")));
  }

  fatal(err) {
    replace(this, h("p", { class: "error" }, `The console cannot start: ${err.message}`));
  }
}

customElements.define("sb-console", Console);
