"""The ``[[webhooks]]`` settings (from the file and from ``SWITCHBOARD_WEBHOOKS``), every bad one refused at
start-up with the field named, and the routing they make: topics, tenants, namespaces."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from hub.codes import ConfigError
from hub.config import load_config
from hub.outbound.routes import Routes
from hub.outbound.settings import parse_webhooks
from inbox.model import DeliveryChannel
from inbox.outbox import OutboxEvent, Topic

KEY = b"k" * 32
SECRET = "whsec_" + base64.b64encode(KEY).decode()


def hook(**kw: Any) -> dict[str, Any]:
    return {
        "name": "main",
        "url": "https://hooks.example.com/in",
        "secret": SECRET,
        "events": ["publication"],
        **kw,
    }


def test_webhooks_from_the_file_and_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(
        'token_hmac_secret_key = "x"\n'
        "[[webhooks]]\n"
        'name = "crm"\nurl = "http://127.0.0.1:9/hook"\n'
        f'secret = ["{SECRET}", "whsec_{base64.b64encode(b"n" * 24).decode()}"]\n'
        'events = ["channel.occupied", "channel.vacated"]\nnamespaces = ["chat", ""]\ntenants = ["acme"]\n'
        'max_concurrency = 2\ntimeout = "2500ms"\n'
    )
    cfg = load_config(path, env={})
    [crm] = cfg.webhooks
    assert (crm.name, crm.destination, crm.secrets[0], crm.timeout) == ("crm", "webhook:crm", KEY, 2.5)
    assert crm.events == {Topic.CHANNEL_OCCUPIED, Topic.CHANNEL_VACATED}
    assert crm.namespaces == {"chat", ""} and crm.tenants == {"acme"} and crm.max_concurrency == 2
    assert SECRET[8:] not in repr(cfg)  # secrets stay out of logs and tracebacks
    env = {"SWITCHBOARD_WEBHOOKS": json.dumps([hook()]), "SWITCHBOARD_WORKERS_IN_PROCESS": "false"}
    cfg = load_config(path, env=env)
    assert [h.name for h in cfg.webhooks] == ["main"] and cfg.workers_in_process is False


@pytest.mark.parametrize(
    "bad",
    [
        "not a list",
        [hook(name="")],
        [hook(name="a b")],
        [hook(name="x" * 65)],
        [hook(), hook()],  # the same name twice
        [hook(url="ftp://example.com/")],
        [hook(url="https:///nohost")],
        [hook(url="https://example.com:99999/")],
        [hook(url="https://example.com/#frag")],
        [hook(url="https://example.com/\n")],
        [hook(secret="plain")],
        [hook(secret="whsec_!!!")],
        [hook(secret="whsec_" + base64.b64encode(b"short").decode())],
        [hook(secret=[])],
        [hook(secret=[SECRET] * 5)],
        [hook(events=[])],
        [hook(events=["publication", "everything"])],
        [hook(events="publication")],
        [hook(namespaces=[])],
        [hook(namespaces=[1])],
        [hook(tenants="acme")],
        [hook(max_concurrency=0)],
        [hook(max_concurrency=True)],
        [hook(timeout="0s")],
        [hook(timeout="1h")],
        [hook(retries=3)],
        [None],
        [hook()] * 65,
    ],
)
def test_a_bad_webhook_is_refused_at_start_up(bad: Any) -> None:
    with pytest.raises(ConfigError):
        parse_webhooks(bad)
    with pytest.raises(ConfigError):
        load_config(None, env={"SWITCHBOARD_WEBHOOKS": json.dumps(bad)})


def test_webhooks_from_the_environment_must_be_json() -> None:
    with pytest.raises(ConfigError, match="SWITCHBOARD_WEBHOOKS must be JSON"):
        load_config(None, env={"SWITCHBOARD_WEBHOOKS": "[{"})


def test_outbox_settings_are_checked() -> None:
    for env in (
        {"SWITCHBOARD_OUTBOX_MAX_ATTEMPTS": "0"},
        {"SWITCHBOARD_OUTBOX_RETRY_BASE": "2h"},
        {"SWITCHBOARD_DOCUMENT_CHANGED_MAX_WAIT": "1s"},
        {"SWITCHBOARD_OUTBOX_RETENTION": "0"},
    ):
        with pytest.raises(ConfigError):
            load_config(None, env=env)


def event(topic: Topic, tenant: str = "", **payload: Any) -> OutboxEvent:
    return OutboxEvent(tenant, topic, payload)


def test_routes_follow_topics_tenants_and_namespaces() -> None:
    hooks = parse_webhooks(
        [
            hook(name="chat", events=["publication", "channel.occupied"], namespaces=["chat"]),
            hook(
                name="acme",
                events=["publication", "client.connected", "notification.created"],
                tenants=["acme"],
            ),
            hook(name="docs", events=["document.changed"], namespaces=["notes"]),
        ]
    )
    routes = Routes(hooks)

    def names(e: OutboxEvent) -> list[str]:
        return [d.name for d in routes.route(e)]

    assert names(event(Topic.PUBLICATION, channel="chat:room")) == ["webhook:chat"]
    assert names(event(Topic.PUBLICATION, channel="$chat:secret")) == ["webhook:chat"]
    assert names(event(Topic.PUBLICATION, channel="news:x")) == []
    assert names(event(Topic.PUBLICATION, "acme", channel="chat:room")) == ["webhook:chat", "webhook:acme"]
    assert names(event(Topic.PUBLICATION, "acme", channel="plain")) == ["webhook:acme"]
    assert names(event(Topic.CLIENT_CONNECTED, "acme", client="c")) == ["webhook:acme"]
    assert names(event(Topic.CLIENT_CONNECTED, "other", client="c")) == []
    assert names(event(Topic.DOCUMENT_CHANGED, document="notes:a")) == ["webhook:docs"]
    assert names(event(Topic.DOCUMENT_CHANGED, document="wiki")) == []
    [created] = routes.route(event(Topic.NOTIFICATION_CREATED, "acme", user="u"))
    assert created.channel is DeliveryChannel.WEBHOOK  # a user's opt-out of webhooks applies
    assert routes.wants(Topic.PUBLICATION, "", "chat") and not routes.wants(Topic.PUBLICATION, "", "news")
    assert not routes.wants(Topic.CHANNEL_VACATED, "", "chat")
    assert Routes([]).enabled is False and not Routes([]).wants(Topic.PUBLICATION, "", "")
