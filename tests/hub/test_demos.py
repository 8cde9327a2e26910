"""The landing page, the demo pages and their server-side helpers (hub/demos.py) without a browser: off
outside development mode, pages and files served with a strict policy and nothing else, what the pages
say while the bundles are missing, the development token endpoint (and garbage sent to it), the
``demo.typing`` RPC (published without history, only by a subscriber allowed to publish), and the
``demo.notify`` RPC (a sample notification for the caller, bounded per user)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.options import NamespaceOptions
from hub import demos
from hub.config import (
    DEV_PERSONAL_NAMESPACE,
    DEV_PERSONAL_OPTIONS,
    DEV_SENSORS_NAMESPACE,
    DEV_SENSORS_OPTIONS,
)
from hub.demo_sensors import SENSORS, SENSORS_CHANNEL, reading
from hub.demos import (
    DEMOS,
    MAX_DISPLAY_NAME,
    MAX_TOKEN_BODY,
    MAX_USER_ID,
    NOTIFY_RPC,
    TOKEN_TTL,
    TYPING_RPC,
    user_id,
)
from hub.logs import LIMITED_BURST
from tests.conftest import SECRET, TIMEOUT, RawClient, RunningHub, http_client, token

PATHS = (
    "/",
    "/demo",
    "/demo/",
    "/demo/chat",
    "/demo/editor",
    "/demo/bell",
    "/demo/sensors",
    "/demo/chat.js",
    "/demo/bell.js",
    "/demo/demo.css",
)


@pytest.fixture
async def dev_hub(make_hub: Any, tmp_path: Path) -> RunningHub:
    """A development-mode hub whose demo folder is a copy of static/demo without bundles: a test builds
    the fake bundles it needs (the real ones are the browser tests' business)."""
    hub: RunningHub = await make_hub(dev_mode=True, data_dir=str(tmp_path / "data"))
    folder = tmp_path / "demo"
    folder.mkdir()
    for item in demos.demo_folder().iterdir():
        if item.is_file():
            shutil.copy(item, folder / item.name)
    hub.sb.demos.folder = folder
    return hub


@pytest.fixture
async def dev_http(dev_hub: RunningHub) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(base_url=dev_hub.http, timeout=TIMEOUT) as http:
        yield http


def fake_bundle(hub: RunningHub, name: str, body: str = "export {}\n") -> Path:
    dist = hub.sb.demos.folder / "dist"
    dist.mkdir(exist_ok=True)
    bundle = dist / f"{name}.js"
    bundle.write_text(body)
    return bundle


async def token_for(http: httpx.AsyncClient, name: Any) -> httpx.Response:
    return await http.post("/demo/token", json={"name": name})


# ---------------------------------------------------------------- off outside development mode


async def test_without_development_mode_there_is_no_landing_page_no_demo_and_no_typing_rpc(
    make_hub: Any, raw_client: Any
) -> None:
    hub = await make_hub()
    async with http_client(base_url=hub.http) as http:
        for path in PATHS:
            r = await http.get(path)
            assert r.status_code == 404, path
            assert "demo" not in r.text.lower()
        assert (await token_for(http, "Alice")).status_code == 404
    client: RawClient = await raw_client(hub, connect={})
    await client.command("subscribe", {"channel": "room"})
    reply = await client.command("rpc", {"method": TYPING_RPC, "data": {"channel": "room"}})
    assert reply["error"]["code"] == 104  # method not found


# ---------------------------------------------------------------- pages and files


async def test_landing_page_links_every_demo_and_the_console(dev_hub: RunningHub) -> None:
    for demo in DEMOS:
        fake_bundle(dev_hub, demo.name)
    async with http_client(base_url=dev_hub.http) as http:
        r = await http.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    for demo in DEMOS:
        assert f'href="demo/{demo.name}"' in r.text
    assert 'href="admin/"' in r.text
    assert "build-note" not in r.text and "not built" not in r.text
    # The console's one-time password stays in the log: a page a foreign site might read holds no secret.
    assert dev_hub.sb.console.one_time_password
    assert dev_hub.sb.console.one_time_password not in r.text


async def test_missing_bundles_say_what_to_run(dev_hub: RunningHub) -> None:
    for built in DEMOS[1:]:
        fake_bundle(dev_hub, built.name)
    async with http_client(base_url=dev_hub.http) as http:
        landing = await http.get("/")
        chat = await http.get("/demo/chat")
        editor = await http.get("/demo/editor")
    assert landing.status_code == 200
    assert 'data-testid="build-note"' in landing.text and "make demos" in landing.text
    assert "Not built yet: Chat<" in landing.text  # only the one that is missing
    assert chat.status_code == 503 and "make demos" in chat.text
    assert 'href="../demo/demo.css"' in chat.text  # the note's links work from /demo/<name>
    assert editor.status_code == 200 and 'src="editor.js"' in editor.text

    fake_bundle(dev_hub, "chat")  # a build made while the hub runs shows on the next request
    async with http_client(base_url=dev_hub.http) as http:
        assert (await http.get("/demo/chat")).status_code == 200
        assert "build-note" not in (await http.get("/")).text


async def test_files_come_from_the_demo_folders_only(dev_hub: RunningHub) -> None:
    fake_bundle(dev_hub, "chat", "console.log('chat')\n")
    (dev_hub.sb.demos.folder / "dist" / "chat.js.map").write_text("{}")
    async with http_client(base_url=dev_hub.http) as http:
        js = await http.get("/demo/chat.js")
        assert js.status_code == 200 and js.text == "console.log('chat')\n"
        assert js.headers["content-type"].startswith("text/javascript")
        assert js.headers["x-content-type-options"] == "nosniff"
        assert (await http.get("/demo/chat.js.map")).headers["content-type"] == "application/json"
        css = await http.get("/demo/demo.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        for path in (
            "/demo/package.json",  # a file of the folder, but not a type the demos serve
            "/demo/build.mjs",
            "/demo/.built",
            "/demo/dist/chat.js",
            "/demo/src/chat.js",
            "/demo/..%2F..%2Fpyproject.toml",
            "/demo/%2e%2e/app.py",
            "/demo/nothing.js",
            "/demo/chat.html",
            "/demo/%00.js",
        ):
            assert (await http.get(path)).status_code == 404, path
        assert (await http.post("/demo/chat.js")).status_code == 405
        assert (await http.delete("/")).status_code == 405


async def test_one_address_per_page(dev_hub: RunningHub) -> None:
    async with http_client(base_url=dev_hub.http) as http:
        for path, target in (("/demo", "/"), ("/demo/", "/"), ("/demo/chat/", "/demo/chat")):
            r = await http.get(path)
            assert (r.status_code, r.headers["location"]) == (307, target), path
        assert (await http.get("/demo/unknown/")).status_code == 404
        assert (await http.get("/demo/a%0d%0aSet-Cookie:x=1/")).status_code == 404


# ---------------------------------------------------------------- POST /demo/token


@pytest.mark.parametrize(
    ("name", "user"),
    [
        ("Alice", "alice"),
        ("  Alice   Smith ", "alice-smith"),
        ("Zoë O'Brien", "zoë-o-brien"),
        ("bob#1,$x:y", "bob-1-x-y"),
        ("李雷", "李雷"),
    ],
)
async def test_a_token_names_its_user_and_shows_the_name_to_others(
    dev_hub: RunningHub, raw_client: Any, name: str, user: str
) -> None:
    async with http_client(base_url=dev_hub.http) as http:
        r = await token_for(http, name)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    shown = " ".join(name.split())
    assert (body["user"], body["name"], body["expires_in"]) == (user, shown, TOKEN_TTL)
    assert body["personal"] is None  # personal channels are off in this hub (load_config turns them on)
    claims = jwt.decode(body["token"], SECRET, algorithms=["HS256"])
    assert claims["sub"] == user and claims["info"] == {"name": shown}
    assert abs(claims["exp"] - (time.time() + TOKEN_TTL)) < 60

    client: RawClient = await raw_client(dev_hub, connect={"token": body["token"]})
    await client.command("subscribe", {"channel": "lobby"})
    presence = await client.command("presence", {"channel": "lobby"})
    (entry,) = presence["presence"]["presence"].values()
    assert entry["user"] == user and entry["conn_info"] == {"name": shown}


def test_user_ids_fit_in_user_limited_channels() -> None:
    @given(st.text(max_size=80))
    @settings(max_examples=300)
    def check(name: str) -> None:
        uid = user_id(name)
        assert len(uid) <= MAX_USER_ID
        assert not any(ch in uid for ch in ",#:$") and not any(ch.isspace() for ch in uid)
        assert uid == user_id(uid)
        assert not uid.startswith("-") and not uid.endswith("-")

    check()


BAD_NAMES: list[Any] = [
    None,
    7,
    ["Alice"],
    {"n": 1},
    "",
    "   ",
    "!!!",
    "a" * (MAX_DISPLAY_NAME + 1),
    "x\u0000y",
]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_bad_names_are_refused_with_a_reason(dev_hub: RunningHub, name: Any) -> None:
    async with http_client(base_url=dev_hub.http) as http:
        r = await token_for(http, name)
    assert r.status_code == 400 and r.json()["error"]


async def test_bad_token_requests_are_refused_with_a_reason(dev_hub: RunningHub) -> None:
    async with http_client(base_url=dev_hub.http, timeout=TIMEOUT) as http:
        post = http.post
        cases = [
            (await http.get("/demo/token"), 405),
            (await post("/demo/token", content=b'{"name":"Alice"}'), 415),  # no Content-Type
            (await post("/demo/token", data={"name": "Alice"}), 415),  # what a cross-site form sends
            (await post("/demo/token", content=b"name=Alice", headers={"content-type": "text/plain"}), 415),
            (await post("/demo/token", json={"name": "A" * MAX_TOKEN_BODY}), 413),
            (await post("/demo/token", content=b"{", headers={"content-type": "application/json"}), 400),
            (await post("/demo/token", json=["Alice"]), 400),
            (await post("/demo/token", json={"name": "Alice", "user": "admin"}), 400),
        ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert response.json()["error"]


async def test_refused_requests_log_one_line_without_a_traceback(
    dev_http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="switchboard")
    for _ in range(LIMITED_BURST + 20):
        assert (await dev_http.post("/demo/token", json={"name": "!!!"})).status_code == 400
    lines = [r for r in caplog.records if r.name == "switchboard.demos" and "refused" in r.getMessage()]
    # one line each up to the burst, then a few a second at most (the next one counts those left out)
    assert LIMITED_BURST <= len(lines) < LIMITED_BURST + 10
    assert lines[0].levelno == logging.INFO and lines[0].exc_info is None
    assert "letter or digit" in lines[0].getMessage()


async def test_an_oversized_body_without_a_length_is_cut_at_the_bound(dev_hub: RunningHub) -> None:
    async def chunks() -> Any:
        yield b'{"name": "'
        for _ in range(100):
            yield b"x" * 1024

    async with http_client(base_url=dev_hub.http, timeout=TIMEOUT) as http:
        r = await http.post("/demo/token", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.text(max_size=60),
            lambda inner: (
                st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
            ),
            max_leaves=12,
        ).map(orjson.dumps),
        st.dictionaries(st.just("name"), st.text(max_size=60)).map(orjson.dumps),
    )
)
async def test_garbage_never_gets_a_server_error(dev_http: httpx.AsyncClient, body: bytes) -> None:
    r = await dev_http.post("/demo/token", content=body, headers={"content-type": "application/json"})
    assert r.status_code in (200, 400, 413), r.text
    assert ("token" in r.json()) == (r.status_code == 200)


# ---------------------------------------------------------------- RPC demo.typing


async def test_typing_reaches_the_subscribers_and_is_never_stored(
    dev_hub: RunningHub, raw_client: Any
) -> None:
    async with http_client(base_url=dev_hub.http) as http:
        alice_token = (await token_for(http, "Alice")).json()["token"]
    alice: RawClient = await raw_client(dev_hub, connect={"token": alice_token})
    bob: RawClient = await raw_client(dev_hub, connect={})
    for client in (alice, bob):
        assert "subscribe" in await client.command("subscribe", {"channel": "chat.room"})
    await alice.command("publish", {"channel": "chat.room", "data": {"text": "hi"}})
    assert (await bob.push("pub"))["pub"]["data"] == {"text": "hi"}

    reply = await alice.command("rpc", {"method": TYPING_RPC, "data": {"channel": "chat.room"}})
    assert "error" not in reply, reply
    pub = (await bob.push("pub"))["pub"]
    assert pub["data"] == {"typing": True}
    assert pub["info"]["user"] == "alice" and pub["info"]["conn_info"] == {"name": "Alice"}
    assert "offset" not in pub  # not a position of the channel's stream

    history = await bob.command("history", {"channel": "chat.room", "limit": 10})
    assert [p["data"] for p in history["history"]["publications"]] == [{"text": "hi"}]


@pytest.mark.parametrize(
    "data", [None, "chat.room", 7, [], {}, {"channel": 7}, {"channel": None}, {"chan": "chat.room"}]
)
async def test_typing_with_bad_data_is_a_bad_request(dev_hub: RunningHub, raw_client: Any, data: Any) -> None:
    client: RawClient = await raw_client(dev_hub, connect={})
    await client.command("subscribe", {"channel": "chat.room"})
    params = {"method": TYPING_RPC} if data is None else {"method": TYPING_RPC, "data": data}
    reply = await client.command("rpc", params)
    assert reply["error"]["code"] == 107


async def test_typing_needs_a_subscription_and_the_right_to_publish(make_hub: Any, raw_client: Any) -> None:
    listen_only = NamespaceOptions(allow_subscribe_for_client=True, allow_subscribe_for_anonymous=True)
    hub = await make_hub(dev_mode=True, namespaces={"news": listen_only})
    async with http_client(base_url=hub.http) as http:
        carol_token = (await token_for(http, "Carol")).json()["token"]
    carol: RawClient = await raw_client(hub, connect={"token": carol_token})
    for channel in ("chat.room", "dm#alice,bob", "", "x" * 300):  # not subscribed (or cannot be)
        reply = await carol.command("rpc", {"method": TYPING_RPC, "data": {"channel": channel}})
        assert reply["error"]["code"] == 103, channel
    assert "subscribe" in await carol.command("subscribe", {"channel": "news:today"})
    reply = await carol.command("rpc", {"method": TYPING_RPC, "data": {"channel": "news:today"}})
    assert reply["error"]["code"] == 103  # its subscribers may not publish


# ---------------------------------------------------------------- RPC demo.notify


async def personal_dev_hub(make_hub: Any, tmp_path: Path) -> RunningHub:
    """A development-mode hub with personal channels, as load_config makes one (hub.config)."""
    hub: RunningHub = await make_hub(
        dev_mode=True,
        data_dir=str(tmp_path / "data"),
        user_subscribe_to_personal=True,
        user_personal_channel_namespace=DEV_PERSONAL_NAMESPACE,
        namespaces={DEV_PERSONAL_NAMESPACE: DEV_PERSONAL_OPTIONS},
    )
    return hub


async def test_notify_stores_a_sample_for_the_caller_and_every_device_gets_it(
    make_hub: Any, tmp_path: Path, raw_client: Any
) -> None:
    hub = await personal_dev_hub(make_hub, tmp_path)
    async with http_client(base_url=hub.http, timeout=TIMEOUT) as http:
        body = (await token_for(http, "Alice")).json()
    assert body["personal"] == "personal:#alice"
    phone: RawClient = await raw_client(hub, connect={"token": body["token"]})
    laptop: RawClient = await raw_client(hub, connect={"token": body["token"]})
    reply = await phone.command("rpc", {"method": NOTIFY_RPC, "data": {}})
    sent = reply["rpc"]["data"]
    for device in (phone, laptop):
        push = await device.push("pub")
        assert push["channel"] == "personal:#alice"
        data = push["pub"]["data"]
        assert data["type"] == "inbox.notification" and data["item"]["id"] == sent["item_id"]
        assert data["counts"] == {"unread": 1, "unseen": 1, "total": 1, "version": 1}
    page = (await phone.command("rpc", {"method": "inbox.list", "data": {}}))["rpc"]["data"]
    [item] = page["items"]
    assert (item["category"], item["title"], item["notification_id"]) == (
        "demo",
        demos.SAMPLES[0][0],
        sent["notification_id"],
    )
    assert abs(item["expire_at"] - (time.time() + demos.NOTIFY_TTL)) < 60  # the sweep empties it later
    reply = await laptop.command("rpc", {"method": NOTIFY_RPC})  # no data at all is {} too
    assert "rpc" in reply, reply


async def test_notify_is_bounded_per_user_and_refuses_garbage_and_anonymous_callers(
    make_hub: Any, tmp_path: Path, raw_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demos, "NOTIFY_BURST", 3)
    monkeypatch.setattr(demos, "NOTIFY_RATE", 0.001)  # no refill while the test runs
    hub = await personal_dev_hub(make_hub, tmp_path)
    async with http_client(base_url=hub.http, timeout=TIMEOUT) as http:
        alice_token = (await token_for(http, "Alice")).json()["token"]
        bob_token = (await token_for(http, "Bob")).json()["token"]
    alice: RawClient = await raw_client(hub, connect={"token": alice_token})
    again: RawClient = await raw_client(hub, connect={"token": alice_token})  # the same user elsewhere
    bob: RawClient = await raw_client(hub, connect={"token": bob_token})
    anonymous: RawClient = await raw_client(hub, connect={})
    for data in ("x", 7, [], {"title": "mine"}, {"recipients": ["bob"]}):
        reply = await alice.command("rpc", {"method": NOTIFY_RPC, "data": data})
        assert reply["error"]["code"] == 107, data
    assert (await anonymous.command("rpc", {"method": NOTIFY_RPC, "data": {}}))["error"]["code"] == 103
    codes = [
        "rpc" if "rpc" in r else r["error"]["code"]
        for r in [await c.command("rpc", {"method": NOTIFY_RPC, "data": {}}) for c in (alice, again) * 2]
    ]
    assert codes == ["rpc", "rpc", "rpc", 111]  # the user's burst, whichever connection asks
    assert "rpc" in await bob.command("rpc", {"method": NOTIFY_RPC, "data": {}})  # bob has his own
    assert (await hub.sb.notifications.counts("", "alice")).total == 3


def test_notify_remembers_a_bounded_number_of_senders(monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.config import Config

    monkeypatch.setattr(demos, "MAX_NOTIFY_SENDERS", 3)
    site = demos.Demos(Config(dev_mode=True), node=None)  # type: ignore[arg-type]
    for k in range(10):
        assert site._admit(("", f"user{k}"))
    assert list(site._senders) == [("", "user7"), ("", "user8"), ("", "user9")]


async def test_without_development_mode_there_is_no_notify_rpc(make_hub: Any, raw_client: Any) -> None:
    hub = await make_hub(user_subscribe_to_personal=True, user_personal_channel_namespace="personal")
    client: RawClient = await raw_client(hub, connect={"token": token("alice")})
    reply = await client.command("rpc", {"method": NOTIFY_RPC, "data": {}})
    assert reply["error"]["code"] == 104


# ---------------------------------------------------------------- the sensor dashboard's feed


async def test_the_sensor_feed_runs_in_development_mode_only_and_gives_each_sensor_its_latest(
    make_hub: Any, raw_client: Any, tmp_path: Path
) -> None:
    assert (await make_hub()).sb.demos.simulator is None  # production: no simulator
    hub = await make_hub(
        dev_mode=True,
        data_dir=str(tmp_path),
        namespaces={DEV_SENSORS_NAMESPACE: DEV_SENSORS_OPTIONS},
    )
    simulator = hub.sb.demos.simulator
    async with asyncio.timeout(TIMEOUT):
        await simulator.until(len(SENSORS))  # one reading of each sensor, in turn
    await simulator.pause()
    client: RawClient = await raw_client(hub, connect={})
    reply = await client.command("subscribe", {"channel": SENSORS_CHANNEL})
    assert reply["subscribe"]["recovered"] is True
    got = [(await client.push("pub"))["pub"]["data"] for _ in SENSORS]
    assert {d["sensor"]: d for d in got} == simulator.latest
    refused = await client.command("publish", {"channel": SENSORS_CHANNEL, "data": {"sensor": "x"}})
    assert refused["error"]["code"] == 103  # only the hub publishes there


async def test_a_development_hub_without_the_sensors_namespace_simulates_nothing(
    make_hub: Any, tmp_path: Path
) -> None:
    hub = await make_hub(dev_mode=True, data_dir=str(tmp_path))  # the tests' config: no sensors namespace
    assert hub.sb.demos.simulator is not None and hub.sb.demos.simulator._task is None


@given(st.integers(0, 10**9), st.floats(0, 4e9))
def test_simulated_readings_stay_in_each_sensors_range(step: int, now: float) -> None:
    value = reading(step, now)
    sensor = SENSORS[step % len(SENSORS)]
    assert value["sensor"] == sensor.key
    assert abs(value["value"] - sensor.base) <= sensor.swing * 1.08 + 0.01
    assert len(orjson.dumps(value)) < 200
