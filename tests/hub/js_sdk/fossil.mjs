// Apply publication chains with the official centrifuge-js SDK's own delta decoding: the codec a Centrifuge
// client uses for a subscription that negotiated `delta: 'fossil'` (its applyDeltaIfNeeded, which runs the
// bundled fossil applyDelta; the function itself is not exported). Used by tests/channels/test_fossil.py.
//
// stdin: {"protocol": "json" | "protobuf", "chains": [[{"data": ..., "delta": bool}, ...], ...]}
//   json: `data` is the string the hub puts in the publication's JSON `data` (the full JSON text, or the
//   delta, as a JSON string); protobuf: `data` is the publication's bytes, base64-encoded.
// stdout: one JSON line per chain: {"values": [<base64 of the bytes the SDK holds after each publication>],
//   "data": [<what the SDK hands the app: the parsed JSON (json) or base64 of the bytes (protobuf)>]}
//   or {"error": "..."} when the SDK refused a publication.
const input = JSON.parse(await new Promise((resolve) => {
  let text = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk) => { text += chunk; });
  process.stdin.on('end', () => resolve(text));
}));
const protobuf = input.protocol === 'protobuf';
const { Centrifuge } = protobuf ? await import('centrifuge/build/protobuf') : await import('centrifuge');
const codec = new Centrifuge('ws://127.0.0.1:9/never-connected')._codec;  // the constructor picks the codec
const b64 = (bytes) => Buffer.from(bytes).toString('base64');

for (const chain of input.chains) {
  let prev;
  const values = [];
  const data = [];
  try {
    for (const pub of chain) {
      const wire = protobuf ? { data: new Uint8Array(Buffer.from(pub.data, 'base64')), delta: pub.delta } : pub;
      const { newData, newPrevValue } = codec.applyDeltaIfNeeded(wire, prev);
      prev = newPrevValue;
      values.push(b64(newPrevValue));
      data.push(protobuf ? b64(newData) : newData);
    }
    process.stdout.write(JSON.stringify({ values, data }) + '\n');
  } catch (err) {
    process.stdout.write(JSON.stringify({ error: String(err && err.message) }) + '\n');
  }
}
