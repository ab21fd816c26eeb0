"""The circuit breaker that lets a failing endpoint rest."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Literal

__all__ = ["CircuitBreaker", "Clock"]

#: A monotonic clock in seconds (``time.monotonic``, or a fake in tests).
Clock = Callable[[], float]


class CircuitBreaker:
    """Closed -> open after ``threshold`` consecutive failures -> half-open after ``cooldown``
    (one probe) -> closed on success, open again on failure."""

    def __init__(self, threshold: int, cooldown: float, clock: Clock) -> None:
        self._threshold = threshold
        self._cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_started: float | None = None

    @property
    def state(self) -> Literal["closed", "open", "half-open"]:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "half-open" if self._probe_started is not None else "open"

    def allow(self) -> bool:
        """Whether a request may go out now (taking the half-open probe if it is due)."""
        with self._lock:
            if self._opened_at is None:
                return True
            now = self._clock()
            probe_stale = (
                self._probe_started is not None and now - self._probe_started >= self._cooldown
            )
            if (self._probe_started is None or probe_stale) and (
                now - self._opened_at >= self._cooldown
            ):
                self._probe_started = now
                return True
            return False

    def is_open(self) -> bool:
        with self._lock:
            return self._opened_at is not None and self._probe_started is None

    def retry_in(self) -> float:
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self._opened_at + self._cooldown - self._clock())

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._probe_started = None

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._probe_started is not None or self._failures >= self._threshold:
                self._opened_at = self._clock()
                self._probe_started = None
