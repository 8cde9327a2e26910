// Subscribe to a live feed with the official centrifuge-js SDK over WebSocket and print what the app sees,
// as JSON lines. Usage: node feeds.mjs <ws url> <json|protobuf> <channel> <options as JSON>
//   options: the subscription's options, e.g. {"delta": "fossil", "since": {}}; "readDelayMs": the
//   publication handler then blocks the event loop that long per publication (a dashboard that renders
//   slowly: the socket is not read meanwhile).
// Prints {"event": "subscribed", wasRecovering, recovered}, {"event": "publication", data, offset} for
// each publication (data decoded: the Protobuf build hands bytes, JSON encoded by the publisher), and on a
// publication whose data has "stop": true, {"event": "stats", ...sub.deltaStats()} and exits 0.
import WebSocket from 'ws';

const [url, protocol, channel, optionsJson = '{}'] = process.argv.slice(2);
const { readDelayMs = 0, ...options } = JSON.parse(optionsJson);
const { Centrifuge } = protocol === 'protobuf' ? await import('centrifuge/build/protobuf') : await import('centrifuge');
const dec = (v) => (protocol === 'protobuf' ? JSON.parse(new TextDecoder().decode(v)) : v);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const fail = (why) => { out({ error: String(why) }); process.exit(1); };
setTimeout(() => fail('timeout'), 60000).unref();

const client = new Centrifuge(url, { websocket: WebSocket });
client.on('error', (ctx) => out({ event: 'error', ctx: String(ctx.error && ctx.error.message) }));
client.on('disconnected', (ctx) => out({ event: 'disconnected', code: ctx.code }));
const sub = client.newSubscription(channel, options);
sub.on('subscribed', (ctx) => out({ event: 'subscribed', wasRecovering: ctx.wasRecovering, recovered: ctx.recovered }));
sub.on('error', (ctx) => fail(ctx.error && ctx.error.message));
sub.on('publication', (ctx) => {
  const data = dec(ctx.data);
  out({ event: 'publication', data, offset: ctx.offset });
  if (readDelayMs) {
    const until = Date.now() + readDelayMs;
    while (Date.now() < until) { /* busy: nothing is read from the socket meanwhile */ }
  }
  if (data.stop) {
    out({ event: 'stats', ...sub.deltaStats() });
    client.disconnect();
    process.exit(0);
  }
});
sub.subscribe();
client.connect();
