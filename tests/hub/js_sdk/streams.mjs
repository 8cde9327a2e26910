// A streamed reply through the official centrifuge-js SDK, unchanged: an agent publishes a reply chunk by
// chunk; a subscriber there before, one that joins mid-stream and one that disconnects mid-stream and
// comes back (recovery) reassemble it with the demo's StreamView (static/demo/src/lib/streams.js).
// Prints one JSON line per subscriber and one for history. Usage: node streams.mjs <http base> <token> [json|protobuf]
import WebSocket from 'ws';
import { StreamView } from '../../../static/demo/src/lib/streams.js';

const [base, token, protocol = 'json'] = process.argv.slice(2);
const { Centrifuge } = protocol === 'protobuf' ? await import('centrifuge/build/protobuf') : await import('centrifuge');
const enc = (v) => (protocol === 'protobuf' ? new TextEncoder().encode(JSON.stringify(v)) : v);
const dec = (v) => (protocol === 'protobuf' ? JSON.parse(new TextDecoder().decode(v)) : v);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const fail = (why) => { out({ error: String(why) }); process.exit(1); };
setTimeout(() => fail('timeout'), 30000).unref();
const CHANNEL = 'agent:js';
const WORDS = ['Streamed ', 'from ', 'an ', 'agent, ', 'token ', 'by ', 'token.'];

function open(name) {
  const client = new Centrifuge(base.replace(/^http/, 'ws') + '/connection/websocket', { token, websocket: WebSocket });
  const sub = client.newSubscription(CHANNEL);
  const view = new StreamView();
  const waiters = [];
  sub.on('publication', (ctx) => {
    view.feed(dec(ctx.data));
    for (const w of waiters.splice(0)) w();
  });
  sub.on('error', (ctx) => out({ event: 'error', who: name, error: String(ctx.error && ctx.error.message) }));
  const seen = (seq, final = false) => new Promise((resolve) => {
    const check = () => ((view.seqs.get('r') ?? -1) >= seq && (!final || view.finished.has('r')) ? resolve() : waiters.push(check));
    check();
  });
  const subscribed = () => new Promise((resolve) => sub.once('subscribed', resolve));
  return { name, client, sub, view, seen, subscribed };
}

async function start(peer) {
  const ready = peer.subscribed();
  peer.sub.subscribe();
  peer.client.connect();
  return ready;
}

const agent = open('agent');
const before = open('before');
const dropped = open('dropped');
await Promise.all([start(agent), start(before), start(dropped)]);
const chunk = (seq) => ({ stream: { id: 'r', seq, ...(seq === WORDS.length - 1 ? { final: true } : {}) }, text: WORDS[seq] });

for (let seq = 0; seq < 3; seq++) await agent.sub.publish(enc(chunk(seq)));
await Promise.all([before.seen(2), dropped.seen(2)]);
dropped.client.disconnect();
for (let seq = 3; seq < 5; seq++) await agent.sub.publish(enc(chunk(seq)));
const late = open('late');
await start(late);
const back = dropped.subscribed();
dropped.client.connect();
const again = await back;
out({ event: 'resubscribed', wasRecovering: again.wasRecovering, recovered: again.recovered });
await Promise.all([late.seen(4), dropped.seen(4), before.seen(4)]);  // each has the text so far
for (let seq = 5; seq < WORDS.length; seq++) await agent.sub.publish(enc(chunk(seq)));
for (const peer of [before, late, dropped]) {
  await peer.seen(WORDS.length - 1, true);
  out({ event: 'text', who: peer.name, text: peer.view.texts.get('r'), gaps: peer.view.gaps });
}
const history = await agent.sub.history({ limit: 10 });
out({ event: 'history', texts: history.publications.map((p) => dec(p.data).text) });
for (const peer of [agent, before, late, dropped]) peer.client.disconnect();
out({ event: 'done' });
process.exit(0);
