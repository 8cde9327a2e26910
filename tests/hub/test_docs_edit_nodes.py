"""POST /doc/{name}/edit on a node that is not the document's writer (two nodes over one Redis, documents
stored in Redis): the edit is stored by the writer and seen, with the agent's presence, on the other node."""

from __future__ import annotations

from typing import Any

from pycrdt import Doc, Text

from channels.redis_shards import RedisShards
from sync.store_redis import RedisDocumentStore
from tests.conftest import TIMEOUT, http_client
from tests.hub.ydocs import YConnect
from tests.nodes import NodesFactory, eventually, make_nodes  # noqa: F401  (fixture)
from tests.redis_servers import RedisServer


async def test_an_edit_on_a_non_writer_node_is_stored_and_seen_on_the_writer(
    make_nodes: NodesFactory,  # noqa: F811
    redis_server: RedisServer,
    yconnect: YConnect,
) -> None:
    writer, other = await make_nodes(
        2, redis=[redis_server.url], doc_store="redis", doc_edit_presence_linger=0.3
    )
    person = await yconnect(writer, "shared")  # loads it first: this node writes it
    person.text.insert(0, "by ann")
    await person.flush()
    op = {"op": "text.insert", "path": ["text"], "index": 6, "text": " and the agent"}
    async with http_client(base_url=other.http, timeout=TIMEOUT) as http:

        async def caught_up() -> bool:  # the other node loads the document (not its writer) and syncs
            return (await http.get("/doc/shared/content")).json() == {"text": "by ann"}

        await eventually(caught_up)
        r = await http.post("/doc/shared/edit", json={"ops": [op], "agent": {"name": "Relay"}})
    assert r.status_code == 200, r.text
    await person.until(lambda: str(person.text) == "by ann and the agent")
    await person.until(lambda: any(s.get("bot") and s["cursor"] for s in person.y.states().values()))
    await person.until(
        lambda: not any(s.get("bot") for s in person.y.states().values())
    )  # removed across nodes
    shards = RedisShards([redis_server.url], connect_timeout=2.0)
    await shards.start()
    try:
        store = RedisDocumentStore(shards)

        async def stored() -> bool:
            doc: Doc[Any] = Doc()
            for update in (await store.load(("", "shared"))).updates:
                doc.apply_update(update)
            return str(doc.get("text", type=Text)) == "by ann and the agent"

        await eventually(stored)  # by the writer, within a batch of the edit's arrival
    finally:
        await shards.close()
