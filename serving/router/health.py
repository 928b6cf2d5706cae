"""What the router has observed of each site: requests in flight, latency, and its breaker.

The router updates a :class:`SiteHealth` around every request it sends; the policy reads it.
Observed latency is time to the response headers (for a streamed completion, time to the first
byte), smoothed as an exponentially weighted moving average. Like the breaker it holds, nothing
here reads a clock: callers pass ``now``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from soberana.serving.router.breaker import CircuitBreaker

EWMA_WEIGHT = 0.3
"""Weight of the newest latency sample in the moving average."""


@dataclass
class SiteHealth:
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    in_flight: int = 0
    latency_ewma_ms: float | None = None  # None until the first response

    def observe_latency(self, latency_ms: float) -> None:
        if self.latency_ewma_ms is None:
            self.latency_ewma_ms = latency_ms
        else:
            self.latency_ewma_ms += EWMA_WEIGHT * (latency_ms - self.latency_ewma_ms)


@dataclass
class HealthBook:
    """The :class:`SiteHealth` of every site the router has heard of, by site name."""

    new_breaker: Callable[[], CircuitBreaker] = CircuitBreaker
    _sites: dict[str, SiteHealth] = field(default_factory=dict)

    def __getitem__(self, site: str) -> SiteHealth:
        health = self._sites.get(site)
        if health is None:
            health = self._sites[site] = SiteHealth(self.new_breaker())
        return health

    def __iter__(self) -> Iterator[tuple[str, SiteHealth]]:
        return iter(sorted(self._sites.items()))

    def keep_only(self, sites: set[str]) -> None:
        """Forget sites that left the routing table, except while requests to them run."""
        for name in [name for name in self._sites if name not in sites]:
            if self._sites[name].in_flight == 0:
                del self._sites[name]
