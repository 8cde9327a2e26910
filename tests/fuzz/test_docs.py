"""Fuzzing the y-websocket endpoint (``/doc/{name}``) of a real ``switchboard serve`` process: every frame
a hostile client can send (sync, awareness and auth messages built field by field, damaged, or text).

The contract: the connection stays open or is closed with one of the document endpoint's codes (4400 bad
message, 4403, 4413 too large, 4422 rejected update, 1009 frame too big; never 1011 or 4500, the server's
own failures); the node logs no traceback and its memory stays under a ceiling; and afterwards a
well-behaved client still syncs a document with the node (it never restarted: ``HubNode.starts`` is 1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from sync import protocol
from sync.protocol import var_uint
from tests.conftest import TIMEOUT
from tests.fuzz.strategies import examples, mutated
from tests.fuzz.test_sync_protocol import messages
from tests.fuzz.test_sync_room import updates
from tests.nodes import HubNode, NodeSet

DOC_CLOSES = {1000, 1009, 4400, 4403, 4413, 4422}
RSS_CEILING = 300 * 1024 * 1024
"""Bytes the node may hold at its peak while it is fuzzed (it starts at about 70 MB)."""
IDLE = 0.2
"""Seconds without a message after which an example's connection is taken as left open (a verdict that
comes later is read by the next check of the same connection: none, it is closed by us)."""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubNode]:
    nodes = NodeSet(Path(tmp_path_factory.mktemp("docs-fuzz")))
    try:
        # the suite's node config: anonymous document writers allowed
        (hub,) = nodes.add_blocking(1, doc_max_update_size=65536, doc_max_document_size=1 << 20)
        yield hub
    finally:
        nodes.close()


counts = (st.integers(0, 2**32) | st.sampled_from([10**8, 450_000_000, 2**29 - 1])).map(var_uint)
"""Leading counts of every size: yrs reserved memory for whatever an update or a state vector claimed."""
frames = st.one_of(
    messages().flatmap(mutated),
    st.tuples(st.sampled_from([protocol.update, protocol.sync_step1]), counts).map(
        lambda t: t[0](t[1] + b"\x00")
    ),
    st.tuples(st.sampled_from([protocol.update, protocol.sync_step2]), updates).map(lambda t: t[0](t[1])),
    st.text(max_size=20),
)


def verdict(ws: ClientConnection) -> int | None:
    """The close code, or None if the connection is still open once the server went quiet."""
    try:
        while True:
            ws.recv(timeout=IDLE)
    except TimeoutError:
        return None
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else 1006


def still_syncs(node: HubNode) -> None:
    """A client's update is stored: a second client is sent it in the server's sync step 2."""
    update = protocol.update(b"\x01\x01\x01\x00\x04\x01\x01t\x02ok\x00")  # client 1 inserts "ok" in text "t"
    with connect(node.doc_url("witness"), open_timeout=TIMEOUT) as writer:
        writer.send(update)
        writer.send(protocol.sync_step1(b"\x00"))
        assert any(b"ok" in m for m in _messages(writer)), "the writer's update was not acknowledged"
    with connect(node.doc_url("witness"), open_timeout=TIMEOUT) as reader:
        reader.send(protocol.sync_step1(b"\x00"))
        assert any(b"ok" in m for m in _messages(reader))


def _messages(ws: ClientConnection) -> list[bytes]:
    out: list[bytes] = []
    try:
        while True:
            message = ws.recv(timeout=1.0)
            out.append(message if isinstance(message, bytes) else message.encode())
    except TimeoutError:
        return out


def test_hostile_frames_on_the_document_endpoint(node: HubNode) -> None:
    counter = iter(range(10**9))

    @settings(max_examples=examples(40))
    @given(st.lists(frames, min_size=1, max_size=3))
    @example([protocol.sync_step1(var_uint(450_000_000) + b"\x00")])  # found by bench/fuzz: 0.5 GB each
    @example([protocol.update(var_uint(450_000_000) + b"\x00")])  # found by bench/fuzz: 0.5 GB each
    def property(sent: list[bytes | str]) -> None:
        name = f"fuzz-{next(counter) % 3}"  # a few documents, so what one example leaves meets the next
        with connect(node.doc_url(name), open_timeout=TIMEOUT, max_size=None) as ws:
            code = None
            for frame in sent:
                try:
                    ws.send(frame)
                except ConnectionClosed:
                    break
            code = verdict(ws)
        assert code is None or code in DOC_CLOSES, code

    with node.sample_rss() as rss:
        property()
    assert rss.peak < RSS_CEILING, rss  # 13 bytes took 0.5 GB before the fixes found by bench/fuzz
    still_syncs(node)
    log = node.log()
    assert "Traceback" not in log and " ERROR " not in log, log[-4000:]
    assert node.running and node.starts == 1
