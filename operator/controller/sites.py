"""One agent per InferenceSite: applies the site's rendered Serve config and watches the site.

An agent applies its desired config whenever its hash differs from the last one the site accepted
(retrying with backoff), and looks at the site every ``probe_interval_s``. What it finds — reachable
or not, each application's state — feeds the reconciler, which turns it into conditions and
placement health: a site unreachable for longer than the grace period is treated as unhealthy, and
its deployments are placed elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from soberana.operator.backends.base import (
    BackendError,
    BackendFactory,
    ServeConfig,
    SiteBackend,
    SiteReport,
)
from soberana.operator.core.render import config_hash

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteHealth:
    """What the operator knows about reaching a site."""

    reachable: bool | None  # None: not looked at yet
    message: str
    unreachable_for_s: float
    applied_digest: str | None
    report: SiteReport | None


class SiteAgent:
    """Drives one site through its backend; every change it sees calls ``on_change``."""

    def __init__(
        self,
        name: str,
        backend: BackendFactory,
        *,
        on_change: Callable[[], None],
        probe_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._make_backend = backend
        self._on_change = on_change
        self._interval = probe_interval_s
        self._clock = clock
        self._backend: SiteBackend | None = None
        self._desired: ServeConfig | None = None
        self._desired_digest: str | None = None
        self._applied_digest: str | None = None
        self._applied: ServeConfig | None = None
        self._reachable: bool | None = None
        self._message = "not looked at yet"
        self._unreachable_since: float | None = None
        self._report: SiteReport | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ state

    def health(self) -> SiteHealth:
        since = self._unreachable_since
        return SiteHealth(
            reachable=self._reachable,
            message=self._message,
            unreachable_for_s=0.0 if since is None else self._clock() - since,
            applied_digest=self._applied_digest,
            report=self._report,
        )

    @property
    def converged(self) -> bool:
        """The site accepted the desired config."""
        return self._desired_digest is not None and self._desired_digest == self._applied_digest

    def pending(self, application: str) -> bool:
        """Whether the site has yet to run ``application`` as desired: its new config is not
        applied, and what the site is known to run (the config this agent applied, or else what
        the site reported) differs for that application."""
        if self._desired is None or self.converged:
            return False
        if self._applied is not None:
            known = _application(self._applied, application)
        elif self._report is not None and self._report.deployed is not None:
            known = self._report.deployed.get(application)
        else:
            return True
        return _application(self._desired, application) != known

    def applied_applications(self) -> set[str]:
        """Names of the applications in the config the site last accepted."""
        applications = (self._applied or {}).get("applications", [])
        return {str(app["name"]) for app in applications}

    def want(self, config: ServeConfig) -> None:
        """Make ``config`` the site's desired config; applied soon if it differs."""
        digest = config_hash(config)
        if digest != self._desired_digest:
            self._desired, self._desired_digest = config, digest
            self._wake.set()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"site-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._backend is not None:
            await self._backend.close()
            self._backend = None

    async def _run(self) -> None:
        backoff = self._interval
        while True:
            changed = await self._step()
            if changed:
                self._on_change()
            failing = self._reachable is False or not (self.converged or self._desired is None)
            delay = min(backoff, 60.0) if failing else self._interval
            backoff = backoff * 2 if failing else self._interval
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _step(self) -> bool:
        """Apply if needed, then look; return whether anything the reconciler reads changed."""
        before = (self._reachable, self._message, self._applied_digest, self._report)
        try:
            if self._backend is None:
                self._backend = await self._make_backend()
            if self._desired is not None and not self.converged:
                if self._applied is None and runs(await self._backend.observe(), self._desired):
                    # a restarted or newly elected operator: nothing to re-apply
                    log.info(
                        "site %s already runs Serve config %s", self.name, self._desired_digest
                    )
                else:
                    await self._backend.apply(self._desired)
                    log.info("site %s: applied Serve config %s", self.name, self._desired_digest)
                self._applied, self._applied_digest = self._desired, self._desired_digest
            self._report = await self._backend.observe()
            self._reachable, self._message = True, f"Ray {self._report.version}".strip()
            self._unreachable_since = None
        except BackendError as error:
            if self._reachable is not False:
                log.warning("site %s is unreachable: %s", self.name, error)
            self._reachable, self._message = False, str(error)
            if self._unreachable_since is None:
                self._unreachable_since = self._clock()
        return before != (self._reachable, self._message, self._applied_digest, self._report)


def _application(config: ServeConfig, name: str) -> Mapping[str, Any] | None:
    return next((app for app in config.get("applications", []) if app.get("name") == name), None)


def runs(report: SiteReport, config: ServeConfig) -> bool:
    """Whether the site runs exactly ``config``'s applications, as the backend reports them.

    Compared as values, not by hash: Ray hands numbers back as floats (``1073741824.0``).
    """
    if report.deployed is None:
        return False
    wanted = {str(app["name"]): app for app in config.get("applications", [])}
    return dict(report.deployed) == wanted


class SiteFleet:
    """The agents of all sites, created and replaced as sites and their backends change."""

    def __init__(self, on_change: Callable[[], None], probe_interval_s: float) -> None:
        self._on_change = on_change
        self._interval = probe_interval_s
        self._agents: dict[str, tuple[str, SiteAgent]] = {}

    def agents(self) -> Mapping[str, SiteAgent]:
        return {name: agent for name, (_, agent) in self._agents.items()}

    async def sync(self, backends: Mapping[str, tuple[str, BackendFactory]]) -> None:
        """Keep one running agent per site; ``backends`` maps a site to (identity, factory)."""
        for name in list(self._agents):
            identity, agent = self._agents[name]
            if name not in backends or backends[name][0] != identity:
                await agent.stop()
                del self._agents[name]
        for name, (identity, factory) in backends.items():
            if name not in self._agents:
                agent = SiteAgent(
                    name, factory, on_change=self._on_change, probe_interval_s=self._interval
                )
                agent.start()
                self._agents[name] = (identity, agent)

    async def stop(self) -> None:
        for _, agent in self._agents.values():
            await agent.stop()
        self._agents.clear()
