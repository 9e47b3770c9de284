"""A circuit breaker for server mode: stop the run when the server has been unreachable for too long.

Issue 19: with `vllm serve` dead, every in-flight row became a `server_error` row after its retries, the
run exited 1 ("some rows errored") and would have gone on writing error rows for hours over a large
input. With the breaker, a request that cannot reach the server (connection refused or reset, a
timeout, a 502/503/504 from a proxy in front of a dead server) does not spend its own retries; it waits
for the server with every other request, and once nothing has reached the server for `open_after_s`
seconds the run stops with ServerUnavailable (exit 4): the shards committed so far are kept, the rows
in flight are dropped rather than written as errors, and the rerun picks up where it stopped.

The breaker is only the clock and the decision; engine/server.py calls `reachable()` on every answer
from the server (whatever its status: a 4xx is an answer) and `unreachable(why)` on every failure to get
one, and asks `wait_s()` how long to wait before the next try (exponential from `backoff_s`, capped,
with full jitter so that hundreds of waiting requests do not come back in one burst).
"""
from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

from reportminer.data.errors import RunFailed


class ServerUnreachable(RunFailed):
    """The server answered nothing for `open_after_s` seconds: the run stops (exit 4), finished shards kept."""


class CircuitBreaker:
    """Open (tripped) once every attempt for `open_after_s` seconds failed to reach the server.

    Thread-safe; `clock` and `rng` are injectable so the decision can be tested without waiting.
    """

    def __init__(self, open_after_s: float, backoff_s: float = 1.0, max_backoff_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None):
        if not open_after_s > 0:
            raise ValueError(f"open_after_s must be > 0, got {open_after_s}")
        self.open_after_s = open_after_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self.down_since: float | None = None  # first failure since the last answer
        self.failures = 0  # consecutive failures since the last answer
        self.last_error: str | None = None
        self.tripped_at: float | None = None

    def reachable(self) -> None:
        """An answer came back (any HTTP status): the server is there."""
        with self._lock:
            if self.tripped_at is None:
                self.down_since, self.failures, self.last_error = None, 0, None

    def unreachable(self, why: str) -> None:
        """An attempt did not reach the server (connection error, timeout, gateway error)."""
        with self._lock:
            now = self._clock()
            if self.down_since is None:
                self.down_since = now
            self.failures += 1
            self.last_error = why
            if self.tripped_at is None and now - self.down_since >= self.open_after_s:
                self.tripped_at = now

    @property
    def tripped(self) -> bool:
        with self._lock:
            if self.tripped_at is None and self.down_since is not None \
                    and self._clock() - self.down_since >= self.open_after_s:
                self.tripped_at = self._clock()
            return self.tripped_at is not None

    def wait_s(self) -> float:
        """Seconds to wait before the next try: full jitter over min(cap, backoff * 2**(failures-1)), and
        never past the moment the breaker would open (so a run stops on time, not a backoff later)."""
        with self._lock:
            n = max(self.failures - 1, 0)
            ceiling = min(self.max_backoff_s, self.backoff_s * 2 ** min(n, 30))
            wait = self._rng.uniform(0, ceiling)
            if self.down_since is not None:
                left = self.open_after_s - (self._clock() - self.down_since)
                wait = min(wait, max(left, 0.0))
            return wait

    def check(self, url: str) -> None:
        """Raise ServerUnreachable once open."""
        if self.tripped:
            raise ServerUnreachable(
                f"server {url}: unreachable for {self.open_after_s:.0f} s ({self.failures} failed attempts, last: "
                f"{self.last_error}); the run stopped: finished shards are kept, rows in flight were not written; "
                "rerun once the server is back")


__all__ = ["CircuitBreaker", "ServerUnreachable"]
