"""Email as a delivery channel, against a real SMTP server (aiosmtpd on a free port): a notification
becomes one message per recipient from its category's template, values escaped in HTML and kept on one
line in headers; a 4xx answer is retried, a refused recipient is a dead letter and a failed delivery in
the notification's status."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from hub.codes import ConfigError
from hub.outbound.routes import Routes
from hub.outbound.settings import EmailSettings, parse_email
from inbox.inbox import InboxStore
from inbox.model import ALL_CHANNELS, DeliveryChannel, DeliveryState, Notification
from inbox.outbox import Task, TaskState, Topic
from inbox.preferences import CategoryPolicy, PreferencePolicy
from tests.conftest import TIMEOUT
from tests.ports import free_port
from tests.workers.conftest import MakeStore
from workers.email import EmailSender, Undeliverable, render
from workers.outbox import OutboxWorker


class Mailbox:
    """aiosmtpd's handler: keeps what it accepts; ``refuse`` maps an address to the answer it gets (for
    ``times`` RCPTs, then it is accepted)."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.refuse: dict[str, tuple[str, int]] = {}
        self.arrived = asyncio.Event()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        answer, times = self.refuse.get(address, ("", 0))
        if times:
            self.refuse[address] = (answer, times - 1)
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


def settings(smtp_port: int, **extra: Any) -> EmailSettings:
    return parse_email(
        {
            "host": "127.0.0.1",
            "port": smtp_port,
            "security": "none",
            "from": "Switchboard <hub@example.com>",
            "to": "${user}@example.com",
            "timeout": 2,
            "templates": {
                "comment": {
                    "subject": "New comment on $data_post: $title",
                    "text": "$body\n\nOpen: $url\n($category for $user, $$5 off)",
                    "html": "<p>$body</p><a href='$url'>open</a>",
                },
                "default": {"subject": "[$category] $title", "text": "$body"},
            },
            **extra,
        }
    )


@pytest.fixture
async def deliver() -> AsyncIterator[Any]:
    workers: list[OutboxWorker] = []

    def start(store: InboxStore, email: EmailSettings) -> OutboxWorker:
        worker = OutboxWorker(store, [EmailSender(email, store.origin)], name="mailer")
        worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        await worker.stop()


async def settle(store: InboxStore) -> None:
    async with asyncio.timeout(TIMEOUT):
        while await store.tasks(state=TaskState.PENDING, limit=1):  # noqa: ASYNC110 - no event across the worker
            await asyncio.sleep(0.05)  # the worker's records land in the store: poll it


EMAIL_ON = PreferencePolicy(default=CategoryPolicy(channels=ALL_CHANNELS))
"""Email is opt-in by default (``inbox.preferences``): these categories send it."""


def note(*users: str, category: str = "comment", **kw: Any) -> Notification:
    return Notification("", users, category, {"post": "Roadmap"}, **kw)


async def test_a_notification_is_one_message_per_recipient_from_its_categorys_template(
    make_store: MakeStore, smtp: tuple[Mailbox, int], deliver: Any
) -> None:
    mailbox, port = smtp
    email = settings(port)
    store = await make_store(Routes([], email), policy=EMAIL_ON)
    result = await store.notify(
        note(
            "alice", "bob", title="Hi <all>", body="a < b & c\nsecond line", url="https://x.example/p?a=1&b=2"
        )
    )
    await store.notify(note("carol", category="billing", title="Invoice", body="due"))
    deliver(store, email)
    await settle(store)
    by_to = {str(m["To"]): m for m in mailbox.messages}
    assert set(by_to) == {"alice@example.com", "bob@example.com", "carol@example.com"}
    alice = by_to["alice@example.com"]
    assert alice["From"] == "Switchboard <hub@example.com>"
    assert alice["Subject"] == "New comment on Roadmap: Hi <all>"
    text = alice.get_body(("plain",))
    html = alice.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content().replace("\r\n", "\n") == (
        "a < b & c\nsecond line\n\nOpen: https://x.example/p?a=1&b=2\n(comment for alice, $5 off)\n"
    )
    assert html.get_content().replace("\r\n", "\n").strip() == (
        "<p>a &lt; b &amp; c\nsecond line</p><a href='https://x.example/p?a=1&amp;b=2'>open</a>"
    )
    assert alice["Message-ID"].startswith(f"<msg_{store.origin}_")
    assert by_to["carol@example.com"]["Subject"] == "[billing] Invoice"  # the default template
    status = await store.notification_status("", result.notification_id)
    emails = {
        r.user: d.state for r in status.recipients for d in r.deliveries if d.channel is DeliveryChannel.EMAIL
    }
    assert emails == {"alice": DeliveryState.SENT, "bob": DeliveryState.SENT}


async def test_a_4xx_answer_is_retried_and_a_refused_recipient_is_a_failed_delivery(
    make_store: MakeStore, smtp: tuple[Mailbox, int], deliver: Any
) -> None:
    mailbox, port = smtp
    mailbox.refuse = {
        "alice@example.com": ("451 4.3.0 try again later", 2),
        "bob@example.com": ("550 5.1.1 no such mailbox", 99),
    }
    email = settings(port)
    store = await make_store(Routes([], email), policy=EMAIL_ON)
    result = await store.notify(note("alice", "bob", title="t"))
    deliver(store, email)
    await settle(store)
    assert [str(m["To"]) for m in mailbox.messages] == ["alice@example.com"]
    [dead] = await store.tasks(state=TaskState.DEAD)
    attempts = await store.attempts(dead.id)
    assert len(attempts) == 1 and attempts[0].status == 550 and "no such mailbox" in attempts[0].error
    [done] = await store.tasks(state=TaskState.DONE)
    assert done.attempts == 3  # 451, 451, accepted
    status = await store.notification_status("", result.notification_id)
    bob = next(r for r in status.recipients if r.user == "bob")
    [failed] = [d for d in bob.deliveries if d.channel is DeliveryChannel.EMAIL]
    assert failed.state is DeliveryState.FAILED and "no such mailbox" in failed.error


def task(payload: dict[str, Any]) -> Task:
    return Task(1, 2, "email", "", Topic.NOTIFICATION_CREATED, payload, 1, 0.0, 0.0)


def test_a_user_that_makes_no_address_is_undeliverable_and_values_stay_out_of_headers() -> None:
    email = settings(25, to="$user")
    for user in ("", "alice", "a b@example.com", "<x>@y", "a@b@c"):
        with pytest.raises(Undeliverable):
            render(email, task({"user": user, "category": "comment"}))
    message = render(
        email,
        task(
            {"user": "a@example.com", "category": "comment", "title": "t", "data": {"post": "x\r\nBcc: e@f"}}
        ),
    )
    assert message["Subject"] == "New comment on x Bcc: e@f: t"
    assert message["Bcc"] is None


@pytest.mark.parametrize(
    "bad",
    [
        {"templates": {"comment": {"subject": "$title\nBcc: x", "text": "t"}}},
        {"templates": {"comment": {"subject": "${title.__class__}", "text": "t"}}},
        {"templates": {"comment": {"subject": "$unknown", "text": "t"}}},
        {"templates": {"comment": {"subject": "a $ b", "text": "t"}}},
        {"templates": {"comment": {"text": "t"}}},
        {"templates": {"bad name!": {"subject": "s", "text": "t"}}},
        {"templates": {"comment": {"subject": "s", "text": "t", "python": "x"}}},
        {"security": "ssl"},
        {"smtp_port": 0},
        {"smtp_port": "25"},
        {"timeout": "forever"},
        {"max_concurrency": 0},
        {"to": "$user\n"},
        {"unknown": 1},
    ],
)
def test_bad_email_settings_are_refused_at_start_up(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        settings(**{"smtp_port": 25, **bad})
