"""Riding out Redis outages: retry with exponential backoff for a bounded window.

A worker's Redis calls (claims, progress, checkpoints, heartbeats, settling) go through :class:`RedisRetry`: a
connection error or timeout is retried with backoff until ``window_s`` has passed since the outage began, then
:class:`RedisUnavailable` is raised. :class:`Outage` does the same for callers that must not block (a handler's
progress report): it says whether to try again now and raises once the window has passed.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, TypeVar

import redis as redis_lib

log = logging.getLogger(__name__)
T = TypeVar("T")
TRANSIENT = (redis_lib.ConnectionError, redis_lib.TimeoutError)  # BusyLoadingError (a restart) is a ConnectionError
DEFAULT_WINDOW_S = 60.0


class RedisUnavailable(BaseException):
    """Redis stayed unreachable for longer than the retry window: the worker gives the attempt up (the job is
    reclaimed once Redis is back, and resumes from its last checkpoint). A ``BaseException``, like
    ``jobs.JobAborted``, so that a handler's ``except Exception`` does not swallow it."""


class RedisRetry:
    """Retry transient Redis errors with backoff from ``initial_s`` doubling up to ``max_s``, for ``window_s``."""

    def __init__(self, window_s: float = DEFAULT_WINDOW_S, *, initial_s: float = 0.05, max_s: float = 2.0):
        if window_s < 0:
            raise ValueError(f"the Redis retry window must be >= 0 seconds, got {window_s}")
        if not 0 < initial_s <= max_s:
            raise ValueError(f"backoff needs 0 < initial_s <= max_s, got {initial_s}, {max_s}")
        self.window_s, self.initial_s, self.max_s = window_s, initial_s, max_s

    def call(self, what: str, function: Callable[[], T], stop: threading.Event | None = None) -> T:
        """``function()``, retried while Redis is unreachable; RedisUnavailable after the window (or at once when
        ``stop`` is set meanwhile)."""
        outage = Outage(self)
        while True:
            try:
                return function()
            except TRANSIENT as error:
                outage.failed(what, error)
                if stop is not None and stop.is_set():
                    raise RedisUnavailable(f"{what}: Redis is unreachable and the worker is stopping") from error
                time.sleep(max(0.0, outage.next_try - time.monotonic()))


class Outage:
    """The state of one outage, for callers that poll: ``due()`` says whether to try again, ``failed()`` records a
    failed try (and raises once the window has passed), ``recovered()`` ends the outage."""

    def __init__(self, policy: RedisRetry):
        self.policy = policy
        self.since: float | None = None
        self.next_try = 0.0
        self._delay = policy.initial_s

    @property
    def active(self) -> bool:
        return self.since is not None

    def due(self) -> bool:
        return time.monotonic() >= self.next_try

    def failed(self, what: str, error: BaseException) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since, self._delay = now, self.policy.initial_s
            log.warning("%s: Redis unreachable (%s); retrying for up to %.0f s", what, error, self.policy.window_s)
        if now - self.since >= self.policy.window_s:
            raise RedisUnavailable(f"{what}: Redis unreachable for {now - self.since:.1f} s "
                                   f"(retry window {self.policy.window_s:g} s)") from error
        self.next_try = now + self._delay
        self._delay = min(2 * self._delay, self.policy.max_s)

    def recovered(self, what: str) -> None:
        if self.since is not None:
            log.info("%s: Redis is back after %.1f s", what, time.monotonic() - self.since)
        self.since, self.next_try, self._delay = None, 0.0, self.policy.initial_s
