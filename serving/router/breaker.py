"""A per-site circuit breaker: stop sending to a site that keeps failing, then probe it once.

Closed, it counts consecutive failures; at ``failure_threshold`` it opens and the site gets no
requests for ``open_for_s``. Then it is half-open: exactly one request, the probe, may go there.
The probe's success closes the breaker; its failure opens it again for twice as long (up to
``max_open_for_s``). Time is an argument, never read from a clock, so the breaker is a plain
state machine that tests drive step by step.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass
class CircuitBreaker:
    failure_threshold: int = 3
    open_for_s: float = 1.0
    max_open_for_s: float = 30.0
    consecutive_failures: int = 0
    _opened_at: float | None = None
    _cooldown_s: float = 0.0
    _probe_in_flight: bool = False

    def state(self, now: float) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if now < self._opened_at + self._cooldown_s:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def refusal(self, now: float) -> str | None:
        """Why the site may not take a request now, or None when it may."""
        state = self.state(now)
        if state is BreakerState.OPEN:
            assert self._opened_at is not None
            left = self._opened_at + self._cooldown_s - now
            return (
                f"circuit open after {self.consecutive_failures} consecutive failures, "
                f"next probe in {left:.1f}s"
            )
        if state is BreakerState.HALF_OPEN and self._probe_in_flight:
            return "circuit half-open, its probe request is in flight"
        return None

    def on_attempt(self, now: float) -> bool:
        """A request is sent to the site; True when it is the half-open state's probe."""
        if self.state(now) is BreakerState.HALF_OPEN:
            self._probe_in_flight = True
            return True
        return False

    def on_success(self) -> None:
        self.consecutive_failures = 0
        self._opened_at = None
        self._cooldown_s = 0.0
        self._probe_in_flight = False

    def on_failure(self, now: float, *, probe: bool) -> None:
        """A request failed. Only the probe's failure extends an open breaker: requests sent
        before the breaker opened may still fail afterwards, and they say nothing new."""
        self.consecutive_failures += 1
        if probe:
            self._open(now, min(self._cooldown_s * 2, self.max_open_for_s))
        elif self._opened_at is None and self.consecutive_failures >= self.failure_threshold:
            self._open(now, self.open_for_s)

    def on_abandoned(self, *, probe: bool) -> None:
        """The request ended without telling either way (the client went away)."""
        if probe:
            self._probe_in_flight = False

    def _open(self, now: float, cooldown_s: float) -> None:
        self._opened_at = now
        self._cooldown_s = cooldown_s
        self._probe_in_flight = False
