// The tab's one live stream (Server-Sent Events from api/events): node figures, and for the inspected
// channel its presence, publications and rate. Reopened when the tenant or the inspected channel changes.

import { url } from "./api.js";

const listeners = new Map();
let source = null;
let current = "";

export function on(kind, handler) {
  if (!listeners.has(kind)) listeners.set(kind, new Set());
  listeners.get(kind).add(handler);
  return () => listeners.get(kind).delete(handler);
}

function emit(kind, data) {
  for (const handler of listeners.get(kind) || []) handler(data);
}

const KINDS = ["nodes", "presence", "presence_diff", "pub", "meter", "signed_out", "replaced"];

export function open(tenant, channel) {
  const params = {};
  if (tenant) params.tenant = tenant; // no tenant: whole nodes only, from the announcements (no survey)
  if (channel) params.channel = channel;
  const target = url("events", params).toString();
  if (source && target === current) return;
  close();
  current = target;
  source = new EventSource(target, { withCredentials: true });
  for (const kind of KINDS) {
    source.addEventListener(kind, (event) => {
      let data = null;
      try { data = JSON.parse(event.data); } catch { return; }
      if (kind === "signed_out" || kind === "replaced") close();
      emit(kind, data);
    });
  }
  source.onopen = () => emit("stream", { state: "open" });
  source.onerror = () => emit("stream", { state: source && source.readyState === 2 ? "closed" : "reconnecting" });
}

export function close() {
  if (source) source.close();
  source = null;
  current = "";
  emit("stream", { state: "closed" });
}
