"""The inbox's configuration: ``database_url``, ``inbox_fsync``, the personal-channel options and the
``[inbox]`` table (categories with their delivery channels and ``critical``), from TOML and the
environment; and that a hub honours them (the store picked, the policy used)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hub.app import Switchboard
from hub.codes import ConfigError
from hub.config import Config, load_config, validate
from inbox.errors import StoreError
from inbox.inbox_postgres import PostgresInbox
from inbox.inbox_sqlite import SqliteInbox
from inbox.model import DeliveryChannel
from inbox.preferences import CategoryPolicy, PreferencePolicy
from tests.hub.inbox.conftest import InboxHubFactory, result

IN_APP, WEBHOOK, EMAIL = DeliveryChannel.IN_APP, DeliveryChannel.WEBHOOK, DeliveryChannel.EMAIL

TOML = """
database_url = "postgresql://hub@db.internal:5432/switchboard"
inbox_fsync = true
inbox_expire_interval = "2m"
user_subscribe_to_personal = true
user_personal_channel_namespace = "personal"
user_personal_single_connection = true

[[namespaces]]
name = "personal"
presence = true

[inbox]
channels = ["in_app"]

[inbox.categories.security]
channels = ["in_app", "email"]
critical = true

[inbox.categories.digest]
channels = ["email"]

[inbox.categories.comment]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hub.toml"
    path.write_text(text)
    return path


def test_the_keys_from_a_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, TOML), env={})
    assert cfg.database_url == "postgresql://hub@db.internal:5432/switchboard" and cfg.inbox_fsync
    assert cfg.inbox_expire_interval == 120.0
    assert cfg.user_subscribe_to_personal and cfg.user_personal_single_connection
    assert cfg.user_personal_channel_namespace == "personal"
    assert cfg.inbox == PreferencePolicy(
        {
            "security": CategoryPolicy(frozenset({IN_APP, EMAIL}), critical=True),
            "digest": CategoryPolicy(frozenset({EMAIL})),
            "comment": CategoryPolicy(frozenset({IN_APP})),  # the default's channels
        },
        CategoryPolicy(frozenset({IN_APP})),
    )


def test_the_defaults() -> None:
    cfg = Config()
    assert (cfg.database_url, cfg.inbox_fsync, cfg.inbox_expire_interval) == ("", False, 10.0)
    assert not (cfg.user_subscribe_to_personal or cfg.user_personal_single_connection)
    assert cfg.user_personal_channel_namespace == ""
    assert cfg.inbox == PreferencePolicy()
    assert cfg.inbox.default.channels == {IN_APP, WEBHOOK}


def test_the_environment(tmp_path: Path) -> None:
    env = {
        "SWITCHBOARD_DATABASE_URL": "postgres://localhost/hub",
        "SWITCHBOARD_USER_SUBSCRIBE_TO_PERSONAL": "true",
        "SWITCHBOARD_INBOX_EXPIRE_INTERVAL": "0",
        "SWITCHBOARD_INBOX": '{"categories": {"alerts": {"critical": true}}}',
    }
    cfg = load_config(None, env=env)
    assert cfg.database_url == "postgres://localhost/hub" and cfg.user_subscribe_to_personal
    assert cfg.inbox_expire_interval == 0.0
    assert cfg.inbox.categories == {"alerts": CategoryPolicy(critical=True)}


@pytest.mark.parametrize(
    "toml",
    [
        'database_url = "mysql://db/hub"\n',
        'database_url = "/var/lib/inbox.db"\n',
        'user_personal_channel_namespace = "personal"\n',  # not a configured namespace
        "user_personal_single_connection = true\n",  # needs user_subscribe_to_personal
        "inbox_expire_interval = -1\n",  # not a duration
        'inbox_expire_interval = "soon"\n',
        "inbox = 1\n",
        "[inbox]\nchannels = ['sms']\n",
        "[inbox]\nchannels = 'in_app'\n",
        "[inbox]\nchannels = ['in_app', 'email', 'webhook', 'in_app']\n",
        "[inbox]\nlimit = 1\n",
        "[inbox]\ncategories = 1\n",
        "[inbox.categories.'bad name']\n",
        "[inbox.categories.x]\ncritical = 'yes'\n",
        "[inbox.categories.x]\nchannels = [1]\n",
        "[inbox.categories.x]\nurgent = true\n",
    ],
)
def test_bad_values_are_config_errors(tmp_path: Path, toml: str) -> None:
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, toml), env={})


def test_a_negative_sweep_interval_is_refused_from_python_too() -> None:
    with pytest.raises(ConfigError, match="inbox_expire_interval"):
        validate(Config(inbox_expire_interval=-1.0))


@pytest.mark.parametrize("raw", ["[]", "not json", '{"channels": ["sms"]}'])
def test_a_bad_inbox_from_the_environment_is_a_config_error(raw: str) -> None:
    with pytest.raises(ConfigError):
        load_config(None, env={"SWITCHBOARD_INBOX": raw})


def test_the_store_is_picked_by_database_url(tmp_path: Path) -> None:
    embedded = Switchboard(Config(data_dir=str(tmp_path), inbox_fsync=True))
    assert isinstance(embedded.inbox, SqliteInbox)
    assert embedded.inbox.path == tmp_path / "inbox.sqlite3" and embedded.inbox.fsync
    shared = Switchboard(Config(database_url="postgresql://db/hub"))
    assert isinstance(shared.inbox, PostgresInbox) and shared.inbox.dsn == "postgresql://db/hub"


async def test_the_hub_uses_the_configured_categories(inbox_hub: InboxHubFactory) -> None:
    policy = PreferencePolicy(
        {
            "security": CategoryPolicy(frozenset({IN_APP}), critical=True),
            "digest": CategoryPolicy(frozenset({EMAIL})),
        }
    )
    hub = await inbox_hub(inbox=policy)
    await result(hub, "preferences", {"user": "alice", "set": {"channels": {"in_app": False}}})
    sent: dict[str, Any] = {}
    for category in ("security", "digest", "comment"):
        sent[category] = (await result(hub, "notify", {"recipients": ["alice"], "category": category}))[
            "recipients"
        ][0]
    assert (sent["security"]["outcome"], sent["security"]["channels"]) == ("created", ["in_app"])
    assert (sent["digest"]["outcome"], sent["digest"]["channels"]) == ("skipped", ["email"])  # not in-app
    assert (sent["comment"]["outcome"], sent["comment"]["channels"]) == ("skipped", ["webhook"])


async def test_a_store_that_cannot_open_stops_the_start(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    sb = Switchboard(Config(data_dir=str(blocked)))
    with pytest.raises(Exception, match="cannot open inbox store"):
        await sb.start()
    assert not sb.node.started


async def test_the_store_opens_at_start_and_closes_at_stop(tmp_path: Path) -> None:
    sb = Switchboard(Config(data_dir=str(tmp_path)))
    with pytest.raises(StoreError):
        await sb.inbox.counts("", "alice")  # not open before the start
    await sb.start()
    try:
        await sb.notify("comment", ["alice"])
    finally:
        await sb.stop()
    with pytest.raises(StoreError):
        await sb.inbox.counts("", "alice")
    again = Switchboard(Config(data_dir=str(tmp_path)))
    await again.start()
    try:
        assert (await again.inbox.counts("", "alice")).total == 1  # kept on disk
    finally:
        await again.stop()
