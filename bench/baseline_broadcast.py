"""Baseline fan-out server for bench/fanout.py: the `websockets` asyncio server + broadcast().

It speaks just enough of the Centrifuge client protocol v2 (JSON) for the load client:
connect, subscribe, publish, and `{}` pongs; several commands per frame separated by "\\n".
A publication is encoded ONCE into a push frame and handed to
``websockets.asyncio.server.broadcast()`` for all subscribers of the channel (synchronous,
no per-client await). Nothing else: no history, presence, auth or pings of its own
(websockets' keepalive pings stay at their default, 20 s).

``GET /ready`` answers 200 like the hub. WebSocket path: /connection/websocket.

``--coalesce`` is only for testing the harness: publications that arrive in one loop pass
are joined with "\\n" into one frame (as the hub does), to exercise the client's parser.

usage: python bench/baseline_broadcast.py --port P [--host 127.0.0.1] [--loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
from http import HTTPStatus

import orjson
from websockets.asyncio.server import broadcast, serve
from websockets.exceptions import ConnectionClosed

WS_PATH = "/connection/websocket"
CHANNELS: dict[str, set] = {}
OFFSETS: dict[str, int] = {}
PENDING: dict[str, list[str]] = {}
CLIENT_IDS = itertools.count(1)
COALESCE = False


def process_request(connection, request):
    if request.path == "/ready":
        return connection.respond(HTTPStatus.OK, "ok\n")
    if request.path != WS_PATH:
        return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
    return None


def _flush() -> None:
    for ch, frames in PENDING.items():
        subs = CHANNELS.get(ch)
        if subs:
            broadcast(subs, "\n".join(frames))
    PENDING.clear()


def publish(ch: str, data) -> None:
    off = OFFSETS.get(ch, 0) + 1
    OFFSETS[ch] = off
    frame = orjson.dumps({"push": {"channel": ch, "pub": {"data": data, "offset": off}}}).decode()
    if COALESCE:
        if not PENDING:
            asyncio.get_running_loop().call_soon(_flush)
        PENDING.setdefault(ch, []).append(frame)
        return
    subs = CHANNELS.get(ch)
    if subs:
        broadcast(subs, frame)


async def handler(ws) -> None:
    mine: list[str] = []
    try:
        async for msg in ws:
            replies = []
            for line in msg.split("\n") if isinstance(msg, str) else ():
                if not line.strip():
                    continue
                cmd = orjson.loads(line)
                if not cmd:
                    continue  # pong to an application ping
                cid = cmd.get("id", 0)
                if "publish" in cmd:
                    p = cmd["publish"]
                    publish(p["channel"], p.get("data"))
                    replies.append(b'{"id":%d,"publish":{}}' % cid)
                elif "subscribe" in cmd:
                    ch = cmd["subscribe"]["channel"]
                    CHANNELS.setdefault(ch, set()).add(ws)
                    mine.append(ch)
                    replies.append(b'{"id":%d,"subscribe":{}}' % cid)
                elif "connect" in cmd:
                    replies.append(
                        orjson.dumps(
                            {
                                "id": cid,
                                "connect": {
                                    "client": f"baseline-{next(CLIENT_IDS)}",
                                    "version": "baseline",
                                    "ping": 25,
                                    "pong": True,
                                },
                            }
                        )
                    )
                else:
                    replies.append(
                        orjson.dumps({"id": cid, "error": {"code": 106, "message": "not available"}})
                    )
            if replies:
                await ws.send(b"\n".join(replies).decode())
    except ConnectionClosed:
        pass
    finally:
        for ch in mine:
            subs = CHANNELS.get(ch)
            if subs is not None:
                subs.discard(ws)


async def main(a) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(
        handler,
        a.host,
        a.port,
        process_request=process_request,
        compression=None,
        backlog=4096,
        max_size=1 << 20,
    ):
        await stop


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    ap.add_argument("--coalesce", action="store_true", help="harness self-test only")
    a = ap.parse_args()
    COALESCE = a.coalesce
    if a.loop == "uvloop":
        import uvloop

        uvloop.run(main(a))
    else:
        asyncio.run(main(a))
