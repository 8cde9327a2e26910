"""One install at a time: what the suite installs or builds for itself (``npm ci`` of tests/js,
tests/hub/js_sdk and static/demo, the demos' build, ``apt-get install chromium``) runs under a lock of the
machine, so that two pytest-xdist workers (or two test runs) that need it at once do it once: the first
installs, the others wait on the lock and then find it done. Check whether it is needed inside the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def installing(what: str | Path) -> Iterator[None]:
    """Hold the machine-wide lock of ``what`` (a folder being installed into, or a name such as ``apt``)."""
    key = hashlib.sha256(str(what).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"switchboard-install-{key}.lock"
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield
