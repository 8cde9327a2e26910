"""Fixtures of the hub tests that live in their own modules."""

from tests.hub.test_cli import server_process  # noqa: F401
from tests.hub.ydocs import docs_hub, sockets, yconnect  # noqa: F401
