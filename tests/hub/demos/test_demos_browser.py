"""The demos in a real browser (Debian's Chromium through Playwright, tests/browser.py), against a hub in
development mode, each person in a browser context of their own:

- chat: three people see each other in the presence list and each other's messages, a typing indicator
  shows and clears, a direct message reaches only its two users;
- chat: a connection the server closes with a reconnect code, and one lost with the network, come back
  with what they missed, exactly once; a gap longer than recovery reaches shows the reload banner;
- editor: two pages editing at once converge (with the hub's copy), each shows the other's cursor with
  its name, and an expired token makes the page reconnect with a new one;
- bell: two pages of one user (two devices) show the same badge and list: a notification sent from one
  appears on both, a mark on one moves the other's badge, the backend's notifications arrive live, the
  list pages through its cursor, and a device that was offline reads its counts again at the reconnect;
- chat: a streamed reply grows in place and is finished once, also on a page opened mid-stream;
- sensors: a dashboard opened mid-stream shows the latest value of every sensor at once, from the hub's
  cache alone (the simulator paused), then stays current with fossil deltas;
- the landing page leads to the demos.

Each page is saved as a screenshot (tests/browser.py prints where). Pages must log no error: a script
the page's Content-Security-Policy blocked, or an exception, fails the test."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from channels.names import parse_channel
from channels.publication import ClientInfo
from examples.agent_assistant import Assistant, Model
from hub import demos
from hub.config import (
    DEV_BOT_SECRET,
    DEV_PERSONAL_NAMESPACE,
    DEV_PERSONAL_OPTIONS,
    DEV_SENSORS_NAMESPACE,
    DEV_SENSORS_OPTIONS,
)
from hub.demo_sensors import SENSORS
from inbox.model import Mark, MarkAction
from tests.conftest import TIMEOUT, RunningHub, http_client

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.usefixtures("demo_bundles")]

RECOVERY_LIMIT = 3
EDITOR_TEXT = """(content) => [...content.querySelectorAll('.cm-line')].map((line) => {
    const copy = line.cloneNode(true)
    copy.querySelectorAll('.cm-ySelectionCaret').forEach((caret) => caret.remove())
    return copy.textContent
}).join('\\n')"""
"""The text an editor shows, without the others' cursors (widgets inside the lines, with their names)."""


class Person:
    """One person's page, with what it logged as errors."""

    def __init__(self, page: Any, name: str) -> None:
        self.page, self.name = page, name
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"exception: {exc}"))
        page.on("console", lambda msg: msg.type == "error" and self.errors.append(msg.text))

    def state(self, **attrs: str) -> Any:
        selector = "".join(f'[data-{k}="{v}"]' for k, v in attrs.items())
        return self.page.locator(f'[data-testid="conn-state"]{selector}')

    def person(self, user: str) -> Any:
        return self.page.locator(f'[data-testid="person"][data-user="{user}"]')

    def message(self, text: str) -> Any:
        return self.page.get_by_test_id("message").filter(has_text=text)

    async def send(self, text: str) -> None:
        box = self.page.get_by_test_id("message-input")
        await box.fill(text)
        await box.press("Enter")
        await self.page.locator('[data-testid="message-input"]:placeholder-shown').wait_for()


async def join(new_context: Any, hub: RunningHub, path: str, name: str) -> Person:
    ctx = await new_context()
    person = Person(await ctx.new_page(), name)
    await person.page.goto(f"{hub.http}{path}")
    await person.page.get_by_test_id("name-input").fill(name)
    await person.page.get_by_test_id("join").click()
    await person.state(state="connected").wait_for()
    return person


async def shot(person: Person, artifacts: Path, name: str) -> None:
    await person.page.screenshot(path=str(artifacts / f"{name}.png"))


async def dev_hub(browser_hubs: Any, tmp_path: Path, **overrides: Any) -> RunningHub:
    """A hub as development mode configures it (hub.config.load_config): the tests' open unnamed namespace
    is development mode's, tokens may write documents, and every connection of a user is subscribed to its
    personal channel (personal:#<user>, development mode's namespace)."""
    hub: RunningHub = await browser_hubs(
        dev_mode=True,
        doc_token_access="write",
        doc_anonymous_access="write",
        data_dir=str(tmp_path),
        user_subscribe_to_personal=True,
        user_personal_channel_namespace=DEV_PERSONAL_NAMESPACE,
        namespaces={DEV_PERSONAL_NAMESPACE: DEV_PERSONAL_OPTIONS, DEV_SENSORS_NAMESPACE: DEV_SENSORS_OPTIONS},
        **overrides,
    )
    return hub


async def test_chat_presence_messages_typing_and_a_direct_message(
    browser_hubs: Any, new_context: Any, artifacts: Path, tmp_path: Path
) -> None:
    hub = await dev_hub(browser_hubs, tmp_path)
    alice, bob, carol = [await join(new_context, hub, "/demo/chat", n) for n in ("Alice", "Bob", "Carol")]
    for viewer in (alice, bob, carol):
        for user in ("alice", "bob", "carol"):
            await viewer.person(user).wait_for()  # names from conn_info, live from join pushes
    assert "Carol" in (await alice.person("carol").text_content() or "")

    await alice.send("Hello everyone")
    await bob.message("Hello everyone").wait_for()
    await carol.message("Hello everyone").wait_for()
    await bob.send("Hi Alice")
    await alice.message("Hi Alice").wait_for()

    await bob.page.get_by_test_id("message-input").press_sequentially("Writing a long")
    typing = alice.page.get_by_test_id("typing")
    await typing.get_by_text("Bob is typing…").wait_for()
    await carol.page.get_by_test_id("typing").get_by_text("Bob is typing…").wait_for()
    assert await bob.page.get_by_test_id("typing").text_content() == ""  # not shown to the typist
    await shot(alice, artifacts, "chat-room")
    await bob.page.get_by_test_id("message-input").press("Enter")
    await alice.message("Writing a long").wait_for()
    await alice.page.locator('[data-testid="typing"]:empty').wait_for()  # the message ends the signal

    # A direct message: alice -> bob on dm#alice,bob.
    await alice.person("bob").get_by_role("button").click()
    assert await alice.page.get_by_test_id("title").text_content() == "Bob"
    await alice.send("psst, only for Bob")
    unread = bob.page.locator('[data-testid="dm"][data-peer="alice"] [data-testid="unread"]')
    await unread.wait_for()
    assert await unread.text_content() == "1"
    await bob.page.locator('[data-testid="dm"][data-peer="alice"]').click()
    await bob.message("psst, only for Bob").wait_for()
    await shot(bob, artifacts, "chat-direct-message")
    # Carol gets what alice publishes after the DM, and never the DM itself: she is not on its channel.
    await alice.page.locator('[data-testid="room"][data-room="general"]').click()
    await alice.send("Back in the room")
    await carol.message("Back in the room").wait_for()
    assert await carol.page.get_by_text("psst").count() == 0
    assert await carol.page.locator('[data-testid="dm"]').count() == 0
    dm = await hub.sb.node.presence.get(("", "dm#alice,bob"))
    assert sorted(info.user for info in dm.values()) == ["alice", "bob"]
    for person in (alice, bob, carol):
        assert person.errors == [], (person.name, person.errors)


async def test_chat_recovers_what_it_missed_or_asks_for_a_reload(
    browser_hubs: Any, new_context: Any, artifacts: Path, tmp_path: Path
) -> None:
    hub = await dev_hub(browser_hubs, tmp_path, client_recovery_max_publication_limit=RECOVERY_LIMIT)
    dora = await join(new_context, hub, "/demo/chat#recovery", "Dora")
    await dora.person("dora").wait_for()
    channel = "chat.recovery"
    async with http_client(base_url=hub.http, timeout=TIMEOUT) as api:

        async def publish(text: str) -> None:
            r = await api.post("/api/publish", json={"channel": channel, "data": {"text": text}})
            assert r.status_code == 200 and "result" in r.json(), r.text

        # 1. The server closes the connection with a reconnect code (3000-3499): the SDK comes back and
        # the page shows what was published meanwhile, once.
        r = await api.post(
            "/api/disconnect", json={"user": "dora", "disconnect": {"code": 3001, "reason": "x"}}
        )
        assert r.status_code == 200, r.text
        await publish("while reconnecting 1")
        await publish("while reconnecting 2")
        await dora.state(state="connected", connects="2").wait_for()
        for text in ("while reconnecting 1", "while reconnecting 2"):
            await dora.message(text).wait_for()
            assert await dora.message(text).count() == 1

        # 2. The network goes away: what was published meanwhile is recovered from history, exactly.
        await dora.page.context.set_offline(True)
        await dora.state(state="connecting").wait_for()
        await publish("while offline 1")
        await publish("while offline 2")
        await dora.page.context.set_offline(False)
        await dora.state(state="connected", connects="3").wait_for()
        await dora.page.locator('[data-testid="recovery"][data-recovered="2"]').wait_for()
        for text in ("while offline 1", "while offline 2"):
            assert await dora.message(text).count() == 1
        assert await dora.page.get_by_test_id("banner").is_hidden()

        # 3. Away for longer than recovery reaches: recovered false, and the banner asks for a reload.
        await dora.page.context.set_offline(True)
        await dora.state(state="connecting").wait_for()
        for i in range(RECOVERY_LIMIT + 1):
            await publish(f"missed {i}")
        await dora.page.context.set_offline(False)
        await dora.page.get_by_test_id("banner").wait_for()
        await shot(dora, artifacts, "chat-recovery-banner")
        await dora.page.get_by_test_id("reload").click()
        await dora.state(state="connected").wait_for()  # the same name, from the window's storage
        for i in range(RECOVERY_LIMIT + 1):
            await dora.message(f"missed {i}").wait_for()  # the room as it is now, from history
        assert await dora.page.get_by_test_id("banner").is_hidden()
    assert dora.errors == [] or all("ERR_INTERNET_DISCONNECTED" in e for e in dora.errors), dora.errors


async def test_editor_converges_with_remote_cursors_and_renews_its_token(
    browser_hubs: Any, new_context: Any, artifacts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tokens expire while the test runs (plus client_expired_close_delay, 1 s in the tests' config): the
    # hub closes the document with 4401 and the page connects again with a new token.
    monkeypatch.setattr(demos, "TOKEN_TTL", 3)
    hub = await dev_hub(browser_hubs, tmp_path)
    path = "/demo/editor?doc=notes/meeting"
    alice = await join(new_context, hub, path, "Alice")
    bob = await join(new_context, hub, path, "Bob")
    monkeypatch.setattr(demos, "TOKEN_TTL", 3600)  # the renewed tokens last: one reconnect each
    editors = {p.name: p.page.locator(".cm-content") for p in (alice, bob)}
    for person in (alice, bob):
        await person.page.locator('[data-testid="peer"][data-user="alice"]').wait_for()
        await person.page.locator('[data-testid="peer"][data-user="bob"]').wait_for()
        await editors[person.name].click()

    # Both type at once.
    await asyncio.gather(
        alice.page.keyboard.type("Alice was here. "),
        bob.page.keyboard.type("Bob too. "),
    )
    for person in (alice, bob):
        for text in ("Alice was here. ", "Bob too. "):
            await editors[person.name].filter(has_text=text).wait_for()
    alice_text = await editors["Alice"].evaluate(EDITOR_TEXT)
    assert "Alice was here. " in alice_text and "Bob too. " in alice_text
    assert alice_text == await editors["Bob"].evaluate(EDITOR_TEXT)
    content = await hub.sb.documents.content("notes/meeting")
    assert content["text"] == alice_text

    # The token expired: each page connected again with a fresh one, and editing goes on.
    await alice.state(state="connected", connects="2").wait_for()
    await bob.state(state="connected", connects="2").wait_for()
    await alice.page.keyboard.press("Control+End")
    await alice.page.keyboard.type("After the new token.")
    await editors["Bob"].filter(has_text="After the new token.").wait_for()
    assert (await hub.sb.documents.content("notes/meeting"))["text"].endswith("After the new token.")

    # Each page shows the other's cursor with its name (awareness), after the reconnect too.
    await alice.page.locator(".cm-ySelectionInfo").filter(has_text="Bob").wait_for()
    await bob.page.locator(".cm-ySelectionInfo").filter(has_text="Alice").wait_for()
    await shot(alice, artifacts, "editor-alice")
    await shot(bob, artifacts, "editor-bob")
    for person in (alice, bob):
        assert person.errors == [], (person.name, person.errors)


async def test_the_landing_page_leads_to_the_demos(
    browser_hubs: Any, context: Any, artifacts: Path, tmp_path: Path
) -> None:
    hub = await dev_hub(browser_hubs, tmp_path)
    page = await context.new_page()
    await page.goto(f"{hub.http}/")
    assert await page.get_by_test_id("demo-link").count() == len(demos.DEMOS)
    assert await page.get_by_test_id("build-note").count() == 0
    await page.screenshot(path=str(artifacts / "landing.png"), full_page=True)
    await page.get_by_role("link", name="Chat").click()
    await page.get_by_test_id("join-form").wait_for()
    assert page.url == f"{hub.http}/demo/chat"


def js_number(value: float) -> str:
    """``value`` as the page writes it (JavaScript's ``String(number)``): 49.0 is "49", where Python says
    "49.0" (a reading that rounds to a whole number failed this test about once in 15 runs)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


async def test_the_sensor_dashboard_shows_every_sensors_latest_value_at_once(
    browser_hubs: Any, context: Any, artifacts: Path, tmp_path: Path
) -> None:
    hub = await dev_hub(browser_hubs, tmp_path)
    simulator = hub.sb.demos.simulator
    async with asyncio.timeout(TIMEOUT):
        await simulator.until(3 * len(SENSORS))  # the hub's own feed: several readings of every sensor
    await simulator.pause()  # nothing new from here: what the page shows comes from the hub's cache
    latest = {key: js_number(reading["value"]) for key, reading in simulator.latest.items()}
    viewer = Person(await context.new_page(), "viewer")
    await viewer.page.goto(f"{hub.http}/demo/sensors")
    await viewer.state(state="connected").wait_for()
    await viewer.page.locator('[data-testid="feed"][data-recovered="true"]').wait_for()
    for key, value in latest.items():  # each the newest reading, once, without a new one published
        card = f'[data-testid="sensor"][data-sensor="{key}"]'
        await viewer.page.locator(f'{card}[data-value="{value}"][data-updates="1"]').wait_for()
    assert await viewer.page.get_by_test_id("sensor").count() == len(SENSORS)
    await shot(viewer, artifacts, "sensors-open")

    simulator.resume()  # live: every sensor moves on, and the readings after the first come as deltas
    await viewer.page.wait_for_function(
        """(n) => [...document.querySelectorAll('[data-testid=sensor]')]
            .filter((card) => Number(card.dataset.updates) >= 3).length === n""",
        arg=len(SENSORS),
    )
    await viewer.page.wait_for_function("() => Number(document.getElementById('stats').dataset.deltas) > 0")
    lines = viewer.page.locator("#chart polyline")
    assert await lines.count() == len(SENSORS)
    assert len((await lines.first.get_attribute("points") or "").split()) >= 3
    await shot(viewer, artifacts, "sensors-live")
    assert viewer.errors == []


class Bell:
    """One device's bell page."""

    def __init__(self, person: Person) -> None:
        self.person, self.page = person, person.page

    def badge(self, unread: int) -> Any:
        return self.page.locator(f'[data-testid="badge"][data-unread="{unread}"]')

    def item(self, title: str) -> Any:
        return self.page.get_by_test_id("item").filter(has_text=title)

    async def shows(self, unread: int) -> None:
        # An empty badge is hidden, so wait for it to be there rather than visible.
        await self.badge(unread).wait_for(state="attached" if unread == 0 else "visible")


async def test_the_bell_keeps_every_device_of_a_user_exact(
    browser_hubs: Any, new_context: Any, artifacts: Path, tmp_path: Path
) -> None:
    hub = await dev_hub(browser_hubs, tmp_path)
    phone, laptop = [Bell(await join(new_context, hub, "/demo/bell", "Alice")) for _ in range(2)]
    for device in (phone, laptop):
        await device.page.get_by_test_id("empty").wait_for()
        await device.page.locator('[data-testid="badge"][data-version="0"]').wait_for(state="attached")
        assert await device.page.get_by_test_id("personal").text_content() == "personal:#alice"

    # Sent from one device, it shows on both, with the badge.
    await phone.page.get_by_test_id("send").click()
    title = demos.SAMPLES[0][0]
    for device in (phone, laptop):
        await device.item(title).wait_for()
        await device.shows(1)
    # Marked read on the other device: the first one's badge and list follow.
    await laptop.item(title).get_by_test_id("mark-read").click()
    await phone.shows(0)
    await phone.page.locator('[data-testid="item"][data-read="true"]').filter(has_text=title).wait_for()

    # The backend's notifications arrive live; "mark all read" on one device clears both badges.
    for i in range(3):
        await hub.sb.notify("comment", ["alice"], title=f"From the backend {i}")
    for device in (phone, laptop):
        await device.item("From the backend 2").wait_for()
        await device.shows(3)
    await shot(phone.person, artifacts, "bell-phone")
    await shot(laptop.person, artifacts, "bell-laptop")
    await phone.page.get_by_test_id("mark-all-read").click()
    await laptop.shows(0)
    assert await laptop.page.locator('[data-testid="item"][data-read="false"]').count() == 0

    # Page by page: the first page after a reload, then the older ones through the cursor.
    for i in range(22):
        await hub.sb.notify("digest", ["alice"], title=f"Digest {i}")
    await laptop.shows(22)
    await laptop.page.reload()
    await laptop.person.state(state="connected").wait_for()
    await laptop.page.get_by_test_id("item").nth(19).wait_for()
    assert await laptop.page.get_by_test_id("item").count() == 20
    assert await laptop.page.get_by_test_id("item").first.text_content() != ""
    await laptop.item("Digest 21").wait_for()  # newest first
    await laptop.page.get_by_test_id("older").click()
    await laptop.page.get_by_test_id("item").nth(25).wait_for()  # 1 + 3 + 22
    assert await laptop.page.get_by_test_id("older").is_hidden()

    # A device that was offline for more changes than its personal channel's history keeps (10), so the
    # SDK cannot recover them: the page reads counts and list again at the reconnect, and is exact.
    await phone.page.context.set_offline(True)
    await phone.person.state(state="connecting").wait_for()
    await hub.sb.notifications.mark("", "alice", Mark(MarkAction.READ, everything=True))
    for i in range(DEV_PERSONAL_OPTIONS.history_size + 1):
        await hub.sb.notify("comment", ["alice"], title=f"While the phone was away {i}")
    await phone.page.context.set_offline(False)
    await phone.person.state(state="connected", connects="2").wait_for()
    await phone.item("While the phone was away 10").wait_for()
    await phone.shows(11)
    assert await phone.page.locator('[data-testid="item"][data-read="false"]').count() == 11
    counts = await hub.sb.notifications.counts("", "alice")
    await phone.page.locator(f'[data-testid="badge"][data-version="{counts.version}"]').wait_for()
    await shot(phone.person, artifacts, "bell-phone-reconnected")
    for device in (phone, laptop):
        errors = [e for e in device.person.errors if "ERR_INTERNET_DISCONNECTED" not in e]
        assert errors == [], errors


async def test_chat_shows_a_streamed_reply_growing_and_finished_once(
    browser_hubs: Any, new_context: Any, artifacts: Path, tmp_path: Path
) -> None:
    """A server-side agent streams a reply into a room (development mode sets ``streams``): the page shows
    one message that grows and is finished once; a page opened mid-stream shows the whole text (it is sent
    the text so far first); a page opened afterwards has it once, from history."""
    hub = await dev_hub(browser_hubs, tmp_path)
    node = hub.sb.node
    channel = parse_channel("chat.general")
    opts = node.namespaces.options_for(channel)
    agent = ClientInfo("agent", "agent-1", orjson.dumps({"name": "Agent"}))
    words = ["Streamed ", "replies ", "grow ", "in ", "place, ", "then ", "finish."]

    async def say(seq: int) -> None:
        fields: dict[str, Any] = {"id": "reply-1", "seq": seq}
        if seq == len(words) - 1:
            fields["final"] = True
        data = orjson.dumps({"stream": fields, "text": words[seq]})
        await node.publish_to("", channel, opts, data, info=agent)

    alice = await join(new_context, hub, "/demo/chat", "Alice")
    await alice.page.locator('[data-testid="person"][data-user="alice"]').wait_for()  # subscribed
    reply = '[data-testid="message"][data-stream="reply-1"]'
    for seq in range(3):
        await say(seq)
    await (
        alice.page.locator(f'{reply}[data-streaming="true"]')
        .filter(has_text="Streamed replies grow")
        .wait_for()
    )
    await shot(alice, artifacts, "chat-stream-growing")
    bob = await join(new_context, hub, "/demo/chat", "Bob")  # mid-stream
    await bob.page.locator(reply).filter(has_text="Streamed replies grow").wait_for()
    for seq in range(3, len(words)):
        await say(seq)
    whole = "".join(words)
    for person in (alice, bob):
        await person.page.locator(f'{reply}[data-streaming="false"]').filter(has_text=whole).wait_for()
        assert await person.page.locator(reply).count() == 1
    await shot(bob, artifacts, "chat-stream-finished")
    carol = await join(new_context, hub, "/demo/chat", "Carol")  # afterwards: from history
    await carol.page.locator(f'{reply}[data-streaming="false"]').filter(has_text=whole).wait_for()
    assert await carol.page.locator(reply).count() == 1
    history = await node.broker.history(("", "chat.general"))
    assert [orjson.loads(p.data)["text"] for p in history.publications] == [whole]
    for person in (alice, bob, carol):
        assert person.errors == [], (person.name, person.errors)


async def test_a_person_in_the_chat_demo_mentions_the_agent_then_watches_it_write_in_the_editor(
    browser_hubs: Any, new_context: Any, artifacts: Path, tmp_path: Path
) -> None:
    """Issue 14's "done means", with examples/agent_assistant.py as ``python -m`` runs it beside ``make
    run`` (development mode's bot key, no token, no API key): the chat shows the agent as a bot, its
    reply to a mention grows and is finished once; asked to write into a document, it does so line by
    line while the editor page shows its cursor with its name; the cursor goes after it is done."""
    hub = await dev_hub(
        browser_hubs, tmp_path, bot_token_hmac_secret_key=DEV_BOT_SECRET, doc_edit_presence_linger=0.5
    )
    agent = Assistant(hub.url, pace=0.02, line_pace=0.3, timeout=TIMEOUT)
    await agent.start()
    try:
        async with asyncio.timeout(TIMEOUT):
            await agent.ready()
        alice = await join(new_context, hub, "/demo/chat", "Alice")
        await alice.person("assistant").get_by_test_id("bot-badge").wait_for()
        await alice.send("@assistant hello there")
        answer = Model().answer("Alice", "@assistant hello there")
        reply = alice.page.locator('[data-testid="message"][data-user="assistant"][data-streaming="false"]')
        await reply.filter(has_text=answer).wait_for()
        await shot(alice, artifacts, "agent-chat-reply")

        editor = await join(new_context, hub, "/demo/editor?doc=notes", "Alice")  # her other window
        await alice.send("@assistant write this into notes")
        caret = editor.page.locator(".cm-ySelectionInfo").filter(has_text="Assistant")
        await caret.wait_for()
        await shot(editor, artifacts, "agent-editor-cursor")
        await (
            editor.page.locator(".cm-content")
            .filter(has_text="- Alice: @assistant write this into notes")
            .wait_for()
        )
        await reply.filter(has_text="Done: 4 lines written into “notes”.").wait_for()
        await caret.wait_for(state="detached")
        for person in (alice, editor):
            assert person.errors == [], (person.name, person.errors)
    finally:
        await agent.close()
