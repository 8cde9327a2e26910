"""Configuration: TOML file, SWITCHBOARD_* environment overrides, development mode. No event loop.

Every call passes ``env`` explicitly, so the process environment never leaks into a test.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from channels.options import NamespaceOptions
from hub.codes import ConfigError, HubError
from hub.config import (
    DEV_BOT_SECRET,
    DEV_CHANNEL_OPTIONS,
    DEV_PERSONAL_NAMESPACE,
    DEV_PERSONAL_OPTIONS,
    DEV_SECRET,
    DEV_SENSORS_NAMESPACE,
    DEV_SENSORS_OPTIONS,
    Config,
    dev_requested,
    load_config,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "switchboard.toml"
    path.write_text(text)
    return path


FULL = """
host = "0.0.0.0"
port = 9000
log_level = "debug"
data_dir = "/var/lib/switchboard"
node_name = "n1"
token_hmac_secret_key = "file-secret"
token_audience = "hub"
allow_anonymous_connect_without_token = true
client_channel_limit = 16
client_queue_max_size = 2048
client_ping_interval = "30s"
client_pong_timeout = 5
client_expired_close_delay = "1m"
client_stale_close_delay = "1.5s"
shutdown_timeout = "250ms"
websocket_compression = true

[channel]
presence = true
history_size = 10
history_ttl = "300s"
history_meta_ttl = "24h"
allow_subscribe_for_client = true

[[namespaces]]
name = "chat"
join_leave = true
history_size = 50
history_ttl = "5m"

[[namespaces]]
name = "feed"
allow_publish_for_client = true
"""


def test_toml_keys(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL), env={})
    assert (cfg.host, cfg.port, cfg.log_level, cfg.data_dir, cfg.node_name) == (
        "0.0.0.0",
        9000,
        "debug",
        "/var/lib/switchboard",
        "n1",
    )
    assert cfg.token_hmac_secret_key == "file-secret" and cfg.token_audience == "hub"
    assert cfg.allow_anonymous_connect_without_token and cfg.websocket_compression
    assert (cfg.client_channel_limit, cfg.client_queue_max_size) == (16, 2048)
    assert cfg.client_ping_interval == 30.0
    assert cfg.client_pong_timeout == 5.0
    assert cfg.client_expired_close_delay == 60.0
    assert cfg.client_stale_close_delay == 1.5
    assert cfg.shutdown_timeout == 0.25
    assert cfg.channel == NamespaceOptions(
        presence=True,
        history_size=10,
        history_ttl=300.0,
        history_meta_ttl=86400.0,
        allow_subscribe_for_client=True,
    )
    assert sorted(cfg.namespaces) == ["chat", "feed"]
    assert cfg.namespaces["chat"] == NamespaceOptions(join_leave=True, history_size=50, history_ttl=300.0)
    assert cfg.namespaces["feed"].allow_publish_for_client
    assert not cfg.dev_mode
    assert cfg.namespace_table().names() == ["chat", "feed"]


def test_a_file_without_a_key_is_not_dev_mode(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "port = 8001\n"), env={})
    assert not cfg.dev_mode
    assert cfg.token_hmac_secret_key == ""
    assert not cfg.allow_anonymous_connect_without_token
    assert cfg.channel == NamespaceOptions()


def test_dev_mode_when_nothing_is_given() -> None:
    cfg = load_config(None, env={}, allow_dev_mode=True)
    assert cfg.dev_mode
    assert cfg.token_hmac_secret_key == DEV_SECRET
    assert cfg.bot_token_hmac_secret_key == DEV_BOT_SECRET  # examples/agent_assistant.py joins as a bot
    assert cfg.allow_anonymous_connect_without_token
    assert cfg.channel == DEV_CHANNEL_OPTIONS
    assert cfg.channel.history_enabled and cfg.channel.allow_publish_for_anonymous
    assert (cfg.host, cfg.port) == (Config.host, Config.port)
    # personal channels for the inbox's pushes (the bell demo), closed to clients
    assert cfg.user_subscribe_to_personal and cfg.user_personal_channel_namespace == DEV_PERSONAL_NAMESPACE
    # and the sensor dashboard's feed: clients may subscribe, only the hub's simulator publishes
    assert cfg.namespaces == {
        DEV_PERSONAL_NAMESPACE: DEV_PERSONAL_OPTIONS,
        DEV_SENSORS_NAMESPACE: DEV_SENSORS_OPTIONS,
    }
    sensors = cfg.namespaces[DEV_SENSORS_NAMESPACE]
    assert sensors.allow_subscribe_for_anonymous and not sensors.allow_publish_for_client
    assert sensors.key_field == "/sensor" and sensors.force_recovery_mode == "cache"
    personal = cfg.namespaces[DEV_PERSONAL_NAMESPACE]
    assert personal.history_enabled and not any(
        getattr(personal, f"allow_{op}_for_{who}")
        for op in ("subscribe", "publish", "history", "presence")
        for who in ("client", "anonymous", "subscriber")
        if hasattr(personal, f"allow_{op}_for_{who}")
    )


def test_dev_mode_leaves_personal_channels_off_when_asked() -> None:
    env = {"SWITCHBOARD_USER_SUBSCRIBE_TO_PERSONAL": "false"}
    cfg = load_config(None, env=env, allow_dev_mode=True)
    assert cfg.dev_mode and not cfg.user_subscribe_to_personal
    assert cfg.namespaces == {DEV_SENSORS_NAMESPACE: DEV_SENSORS_OPTIONS}


def test_no_dev_mode_when_the_environment_gives_a_key() -> None:
    cfg = load_config(None, env={"SWITCHBOARD_TOKEN_HMAC_SECRET_KEY": "env-secret"})
    assert not cfg.dev_mode and cfg.token_hmac_secret_key == "env-secret"
    assert not cfg.allow_anonymous_connect_without_token


def test_unrelated_environment_is_ignored() -> None:
    cfg = load_config(None, env={"PATH": "/bin", "SWITCHBOARD": "x", "switchboard_port": "1"})
    assert cfg.port == 8000


def test_env_overrides_the_file(tmp_path: Path) -> None:
    env = {
        "SWITCHBOARD_PORT": "9100",
        "SWITCHBOARD_HOST": "::1",
        "SWITCHBOARD_CLIENT_PING_INTERVAL": "45s",
        "SWITCHBOARD_WEBSOCKET_COMPRESSION": "off",
        "SWITCHBOARD_ALLOW_ANONYMOUS_CONNECT_WITHOUT_TOKEN": "no",
        "SWITCHBOARD_CONFIG": "ignored: a path given wins over the variable",
    }
    cfg = load_config(write(tmp_path, FULL), env=env)
    assert cfg.port == 9100 and cfg.host == "::1"
    assert cfg.client_ping_interval == 45.0
    assert not cfg.websocket_compression
    assert not cfg.allow_anonymous_connect_without_token
    assert cfg.token_hmac_secret_key == "file-secret"


@pytest.mark.parametrize(
    ("raw", "value"),
    [("1", True), ("true", True), ("YES", True), (" on ", True), ("0", False), ("False", False)],
)
def test_env_booleans(raw: str, value: bool) -> None:
    cfg = load_config(None, env={"SWITCHBOARD_WEBSOCKET_FAST_PATH": raw})
    assert cfg.websocket_fast_path is value


def test_env_channel_options_override_the_file(tmp_path: Path) -> None:
    env = {"SWITCHBOARD_CHANNEL_PRESENCE": "false", "SWITCHBOARD_CHANNEL_JOIN_LEAVE": "true"}
    cfg = load_config(write(tmp_path, FULL), env=env)
    assert not cfg.channel.presence and cfg.channel.join_leave
    assert cfg.channel.history_size == 10 and cfg.channel.allow_subscribe_for_client  # the file's, kept


def test_env_channel_presence_in_dev_mode() -> None:
    cfg = load_config(None, env={"SWITCHBOARD_CHANNEL_PRESENCE": "true"}, allow_dev_mode=True)
    assert cfg.dev_mode and cfg.channel.presence


def test_no_dev_mode_unless_asked() -> None:
    """Embedding programs (Switchboard() without a config) get closed defaults, never development mode."""
    cfg = load_config(None, env={})
    assert not cfg.dev_mode
    assert not cfg.allow_anonymous_connect_without_token
    assert cfg.token_hmac_secret_key == ""
    assert not cfg.channel.allow_subscribe_for_client


def test_env_channel_history() -> None:
    env = {"SWITCHBOARD_CHANNEL_HISTORY_SIZE": "50", "SWITCHBOARD_CHANNEL_HISTORY_TTL": "300s"}
    cfg = load_config(None, env=env)
    assert (cfg.channel.history_size, cfg.channel.history_ttl) == (50, 300.0)


@pytest.mark.parametrize(("size", "ttl"), [("1", "60s"), ("10", "1"), ("0", "0")])
def test_env_channel_history_numbers_that_look_boolean(size: str, ttl: str) -> None:
    # "1" and "0" are numbers here, not booleans.
    env = {"SWITCHBOARD_CHANNEL_HISTORY_SIZE": size, "SWITCHBOARD_CHANNEL_HISTORY_TTL": ttl}
    cfg = load_config(None, env=env)
    assert cfg.channel.history_size == int(size)
    assert cfg.channel.history_ttl == float(ttl.rstrip("s"))


def test_env_namespaces_json() -> None:
    namespaces = [
        {"name": "chat", "presence": True, "history_size": 20, "history_ttl": "300s"},
        {"name": "feed", "allow_subscribe_for_client": True},
    ]
    cfg = load_config(None, env={"SWITCHBOARD_NAMESPACES": json.dumps(namespaces)})
    assert sorted(cfg.namespaces) == ["chat", "feed"]
    assert cfg.namespaces["chat"] == NamespaceOptions(presence=True, history_size=20, history_ttl=300.0)


def test_env_namespaces_replace_the_files(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL), env={"SWITCHBOARD_NAMESPACES": '[{"name": "only"}]'})
    assert list(cfg.namespaces) == ["only"]


@pytest.mark.parametrize(
    "toml",
    [
        "prot = 8000\n",
        "port = 8000\nbogus = 1\n",
        "[channel]\npresense = true\n",
        "[channel]\nhistory_size = 10\n",
        "[[namespaces]]\nname = 'chat'\nunknown_option = true\n",
        "[[namespaces]]\npresence = true\n",
        "[[namespaces]]\nname = 'a:b'\n",
        "[[namespaces]]\nname = 'x'\n[[namespaces]]\nname = 'x'\n",
        "namespaces = 'chat'\n",
        "channel = 1\n",
        "port = 'http'\n",
        "port = true\n",
        "port = 0\n",
        "port = 70000\n",
        "host = 5\n",
        "websocket_compression = 'yes'\n",
        "client_ping_interval = '30 seconds'\n",
        "client_pong_timeout = -1\n",
        "client_channel_limit = 0\n",
        "client_queue_max_size = -5\n",
        "doc_queue_max_size = 0\n",
        "doc_write_backlog_max_size = -1\n",
        "doc_max_awareness_state_size = 0\n",
        "doc_max_awareness_states = 0\n",
        "doc_max_awareness_size = 'big'\n",
        "doc_max_awareness_state_size = 20000\ndoc_max_awareness_size = 10000\n",
        "log_level = 'chatty'\n",
        "dev_mode = true\n",
        "this is not toml",
    ],
)
def test_bad_files_are_config_errors(tmp_path: Path, toml: str) -> None:
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, toml), env={})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_config(tmp_path / "absent.toml", env={})


def test_switchboard_config_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'token_hmac_secret_key = "file-secret"\n')
    cfg = load_config(None, env={"SWITCHBOARD_CONFIG": str(path)}, allow_dev_mode=True)
    assert not cfg.dev_mode and cfg.token_hmac_secret_key == "file-secret"
    with pytest.raises(ConfigError, match="absent.toml.*SWITCHBOARD_CONFIG"):
        load_config(None, env={"SWITCHBOARD_CONFIG": str(tmp_path / "absent.toml")}, allow_dev_mode=True)
    assert load_config(None, env={"SWITCHBOARD_CONFIG": " "}, allow_dev_mode=True).dev_mode  # unset


@pytest.mark.parametrize(("raw", "asked"), [("1", True), ("true", True), ("0", False), ("", False)])
def test_switchboard_dev_is_a_boolean(raw: str, asked: bool) -> None:
    assert dev_requested({"SWITCHBOARD_DEV": raw}) is asked
    assert load_config(None, env={"SWITCHBOARD_DEV": raw}, allow_dev_mode=True).dev_mode


@pytest.mark.parametrize(
    "env",
    [
        {"SWITCHBOARD_PROT": "8000"},
        {"SWITCHBOARD_DEV_MODE": "1"},
        {"SWITCHBOARD_DEV": "maybe"},
        {"SWITCHBOARD_PORT": "eighty"},
        {"SWITCHBOARD_PORT": "0"},
        {"SWITCHBOARD_WEBSOCKET_COMPRESSION": "maybe"},
        {"SWITCHBOARD_CLIENT_PING_INTERVAL": "soon"},
        {"SWITCHBOARD_CHANNEL_PRESENSE": "true"},
        {"SWITCHBOARD_CHANNEL_PRESENCE": "maybe"},
        {"SWITCHBOARD_CHANNEL_HISTORY_SIZE": "10"},
        {"SWITCHBOARD_CHANNEL_HISTORY_SIZE": "ten", "SWITCHBOARD_CHANNEL_HISTORY_TTL": "60s"},
        {"SWITCHBOARD_NAMESPACES": "chat"},
        {"SWITCHBOARD_NAMESPACES": '{"name": "chat"}'},
        {"SWITCHBOARD_NAMESPACES": '[{"name": "chat", "presence": "yes"}]'},
    ],
)
def test_bad_environment_is_a_config_error(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        load_config(None, env=env)


def test_config_error_belongs_to_the_hub_tree() -> None:
    assert issubclass(ConfigError, HubError)


def test_defaults() -> None:
    cfg = Config()
    assert cfg.client_queue_max_size == 1048576 and cfg.client_max_message_size == 65536
    assert cfg.doc_queue_max_size == 1048576 and cfg.doc_write_backlog_max_size == 16777216
    assert (cfg.doc_max_awareness_state_size, cfg.doc_max_awareness_states, cfg.doc_max_awareness_size) == (
        16384,
        8,
        524288,
    )
    assert not cfg.websocket_compression and cfg.websocket_fast_path
    assert cfg.namespace_table().default == NamespaceOptions()


def test_a_data_schema_is_compiled_at_load_and_a_bad_one_names_its_namespace(tmp_path: Path) -> None:
    good = """
[[namespaces]]
name = "sensors"
data_schema = { type = "object", required = ["t"], properties = { t = { type = "number" } } }

[[namespaces]]
name = "cam"
data_format = "binary"
"""
    cfg = load_config(write(tmp_path, good), env={})
    schema = cfg.namespaces["sensors"].data_schema
    assert schema is not None and schema.check({"t": "hot"}) == 'data/t: "hot" is not of type "number"'
    assert cfg.namespaces["cam"].binary and cfg.namespace_table().binary("cam:front")
    bad = good.replace('type = "number"', 'type = "numbr"')
    with pytest.raises(ConfigError, match=r"namespace sensors: invalid data schema"):
        load_config(write(tmp_path, bad), env={})
    env = {"SWITCHBOARD_CHANNEL_DATA_SCHEMA": '{"type": "object"}', "SWITCHBOARD_CHANNEL_DATA_FORMAT": "json"}
    assert load_config(None, env=env).channel.data_schema is not None
    with pytest.raises(ConfigError, match=r"SWITCHBOARD_CHANNEL_\*: data_schema is not JSON"):
        load_config(None, env={"SWITCHBOARD_CHANNEL_DATA_SCHEMA": "{"})


MQTT = """
[mqtt]
url = "mqtt://user:p%40ss@broker.local"
tenant = "acme"
[[mqtt.subscribe]]
topic = "plant/+/temperature"
channel = "sensors:{1}"
[[mqtt.publish]]
channel = "commands:{1}"
topic = "plant/{1}/command"
"""


def test_the_mqtt_table(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MQTT), env={})
    assert cfg.mqtt is not None and cfg.mqtt_enabled
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.tls) == ("broker.local", 1883, False)
    assert (cfg.mqtt.username, cfg.mqtt.password, cfg.mqtt.tenant) == ("user", "p@ss", "acme")
    assert cfg.mqtt.subscribe[0].route("plant/p1/temperature") == ("sensors:p1", None)
    assert [m("commands:x") for m in cfg.watch_patterns()] == [True]
    assert not load_config(write(tmp_path, MQTT), env={"SWITCHBOARD_MQTT_ENABLED": "false"}).mqtt_enabled


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (("mqtt://user:p%40ss@broker.local", "http://broker.local"), "expected mqtt://host[:port]"),
        (('tenant = "acme"', "tenant = 5"), "[mqtt] tenant must be a string"),
        (('tenant = "acme"', "keepalive = 1"), "keepalive must be an integer from 5 to 3600"),
        (('tenant = "acme"', 'reconnect_min = "1m"\nreconnect_max = "1s"'), "reconnect_min must be positive"),
        (('tenant = "acme"', "qos = 2"), "[mqtt]: unknown key 'qos'"),
        (('channel = "sensors:{1}"', 'channel = "sensors:{2}"'), "[[mqtt.subscribe]] number 1:"),
        (('topic = "plant/{1}/command"', 'topic = "plant/#"'), "[[mqtt.publish]] number 1:"),
    ],
)
def test_a_bad_mqtt_table_says_what_is_wrong(tmp_path: Path, change: tuple[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_config(write(tmp_path, MQTT.replace(*change)), env={})
