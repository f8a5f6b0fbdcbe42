"""The one subscription-count throttle (reference §5.6: counts above 100
subscribers at most every 5 s), and its memory: it forgets what can no longer
change a decision (issue 15: one entry per channel ever used, never forgotten)."""

from __future__ import annotations

from flask_pusher.server.throttle import CountThrottle


def test_small_counts_pass_big_ones_wait_for_the_interval() -> None:
    throttle: CountThrottle[str] = CountThrottle(subscribers=100, interval=5.0)
    assert throttle.offer("a", 100, 0.0)
    assert throttle.due(0.5) == []
    assert throttle.offer("a", 99, 1.0)  # not above the threshold: at once
    assert not throttle.offer("a", 101, 2.0)
    assert not throttle.offer("a", 120, 3.0)
    assert throttle.due(5.9) == []
    assert throttle.due(6.0) == [("a", 120)]  # the latest, 5 s after the last one sent
    assert throttle.due(7.0) == []
    assert not throttle.offer("a", 130, 8.0)


def test_keys_are_forgotten() -> None:
    throttle: CountThrottle[str] = CountThrottle(subscribers=100, interval=5.0)
    for i in range(1000):
        throttle.offer(f"c{i}", 1, 0.0)
    throttle.offer("held", 1, 0.0)
    throttle.offer("held", 500, 1.0)
    assert len(throttle) == 1001
    throttle.forget("c0")
    assert len(throttle) == 1000
    assert throttle.due(4.0) == []
    assert len(throttle) == 1000  # still within the interval
    assert throttle.due(5.0) == [("held", 500)]
    assert len(throttle) == 1  # "held" was just sent: it is remembered for 5 s
    throttle.due(10.0)
    assert len(throttle) == 0


def test_small_counts_are_coalesced_until_the_next_due() -> None:
    """Issue 16: churn on a small channel sends at most two counts per heartbeat."""
    throttle: CountThrottle[str] = CountThrottle(subscribers=100, interval=5.0)
    assert throttle.offer("a", 1, 0.0)  # the first change: at once
    assert not any(throttle.offer("a", n, 0.1) for n in (2, 1, 2, 3))
    assert throttle.offer("b", 1, 0.1)  # another channel is not held up
    assert throttle.due(1.0) == [("a", 3)]  # the latest, at the next heartbeat
    assert not throttle.offer("a", 2, 1.1)  # sent in this window already
    assert throttle.due(2.0) == [("a", 2)]
    assert throttle.due(3.0) == []
    assert throttle.offer("a", 3, 3.1)  # a quiet window: at once again
