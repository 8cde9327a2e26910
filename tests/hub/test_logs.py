"""Structured logs: the real output of real sessions, parsed line by line.

Every line is one JSON object with time, level, logger and message; every line logged within a session
(by the session itself, by a hook, over WebSocket or over the HTTP-stream emulation) carries the session's
client id, user, tenant and transport; an exception is a field.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import websockets

from hub import logs
from hub.hooks import Hooks
from hub.logs import LineLimiter, clean, log_limited, make_handler
from tests.conftest import TIMEOUT, HubFactory, RawClient, http_client, token
from tests.hub.test_cli import server_process  # noqa: F401  (the fixture: a real `switchboard serve`)

REQUIRED = ("time", "level", "logger", "message")
SESSION = ("client", "user", "tenant", "transport")


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """What the ``switchboard`` loggers write through the JSON handler ``switchboard serve`` installs."""
    out = io.StringIO()
    handler = make_handler("json")
    handler.stream = out  # type: ignore[attr-defined]
    root = logging.getLogger("switchboard")
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def records(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    for rec in parsed:
        assert all(isinstance(rec.get(k), str) for k in REQUIRED), rec
    return parsed


def hooks_that_log() -> Hooks:
    hooks = Hooks()
    app_log = logging.getLogger("switchboard.app")

    async def echo(ctx: Any) -> Any:
        app_log.info("rpc echo called")  # no extra: the session's fields must come by themselves
        return ctx.data

    async def boom(ctx: Any) -> Any:
        raise ValueError("kaboom")

    hooks.rpc["echo"] = echo
    hooks.rpc["boom"] = boom
    return hooks


async def test_every_line_of_a_websocket_session_carries_its_fields(
    make_hub: HubFactory, raw_client: Any, captured: io.StringIO
) -> None:
    hub = await make_hub(hooks=hooks_that_log())
    c = await raw_client(hub)
    client_id = (await c.command("connect", {"token": token("alice", tenant="acme")}))["connect"]["client"]
    assert (await c.command("rpc", {"method": "echo", "data": {"x": 1}}))["rpc"]["data"] == {"x": 1}
    assert (await c.command("rpc", {"method": "boom"}))["error"]["code"] == 100
    assert (await c.command("subscribe", {"channel": "nosuchns:x"}))["error"]["code"] == 102
    await c.send_raw("{not json")
    assert (await c.closed())[0] == 3501

    mine = [r for r in records(captured.getvalue()) if r.get("client") == client_id]
    messages = [r["message"] for r in mine]
    assert "connected" in messages and "rpc echo called" in messages
    assert any(m.startswith("bad frame") for m in messages)
    assert "disconnect 3501 bad request" in messages
    for rec in mine:
        assert (rec["user"], rec["tenant"], rec["transport"]) == ("alice", "acme", "websocket"), rec
    hook_line = next(r for r in mine if r["message"] == "rpc echo called")
    assert hook_line["logger"] == "switchboard.app" and hook_line["level"] == "info"
    crash = next(r for r in mine if r["message"] == "rpc crashed")
    assert crash["level"] == "error"
    assert "ValueError: kaboom" in crash["exception"] and "Traceback" in crash["exception"]
    # No line about this client goes out without its fields.
    for rec in records(captured.getvalue()):
        if client_id in rec["message"]:
            assert rec.get("client") == client_id, rec


async def test_emulation_commands_log_as_their_session(make_hub: HubFactory, captured: io.StringIO) -> None:
    hub = await make_hub(hooks=hooks_that_log())
    connect = orjson.dumps({"id": 1, "connect": {"token": token("carol")}})
    async with (
        http_client(timeout=TIMEOUT) as http,
        http.stream("POST", hub.http + "/connection/http_stream", content=connect) as response,
    ):
        lines = response.aiter_lines()
        async with asyncio.timeout(TIMEOUT):
            first = json.loads(await anext(lines))
        session, node, client_id = (first["connect"][k] for k in ("session", "node", "client"))
        data = orjson.dumps({"id": 2, "rpc": {"method": "echo", "data": 5}}).decode()
        posted = await http.post(
            hub.http + "/emulation", json={"session": session, "node": node, "data": data}
        )
        assert posted.status_code == 204
        async with asyncio.timeout(TIMEOUT):
            while True:
                reply = json.loads(await anext(lines))
                if reply.get("id") == 2:
                    break
        assert reply["rpc"]["data"] == 5
    hook_line = next(r for r in records(captured.getvalue()) if r["message"] == "rpc echo called")
    assert hook_line["client"] == client_id
    assert (hook_line["user"], hook_line["tenant"], hook_line["transport"]) == ("carol", "", "http_stream")


async def test_lines_outside_any_session_carry_no_session_fields(
    make_hub: HubFactory, captured: io.StringIO
) -> None:
    hub = await make_hub()
    logging.getLogger("switchboard.test").warning("outside")
    await hub.sb.publish("lobby", {"n": 1})
    rec = next(r for r in records(captured.getvalue()) if r["message"] == "outside")
    assert not set(SESSION) & set(rec)


async def test_serve_writes_json_lines(server_process: Any) -> None:  # noqa: F811
    proc, port = await server_process(SWITCHBOARD_LOG_FORMAT="json", SWITCHBOARD_LOG_LEVEL="debug")
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/connection/websocket", open_timeout=TIMEOUT)
    c = RawClient(ws)
    client_id = (await c.command("connect", {}))["connect"]["client"]
    assert (await c.command("subscribe", {"channel": "bad channel"}))["error"]["code"] == 107
    proc.send_signal(signal.SIGTERM)
    assert (await c.closed())[0] == 3001
    assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0
    assert proc.stdout is not None
    out = (await proc.stdout.read()).decode()
    recs = records(out)  # every line, uvicorn's included, is a JSON object
    assert any(r["logger"].startswith("uvicorn") for r in recs)
    assert any("development mode" in r["message"] for r in recs)
    mine = [r for r in recs if r.get("client") == client_id]
    expected = {"connected", "subscribe failed: 107 bad request", "disconnect 3001 shutdown"}
    assert expected <= {r["message"] for r in mine}
    for rec in mine:
        assert (rec["user"], rec["tenant"], rec["transport"]) == ("", "", "websocket")


async def test_serve_text_lines_carry_session_fields(server_process: Any) -> None:  # noqa: F811
    proc, port = await server_process()
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/connection/websocket", open_timeout=TIMEOUT)
    c = RawClient(ws)
    client_id = (await c.command("connect", {}))["connect"]["client"]
    proc.send_signal(signal.SIGTERM)
    assert (await c.closed())[0] == 3001
    assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0
    assert proc.stdout is not None
    out = (await proc.stdout.read()).decode()
    line = next(x for x in out.splitlines() if "connected" in x and client_id in x)
    assert f"client='{client_id}'" in line and "transport='websocket'" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


# ---------------------------------------------------------------- no raw control characters; rate limits

HOSTILE = "pub\x1b[31mlish\r\nFAKE 2025-01-01 ERROR forged\x00\x7f\x9b\u2028\u202e\t"


def format_both(record_factory: Any) -> dict[str, str]:
    out = {}
    for fmt in ("text", "json"):
        handler = make_handler(fmt)
        assert handler.formatter is not None
        out[fmt] = handler.formatter.format(record_factory())
    return out


def test_formatters_escape_every_control_character_from_input() -> None:
    """(Issue 10.) The server API's method name came from the URL into a log line as it was: a terminal
    escape, a forged line after CR LF. Both formats now write every character that is not printable as
    ``repr`` writes it: in the message, the session fields and an exception's message."""

    def record() -> logging.LogRecord:
        try:
            raise ValueError(f"bad input {HOSTILE}")
        except ValueError:
            import sys

            rec = logging.LogRecord(
                "switchboard.api", logging.ERROR, __file__, 1, "%s failed", (HOSTILE,), None
            )
            rec.exc_info = sys.exc_info()
        rec.user = HOSTILE  # type: ignore[attr-defined]
        rec.tenant = "t\x85"  # type: ignore[attr-defined]
        return rec

    lines = format_both(record)
    text, first = lines["text"], lines["text"].split("\n")[0]
    assert first.isprintable() and "pub\\x1b[31mlish\\r\\nFAKE" in first and "\\u2028\\u202e\\t" in first
    assert "user='pub\\x1b[31mlish" in first
    for line in text.split("\n"):  # a traceback keeps its lines, each clean; the message is one of them
        assert line.isprintable(), repr(line)
        assert not line.startswith("FAKE")
    assert text.split("\n")[-1].startswith("ValueError: bad input pub\\x1b[31mlish\\r\\nFAKE")
    raw = lines["json"]
    assert raw.isprintable() and "\n" not in raw
    rec = json.loads(raw)
    assert (
        rec["message"]
        == "pub\\x1b[31mlish\\r\\nFAKE 2025-01-01 ERROR forged\\x00\\x7f\\x9b\\u2028\\u202e\\t failed"
    )
    assert rec["user"].startswith("pub\\x1b") and rec["tenant"] == "t\\x85"
    assert "ValueError: bad input pub\\x1b[31mlish\\r\\nFAKE" in rec["exception"]


def test_clean_leaves_printable_text_alone() -> None:
    for text in ("plain", "ünïcödé 日本語 😀", "quotes ' \" and \\ backslash", ""):
        assert clean(text) is text


def test_a_line_kind_is_limited_and_the_next_line_says_how_many_were_left_out() -> None:
    now = [0.0]
    limiter = LineLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    kind = ("switchboard.x", "bad frame: %s")
    assert [limiter.admit(kind) for _ in range(5)] == [0, 0, 0, None, None]
    assert limiter.admit(("switchboard.x", "another kind")) == 0  # kinds are counted apart
    now[0] += 0.5  # one line's worth of refill
    assert limiter.admit(kind) == 2 and limiter.admit(kind) is None
    now[0] += 100.0
    assert [limiter.admit(kind) for _ in range(4)] == [1, 0, 0, None]


def test_log_limited_writes_the_summary_into_the_next_line(monkeypatch: Any, captured: io.StringIO) -> None:
    now = [0.0]
    monkeypatch.setattr(logs, "LIMITER", LineLimiter(rate=1.0, burst=2, clock=lambda: now[0]))
    logger = logging.getLogger("switchboard.test")
    written = [log_limited(logger, logging.WARNING, "bad frame from %s", n) for n in range(10)]
    assert written == [True, True] + [False] * 8
    now[0] += 1.0
    assert log_limited(logger, logging.WARNING, "bad frame from %s", 10)
    messages = [r["message"] for r in records(captured.getvalue())]
    assert messages == ["bad frame from 0", "bad frame from 1", "bad frame from 10 (8 more like it left out)"]
