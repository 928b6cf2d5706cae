"""The circuit breaker as a state machine, driven with explicit times."""

from __future__ import annotations

from soberana.serving.router.breaker import BreakerState, CircuitBreaker


def opened(at: float = 0.0) -> CircuitBreaker:
    breaker = CircuitBreaker(failure_threshold=3, open_for_s=1.0, max_open_for_s=4.0)
    for _ in range(3):
        breaker.on_failure(at, probe=False)
    return breaker


def test_it_opens_after_the_threshold_of_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(failure_threshold=3)
    breaker.on_failure(0.0, probe=False)
    breaker.on_failure(0.0, probe=False)
    breaker.on_success()
    breaker.on_failure(0.0, probe=False)
    breaker.on_failure(0.0, probe=False)
    assert breaker.state(0.0) is BreakerState.CLOSED
    assert breaker.refusal(0.0) is None
    breaker.on_failure(0.0, probe=False)
    assert breaker.state(0.0) is BreakerState.OPEN
    assert breaker.refusal(0.5) == "circuit open after 3 consecutive failures, next probe in 0.5s"


def test_half_open_admits_exactly_one_probe() -> None:
    breaker = opened()
    assert breaker.state(1.0) is BreakerState.HALF_OPEN
    assert breaker.refusal(1.0) is None
    assert breaker.on_attempt(1.0) is True
    assert breaker.refusal(1.0) == "circuit half-open, its probe request is in flight"
    breaker.on_success()
    assert breaker.state(1.0) is BreakerState.CLOSED
    assert breaker.on_attempt(1.0) is False


def test_a_failed_probe_doubles_the_cooldown_up_to_the_cap() -> None:
    breaker = opened()
    now = 1.0
    for cooldown in (2.0, 4.0, 4.0):
        assert breaker.on_attempt(now)
        breaker.on_failure(now, probe=True)
        assert breaker.state(now + cooldown - 0.01) is BreakerState.OPEN
        now += cooldown
        assert breaker.state(now) is BreakerState.HALF_OPEN


def test_late_failures_of_requests_sent_before_it_opened_do_not_extend_it() -> None:
    breaker = opened()
    for _ in range(10):
        breaker.on_failure(0.5, probe=False)
    assert breaker.state(1.0) is BreakerState.HALF_OPEN


def test_an_abandoned_probe_lets_the_next_request_probe() -> None:
    breaker = opened()
    assert breaker.on_attempt(1.0)
    breaker.on_abandoned(probe=True)
    assert breaker.refusal(1.0) is None
    assert breaker.on_attempt(1.0)
