"""The routing table from a static routes document and from API objects, and file following."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from soberana.operator.core.api import InferenceSite, ModelDeployment
from soberana.serving.router.files import FileFollower
from soberana.serving.router.table import (
    Replicas,
    RoutingTable,
    table_from_resources,
    table_from_routes,
)

ISSUE_EXAMPLE = """
sites:
- {name: br1, url: "http://10.0.0.5:8000", jurisdiction: BR, latencyMs: {br-southeast: 5}}
models:
- {name: ml/qwen-chat, residency: {allowedJurisdictions: [BR, CL]}, sites: [br1, scl1]}
"""


def test_the_documented_routes_file_loads() -> None:
    routing = table_from_routes(yaml.safe_load(ISSUE_EXAMPLE))
    assert routing.sites["br1"].url == "http://10.0.0.5:8000"
    assert routing.sites["br1"].latency_ms == {"br-southeast": 5}
    model = routing.models["ml/qwen-chat"]
    assert model.residency.allowed_jurisdictions == ["BR", "CL"]
    assert model.replicas == (Replicas("br1"), Replicas("scl1"))
    assert model.path_prefix == "/ml/qwen-chat"


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        ({"sites": [{"name": "a", "url": "ftp://x", "jurisdiction": "BR"}]}, "url"),
        ({"sites": [{"name": "a\r\nb", "url": "http://x", "jurisdiction": "BR"}]}, "name"),
        ({"sites": [{"name": "a", "url": "http://x", "jurisdiction": "Brazil"}]}, "jurisdiction"),
        ({"models": [{"name": "qwen", "sites": []}]}, "name"),
        ({"models": [{"name": "ml/a", "sites": ["x", "x"]}]}, "x listed more than once"),
        ({"models": [{"name": "ml/a", "residency": {"allowedJurisdictions": ["BR"],
                                                    "deniedJurisdictions": ["BR"]}}]}, "both"),
        ({"sites": [], "extra": 1}, "extra"),
    ],
)  # fmt: skip
def test_a_bad_routes_file_is_refused_naming_the_field(
    document: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValidationError, match=complaint):
        table_from_routes(document)


def site_object(name: str, *, ray: bool = True) -> InferenceSite:
    backend = (
        {"ray": {"dashboardURL": "http://h:8265", "serveURL": f"http://{name}:8000/"}}
        if ray
        else {"kuberay": {"kubeconfigSecretRef": {"name": "kc", "key": "kubeconfig"}}}
    )
    return InferenceSite.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "tier": "cloud",
                "region": "br-southeast",
                "jurisdiction": "BR",
                "gpus": [{"model": "L4", "count": 1, "memoryGiB": 24, "hourlyCost": 1}],
                "latencyMs": {"br-southeast": 3},
                "backend": backend,
            },
        }
    )


def deployment_object(placements: list[dict[str, Any]] | None) -> ModelDeployment:
    document: dict[str, Any] = {
        "metadata": {"name": "chat", "namespace": "ml"},
        "spec": {
            "model": {"uri": "file:///m"},
            "residency": {"allowedJurisdictions": ["BR"]},
        },
    }
    if placements is not None:
        document["status"] = {"placements": placements}
    return ModelDeployment.model_validate(document)


def placement(site: str, state: str, ready: int) -> dict[str, Any]:
    return {
        "site": site,
        "gpuModel": "L4",
        "replicas": 1,
        "readyReplicas": ready,
        "hourlyCost": 1,
        "state": state,
    }


def test_the_table_from_api_objects_routes_only_to_replicas_that_serve() -> None:
    routing = table_from_resources(
        [site_object("sp1"), site_object("sp2"), site_object("edge", ray=False)],
        [
            deployment_object(
                [
                    placement("sp1", "Running", 1),
                    placement("sp2", "Deploying", 0),
                    placement("edge", "Deploying", 1),  # rolling: one replica serves
                ]
            )
        ],
    )
    assert routing.sites["sp1"].url == "http://sp1:8000"
    assert routing.sites["edge"].url is None
    model = routing.models["ml/chat"]
    assert model.residency.allowed_jurisdictions == ["BR"]
    assert model.replicas == (
        Replicas("sp1"),
        Replicas("sp2", "placement is Deploying with no ready replica"),
        Replicas("edge"),
    )


def test_a_kuberay_site_is_reached_at_its_declared_serve_url() -> None:
    document = site_object("sp3", ray=False).model_dump(by_alias=True, exclude_none=True)
    document["spec"]["backend"]["kuberay"]["serveURL"] = "https://serve.sp3.example/"
    site = InferenceSite.model_validate(document)
    routing = table_from_resources([site], [deployment_object([placement("sp3", "Running", 1)])])
    assert routing.sites["sp3"].url == "https://serve.sp3.example"


def test_a_deployment_without_a_status_is_known_but_placed_nowhere() -> None:
    routing = table_from_resources([], [deployment_object(None)])
    assert routing.models["ml/chat"].replicas == ()


def test_a_followed_file_is_reloaded_on_change_and_a_bad_version_is_ignored(
    tmp_path: Path,
) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(ISSUE_EXAMPLE)
    published: list[RoutingTable] = []
    follower = FileFollower(path, table_from_routes, published.append)
    follower.load()
    assert not follower.reload_if_changed()
    path.write_text("sites: [{name: broken}]\n")
    assert not follower.reload_if_changed()  # invalid: the last good table stays
    assert not follower.reload_if_changed()
    path.write_text(ISSUE_EXAMPLE.replace("br1, scl1", "br1"))
    assert follower.reload_if_changed()
    assert len(published) == 2
    assert published[-1].models["ml/qwen-chat"].replicas == (Replicas("br1"),)
    path.unlink()
    assert not follower.reload_if_changed()
    assert len(published) == 2


def test_loading_a_missing_or_invalid_file_fails_at_start(tmp_path: Path) -> None:
    follower = FileFollower(tmp_path / "none.yaml", table_from_routes, lambda _: None)
    with pytest.raises(FileNotFoundError):
        follower.load()
    bad = tmp_path / "bad.yaml"
    bad.write_text("sites: 3\n")
    with pytest.raises(ValidationError):
        FileFollower(bad, table_from_routes, lambda _: None).load()
