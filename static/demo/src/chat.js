// The chat demo: rooms with history, who is here, typing indicators, direct messages, and recovery
// after a dropped connection, on the official centrifuge SDK.
//
// Channels (development mode's unnamed namespace: presence, join/leave, history and recovery on):
// - a room is `chat.<room>`: opened with its last HISTORY_ON_OPEN messages, then live;
// - a direct message goes to `dm#<a>,<b>` (the two user ids, sorted): a user-limited channel only
//   those two may subscribe to, read or publish into. To receive messages without having opened the
//   conversation, the page holds the DM channel of everyone it met in a room (up to MAX_DM_PEERS). An
//   app with a backend would rather give each user one personal channel its backend publishes into.
// - typing goes through the RPC `demo.typing` (hub/demos.py): the hub publishes {"typing": true}
//   into the conversation's channel without storing it, with the typist's name from its token.
//
// Reconnects are the SDK's: each subscription recovers what it missed from history. When that is not
// possible (`recovered: false`), a banner asks for a reload instead of showing a room with a hole.
//
// Streamed replies (an agent writing token by token; development mode sets `streams` on the namespace):
// publications whose data has a `stream` member are reassembled by ./lib/streams.js into one message per
// stream, which grows as chunks arrive and is marked finished by the final one; history holds the
// finished message once, and a page opened mid-stream is sent the text so far first.

import { Centrifuge } from 'centrifuge'
import { colorOf, endpoint, fetchToken, identify } from './lib/identity.js'
import { el, showConnection } from './lib/page.js'
import { Presence, displayName } from './lib/presence.js'
import { StreamView, streamFields } from './lib/streams.js'

const HISTORY_ON_OPEN = 50
const MAX_MESSAGES = 200 // per conversation; older ones leave the page
const MAX_DM_PEERS = 32
const MAX_ROOMS = 20
const MAX_TYPISTS = 50
const TYPING_EVERY_MS = 2000 // at most one typing signal per conversation this often
const TYPING_SHOW_MS = 4500 // a typing signal shows this long unless renewed
const TYPING_RPC = 'demo.typing'
const DEFAULT_ROOMS = ['general', 'random']
const ROOM_NAME = /^[a-z0-9][a-z0-9-]{0,31}$/
const ROOMS_KEY = 'switchboard-demo-rooms'

const byId = (id) => document.getElementById(id)

class Conversation {
  constructor (channel, kind, title, peer = '') {
    this.channel = channel
    this.kind = kind // 'room' or 'dm'
    this.title = title
    this.peer = peer // the other user of a DM
    this.messages = new Map() // offset (or a local key) -> message
    this.typing = new Map() // user -> {name, until}
    this.presence = new Presence()
    this.unread = 0
    this.sub = null
    this.recovered = null // while a recovery's publications arrive: how many
    this.streams = new StreamView() // streamed replies, reassembled
  }

  /** Add a message once (history and live delivery may both bring it), keeping MAX_MESSAGES. */
  add (message) {
    message.key = message.offset ? `o${message.offset}` : `s${message.seq}`
    if (this.messages.has(message.key)) return false
    this.keep(message)
    return true
  }

  /** A streamed message: one entry per stream, its text replaced as it grows. True when it is new. */
  putStream (id, message) {
    message.key = `r${id}`
    const known = this.messages.get(message.key)
    if (known === undefined) {
      this.keep(message)
      return true
    }
    known.text = message.text
    known.streaming = message.streaming
    if (message.offset) known.offset = message.offset // finished: it takes its place in history's order
    return false
  }

  keep (message) {
    this.messages.set(message.key, message)
    if (this.messages.size > MAX_MESSAGES) {
      const oldest = this.sorted().slice(0, this.messages.size - MAX_MESSAGES)
      for (const m of oldest) {
        this.messages.delete(m.key)
        if (m.stream) this.streams.forget(m.stream)
      }
    }
  }

  sorted () {
    // Offsets order a channel's publications; a message without one (no history) goes by arrival.
    return [...this.messages.values()].sort((a, b) => (a.offset || Infinity) - (b.offset || Infinity) || a.seq - b.seq)
  }

  typists (me) {
    const now = Date.now()
    const names = []
    for (const [user, entry] of this.typing) {
      if (entry.until <= now) this.typing.delete(user)
      else if (user !== me) names.push(entry.name)
    }
    return names
  }
}

let seq = 0
const conversations = new Map() // channel -> Conversation
let room = null // the room subscribed to (its presence is "Here now")
let view = null // the conversation on screen: the room or a DM
let me = null
let centrifuge = null
const typingSentAt = new Map()

function dmChannel (a, b) {
  return 'dm#' + [a, b].sort().join(',')
}

function savedRooms () {
  let saved = []
  try {
    saved = JSON.parse(window.localStorage.getItem(ROOMS_KEY) || '[]')
  } catch {}
  const rooms = [...DEFAULT_ROOMS]
  for (const r of Array.isArray(saved) ? saved : []) {
    if (typeof r === 'string' && ROOM_NAME.test(r) && !rooms.includes(r)) rooms.push(r)
  }
  return rooms.slice(0, MAX_ROOMS)
}

function rememberRoom (name) {
  const rooms = savedRooms()
  if (!rooms.includes(name)) rooms.push(name)
  window.localStorage.setItem(ROOMS_KEY, JSON.stringify(rooms.filter((r) => !DEFAULT_ROOMS.includes(r)).slice(-MAX_ROOMS)))
}

// ------------------------------------------------------------------ subscriptions

function subscribe (conv) {
  const sub = centrifuge.newSubscription(conv.channel, { recoverable: true, joinLeave: true })
  conv.sub = sub
  sub.on('publication', (ctx) => onPublication(conv, ctx))
  sub.on('join', (ctx) => {
    conv.presence.join(ctx.info)
    onPresence(conv)
  })
  sub.on('leave', (ctx) => {
    conv.presence.leave(ctx.info)
    conv.typing.delete(ctx.info.user)
    onPresence(conv)
  })
  sub.on('subscribed', (ctx) => onSubscribed(conv, ctx))
  sub.on('unsubscribed', (ctx) => {
    if (ctx.code >= 100 && ctx.code < 2500 && conv === view) showError(`${conv.title}: ${ctx.reason} (${ctx.code})`)
  })
  sub.on('error', (ctx) => console.warn('subscription error', conv.channel, ctx.error))
  sub.subscribe()
}

function onSubscribed (conv, ctx) {
  if (ctx.wasRecovering && !ctx.recovered) {
    byId('banner').hidden = false
  } else if (ctx.wasRecovering) {
    // The recovered publications are delivered right after this event, in the same task.
    conv.recovered = 0
    queueMicrotask(() => {
      if (conv !== view) {
        conv.recovered = null
        return
      }
      const notice = byId('notice')
      notice.hidden = false
      notice.dataset.recovered = String(conv.recovered)
      notice.textContent = `Reconnected: ${conv.recovered} missed message(s) recovered in ${conv.title}.`
      conv.recovered = null
    })
  } else {
    loadHistory(conv)
  }
  if (conv.kind === 'room') loadPresence(conv) // joins and leaves missed while away
}

async function loadHistory (conv) {
  try {
    const history = await conv.sub.history({ limit: HISTORY_ON_OPEN, reverse: true })
    let added = false
    for (const ctx of history.publications) added = addMessage(conv, ctx) !== null || added
    if (added) render()
  } catch (err) {
    console.warn('history', conv.channel, err)
  }
}

async function loadPresence (conv) {
  conv.presence.expectSnapshot()
  try {
    const result = await conv.sub.presence()
    conv.presence.snapshot(result.clients)
  } catch (err) {
    conv.presence.snapshot({})
    console.warn('presence', conv.channel, err)
  }
  onPresence(conv)
}

/** Returns 'new' (a message to show), 'grew' (a streamed message's text changed) or null (nothing). */
function addMessage (conv, ctx) {
  const data = ctx.data
  if (!data || typeof data.text !== 'string') return null
  const user = ctx.info ? ctx.info.user : ''
  const name = displayName(ctx.info)
  if (streamFields(data) !== null) {
    const change = conv.streams.feed(data)
    if (change === null) return null // a duplicate, or a chunk whose start this page never saw
    const offset = change.final ? ctx.offset || 0 : 0
    const message = { offset, seq: seq++, user, name, text: change.text, stream: change.id, streaming: !change.final }
    return conv.putStream(change.id, message) ? 'new' : 'grew'
  }
  return conv.add({ offset: ctx.offset || 0, seq: seq++, user, name, text: data.text }) ? 'new' : null
}

function onPublication (conv, ctx) {
  if (ctx.data && ctx.data.typing === true) {
    if (ctx.info && ctx.info.user !== me.user) {
      conv.typing.delete(ctx.info.user) // re-inserted last: the oldest go first past MAX_TYPISTS
      conv.typing.set(ctx.info.user, { name: displayName(ctx.info), until: Date.now() + TYPING_SHOW_MS })
      if (conv.typing.size > MAX_TYPISTS) conv.typing.delete(conv.typing.keys().next().value)
      renderTyping()
    }
    return
  }
  const change = addMessage(conv, ctx)
  if (change === null) return
  if (change === 'grew') {
    if (conv === view) renderMessages()
    return
  }
  if (conv.recovered !== null) conv.recovered += 1
  if (ctx.info) conv.typing.delete(ctx.info.user)
  if (conv !== view && !(ctx.info && ctx.info.user === me.user)) conv.unread += 1
  if (conv.kind === 'dm' && ctx.info && ctx.info.user === conv.peer) conv.title = displayName(ctx.info)
  render()
}

function onPresence (conv) {
  if (conv !== room) return
  for (const person of conv.presence.people()) {
    if (person.user && person.user !== me.user) directConversation(person.user, person.name)
  }
  render()
}

/** The DM conversation with `user`, subscribed on first use; null past MAX_DM_PEERS. */
function directConversation (user, name) {
  const channel = dmChannel(me.user, user)
  let conv = conversations.get(channel)
  if (conv) {
    if (name) conv.title = name
    return conv
  }
  const held = [...conversations.values()].filter((c) => c.kind === 'dm').length
  if (held >= MAX_DM_PEERS) return null
  conv = new Conversation(channel, 'dm', name || user, user)
  conversations.set(channel, conv)
  subscribe(conv)
  return conv
}

function openRoom (name) {
  const channel = `chat.${name}`
  if (room && room.channel === channel) {
    show(room)
    return
  }
  if (room) {
    // One room at a time: "Here now" is who has this room open.
    room.sub.unsubscribe()
    centrifuge.removeSubscription(room.sub)
    conversations.delete(room.channel)
  }
  rememberRoom(name)
  room = new Conversation(channel, 'room', `# ${name}`)
  room.name = name
  conversations.set(channel, room)
  subscribe(room)
  if (window.location.hash !== `#${name}`) window.history.replaceState(null, '', `#${name}`)
  show(room)
}

function show (conv) {
  view = conv
  conv.unread = 0
  render()
  byId('composer').elements.namedItem('text').focus()
}

// ------------------------------------------------------------------ sending

async function send (event) {
  event.preventDefault()
  const input = event.target.elements.namedItem('text')
  const text = input.value.trim()
  if (!text || !view) return
  try {
    await view.sub.publish({ text })
    input.value = ''
    typingSentAt.delete(view.channel)
    showError('')
  } catch (err) {
    showError(`not sent: ${err.message || err.code}`)
  }
}

function onInput (event) {
  if (!view || !event.target.value.trim()) return
  const now = Date.now()
  if (now - (typingSentAt.get(view.channel) || 0) < TYPING_EVERY_MS) return
  typingSentAt.set(view.channel, now)
  centrifuge.rpc(TYPING_RPC, { channel: view.channel }).catch((err) => console.debug('typing', err))
}

// ------------------------------------------------------------------ rendering

function showError (text) {
  byId('composer-error').textContent = text
}

function render () {
  if (!view) return
  byId('title').textContent = view.title
  renderRooms()
  renderDirect()
  renderPeople()
  renderMessages()
  renderTyping()
}

function renderRooms () {
  const current = room ? room.name : ''
  byId('rooms').replaceChildren(...savedRooms().map((name) => el('li', {},
    el('button', {
      type: 'button',
      className: name === current && view === room ? 'active' : '',
      dataset: { testid: 'room', room: name },
      onclick: () => openRoom(name)
    }, `# ${name}`))))
}

function renderDirect () {
  const dms = [...conversations.values()].filter((c) => c.kind === 'dm' && (c.messages.size > 0 || c === view))
  byId('dms').replaceChildren(...dms.map((c) => el('li', {},
    el('button', {
      type: 'button',
      className: c === view ? 'active' : '',
      dataset: { testid: 'dm', peer: c.peer },
      onclick: () => show(c)
    }, c.title, c.unread ? el('span', { className: 'badge', dataset: { testid: 'unread' } }, String(c.unread)) : null))))
}

function renderPeople () {
  const people = room ? room.presence.people() : []
  byId('people-count').textContent = String(people.length)
  byId('people').replaceChildren(...people.map((p) => {
    const dot = el('span', { className: 'dot' })
    dot.style.background = colorOf(p.user).color
    const label = [dot, p.name, p.user === me.user ? ' (you)' : '']
    if (p.bot) label.push(el('span', { className: 'badge bot', title: 'a bot', dataset: { testid: 'bot-badge' } }, 'bot'))
    if (p.connections > 1) label.push(el('span', { className: 'muted' }, ` ×${p.connections}`))
    const attrs = { dataset: { testid: 'person', user: p.user, bot: String(p.bot) } }
    if (p.user === me.user || !p.user) return el('li', attrs, ...label)
    return el('li', attrs, el('button', {
      type: 'button',
      title: `Write to ${p.name} alone`,
      onclick: () => { const c = directConversation(p.user, p.name); if (c) show(c) }
    }, ...label))
  }))
}

function renderMessages () {
  const list = byId('messages')
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40
  list.replaceChildren(...view.sorted().map((m) => {
    const name = el('span', { className: 'name' }, m.name)
    name.style.color = colorOf(m.user).color
    const dataset = { testid: 'message', user: m.user }
    if (m.stream) Object.assign(dataset, { stream: m.stream, streaming: String(m.streaming) })
    return el('li', {
      className: [m.user === me.user ? 'mine' : '', m.streaming ? 'streaming' : ''].join(' ').trim(),
      dataset
    }, name, el('span', { className: 'text' }, m.text))
  }))
  if (atBottom) list.scrollTop = list.scrollHeight
}

let typingTimer = null

function renderTyping () {
  const names = view ? view.typists(me.user) : []
  let text = ''
  if (names.length === 1) text = `${names[0]} is typing…`
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`
  else if (names.length > 2) text = `${names[0]}, ${names[1]} and ${names.length - 2} more are typing…`
  byId('typing').textContent = text
  // Sweep expired signals while any is showing; no timer otherwise.
  const any = [...conversations.values()].some((c) => c.typing.size > 0)
  if (any && typingTimer === null) typingTimer = setInterval(renderTyping, 500)
  if (!any && typingTimer !== null) {
    clearInterval(typingTimer)
    typingTimer = null
  }
}

// ------------------------------------------------------------------ start

async function main () {
  me = await identify(byId('join'))
  byId('reload').addEventListener('click', () => window.location.reload())
  byId('composer').addEventListener('submit', send)
  byId('composer').elements.namedItem('text').addEventListener('input', onInput)
  byId('new-room').addEventListener('submit', (event) => {
    event.preventDefault()
    const input = event.target.elements.namedItem('room')
    const name = input.value.trim().toLowerCase()
    if (!ROOM_NAME.test(name)) return
    input.value = ''
    openRoom(name)
  })
  window.addEventListener('hashchange', () => {
    const name = window.location.hash.slice(1)
    if (ROOM_NAME.test(name)) openRoom(name)
  })

  centrifuge = new Centrifuge(endpoint('../connection/websocket', true), {
    token: me.token,
    // Tokens expire (TOKEN_TTL in hub/demos.py): the SDK asks for a new one before they do.
    getToken: async () => (await fetchToken(me.name)).token
  })
  centrifuge.on('connecting', (ctx) => showConnection('connecting', ctx))
  centrifuge.on('connected', (ctx) => showConnection('connected', ctx))
  centrifuge.on('disconnected', (ctx) => showConnection('disconnected', ctx))
  byId('app').hidden = false
  const first = window.location.hash.slice(1)
  openRoom(ROOM_NAME.test(first) ? first : DEFAULT_ROOMS[0])
  centrifuge.connect()
}

main()
