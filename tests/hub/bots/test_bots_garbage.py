"""Garbage to every method this package adds (``bot.serve``, ``bot.unserve``, ``bot.reply``, and calls
routed to bots), from a bot and from a person, on an in-process hub: every command gets an answer (a result
or 103/106/107/108), the connection stays, nothing is left registered or waiting that should not be."""

from __future__ import annotations

import asyncio
import tempfile
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub import codes
from hub.app import Switchboard
from tests.conftest import token
from tests.hub.bots.conftest import bot_config, bot_token
from tests.hub.bots.conftest import writable_json as _json
from tests.hub.inbox.test_rpc import Sink

_fields = st.sampled_from(["prefix", "id", "result", "error", "code", "message", "x"])
_values = st.one_of(
    _json,
    st.sampled_from(["agent.", "agent.x", "agent." + "y" * 200, "inbox.", "", "1", "2"]),
    st.fixed_dictionaries({"code": st.integers(0, 2**31), "message": _json}),
)
_data = st.one_of(_json, st.dictionaries(_fields, _values, max_size=3))
_METHODS = ["bot.serve", "bot.unserve", "bot.reply", "agent.ask", "agent.x.y"]
_ANSWERS = {103, 104, 106, 107, 108, 504}


def test_garbage_gets_an_answer_never_a_crash() -> None:
    # One hub for every example (a hub's start is most of an example's cost), each on fresh sessions.
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory() as data_dir:
        sb = Switchboard(bot_config(data_dir=data_dir, bot_rpc_timeout=0.05, bot_rpc_max_data_size=100))
        loop.run_until_complete(sb.start())

        @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(
            calls=st.lists(st.tuples(st.booleans(), st.sampled_from(_METHODS), _data), min_size=1, max_size=8)
        )
        def examples(calls: list[tuple[bool, str, Any]]) -> None:
            loop.run_until_complete(_garbage(sb, calls))

        try:
            examples()
        finally:
            loop.run_until_complete(sb.stop())
            loop.close()


def _replies(sink: Sink) -> dict[int, dict[str, Any]]:
    lines = [orjson.loads(line) for frame in sink.frames for line in frame.split(b"\n") if line]
    return {r["id"]: r for r in lines if r.get("id", 0) >= 2}


async def _garbage(sb: Switchboard, calls: list[tuple[bool, str, Any]]) -> None:
    sinks = {True: Sink(), False: Sink()}
    bot = sb.node.new_session(sinks[True], scope={})
    person = sb.node.new_session(sinks[False], scope={})
    try:
        await bot.handle_frame(orjson.dumps({"id": 1, "connect": {"token": bot_token("helper")}}))
        await person.handle_frame(orjson.dumps({"id": 1, "connect": {"token": token("ann")}}))
        sent: dict[bool, list[int]] = {True: [], False: []}
        for n, (from_bot, method, data) in enumerate(calls, start=2):
            session = bot if from_bot else person
            await session.handle_frame(orjson.dumps({"id": n, "rpc": {"method": method, "data": data}}))
            sent[from_bot].append(n)
        async with asyncio.timeout(5):  # calls routed to a bot end by 0.05 s (nobody answers them)
            # replies written first (a session makes its set of such calls at its first)
            later = [*(bot._later or ()), *(person._later or ())]
            await asyncio.gather(*later, return_exceptions=True)
        sb.node.scheduler.flush()
        for from_bot, sink in sinks.items():
            answers = _replies(sink)
            assert sorted(answers) == sent[from_bot], (calls, answers)
            for answer in answers.values():
                assert "rpc" in answer or answer["error"]["code"] in _ANSWERS, answer
            assert sink.closed is None
        assert all(p.startswith("agent.") for p in sb.bots.routes.prefixes(bot.id))
    finally:
        for session in (bot, person):
            session.disconnect(codes.CONNECTION_CLOSED.error())
            await sb.node.end_session(session)
    assert sb.bots.routes.size == 0 and not sb.bots.callers and not sb.bots.told


async def test_a_caller_gone_before_its_call_started_leaves_nothing_counted(tmp_path: Any) -> None:
    sb = Switchboard(bot_config(data_dir=str(tmp_path)))
    await sb.start()
    try:
        person = sb.node.new_session(Sink(), scope={})
        await person.handle_frame(orjson.dumps({"id": 1, "connect": {"token": token("ann")}}))
        await person.handle_frame(orjson.dumps({"id": 2, "rpc": {"method": "agent.ask", "data": {}}}))
        assert sb.bots.callers == {("", "ann"): 1}  # counted, its task not yet started
        started = set(person._later)
        person.disconnect(codes.CONNECTION_CLOSED.error())
        await sb.node.end_session(person)  # cancels the call's task before its first step
        await asyncio.wait(started)  # its done callbacks were added before this wait's
        assert all(task.cancelled() for task in started) and sb.bots.callers == {}
    finally:
        await sb.stop()
