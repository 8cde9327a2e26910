"""An agent's HTTP edit round trip (POST /doc/{name}/edit) against a read of the same document
(GET /doc/{name}/content), measured in one run on one hub process.

A hub (``python -m hub serve``, SQLite store) holds one document of ``--chars`` characters written in
pieces of 1,240 characters at the start and the end; ``--watchers`` y-websocket connections have it open
(each is sent every edit and every awareness change of the agent: the relay is part of an edit's cost).
Then, alternated ``--rounds`` times, ``--requests`` requests one at a time of each phase:

- ``health``: GET /health (the floor: what any HTTP request costs this hub);
- ``content``: GET /content (the document as JSON and its version: the baseline);
- ``edit``: POST /edit, one ``text.insert`` shown as an agent (awareness announced, cursor moved; one
  agent, so its presence lingers between requests as it does for an agent editing in steps);
- ``edit-if``: the same with ``if_version`` (the version the previous answer carried);
- ``replace``: ``text.replace`` of the first match of a word (the document searched), back and forth.

Per phase: the median and p99 wall time of a request, and the hub's CPU per request (schedstat of its
process tree, bench/procstat.py), both as a ratio to ``content`` measured in the same run. The machine is
shared and noisy: compare ratios, not absolute figures, and run it twice.

usage: nice .venv/bin/python bench/edit_http.py [--chars 100000] [--requests 200] [--rounds 3] [--watchers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx
import websockets

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import procstat  # noqa: E402
from fanout import free_port, hub_argv, stop_server, wait_ready  # noqa: E402

KEY = "bench-edit-key"
DOC = "bench-doc"
WORDS = "lorem ipsum dolor sit amet, consectetur adipiscing elit. é😀 "
PHASES = ("health", "content", "edit", "edit-if", "replace")
AGENT = {"name": "Bench agent", "color": "#ee6352"}


async def drain(url: str, stop: asyncio.Event) -> None:
    """A document connection that reads everything and answers nothing (a watcher's relay cost)."""
    async with websockets.connect(url, max_size=None) as ws:
        while not stop.is_set():
            try:
                await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue


async def seed(http: httpx.AsyncClient, chars: int) -> None:
    """The document typed in pieces: many items, as a text people wrote looks to the hub."""
    piece = WORDS * 20
    units = len(piece.encode("utf-16-le")) // 2
    for i in range(max(1, chars // len(piece))):
        ops = [
            {"op": "text.insert", "path": ["text"], "index": 0 if i % 3 == 0 else i * units, "text": piece}
        ]
        r = await http.post(f"/doc/{DOC}/edit", json={"ops": ops})
        r.raise_for_status()


async def phase(http: httpx.AsyncClient, name: str, n: int, version: list[str]) -> list[float]:
    times = []
    for i in range(n):
        start = time.perf_counter()
        if name == "health":
            r = await http.get("/health")
        elif name == "content":
            r = await http.get(f"/doc/{DOC}/content")
            version[0] = r.headers["etag"].strip('"')
        else:
            if name == "replace":  # back and forth, so a match is always there
                find, text = ("adipiscing", "ADIPISCING") if i % 2 == 0 else ("ADIPISCING", "adipiscing")
                op: dict[str, Any] = {"op": "text.replace", "path": ["text"], "find": find, "text": text}
            else:
                op = {"op": "text.insert", "path": ["text"], "index": 0, "text": "agent "}
            body: dict[str, Any] = {"ops": [op], "agent": AGENT}
            if name == "edit-if":
                body["if_version"] = version[0]
            r = await http.post(f"/doc/{DOC}/edit", json=body)
            if r.status_code == 200:
                version[0] = r.json()["version"]
        times.append(time.perf_counter() - start)
        if r.status_code != 200:
            raise SystemExit(f"{name}: HTTP {r.status_code} {r.text[:200]}")
    return times


async def run(a: argparse.Namespace, port: int, pid: int) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {p: {"wall": [], "cpu": []} for p in PHASES}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": KEY}, timeout=30
    ) as http:
        await seed(http, a.chars)
        stop = asyncio.Event()
        watchers = [
            asyncio.create_task(drain(f"ws://127.0.0.1:{port}/doc/{DOC}", stop)) for _ in range(a.watchers)
        ]
        version = [""]
        try:
            for name in PHASES:  # warm-up, not reported
                await phase(http, name, 20, version)
            for _ in range(a.rounds):
                for name in PHASES:
                    before = procstat.cpu(pid)["sched_ns"]
                    times = await phase(http, name, a.requests, version)
                    cpu = (procstat.cpu(pid)["sched_ns"] - before) / 1e3 / a.requests
                    results[name]["wall"] += times
                    results[name]["cpu"].append(cpu)
        finally:
            stop.set()
            await asyncio.gather(*watchers, return_exceptions=True)
        text = (await http.get(f"/doc/{DOC}/content")).json()["text"]
        print(f"document: {len(text)} characters at the end; {a.watchers} watchers connected")
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chars", type=int, default=100_000)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--watchers", type=int, default=2)
    a = p.parse_args()
    workdir = tempfile.mkdtemp(prefix="bench-edit-")
    port = free_port()
    config = os.path.join(workdir, "hub.toml")
    with open(config, "w") as f:
        f.write(f'api_key = "{KEY}"\ndoc_anonymous_access = "read"\nlog_level = "warning"\n')
    hub = subprocess.Popen(
        hub_argv(port, config, data_dir=workdir),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(workdir, "hub.log"), "wb"),
    )
    try:
        why = wait_ready(hub, port, 30)
        if why:
            print("hub not ready:", why, open(os.path.join(workdir, "hub.log")).read()[-2000:])
            return 1
        results = asyncio.run(run(a, port, hub.pid))
    finally:
        stop_server(hub)
        shutil.rmtree(workdir, ignore_errors=True)
    base_wall = statistics.median(results["content"]["wall"])
    base_cpu = statistics.median(results["content"]["cpu"])
    print(f"{a.requests} requests x {a.rounds} rounds per phase, one at a time, phases alternated")
    head = f"{'phase':<9} {'median ms':>10} {'p99 ms':>8} {'vs content':>11}"
    print(f"{head} {'CPU us/req':>11} {'vs content':>11}")
    for name in PHASES:
        wall = sorted(results[name]["wall"])
        median = statistics.median(wall)
        p99 = wall[int(len(wall) * 0.99) - 1]
        cpu = statistics.median(results[name]["cpu"])
        print(
            f"{name:<9} {median * 1e3:>10.2f} {p99 * 1e3:>8.2f} {median / base_wall:>10.2f}x "
            f"{cpu:>11.0f} {cpu / base_cpu:>10.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
