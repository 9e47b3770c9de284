"""The server-mode circuit breaker's decision (engine/breaker.py), on an injected clock: no waiting, no server."""
from __future__ import annotations

import random

import pytest

from reportminer.data.errors import EXIT_FAILED
from reportminer.engine.breaker import CircuitBreaker, ServerUnreachable


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_opens_only_after_the_server_was_unreachable_for_the_whole_window():
    clock = Clock()
    b = CircuitBreaker(open_after_s=60, clock=clock)
    b.unreachable("connection refused")
    clock.t += 59.9
    b.unreachable("connection refused")
    assert not b.tripped
    b.check("http://s")  # still closed: no raise
    clock.t += 0.1
    assert b.tripped
    with pytest.raises(ServerUnreachable) as ei:
        b.check("http://s")
    assert ei.value.exit_code == EXIT_FAILED
    msg = str(ei.value)
    assert msg.startswith("server http://s: unreachable for 60 s (2 failed attempts, last: connection refused)")
    assert "finished shards are kept" in msg and "\n" not in msg


def test_any_answer_resets_the_window():
    clock = Clock()
    b = CircuitBreaker(open_after_s=10, clock=clock)
    b.unreachable("timeout")
    clock.t += 9
    b.reachable()  # e.g. a 400 or a 200: the server is there
    clock.t += 9
    b.unreachable("timeout")
    clock.t += 9
    assert not b.tripped and b.failures == 1


def test_stays_open_once_tripped_and_time_alone_trips_it():
    clock = Clock()
    b = CircuitBreaker(open_after_s=5, clock=clock)
    b.unreachable("reset")
    clock.t += 6  # no further attempt needed: the window passed
    assert b.tripped
    b.reachable()  # a late answer of a request sent earlier does not close it again
    assert b.tripped


def test_waits_are_jittered_capped_and_end_when_the_breaker_would_open():
    clock = Clock()
    b = CircuitBreaker(open_after_s=100, backoff_s=1.0, max_backoff_s=8.0, clock=clock, rng=random.Random(0))
    for _ in range(10):
        b.unreachable("refused")
    waits = [b.wait_s() for _ in range(200)]
    assert 0 <= min(waits) and max(waits) <= 8.0 and len({round(w, 3) for w in waits}) > 100  # spread, capped
    clock.t += 97
    assert all(b.wait_s() <= 3.0 + 1e-9 for _ in range(50))  # never past the moment it opens
    with pytest.raises(ValueError):
        CircuitBreaker(open_after_s=0)
