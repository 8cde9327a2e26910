"""Tokens as a hostile client forges them, against real ``switchboard serve`` processes.

- time claims (``exp``, ``iat``, ``nbf``) that are not finite numbers of seconds make an invalid token:
  a connection is closed with 3500, a subscription refused with 103, a document closed with 4401; never
  error 100, never a traceback in the node's log;
- ``token_require_exp``: tokens without ``exp`` are invalid, of every kind;
- a token's ``channels`` claim over ``client_channel_limit`` refuses the connection with 3505 (as
  Centrifuge does), on every transport, and leaves nothing subscribed.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator
from typing import Any

import jwt
import orjson
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.auth import MAX_NUMERIC_DATE, TokenError, TokenVerifier
from sync import protocol
from tests.conftest import SECRET, TIMEOUT, RawClient, http_client, token
from tests.nodes import HubNode, NodeSet, module_nodes

BAD_TIMES: list[Any] = [
    math.nan, math.inf, -math.inf, 10**400, 1e300, -5, "1700000000", "soon", True, False, {"at": 1}, [1],
    MAX_NUMERIC_DATE + 1,
]  # fmt: skip
"""Values a time claim must not have: not numbers, not finite, negative, past year 9999."""
INVALID = ("closed", (3500, "invalid token"))
CONNECTED = ("connected", None)


def sign(claims: dict[str, Any]) -> str:
    """A well-signed token with exactly these claims (json, as PyJWT writes it: NaN and Infinity as the
    bare words JavaScript's JSON.parse refuses and Python's accepts)."""
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeSet]:
    """One node (a NodeSet: a failing test's report carries its log), ``client_channel_limit = 3``."""
    with module_nodes(tmp_path_factory, (), count=1, client_channel_limit=3) as nodes:
        yield nodes


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeSet]:
    """One node with ``token_require_exp = true``."""
    with module_nodes(tmp_path_factory, (), count=1, token_require_exp=True) as nodes:
        yield nodes


async def connect_outcome(node: HubNode, tok: str) -> tuple[str, Any]:
    """("connected", None), ("error", code) or ("closed", (code, reason))."""
    async with websockets.connect(node.url, open_timeout=TIMEOUT) as ws:
        client = RawClient(ws)
        await client.send_raw(orjson.dumps({"id": 1, "connect": {"token": tok}}).decode())
        try:
            reply = await client.reply(1)
        except websockets.ConnectionClosed:
            return "closed", (ws.close_code, ws.close_reason)
    if "error" in reply:
        return "error", reply["error"]["code"]
    assert "connect" in reply, reply
    return "connected", None


async def subscribe_outcome(node: HubNode, sub_token: str, channel: str) -> dict[str, Any]:
    async with websockets.connect(node.url, open_timeout=TIMEOUT) as ws:
        client = RawClient(ws)
        assert "connect" in await client.command("connect", {"token": token("ann", ttl=600)})
        return await client.command("subscribe", {"channel": channel, "token": sub_token})


async def document_outcome(node: HubNode, tok: str) -> tuple[str, int]:
    """The first message's kind ("sync" or the denial reason) and the close code (0: still open)."""
    async with websockets.connect(f"{node.doc_url('notes')}?token={tok}", open_timeout=TIMEOUT) as ws:
        async with asyncio.timeout(TIMEOUT):
            message = protocol.decode(await ws.recv())  # type: ignore[arg-type]
            if not isinstance(message, protocol.PermissionDenied):
                return "sync", 0
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
        assert ws.close_code is not None
        return message.reason, ws.close_code


def assert_no_crash(node: HubNode) -> None:
    log = node.log()
    assert "Traceback" not in log and "crashed" not in log, log[-4000:]


# ---------------------------------------------------------------- bad time claims


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
async def test_bad_time_claims_are_invalid_tokens(plain: NodeSet, claim: str) -> None:
    node = plain[0]
    for value in BAD_TIMES:
        outcome = await connect_outcome(node, sign({"sub": "eve", claim: value}))
        assert outcome == INVALID, (claim, value, outcome)
        sub = await subscribe_outcome(node, sign({"sub": "ann", "channel": "$x", claim: value}), "$x")
        assert sub.get("error", {}).get("code") == 103, (claim, value, sub)
        reason, code = await document_outcome(node, sign({"sub": "eve", claim: value}))
        assert code == 4401 and reason.startswith("invalid token"), (claim, value, reason)
    assert_no_crash(node)


async def test_good_time_claims_still_work(plain: NodeSet) -> None:
    node = plain[0]
    now = int(time.time())
    good = {"sub": "ann", "iat": now, "nbf": now - 5, "exp": now + 600}
    assert await connect_outcome(node, sign(good)) == CONNECTED
    assert await connect_outcome(node, sign({**good, "exp": now + 600.5})) == CONNECTED
    assert await connect_outcome(node, sign({"sub": "ann", "exp": None})) == CONNECTED  # absent
    assert await connect_outcome(node, sign({**good, "exp": now - 5})) == ("error", 109)  # expired: refresh
    assert await connect_outcome(node, sign({**good, "nbf": now + 600})) == INVALID


# ---------------------------------------------------------------- token_require_exp


async def test_require_exp_refuses_tokens_without_exp(strict: NodeSet) -> None:
    exp_node = strict[0]
    assert await connect_outcome(exp_node, token("ann")) == INVALID
    assert await connect_outcome(exp_node, token("ann", ttl=600)) == CONNECTED
    sub = await subscribe_outcome(exp_node, token("ann", channel="$x"), "$x")
    assert sub["error"]["code"] == 103
    assert "subscribe" in await subscribe_outcome(exp_node, token("ann", channel="$x", ttl=600), "$x")
    reason, code = await document_outcome(exp_node, token("ann"))
    assert code == 4401 and "exp" in reason
    assert await document_outcome(exp_node, token("ann", ttl=600)) == ("sync", 0)
    async with http_client(timeout=TIMEOUT) as http:  # the document read endpoint: the same verifier
        response = await http.get(f"{exp_node.http}/doc/notes/content", params={"token": token("ann")})
    assert response.status_code == 401
    assert_no_crash(exp_node)


async def test_without_require_exp_tokens_without_exp_are_fine(plain: NodeSet) -> None:
    assert await connect_outcome(plain[0], token("ann")) == CONNECTED


# ---------------------------------------------------------------- the property

scalars = st.none() | st.booleans() | st.floats() | st.integers() | st.integers(2**62, 10**40) | st.text()
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
time_values = st.one_of(
    json_values,
    st.integers(-10, MAX_NUMERIC_DATE + 10),
    st.floats(min_value=0, max_value=MAX_NUMERIC_DATE * 2),
    st.sampled_from([math.nan, math.inf, -math.inf, 10**400, -(10**400)]),
)


def _valid_time(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and 0 <= value <= MAX_NUMERIC_DATE
    )


@settings(max_examples=300, deadline=None)
@given(
    claims=st.fixed_dictionaries(
        {},
        optional={
            "exp": time_values, "iat": time_values, "nbf": time_values, "sub": json_values,
            "info": json_values, "channels": json_values, "tenant": json_values, "docs": json_values,
        },
    ),
    kind=st.sampled_from(["connect", "subscription", "document"]),
)  # fmt: skip
def test_any_claim_values_give_claims_or_a_token_error(claims: dict[str, Any], kind: str) -> None:
    """Whatever a signed token's claims hold, the verifier returns claims or raises TokenError (3500,
    103, 4401 at the call sites), never anything else; time claims it accepts are valid NumericDates."""
    verifier = TokenVerifier(hmac_secret=SECRET)
    if kind == "subscription":
        claims = {**claims, "channel": "$x"}
    try:
        tok = sign(claims)
    except (TypeError, ValueError, OverflowError):
        return  # PyJWT cannot write it: no token to attack with
    try:
        verify = {
            "connect": verifier.verify_connect,
            "subscription": verifier.verify_subscription,
            "document": verifier.verify_document,
        }[kind]
        result = verify(tok)
    except TokenError:
        return
    for name in ("exp", "iat", "nbf"):
        if claims.get(name) is not None:
            assert _valid_time(claims[name]), (name, claims[name])
    assert result.exp is None or 0 <= result.exp <= MAX_NUMERIC_DATE


time_claims = st.fixed_dictionaries({}, optional={"exp": time_values, "iat": time_values, "nbf": time_values})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(claims=time_claims)
async def test_real_node_answers_any_time_claims_with_a_protocol_code(
    plain: NodeSet, claims: dict[str, Any]
) -> None:
    """The same property over the wire: a connect with any time claims is connected, refused with 109
    (expired) or closed with 3500; connected only when every time claim is valid."""
    try:
        tok = sign({"sub": "eve", **claims})
    except (TypeError, ValueError, OverflowError):
        return
    outcome = await connect_outcome(plain[0], tok)
    assert outcome in (CONNECTED, ("error", 109), INVALID), outcome
    if outcome[0] == "connected":
        assert all(_valid_time(v) for v in claims.values() if v is not None), claims
    assert_no_crash(plain[0])


# ---------------------------------------------------------------- channels claim and client_channel_limit


async def test_token_channels_over_the_limit_refuse_the_connection(plain: NodeSet) -> None:
    node = plain[0]
    many = token("ann", channels=["a", "b", "c", "d", "e"])
    assert await connect_outcome(node, many) == ("closed", (3505, "channel limit"))
    async with http_client(timeout=TIMEOUT) as http:  # a unidirectional stream: the disconnect push
        async with http.stream(
            "POST", f"{node.http}/connection/uni_http_stream", json={"token": many}
        ) as response:
            lines = [json.loads(line) async for line in response.aiter_lines() if line.strip()]
    assert lines == [{"disconnect": {"code": 3505, "reason": "channel limit"}}]
    # Nothing was subscribed on the node's behalf, not even for a moment left behind.
    assert (await node.api("channels"))["result"]["channels"] == {}
    # At the limit (repeats count once, as they subscribe once) the connection holds them all.
    at_limit = token("ann", channels=["a", "b", "c", "a"])
    async with websockets.connect(node.url, open_timeout=TIMEOUT) as ws:
        reply = await RawClient(ws).command("connect", {"token": at_limit})
        assert sorted(reply["connect"]["subs"]) == ["a", "b", "c"]
    assert "connect names 5 channels, over client_channel_limit 3" in node.log()
    assert_no_crash(node)
