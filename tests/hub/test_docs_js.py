"""Real Yjs clients: Node processes running yjs + y-websocket (tests/js, installed from npm by the
``node_clients`` fixture) editing the same documents as Python clients, through a real hub."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from pycrdt import Text

from tests.conftest import TIMEOUT, RunningHub
from tests.hub.ydocs import WsYClient, YConnect
from tests.installs import installing

pytestmark = pytest.mark.all_websocket_modes

JS_DIR = Path(__file__).resolve().parents[1] / "js"
WORDS = 30


@pytest.fixture(scope="session")
def node_clients() -> Path:
    """tests/js with node_modules matching package-lock.json (``npm ci`` when missing or stale)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed for the Yjs client tests")
    digest = hashlib.sha256((JS_DIR / "package-lock.json").read_bytes()).hexdigest()
    stamp = JS_DIR / "node_modules" / ".switchboard-lock-sha256"
    with installing(JS_DIR):  # the other xdist worker, or another test run, may install at the same time
        if not stamp.exists() or stamp.read_text() != digest:
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True, timeout=600)
            stamp.write_text(digest)
    return JS_DIR


class NodeClient:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []

    async def event(
        self, name: str, where: Callable[[dict[str, Any]], bool] = lambda e: True
    ) -> dict[str, Any]:
        """The first event called ``name`` (already seen, or the next ones) that satisfies ``where``."""
        for seen in self.events:
            if seen["event"] == name and where(seen):
                return seen
        assert self.proc.stdout is not None
        async with asyncio.timeout(TIMEOUT * 3):
            while True:
                line = await self.proc.stdout.readline()
                assert line, f"node client ended before {name!r}; events: {self.events}"
                event = orjson.loads(line)
                self.events.append(event)
                assert event["event"] != "timeout", self.events
                if event["event"] == name and where(event):
                    return event  # type: ignore[no-any-return]


NodeFactory = Callable[..., Awaitable[NodeClient]]


@pytest.fixture
async def node(node_clients: Path) -> AsyncIterator[NodeFactory]:
    started: list[NodeClient] = []

    async def start(*args: str) -> NodeClient:
        proc = await asyncio.create_subprocess_exec(
            "node",
            "client.mjs",
            *args,
            cwd=node_clients,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        client = NodeClient(proc)
        started.append(client)
        return client

    yield start
    for client in started:
        with contextlib.suppress(ProcessLookupError):
            client.proc.kill()
        await client.proc.wait()


def base_url(hub: RunningHub) -> str:
    return f"ws://127.0.0.1:{hub.port}/doc"


async def python_editor(conn: WsYClient, ident: str, rng: random.Random) -> None:
    """Insert WORDS words at word boundaries, as the node editors do."""
    text = conn.text
    for i in range(WORDS):
        current = str(text)
        boundaries = [0] + [j + 1 for j, ch in enumerate(current) if ch == " "]
        text.insert(rng.choice(boundaries), f"{ident}-{i} ")
        await conn.flush()
        if i % 5 == 4:
            await asyncio.sleep(0.005)  # interleave with the other editors, as people typing would


def all_words(ids: list[str]) -> set[str]:
    return {f"{ident}-{i}" for ident in ids for i in range(WORDS)}


async def test_node_and_python_clients_edit_one_document_at_once(
    docs_hub: RunningHub, yconnect: YConnect, node: NodeFactory
) -> None:
    ids = ["n1", "n2", "p1", "p2"]
    expect = ",".join(ids)
    nodes = [
        await node("edit", base_url(docs_hub), "shared", "", ident, str(WORDS), expect) for ident in ids[:2]
    ]
    for client in nodes:
        await client.event("synced")
    pythons = [await yconnect(docs_hub, "shared") for _ in ids[2:]]
    rng = random.Random(4)
    await asyncio.gather(
        *(python_editor(conn, ident, rng) for conn, ident in zip(pythons, ids[2:], strict=True))
    )
    wanted = all_words(ids)
    for conn in pythons:
        await conn.until(lambda conn=conn: wanted <= set(str(conn.text).split()), within=TIMEOUT * 3)
    finals = [(await client.event("complete"))["text"] for client in nodes]
    finals += [str(conn.text) for conn in pythons]
    assert len(set(finals)) == 1, finals
    assert sorted(finals[0].split()) == sorted(wanted)  # every insert, once
    assert (await docs_hub.sb.documents.content("shared"))["text"] == finals[0]


async def test_awareness_between_node_and_python_and_gone_when_node_is_killed(
    docs_hub: RunningHub, yconnect: YConnect, node: NodeFactory
) -> None:
    watcher = await yconnect(docs_hub, "cursors", awareness={"user": "py"})
    editor = await node("edit", base_url(docs_hub), "cursors", "", "n1", "1", "n1")
    complete = await editor.event("complete")
    await watcher.until(lambda: {"user": "n1"} in watcher.y.states().values())
    if {"user": "py"} not in [s["state"] for s in complete["states"]]:
        await editor.event("awareness", lambda e: {"user": "py"} in [s["state"] for s in e["states"]])
    os.kill(editor.proc.pid, signal.SIGKILL)  # no goodbye: the server sees the TCP connection drop
    await watcher.until(lambda: {"user": "n1"} not in watcher.y.states().values())
    assert list(watcher.y.states().values()) == [{"user": "py"}]


async def test_node_client_with_a_bad_token_is_refused(docs_hub: RunningHub, node: NodeFactory) -> None:
    client = await node("refused", base_url(docs_hub), "any", "not-a-token")
    closed = await client.event("closed")
    assert closed["code"] == 4401
    assert any("invalid token" in line for line in closed["denied"])


async def test_node_client_sees_python_edits_and_server_side_edits(
    docs_hub: RunningHub, yconnect: YConnect, node: NodeFactory
) -> None:
    watcher = await node("watch", base_url(docs_hub), "mixed", "")
    await watcher.event("synced")
    py = await yconnect(docs_hub, "mixed")
    py.text.insert(0, "from python")
    await py.flush()
    await watcher.event("text", lambda e: e["text"] == "from python")
    await docs_hub.sb.documents.transact("mixed", lambda doc: doc.get("text", type=Text).insert(0, "bot: "))
    await watcher.event("text", lambda e: e["text"] == "bot: from python")
