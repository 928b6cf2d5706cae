"""What every hard constraint builds on: checks and rejections, the screening state, the placement
a constraint checks, and the contexts its explanations are written from.

A :class:`Constraint` has up to three facets, each optional:

* :meth:`Constraint.screen`, its vectorised verdict on every (deployment, site) pair that no earlier
  constraint rejected, as numpy arrays over deployments x sites (and x pools);
* :meth:`Constraint.admits`, its check of one deployment's candidate placement, and
  :meth:`Constraint.program`, its rows in the ``optimal`` solver's MILP (the ``fast`` solver's
  vectorised forms call the same module's helpers, such as :func:`.budget.within`);
* its explanation lines: the rejection line of each pair it screens out, :meth:`Constraint.unplaced`
  (why a deployment every site of which fell at one of its checks is unplaced), and
  :meth:`Constraint.shortfall` (what the sites with room cannot do together).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from soberana.operator.core.api import ModelDeploymentSpec
from soberana.operator.core.placement.arrays import BoolArray, FloatArray, IntArray, RejectionArray
from soberana.operator.core.placement.pools import Pool
from soberana.operator.core.placement.world import Site

Assignment = tuple[tuple[int, int], ...]
"""One deployment's placement: (option index, replicas) pairs in option order."""

PASSED = -1
"""The rejection index of a site that passes every check."""


@dataclass(frozen=True)
class Check:
    """One screening check, named as rejection lines start (``"GPU model"``)."""

    name: str


@dataclass(frozen=True)
class Rejection:
    """Why a site cannot host a deployment: the failed check and one line for people.

    ``least_cost`` is, for a budget rejection, the least hourly cost of a placement using the site.
    """

    check: Check
    line: str
    least_cost: float | None = None


class Rejections:
    """The distinct rejections, each made once."""

    def __init__(self) -> None:
        self.made: list[Rejection] = []
        self._index: dict[Hashable, int] = {}

    def add(self, rejection: Rejection) -> int:
        self.made.append(rejection)
        return len(self.made) - 1

    def of(self, key: Hashable, make: Callable[[], Rejection]) -> int:
        """The index of the rejection ``key`` names, made by ``make`` the first time."""
        index = self._index.get(key)
        if index is None:
            index = self._index[key] = self.add(make())
        return index

    def by_pair(
        self,
        failed: BoolArray,
        signature: IntArray,
        make: Callable[[int, int], Rejection],
    ) -> RejectionArray:
        """Rejection indices where ``failed`` (deployments x sites), made once per distinct
        (``signature`` of the deployment, site); ``make`` takes a deployment and a site."""
        rejected = np.full(failed.shape, PASSED, dtype=np.int32)
        deployments, sites = np.nonzero(failed)
        if not deployments.size:
            return rejected
        keys = signature[deployments] * failed.shape[1] + sites
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        made = np.array(
            [self.add(make(int(deployments[pair]), int(sites[pair]))) for pair in first.tolist()],
            dtype=np.int32,
        )
        rejected[deployments, sites] = made[inverse]
        return rejected


def signature(keys: Sequence[Hashable]) -> IntArray:
    """A number per key, equal for equal keys."""
    numbers: dict[Hashable, int] = {}
    return np.array([numbers.setdefault(key, len(numbers)) for key in keys], dtype=np.int64)


@dataclass(eq=False)
class Pairs:
    """Screening in progress over every (deployment, site) pair, in the order given.

    ``pools`` lists each site's pools, sites in order (``pool_site`` gives each one's site,
    ``pool_start`` each site's first). ``rejected[d, s]`` indexes ``rejections.made``, or is
    ``PASSED``. ``fits[d, p]`` says whether a replica of deployment d fits in pool p (whatever its
    site's verdict). ``runs_there`` marks the sites where a deployment has replicas running now.
    Deployment d's traffic entries are rows ``traffic_start[d]`` to ``traffic_start[d + 1]`` of
    ``trips``, the round-trip time from each site, ``inf`` when unreachable or beyond the SLO.
    """

    specs: Sequence[ModelDeploymentSpec]
    sites: Sequence[Site]
    pools: tuple[Pool, ...]
    pool_site: IntArray
    pool_start: IntArray
    runs_there: BoolArray
    rejections: Rejections = field(default_factory=Rejections)
    rejected: RejectionArray = field(init=False)
    fits: BoolArray = field(init=False)
    traffic_start: IntArray = field(init=False)
    trips: FloatArray = field(init=False)

    def __post_init__(self) -> None:
        deployments = len(self.specs)
        self.rejected = np.full((deployments, len(self.sites)), PASSED, dtype=np.int32)
        self.fits = np.zeros((deployments, len(self.pools)), dtype=np.bool_)
        self.traffic_start = np.zeros(deployments + 1, dtype=np.int64)
        self.trips = np.zeros((0, len(self.sites)))

    @property
    def passed(self) -> BoolArray:
        """The pairs no check has rejected yet."""
        passed: BoolArray = self.rejected == PASSED
        return passed

    def reject(self, failed: RejectionArray) -> None:
        """Record the rejections of ``failed`` for the pairs no earlier check rejected."""
        np.copyto(self.rejected, failed, where=(self.rejected == PASSED) & (failed != PASSED))

    def any_by_site(self, by_pool: BoolArray) -> BoolArray:
        """Whether any pool of each site (every site has one) is True, by row."""
        if not self.pool_start.size:
            return np.zeros((by_pool.shape[0], 0), dtype=np.bool_)
        found: BoolArray = np.logical_or.reduceat(by_pool, self.pool_start, axis=1)
        return found


class Placement(Protocol):
    """What a constraint reads of one deployment's side of the problem (``problem.Demand``).

    Options are the pools a replica may use, in pool order: ``site`` and ``price`` by option,
    ``reach`` by traffic region then option (``inf`` beyond reach or SLO), ``keep_only`` marks the
    options only the running placement (``current``) may use.
    """

    @property
    def spec(self) -> ModelDeploymentSpec: ...
    @property
    def replicas(self) -> int: ...
    @property
    def gpus(self) -> int: ...
    @property
    def memory(self) -> int: ...
    @property
    def min_sites(self) -> int: ...
    @property
    def budget(self) -> float: ...
    @property
    def site(self) -> IntArray: ...
    @property
    def price(self) -> FloatArray: ...
    @property
    def reach(self) -> FloatArray: ...
    @property
    def keep_only(self) -> BoolArray: ...
    @property
    def current(self) -> Assignment | None: ...
    @property
    def cpu_only(self) -> bool: ...
    @property
    def weights(self) -> FloatArray: ...
    @property
    def latency_weight(self) -> float: ...

    def cost(self, assignment: Assignment) -> float: ...
    def latency(self, assignment: Assignment) -> float: ...


@dataclass(frozen=True)
class Fallen:
    """A deployment every site of which failed screening, ``check`` the last check any reached:
    what its :meth:`Constraint.unplaced` line is written from. ``rejections`` is by site of
    ``sites``; ``examples`` describes the first few sites that fell at ``check``."""

    placement: Placement
    check: Check
    sites: Sequence[Site]
    rejections: Sequence[Rejection]
    examples: str
    scope: str  # the residency rule, " (in BR)", or ""


@dataclass(frozen=True)
class Usable:
    """The options of a placed-or-not deployment with ``room`` (replicas each could take), what a
    :meth:`Constraint.shortfall` line is written from; ``qualifier`` names such a site ("eligible
    site with free GPUs")."""

    placement: Placement
    sites: Sequence[Site]
    options: IntArray  # those with room
    room: IntArray
    qualifier: str
    scope: str


class Program(Protocol):
    """The MILP being built (``optimal._Model``): a column is a variable, a row a linear range."""

    def column(self, cost: float, lower: float, upper: float, integral: bool) -> int:
        """A new variable with its objective coefficient and bounds; its index."""
        ...

    def row(self, terms: list[tuple[int, float]], lower: float, upper: float) -> None:
        """``lower <= sum(coefficient * variable) <= upper`` over ``terms`` (variable,
        coefficient)."""
        ...


@dataclass(frozen=True)
class Columns:
    """One deployment's variables in the MILP: ``placed`` (p, 0 or 1), and by option the
    ``replicas`` it holds (x) and whether it is ``used`` (z, 0 or 1, with z <= x <= room z)."""

    placed: int
    replicas: list[int]
    used: list[int]


class Constraint:
    """A hard constraint; see the module docstring for its facets. Every facet is optional."""

    checks: tuple[Check, ...] = ()
    """Its screening checks, in the order they run."""

    def screen(self, pairs: Pairs) -> None:
        """Reject, in ``pairs``, the pairs that fail this constraint (and narrow ``pairs.fits``)."""

    def admits(self, placement: Placement, assignment: Assignment) -> bool:
        """Whether ``assignment`` (options and replicas of ``placement``) meets the constraint."""
        return True

    def program(self, program: Program, placement: Placement, columns: Columns) -> None:
        """Add the rows that make ``program`` meet the constraint for ``placement``."""

    def unplaced(self, fallen: Fallen) -> str:
        """Why a deployment every site of which fell at ``fallen.check`` (one of ours) is not
        placed."""
        raise NotImplementedError(f"{type(self).__name__} screens nothing")

    def shortfall(self, usable: Usable) -> str | None:
        """What the options with room cannot do together for this constraint; None if they can."""
        return None
