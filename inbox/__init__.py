"""Notifications: a durable inbox per (tenant, user), with exact counts, preferences, delivery tracking and
a transactional outbox of events (the notifications issue).

Imports ``channels`` at most; never ``hub``, ``presence`` nor ``sync``. The hub exposes it (RPC and
server API methods, personal-channel pushes), the composition root picks the store, ``workers/`` drain
the outbox.

Layout: ``model`` (notifications, items, statuses, counts, list queries, marks, deliveries, bounds),
``preferences`` (policy and per-user choices), ``cursor`` (signed page cursors), ``outbox`` (events,
tasks, attempts, retry policy), ``plan`` (what a change does, decided without I/O), ``status`` (a
notification's delivery status), ``inbox`` (the ``InboxStore`` interface and its obligations), and the
stores ``inbox_sqlite`` (embedded default) and ``inbox_postgres`` (shared by every node).

Error tree::

    InboxError
     +-- InvalidInput      an argument breaks the model's rules (type, size, grammar); nothing was written
     |    +-- InvalidCursor  a cursor that is malformed, altered, or another tenant's or user's
     +-- NotFound          no such notification, delivery or task in this tenant
     +-- StoreError        the database failed; the transaction was rolled back whole
          +-- SchemaError  the database's schema is newer than this code, or a migration failed
"""

from inbox.errors import InboxError, InvalidCursor, InvalidInput, NotFound, SchemaError, StoreError

__all__ = ["InboxError", "InvalidCursor", "InvalidInput", "NotFound", "SchemaError", "StoreError"]
