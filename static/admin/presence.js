// Applies the hub's presence events (hub/admin/presence_diff.py computes them): a full state, then
// diffs of joins and leaves. state: {presenceKey: {clientId: meta}}.

export function applyDiff(state, diff) {
  const out = { ...state };
  for (const [key, metas] of Object.entries(diff.joins || {})) {
    out[key] = { ...(out[key] || {}), ...metas };
  }
  for (const [key, metas] of Object.entries(diff.leaves || {})) {
    if (!out[key]) continue;
    const kept = { ...out[key] };
    // A leave removes the meta its join added (same content), as hub/admin/presence_diff.py does.
    for (const [cid, meta] of Object.entries(metas)) {
      if (kept[cid] && JSON.stringify(kept[cid]) === JSON.stringify(meta)) delete kept[cid];
    }
    if (Object.keys(kept).length) out[key] = kept; else delete out[key];
  }
  return out;
}

export function metas(state) {
  const rows = [];
  for (const key of Object.keys(state).sort()) {
    for (const cid of Object.keys(state[key]).sort()) rows.push(state[key][cid]);
  }
  return rows;
}
