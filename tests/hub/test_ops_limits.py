"""Command rate limit (111, then 3013 for a flood) and per-user connection limit (3504), over real
WebSockets and a real HTTP stream; the token bucket's promises as hypothesis properties."""

from __future__ import annotations

import json
import logging
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.limits import CommandLimiter, TokenBucket, Verdict
from tests.conftest import TIMEOUT, HubFactory, http_client, token
from tests.hub.test_limits import wait_for

# ---------------------------------------------------------------- the bucket (sans-I/O)

gaps = st.lists(st.floats(0, 2.0, allow_nan=False), max_size=200)


@given(st.floats(0.5, 200), st.integers(1, 50), gaps)
def test_admitted_commands_never_exceed_burst_plus_rate_times_time(
    rate: float, burst: int, steps: list[float]
) -> None:
    bucket = TokenBucket(rate, burst, 0.0)
    now, admitted = 0.0, []
    for gap in steps:
        now += gap
        if bucket.take(now):
            admitted.append(now)
    # In every window [a, b] of the run: at most burst + rate * (b - a) commands were admitted.
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            assert j - i + 1 <= burst + rate * (admitted[j] - start) + 1e-6


@given(st.floats(0.5, 200), st.integers(1, 50), st.integers(1, 300))
def test_a_client_at_the_rate_is_never_refused(rate: float, burst: int, n: int) -> None:
    limiter = CommandLimiter(rate, burst, 0.0)
    assert all(limiter.admit(i / rate) is Verdict.ADMIT for i in range(n))


@given(st.integers(1, 50), st.integers(0, 120))
def test_a_flood_is_declared_after_a_whole_burst_of_refusals(burst: int, extra: int) -> None:
    limiter = CommandLimiter(0.001, burst, 0.0)  # practically no refill within the run
    verdicts = [limiter.admit(0.0) for _ in range(burst + extra)]
    assert verdicts[:burst] == [Verdict.ADMIT] * burst
    refused = verdicts[burst:]
    assert refused[: burst - 1] == [Verdict.REFUSE] * min(extra, burst - 1)
    assert (Verdict.FLOOD in refused) == (extra >= burst)
    if extra >= burst:
        assert refused.index(Verdict.FLOOD) == burst - 1


def test_one_admitted_command_ends_the_streak() -> None:
    limiter = CommandLimiter(1.0, 2, 0.0)
    assert [limiter.admit(0.0) for _ in range(3)] == [Verdict.ADMIT, Verdict.ADMIT, Verdict.REFUSE]
    assert limiter.admit(1.0) is Verdict.ADMIT and limiter.refused == 0
    assert limiter.admit(1.0) is Verdict.REFUSE and limiter.refused == 1


def test_bad_bucket_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, 1, 0.0)
    with pytest.raises(ValueError):
        TokenBucket(1.0, 0, 0.0)


# ---------------------------------------------------------------- command rate limit over a WebSocket


async def test_flood_gets_111_then_3013_and_others_go_on(
    make_hub: HubFactory, raw_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="switchboard")
    burst = 5
    # A rate this low refills nothing during the test: the burst is all a connection gets.
    hub = await make_hub(client_command_rate_limit=0.001, client_command_rate_burst=burst)
    other = await raw_client(hub, connect={})  # takes one of its own tokens
    assert "subscribe" in await other.command("subscribe", {"channel": "lobby"})
    flooder = await raw_client(hub)
    reply = await flooder.command("connect", {})  # one token
    flood_id = reply["connect"]["client"]
    frame = "\n".join(
        orjson.dumps({"id": i, "presence_stats": {"channel": "lobby"}}).decode() for i in range(2, 40)
    )
    before = hub.sb.node.metrics.rate_limited
    await flooder.send_raw(frame)
    for i in range(2, 2 + burst - 1):  # the rest of the burst is served
        assert "presence_stats" in await flooder.reply(i)
    first_refused = 2 + burst - 1
    for i in range(first_refused, first_refused + burst - 1):  # then refused, temporarily
        assert (await flooder.reply(i))["error"] == {
            "code": 111,
            "message": "too many requests",
            "temporary": True,
        }
    assert await flooder.closed() == (3013, "too many requests")  # the burst-th refusal in a row
    assert hub.sb.node.metrics.rate_limited - before == burst

    # The other connection never noticed.
    await hub.sb.publish("lobby", {"n": 1})
    assert (await other.push("pub"))["pub"]["data"] == {"n": 1}
    assert "presence_stats" in await other.command("presence_stats", {"channel": "lobby"})

    lines = [(r.levelname, r.getMessage(), getattr(r, "client", None)) for r in caplog.records]
    assert ("INFO", "command rate limit exceeded", flood_id) in lines
    assert ("WARNING", f"command flood: {burst} commands refused in a row", flood_id) in lines
    assert sum(1 for _, msg, _ in lines if msg == "command rate limit exceeded") == 1  # one per streak


async def test_rate_limit_off_serves_any_burst(make_hub: HubFactory, raw_client: Any) -> None:
    hub = await make_hub(client_command_rate_limit=0, client_command_rate_burst=1)
    c = await raw_client(hub, connect={})
    frame = "\n".join(
        orjson.dumps({"id": i, "presence_stats": {"channel": "lobby"}}).decode() for i in range(2, 60)
    )
    await c.send_raw(frame)
    for i in range(2, 60):
        assert "presence_stats" in await c.reply(i)


# ---------------------------------------------------------------- per-user connection limit


async def test_user_connection_limit_3504_and_a_slot_frees(
    make_hub: HubFactory, raw_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="switchboard")
    hub = await make_hub(client_user_connection_limit=2)
    node = hub.sb.node
    first = await raw_client(hub, connect={"token": token("alice")})
    await raw_client(hub, connect={"token": token("alice")})
    third = await raw_client(hub)
    await third.send_raw(orjson.dumps({"id": 1, "connect": {"token": token("alice")}}).decode())
    assert await third.closed() == (3504, "connection limit")
    assert any(r.getMessage() == "user connection limit 2 reached" for r in caplog.records)

    # Other users, the same user id in another tenant, and anonymous connections are not affected.
    await raw_client(hub, connect={"token": token("bob")})
    await raw_client(hub, connect={"token": token("alice", tenant="acme")})
    for _ in range(3):
        await raw_client(hub, connect={})

    await first.ws.close()
    await wait_for(lambda: len(node.registry.user_clients("", "alice")) == 1, "alice's first connection left")
    again = await raw_client(hub)
    assert "connect" in await again.command("connect", {"token": token("alice")})
    refused = await raw_client(hub)
    await refused.send_raw(orjson.dumps({"id": 1, "connect": {"token": token("alice")}}).decode())
    assert (await refused.closed())[0] == 3504


async def test_user_connection_limit_on_a_stream_ends_it_with_3504(
    make_hub: HubFactory, raw_client: Any
) -> None:
    hub = await make_hub(client_user_connection_limit=1)
    await raw_client(hub, connect={"token": token("carol", channels=["chat:room"])})
    body = {"token": token("carol", channels=["chat:room"])}
    async with (
        http_client(timeout=TIMEOUT) as http,
        http.stream("POST", hub.http + "/connection/uni_http_stream", json=body) as response,
    ):
        lines = [json.loads(line) async for line in response.aiter_lines() if line.strip()]
    assert lines == [{"disconnect": {"code": 3504, "reason": "connection limit"}}]
    # The refused connect's server-side subscription was rolled back: only the first connection is there.
    assert [c.user for c in hub.sb.node.registry.channels[("", "chat:room")]] == ["carol"]


async def test_config_rejects_negative_limits() -> None:
    from hub.codes import ConfigError
    from hub.config import load_config

    for key in ("CLIENT_COMMAND_RATE_LIMIT", "CLIENT_USER_CONNECTION_LIMIT"):
        with pytest.raises(ConfigError):
            load_config(env={f"SWITCHBOARD_{key}": "-1"})
    with pytest.raises(ConfigError):
        load_config(
            env={"SWITCHBOARD_CLIENT_COMMAND_RATE_LIMIT": "10", "SWITCHBOARD_CLIENT_COMMAND_RATE_BURST": "0"}
        )
    cfg = load_config(
        env={"SWITCHBOARD_CLIENT_COMMAND_RATE_LIMIT": "0", "SWITCHBOARD_CLIENT_COMMAND_RATE_BURST": "0"}
    )
    assert cfg.client_command_rate_limit == 0
