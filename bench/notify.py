"""Notify benchmark: a ``notify`` to 10,000 recipients of whom 5,000 are online, end to end through a hub.

    .venv/bin/pip install -r bench/requirements.txt          # picows for the clients
    nice .venv/bin/python bench/notify.py                     # SQLite inbox, 3 rounds, about a minute
    nice .venv/bin/python bench/notify.py --store postgres    # the inbox on a throwaway PostgreSQL cluster
    nice .venv/bin/python bench/notify.py --recipients 2000 --online 1000 --rounds 2   # a quick look

One run: a hub (``python -m hub serve``, one node, its own config and data directory, personal channels
``personal:#<user>`` subscribed at connect, the namespace with history as the README recommends) and this
process holding ``--online`` WebSocket clients (uvloop + picows, as bench/load_client.py), users ``u0`` ...,
each also subscribed to the channel ``bench``. Then, ``--rounds`` times, each timed from the moment the
request is sent:

- **notify**: ``POST /api/notify`` to ``--recipients`` users (``u0`` ...; the first ``--online`` are
  connected) with a new notification: ``reply`` (the API answers once the items, counters and deliveries
  of every recipient are committed in one transaction and every push was handed to the broker),
  ``first`` (the first push received: the commit came before it), ``p50`` and ``last`` (every online
  recipient got its push), and ``delivered`` (``notification_status`` shows in-app ``delivered`` for every
  online recipient: the node recorded what reached its devices; polled every 20 ms).
- **baselines** from the same run, the same clients: ``publish`` of one publication to ``bench`` (one
  channel, ``--online`` subscribers: the hub's fan-out floor), and ``broadcast`` of one publication to
  each online user's personal channel (``--online`` channels: per-user pushes without the inbox).

Checks: every online client got exactly one push per round; the notify stored an item for every
recipient. Prints one JSON line per round and phase, then the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uvloop
from picows import WSListener, WSMsgType, ws_connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from hub.auth import mint_token  # noqa: E402
from tests.postgres_servers import PostgresServer  # noqa: E402

SECRET = "bench-notify-secret-of-at-least-32-bytes"
API_KEY = "bench-notify-key"
TEXT = WSMsgType.TEXT
ROUND = re.compile(rb'"round":(\d+)')

CONFIG = """\
token_hmac_secret_key = "{secret}"
api_key = "{api_key}"
log_level = "warning"
user_subscribe_to_personal = true
user_personal_channel_namespace = "personal"
client_channel_limit = 8
{database}

[channel]
allow_subscribe_for_client = true

[[namespaces]]
name = "personal"
allow_user_limited_channels = true
{personal_history}
"""


class Arrivals:
    """When each round's push reached each client (ns), and the future that completes a round."""

    def __init__(self, online: int) -> None:
        self.online = online
        self.times: dict[int, list[int]] = {}
        self.done: dict[int, asyncio.Future[None]] = {}
        self.extra = 0
        """Pushes of a round a client had already had: must stay 0."""

    def expect(self, round_: int) -> asyncio.Future[None]:
        self.times[round_] = []
        fut = self.done[round_] = asyncio.get_running_loop().create_future()
        return fut

    def got(self, round_: int, now: int, client: Device) -> None:
        if round_ in client.seen:
            self.extra += 1
            return
        client.seen.add(round_)
        arrived = self.times.get(round_)
        if arrived is None:
            return
        arrived.append(now)
        if len(arrived) == self.online and not self.done[round_].done():
            self.done[round_].set_result(None)


class Device(WSListener):  # type: ignore[misc]
    def __init__(self, token: str, arrivals: Arrivals) -> None:
        super().__init__()
        self.token = token
        self.arrivals = arrivals
        self.seen: set[int] = set()
        self.ready = asyncio.get_running_loop().create_future()
        self.transport: Any = None

    def on_ws_connected(self, transport: Any) -> None:
        self.transport = transport
        connect = {"id": 1, "connect": {"token": self.token}}
        subscribe = {"id": 2, "subscribe": {"channel": "bench"}}
        transport.send(TEXT, json.dumps(connect).encode() + b"\n" + json.dumps(subscribe).encode())

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        if frame.msg_type != TEXT:
            return
        now = time.time_ns()
        for line in frame.get_payload_as_bytes().split(b"\n"):
            if line == b"{}":
                transport.send(TEXT, b"{}")
            elif b'"push"' in line:
                found = ROUND.search(line)
                if found is not None:
                    self.arrivals.got(int(found.group(1)), now, self)
            elif b'"id":2' in line and not self.ready.done():
                if b'"error"' in line:
                    self.ready.set_exception(RuntimeError(line[:200].decode(errors="replace")))
                else:
                    self.ready.set_result(None)
            elif b'"error"' in line and not self.ready.done():
                self.ready.set_exception(RuntimeError(line[:200].decode(errors="replace")))

    def on_ws_disconnected(self, transport: Any) -> None:
        if not self.ready.done():
            self.ready.set_exception(RuntimeError("disconnected"))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def summary(name: str, t0: int, arrived: list[int], reply: float | None = None) -> dict[str, Any]:
    arrived = sorted(arrived)
    row: dict[str, Any] = {"phase": name}
    if reply is not None:
        row["reply_s"] = round(reply, 3)
    row.update(
        first_s=round((arrived[0] - t0) / 1e9, 3),
        p50_s=round((arrived[len(arrived) // 2] - t0) / 1e9, 3),
        last_s=round((arrived[-1] - t0) / 1e9, 3),
    )
    return row


async def run(args: argparse.Namespace, database_url: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-notify-"))
    config = work / "hub.toml"
    config.write_text(
        CONFIG.format(
            secret=SECRET,
            api_key=API_KEY,
            database="" if not database_url else f'database_url = "{database_url}"',
            personal_history='history_size = 10\nhistory_ttl = "5m"' if args.personal_history else "",
        )
    )
    port = free_port()
    hub = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub", "serve", "--config", str(config), "--port", str(port),
        "--data-dir", str(work / "data"),
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    headers = {"X-API-Key": API_KEY}
    devices: list[Device] = []
    try:
        async with httpx.AsyncClient(timeout=120.0) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if (await http.get(f"{base}/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or hub.returncode is not None:
                    raise RuntimeError("the hub did not start")
                await asyncio.sleep(0.1)  # readiness probe of another process

            arrivals = Arrivals(args.online)
            url = f"ws://127.0.0.1:{port}/connection/websocket"
            gate = asyncio.Semaphore(200)
            started = time.perf_counter()

            async def connect(i: int) -> None:
                async with gate:
                    device = Device(mint_token(SECRET, f"u{i}"), arrivals)
                    await ws_connect(lambda: device, url, websocket_handshake_timeout=30)
                    devices.append(device)
                    await asyncio.wait_for(device.ready, 30)

            await asyncio.gather(*(connect(i) for i in range(args.online)))
            print(json.dumps({"phase": "connect", "online": args.online,
                              "s": round(time.perf_counter() - started, 2)}), flush=True)  # fmt: skip

            rows: dict[str, list[dict[str, Any]]] = {"notify": [], "publish": [], "broadcast": []}
            recipients = [f"u{i}" for i in range(args.recipients)]
            online_channels = [f"personal:#u{i}" for i in range(args.online)]
            for r in range(args.rounds):
                rounds = {"notify": 3 * r + 1, "publish": 3 * r + 2, "broadcast": 3 * r + 3}
                # baseline 1: one publication, one channel, every client subscribed
                done = arrivals.expect(rounds["publish"])
                t0 = time.time_ns()
                reply = await http.post(
                    f"{base}/api/publish",
                    headers=headers,
                    json={"channel": "bench", "data": {"round": rounds["publish"]}},
                )
                replied = (time.time_ns() - t0) / 1e9
                assert "result" in reply.json(), reply.text
                await asyncio.wait_for(done, 120)
                rows["publish"].append(summary("publish", t0, arrivals.times[rounds["publish"]], replied))
                # baseline 2: one publication per online user's personal channel, no inbox
                done = arrivals.expect(rounds["broadcast"])
                t0 = time.time_ns()
                reply = await http.post(
                    f"{base}/api/broadcast",
                    headers=headers,
                    json={"channels": online_channels, "data": {"round": rounds["broadcast"]}},
                )
                replied = (time.time_ns() - t0) / 1e9
                assert "result" in reply.json(), reply.text[:300]
                await asyncio.wait_for(done, 120)
                rows["broadcast"].append(
                    summary("broadcast", t0, arrivals.times[rounds["broadcast"]], replied)
                )
                # the notify
                done = arrivals.expect(rounds["notify"])
                t0 = time.time_ns()
                reply = await http.post(
                    f"{base}/api/notify",
                    headers=headers,
                    json={
                        "recipients": recipients,
                        "category": "bench",
                        "title": "a notification",
                        "data": {"round": rounds["notify"]},
                    },
                )
                replied = (time.time_ns() - t0) / 1e9
                body = reply.json()
                assert "result" in body, reply.text[:300]
                created = [x for x in body["result"]["recipients"] if x["outcome"] == "created"]
                assert len(created) == args.recipients, len(created)
                await asyncio.wait_for(done, 120)
                row = summary("notify", t0, arrivals.times[rounds["notify"]], replied)
                nid = body["result"]["notification_id"]
                while True:
                    status = (
                        await http.post(
                            f"{base}/api/notification_status",
                            headers=headers,
                            json={"notification_id": nid, "limit": 1},
                        )
                    ).json()["result"]
                    if status["summary"]["in_app"].get("delivered", 0) >= args.online:
                        break
                    if (time.time_ns() - t0) / 1e9 > 120:
                        raise RuntimeError(f"delivered never reached {args.online}: {status['summary']}")
                    await asyncio.sleep(0.02)  # polling another process's store
                row["delivered_s"] = round((time.time_ns() - t0) / 1e9, 3)
                row["status_summary"] = status["summary"]["in_app"]
                rows["notify"].append(row)
                for phase in ("publish", "broadcast", "notify"):
                    print(json.dumps({"round": r + 1, **rows[phase][-1]}), flush=True)
            assert arrivals.extra == 0, f"{arrivals.extra} pushes arrived twice"
            medians: dict[str, Any] = {}
            for phase, got in rows.items():
                keys = [k for k in got[0] if k.endswith("_s")]
                medians[phase] = {k: round(statistics.median(row[k] for row in got), 3) for k in keys}
            totals = {"online": args.online, "recipients": args.recipients, "store": args.store}
            print(
                json.dumps({"medians": medians, **totals, "personal_history": args.personal_history}),
                flush=True,
            )
    finally:
        for device in devices:
            if device.transport is not None:
                device.transport.disconnect()
        hub.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(hub.wait(), 30)
        except TimeoutError:
            hub.kill()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--online", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--no-personal-history", dest="personal_history", action="store_false")
    args = parser.parse_args()
    if args.online > args.recipients:
        parser.error("--online must not exceed --recipients")
    server = None
    database_url = ""
    if args.store == "postgres":
        server = PostgresServer()  # fsync and synchronous_commit on: the durability of a real server
        server.start()
        database_url = server.dsn()
    try:
        uvloop.run(run(args, database_url))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
