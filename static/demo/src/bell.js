// The notification bell demo: a badge with exact counts on every device of a user, the inbox page by
// page, mark read and mark all read, live, on the official centrifuge SDK and the hub's inbox.
//
// - Counts: `inbox.counts` at every connect, then the pushes on the user's personal channel (every
//   connection of the user is subscribed to it server-side: no subscription code here, the client's own
//   `publication` event gets them). Each carries the counts and a version that rises by one with every
//   change of the inbox: the page keeps the counts of the highest version it has seen (pushes from two
//   nodes, and RPC replies, may arrive out of order), and reads counts and the first page again after a
//   reconnect or when a push skips a version (something was missed, maybe an item).
// - Content: a push of a new item adds it on top (a collapsed one moves up); a mark from any device
//   changes the items it names; anything the page cannot apply by itself (a mark up to a cursor, an
//   expiry sweep) makes it read the first page again. An item's content is applied whatever its
//   version: only the counts go by version.
// - "Send me a notification" is the RPC `demo.notify` (development mode only, hub/demos.py): the hub
//   stores a sample notification for this user, and it arrives like any other.

import { Centrifuge } from 'centrifuge'
import { endpoint, fetchToken, identify } from './lib/identity.js'
import { el, showConnection } from './lib/page.js'

const PAGE = 20
const MAX_ITEMS = 500 // on the page at most (older ones go on loading through the cursor)
const SEND_RPC = 'demo.notify'

const byId = (id) => document.getElementById(id)

let me = null
let centrifuge = null
let counts = null // {unread, unseen, total, version}: the highest version seen
let order = [] // item ids, newest first
const items = new Map() // id -> item
let nextCursor = null
let resyncs = 0
let syncing = null // the resync in flight
let again = false // another resync was asked for meanwhile
let arrived = [] // pushes that came while a resync was in flight: applied again on top of its page

async function rpc (method, data) {
  return (await centrifuge.rpc(method, data)).data
}

function showError (err) {
  byId('error').textContent = err ? `${err.message || 'failed'}${err.code ? ` (${err.code})` : ''}` : ''
}

// ------------------------------------------------------------------ counts

/** Keep `next` if it is as new as what is shown; a push that skips a version means something was missed. */
function applyCounts (next, fromPush = false) {
  if (!next || typeof next.version !== 'number') return
  if (counts && next.version < counts.version) return // older than what is shown: out of order
  const skipped = fromPush && counts && next.version > counts.version + 1
  counts = next
  renderBadge()
  if (skipped) resync('a version was skipped')
}

function renderBadge () {
  const badge = byId('badge')
  badge.dataset.unread = String(counts.unread)
  badge.dataset.version = String(counts.version)
  badge.textContent = counts.unread > 99 ? '99+' : String(counts.unread)
  badge.hidden = counts.unread === 0
  byId('counts').textContent = `${counts.unread} unread · ${counts.unseen} unseen · ${counts.total} in total`
  document.title = counts.unread ? `(${counts.unread}) Notifications · Switchboard demo` : 'Notifications · Switchboard demo'
}

// ------------------------------------------------------------------ items

function keep (item, atTop) {
  const known = items.get(item.id)
  items.set(item.id, known ? { ...known, ...item } : item)
  if (atTop) {
    order = [item.id, ...order.filter((id) => id !== item.id)]
  } else if (!known) {
    order.push(item.id)
  }
  while (order.length > MAX_ITEMS) items.delete(order.pop())
}

function remove (ids) {
  for (const id of ids) items.delete(id)
  order = order.filter((id) => items.has(id))
}

/** Read the counts and the first page again: after a connect, and whenever the page cannot tell. */
function resync (reason) {
  if (syncing) {
    again = true
    return syncing
  }
  arrived = []
  syncing = (async () => {
    try {
      const [fresh, page] = await Promise.all([rpc('inbox.counts', {}), rpc('inbox.list', { limit: PAGE })])
      resyncs += 1
      byId('sync').dataset.resyncs = String(resyncs)
      byId('sync').textContent = `Counts and list read ${resyncs} time(s); the last after ${reason}.`
      items.clear()
      order = []
      for (const item of page.items) keep(item, false)
      nextCursor = page.next_cursor
      // What arrived meanwhile may be newer than the page (or not in it yet): apply it again.
      for (const data of arrived) applyContent(data)
      applyCounts(fresh)
      showError(null)
    } catch (err) {
      showError(err)
    } finally {
      syncing = null
      render()
      if (again) {
        again = false
        resync(reason)
      }
    }
  })()
  return syncing
}

async function loadOlder () {
  if (!nextCursor) return
  try {
    const page = await rpc('inbox.list', { limit: PAGE, cursor: nextCursor })
    for (const item of page.items) keep(item, false)
    nextCursor = page.next_cursor
    render()
  } catch (err) {
    showError(err)
  }
}

/** Apply a mark (ours or another device's) to the items on the page; false when it cannot. */
function applyMark (mark) {
  const now = Date.now() / 1000
  let targets
  if (mark.ids) targets = mark.ids.filter((id) => items.has(id))
  else if (mark.all) targets = order.filter((id) => !mark.categories || mark.categories.includes(items.get(id).category))
  else return false // up to a cursor: only the hub knows which items that reaches
  const change = {
    read: (i) => ({ ...i, read_at: i.read_at || now, seen_at: i.seen_at || now }),
    seen: (i) => ({ ...i, seen_at: i.seen_at || now }),
    unread: (i) => ({ ...i, read_at: null }),
    interacted: (i) => ({ ...i, interacted_at: i.interacted_at || now, read_at: i.read_at || now, seen_at: i.seen_at || now })
  }[mark.action]
  if (mark.action === 'archived') {
    remove(targets)
    return true
  }
  if (!change) return false // unseen, unarchived: read again
  for (const id of targets) items.set(id, change(items.get(id)))
  return true
}

function onPush (data) {
  if (!data || typeof data !== 'object') return
  if (syncing) arrived.push(data)
  applyContent(data)
  applyCounts(data.counts, true)
  render()
}

function applyContent (data) {
  if (data.type === 'inbox.notification' && data.item) {
    const known = items.get(data.item.id)
    const created = known ? known.created_at : Date.now() / 1000
    keep({ ...data.item, created_at: created, read_at: null, seen_at: null }, true)
  } else if (data.type === 'inbox.marked' && data.mark) {
    if (!applyMark(data.mark)) resync('a mark the page cannot apply by itself')
  } else if (data.type === 'inbox.counts') {
    resync('items expired') // the expiry sweep: the list may show some that are gone
  }
}

// ------------------------------------------------------------------ actions

async function markRead (id) {
  try {
    const reply = await rpc('inbox.mark', { action: 'read', ids: [id] })
    applyMark({ action: 'read', ids: [id] })
    applyCounts(reply.counts)
    render()
  } catch (err) {
    showError(err)
  }
}

async function markAllRead () {
  try {
    const reply = await rpc('inbox.mark', { action: 'read', all: true })
    applyMark({ action: 'read', all: true })
    applyCounts(reply.counts)
    render()
  } catch (err) {
    showError(err)
  }
}

async function sendOne (event) {
  const button = event.currentTarget
  button.disabled = true
  try {
    await rpc(SEND_RPC, {})
    showError(null)
  } catch (err) {
    showError(err.code === 111 ? { message: 'Slow down: at most 10 at once, then one a second' } : err)
  } finally {
    button.disabled = false
  }
}

// ------------------------------------------------------------------ rendering

function ago (seconds) {
  const s = Math.max(0, Math.round(Date.now() / 1000 - seconds))
  if (s < 60) return 'just now'
  if (s < 3600) return `${Math.floor(s / 60)} min ago`
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`
  return new Date(seconds * 1000).toLocaleDateString()
}

function render () {
  byId('items').replaceChildren(...order.map((id) => {
    const item = items.get(id)
    const read = Boolean(item.read_at)
    return el('li', {
      className: read ? 'item' : 'item unread',
      dataset: { testid: 'item', id: String(item.id), read: String(read) }
    },
    el('span', { className: 'dot' }),
    el('div', { className: 'item-text' },
      el('strong', { dataset: { testid: 'item-title' } }, item.title || item.category),
      item.body ? el('p', {}, item.body) : null,
      el('span', { className: 'muted small' }, ago(item.created_at), item.count > 1 ? ` · ×${item.count}` : '')),
    read
      ? null
      : el('button', { type: 'button', className: 'link', dataset: { testid: 'mark-read' }, onclick: () => markRead(item.id) }, 'Mark read'))
  }))
  byId('empty').hidden = order.length > 0
  byId('older').hidden = !nextCursor
}

// ------------------------------------------------------------------ start

async function main () {
  me = await identify(byId('join'))
  byId('personal').textContent = me.personal || '(none)'
  if (!me.personal) {
    const banner = byId('banner')
    banner.hidden = false
    banner.textContent = 'Personal channels are off on this hub (user_subscribe_to_personal): the inbox works, but ' +
      'nothing arrives live; the page reads it again at each reconnect.'
  }
  byId('send').addEventListener('click', sendOne)
  byId('mark-all').addEventListener('click', markAllRead)
  byId('older').addEventListener('click', loadOlder)
  byId('bell').addEventListener('click', () => byId('items').scrollIntoView({ behavior: 'smooth' }))

  centrifuge = new Centrifuge(endpoint('../connection/websocket', true), {
    token: me.token,
    getToken: async () => (await fetchToken(me.name)).token
  })
  centrifuge.on('connecting', (ctx) => showConnection('connecting', ctx))
  centrifuge.on('connected', (ctx) => {
    showConnection('connected', ctx)
    resync(Number(byId('state').dataset.connects) > 1 ? 'a reconnect' : 'connecting')
  })
  centrifuge.on('disconnected', (ctx) => showConnection('disconnected', ctx))
  centrifuge.on('publication', (ctx) => {
    if (ctx.channel === me.personal) onPush(ctx.data)
  })
  byId('app').hidden = false
  render()
  centrifuge.connect()
}

main()
