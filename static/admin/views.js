// The console's views, one custom element each. A view gets {tenant, params, readonly, go} in setup(),
// renders, and listens to the tab's live stream (events.js) while it is on the page.

import * as api from "./api.js";
import * as events from "./events.js";
import { applyDiff, metas } from "./presence.js";
import { fmtAgo, fmtBytes, fmtDuration, fmtTime, h, json, replace, table } from "./dom.js";

const TAIL_KEPT = 200;

/** The "bot" badge of a connection the hub marks as a bot (its token's bot claim; hub.bots). */
const botBadge = (bot) => (bot ? h("span", { class: "chip bot", "data-testid": "bot-badge", title: "a bot connection (its token's bot claim)" }, "bot") : null);

export class View extends HTMLElement {
  setup(ctx) {
    this.ctx = ctx;
    this.unlisten = [];
    this.render();
  }

  listen(kind, handler) { this.unlisten.push(events.on(kind, handler)); }

  disconnectedCallback() { for (const off of this.unlisten || []) off(); }

  // A button that acts on the hub: disabled (and saying why) in a read-only session; reports its outcome.
  action(label, run, attrs) {
    const note = h("span", { class: "outcome", "data-testid": `${attrs?.["data-testid"] || "action"}-outcome` });
    const button = h("button", { ...attrs, class: `act ${attrs?.class || ""}`, disabled: this.ctx.readonly,
      title: this.ctx.readonly ? "read-only session" : attrs?.title, onclick: async (e) => {
        e.preventDefault();
        if (attrs?.confirm && button.dataset.armed !== "1") {
          button.dataset.armed = "1";
          button.textContent = attrs.confirm;
          setTimeout(() => { button.dataset.armed = ""; button.textContent = label; }, 5000);
          return;
        }
        button.dataset.armed = "";
        button.textContent = label;
        note.textContent = "…";
        note.className = "outcome";
        try {
          await run();
          note.textContent = "done";
          note.classList.add("ok");
        } catch (err) {
          note.textContent = err.message;
          note.classList.add("error");
        }
      } }, label);
    return h("span", { class: "action" }, button, note);
  }

  error(err) {
    return h("p", { class: "error", "data-testid": "error" }, err.message || String(err));
  }
}

// ------------------------------------------------------------------ cluster

class ClusterView extends View {
  render() {
    this.body = h("div", null, h("p", { class: "muted" }, "Waiting for the nodes' announcements…"));
    replace(this, h("h2", null, "Cluster"), this.body);
    this.listen("nodes", (data) => this.show(data));
    api.get("nodes", this.ctx.tenant ? { tenant: this.ctx.tenant } : {}).then((d) => this.show(d), (e) => replace(this.body, this.error(e)));
  }

  show(data) {
    const live = data.nodes || [];
    const rows = live.map((n) => this.row(n, "live"))
      .concat((data.gone || []).map((g) => this.row(g.info, "gone", g.gone_at)));
    const sum = (f) => live.reduce((a, n) => a + (n[f] || 0), 0);
    const totals = h("tr", { class: "totals" }, h("td", null, `${live.length} live`), h("td", null, ""),
      h("td", null, ""), h("td", null, ""), h("td", null, sum("num_clients")), h("td", null, sum("num_users")),
      h("td", null, sum("num_subs")), h("td", null, sum("num_channels")), h("td", null, sum("num_documents")),
      h("td", null, ""), h("td", null, fmtBytes(live.reduce((a, n) => a + (n.process?.rss || 0), 0))), h("td", null, ""));
    const parts = [table(["node", "status", "version", "uptime", "connections", "users", "subscriptions",
      "channels", "documents", "CPU", "RSS", "Redis"], [rows, totals], { "data-testid": "nodes" })];
    if (data.tenant) {
      const t = data.tenant;
      parts.push(h("h3", null, `Tenant “${t.tenant || "(default)"}”`),
        table(["node", "connections", "users", "subscriptions", "channels"], t.nodes.map((n) =>
          h("tr", null, h("td", null, n.name), h("td", null, n.num_clients), h("td", null, n.num_users),
            h("td", null, n.num_subs), h("td", null, n.num_channels))), { "data-testid": "tenant-nodes" }));
    }
    replace(this.body, parts);
  }

  row(n, status, goneAt) {
    const redis = (n.redis || []).map((s) => h("span", { class: `chip ${s.connected ? "ok" : "bad"}`,
      title: s.connected ? "connected" : "not connected" }, s.name));
    return h("tr", { class: status, "data-testid": "node-row", "data-node": n.name },
      h("td", { class: "mono" }, n.name),
      h("td", null, h("span", { class: `chip ${status === "live" ? "ok" : "bad"}` },
        status === "live" ? "live" : `gone ${fmtAgo(goneAt)}`)),
      h("td", null, n.version), h("td", null, fmtDuration(n.uptime)),
      h("td", { "data-testid": "num-clients" }, n.num_clients), h("td", null, n.num_users),
      h("td", null, n.num_subs), h("td", null, n.num_channels),
      h("td", null, n.num_documents ?? "–", n.num_doc_connections ? ` (${n.num_doc_connections} conn.)` : ""),
      h("td", null, n.process ? `${n.process.cpu}%` : "–"), h("td", null, fmtBytes(n.process?.rss)),
      h("td", null, redis.length ? redis : h("span", { class: "muted" }, "none")));
  }
}

// ------------------------------------------------------------------ channels

class ChannelsView extends View {
  render() {
    const pattern = h("input", { name: "pattern", placeholder: "glob, e.g. chat:*", value: this.ctx.params.get("pattern") || "",
      "data-testid": "pattern" });
    const open = h("input", { name: "channel", placeholder: "channel name", "data-testid": "open-channel" });
    this.results = h("div");
    replace(this, h("h2", null, "Channels"),
      h("form", { class: "bar", onsubmit: (e) => { e.preventDefault(); this.search(pattern.value.trim()); } },
        h("label", null, "Pattern ", pattern), h("button", { type: "submit", "data-testid": "search" }, "Search")),
      h("form", { class: "bar", onsubmit: (e) => { e.preventDefault(); if (open.value.trim()) this.ctx.go("channel", { name: open.value.trim() }); } },
        h("label", null, "Inspect ", open), h("button", { type: "submit" }, "Open")),
      this.results);
    this.search(pattern.value.trim());
  }

  async search(pattern) {
    try {
      const data = await api.get("channels", { tenant: this.ctx.tenant, pattern });
      const rows = data.channels.map((c) => h("tr", { "data-testid": "channel-row" },
        h("td", null, h("a", { href: `#/channel?name=${encodeURIComponent(c.channel)}`, class: "mono" }, c.channel)),
        h("td", null, c.num_clients)));
      replace(this.results, h("p", { class: "muted" }, `${data.total} channel(s) with subscribers`,
        data.total > data.channels.length ? `, the first ${data.channels.length} shown` : ""),
        table(["channel", "subscribers"], rows));
    } catch (err) {
      replace(this.results, this.error(err));
    }
  }
}

class ChannelView extends View {
  render() {
    this.name = this.ctx.params.get("name") || "";
    this.state = {};
    this.tail = [];
    this.paused = false;
    this.info = h("div");
    this.presence = h("div", { "data-testid": "presence" }, h("p", { class: "muted" }, "…"));
    this.meter = h("span", { class: "meter", "data-testid": "meter" }, "");
    this.tailList = h("ol", { class: "tail", "data-testid": "tail" });
    this.history = h("div", { "data-testid": "history" });
    const data = h("textarea", { rows: 3, "data-testid": "publish-data", placeholder: '{"text": "hello"}' });
    replace(this, h("h2", null, "Channel ", h("span", { class: "mono", "data-testid": "channel-name" }, this.name)),
      this.info,
      h("section", null, h("h3", null, "Presence"), this.presence),
      h("section", null, h("h3", null, "Live tail ", this.meter,
        h("button", { class: "link", onclick: (e) => { this.paused = !this.paused; e.target.textContent = this.paused ? "resume" : "pause"; } }, "pause")),
        this.tailList),
      h("section", null, h("h3", null, "History ",
        h("button", { class: "link", onclick: () => this.loadHistory() }, "reload"), " ",
        this.action("Purge history", () => api.act("purge", this.target()).then(() => this.loadHistory()),
          { "data-testid": "purge", confirm: "Confirm purge" })), this.history),
      h("section", null, h("h3", null, "Publish"),
        h("div", { class: "bar" }, data, this.action("Publish", async () => {
          let value;
          try { value = JSON.parse(data.value); } catch { throw new Error("data must be JSON"); }
          await api.act("publish", { ...this.target(), data: value });
        }, { "data-testid": "publish" }))));
    this.listen("presence", (d) => this.fullPresence(d));
    this.listen("presence_diff", (d) => { this.state = applyDiff(this.state, d); this.showPresence(d); });
    this.listen("pub", (p) => this.onPub(p));
    this.listen("meter", (m) => { this.meter.textContent = `${m.rate}/s · ${m.total} seen · ${m.dropped} dropped`; });
    this.load();
  }

  target() { return { tenant: this.ctx.tenant, channel: this.name }; }

  async load() {
    try {
      const d = await api.get("channel", this.target());
      const opts = Object.entries(d.options).filter(([, v]) => v !== false && v !== 0);
      replace(this.info, h("dl", { class: "grid", "data-testid": "options" },
        h("dt", null, "namespace"), h("dd", null, d.namespace || "(default)"),
        d.stream ? [h("dt", null, "stream"), h("dd", { class: "mono" }, d.stream.error || `offset ${d.stream.offset}, epoch ${d.stream.epoch}`)] : null,
        d.presence_stats && !d.presence_stats.error ? [h("dt", null, "presence"), h("dd", null, `${d.presence_stats.num_clients} connections, ${d.presence_stats.num_users} users`)] : null,
        h("dt", null, "options"), h("dd", null, opts.length ? opts.map(([k, v]) => h("span", { class: "chip" }, v === true ? k : `${k}=${v}`)) : "none (closed)")));
      this.hasHistory = d.options.history_size > 0;
      if (this.hasHistory) this.loadHistory(); else replace(this.history, h("p", { class: "muted" }, "This namespace keeps no history."));
    } catch (err) {
      replace(this.info, this.error(err));
    }
  }

  async loadHistory(older) {
    try {
      const page = older ? { before: older.offset, epoch: older.epoch } : {};
      const d = await api.get("history", { ...this.target(), limit: 20, ...page });
      const rows = d.publications.map((p) => h("tr", null, h("td", null, p.offset ?? ""),
        h("td", { class: "mono" }, p.info?.user ?? ""), h("td", { class: "mono data" }, json(p.data))));
      const last = d.publications[d.publications.length - 1];
      const next = last && last.offset > 1 ? h("button", { class: "link", "data-testid": "history-older",
        onclick: () => this.loadHistory({ offset: last.offset, epoch: d.epoch }) }, "older") : null;
      replace(this.history, h("p", { class: "muted" }, `top: offset ${d.offset}, epoch ${d.epoch}; newest first`,
        older ? ` · before offset ${older.offset} ` : " ", older ? h("button", { class: "link", onclick: () => this.loadHistory() }, "newest") : null),
        table(["offset", "user", "data"], rows), next);
    } catch (err) {
      replace(this.history, this.error(err));
    }
  }

  fullPresence(d) {
    if (!d.available) { replace(this.presence, h("p", { class: "muted" }, "This namespace has no presence.")); return; }
    if (d.error) { replace(this.presence, h("p", { class: "error" }, d.error)); return; }
    this.state = d.state;
    this.live = d.live;
    this.showPresence(d);
  }

  showPresence(d) {
    const rows = metas(this.state).map((m) => h("tr", { "data-testid": "presence-row", "data-user": m.user, "data-client": m.client },
      h("td", { class: "mono" }, m.user || "(anonymous)", botBadge(m.bot)), h("td", { class: "mono" }, m.client),
      h("td", { class: "mono data" }, m.conn_info !== undefined ? json(m.conn_info) : ""),
      h("td", null, h("a", { href: `#/users?user=${encodeURIComponent(m.user)}` }, "user"))));
    replace(this.presence,
      h("p", { class: "muted" }, `${d.num_clients} connection(s), ${d.num_users} user(s) · `,
        this.live ? h("span", { class: "chip ok" }, "live") :
          h("span", { class: "chip", title: "join_leave is off in this namespace: joins and leaves are not announced" }, "snapshot"),
        d.truncated ? " (the first 1000 shown)" : ""),
      table(["user", "client", "conn info", ""], rows));
  }

  onPub(p) {
    if (!this.historyDue && this.hasHistory) {
      // The history table follows the stream, at most once a second.
      this.historyDue = setTimeout(() => { this.historyDue = null; this.loadHistory(); }, 1000);
    }
    if (this.paused) return;
    this.tail.unshift(p);
    if (this.tail.length > TAIL_KEPT) this.tail.length = TAIL_KEPT;
    const item = h("li", { "data-testid": "tail-item" }, h("span", { class: "muted" }, `#${p.offset || "-"} `),
      p.info ? h("span", { class: "mono" }, `${p.info.user} `) : null,
      h("span", { class: "mono data" }, p.truncated ? `${p.data}… (${fmtBytes(p.size)})` : json(p.data)));
    this.tailList.prepend(item);
    while (this.tailList.children.length > TAIL_KEPT) this.tailList.lastChild.remove();
  }
}

// ------------------------------------------------------------------ users

class UsersView extends View {
  render() {
    this.user = this.ctx.params.get("user") || "";
    const input = h("input", { name: "user", value: this.user, placeholder: "user id", "data-testid": "user" });
    this.results = h("div");
    this.code = h("input", { type: "number", min: 3000, max: 4999, value: 3503, class: "code", "data-testid": "disconnect-code",
      title: "close code: 3000-3499 reconnect, 3500-4999 final" });
    replace(this, h("h2", null, "Users"),
      h("form", { class: "bar", onsubmit: (e) => { e.preventDefault(); this.ctx.go("users", { user: input.value.trim() }); } },
        h("label", null, "User ", input), h("button", { type: "submit", "data-testid": "lookup" }, "Look up")),
      this.results);
    this.clients = null;
    this.listen("nodes", (d) => {
      // Connection counts moved somewhere in the hub: look again (one survey at a time).
      const total = (d.nodes || []).reduce((a, n) => a + (n.num_clients || 0), 0);
      if (this.user && this.clients !== null && total !== this.clients) this.lookup();
      this.clients = total;
    });
    if (this.user) this.lookup();
  }

  target(extra) { return { tenant: this.ctx.tenant, user: this.user, ...extra }; }

  disconnect(client) {
    const code = Number(this.code.value);
    return api.act("disconnect", this.target({ ...(client ? { client } : {}), disconnect: { code, reason: "disconnected by the console" } }));
  }

  async lookup() {
    if (this.busy) { this.again = true; return; }
    this.busy = true;
    try {
      const d = await api.get("user", this.target());
      const rows = d.connections.map((c) => {
        const subs = h("select", { "data-testid": "unsubscribe-channel" }, c.subscriptions.map((s) => h("option", { value: s }, s)));
        return h("tr", { "data-testid": "connection-row", "data-client": c.client },
          h("td", { class: "mono" }, c.client, botBadge(c.bot)), h("td", { class: "mono" }, c.node),
          h("td", null, c.transport, " / ", c.protocol),
          h("td", null, c.sdk.name || "–", c.sdk.version ? ` ${c.sdk.version}` : ""),
          h("td", null, fmtTime(c.connected_at)), h("td", null, c.expires_at ? fmtTime(c.expires_at) : "never"),
          h("td", { class: "mono" }, c.subscriptions.join(", ") || "–"),
          h("td", { class: "actions" },
            this.action("Disconnect", () => this.disconnect(c.client).then(() => this.lookup()), { "data-testid": "disconnect" }),
            c.subscriptions.length ? [subs, this.action("Unsubscribe", () => api.act("unsubscribe", this.target({ client: c.client, channel: subs.value })).then(() => this.lookup()), { "data-testid": "unsubscribe" })] : null,
            this.action("Expire token", () => api.act("refresh", this.target({ client: c.client, expired: true })), { "data-testid": "expire" })));
      });
      replace(this.results,
        h("div", { class: "bar" }, h("span", { "data-testid": "connection-count" }, `${d.total} connection(s) of “${d.user}”`),
          h("label", null, " close code ", this.code),
          this.action("Disconnect all", () => this.disconnect(null).then(() => this.lookup()), { "data-testid": "disconnect-all", confirm: "Confirm: disconnect all" })),
        table(["client", "node", "transport", "SDK", "connected", "token expires", "subscriptions", ""], rows, { "data-testid": "connections" }));
    } catch (err) {
      replace(this.results, this.error(err));
    } finally {
      this.busy = false;
      if (this.again) { this.again = false; this.lookup(); }
    }
  }
}

// ------------------------------------------------------------------ documents

class DocumentsView extends View {
  render() {
    this.results = h("div");
    replace(this, h("h2", null, "Documents ", h("button", { class: "link", onclick: () => this.load() }, "reload")), this.results);
    this.load();
  }

  async load() {
    try {
      const d = await api.get("documents", { tenant: this.ctx.tenant });
      const rows = d.documents.map((doc) => h("tr", { "data-testid": "document-row" },
        h("td", null, h("a", { href: `#/document?name=${encodeURIComponent(doc.name)}`, class: "mono" }, doc.name)),
        h("td", { class: "mono" }, doc.node), h("td", null, doc.connections), h("td", null, doc.awareness),
        h("td", null, fmtBytes(doc.size)), h("td", null, doc.writer ? "yes" : "no"),
        h("td", null, doc.stored_at ? fmtAgo(doc.stored_at) : "–")));
      replace(this.results, h("p", { class: "muted" }, `${d.total} open document(s)`),
        table(["document", "node", "connections", "awareness", "size", "writer", "last stored"], rows));
    } catch (err) {
      replace(this.results, this.error(err));
    }
  }
}

class DocumentView extends View {
  render() {
    this.name = this.ctx.params.get("name") || "";
    this.results = h("div");
    replace(this, h("h2", null, "Document ", h("span", { class: "mono" }, this.name), " ",
      h("button", { class: "link", onclick: () => this.load() }, "reload")), this.results);
    this.load();
  }

  async load() {
    try {
      const d = await api.get("document", { tenant: this.ctx.tenant, name: this.name, content: 1 });
      const peers = d.open_on.flatMap((holder) => holder.peers.map((p) => h("tr", { "data-testid": "doc-peer" },
        h("td", { class: "mono" }, p.node), h("td", { class: "mono" }, p.user || "(anonymous)"),
        h("td", null, p.write ? "write" : "read"), h("td", { class: "mono" }, p.remote),
        h("td", { class: "mono data" }, p.awareness.map((a) => json(a.state)).join("\n") || "–"))));
      const holders = d.open_on.map((x) => `${x.node}: ${fmtBytes(x.size)}, ${x.writer ? "writer" : "not writer"}, last stored ${x.stored_at ? fmtAgo(x.stored_at) : "–"}`);
      replace(this.results,
        h("p", { class: "muted" }, holders.length ? holders.join(" · ") : "Not open on any node."),
        h("h3", null, "Connections and awareness"), table(["node", "user", "access", "remote", "awareness (cursor, name, …)"], peers),
        h("h3", null, "Content (JSON)"),
        h("pre", { class: "preview", "data-testid": "doc-content" }, d.content !== undefined ? json(d.content, 2) : d.content_truncated ? `${d.content_truncated}…` : d.content_error || "–"));
    } catch (err) {
      replace(this.results, this.error(err));
    }
  }
}

// ------------------------------------------------------------------ audit

class AuditView extends View {
  render() {
    this.rows = h("tbody");
    this.more = h("button", { class: "link", onclick: () => this.load(this.oldest) }, "older");
    replace(this, h("h2", null, "Audit log"),
      h("table", { "data-testid": "audit" }, h("thead", null, h("tr", null,
        ["#", "when", "who", "from", "action", "tenant", "arguments", "result"].map((c) => h("th", null, c)))), this.rows),
      this.more);
    this.load(0);
  }

  async load(before) {
    try {
      const d = await api.get("audit", { limit: 50, before: before || undefined });
      for (const e of d.entries) {
        this.rows.append(h("tr", { "data-testid": "audit-row", class: e.result === "ok" ? "" : "refused" },
          h("td", null, e.id), h("td", null, fmtTime(e.at)), h("td", null, e.role), h("td", { class: "mono" }, e.remote),
          h("td", null, e.action), h("td", { class: "mono" }, e.tenant || ""), h("td", { class: "mono data" }, e.target),
          h("td", null, e.result)));
        this.oldest = e.id;
      }
      this.more.hidden = d.entries.length < 50;
    } catch (err) {
      this.append(this.error(err));
    }
  }
}

customElements.define("sb-cluster", ClusterView);
customElements.define("sb-channels", ChannelsView);
customElements.define("sb-channel", ChannelView);
customElements.define("sb-users", UsersView);
customElements.define("sb-documents", DocumentsView);
customElements.define("sb-document", DocumentView);
customElements.define("sb-audit", AuditView);

// The navigation. sb-notifications is defined in notifications.js (app.js loads it).
export const VIEWS = [
  { name: "cluster", title: "Cluster", tag: "sb-cluster", nav: true },
  { name: "channels", title: "Channels", tag: "sb-channels", nav: true },
  { name: "channel", title: "Channel", tag: "sb-channel", parent: "channels", channel: true },
  { name: "users", title: "Users", tag: "sb-users", nav: true },
  { name: "documents", title: "Documents", tag: "sb-documents", nav: true },
  { name: "document", title: "Document", tag: "sb-document", parent: "documents" },
  { name: "notifications", title: "Notifications", tag: "sb-notifications", nav: true },
  { name: "audit", title: "Audit log", tag: "sb-audit", nav: true },
];
