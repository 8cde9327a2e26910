"""The admin console: ``/admin`` (the page, ``static/admin``) and its JSON and event endpoints.

Modules: ``auth`` (sign-in, sessions, CSRF, throttling; sans-I/O), ``presence_diff`` (the pure presence
diff), ``store`` (the audit log and revoked sessions; ``store_sqlite``, ``store_redis``), ``inspect`` (what
each node answers about its connections and documents, and its figures), ``stream`` (a console tab's
live events), ``console`` (the HTTP endpoints). The composition root (``hub.app``) picks the store.

Error tree (each module's own, all caught in ``console`` and answered as JSON)::

    ValueError
     +-- auth.BadHash           a configured password hash in neither format
     +-- console.BadRequest     a request the console cannot read (400, with the reason)
    ConnectionError
     +-- store.StoreUnavailable the audit log / revocations cannot be reached (503)
     +-- hub.control.ControlUnavailable  another node did not answer (503)
"""
