// The Notifications and deliveries view: the tenant's inbox counts added up, one user's inbox, every
// destination of events out (webhook endpoints, email) with its queue and most recent deliveries, the
// dead letters with replay, and one delivery's payload and attempts (#/notifications?task=<id>).
// Data from hub/admin/console.py (api/notifications, api/inbox, api/deliveries, api/delivery); replay is
// the action "replay" (the server API's webhook_replay), refused to read-only sessions and audited.

import * as api from "./api.js";
import { fmtAgo, fmtTime, h, json, replace, table } from "./dom.js";
import { View } from "./views.js";

const REFRESH_MS = 5000; // while the view is on screen and the tab visible
const DEAD_PAGE = 20;

function stateChip(state) {
  const kind = { done: "ok", dead: "bad" }[state] || "";
  return h("span", { class: `chip ${kind}`, "data-testid": "delivery-state", "data-state": state }, state);
}

function countsLine(c) {
  return `${c.unread} unread · ${c.unseen} unseen · ${c.total} in the inbox`;
}

class NotificationsView extends View {
  render() {
    this.taskId = Number(this.ctx.params.get("task")) || 0;
    this.user = this.ctx.params.get("user") || "";
    this.summary = h("div", { "data-testid": "inbox-summary" }, h("p", { class: "muted" }, "…"));
    this.userBox = h("div", { "data-testid": "inbox-user" });
    this.dests = h("div", { "data-testid": "destinations" });
    this.dead = h("div", { "data-testid": "dead-letters" });
    this.detail = h("div", { "data-testid": "delivery-detail" });
    const input = h("input", { name: "user", value: this.user, placeholder: "user id", "data-testid": "inbox-user-input" });
    replace(this, h("h2", null, "Notifications and deliveries ",
      h("button", { class: "link", "data-testid": "reload", onclick: () => this.refresh() }, "reload")),
    this.taskId ? h("section", null, h("h3", null, `Delivery ${this.taskId} `,
      h("a", { href: "#/notifications" }, "back")), this.detail) : null,
    h("section", null, h("h3", null, "Inbox"), this.summary,
      h("form", { class: "bar", onsubmit: (e) => { e.preventDefault(); this.ctx.go("notifications", { user: input.value.trim() }); } },
        h("label", null, "User ", input), h("button", { type: "submit", "data-testid": "inbox-lookup" }, "Look up")),
      this.userBox),
    h("section", null, h("h3", null, "Dead letters ",
      this.action("Replay all", () => api.act("replay", { tenant: this.ctx.tenant, all: true }).then(() => this.refresh()),
        { "data-testid": "replay-all", confirm: "Confirm: replay every dead letter" })), this.dead),
    h("section", null, h("h3", null, "Destinations"), this.dests));
    this.refresh();
    if (this.user) this.loadUser();
    this.timer = setInterval(() => { if (!document.hidden) this.refresh(); }, REFRESH_MS);
  }

  disconnectedCallback() {
    clearInterval(this.timer);
    super.disconnectedCallback();
  }

  async refresh() {
    if (this.busy) return;
    this.busy = true;
    try {
      await Promise.all([this.loadSummary(), this.loadDead(), this.taskId ? this.loadTask() : null]);
    } finally {
      this.busy = false;
    }
  }

  async loadSummary() {
    try {
      const d = await api.get("notifications", { tenant: this.ctx.tenant });
      const c = d.inbox;
      replace(this.summary, table(["users with items", "unread", "unseen", "items"], [
        h("tr", { "data-testid": "tenant-counts" }, h("td", null, c.users), h("td", null, c.unread),
          h("td", null, c.unseen), h("td", null, c.total))]),
      h("p", { class: "muted" }, "Added up from every user's counters of this tenant; expired items leave them at the next sweep."));
      replace(this.dests, d.destinations.length ? d.destinations.map((x) => this.destination(x))
        : h("p", { class: "muted", "data-testid": "no-destinations" }, "No webhooks and no email configured: nothing goes out."));
    } catch (err) {
      replace(this.summary, this.error(err));
    }
  }

  destination(x) {
    const rows = x.recent.map((t) => this.taskRow(t, false));
    return h("div", { class: "destination", "data-testid": "destination", "data-destination": x.destination },
      h("p", null, h("strong", { class: "mono" }, x.destination), " ", h("span", { class: "mono muted" }, x.url), " ",
        h("span", { class: "chip", title: "deliveries waiting or being retried" }, `${x.pending} pending`),
        h("span", { class: `chip ${x.dead ? "bad" : ""}`, "data-testid": "dead-count" }, `${x.dead} dead`),
        x.for_tenant ? null : h("span", { class: "chip", title: "its tenants filter leaves this tenant out" }, "not for this tenant")),
      h("p", { class: "muted" }, `events: ${x.events.join(", ")}`,
        x.namespaces ? ` · namespaces: ${x.namespaces.map((n) => n || "(unnamed)").join(", ")}` : "",
        x.tenants ? ` · tenants: ${x.tenants.map((t) => t || "(default)").join(", ")}` : "",
        ` · ${x.max_concurrency} at once, ${x.timeout} s each`),
      x.error ? h("p", { class: "error" }, x.error) : null,
      rows.length ? table(["id", "event", "state", "attempts", "last error", "updated"], rows, { "data-testid": "recent" })
        : h("p", { class: "muted" }, "No deliveries yet."));
  }

  taskRow(t, withReplay) {
    return h("tr", { "data-testid": withReplay ? "dead-row" : "recent-row", "data-task": t.id },
      h("td", null, h("a", { href: `#/notifications?task=${t.id}`, class: "mono" }, t.id)),
      h("td", { class: "mono" }, t.topic), withReplay ? h("td", { class: "mono" }, t.destination) : h("td", null, stateChip(t.state)),
      h("td", null, t.attempts), h("td", { class: "mono data" }, t.last_error || "–"),
      h("td", { title: fmtTime(t.updated_at) }, fmtAgo(t.updated_at)),
      withReplay ? h("td", { class: "actions" }, this.action("Replay", () => api.act("replay",
        { tenant: this.ctx.tenant, ids: [t.id] }).then(() => this.refresh()), { "data-testid": "replay" })) : null);
  }

  async loadDead(after) {
    try {
      const d = await api.get("deliveries", { tenant: this.ctx.tenant, state: "dead", limit: DEAD_PAGE, after_id: after || undefined });
      const rows = d.tasks.map((t) => this.taskRow(t, true));
      const more = d.next_after_id ? h("button", { class: "link", onclick: () => this.loadDead(d.next_after_id) }, "more") : null;
      replace(this.dead, rows.length
        ? [table(["id", "event", "destination", "attempts", "last error", "failed", ""], rows, { "data-testid": "dead" }), more]
        : h("p", { class: "muted", "data-testid": "no-dead-letters" }, "No dead letters."));
    } catch (err) {
      // Without webhooks and email there is no outbox: say so rather than an error.
      replace(this.dead, err.message.startsWith("108") ? h("p", { class: "muted" }, "No outbox: nothing is configured to go out.") : this.error(err));
    }
  }

  async loadUser(cursor) {
    try {
      const d = await api.get("inbox", { tenant: this.ctx.tenant, user: this.user, cursor });
      const rows = d.items.map((i) => h("tr", { "data-testid": "inbox-item", "data-item": i.id },
        h("td", null, i.id), h("td", { class: "mono" }, i.category), h("td", null, i.title || h("span", { class: "muted" }, "(no title)"),
          i.count > 1 ? ` ×${i.count}` : ""),
        h("td", null, fmtTime(i.created_at)),
        h("td", null, [i.read_at ? "read" : i.seen_at ? "seen" : "new", i.archived_at ? "archived" : "", i.interacted_at ? "interacted" : ""].filter(Boolean).join(", ")),
        h("td", null, i.expire_at ? fmtTime(i.expire_at) : "–"),
        h("td", { class: "mono data" }, json(i.data))));
      const more = d.next_cursor ? h("button", { class: "link", onclick: () => this.loadUser(d.next_cursor) }, "older") : null;
      replace(this.userBox, h("p", { "data-testid": "inbox-user-counts" }, `“${d.user}”: ${countsLine(d.counts)} (version ${d.counts.version})`),
        table(["id", "category", "title", "created", "status", "expires", "data"], rows), more);
    } catch (err) {
      replace(this.userBox, this.error(err));
    }
  }

  async loadTask() {
    try {
      const d = await api.get("delivery", { tenant: this.ctx.tenant, task_id: this.taskId });
      const t = d.task;
      const attempts = d.attempts.map((a) => h("tr", { "data-testid": "attempt-row" }, h("td", null, a.attempt),
        h("td", { class: "mono" }, a.worker), h("td", null, stateChip(a.verdict)), h("td", null, a.status ?? "–"),
        h("td", { class: "mono data" }, a.error || "–"), h("td", null, fmtTime(a.at))));
      replace(this.detail,
        h("dl", { class: "grid" }, h("dt", null, "destination"), h("dd", { class: "mono" }, t.destination),
          h("dt", null, "event"), h("dd", { class: "mono" }, `${t.topic} (webhook-id ${t.webhook_id})`),
          h("dt", null, "state"), h("dd", null, stateChip(t.state), ` after ${t.attempts} attempt(s)`)),
        t.state === "dead" ? this.action("Replay", () => api.act("replay", { tenant: this.ctx.tenant, ids: [t.id] })
          .then(() => { this.loadTask(); this.refresh(); }), { "data-testid": "replay-one" }) : null,
        h("h3", null, "Attempts"), table(["#", "worker", "verdict", "status", "error", "at"], attempts, { "data-testid": "attempts" }),
        h("h3", null, "Payload"), h("pre", { class: "preview" }, json(t.payload, 2)));
    } catch (err) {
      replace(this.detail, this.error(err));
    }
  }
}

customElements.define("sb-notifications", NotificationsView);
