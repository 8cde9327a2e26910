"""The console in a real browser (Debian's Chromium through Playwright, tests/browser.py): signed in, it
shows a user's connection join and leave live, marks a bot's presence with a "bot" badge, and disconnects
that user with a code the user's own client (the official centrifuge-python SDK) receives; a read-only
session cannot act (its buttons are disabled and the endpoint refuses); failed sign-ins are throttled; a
webhook's dead letter shows in the Notifications view with its attempts, and a replay delivers it to the
real receiver once it recovers. Each page is saved as a screenshot."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from centrifuge import Client

from hub.outbound.settings import parse_webhooks
from tests.conftest import TIMEOUT, token
from tests.hub.bots.conftest import BOT_SECRET, bot_token
from tests.hub.test_sdk_channels import Rec
from tests.workers.conftest import SECRET
from tests.workers.receiver import Receiver

pytestmark = pytest.mark.asyncio(loop_scope="session")

ADMIN = "admin-password-for-tests"
READONLY = "readonly-password-for-tests"


async def console_hub(browser_hubs: Any, tmp_path: Path) -> Any:
    return await browser_hubs(
        admin_password=ADMIN,
        admin_readonly_password=READONLY,
        data_dir=str(tmp_path),
        bot_token_hmac_secret_key=BOT_SECRET,
    )


async def sign_in(context: Any, hub: Any, password: str) -> Any:
    page = await context.new_page()
    await page.goto(f"{hub.http}/admin")
    await page.get_by_test_id("password").fill(password)
    await page.get_by_test_id("sign-in").click()
    await page.get_by_test_id("role").wait_for()
    return page


async def shot(page: Any, artifacts: Path, name: str) -> None:
    await page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


async def test_console_watches_a_user_live_and_disconnects_it(
    browser_hubs: Any, context: Any, artifacts: Path, tmp_path: Path
) -> None:
    hub = await console_hub(browser_hubs, tmp_path)
    page = await sign_in(context, hub, ADMIN)
    assert await page.get_by_test_id("role").text_content() == "admin"
    await page.get_by_test_id("node-row").first.wait_for()
    await shot(page, artifacts, "console-cluster")

    await page.goto(f"{hub.http}/admin/#/channel?name=chat:room")
    await page.get_by_test_id("presence").get_by_text("0 connection(s)").wait_for()
    rec = Rec()
    client = Client(hub.url, token=token("alice", info={"name": "Alice"}), events=rec, timeout=TIMEOUT)
    try:
        await client.connect()
        await client.ready(TIMEOUT)
        sub = client.new_subscription("chat:room")
        await sub.subscribe()
        await sub.ready(TIMEOUT)
        # The join appears without a reload: the presence diff came over the page's event stream.
        alice_row = page.locator('[data-testid="presence-row"][data-user="alice"]')
        await alice_row.wait_for()
        # A bot joins: its row has the "bot" badge, alice's has none.
        bot = Client(hub.url, token=bot_token("helper"), timeout=TIMEOUT)
        await bot.connect()
        await bot.new_subscription("chat:room").subscribe()
        helper_row = page.locator('[data-testid="presence-row"][data-user="helper"]')
        await helper_row.get_by_test_id("bot-badge").wait_for()
        assert await alice_row.get_by_test_id("bot-badge").count() == 0
        await shot(page, artifacts, "console-presence-bot")
        await bot.disconnect()
        await helper_row.wait_for(state="detached")
        await sub.publish({"text": "hello from alice"})
        await page.get_by_test_id("tail-item").get_by_text("hello from alice").wait_for()
        await shot(page, artifacts, "console-channel")

        await page.get_by_test_id("nav-users").click()
        await page.get_by_test_id("user").fill("alice")
        await page.get_by_test_id("lookup").click()
        row = page.locator(f'[data-testid="connection-row"][data-client="{client.client_id}"]')
        await row.wait_for()
        assert "python" in (await row.text_content() or "")  # the SDK's name from its connect request
        await shot(page, artifacts, "console-users")
        await page.get_by_test_id("disconnect-code").fill("4501")
        await row.get_by_test_id("disconnect").click()
        kind, ctx = await rec.next("disconnected")
        assert ctx.code == 4501  # 4500-4999: final, the SDK does not reconnect
        await page.get_by_test_id("connection-count").get_by_text("0 connection(s)").wait_for()

        # The leave shows on the inspector, live.
        await page.goto(f"{hub.http}/admin/#/channel?name=chat:room")
        await page.get_by_test_id("presence").get_by_text("0 connection(s)").wait_for()

        await page.get_by_test_id("nav-audit").click()
        await page.get_by_test_id("audit-row").filter(has_text="disconnect").first.wait_for()
        await shot(page, artifacts, "console-audit")
    finally:
        await client.disconnect()


async def test_read_only_console_cannot_act(
    browser_hubs: Any, context: Any, artifacts: Path, tmp_path: Path
) -> None:
    hub = await console_hub(browser_hubs, tmp_path)
    rec = Rec()
    client = Client(hub.url, token=token("bob"), events=rec, timeout=TIMEOUT)
    await client.connect()
    await client.ready(TIMEOUT)
    try:
        page = await sign_in(context, hub, READONLY)
        assert await page.get_by_test_id("role").text_content() == "read-only"
        await page.get_by_test_id("readonly-banner").wait_for()
        await page.goto(f"{hub.http}/admin/#/users?user=bob")
        row = page.locator(f'[data-testid="connection-row"][data-client="{client.client_id}"]')
        await row.wait_for()
        assert await row.get_by_test_id("disconnect").is_disabled()
        assert await page.get_by_test_id("disconnect-all").is_disabled()
        await shot(page, artifacts, "console-readonly-users")
        # The endpoint refuses too, even with the session's CSRF token.
        status = await page.evaluate(
            """async () => {
                const s = await (await fetch("api/session")).json();
                const headers = {"content-type": "application/json", "x-csrf-token": s.csrf};
                const body = JSON.stringify({action: "disconnect", user: "bob"});
                const r = await fetch("api/action", {method: "POST", headers, body});
                return r.status;
            }"""
        )
        assert status == 403
        assert client.state.value == "connected"
    finally:
        await client.disconnect()


async def test_failed_sign_ins_are_throttled(
    browser_hubs: Any, context: Any, artifacts: Path, tmp_path: Path
) -> None:
    hub = await console_hub(browser_hubs, tmp_path)
    page = await context.new_page()
    await page.goto(f"{hub.http}/admin/")
    error = page.get_by_test_id("login-error")
    for attempt in range(5):
        await page.get_by_test_id("password").fill(f"wrong-{attempt}")
        await page.get_by_test_id("sign-in").click()
        await error.get_by_text("wrong password").wait_for()
        await page.evaluate("document.querySelector('[data-testid=login-error]').textContent = ''")
    await page.get_by_test_id("password").fill(ADMIN)  # even the right one waits now
    await page.get_by_test_id("sign-in").click()
    await error.get_by_text("Too many failed sign-ins").wait_for()
    await shot(page, artifacts, "console-throttled")
    assert await page.get_by_test_id("role").count() == 0


async def test_documents_view(browser_hubs: Any, context: Any, artifacts: Path, tmp_path: Path) -> None:
    hub = await console_hub(
        browser_hubs,
        tmp_path,
    )
    async with hub.sb.documents.open("notes/plan") as doc:
        from pycrdt import Text

        text = doc.get("body", type=Text)
        with doc.transaction():
            text += "ship the console"
    await asyncio.sleep(0)
    page = await sign_in(context, hub, ADMIN)
    await page.goto(f"{hub.http}/admin/#/document?name=notes/plan")
    await page.get_by_test_id("doc-content").get_by_text("ship the console").wait_for()
    await shot(page, artifacts, "console-document")


async def test_a_dead_letter_is_shown_and_replayed(
    browser_hubs: Any, context: Any, artifacts: Path, tmp_path: Path
) -> None:
    receiver = await Receiver(SECRET).start()
    receiver.plan = lambda _id, _n: "refuse"  # a 400: a dead letter at once
    try:
        hook = {"name": "backend", "url": receiver.url, "secret": SECRET, "events": ["notification.created"]}
        hub = await browser_hubs(
            admin_password=ADMIN,
            admin_readonly_password=READONLY,
            data_dir=str(tmp_path),
            webhooks=parse_webhooks([hook]),
        )
        await hub.sb.notify("comment", ["alice"], title="Your report is ready")
        await receiver.wait_for(lambda: len(receiver.requests) == 1)

        # A read-only session sees the dead letter and cannot replay it.
        viewer = await sign_in(context, hub, READONLY)
        await viewer.goto(f"{hub.http}/admin/#/notifications")
        dead_row = viewer.get_by_test_id("dead-row")
        await dead_row.wait_for()  # the page refreshes itself until the refusal is recorded
        assert await dead_row.get_by_test_id("replay").is_disabled()
        assert await viewer.get_by_test_id("replay-all").is_disabled()
        await shot(viewer, artifacts, "console-notifications-readonly")
        await viewer.close()
        await context.clear_cookies()  # sign in again, as an admin

        page = await sign_in(context, hub, ADMIN)
        await page.goto(f"{hub.http}/admin/#/notifications")
        dead_row = page.get_by_test_id("dead-row")
        await dead_row.wait_for()
        assert "HTTP 400" in (await dead_row.text_content() or "")
        await page.get_by_test_id("tenant-counts").get_by_text("1").first.wait_for()
        destination = page.locator('[data-testid="destination"][data-destination="webhook:backend"]')
        await destination.locator('[data-testid="delivery-state"][data-state="dead"]').wait_for()
        await shot(page, artifacts, "console-notifications")

        # One delivery: its attempts and payload.
        await dead_row.get_by_role("link").click()
        await page.get_by_test_id("attempt-row").filter(has_text="400").wait_for()
        assert "Your report is ready" in (await page.get_by_test_id("delivery-detail").text_content() or "")
        await shot(page, artifacts, "console-delivery")

        # The receiver recovers; a replay delivers the same event (same webhook-id) once.
        receiver.plan = lambda _id, _n: "ok"
        await page.get_by_test_id("replay-one").click()
        detail = page.get_by_test_id("delivery-detail")
        # The delivery shows again, no longer dead: pending until the worker takes it, then done.
        await detail.locator('dd [data-state="pending"], dd [data-state="done"]').first.wait_for()
        await receiver.wait_for(lambda: len(receiver.processed()) == 1)
        [delivered] = receiver.processed().values()
        assert delivered[0].webhook_id == receiver.requests[0].webhook_id
        await page.get_by_test_id("no-dead-letters").wait_for()
        await destination.locator('[data-testid="delivery-state"][data-state="done"]').wait_for()
        await shot(page, artifacts, "console-notifications-replayed")

        await page.get_by_test_id("nav-audit").click()
        replay = page.get_by_test_id("audit-row").filter(has_text="replay")
        await replay.filter(has_text="ok").first.wait_for()
        await shot(page, artifacts, "console-audit-replay")
    finally:
        await receiver.stop()
