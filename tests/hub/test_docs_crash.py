"""Durability against a crash: a real ``switchboard serve`` process killed with SIGKILL while three
clients stream edits has stored every update it relayed to another client (three kills in a row)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pycrdt import Text

from tests.hub.ydocs import WsYClient, YConnect

WRITERS = 3
KILLS = 3
SEEN_BEFORE_KILL = 150
EDITS = 1000
"""Edits each writer streams per round (the kill lands after the first SEEN_BEFORE_KILL)."""


def root(conn: WsYClient, k: int) -> Text:
    return conn.y.doc.get(f"t{k}", type=Text)


async def stream(writer: WsYClient, k: int) -> None:
    text = root(writer, k)
    for i in range(EDITS):
        text.insert(len(text), f"{i},")
        await writer.flush()
        if i % 5 == 4:
            await asyncio.sleep(0)  # let the others read and write while the edits stream


def seen(observer: WsYClient, at_least: list[int]) -> bool:
    return all(str(root(observer, k)).count(",") >= at_least[k] for k in range(WRITERS))


async def test_kill_9_loses_nothing_that_was_relayed(
    server_process: Any, yconnect: YConnect, tmp_path: Path
) -> None:
    env = {"SWITCHBOARD_DATA_DIR": str(tmp_path)}  # development mode: anonymous clients may edit
    relayed = [""] * WRITERS
    for _ in range(KILLS):
        proc, port = await server_process(**env)
        hub = SimpleNamespace(port=port)
        observer = await yconnect(hub, "crash")
        for k in range(WRITERS):  # what was relayed before the last kill is still there
            stored = str(root(observer, k))
            assert stored.startswith(relayed[k]), (k, len(stored), len(relayed[k]))
        writers = [await yconnect(hub, "crash") for _ in range(WRITERS)]
        start = [str(root(observer, k)).count(",") for k in range(WRITERS)]

        tasks = [asyncio.get_running_loop().create_task(stream(writers[k], k)) for k in range(WRITERS)]
        await observer.until(lambda: seen(observer, [n + SEEN_BEFORE_KILL for n in start]))  # noqa: B023
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        await observer.closed()  # everything the server sent before it died has been read
        for task in tasks:
            task.cancel()
        relayed = [str(root(observer, k)) for k in range(WRITERS)]
    proc, port = await server_process(**env)
    final = await yconnect(SimpleNamespace(port=port), "crash")
    for k in range(WRITERS):
        assert str(root(final, k)).startswith(relayed[k])
