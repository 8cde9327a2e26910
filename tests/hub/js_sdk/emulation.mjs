// Drive the official centrifuge-js SDK over one transport against a running hub; print what happened as
// JSON lines. Usage: node emulation.mjs <http base> <transport: http_stream|sse|websocket> <token> [json|protobuf]
// With protobuf the SDK's Protobuf build is used; payloads are JSON encoded to bytes (the hub requires JSON).
// EMULATION_BASE (environment): POST the emulation requests to this base instead (another node of the hub).
import { EventSource } from 'eventsource';
import WebSocket from 'ws';

const [base, transport, token, protocol = 'json'] = process.argv.slice(2);
const { Centrifuge } = protocol === 'protobuf' ? await import('centrifuge/build/protobuf') : await import('centrifuge');
const enc = (v) => (protocol === 'protobuf' ? new TextEncoder().encode(JSON.stringify(v)) : v);
const dec = (v) => (protocol === 'protobuf' ? JSON.parse(new TextDecoder().decode(v)) : v);
const ws = base.replace(/^http/, 'ws');
const endpoints = {
  http_stream: base + '/connection/http_stream',
  sse: base + '/connection/sse',
  websocket: ws + '/connection/websocket',
};
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const fail = (why) => { out({ error: String(why) }); process.exit(1); };
setTimeout(() => fail('timeout'), 20000).unref();

const client = new Centrifuge([{ transport, endpoint: endpoints[transport] }], {
  token,
  emulationEndpoint: (process.env.EMULATION_BASE || base) + '/emulation',  // another node: no sticky sessions
  websocket: WebSocket,
  eventsource: EventSource,
  fetch: globalThis.fetch,
  readableStream: globalThis.ReadableStream,
});
client.on('error', (ctx) => out({ event: 'error', ctx: String(ctx.error && ctx.error.message) }));

const connected = new Promise((resolve) => client.on('connected', resolve));
client.connect();
const ctx = await connected;
out({ event: 'connected', transport: ctx.transport, client: ctx.client });

const sub = client.newSubscription('chat:js');
const pubs = [];
let gotPub;
const firstPub = new Promise((resolve) => { gotPub = resolve; });
sub.on('publication', (p) => { pubs.push(dec(p.data)); gotPub(); });
const subscribed = new Promise((resolve) => sub.on('subscribed', resolve));
sub.subscribe();
await subscribed;
out({ event: 'subscribed' });

await sub.publish(enc({ from: transport }));
await firstPub;
out({ event: 'publication', data: pubs[0] });

const rpc = await client.rpc('add', enc({ a: 2, b: 40 }));
out({ event: 'rpc', data: dec(rpc.data) });

const presence = await sub.presence();
out({ event: 'presence', users: Object.values(presence.clients).map((c) => c.user) });

const history = await sub.history({ limit: 10 });
out({ event: 'history', data: history.publications.map((p) => dec(p.data)) });

client.disconnect();
out({ event: 'done' });
process.exit(0);
