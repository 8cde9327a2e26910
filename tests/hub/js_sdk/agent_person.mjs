// A person on the official centrifuge-js SDK in the room of examples/agent_assistant.py
// (tests/examples/test_agent_assistant.py): sees the agent in presence as a bot, mentions it, reassembles
// its streamed reply (static/demo/src/lib/streams.js, as the chat demo does), then calls its RPC method.
// Prints one JSON object per line. Usage: node agent_person.mjs <ws url> <token> <room>
import WebSocket from 'ws';
import { Centrifuge } from 'centrifuge';
import { StreamView } from '../../../static/demo/src/lib/streams.js';

const [url, token, channel] = process.argv.slice(2);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
setTimeout(() => { out({ event: 'timeout' }); process.exit(1); }, 30000).unref();

const client = new Centrifuge(url, { token, websocket: WebSocket });
const room = client.newSubscription(channel, { joinLeave: true });
const view = new StreamView(); // the chat demo's reassembly (channels/streams.py's rule)
let chunks = 0;
let finished = null;
const done = new Promise((resolve) => { finished = resolve; });
room.on('publication', (ctx) => {
  if (!ctx.data || !ctx.data.stream || ctx.info.user !== 'assistant') return;
  chunks += 1;
  const change = view.feed(ctx.data);
  if (change && change.final) {
    finished({ text: change.text, replyTo: ctx.data.reply_to, bot: ctx.info.connInfo.bot, gaps: view.gaps });
  }
});
const subscribed = new Promise((resolve) => room.on('subscribed', resolve));
room.subscribe();
client.connect();
await subscribed;

const presence = await room.presence();
out({ event: 'presence', clients: Object.values(presence.clients).map((c) => ({ user: c.user, connInfo: c.connInfo })) });
await room.publish({ text: '@assistant hello from JS' });
const reply = await done;
out({ event: 'reply', ...reply, chunks });
const answer = await client.rpc('agent.assistant.ask', { text: 'are you there?' });
out({ event: 'answer', data: answer.data });
client.disconnect();
process.exit(0);
