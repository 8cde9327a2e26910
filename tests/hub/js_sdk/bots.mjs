// A person on the official centrifuge-js SDK beside a bot (tests/hub/bots/test_bots_js.py): waits in the
// room for the bot's join push, reads presence, asks the bot and asks a method no bot serves. Prints one
// JSON object per line. Usage: node bots.mjs <ws url> <token> [json|protobuf]
import WebSocket from 'ws';

const [url, token, protocol = 'json'] = process.argv.slice(2);
const { Centrifuge } = protocol === 'protobuf' ? await import('centrifuge/build/protobuf') : await import('centrifuge');
const enc = (v) => (protocol === 'protobuf' ? new TextEncoder().encode(JSON.stringify(v)) : v);
const dec = (v) => (v === undefined || v === null || protocol !== 'protobuf' ? v : JSON.parse(new TextDecoder().decode(v)));
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
setTimeout(() => { out({ event: 'timeout' }); process.exit(1); }, 30000).unref();

const client = new Centrifuge(url, { token, websocket: WebSocket });
const room = client.newSubscription('room');
const botJoined = new Promise((resolve) => room.on('join', (ctx) => {
  if (ctx.info.user === 'helper') resolve(ctx.info);
}));
room.on('subscribed', () => out({ event: 'subscribed' }));
room.subscribe();
client.connect();

const joined = await botJoined;
out({ event: 'join', user: joined.user, connInfo: dec(joined.connInfo) });
const presence = await room.presence();
out({
  event: 'presence',
  clients: Object.values(presence.clients).map((c) => ({ user: c.user, connInfo: dec(c.connInfo) })),
});
const answer = await client.rpc('agent.helper.ask', enc({ q: 'hello?' }));
out({ event: 'answer', data: dec(answer.data) });
try {
  await client.rpc('agent.nobody.here', enc({}));
  out({ event: 'unexpected' });
} catch (e) {
  out({ event: 'refused', code: e.code, message: e.message });
}
client.disconnect();
process.exit(0);
