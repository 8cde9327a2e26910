"""Issue 10's soak: a real ``switchboard serve`` under normal traffic from the official SDK and a document
client (tests/soak.py) while a second process (``python -m tests.attacker``) runs every attack of the issue
at once, for ATTACK_SECONDS.

The normal clients notice nothing: every publication acknowledged to the publisher reaches every subscriber
once, in order, with consecutive offsets; no SDK client reports an error, a disconnect or a reconnect; the
document's watcher has the writer's text. The node's memory stays under RSS_CEILING (sampled from /proc
throughout), it logs no ERROR line and no traceback, and it still answers ``/ready`` and the server API
afterwards. And the attacks were made and refused: each attack's outcomes include the refusal it is about
(close codes, error codes, HTTP statuses the attacker got), so a node that let one through fails here.

bench/attack_soak.py runs the same for minutes and compares the traffic's latency with a quiet baseline.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import tests.nodes as harness
from tests.attacker import STARTED
from tests.conftest import SECRET, TIMEOUT, http_client
from tests.nodes import API_KEY, ROOT, NodesFactory
from tests.soak import MB, SOAK_SETTINGS, NormalTraffic

make_nodes = harness.make_nodes  # the fixture, defined in tests/nodes.py

ATTACK_SECONDS = 6.0
RSS_CEILING = 200 * MB
"""The node's RSS stays under this while it is attacked. It starts at about 70 MB and, on this machine,
peaks at 92-97 MB in this test (101 MB after 4 minutes of bench/attack_soak.py): the bounds fill (16 MiB for
all connections' unsent bytes, 16 MiB of document changes waiting for the store, a 1 MB document's diffs,
the API bodies being parsed) and stay full. The issue measured the code before its fixes at ~2 GB for the
sync step 1 flood alone, 2.3 GB for slow SSE streams."""

REFUSALS: dict[str, list[str]] = {
    "awareness": ["close 4413"],
    "slow_readers": ["ws close 3008|ws cut", "sse cut"],
    "connection_flood": ["close 3504", "doc close 4529"],
    "unfinished_requests": ["http 408|http 503"],
    "malformed": ["close 3501", "close 1009", "close 1007"],
    "command_flood": ["error 111"],
    "bad_tokens": [
        "garbage: close 3500",
        "foreign: close 3500",
        "expired: error 109",
        "doc garbage: close 4401",
    ],
    "forbidden": ["error 103", "error 102"],
    "api_garbage": ["http 401", "http 413", "error 104", "error 107"],
}
"""For each attack, outcomes at least one of which (``a|b``: either) it must have met."""


def unexpected(outcomes: dict[str, dict[str, int]]) -> list[str]:
    """Outcomes no attack may meet: a crash (500), a timeout, an exception, a forbidden operation allowed."""
    bad = []
    for name, counts in outcomes.items():
        for outcome in counts:
            if outcome.startswith("exception") or outcome in ("timeout", "http 500") or "allowed" in outcome:
                bad.append(f"{name}: {outcome} x{counts[outcome]}")
    return bad


async def test_normal_traffic_notices_nothing_of_every_attack_at_once(make_nodes: NodesFactory) -> None:
    [node] = await make_nodes(1, **SOAK_SETTINGS)
    traffic = NormalTraffic(node.url, f"ws://127.0.0.1:{node.port}/doc")
    await traffic.start()
    attacker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.attacker", "--url", node.http, "--api-key", API_KEY, "--secret", SECRET,
        "--seconds", str(ATTACK_SECONDS),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert attacker.stdout is not None
    try:
        with node.sample_rss() as rss:
            async with asyncio.timeout(TIMEOUT * 3):
                assert (await attacker.stdout.readline()).decode().strip() == STARTED
            attacking = asyncio.ensure_future(attacker.communicate())
            phase = await traffic.run(until=attacking)
            out, _ = await attacking
        assert attacker.returncode == 0
        outcomes: dict[str, dict[str, Any]] = json.loads(out)
        assert traffic.problems() == []
        assert phase.last - phase.first + 1 >= ATTACK_SECONDS * traffic.rate / 2, phase.summary()
        assert rss.peak < RSS_CEILING, rss

        assert all(counts.get("complete") for counts in outcomes.values()), outcomes
        for name, wanted in REFUSALS.items():
            for outcome in wanted:
                assert any(outcomes[name].get(o) for o in outcome.split("|")), (name, outcome, outcomes[name])
        assert unexpected(outcomes) == [], outcomes
        floods = outcomes["sync_step1_flood"]
        assert floods["step2"] * 10 < floods["step1 sent"], floods  # coalesced: one step 2 at a time
        assert outcomes["doc_write_flood"]["bytes sent"] > 0
        assert outcomes["parallel_batches"]["published"] >= 4000
        assert outcomes["fresh_history"]["empty"] >= 4000

        async with http_client(timeout=TIMEOUT) as http:
            assert (await http.get(f"{node.http}/ready")).status_code == 200
        assert (await node.api("publish", {"channel": "after", "data": {}}))["result"] is not None
        lines = node.log().splitlines()
        assert not [line for line in lines if " ERROR " in line or line.startswith(("Traceback", "  File"))]
    finally:
        if attacker.returncode is None:
            attacker.kill()
            await attacker.wait()
        await traffic.close()
