// Decodes relative positions and awareness states the way the Yjs editor bindings do (y-codemirror.next's
// remote selections, y-prosemirror's cursor plugin), for tests/sync/test_cursors_js.py.
//
//   node positions.mjs < requests.json > answers.json    (a list of requests; one answer for each)
//
// request: {update: base64 Yjs update, roots: {name: "text" | "map" | "array" | "xml"},
//           positions: [{json: RelativePosition JSON, path: [root, key | index, ...]}],
//           binary: [base64 encodeRelativePosition bytes], at: [{path, index, assoc}],
//           awareness: base64 awareness update (optional), insertFirst: {path, text} (optional)}
// answer:  {content: {root: string}, positions: [{index, sameType, inFragment} | null],
//           binary: [RelativePosition JSON], at: [RelativePosition JSON], awareness: [{user, anchor, head}],
//           afterInsert: [{index, sameType} | null]}
import { readFileSync } from 'node:fs'
import * as Y from 'yjs'
import * as awarenessProtocol from 'y-protocols/awareness'

const bytes = (b64) => new Uint8Array(Buffer.from(b64, 'base64'))

const answer = (request) => {
  const doc = new Y.Doc()
  Y.applyUpdate(doc, bytes(request.update))
  const roots = {}
  for (const [name, kind] of Object.entries(request.roots)) {
    roots[name] = kind === 'text' ? doc.getText(name)
      : kind === 'map' ? doc.getMap(name)
        : kind === 'array' ? doc.getArray(name) : doc.getXmlFragment(name)
  }
  const resolve = (path) => {
    let type = roots[path[0]]
    for (const step of path.slice(1)) type = type.get(step)
    return type
  }
  const decode = (json, path) => {
    const absolute = Y.createAbsolutePositionFromRelativePosition(Y.createRelativePositionFromJSON(json), doc)
    if (absolute === null) return null
    const root = roots[path[0]]
    return {
      index: absolute.index,
      sameType: absolute.type === resolve(path), // what y-codemirror.next checks
      inFragment: root instanceof Y.XmlFragment && Y.isParentOf(root, absolute.type._item) // y-prosemirror
    }
  }
  const content = {}
  for (const [name, type] of Object.entries(roots)) content[name] = type.toString()
  const result = {
    content,
    positions: (request.positions || []).map(({ json, path }) => decode(json, path)),
    binary: (request.binary || []).map((b64) => Y.relativePositionToJSON(Y.decodeRelativePosition(bytes(b64)))),
    at: (request.at || []).map(({ path, index, assoc }) =>
      Y.relativePositionToJSON(Y.createRelativePositionFromTypeIndex(resolve(path), index, assoc)))
  }
  if (request.awareness) {
    const awareness = new awarenessProtocol.Awareness(doc)
    awareness.setLocalState(null)
    awarenessProtocol.applyAwarenessUpdate(awareness, bytes(request.awareness), 'remote')
    result.awareness = Array.from(awareness.getStates().values()).map((state) => ({
      user: state.user,
      anchor: decode(state.cursor.anchor, request.awarenessPath),
      head: decode(state.cursor.head, request.awarenessPath)
    }))
    awareness.destroy()
  }
  if (request.insertFirst) {
    // a person types at the start of the text meanwhile: the positions move with the characters
    resolve(request.insertFirst.path).insert(0, request.insertFirst.text)
    result.afterInsert = (request.positions || []).map(({ json, path }) => decode(json, path))
  }
  return result
}

process.stdout.write(JSON.stringify(JSON.parse(readFileSync(0, 'utf8')).map(answer)))
