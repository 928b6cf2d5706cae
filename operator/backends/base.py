"""The interface every site backend implements, and what it reports."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from soberana.operator.core.api import PlacementState
from soberana.operator.core.status import Observation

ServeConfig = Mapping[str, Any]

_SERVE_STATES: Final = {
    "RUNNING": PlacementState.RUNNING,
    "DEPLOYING": PlacementState.DEPLOYING,
    "NOT_STARTED": PlacementState.DEPLOYING,
    "DELETING": PlacementState.DEPLOYING,
    "DEPLOY_FAILED": PlacementState.FAILED,
    "UNHEALTHY": PlacementState.FAILED,
}


def serve_app_state(status: object) -> PlacementState:
    """A Ray Serve application status as a placement state; one not known yet is deploying."""
    return _SERVE_STATES.get(str(status), PlacementState.DEPLOYING)


class BackendError(Exception):
    """A site could not be reached or refused a request; the message is shown in conditions."""


@dataclass(frozen=True)
class SiteReport:
    """What one look at a site found: its applications, soberana's and anyone else's."""

    applications: Mapping[str, Observation] = field(default_factory=dict)
    foreign: tuple[str, ...] = ()  # applications soberana did not create: reported, never deleted
    present: frozenset[str] = frozenset()  # every application name there, even while deleting
    # soberana's applications as the site runs them (Serve app configs by name), where the
    # backend can tell; lets a new operator adopt a site that already runs its config
    deployed: Mapping[str, Mapping[str, Any]] | None = None
    version: str = ""


class SiteBackend(Protocol):
    """Deploys to one site and reports what runs there. Methods raise :class:`BackendError`."""

    async def apply(self, config: ServeConfig) -> None:
        """Make ``config`` (a ServeDeploySchema body) the site's soberana applications."""

    async def observe(self) -> SiteReport:
        """What runs at the site now."""

    async def close(self) -> None:
        """Release connections."""


BackendFactory = Callable[[], Awaitable[SiteBackend]]
"""Makes a site's backend when its agent first needs it (reading Secrets may fail: it retries)."""
