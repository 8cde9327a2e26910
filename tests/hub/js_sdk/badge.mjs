// A browser app's notification badge, driven by the official centrifuge-js SDK against a running hub:
// the personal channel comes from the connect reply (a server-side subscription, no code for it here),
// the badge starts from an `inbox.counts` RPC once that subscription is there, and follows the pushes,
// keeping the counts of the highest version seen (pushes from several nodes may arrive out of order).
// Usage: node badge.mjs <ws url> <token> <personal channel>. Prints JSON lines: {"event": "badge", counts}
// on every change, {"event": "rpc", id, data | error} for each command read from stdin as a JSON line
// {"id", "method", "data"}; a line "exit" disconnects and exits.
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';
import readline from 'node:readline';

const [url, token, personal] = process.argv.slice(2);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const fail = (why) => { out({ error: String(why) }); process.exit(1); };
setTimeout(() => fail('timeout'), 60000).unref();

let badge = { version: -1 };
const show = (counts) => {
  if (counts.version > badge.version) {
    badge = counts;
    out({ event: 'badge', counts });
  }
};

const client = new Centrifuge(url, { token, websocket: WebSocket });
client.on('error', (ctx) => out({ event: 'error', message: String(ctx.error && ctx.error.message) }));
client.on('publication', (ctx) => {
  if (ctx.channel === personal && ctx.data && ctx.data.counts) show(ctx.data.counts);
});
client.on('subscribed', async (ctx) => {
  if (ctx.channel !== personal) return;
  out({ event: 'subscribed', channel: ctx.channel });
  show((await client.rpc('inbox.counts', {})).data);
});
client.connect();

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  if (line.trim() === 'exit') break;
  const { id, method, data } = JSON.parse(line);
  try {
    out({ event: 'rpc', id, data: (await client.rpc(method, data)).data });
  } catch (e) {
    out({ event: 'rpc', id, error: { code: e.code, message: e.message } });
  }
}
client.disconnect();
process.exit(0);
