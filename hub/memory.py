"""Giving memory the node freed back to the operating system.

CPython hands large objects (the queued bytes of a slow connection among them) to the C library's
``malloc``, and glibc keeps what is freed inside its heap for reuse: after 200 slow streams were cut and
closed, their 260 MB stayed in the process although nothing referenced them any more. ``malloc_trim(0)``
returns the free pages of every arena. It walks the heap (milliseconds for hundreds of MB), so the node
calls it only after it dropped a lot (``Trimmer``: at least ``TRIM_THRESHOLD`` bytes since the last trim),
a little later (the dropped buffers are freed once their connections have been reset), and at most once per
``TRIM_DELAY``. On a C library without ``malloc_trim`` (musl, macOS) this does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger("switchboard.memory")

TRIM_THRESHOLD = 16 * 1024 * 1024
"""Bytes dropped since the last trim that are worth a trim."""
TRIM_DELAY = 2.5
"""Seconds from the first drop to the trim: a cut stream's connection is reset within about a second, a
WebSocket's within two (``hub.ws_uvicorn.SLOW_ABORT_AFTER``); only then is its buffer free."""


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


_malloc_trim = _find_malloc_trim()


def release_free_memory() -> bool:
    """Return the C library's free heap pages to the system now; False where it cannot."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True


class Trimmer:
    """Calls ``release_free_memory`` once enough was dropped (``dropped``), debounced as the module says."""

    __slots__ = ("threshold", "delay", "_dropped", "_handle", "_release")

    def __init__(
        self,
        threshold: int = TRIM_THRESHOLD,
        delay: float = TRIM_DELAY,
        release: Callable[[], bool] = release_free_memory,
    ) -> None:
        self.threshold = threshold
        self.delay = delay
        self._dropped = 0
        self._handle: asyncio.TimerHandle | None = None
        self._release = release

    def dropped(self, size: int) -> None:
        """``size`` bytes were dropped (they are, or soon will be, free)."""
        self._dropped += size
        if self._dropped >= self.threshold and self._handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a sans-I/O test): nothing to schedule on
                return
            self._handle = loop.call_later(self.delay, self._trim)

    def _trim(self) -> None:
        self._handle = None
        dropped, self._dropped = self._dropped, 0
        if self._release():
            log.info(
                "gave free memory back to the system after %d bytes of slow connections were dropped", dropped
            )

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
