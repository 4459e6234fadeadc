"""Requests-per-minute limits per API key: a sliding window over the last 60 seconds.

A sliding log (one timestamp per accepted request) rather than fixed minute buckets, so a key
cannot send twice its limit across a minute boundary. Time is passed in (``time.monotonic()`` in
the server, plain numbers in tests) and nothing here sleeps or does I/O.
"""

from __future__ import annotations

import math
import threading
from collections import deque

from kennel.errors import RateLimitError

WINDOW_S = 60.0


class RateLimiter:
    """Accepts at most ``rpm`` requests per key in any 60-second window.

    Memory stays bounded: a key's log holds at most its limit, and logs whose newest entry has left
    the window are dropped (the key's own on each check, all of them at most once a window).
    """

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._logs: dict[str, deque[float]] = {}
        self._lock = threading.Lock()  # cheap, and makes it safe from a threadpool too
        self._last_sweep = -math.inf

    def check(self, key_name: str, rpm: int | None, now: float) -> None:
        """Count one request for ``key_name`` at ``now`` (seconds), or raise RateLimitError with
        ``retry_after``: the seconds until the oldest request in the window leaves it. A refused
        request is not counted. ``rpm=None`` means unlimited."""
        if rpm is None:
            return
        if rpm < 1:
            raise ValueError(f"rpm must be at least 1, not {rpm}")
        with self._lock:
            self._sweep(now)
            log = self._window(key_name, now)
            if len(log) >= rpm:
                # the (len - rpm + 1)-th oldest must leave before one more fits: the oldest, unless
                # the key's limit was lowered while its log was fuller than the new limit
                retry_after = max(log[len(log) - rpm] + self.window_s - now, 0.0)
                raise RateLimitError(
                    f"The API key {key_name!r} is over its limit of {rpm} requests per minute.",
                    hint=f"Retry after {math.ceil(retry_after)} s.",
                    retry_after=retry_after,
                )
            if not log:  # a new or just-emptied log: (re)register it
                self._logs[key_name] = log
            log.append(now)

    def remaining(self, key_name: str, rpm: int | None, now: float) -> int | None:
        """Requests ``key_name`` may still send in the current window (None when unlimited)."""
        if rpm is None:
            return None
        with self._lock:
            return max(rpm - len(self._window(key_name, now)), 0)

    def __len__(self) -> int:
        """How many keys have a log (for tests and metrics)."""
        return len(self._logs)

    def _window(self, key_name: str, now: float) -> deque[float]:
        """The key's timestamps still inside the window; its log is dropped once empty."""
        log = self._logs.get(key_name)
        if log is None:
            return deque()
        cutoff = now - self.window_s
        while log and log[0] <= cutoff:
            log.popleft()
        if not log:
            del self._logs[key_name]
        return log

    def _sweep(self, now: float) -> None:
        # keys that stopped sending would otherwise keep their log forever
        if now - self._last_sweep < self.window_s:
            return
        self._last_sweep = now
        cutoff = now - self.window_s
        for name in [n for n, log in self._logs.items() if not log or log[-1] <= cutoff]:
            del self._logs[name]
