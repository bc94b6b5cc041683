"""The witness (workers/witness.py): others are judged dead only after unbroken own beats."""

from __future__ import annotations

from workers.witness import Witness


def _beats(r, key, ages):
    sec, usec = r.time()
    now = sec + usec / 1e6
    r.delete(key)
    for age in ages:
        r.zadd(key, {f"beat {age}": now - age})


def test_unbroken_beats_over_the_timeout_allow_judging(redis_server):
    r = redis_server.client()
    w = Witness(r, "me", timeout_s=4)
    _beats(r, "me", [x / 2 for x in range(0, 12)])  # every 0.5 s for the last 5.5 s
    assert w.reliable()
    _beats(r, "me", [0, 0.5, 1, 3.5, 4, 4.5])  # a 2.5 s break, more than half the timeout
    assert not w.reliable() and w.widest_gap_s >= 2.5
    _beats(r, "me", [0, 0.5, 1, 1.5])  # a worker that is new (or a Redis that was wiped)
    assert not w.reliable()
    _beats(r, "me", [3, 3.5, 4, 4.5])  # beats stopped 3 s ago: this worker itself stalled
    assert not w.reliable()
    r.delete("me")
    assert not w.reliable()
