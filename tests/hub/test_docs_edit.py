"""POST /doc/{name}/edit and the Python API of agents (sb.documents.edit / .agent): every op kind over HTTP
seen by a connected client, versions and the 409 rebase, the agent's presence, auth, limits, garbage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pycrdt import Array, Map, Text, XmlElement, XmlFragment, XmlText

from hub.config import ApiKey
from sync.agents import RENEW_INTERVAL, Agent
from sync.edit import StaleVersion
from sync.version import Version, tag_of
from tests.conftest import TIMEOUT, HubFactory, RunningHub, http_client, token
from tests.hub.test_docs_js import NodeFactory, node, node_clients  # noqa: F401  (fixtures)
from tests.hub.ydocs import WsYClient, YConnect

KEY = "edit-test-api-key"


@pytest.fixture
async def edit_hub(make_hub: HubFactory, tmp_path: Path) -> RunningHub:
    """Production defaults for document access (no anonymous access, tokens need a docs claim), an API key
    bound to nothing, and a short presence linger."""
    return await make_hub(
        data_dir=str(tmp_path), api_key=KEY, doc_edit_presence_linger=0.2, doc_edit_max_body_size=64 * 1024
    )


@pytest.fixture
async def http(edit_hub: RunningHub) -> Any:
    async with http_client(base_url=edit_hub.http, timeout=TIMEOUT) as client:
        yield client


WRITER = token("writer", docs={"write": ["*"]})


async def edit(
    http: httpx.AsyncClient, name: str, body: Any, tok: str | None = WRITER, **kw: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {tok}"} if tok is not None else {}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await http.post(
        f"/doc/{name}/edit", content=content, headers={**headers, **kw.pop("headers", {})}, **kw
    )


def agents(conn: WsYClient) -> list[dict[str, Any]]:
    return [state for state in conn.y.states().values() if isinstance(state, dict) and state.get("bot")]


# ---------------------------------------------------------------- every op kind, seen by a client at once


async def test_text_ops_reach_a_connected_client_and_the_content(
    edit_hub: RunningHub, http: httpx.AsyncClient, yconnect: YConnect
) -> None:
    person = await yconnect(edit_hub, "notes", token=WRITER)
    person.text.insert(0, "Hello wörld 😀!")
    await person.flush()
    steps = [
        ({"op": "text.insert", "path": ["text"], "index": 15, "text": " bye"}, "Hello wörld 😀! bye"),
        ({"op": "text.delete", "path": ["text"], "index": 0, "length": 6}, "wörld 😀! bye"),
        ({"op": "text.replace", "path": ["text"], "index": 0, "length": 5, "text": "world"}, "world 😀! bye"),
        ({"op": "text.replace", "path": ["text"], "find": "😀", "text": "🙂"}, "world 🙂! bye"),
    ]
    for op, expected in steps:
        r = await edit(http, "notes", {"ops": [op]})
        assert r.status_code == 200, r.text
        await person.until(lambda expected=expected: str(person.text) == expected)
        content = await http.get("/doc/notes/content", headers={"Authorization": f"Bearer {WRITER}"})
        assert content.json() == {"text": expected}
        assert content.headers["etag"] == f'"{tag_of(r.json()["version"])}"'  # of exactly that content
    (edited,) = r.json()["ranges"]
    assert edited == {"op": 0, "path": ["text"], "start": 6, "end": 8}  # UTF-16: the emoji counts 2


async def test_content_answers_304_to_its_own_etag_until_the_document_changes(
    edit_hub: RunningHub, http: httpx.AsyncClient
) -> None:
    """/content is computed once per state of the document; an agent polling with If-None-Match gets 304
    while nothing changed, the new content and version after any edit; garbage in the header is no match."""
    auth = {"Authorization": f"Bearer {WRITER}"}
    assert (
        await edit(http, "poll", {"ops": [{"op": "text.insert", "path": ["text"], "index": 0, "text": "a"}]})
    ).is_success
    first = await http.get("/doc/poll/content", headers=auth)
    assert first.status_code == 200 and first.json() == {"text": "a"}
    assert first.headers["content-type"] == "application/json"
    assert first.headers["cache-control"] == "private, no-cache"  # per user: revalidated, never shared
    etag = first.headers["etag"]
    for header in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        again = await http.get("/doc/poll/content", headers={**auth, "If-None-Match": header})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag, header
    two_lines = [("Authorization", f"Bearer {WRITER}"), ("If-None-Match", '"nope"'), ("If-None-Match", etag)]
    assert (await http.get("/doc/poll/content", headers=two_lines)).status_code == 304  # one list, two lines
    for header in ('"nope"', "garbage;=<>", ",,,", etag[1:-1], "W/"):
        other = await http.get("/doc/poll/content", headers={**auth, "If-None-Match": header})
        assert other.status_code == 200 and other.json() == {"text": "a"}, header
    r = await edit(http, "poll", {"ops": [{"op": "text.insert", "path": ["text"], "index": 1, "text": "b"}]})
    changed = await http.get("/doc/poll/content", headers={**auth, "If-None-Match": etag})
    assert changed.status_code == 200 and changed.json() == {"text": "ab"}
    assert changed.headers["etag"] == f'"{tag_of(r.json()["version"])}"' != etag
    # The ETag works as if_version: stale now (409 with the full version), current after the re-read.
    insert = {"op": "text.insert", "path": ["text"], "index": 0, "text": "c"}
    stale = await edit(http, "poll", {"ops": [insert], "if_version": etag.strip('"')})
    assert stale.status_code == 409 and stale.json()["version"] == r.json()["version"]
    current = await edit(http, "poll", {"ops": [insert], "if_version": changed.headers["etag"].strip('"')})
    assert current.status_code == 200, current.text
    assert (await http.get("/doc/poll/content", headers={"If-None-Match": etag})).status_code == 401


async def test_map_array_and_xml_ops_on_nested_paths(
    edit_hub: RunningHub, http: httpx.AsyncClient, yconnect: YConnect
) -> None:
    def seed(doc: Any) -> None:
        doc["meta"] = Map({"title": "Plan", "tags": Array(["a"]), "body": Text("x")})
        fragment = doc.get("prosemirror", type=XmlFragment)
        paragraph = fragment.children.append(XmlElement("paragraph"))
        paragraph.children.append(XmlText("first line"))

    await edit_hub.sb.documents.transact("plan", seed)
    person = await yconnect(edit_hub, "plan", token=WRITER)
    ops = [
        {"op": "map.set", "path": ["meta"], "key": "owner", "value": {"name": "ann", "n": 1}},
        {"op": "map.delete", "path": ["meta"], "key": "title"},
        {"op": "array.insert", "path": ["meta", "tags"], "index": 1, "values": ["b", "c"]},
        {"op": "array.delete", "path": ["meta", "tags"], "index": 0},
        {"op": "text.insert", "path": ["meta", "body"], "index": 1, "text": "yz"},
        {"op": "map.set", "path": ["meta", "owner"], "key": "n", "value": 2},
        {"op": "text.replace", "path": ["prosemirror"], "find": "first", "text": "second"},
        {
            "op": "array.insert",
            "path": ["prosemirror"],
            "index": 1,
            "values": [{"element": "paragraph", "children": ["new"]}],
        },
    ]
    r = await edit(http, "plan", {"ops": ops})
    assert r.status_code == 200, r.text
    expected = {
        "meta": {"owner": {"name": "ann", "n": 2}, "tags": ["b", "c"], "body": "xyz"},
        "prosemirror": "<paragraph>second line</paragraph><paragraph>new</paragraph>",
    }
    assert await edit_hub.sb.documents.content("plan") == expected

    def seen() -> bool:
        meta = person.y.doc.get("meta", type=Map)
        return "owner" in meta and meta["owner"] == {"name": "ann", "n": 2} and len(meta["tags"]) == 2

    await person.until(seen)  # one transaction: the whole edit arrives together


# ---------------------------------------------------------------- versions and the rebase


async def test_a_stale_if_version_gets_409_with_the_content_to_rebase_on(
    edit_hub: RunningHub, http: httpx.AsyncClient, yconnect: YConnect
) -> None:
    first = await edit(
        http, "memo", {"ops": [{"op": "text.insert", "path": ["text"], "index": 0, "text": "draft"}]}
    )
    version = first.json()["version"]
    person = await yconnect(edit_hub, "memo", token=WRITER)
    person.text.insert(5, " by ann")
    await person.flush()
    watcher = await yconnect(edit_hub, "memo", token=WRITER)
    await watcher.until(lambda: str(watcher.text) == "draft by ann")  # relayed: the hub has it
    op = {"op": "text.replace", "path": ["text"], "find": "draft", "text": "final"}
    stale = await edit(http, "memo", {"ops": [op], "if_version": version})
    assert stale.status_code == 409
    body = stale.json()
    assert body["content"] == {"text": "draft by ann"} and "changed" in body["error"]
    assert body["version"] != version
    # the agent rebases on what it was sent, and wins
    again = await edit(http, "memo", {"ops": [op], "if_version": body["version"]})
    assert again.status_code == 200, again.text
    await person.until(lambda: str(person.text) == "final by ann")
    # a deletion changes the version too (a state vector alone would not tell)
    deleted = await edit(
        http, "memo", {"ops": [{"op": "text.delete", "path": ["text"], "index": 5, "length": 7}]}
    )
    assert deleted.json()["version"] != again.json()["version"]
    stale = await edit(http, "memo", {"ops": [op], "if_version": again.json()["version"]})
    assert stale.status_code == 409 and stale.json()["content"] == {"text": "final"}


async def test_the_python_api_edits_with_versions(edit_hub: RunningHub) -> None:
    documents = edit_hub.sb.documents
    result = await documents.edit("py", [{"op": "text.insert", "path": ["text"], "index": 0, "text": "one"}])
    content, version = await documents.read("py")
    assert content == {"text": "one"} and version == result.version
    Version.decode(version)
    await documents.edit("py", [{"op": "text.insert", "path": ["text"], "index": 3, "text": " two"}])
    with pytest.raises(StaleVersion) as stale:
        await documents.edit(
            "py", [{"op": "text.delete", "path": ["text"], "index": 0, "length": 1}], if_version=version
        )
    assert stale.value.current == (await documents.read("py"))[1]
    assert await documents.content("py") == {"text": "one two"}


# ---------------------------------------------------------------- presence


async def test_the_agent_is_shown_while_it_works_and_removed_after(
    edit_hub: RunningHub, http: httpx.AsyncClient, yconnect: YConnect
) -> None:
    person = await yconnect(edit_hub, "shown", token=WRITER, awareness={"user": {"name": "ann"}})
    body = {
        "ops": [{"op": "text.insert", "path": ["text"], "index": 0, "text": "summary"}],
        "agent": {"name": "Summarizer", "color": "#ee6352"},
    }
    r = await edit(http, "shown", body)
    assert r.status_code == 200
    await person.until(lambda: any(state["cursor"] for state in agents(person)))
    (state,) = agents(person)
    assert state["user"] == {"name": "Summarizer", "color": "#ee6352", "colorLight": "#ee635233", "bot": True}
    assert state["cursor"]["head"]["item"] is not None
    assert str(person.text) == "summary"  # the edit arrived before its cursor
    await person.until(lambda: not agents(person))  # doc_edit_presence_linger after the edit
    assert [s for s in person.y.states().values()] == [{"user": {"name": "ann"}}]


async def test_edits_in_steps_show_one_agent_whose_cursor_moves(
    edit_hub: RunningHub, http: httpx.AsyncClient, yconnect: YConnect, make_hub: HubFactory
) -> None:
    person = await yconnect(edit_hub, "steps", token=WRITER)
    ids = set()
    for i in range(3):
        op = {"op": "text.insert", "path": ["text"], "index": 0, "text": f"{i} "}
        assert (await edit(http, "steps", {"ops": [op], "agent": {"name": "Writer"}})).status_code == 200
        await person.until(lambda i=i: str(person.text).startswith(f"{i} "))
        ids |= {cid for cid, s in person.y.states().items() if s.get("bot")}
    assert len(ids) == 1  # within the linger, the same awareness client: one collaborator
    await person.until(lambda: not agents(person))


async def test_a_token_s_user_names_the_agent_by_default(
    edit_hub: RunningHub, http: httpx.AsyncClient, yconnect: YConnect
) -> None:
    person = await yconnect(edit_hub, "named", token=WRITER)
    op = {"op": "text.insert", "path": ["text"], "index": 0, "text": "x"}
    assert (await edit(http, "named", {"ops": [op]})).status_code == 200
    await person.until(lambda: [s["user"]["name"] for s in agents(person)] == ["writer"])
    odd = token("\x00" * 3, docs={"write": ["*"]})  # not a printable name: "agent"
    assert (await edit(http, "named", {"ops": [op]}, tok=odd)).status_code == 200
    await person.until(lambda: "agent" in [s["user"]["name"] for s in agents(person)])


async def test_a_server_side_agent_session_holds_its_presence(
    edit_hub: RunningHub, yconnect: YConnect
) -> None:
    person = await yconnect(edit_hub, "session", token=WRITER)
    async with edit_hub.sb.documents.agent("session", Agent("Helper", "#30bced")) as session:
        await person.until(lambda: [s["user"]["name"] for s in agents(person)] == ["Helper"])
        assert agents(person)[0]["cursor"] is None  # shown before it edits
        result = await session.edit([{"op": "text.insert", "path": ["text"], "index": 0, "text": "hi"}])
        await person.until(lambda: str(person.text) == "hi" and agents(person)[0]["cursor"] is not None)
        assert result.version == session.version()
        assert session.content() == {"text": "hi"}
        room = edit_hub.sb.documents.rooms.rooms[("", "session")]
        clock = room.awareness.clock(session.client_id)
        session._announce()  # what the renewal timer does every RENEW_INTERVAL
        assert room.awareness.clock(session.client_id) == clock + 1 and RENEW_INTERVAL < 30
    await person.until(lambda: not agents(person))
    with pytest.raises(RuntimeError):
        await session.edit([{"op": "text.insert", "path": ["text"], "index": 0, "text": "late"}])


async def test_the_official_yjs_client_sees_the_edit_then_the_agent_s_cursor_then_its_removal(
    edit_hub: RunningHub,
    http: httpx.AsyncClient,
    node: NodeFactory,  # noqa: F811
) -> None:
    """yjs + y-websocket in Node: the edit arrives at once, the agent's state decodes as y-codemirror.next
    reads a remote cursor (the range the edit wrote, in the Y.Text it edited, in UTF-16 units), and the
    hub's removal (null state, clock + 1) is one y-protocols' Awareness accepts."""
    watcher = await node("watch", f"ws://127.0.0.1:{edit_hub.port}/doc", "js", WRITER)
    await watcher.event("synced")
    ops = [{"op": "text.insert", "path": ["text"], "index": 0, "text": "héllo 😀 wörld"}]
    ops.append({"op": "text.replace", "path": ["text"], "find": "😀", "text": "🙂🙂"})
    r = await edit(http, "js", {"ops": ops, "agent": {"name": "Summarizer", "color": "#6eeb83"}})
    assert r.status_code == 200, r.text
    final = "héllo 🙂🙂 wörld"
    await watcher.event("text", lambda e: e["text"] == final)

    def bots(event: dict[str, Any]) -> list[dict[str, Any]]:
        return [s for s in event["states"] if s["state"].get("bot")]

    shown = await watcher.event("awareness", lambda e: any(s["cursor"] for s in bots(e)))
    assert shown["text"] == final  # the update came first: the cursor names characters the client has
    (agent,) = bots(shown)
    assert agent["state"]["user"] == {
        "name": "Summarizer",
        "color": "#6eeb83",
        "colorLight": "#6eeb8333",
        "bot": True,
    }
    assert agent["cursor"] == {"anchor": 6, "head": 10}
    assert r.json()["ranges"][-1] == {"op": 1, "path": ["text"], "start": 6, "end": 10}
    later = watcher.events.index(shown)
    gone = await watcher.event("awareness", lambda e: watcher.events.index(e) > later and not bots(e))
    assert gone["states"] == []


# ---------------------------------------------------------------- auth


async def test_who_may_edit(make_hub: HubFactory, tmp_path: Path) -> None:
    hub = await make_hub(
        data_dir=str(tmp_path), api_keys=[ApiKey("bound-key", tenant="acme"), ApiKey("free-key")]
    )
    op = {"op": "text.insert", "path": ["text"], "index": 0, "text": "x"}
    async with http_client(base_url=hub.http, timeout=TIMEOUT) as http:
        assert (await edit(http, "d", {"ops": [op]}, tok=None)).status_code == 401
        assert (await edit(http, "d", {"ops": [op]}, tok="junk")).status_code == 401
        reader = token("r", docs={"read": ["d"]})
        refused = await edit(http, "d", {"ops": [op]}, tok=reader)
        assert refused.status_code == 403 and "read-only" in refused.json()["error"]
        assert (
            await edit(http, "d", {"ops": [op]}, tok=token("x", docs={"write": ["e"]}))
        ).status_code == 403
        # a tenant's writer edits its own tenant's document, never another's
        acme = token("a", tenant="acme", docs={"write": ["d"]})
        assert (await edit(http, "d", {"ops": [op]}, tok=acme)).status_code == 200
        assert await hub.sb.documents.content("d", tenant="acme") == {"text": "x"}
        assert await hub.sb.documents.content("d") == {}
        # API keys: a bound key edits its tenant only; an unbound one the tenant it names
        bound = {"X-API-Key": "bound-key"}
        assert (await edit(http, "d", {"ops": [op]}, tok=None, headers=bound)).status_code == 200
        other = await edit(http, "d", {"ops": [op]}, tok=None, headers=bound, params={"tenant": "other"})
        assert other.status_code == 403
        free = {"X-API-Key": "free-key"}
        assert (
            await edit(http, "d", {"ops": [op]}, tok=None, headers=free, params={"tenant": "beta"})
        ).status_code == 200
        assert await hub.sb.documents.content("d", tenant="acme") == {"text": "xx"}
        assert await hub.sb.documents.content("d", tenant="beta") == {"text": "x"}
        assert (
            await edit(http, "d", {"ops": [op]}, tok=None, headers={"X-API-Key": "wrong"})
        ).status_code == 401
        assert (await http.get("/doc/d/edit", params={"token": acme})).status_code == 405
        assert (await edit(http, "%01bad", {"ops": [op]})).status_code == 400


# ---------------------------------------------------------------- bad input: clear, nothing applied


BAD = [
    (b"{not json", 400, "not JSON"),
    (b"[1, 2]", 400, "JSON object"),
    ({"ops": [], "extra": 1}, 400, "unknown field"),
    ({"op": []}, 400, "unknown field"),
    ({"ops": [], "if_version": 3}, 400, "if_version"),
    ({"ops": [], "unit": "bytes"}, 400, "unit"),
    ({"ops": [], "agent": "bot"}, 400, "agent"),
    ({"ops": [], "agent": {"name": ""}}, 400, "agent"),
    ({"ops": [], "agent": {"name": "a", "color": "red"}}, 400, "color"),
    ({"ops": []}, 422, "empty"),
    ({"ops": [{"op": "text.explode", "path": ["text"]}]}, 422, "unknown op"),
    ({"ops": [{"op": "text.insert", "path": ["text"], "index": 99, "text": "x"}]}, 422, "past the end"),
    ({"ops": [{"op": "text.replace", "path": ["text"], "find": "absent", "text": "x"}]}, 422, "not found"),
    ({"ops": [{"op": "text.insert", "path": ["meta", "nope"], "index": 0, "text": "x"}]}, 422, "no key"),
    ({"ops": [{"op": "text.insert", "path": ["text"], "index": "0", "text": "x"}]}, 422, "integer"),
    ({"ops": [{"op": "map.set", "path": ["text"], "key": "k", "value": 1}]}, 422, "not a map"),
    (
        {"ops": [{"op": "text.delete", "path": ["text"], "index": 0, "length": 1}], "if_version": "x"},
        422,
        "if_version",
    ),
    (
        {"ops": [{"op": "text.insert", "path": ["text"], "index": 0, "text": "x" * 300_000}]},
        413,
        "larger than",
    ),
    ({"ops": [{"op": "text.insert", "path": ["text"], "index": 0, "text": "x"}] * 256}, 413, "at most 256"),
]


@pytest.mark.parametrize(("body", "status", "says"), BAD)
async def test_bad_edits_get_a_clear_error_and_change_nothing(
    edit_hub: RunningHub, http: httpx.AsyncClient, body: Any, status: int, says: str
) -> None:
    def seed(doc: Any) -> None:
        doc["text"] = Text("abc")
        doc["meta"] = Map({"k": 1})

    await edit_hub.sb.documents.transact("bad", seed)
    before = await edit_hub.sb.documents.read("bad")
    ok = {"op": "text.insert", "path": ["text"], "index": 0, "text": "applied?"}
    if isinstance(body, dict) and body.get("ops"):
        body = {**body, "ops": [ok, *body["ops"]]}  # a good op first: the whole edit is refused
    r = await edit(http, "bad", body)
    assert r.status_code == status, r.text
    assert says in r.json()["error"]
    assert await edit_hub.sb.documents.read("bad") == before


async def test_an_edit_past_the_document_size_limit_is_refused_whole(
    make_hub: HubFactory, tmp_path: Path
) -> None:
    hub = await make_hub(data_dir=str(tmp_path), doc_max_document_size=4096, doc_token_access="write")
    async with http_client(base_url=hub.http, timeout=TIMEOUT) as http:
        op = {"op": "text.insert", "path": ["text"], "index": 0, "text": "y" * 3000}
        assert (await edit(http, "big", {"ops": [op]}, tok=token("w"))).status_code == 200
        r = await edit(http, "big", {"ops": [op]}, tok=token("w"))
        assert r.status_code == 413 and "document too large" in r.json()["error"]
        assert await hub.sb.documents.content("big") == {"text": "y" * 3000}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2**60) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=16,
)
OP_NAMES = [
    "text.insert",
    "text.delete",
    "text.replace",
    "map.set",
    "map.delete",
    "array.insert",
    "array.delete",
    "x",
]
OPS = st.lists(
    st.fixed_dictionaries(
        {
            "op": st.sampled_from(OP_NAMES),
            "path": st.lists(st.sampled_from(["text", "meta", "list", 0, 1, 7, -1]), max_size=3) | JSON,
        },
        optional={
            "index": st.integers(-1, 12) | JSON,
            "length": st.integers(-1, 12) | JSON,
            "text": st.text(max_size=6) | JSON,
            "find": st.sampled_from(["a", "bc", "", "zz"]) | JSON,
            "occurrence": st.sampled_from([1, 2, "all", 0]) | JSON,
            "key": st.sampled_from(["k", "list", ""]) | JSON,
            "value": JSON,
            "values": st.lists(JSON, max_size=3) | JSON,
            "as": st.sampled_from(["text", "map", "array", "xml"]) | JSON,
        },
    ),
    max_size=4,
)


SMALL = st.integers(0, 7)
PLAUSIBLE = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {
                "op": st.just("text.insert"),
                "path": st.just(["text"]),
                "index": SMALL,
                "text": st.text(min_size=1, max_size=4),
            }
        ),
        st.fixed_dictionaries(
            {
                "op": st.just("text.delete"),
                "path": st.just(["text"]),
                "index": SMALL,
                "length": st.integers(1, 3),
            }
        ),
        st.fixed_dictionaries(
            {
                "op": st.just("text.replace"),
                "path": st.just(["text"]),
                "find": st.sampled_from(["a", "bc", "zz"]),
                "text": st.text(max_size=3),
            }
        ),
        st.fixed_dictionaries(
            {
                "op": st.just("map.set"),
                "path": st.just(["meta"]),
                "key": st.sampled_from(["k", "n"]),
                "value": JSON,
            }
        ),
        st.fixed_dictionaries(
            {"op": st.just("map.delete"), "path": st.just(["meta"]), "key": st.sampled_from(["k", "n", "zz"])}
        ),
        st.fixed_dictionaries(
            {
                "op": st.just("array.insert"),
                "path": st.sampled_from([["list"], ["meta", "list"]]),
                "index": st.integers(0, 3),
                "values": st.lists(JSON, min_size=1, max_size=2),
            }
        ),
        st.fixed_dictionaries(
            {"op": st.just("array.delete"), "path": st.just(["list"]), "index": st.integers(0, 3)}
        ),
    ),
    min_size=1,
    max_size=5,
)
"""Well-typed ops that may or may not fit the document: some edits apply, others fail at a later op."""


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=200),
        JSON.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries({"ops": PLAUSIBLE}).map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries({"ops": PLAUSIBLE, "unit": st.sampled_from(["utf16", "codepoint"])}).map(
            lambda v: json.dumps(v).encode()
        ),
        st.fixed_dictionaries(
            {"ops": OPS | JSON},
            optional={"if_version": JSON | st.just("AA==.AAAAAAAAAAAAAAAA"), "unit": JSON, "agent": JSON},
        ).map(lambda v: json.dumps(v).encode()),
    )
)
async def test_garbage_edits_never_fail_the_server_and_apply_whole_or_not_at_all(
    edit_hub: RunningHub, http: httpx.AsyncClient, body: bytes
) -> None:
    documents = edit_hub.sb.documents

    def seed(doc: Any) -> None:
        doc["text"] = Text("abcbc")
        doc["meta"] = Map({"k": 1, "list": Array(["a"])})
        doc["list"] = Array([1, "two"])

    if await documents.content("garbage") == {}:
        await documents.transact("garbage", seed)
    before = await documents.read("garbage")
    r = await edit(http, "garbage", body)
    assert r.status_code in (200, 400, 409, 413, 422), (body, r.status_code, r.text)
    event(f"HTTP {r.status_code}")
    if r.status_code == 200:
        assert r.json()["version"] == (await documents.read("garbage"))[1]
    else:
        assert isinstance(r.json()["error"], str) and r.json()["error"]
        assert await documents.read("garbage") == before
