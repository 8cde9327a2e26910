// A stock y-websocket client (yjs + y-websocket over the `ws` package), driven by tests/hub/test_docs_js.py.
// Prints one JSON object per line on stdout: {"event": ...}.
//
//   node client.mjs edit URL ROOM TOKEN ID COUNT EXPECT_IDS
//     sync, insert COUNT words "ID-i" at word boundaries, set awareness {user: ID}, wait until the text
//     holds every word of every id in EXPECT_IDS (comma-separated, COUNT each), print it, keep running
//     until stdin closes (so awareness stays up while the test looks), then exit 0.
//   node client.mjs watch URL ROOM TOKEN
//     sync; print the text and awareness states whenever they change (each state's cursor decoded to
//     indexes of the text, as y-codemirror.next draws it).
//   node client.mjs refused URL ROOM TOKEN
//     connect; print the permission-denied reason and the close code; exit 0.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const [mode, url, room, token, id, countArg, expectArg] = process.argv.slice(2)
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
setTimeout(() => { out({ event: 'timeout' }); process.exit(2) }, 60000).unref()

const doc = new Y.Doc()
const params = token ? { token } : {}
const denied = []
const origWarn = console.warn
console.warn = (...args) => { denied.push(args.join(' ')); origWarn(...args) }
const provider = new WebsocketProvider(url, room, doc, { WebSocketPolyfill: WebSocket, params, disableBc: true })
const text = doc.getText('text')
// y-codemirror.next's reading of a remote cursor: relative positions decoded to indexes of the Y.Text
const index = (json) => {
  const absolute = Y.createAbsolutePositionFromRelativePosition(Y.createRelativePositionFromJSON(json), doc)
  return absolute !== null && absolute.type === text ? absolute.index : null
}
const states = () => Array.from(provider.awareness.getStates().entries())
  .filter(([client]) => client !== doc.clientID).map(([client, state]) => ({
    client,
    state,
    cursor: state.cursor ? { anchor: index(state.cursor.anchor), head: index(state.cursor.head) } : null
  }))

if (mode === 'refused') {
  provider.once('connection-close', (event) => {
    out({ event: 'closed', code: event ? event.code : null, reason: event ? event.reason : null, denied })
    process.exit(0)
  })
} else if (mode === 'watch') {
  provider.on('sync', (synced) => { if (synced) out({ event: 'synced', text: text.toString() }) })
  text.observe(() => out({ event: 'text', text: text.toString() }))
  provider.awareness.on('change', () => out({ event: 'awareness', text: text.toString(), states: states() }))
} else {
  const count = parseInt(countArg, 10)
  const expectIds = expectArg.split(',')
  const expected = []
  for (const other of expectIds) for (let i = 0; i < count; i++) expected.push(`${other}-${i}`)
  const complete = () => { const words = new Set(text.toString().split(' ')); return expected.every((w) => words.has(w)) }
  let reported = false
  const check = () => {
    if (!reported && complete()) { reported = true; out({ event: 'complete', text: text.toString(), states: states() }) }
  }
  provider.once('sync', async () => {
    out({ event: 'synced' })
    provider.awareness.setLocalStateField('user', id)
    for (let i = 0; i < count; i++) {
      const s = text.toString()
      const boundaries = [0]
      for (let j = 0; j < s.length; j++) if (s[j] === ' ') boundaries.push(j + 1)
      const at = boundaries[Math.floor(Math.random() * boundaries.length)]
      text.insert(at, `${id}-${i} `)
      if (i % 5 === 4) await new Promise((resolve) => setTimeout(resolve, 5))
    }
    out({ event: 'inserted' })
    check()
  })
  text.observe(check)
  provider.awareness.on('change', () => { if (reported) out({ event: 'awareness', states: states() }) })
  process.stdin.on('end', () => { provider.destroy(); process.exit(0) })
  process.stdin.resume()
}
