"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go and controller-runtime do it.

Every replica runs the candidate loop; the one holding the Lease reconciles, writes statuses and
deploys, and the others keep their watches warm and wait. :class:`Candidate` is the pure decision
logic (time is passed in: unit tests drive it without a clock or an API server); :class:`LeaseLock`
is the Lease I/O; :class:`LeaderElector` is the loop that joins them.

The rules are client-go's. Another holder's Lease counts as expired ``leaseDurationSeconds`` after
this replica *saw* it change, measured on this replica's monotonic clock (never by comparing
clocks across machines). The holder renews every ``retry_period_s``; it is leader only while its
last successful renewal *started* less than ``renew_deadline_s`` ago, so it stops writing before
anyone else may take over (``lease_duration_s - renew_deadline_s`` is the safety margin). A leader
that loses its Lease does what controller-runtime's manager does: it stops and the process exits
with an error, and the pod's restart makes it a candidate again. On a graceful stop the holder
releases the Lease (controller-runtime's ``LeaderElectionReleaseOnCancel``), so a rolling update
hands over at once instead of after a lease duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import ClientError
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from soberana.operator.controller.config import JITTER, LeaderElection

log = logging.getLogger(__name__)

LEASE_NAME = "soberana-operator"


@dataclass(frozen=True)
class LeaseRecord:
    """The parts of a Lease's spec that election reads and writes."""

    holder: str
    lease_duration_s: int
    acquire_time: dt.datetime | None
    renew_time: dt.datetime | None
    transitions: int
    resource_version: str = ""

    def same_spec(self, other: LeaseRecord | None) -> bool:
        return other is not None and (
            self.holder,
            self.lease_duration_s,
            self.acquire_time,
            self.renew_time,
            self.transitions,
        ) == (
            other.holder,
            other.lease_duration_s,
            other.acquire_time,
            other.renew_time,
            other.transitions,
        )


class Action(enum.Enum):
    CREATE = "create"  # no Lease yet
    ACQUIRE = "acquire"  # another holder's Lease expired or was released: take it
    RENEW = "renew"  # ours: renew it
    WAIT = "wait"  # another holder's Lease is valid


class Candidate:
    """What one replica knows about the Lease and what it should do next: no I/O, no clock."""

    def __init__(self, settings: LeaderElection) -> None:
        self.identity = settings.identity
        self.timing = settings
        self.observed: LeaseRecord | None = None
        self.observed_at = 0.0  # local monotonic time the observed record last changed
        self.renewed_at: float | None = None  # when our last successful write started

    def observe(self, record: LeaseRecord | None, now: float) -> None:
        """Note a record read at ``now``; a changed one restarts its expiry on our clock."""
        if record is None:
            self.observed = None
            return
        if not record.same_spec(self.observed):
            self.observed_at = now
        self.observed = record

    def decide(self, now: float) -> Action:
        record = self.observed
        if record is None:
            return Action.CREATE
        if record.holder == self.identity:
            return Action.RENEW
        if not record.holder or now >= self.observed_at + record.lease_duration_s:
            return Action.ACQUIRE
        return Action.WAIT

    def desired(self, wall: dt.datetime) -> LeaseRecord:
        """The spec to write for :meth:`decide`'s CREATE, ACQUIRE or RENEW at wall time ``wall``."""
        record = self.observed
        duration = max(1, round(self.timing.lease_duration_s))
        if record is not None and record.holder == self.identity:
            return LeaseRecord(
                self.identity,
                duration,
                record.acquire_time or wall,
                wall,
                record.transitions,
                record.resource_version,
            )
        transitions = 0 if record is None else record.transitions + 1
        version = "" if record is None else record.resource_version
        return LeaseRecord(self.identity, duration, wall, wall, transitions, version)

    def wrote(self, record: LeaseRecord, started: float) -> None:
        """Our write of ``record``, begun at ``started``, succeeded."""
        self.renewed_at = started
        self.observed, self.observed_at = record, started

    def lost(self) -> None:
        """Give up leadership now (another holder seen, or the Lease released)."""
        self.renewed_at = None

    def is_leader(self, now: float) -> bool:
        """Whether writing is allowed at ``now``: our last renewal started within the deadline."""
        return (
            self.renewed_at is not None
            and self.observed is not None
            and self.observed.holder == self.identity
            and now - self.renewed_at < self.timing.renew_deadline_s
        )


# ---------------------------------------------------------------------------------------- I/O


def _record(lease: client.V1Lease) -> LeaseRecord:
    spec = lease.spec or client.V1LeaseSpec()
    return LeaseRecord(
        holder=spec.holder_identity or "",
        lease_duration_s=int(spec.lease_duration_seconds or 0),
        acquire_time=spec.acquire_time,
        renew_time=spec.renew_time,
        transitions=int(spec.lease_transitions or 0),
        resource_version=(lease.metadata.resource_version or "") if lease.metadata else "",
    )


class LeaseLock:
    """Reads and writes one Lease; every write is guarded by the resourceVersion it read."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str = LEASE_NAME) -> None:
        self._leases = client.CoordinationV1Api(api)
        self.namespace, self.name = namespace, name

    async def get(self) -> LeaseRecord | None:
        try:
            lease = await self._leases.read_namespaced_lease(self.name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return _record(lease)

    async def write(self, record: LeaseRecord, *, create: bool) -> LeaseRecord | None:
        """Create or update the Lease; None when someone else changed or created it first."""
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(
                name=self.name,
                namespace=self.namespace,
                resource_version=None if create else record.resource_version,
            ),
            spec=client.V1LeaseSpec(
                holder_identity=record.holder,
                lease_duration_seconds=record.lease_duration_s,
                acquire_time=record.acquire_time,
                renew_time=record.renew_time,
                lease_transitions=record.transitions,
            ),
        )
        try:
            if create:
                lease = await self._leases.create_namespaced_lease(self.namespace, body)
            else:
                lease = await self._leases.replace_namespaced_lease(self.name, self.namespace, body)
        except ApiException as error:
            if error.status in (409, 404):  # conflict, already exists, or deleted meanwhile
                return None
            raise
        return _record(lease)


def _wall() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LeaderElector:
    """The candidate loop: acquire, then renew until stopped or lost.

    ``on_started`` runs when this replica becomes leader, ``on_stopped`` as soon as it stops (the
    Lease lost, or the loop cancelled): it must stop every write at once. :meth:`run` returns
    only when the Lease was lost. Writes check :meth:`is_leader` just before they happen.
    """

    def __init__(
        self,
        lock: LeaseLock,
        candidate: Candidate,
        *,
        on_started: Callable[[], None],
        on_stopped: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lock, self.candidate = lock, candidate
        self._on_started, self._on_stopped = on_started, on_stopped
        self._clock = clock
        self.leading = False

    def is_leader(self) -> bool:
        return self.leading and self.candidate.is_leader(self._clock())

    async def _try(self) -> bool:
        """One attempt to acquire or renew; True when we hold the Lease after it."""
        started = self._clock()
        try:
            record = await self.lock.get()
            self.candidate.observe(record, started)
            action = self.candidate.decide(started)
            if action is Action.WAIT:
                return False
            wanted = self.candidate.desired(_wall())
            written = await self.lock.write(wanted, create=action is Action.CREATE)
        except (ApiException, ClientError, OSError, TimeoutError) as error:
            log.warning("leader election: could not read or write the Lease: %s", error)
            return False
        if written is None:
            return False
        if action is not Action.RENEW:
            log.info(
                "leader election: %s the Lease %s/%s as %s",
                "created" if action is Action.CREATE else "acquired",
                self.lock.namespace,
                self.lock.name,
                self.candidate.identity,
            )
        self.candidate.wrote(written, started)
        return True

    async def run(self) -> None:
        """Wait to become leader, then renew until the Lease is lost (then return)."""
        timing = self.candidate.timing
        log.info(
            "leader election: waiting for the Lease %s/%s as %s",
            self.lock.namespace,
            self.lock.name,
            self.candidate.identity,
        )
        while not await self._try():
            await asyncio.sleep(timing.retry_period_s * random.uniform(1.0, JITTER))
        self.leading = True
        self._on_started()
        try:
            while True:
                await asyncio.sleep(timing.retry_period_s)
                # one renewal attempt may take at most what is left of the deadline
                renewed = self.candidate.renewed_at
                left = timing.renew_deadline_s - (self._clock() - (renewed or 0.0))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._try(), max(left, 0.001))
                observed = self.candidate.observed
                if observed is not None and observed.holder != self.candidate.identity:
                    self.candidate.lost()
                if not self.candidate.is_leader(self._clock()):
                    log.error(
                        "leader election lost: the Lease %s/%s was not renewed in %gs",
                        self.lock.namespace,
                        self.lock.name,
                        timing.renew_deadline_s,
                    )
                    return
        finally:
            if self.leading:
                self.leading = False
                self._on_stopped()

    async def release(self) -> None:
        """Hand the Lease back (we stopped writing first), so a standby takes over at once."""
        if not self.candidate.is_leader(self._clock()):
            return
        self.leading = False
        self.candidate.lost()
        observed = self.candidate.observed
        if observed is None:
            return
        released = LeaseRecord(
            "", 1, observed.acquire_time, _wall(), observed.transitions, observed.resource_version
        )
        try:
            if await self.lock.write(released, create=False) is not None:
                log.info(
                    "leader election: released the Lease %s/%s", self.lock.namespace, self.lock.name
                )
        except (ApiException, ClientError, OSError, TimeoutError) as error:
            log.warning("leader election: could not release the Lease: %s", error)
