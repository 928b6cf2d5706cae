"""Settings of a running operator, with the defaults ``soberana operator`` uses."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from soberana.operator.core.api import DEFAULT_NAMESPACE
from soberana.operator.core.placement import Solver
from soberana.operator.core.placement.options import PlacementOptions

JITTER = 1.2  # client-go's JitterFactor: a candidate retries every retry period x [1, 1.2)


def default_identity() -> str:
    """``<hostname>_<uuid>`` as client-go makes it: the pod name, unique per process."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


@dataclass(frozen=True)
class LeaderElection:
    """Who this replica is in the election, and its timing (controller-runtime's defaults: a
    15 s lease, renewed within 10 s, tried every 2 s)."""

    identity: str = field(default_factory=default_identity)
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0

    def __post_init__(self) -> None:
        if self.retry_period_s <= 0 or self.lease_duration_s < 1:
            raise ValueError("the retry period must be > 0 and the lease duration >= 1s")
        if not self.lease_duration_s > self.renew_deadline_s:
            raise ValueError(
                f"the lease duration ({self.lease_duration_s:g}s) must be longer than the renew "
                f"deadline ({self.renew_deadline_s:g}s)"
            )
        if not self.renew_deadline_s > JITTER * self.retry_period_s:
            raise ValueError(
                f"the renew deadline ({self.renew_deadline_s:g}s) must be longer than "
                f"{JITTER:g} x the retry period ({self.retry_period_s:g}s)"
            )


@dataclass(frozen=True)
class PlacementChange:
    """A deployment's placement changed (its Placed, Moved or Unplaceable Event), as evidence."""

    deployment: str  # namespace/name
    reason: str  # the Event's reason
    message: str
    old: tuple[tuple[str, int], ...]  # (site, replicas) before
    new: tuple[tuple[str, int], ...]  # (site, replicas) now
    jurisdictions: Mapping[str, str]  # of the sites above that are known


@dataclass(frozen=True)
class OperatorConfig:
    """How the operator reconciles.

    ``debounce_s``: after a change, wait this long for more changes before re-planning, so that a
    burst (``kubectl apply -f dir/``, an operator restart) costs one plan, not one per object.
    ``solver``: ``fast`` (heuristic) or ``optimal`` (MILP).
    ``write_concurrency``: status and finalizer patches in flight at once.
    ``deploy``: apply Serve configs to sites and watch them; False places only (a dry run that
    still writes statuses), and every site counts as healthy.
    ``probe_interval_s``: how often each site is looked at.
    ``unhealthy_after_s``: how long a site may stay unreachable before its deployments move.
    ``secrets_namespace``: where the Secrets that sites refer to live (the operator's namespace).
    ``leader_election``: take the Lease ``soberana-operator`` there before writing anything; None
    writes at once (one replica only).
    ``metrics_port``: serve Prometheus metrics on this port; None serves none.
    """

    solver: Solver = "fast"
    debounce_s: float = 0.5
    write_concurrency: int = 16
    deploy: bool = True
    probe_interval_s: float = 5.0
    unhealthy_after_s: float = 30.0
    secrets_namespace: str = DEFAULT_NAMESPACE
    placement: PlacementOptions = field(default_factory=PlacementOptions)
    # told of every placement change, such as the audit log (it must not block)
    on_placement: Callable[[PlacementChange], None] | None = None
    leader_election: LeaderElection | None = None
    metrics_port: int | None = None

    def __post_init__(self) -> None:
        if self.solver not in ("fast", "optimal"):
            raise ValueError(f"solver must be fast or optimal, not {self.solver!r}")
        if self.debounce_s < 0 or self.write_concurrency < 1:
            raise ValueError("debounce_s >= 0 and write_concurrency >= 1")
        if self.probe_interval_s <= 0 or self.unhealthy_after_s < 0:
            raise ValueError("probe_interval_s > 0 and unhealthy_after_s >= 0")
