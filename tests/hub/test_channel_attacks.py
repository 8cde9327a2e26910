"""Attacks on the channel side of a real ``switchboard serve`` (issue 10), each as a hostile client would make
it, each with the node's memory (RSS) or log measured from outside the process.

Every test would fail on the code before its fix (said in each docstring, with the figure the old code
reached); the attacks are scaled down to a few seconds, but so that the old code fails clearly.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from tests import nodes as harness
from tests.conftest import TIMEOUT
from tests.nodes import API_KEY, HubNode, NodesFactory

make_nodes = harness.make_nodes

MB = 1024 * 1024


async def api_batch(node: HubNode, commands: list[dict[str, Any]], *, parallel: bool = False) -> list[Any]:
    async with httpx.AsyncClient(timeout=TIMEOUT * 3) as http:
        response = await http.post(
            f"{node.http}/api/batch",
            content=orjson.dumps({"commands": commands, "parallel": parallel}),
            headers={"X-API-Key": API_KEY},
        )
    assert response.status_code == 200, response.text[:500]
    replies: list[Any] = response.json()["replies"]
    return replies


async def test_history_of_names_nobody_published_on_keeps_no_memory(make_nodes: NodesFactory) -> None:
    """56,000 history reads of fresh names: each created a stream kept for 90 days (the old code grew by
    ~75 MB here, ~1.3 KB a name); now reading keeps nothing, and the node stays within what parsing one
    batch body costs."""
    [node] = await make_nodes(1)
    with node.sample_rss() as rss:
        for batch in range(8):
            commands = [{"history": {"channel": f"fresh{batch}-{i}", "limit": 1}} for i in range(7000)]
            replies = await api_batch(node, commands)
            assert all(r["history"]["offset"] == 0 and r["history"]["epoch"] for r in replies)
    assert rss.peak - rss.start < 30 * MB, rss


async def test_a_parallel_batch_of_a_whole_body_of_publishes_stays_bounded(make_nodes: NodesFactory) -> None:
    """One 1 MiB ``/api/batch`` body with ``parallel: true`` holds 28,000 publishes: the old code started
    them all at once (+57 MB RSS here, twice what the same body costs run in order); now at most
    ``api_batch_max_parallel`` run at a time and the node costs what the sequential batch costs."""
    [node] = await make_nodes(1)
    commands = [{"publish": {"channel": "n", "data": 1}} for _ in range(28_000)]
    with node.sample_rss() as rss:
        replies = await api_batch(node, commands, parallel=True)
    assert sorted(r["publish"]["offset"] for r in replies) == list(range(1, 28_001))
    assert rss.peak - rss.start < 42 * MB, rss
