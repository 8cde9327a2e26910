"""Fixtures of the hub tests that live in their own modules."""

from tests.hub.ydocs import docs_hub, yconnect  # noqa: F401
