"""Fixtures of the console tests: the browser ones come from tests/browser.py."""

from tests.browser import artifacts, browser, browser_hubs, chromium_path, context  # noqa: F401
