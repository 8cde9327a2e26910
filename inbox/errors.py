"""The inbox's exceptions (the tree is drawn in the package docstring, ``inbox/__init__.py``)."""

from __future__ import annotations


class InboxError(Exception):
    """Base of every error the inbox raises on purpose."""


class InvalidInput(InboxError, ValueError):
    """An argument breaks the model's rules (type, size, grammar); the message names it. Raised before
    anything is written, so a call that raises it changed nothing."""


class InvalidCursor(InvalidInput):
    """A cursor that is malformed, altered, or issued for another tenant or user."""


class NotFound(InboxError):
    """The notification or outbox task named does not exist in this tenant."""


class StoreError(InboxError):
    """The store could not read or write; the transaction that failed was rolled back whole."""


class SchemaError(StoreError):
    """The database holds a newer schema than this code knows, or a migration failed (nothing of it kept)."""
