// The collaborative editor demo: CodeMirror 6 on a Yjs text (y-codemirror.next) through the stock
// y-websocket provider against the hub's /doc/<name>. Names, colors and cursors travel in awareness:
// the binding draws the others' cursors and selections with their names; "Editing now" lists them.
//
// The provider connects with this window's development token (?token=...). A token that expires
// closes the connection with 4401, after which y-websocket does not reconnect by itself: the page
// gets a fresh token and connects again (what the README recommends to every app).

import { basicSetup } from 'codemirror'
import { EditorView } from '@codemirror/view'
import { EditorState } from '@codemirror/state'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { yCollab } from 'y-codemirror.next'
import { colorOf, endpoint, fetchToken, identify } from './lib/identity.js'

const DOC_NAME = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$/
const DEFAULT_DOC = 'welcome'
const TEXT_ROOT = 'text'
const UNAUTHORIZED = 4401

const byId = (id) => document.getElementById(id)

function documentName () {
  const asked = new URLSearchParams(window.location.search).get('doc') || ''
  return DOC_NAME.test(asked) ? asked : DEFAULT_DOC
}

function setState (state, text) {
  const node = byId('state')
  if (state === 'connected' && node.dataset.state !== 'connected') {
    node.dataset.connects = String(Number(node.dataset.connects) + 1)
  }
  node.dataset.state = state
  node.textContent = text || state
}

function renderPeople (awareness, me) {
  const people = []
  for (const [clientId, state] of awareness.getStates()) {
    if (state.user && typeof state.user.name === 'string') people.push({ clientId, ...state.user })
  }
  people.sort((a, b) => a.name.localeCompare(b.name))
  byId('people-count').textContent = String(people.length)
  byId('people').replaceChildren(...people.map((p) => {
    const li = document.createElement('li')
    li.dataset.testid = 'peer'
    li.dataset.user = p.id || ''
    const dot = document.createElement('span')
    dot.className = 'dot'
    dot.style.background = p.color
    li.append(dot, p.name, p.clientId === awareness.clientID ? ' (you)' : '')
    return li
  }))
}

async function main () {
  const me = await identify(byId('join'))
  const name = documentName()
  const form = byId('open-doc')
  form.elements.namedItem('doc').value = name
  form.addEventListener('submit', (event) => {
    event.preventDefault()
    const next = form.elements.namedItem('doc').value.trim()
    if (DOC_NAME.test(next)) window.location.search = `?doc=${encodeURIComponent(next)}`
  })
  byId('app').hidden = false

  const ydoc = new Y.Doc()
  const ytext = ydoc.getText(TEXT_ROOT)
  const provider = new WebsocketProvider(endpoint('../doc', true), name, ydoc, { params: { token: me.token } })
  const { color, light } = colorOf(me.user)
  provider.awareness.setLocalStateField('user', { name: me.name, id: me.user, color, colorLight: light })

  provider.on('status', ({ status }) => {
    const awareness = provider.awareness
    if (status === 'disconnected') {
      // The provider dropped the others' states but keeps their clocks: the states the hub sends
      // after a reconnect (unchanged, so with the same clocks) would be ignored as stale, and the
      // others' cursors stay away until their 15 s renewal. What the hub sends next is the truth.
      for (const id of [...awareness.meta.keys()]) {
        if (id !== awareness.clientID && !awareness.states.has(id)) awareness.meta.delete(id)
      }
    }
    if (status === 'connected' && byId('state').dataset.connects !== '0') {
      // On a reconnect the provider announces this window's state with the clock it had; the hub
      // removed that state when the old connection closed, with the clock after it
      // (sync/awareness.py). Both are stale to the hub: two clocks on, the state is news again.
      for (let i = 0; i < 2; i++) awareness.setLocalState(awareness.getLocalState())
    }
    setState(status)
  })
  provider.on('sync', (synced) => {
    byId('sync').textContent = synced ? 'saved on the hub' : 'syncing…'
    byId('sync').dataset.synced = String(synced)
  })
  provider.on('closed', async ({ code, reason }) => {
    if (code !== UNAUTHORIZED) {
      const banner = byId('banner')
      banner.textContent = `The hub closed the document: ${reason || 'refused'} (${code}).`
      banner.hidden = false
      setState('closed', `closed (${code})`)
      return
    }
    try {
      provider.params = { ...provider.params, token: (await fetchToken(me.name)).token }
      provider.connect()
    } catch (err) {
      setState('closed', `token refused: ${err.message}`)
    }
  })
  provider.awareness.on('change', () => renderPeople(provider.awareness, me))
  renderPeople(provider.awareness, me)

  const undoManager = new Y.UndoManager(ytext)
  const view = new EditorView({
    state: EditorState.create({
      doc: ytext.toString(),
      extensions: [basicSetup, EditorView.lineWrapping, yCollab(ytext, provider.awareness, { undoManager })]
    }),
    parent: byId('editor')
  })
  view.focus()
  window.addEventListener('pagehide', () => provider.destroy())
}

main()
