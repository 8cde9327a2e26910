"""The soak of issue 10: a node set up as for production, the normal traffic that must not notice an attacker
(tests/attacker.py) working on the same node, and what "not notice" means. Used by
tests/hub/test_attack_soak.py (seconds) and bench/attack_soak.py (minutes).

The node (``soak_config``): a token secret and an API key, anonymous connections off, anonymous document
readers (the awareness attack's way in), and the limits the attacker should meet set low enough to be
reached by one attacker process: per-user connection limits of 16, a command rate limit, 256 KiB a
connection may have unsent and 16 MiB the whole node, 64 unfinished requests, header and body timeouts.

The normal traffic (``NormalTraffic``), all through real clients:

- three subscribers of ``chat:room`` (history and forced recovery) on the official centrifuge-python SDK,
  one of them over Protobuf;
- a publisher on the SDK publishing ``{"n", "t"}`` into it at a steady rate, each publish awaited;
- a y-websocket document client appending to the document ``notes``, and a second one watching it.

``problems()`` lists every way the normal clients noticed: a publication acknowledged to the publisher and
missing, doubled, out of order or with a gap in its offsets at any subscriber; any error, disconnect,
unsubscribe or reconnect an SDK client reported; a publish that failed; a document client closed, or the
watcher's text not the writer's.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from centrifuge import Client

from tests.conftest import TIMEOUT, _json_payloads_over_protobuf, token
from tests.hub.test_sdk_channels import Rec
from tests.hub.ydocs import WsYClient, yclient_at
from tests.nodes import write_config

MB = 1024 * 1024
CHANNEL = "chat:room"
DOCUMENT = "notes"

SOAK_SETTINGS: dict[str, Any] = {
    "allow_anonymous_connect_without_token": False,
    "doc_anonymous_access": "read",
    "doc_token_access": "write",
    "client_user_connection_limit": 16,
    "doc_user_connection_limit": 16,
    "client_command_rate_limit": 100,
    "client_queue_max_size": 256 * 1024,
    "node_queue_max_size": 16 * MB,
    "client_stale_close_delay": 5.0,
    "http_header_timeout": 2.0,
    "http_body_timeout": 4.0,
    "http_max_unfinished_requests": 64,
}
"""What the node under attack runs with, beside tests/nodes.py's config (secret, API key, namespaces)."""


def soak_config(path: Path, **overrides: Any) -> Path:
    return write_config(path, **{**SOAK_SETTINGS, **overrides})


class Subscriber(Rec):
    """Records every SDK event (``Rec``), and when each publication arrived (time.monotonic)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[tuple[float, Any]] = []

    async def on_publication(self, ctx: Any) -> None:
        self.arrivals.append((time.monotonic(), ctx.pub))
        await super().on_publication(ctx)

    def numbers(self) -> list[int]:
        return [pub.data["n"] for _, pub in self.arrivals]


def event_problems(name: str, rec: Rec) -> list[str]:
    """What an SDK client (or subscription) reported beyond its first connect and subscribe."""
    kinds = [kind for kind, _ in rec.seen]
    out = [f"{name}: {kind} {ctx!r:.200}" for kind, ctx in rec.seen if kind in ("error", "disconnected")]
    out += [f"{name}: unsubscribed" for kind in kinds if kind == "unsubscribed"]
    for kind in ("connecting", "subscribing"):
        if kinds.count(kind) > 1:
            out.append(f"{name}: {kind} {kinds.count(kind)} times (a reconnect or resubscribe)")
    return out


@dataclass
class Phase:
    """The publications of one ``run`` (numbers ``first`` to ``last``) and what they cost to deliver."""

    seconds: float
    first: int
    last: int
    latencies: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        lat = sorted(self.latencies) or [float("nan")]
        return {
            "publications": self.last - self.first + 1,
            "deliveries": len(self.latencies),
            "p50_ms": round(statistics.median(lat) * 1000, 2),
            "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 2),
            "max_ms": round(lat[-1] * 1000, 2),
        }


class NormalTraffic:
    """The normal clients of one node (``ws_url``: its client endpoint; ``doc_url``: a document's URL)."""

    def __init__(self, ws_url: str, doc_base: str, rate: float = 20.0, edits: float = 5.0) -> None:
        self.ws_url = ws_url
        self.doc_base = doc_base
        self.rate = rate
        self.edits = edits
        self.clients: list[tuple[str, Any, Rec]] = []
        self.subscribers: list[tuple[str, Subscriber]] = []
        self.sub_recs: list[tuple[str, Rec]] = []
        self.publication: Any = None
        self.acked: list[int] = []
        self.sent_at: dict[int, float] = {}
        self.failures: list[str] = []
        self.writer: WsYClient | None = None
        self.watcher: WsYClient | None = None
        self.written = ""
        self.doc_clients: list[WsYClient] = []

    async def _client(self, name: str, protobuf: bool = False) -> Any:
        rec = Rec()
        cls = _json_payloads_over_protobuf() if protobuf else Client
        client = cls(self.ws_url, token=token(name), events=rec, use_protobuf=protobuf, timeout=TIMEOUT)
        self.clients.append((name, client, rec))
        await client.connect()
        await client.ready(TIMEOUT)
        return client

    async def start(self) -> None:
        """Connect and subscribe every normal client; return once all are ready."""
        for i, protobuf in enumerate((False, False, True)):
            name = f"reader-{i}"
            client = await self._client(name, protobuf)
            rec = Subscriber()
            sub = client.new_subscription(CHANNEL, events=rec)
            await sub.subscribe()
            await sub.ready(TIMEOUT)
            self.subscribers.append((name, rec))
        publisher = await self._client("publisher")
        publisher_rec = Rec()
        self.publication = publisher.new_subscription(CHANNEL, events=publisher_rec)  # publishing needs it
        await self.publication.subscribe()
        await self.publication.ready(TIMEOUT)
        self.sub_recs = [*self.subscribers, ("publisher", publisher_rec)]
        url = f"{self.doc_base}/{DOCUMENT}?token={token('editor')}"
        self.writer = await yclient_at(url, opened=self.doc_clients)
        self.watcher = await yclient_at(url, opened=self.doc_clients)
        self.written = str(self.writer.text)

    async def run(self, seconds: float | None = None, *, until: asyncio.Future[Any] | None = None) -> Phase:
        """Publish at ``rate`` a second and edit the document at ``edits`` a second, for ``seconds`` or until
        ``until`` is done; return once every acknowledged publication reached every subscriber and the
        watcher has the document."""
        start = time.monotonic()

        def going() -> bool:
            if until is not None:
                return not until.done()
            assert seconds is not None
            return time.monotonic() < start + seconds

        phase = Phase(0.0, len(self.sent_at) + 1, len(self.sent_at))
        await asyncio.gather(self._publish(going, phase), self._edit(going))
        phase.seconds = time.monotonic() - start
        await self.delivered(phase)
        return phase

    async def _publish(self, going: Callable[[], bool], phase: Phase) -> None:
        start = time.monotonic()
        i = 0
        while going():
            i += 1
            n = len(self.sent_at) + 1
            self.sent_at[n] = now = time.monotonic()
            phase.last = n
            try:
                await self.publication.publish({"n": n, "t": now})
                self.acked.append(n)
            except Exception as exc:  # a normal client must never see one: reported by problems()
                self.failures.append(f"publish {n}: {exc!r}")
            await asyncio.sleep(max(0.0, start + i / self.rate - time.monotonic()))  # the publisher's pace

    async def _edit(self, going: Callable[[], bool]) -> None:
        assert self.writer is not None
        start = time.monotonic()
        i = 0
        while going():
            i += 1
            edit = f"{i};"
            self.writer.text.insert(len(self.writer.text), edit)
            self.written += edit
            await self.writer.flush()
            await asyncio.sleep(max(0.0, start + i / self.edits - time.monotonic()))  # the editor's pace

    async def delivered(self, phase: Phase) -> None:
        """Wait (bounded) until every subscriber got the last acknowledged publication and the watcher the
        writer's text; collect the phase's latencies. A subscriber that never gets there is a problem, not a
        hang."""
        last = self.acked[-1] if self.acked else 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(TIMEOUT):
                for _, rec in self.subscribers:
                    while last not in rec.numbers():
                        await rec.next("publication")
        if self.watcher is not None:
            with contextlib.suppress(TimeoutError, AssertionError):
                await self.watcher.until(lambda: str(self.watcher.text) == self.written)  # type: ignore[union-attr]
        for _, rec in self.subscribers:
            for arrived, pub in rec.arrivals:
                n = pub.data["n"]
                if phase.first <= n <= phase.last:
                    phase.latencies.append(arrived - self.sent_at[n])

    def problems(self) -> list[str]:
        out = list(self.failures)
        for name, client, rec in self.clients:
            out += event_problems(name, rec)
            if client.state.value != "connected":
                out.append(f"{name}: {client.state.value}")
        for name, rec in self.sub_recs:
            out += event_problems(f"{name} on {CHANNEL}", rec)
        for name, rec in self.subscribers:
            offsets = [pub.offset for _, pub in rec.arrivals]
            if rec.numbers() != self.acked:
                missing = sorted(set(self.acked) - set(rec.numbers()))
                out.append(f"{name}: got {len(rec.numbers())} of {len(self.acked)}, missing {missing[:10]}")
            if any(b != a + 1 for a, b in zip(offsets, offsets[1:], strict=False)):
                out.append(f"{name}: offsets not consecutive: {offsets[:20]}...")
        for name, conn in (("writer", self.writer), ("watcher", self.watcher)):
            if conn is not None and conn.ws.close_code is not None:
                out.append(f"document {name}: closed {conn.ws.close_code} {conn.ws.close_reason}")
        if self.watcher is not None and str(self.watcher.text) != self.written:
            out.append(f"document watcher: {len(str(self.watcher.text))} characters of {len(self.written)}")
        return out

    async def close(self) -> None:
        for _, client, _ in self.clients:
            with contextlib.suppress(Exception):
                await client.disconnect()
        for conn in self.doc_clients:
            with contextlib.suppress(Exception):
                await conn.close()
