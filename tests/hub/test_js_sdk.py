"""The official centrifuge-js SDK (npm ``centrifuge``, run by the machine's Node) against a real hub, over
its bidirectional-emulation transports (``http_stream``, ``sse``) — what a browser behind a proxy that kills
WebSockets falls back to — and over the WebSocket for comparison. The test installs the pinned packages
itself (``npm ci`` in tests/hub/js_sdk when node_modules is missing or stale)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningHub, token
from tests.installs import installing

JS = Path(__file__).parent / "js_sdk"


def _npm_ci() -> None:
    stamp = JS / "node_modules" / ".package-lock.json"
    lock = JS / "package-lock.json"
    with installing(JS):  # the other xdist worker may install at the same time
        if stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime:
            return
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=JS, check=True, timeout=300
        )


@pytest.fixture(scope="session")
def centrifuge_js() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are required for the JS SDK tests")
    _npm_ci()
    return JS / "emulation.mjs"


@pytest.mark.parametrize(
    ("transport", "protocol"),
    [
        ("http_stream", "json"),
        ("sse", "json"),
        ("websocket", "json"),
        ("http_stream", "protobuf"),  # the Protobuf build: binary stream and octet-stream /emulation requests
        ("websocket", "protobuf"),
    ],
)
async def test_js_sdk_subscribes_publishes_calls_rpc(
    make_hub: Any, centrifuge_js: Path, transport: str, protocol: str
) -> None:
    hub: RunningHub = await make_hub()

    @hub.sb.rpc("add")
    async def add(ctx: Any) -> Any:
        return {"sum": ctx.data["a"] + ctx.data["b"]}

    proc = await asyncio.create_subprocess_exec(
        "node",
        str(centrifuge_js),
        hub.http,
        transport,
        token("jsuser"),
        protocol,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    events = [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]
    assert proc.returncode == 0, (events, stderr.decode()[-2000:])
    by_kind = {e.get("event"): e for e in events}
    assert by_kind["connected"]["transport"] == transport
    assert by_kind["publication"]["data"] == {"from": transport}
    assert by_kind["rpc"]["data"] == {"sum": 42}
    assert by_kind["presence"]["users"] == ["jsuser"]
    assert by_kind["history"]["data"] == [{"from": transport}]
    assert "done" in by_kind
