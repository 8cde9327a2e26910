"""CPU per call of an RPC served by a bot, against an RPC served by an application hook, in one process.

    .venv/bin/python bench/bots.py [--calls 5000] [--repeats 3]

Both run on an in-process hub (``Switchboard``) with sessions on a transport that keeps what it is given
(no sockets: the hub's own path only). Per call:

- **hook** (baseline): a person's ``rpc("echo", data)`` answered by ``@sb.rpc("echo")``, with two steps of
  the event loop per call as the bot's path takes (each an epoll call: a few microseconds here).
- **bot**: a person's ``rpc("agent.echo", data)`` routed to a bot session on the same node, which gets the
  request as a publication of ``:bot`` and answers with ``bot.reply`` (two commands and two pushes per
  call: what a real bot costs the hub, without the bot's own work).

Figures: process CPU (``time.process_time``) per call, the median of ``--repeats`` runs, and the ratio
bot / hook. The machine is shared and noisy: compare the ratio, measured in the same run, not the absolute
microseconds. Cross-node calls add a control-channel round trip per call (two Redis publishes and a survey
of every node to find the bot); they are not measured here.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub.app import Switchboard  # noqa: E402
from hub.auth import mint_token  # noqa: E402
from hub.config import Config  # noqa: E402

SECRET = "bench-secret-of-at-least-32-bytes-long!!"
BOT_SECRET = "bench-bot-secret-of-at-least-32-bytes!!"
DATA = {"q": "what is the weather like today?", "n": 1}


class Sink:
    name = "sink"

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def write_messages(self, messages: list[bytes]) -> int:
        self.frames.extend(messages)
        return 0

    def close(self, code: int, reason: str) -> None:
        pass


async def run(calls: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as data_dir:
        cfg = Config(
            token_hmac_secret_key=SECRET,
            bot_token_hmac_secret_key=BOT_SECRET,
            data_dir=data_dir,
            log_level="warning",
            bot_rpc_max_pending_per_user=calls + 1,
        )
        sb = Switchboard(cfg)

        @sb.rpc("echo")
        async def echo(ctx: Any) -> Any:
            return ctx.data

        await sb.start()
        try:
            person_sink, bot_sink = Sink(), Sink()
            person = sb.node.new_session(person_sink, scope={})
            bot = sb.node.new_session(bot_sink, scope={})
            await person.handle_frame(
                orjson.dumps({"id": 1, "connect": {"token": mint_token(SECRET, "ann")}})
            )
            bot_token = mint_token(BOT_SECRET, "helper", bot=True)
            await bot.handle_frame(orjson.dumps({"id": 1, "connect": {"token": bot_token}}))
            serve = {"id": 2, "rpc": {"method": "bot.serve", "data": {"prefix": "agent."}}}
            await bot.handle_frame(orjson.dumps(serve))
            frames = [
                orjson.dumps({"id": n, "rpc": {"method": "echo", "data": DATA}}) for n in range(2, calls + 2)
            ]

            start = time.process_time()
            for frame in frames:
                await person.handle_frame(frame)
                await asyncio.sleep(0)  # as many loop steps per call as the bot's path takes
                await asyncio.sleep(0)
            sb.node.scheduler.flush()
            hook = (time.process_time() - start) / calls

            bot_sink.frames.clear()
            start = time.process_time()
            for n in range(calls):
                call = {"id": n + calls + 2, "rpc": {"method": "agent.echo", "data": DATA}}
                await person.handle_frame(orjson.dumps(call))
                await asyncio.sleep(0)  # the call's task hands the request to the bot
                sb.node.scheduler.flush()
                push = orjson.loads(bot_sink.frames.pop())
                request = push["push"]["pub"]["data"]
                reply = {
                    "id": n + 3,
                    "rpc": {"method": "bot.reply", "data": {"id": request["id"], "result": DATA}},
                }
                await bot.handle_frame(orjson.dumps(reply))
                await asyncio.sleep(0)  # the call's task ends (its reply goes out on the next step)
            await asyncio.sleep(0)
            sb.node.scheduler.flush()
            routed = (time.process_time() - start) / calls
            answered = sum(frame.count(b'"rpc":{"data"') for frame in person_sink.frames)
            assert answered >= 2 * calls, answered
            return hook, routed
        finally:
            await sb.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs = [asyncio.run(run(args.calls)) for _ in range(args.repeats)]
    hook = statistics.median(r[0] for r in runs)
    bot = statistics.median(r[1] for r in runs)
    print(f"calls per run: {args.calls}, runs: {args.repeats} (median); CPU of this process per call")
    print(f"hook rpc (baseline): {hook * 1e6:8.1f} us")
    print(f"bot rpc (routed):    {bot * 1e6:8.1f} us   ratio bot/hook {bot / hook:.2f}")


if __name__ == "__main__":
    main()
