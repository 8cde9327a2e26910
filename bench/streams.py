"""What streamed replies cost the fan-out, and what coalescing saves a subscriber (in-process, no sockets).

- ``fanout``: server CPU per delivery (process time of ``Node.handle_publication`` and the writers' flushes)
  of ordinary publications in a plain namespace (the baseline) and in a ``streams`` namespace, and of
  stream chunks (each flushed alone: the chunk path without joining), over JSON and Protobuf, measured in
  the same run. Ordinary publications must not be slowed: the ratio to the baseline is the figure.
- ``reply``: the messages and bytes one subscriber receives for a reply of ``--tokens`` tokens, when the
  agent's chunks reach the node ``k`` per loop tick (k = 1: a slow model, nothing to join; more: a fast one,
  or a subscriber's writes backed up), with coalescing (a ``streams`` namespace) and without (the same
  chunks as ordinary publications of a plain namespace).

usage: nice .venv/bin/python bench/streams.py [--subscribers 1000] [--publications 2000] [--tokens 500]

The machine is shared and noisy: compare the ratios of one run, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # before bench/ (inbox.py)

from channels.broker_memory import MemoryBroker  # noqa: E402
from channels.options import NamespaceOptions  # noqa: E402
from channels.publication import Publication  # noqa: E402
from hub.config import Config  # noqa: E402
from hub.hooks import Hooks  # noqa: E402
from hub.node import Node  # noqa: E402
from hub.wire import JSON, PROTOBUF  # noqa: E402
from presence.presence_memory import MemoryPresence  # noqa: E402

sys.path.insert(1, os.path.dirname(os.path.abspath(__file__)))
import feeds  # noqa: E402
from feeds import command  # noqa: E402

OPEN = {"allow_subscribe_for_client": True, "allow_subscribe_for_anonymous": True}
PLAIN = NamespaceOptions.from_mapping(OPEN)
STREAMS = NamespaceOptions.from_mapping({**OPEN, "streams": True})


class Sink(feeds.Sink):
    """A transport that counts what it is handed: writes, messages, bytes."""

    def __init__(self, fmt: int) -> None:
        super().__init__(fmt)
        self.writes = self.messages = 0

    def write_messages(self, messages: list[bytes]) -> int:
        self.writes += 1
        self.messages += len(messages)
        return super().write_messages(messages)


async def subscribed_node(fmt: int, subscribers: int) -> tuple[Node, list[Sink]]:
    cfg = Config(
        allow_anonymous_connect_without_token=True,
        namespaces={"plain": PLAIN, "agent": STREAMS},
        node_name="bench",
    )
    node = Node(cfg, MemoryBroker(), MemoryPresence(), Hooks())
    node.open_streams.start()  # answers its own snapshot survey (the rest of start is not needed here)
    sinks = []
    for _ in range(subscribers):
        sink = Sink(fmt)
        client = node.new_session(sink, scope={})
        await client.handle_frame(command(fmt, {"id": 1, "connect": {}}))
        for n, channel in enumerate(("plain:room", "agent:room"), 2):
            await client.handle_frame(command(fmt, {"id": n, "subscribe": {"channel": channel}}))
        sinks.append(sink)
    node.scheduler.flush()
    for sink in sinks:
        sink.writes = sink.messages = sink.bytes = 0
    return node, sinks


def chunk(seq: int, text: str, final: bool = False) -> bytes:
    fields: dict[str, Any] = {"id": "reply-1", "seq": seq}
    if final:
        fields["final"] = True
    return orjson.dumps({"stream": fields, "text": text})


def tokens(n: int) -> list[str]:
    words = "the hub streams an agent's reply token by token to every subscriber of the room".split()
    return [words[i % len(words)] + " " for i in range(n)]


async def fanout(subscribers: int, publications: int) -> list[dict[str, Any]]:
    rows = []
    ordinary = [orjson.dumps({"text": f"message {i}", "user": "alice"}) for i in range(publications)]
    chunks = [chunk(i, t) for i, t in enumerate(tokens(publications))]
    for fmt_name, fmt in (("json", JSON), ("protobuf", PROTOBUF)):
        node, _ = await subscribed_node(fmt, subscribers)
        cases = [
            ("ordinary, plain namespace (baseline)", "plain:room", ordinary),
            ("ordinary, streams namespace", "agent:room", ordinary),
            ("chunks, streams namespace", "agent:room", chunks),
        ]
        figures: dict[str, float] = {}
        for round_ in range(4):  # interleaved rounds in turning order, the best of each: the box is shared
            for name, channel, datas in cases[round_ % 3 :] + cases[: round_ % 3]:
                key = ("", channel)
                cpu0 = time.process_time()
                for data in datas:
                    node.handle_publication(key, Publication(data), "")
                    node.scheduler.flush()
                cpu = (time.process_time() - cpu0) / (subscribers * len(datas)) * 1e6
                figures[name] = min(figures.get(name, cpu), cpu)
        base = figures[cases[0][0]]
        for name, _, _ in cases:
            row = {
                "phase": "fanout",
                "format": fmt_name,
                "case": name,
                "subscribers": subscribers,
                "publications": publications,
                "cpu_us_per_delivery": round(figures[name], 3),
                "ratio_to_baseline": round(figures[name] / base, 3),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


async def reply(count: int) -> list[dict[str, Any]]:
    rows = []
    texts = tokens(count)
    datas = [chunk(i, t, final=i == count - 1) for i, t in enumerate(texts)]
    for fmt_name, fmt in (("json", JSON), ("protobuf", PROTOBUF)):
        for per_tick in (1, 5, 25):
            for name, channel in (("without coalescing", "plain:room"), ("with coalescing", "agent:room")):
                node, (sink,) = await subscribed_node(fmt, 1)
                key = ("", channel)
                for start in range(0, count, per_tick):
                    for data in datas[start : start + per_tick]:
                        if channel == "agent:room":
                            data = node.open_streams.accept(key, STREAMS, data, None, None).deliver.data
                        node.handle_publication(key, Publication(data), "")
                    node.scheduler.flush()  # one loop tick
                row = {
                    "phase": "reply",
                    "format": fmt_name,
                    "tokens": count,
                    "tokens_per_tick": per_tick,
                    "case": name,
                    "writes": sink.writes,
                    "publications": sink.messages,
                    "bytes": sink.bytes,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


async def run(args: argparse.Namespace) -> None:
    await fanout(args.subscribers, args.publications)
    await reply(args.tokens)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--publications", type=int, default=2000)
    parser.add_argument("--tokens", type=int, default=500)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
