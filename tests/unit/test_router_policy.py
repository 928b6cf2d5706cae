"""The routing policy, pure: who may serve a request, in which order, and why the others not."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from soberana.operator.core.api import Residency
from soberana.serving.router.health import HealthBook
from soberana.serving.router.policy import (
    UNLISTED_REGION_RTT_MS,
    RequestScope,
    Restriction,
    decide,
)
from soberana.serving.router.table import ModelRoute, Replicas, RoutingTable, Site

NOW = 100.0


def site(name: str, jurisdiction: str, **latency: int) -> Site:
    return Site(
        name,
        f"http://{name}:8000",
        jurisdiction,
        {k.replace("_", "-"): v for k, v in latency.items()},
    )


def table(*sites: Site, residency: Residency | None = None, **not_ready: str) -> RoutingTable:
    model = ModelRoute(
        "ml/chat",
        residency or Residency(),
        tuple(Replicas(s.name, not_ready.get(s.name)) for s in sites),
    )
    return RoutingTable({s.name: s for s in sites}, {model.key: model})


def order(
    routing: RoutingTable, scope: RequestScope, health: HealthBook | None = None
) -> list[str]:
    decision = decide(routing, routing.models["ml/chat"], scope, health or HealthBook(), NOW)
    return [candidate.site.name for candidate in decision.candidates]


SITES = (
    site("br1", "BR", br_southeast=5, cl_central=60),
    site("scl1", "CL", br_southeast=60, cl_central=4),
    site("us1", "US", br_southeast=100),
)


def test_candidates_are_ordered_by_declared_rtt_from_the_client_region() -> None:
    routing = table(*SITES)
    assert order(routing, RequestScope("br-southeast")) == ["br1", "scl1", "us1"]
    assert order(routing, RequestScope("cl-central")) == ["scl1", "br1", "us1"]


def test_a_site_that_does_not_list_the_region_counts_as_far() -> None:
    routing = table(*SITES)
    decision = decide(
        routing, routing.models["ml/chat"], RequestScope("cl-central"), HealthBook(), NOW
    )
    assert decision.candidates[-1].rtt_ms == UNLISTED_REGION_RTT_MS


def test_load_moves_traffic_to_a_farther_site_once_the_near_one_is_busy() -> None:
    routing = table(*SITES[:2])
    health = HealthBook()
    health["br1"].in_flight = 10  # (5 + 0) * 11 = 55 < (60 + 0) * 1
    assert order(routing, RequestScope("br-southeast"), health)[0] == "br1"
    health["br1"].in_flight = 11  # 60 = 60: the tie goes to fewer requests in flight
    assert order(routing, RequestScope("br-southeast"), health)[0] == "scl1"


def test_observed_latency_adds_to_the_declared_rtt() -> None:
    routing = table(*SITES[:2])
    health = HealthBook()
    health["br1"].observe_latency(80.0)
    assert order(routing, RequestScope("br-southeast"), health) == ["scl1", "br1"]


def test_without_a_region_or_observations_load_then_name_decides() -> None:
    routing = table(*SITES)
    health = HealthBook()
    assert order(routing, RequestScope(), health) == ["br1", "scl1", "us1"]
    health["br1"].in_flight = 1
    assert order(routing, RequestScope(), health) == ["scl1", "us1", "br1"]


def test_every_excluded_site_says_why() -> None:
    routing = table(
        *SITES,
        Site("edge1", None, "BR"),
        residency=Residency(allowed_jurisdictions=["BR", "CL"]),
        scl1="placement is Deploying with no ready replica",
    )
    health = HealthBook()
    for _ in range(3):
        health["br1"].breaker.on_failure(NOW, probe=False)
    model = routing.models["ml/chat"]
    decision = decide(routing, model, RequestScope("br-southeast"), health, NOW)
    assert decision.candidates == ()
    assert [str(exclusion) for exclusion in decision.exclusions] == [
        "br1: circuit open after 3 consecutive failures, next probe in 1.0s",
        "scl1: placement is Deploying with no ready replica",
        "us1: US is not in allowedJurisdictions [BR, CL] of the model",
        "edge1: no Serve URL is known for the site",
    ]
    assert decision.refusal().startswith("no compliant site can serve model ml/chat: br1: ")


def test_a_site_missing_from_the_table_is_excluded() -> None:
    model = ModelRoute("ml/chat", Residency(), (Replicas("gone"),))
    decision = decide(
        RoutingTable({}, {"ml/chat": model}), model, RequestScope(), HealthBook(), NOW
    )
    assert [str(e) for e in decision.exclusions] == ["gone: not in the routing table"]


def test_a_model_placed_nowhere_says_so() -> None:
    model = ModelRoute("ml/chat", Residency(), ())
    decision = decide(
        RoutingTable({}, {"ml/chat": model}), model, RequestScope(), HealthBook(), NOW
    )
    assert decision.refusal() == "model ml/chat is not placed on any site"


def test_every_restriction_of_the_request_applies() -> None:
    routing = table(*SITES)
    scope = RequestScope(
        restrictions=(
            Restriction(frozenset({"BR", "CL"}), "X-Soberana-Residency"),
            Restriction(frozenset({"CL", "US"}), "the API key of tenant acme"),
        )
    )
    decision = decide(routing, routing.models["ml/chat"], scope, HealthBook(), NOW)
    assert [c.site.name for c in decision.candidates] == ["scl1"]
    assert [str(e) for e in decision.exclusions] == [
        "br1: BR is outside [CL, US] required by the API key of tenant acme",
        "us1: US is outside [BR, CL] required by X-Soberana-Residency",
    ]


JURISDICTIONS = ("BR", "CL", "US", "DE", "AR")
jurisdiction_sets = st.frozensets(st.sampled_from(JURISDICTIONS))


@st.composite
def worlds(draw: st.DrawFn) -> tuple[RoutingTable, RequestScope, HealthBook]:
    count = draw(st.integers(1, 6))
    sites = [
        Site(
            f"s{index}",
            draw(st.one_of(st.none(), st.just(f"http://s{index}:8000"))),
            draw(st.sampled_from(JURISDICTIONS)),
            draw(st.dictionaries(st.sampled_from(["r1", "r2"]), st.integers(0, 200))),
        )
        for index in range(count)
    ]
    allowed = draw(jurisdiction_sets)
    denied = draw(jurisdiction_sets) - allowed
    residency = Residency(
        allowed_jurisdictions=sorted(allowed), denied_jurisdictions=sorted(denied)
    )
    listed = draw(st.lists(st.sampled_from([s.name for s in sites] + ["ghost"]), unique=True))
    model = ModelRoute("ml/chat", residency, tuple(Replicas(name) for name in listed))
    restrictions = tuple(
        Restriction(codes, f"source {index}")
        for index, codes in enumerate(draw(st.lists(jurisdiction_sets, max_size=2)))
    )
    health = HealthBook()
    for s in sites:
        health[s.name].in_flight = draw(st.integers(0, 20))
        if draw(st.booleans()):
            health[s.name].observe_latency(draw(st.floats(0, 500)))
        for _ in range(draw(st.integers(0, 4))):
            health[s.name].breaker.on_failure(NOW - draw(st.floats(0, 5)), probe=False)
    routing = RoutingTable({s.name: s for s in sites}, {"ml/chat": model})
    return routing, RequestScope(draw(st.sampled_from([None, "r1", "r2"])), restrictions), health


@settings(max_examples=2000, deadline=None)
@given(worlds())
def test_no_candidate_ever_lies_outside_any_residency_and_the_decision_is_deterministic(
    world: tuple[RoutingTable, RequestScope, HealthBook],
) -> None:
    routing, scope, health = world
    model = routing.models["ml/chat"]
    decision = decide(routing, model, scope, health, NOW)
    residency = model.residency
    for candidate in decision.candidates:
        jurisdiction = candidate.site.jurisdiction
        assert jurisdiction not in residency.denied_jurisdictions
        assert (
            not residency.allowed_jurisdictions or jurisdiction in residency.allowed_jurisdictions
        )
        assert all(jurisdiction in r.jurisdictions for r in scope.restrictions)
        assert candidate.site.url is not None
    names = [c.site.name for c in decision.candidates] + [e.site for e in decision.exclusions]
    assert sorted(names) == sorted(r.site for r in model.replicas)  # each site accounted for once
    assert decide(routing, model, scope, health, NOW) == decision
