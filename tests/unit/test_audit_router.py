"""The router's audit log, end to end over HTTP: it counts exactly what was sent, and fails closed.

10,000 randomised requests go through a real router to local sites in five jurisdictions, some of
them down (answering 500, dropping connections, or not listening at all), with random models,
residency headers, regions and API keys. The client tallies what it got; the audit log, once
verified, must report exactly that, and no request processed outside its restrictions. Then the
sink fails: by default the router refuses requests (503) until it recovers; failing open, it
serves them and counts them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from soberana.operator.audit.chain import Signer
from soberana.operator.audit.report import Report
from soberana.operator.audit.requests import FailureMode, router_audit
from soberana.operator.audit.verify import SegmentSource, verify
from soberana.operator.audit.writer import WriterSettings
from soberana.serving.router.app import Router, RouterSettings
from soberana.serving.router.auth import api_keys_from_document
from soberana.serving.router.forward import ForwardSettings
from soberana.serving.router.table import table_from_routes
from tests.router_sites import FakeSite, running_router, serving

SITES = {"br1": "BR", "br2": "BR", "scl1": "CL", "us1": "US", "fra1": "DE", "mx1": "MX"}
DOWN = {"br2": "5xx", "us1": "drop", "mx1": "closed"}  # mx1: nothing listens on its port
MODELS = {
    "ml/br-only": ({"allowedJurisdictions": ["BR"]}, ["br1", "br2", "us1"]),
    "ml/latam": ({"allowedJurisdictions": ["BR", "CL", "MX"]}, ["br2", "scl1", "mx1", "us1"]),
    "ml/open": ({}, ["us1", "fra1", "br1"]),
    "ml/no-eu": ({"deniedJurisdictions": ["DE"]}, ["fra1", "us1"]),
    "ml/mx": ({"allowedJurisdictions": ["MX"]}, ["mx1"]),
}
KEYS = {"sk-bound-brcl-00000000": ["BR", "CL"], "sk-free-000000000000000": None}
REGIONS = ["br-southeast", "cl-central", "us-east"]
SECRET = "the-prompt-must-never-be-logged"
PROMPT = {"role": "user", "content": SECRET}
REQUESTS = 10_000
CONCURRENCY = 16


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def sites() -> AsyncIterator[dict[str, str]]:
    async with AsyncExitStack() as stack:
        urls: dict[str, str] = {}
        for name in SITES:
            site = FakeSite(name)
            site.failing_status = 500 if DOWN.get(name) == "5xx" else None
            site.drop_connections = DOWN.get(name) == "drop"
            if DOWN.get(name) == "closed":
                urls[name] = f"http://127.0.0.1:{closed_port()}"
            else:
                urls[name] = await stack.enter_async_context(serving(site.app()))
        yield urls


def make_router(urls: dict[str, str], *, keys: bool) -> Router:
    router = Router(
        RouterSettings(region="br-southeast", forward=ForwardSettings(max_attempts=4)),
    )
    router.set_table(
        table_from_routes(
            {
                "sites": [
                    {"name": name, "url": urls[name], "jurisdiction": jurisdiction,
                     "latencyMs": {"br-southeast": 5 + index}}
                    for index, (name, jurisdiction) in enumerate(SITES.items())
                ],
                "models": [
                    {"name": model, "residency": residency, "sites": listed}
                    for model, (residency, listed) in MODELS.items()
                ],
            }
        )
    )  # fmt: skip
    if keys:
        router.set_api_keys(
            api_keys_from_document(
                {"keys": [{"tenant": f"t{i}", "key": key, "residency": bound}
                          for i, (key, bound) in enumerate(KEYS.items())]}
            )
        )  # fmt: skip
    return router


def writer_settings(directory: Path, **overrides: Any) -> WriterSettings:
    return WriterSettings(directory, "router-0", flush_interval_s=0.01, **overrides)


def segments(directory: Path) -> list[SegmentSource]:
    return [
        SegmentSource(str(path), lambda path=path: iter(path.open("rb")))  # type: ignore[misc]
        for path in sorted(directory.glob("*.jsonl"))
    ]


class Tally:
    def __init__(self) -> None:
        self.served: Counter[tuple[str, str, str]] = Counter()
        self.refused: Counter[tuple[str, str, int]] = Counter()
        self.other: Counter[tuple[str, int]] = Counter()


async def send(
    http: aiohttp.ClientSession, url: str, rng: random.Random, tally: Tally, index: int
) -> None:
    model = rng.choice([*MODELS, "ml/unknown"])
    headers = {"X-Request-Id": f"req-{index}"}
    if rng.random() < 0.4:
        headers["X-Soberana-Residency"] = ",".join(
            rng.sample(["BR", "CL", "US", "DE", "MX"], rng.randint(1, 3))
        )
    region = "br-southeast"
    if rng.random() < 0.6:
        region = headers["X-Soberana-Region"] = rng.choice(REGIONS)
    key = rng.choice([*KEYS, "sk-wrong-0000000000000"])
    headers["Authorization"] = f"Bearer {key}"
    body: dict[str, Any]
    if rng.random() < 0.5:
        target, body = f"{url}/v1/chat/completions", {"model": model, "messages": [PROMPT]}
    else:
        target, body = f"{url}/models/{model}/predict", {"x": [index], "note": SECRET}
    async with http.post(target, json=body, headers=headers) as response:
        reply = await response.read()
        site = response.headers.get("X-Soberana-Site")
        status = response.status
    if site is not None:
        tally.served[(model, SITES[site], region)] += 1
    elif status in (400, 401, 404) or (status == 503 and b"no_compliant_site" in reply):
        tally.refused[(model, json.loads(reply)["error"]["code"], status)] += 1
    else:
        tally.other[(model, status)] += 1


async def test_the_report_counts_exactly_what_was_sent_and_nothing_left_its_restrictions(
    tmp_path: Path,
) -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    rng = random.Random(20261205)
    tally = Tally()
    audit_dir = tmp_path / "audit"
    async with sites() as urls:
        router = make_router(urls, keys=True)
        with router_audit(router, writer_settings(audit_dir, max_segment_bytes=1 << 20), signer):
            async with running_router(router) as url, aiohttp.ClientSession() as http:
                limit = asyncio.Semaphore(CONCURRENCY)

                async def one(index: int) -> None:
                    async with limit:
                        await send(http, url, rng, tally, index)

                await asyncio.gather(*(one(index) for index in range(REQUESTS)))

    report = Report()
    result = verify(segments(audit_dir), [signer.public], on_record=report.add)
    assert result.ok, result.problems
    assert result.logs["router-0"].segments > 1  # rotated by size along the way
    document = report.document()
    assert document["requests"] == REQUESTS
    assert document["lost_records"] == 0
    served = {
        (s["model"], s["jurisdiction"], s["region"]): s["requests"] for s in document["served"]
    }
    assert served == dict(tally.served)
    refused: Counter[tuple[str, str, int]] = Counter()
    for entry in document["refused"]:
        refused[(anonymous(entry["model"], entry["reason"]), entry["reason"], entry["status"])] += (
            entry["requests"]
        )
    sent: Counter[tuple[str, str, int]] = Counter()
    for (model, reason, status), count in tally.refused.items():
        sent[(anonymous(model, reason), reason, status)] += count
    assert refused == sent
    failed = {(f["model"], f["status"]): f["requests"] for f in document["failed"]}
    assert failed == dict(tally.other)
    # the mix exercised what it should: refusals of each kind, and some of every model served
    assert {reason for _, reason, _ in tally.refused} >= {
        "no_compliant_site",
        "invalid_api_key",
        "model_not_found",
    }
    assert {jurisdiction for _, jurisdiction, _ in tally.served} == {"BR", "CL", "DE"}  # us1 drops
    assert document["outside_restrictions"] == {"count": 0, "records": []}
    # what the records never hold: content, API keys
    logs = b"".join(path.read_bytes() for path in audit_dir.glob("*.jsonl"))
    assert SECRET.encode() not in logs
    assert not [key for key in KEYS if key.encode() in logs]
    assert b"sk-wrong" not in logs


def anonymous(model: str, reason: str) -> str:
    """The model as a refusal can know it: a request without a valid key may be refused
    before its body (where the OpenAI endpoints name the model) is read."""
    return "*" if reason == "invalid_api_key" else model


def break_next_segment(directory: Path, segment: int) -> Path:
    """Make the next segment file impossible to create, as a lost volume would."""
    blocker = directory / f"router-0-{segment:08d}.jsonl"
    blocker.symlink_to("/nonexistent/audit-volume-gone")
    return blocker


async def wait_for(condition: Any, what: str, timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("failure", ["closed", "open"])
async def test_a_failing_sink_refuses_requests_by_default_and_counts_them_when_open(
    tmp_path: Path, failure: FailureMode, caplog: pytest.LogCaptureFixture
) -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    audit_dir = tmp_path / "audit"
    settings = writer_settings(audit_dir, max_segment_bytes=4096, retry_interval_s=0.02)
    body = {"model": "ml/open", "messages": []}
    caplog.set_level(logging.ERROR, logger="soberana.operator.audit.writer")
    async with sites() as urls:
        router = make_router(urls, keys=False)
        with router_audit(router, settings, signer, failure) as audit:
            blocker = break_next_segment(audit_dir, 2)
            async with running_router(router) as url, aiohttp.ClientSession() as http:

                async def post() -> tuple[int, dict[str, Any]]:
                    async with http.post(f"{url}/v1/chat/completions", json=body) as response:
                        return response.status, await response.json(content_type=None)

                # fill the first segment until its successor cannot be created
                while audit.writer.failure is None:
                    status, _ = await post()
                    assert status == 200
                    await asyncio.to_thread(audit.writer.flush, 0.5)
                assert any("ALARM" in message for message in caplog.messages)
                status, reply = await post()
                async with http.get(f"{url}/metrics") as response:
                    metrics = await response.text()
                assert "soberana_audit_failing 1.0" in metrics
                if failure == "closed":
                    assert status == 503
                    assert reply["error"]["code"] == "audit_unavailable"
                    assert "audit log cannot be written" in reply["error"]["message"]
                    assert "soberana_audit_unaudited_requests_total 0.0" in metrics
                else:
                    assert status == 200
                    assert audit.unaudited >= 1
                    assert "soberana_audit_unaudited_requests_total 0.0" not in metrics
                blocker.unlink()  # the volume is back
                await wait_for(lambda: audit.writer.failure is None, "the writer to recover")
                status, _ = await post()
                assert status == 200

    result = verify(segments(audit_dir), [signer.public])
    assert result.ok, result.problems  # nothing lost, nothing out of order
