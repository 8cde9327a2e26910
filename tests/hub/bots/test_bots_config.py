"""The bot settings (``bot_*``): read from a file and the environment, and refused when they make no sense."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.codes import ConfigError
from hub.config import load_config


def test_bot_settings_from_a_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('token_hmac_secret_key = "a"\nbot_token_hmac_secret_key = "b"\nbot_rpc_prefix = "ai."\n')
    cfg = load_config(
        path, env={"SWITCHBOARD_BOT_RPC_TIMEOUT": "1m30s", "SWITCHBOARD_BOT_CLIENT_CHANNEL_LIMIT": "3"}
    )
    assert (cfg.bot_token_hmac_secret_key, cfg.bot_rpc_prefix) == ("b", "ai.")
    assert (cfg.bot_rpc_timeout, cfg.bot_client_channel_limit, cfg.bot_command_rate_limit) == (90.0, 3, -1.0)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('bot_token_hmac_secret_key = "a"', "must differ"),
        ("bot_client_channel_limit = -1", "must not be negative"),
        ("bot_command_rate_limit = -2", "bot_command_rate_limit"),
        ("bot_rpc_timeout = 0", "bot_rpc_timeout must be positive"),
        ("bot_rpc_max_pending = 0", "bot_rpc_max_pending must be positive"),
        ('bot_rpc_prefix = "bot."', "overlaps"),
        ('bot_rpc_prefix = "in"', "overlaps"),
        ('bot_rpc_prefix = "a b"', "no spaces"),
        (f'bot_rpc_prefix = "{"x" * 65}"', "at most 64"),
    ],
)
def test_bad_bot_settings_stop_the_start(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'token_hmac_secret_key = "a"\n{line}\n')
    with pytest.raises(ConfigError, match=message):
        load_config(path, env={})
