"""Fixtures of the console tests: the browser ones come from tests/browser.py."""

from typing import Any

import pytest

from tests.browser import artifacts, browser, browser_hubs, chromium_path, context, report_artifacts  # noqa: F401


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    report_artifacts(config, terminalreporter)
