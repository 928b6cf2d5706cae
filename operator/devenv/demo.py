"""``soberana demo``: the whole system on one machine, step by step, with what it shows a person.

A real API server (the local control plane, or the cluster ``$KUBECONFIG`` names), three real Ray
clusters as the São Paulo and Santiago sites and a CPU-only edge box in Lima, the operator and the
router as real processes, and the scenario in ``examples/demo/``: a scripted model on GPUs and a
real chat model (SmolLM2 as a GGUF, served by llama.cpp on CPUs), streamed through the router with
the ``openai`` client. Every step says what it does and whether it worked; a failed
step stops the demo with the reason. Everything the demo started is stopped at the end.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from openai.types.chat import ChatCompletionMessageParam

from soberana.operator.core.crds import custom_resource_definitions
from soberana.operator.devenv.binaries import Binaries, ensure_all
from soberana.operator.devenv.controlplane import ControlPlane, free_port, wait_for
from soberana.operator.devenv.raysites import RaySite, start_ray_site

NAMESPACE = "soberana-demo"
SCENARIO = Path(__file__).resolve().parents[2] / "examples" / "demo"
GRACE_S = 5  # how long a site may be unreachable before the demo's operator re-places


class DemoError(RuntimeError):
    """A step did not work; the message says what was expected and what happened."""


@dataclass
class Demo:
    """The demo's state: what it started (stopped in reverse order) and how each step went."""

    state_dir: Path
    say: Callable[[str], None]
    started: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    kubectl: list[str] = field(default_factory=list)
    steps: list[tuple[str, bool]] = field(default_factory=list)

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[None]:
        number = len(self.steps) + 1
        self.say(f"\n==> {number}. {title}")
        began = time.monotonic()
        try:
            yield
        except Exception:
            self.steps.append((title, False))
            raise
        self.steps.append((title, True))
        self.say(f"    ok ({time.monotonic() - began:.0f}s)")

    # ------------------------------------------------------------------ helpers

    def run_kubectl(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [*self.kubectl, *args], input=stdin, capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            raise DemoError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def mdep(self, name: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(
            self.run_kubectl("get", "mdep", name, "-n", NAMESPACE, "-o", "json")
        )
        return loaded

    def condition(self, name: str, kind: str) -> dict[str, Any]:
        conditions = self.mdep(name).get("status", {}).get("conditions", [])
        return next((c for c in conditions if c["type"] == kind), {})

    def show(self, *args: str) -> None:
        for line in self.run_kubectl(*args).rstrip().splitlines():
            self.say(f"    {line}")


def _http(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        payload = error.read()
        return error.code, dict(error.headers), json.loads(payload) if payload else None


def run(state_dir: Path, *, once: bool, say: Callable[[str], None]) -> bool:
    """Run the demo; True when every step worked. Without ``once``, wait for Ctrl-C first."""
    demo = Demo(state_dir=state_dir, say=say)
    with demo.started:
        try:
            _scenario(demo)
        except (DemoError, TimeoutError, RuntimeError, OSError) as error:
            say(f"\nFAILED: {error}")
            say(f"logs: {state_dir}")
            return False
        say("\nEvery step worked. " + ("Stopping everything." if once else ""))
        if not once:
            say("Everything keeps running: try the commands above. Ctrl-C stops it all.")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
        say("Stopping the router, the operator, the Ray sites and the control plane...")
    return True


def _scenario(demo: Demo) -> None:
    say = demo.say
    state = demo.state_dir
    state.mkdir(parents=True, exist_ok=True)

    with demo.step("The Kubernetes API"):
        binaries = ensure_all(lambda message: say(f"    {message}"))
        kubeconfig = _kubernetes(demo, binaries)
        demo.kubectl = [str(binaries.kubectl), f"--kubeconfig={kubeconfig}"]
        say(f"    kubeconfig: {kubeconfig}")

    with demo.step("The models: a tiny scripted one made on the spot, SmolLM2 from its package"):
        from soberana.operator.devenv.tinymodels import (
            SCRIPTED_FEATURES,
            make_scripted_model,
            smollm2_gguf,
        )

        models = Models(make_scripted_model(state / "models" / "scorer"), smollm2_gguf())
        say(f"    {models.scripted}")
        say(f"    {models.gguf}")

    with demo.step("Three Ray clusters as sites: São Paulo (BR), Santiago (CL), Lima (PE, edge)"):
        sites = {}
        for name, ports, gpus in (
            ("sao-paulo", (22000, 22499), 2),
            ("santiago", (22500, 22999), 2),
            ("lima-edge", (23000, 23499), 0),
        ):
            say(f"    starting {name} (ray start --head, then Serve)...")
            accelerators = ("L4",) if gpus else ()
            site = start_ray_site(
                name, state, worker_ports=ports, num_gpus=gpus, accelerators=accelerators
            )
            demo.started.callback(site.stop)
            sites[name] = site
            say(f"    {name}: dashboard {site.dashboard_url}, Serve {site.serve_url}")

    with demo.step("The operator"):
        _start(
            demo,
            "operator",
            [
                "operator",
                "--kubeconfig",
                str(kubeconfig),
                "--secrets-namespace",
                NAMESPACE,
                "--probe-interval",
                "1",
                "--unhealthy-after",
                str(GRACE_S),
            ],
        )

    with demo.step(f"The scenario in {SCENARIO}"):
        documents: list[dict[str, Any]] = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        ]
        for name, site in sites.items():
            documents.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": f"{name}-local-ray", "namespace": NAMESPACE},
                    "data": {"token": base64.b64encode(site.token.encode()).decode()},
                }
            )
        for file in ("sites.yaml", "deployments.yaml"):
            for document in yaml.safe_load_all((SCENARIO / file).read_text()):
                if document:
                    documents.append(_localised(document, sites, models))
        demo.run_kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(documents))
        say(f"    applied {len(documents)} objects")

    with demo.step("Placement, deployment and status (kubectl get isite,mdep)"):
        say("    waiting until fraud-scoring, citizen-helper and smol-chat are Available...")
        for name in ("fraud-scoring", "citizen-helper", "smol-chat"):

            def available(name: str = name) -> bool:
                return bool(demo.condition(name, "Available").get("status") == "True")

            wait_for(
                available,
                timeout=600,
                interval=1,
                what=f"{name} to become Available",
            )
        wait_for(
            lambda: demo.condition("eu-archive", "Placed").get("status") == "False",
            timeout=60,
            interval=1,
            what="eu-archive to be reported unplaceable",
        )
        demo.show("get", "isite")
        demo.show("get", "mdep", "-n", NAMESPACE)
        say("    why eu-archive is not placed:")
        say(f"      {demo.condition('eu-archive', 'Placed')['message']}")
        say("    why fraud-scoring does not use virginia-paper:")
        say(f"      {demo.mdep('fraud-scoring')['status']['explanation']['virginia-paper']}")

    with demo.step("The router"):
        port = free_port()
        router_url = f"http://127.0.0.1:{port}"
        _start(
            demo,
            "router",
            [
                "router",
                "--kubeconfig",
                str(kubeconfig),
                "--port",
                str(port),
                "--region",
                "br-southeast",
            ],
        )

        def ready() -> bool:
            try:
                return _http("GET", f"{router_url}/readyz")[0] == 200
            except OSError:
                return False

        wait_for(ready, timeout=60, interval=0.5, what="the router to be ready")
        say(f"    {router_url}")

    row = {"inputs": [[0.5] * SCRIPTED_FEATURES]}

    def ask(model: str, region: str) -> tuple[int, str, Any]:
        status, headers, body = _http(
            "POST",
            f"{router_url}/models/{NAMESPACE}/{model}/predict",
            row,
            {"X-Soberana-Region": region},
        )
        site = headers.get("X-Soberana-Site", "-")
        shown = body.get("error", {}).get("code") if status != 200 and body else "ok"
        say(f"    {model:15} from {region:13} -> HTTP {status} served by {site:16} ({shown})")
        return status, site, body

    with demo.step("Requests through the router, from each user region"):
        expectations = [
            ("fraud-scoring", "br-southeast", "sao-paulo-local"),
            ("fraud-scoring", "cl-central", "santiago-local"),
            ("citizen-helper", "cl-central", "sao-paulo-local"),
        ]
        for model_name, region, expected in expectations:
            status, served_by, _ = ask(model_name, region)
            if status != 200 or served_by != expected:
                raise DemoError(
                    f"{model_name} from {region}: expected {expected}, got {status} {served_by}"
                )
        say("    the nearest compliant site serves; citizen-helper is served in BR even for Chile")

    with demo.step("A chat with SmolLM2 through the router, streamed (openai client)"):
        served_by = _chat(demo, router_url, "pe-south", "lima-edge-local")
        say(f"    streamed by {served_by}, the CPU-only edge box nearest to Peru")

    with demo.step("Failover: the São Paulo site goes down"):
        sites["sao-paulo"].stop()
        say("    São Paulo's Ray cluster is stopped")
        status, served_by, _ = ask("fraud-scoring", "br-southeast")
        if status != 200 or served_by != "santiago-local":
            raise DemoError(
                f"fraud-scoring should fail over to santiago-local, got {status} {served_by}"
            )
        status, _, body = ask("citizen-helper", "br-southeast")
        if status != 503 or body["error"]["code"] != "no_compliant_site":
            raise DemoError(f"citizen-helper must not leave BR: got {status} {body}")
        say(f"    citizen-helper is refused, never sent abroad: {body['error']['message']}")
        say("    smol-chat from Brazil fails over to the edge box in Peru (BR and PE allowed):")
        _chat(demo, router_url, "br-southeast", "lima-edge-local")
        status, _, body = _http(
            "POST",
            f"{router_url}/v1/chat/completions",
            {"model": f"{NAMESPACE}/smol-chat", "messages": CHAT, "max_tokens": 8},
            {"X-Soberana-Region": "br-southeast", "X-Soberana-Residency": "BR"},
        )
        code = (body or {}).get("error", {}).get("code")
        say(f"    smol-chat from Brazil, data must stay in BR -> HTTP {status} ({code})")
        if status != 503 or code != "no_compliant_site":
            raise DemoError(f"smol-chat restricted to BR must be refused: got {status} {body}")
        say(f"    refused, never sent to Peru: {body['error']['message']}")
        say(f"    after {GRACE_S}s unreachable, the operator re-places:")
        wait_for(
            lambda: (
                [p["site"] for p in demo.mdep("fraud-scoring")["status"].get("placements", [])]
                == ["santiago-local"]
                and demo.condition("fraud-scoring", "Available").get("status") == "True"
            ),
            timeout=300,
            interval=1,
            what="fraud-scoring to run on santiago-local only",
        )
        wait_for(
            lambda: demo.condition("citizen-helper", "Placed").get("status") == "False",
            timeout=120,
            interval=1,
            what="citizen-helper to be unplaced (no healthy BR site)",
        )
        demo.show("get", "isite")
        demo.show("get", "mdep", "-n", NAMESPACE)
        say(f"    citizen-helper: {demo.condition('citizen-helper', 'Placed')['message']}")


@dataclass(frozen=True)
class Models:
    """The demo's model files: the scripted one made here, and SmolLM2's GGUF."""

    scripted: Path
    gguf: Path


CHAT: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "In one sentence: why run AI models close to their users?"},
]


def _chat(demo: Demo, router_url: str, region: str, expected: str) -> str:
    """Stream a chat completion from smol-chat through the router as a client in ``region``,
    printing the text as it arrives; the site that served it, which must be ``expected``."""
    import openai

    client = openai.OpenAI(
        base_url=f"{router_url}/v1",
        api_key="unused",
        max_retries=0,
        timeout=120,
        default_headers={"X-Soberana-Region": region},
    )
    raw = client.chat.completions.with_raw_response.create(
        model=f"{NAMESPACE}/smol-chat", messages=CHAT, max_tokens=48, temperature=0, stream=True
    )
    site = raw.headers.get("X-Soberana-Site", "-")
    demo.say(f"    smol-chat from {region} -> served by {site}:")
    line = "      "
    pieces = 0
    for chunk in raw.parse():
        text = chunk.choices[0].delta.content if chunk.choices else None
        if text:
            pieces += 1
            line += text.lstrip() if not line.strip() else text
            if "\n" in line or len(line) > 96:
                demo.say(line.rstrip().replace("\n", " "))
                line = "      "
    if line.strip():
        demo.say(line.rstrip())
    if site != expected or pieces < 2:
        raise DemoError(f"smol-chat from {region}: expected a stream from {expected}, got {site}")
    return site


def _localised(
    document: dict[str, Any], sites: dict[str, RaySite], models: Models
) -> dict[str, Any]:
    """A scenario object with the URLs of the Ray clusters started here and the model files."""
    name = document["metadata"]["name"].removesuffix("-local")
    if document["kind"] == "InferenceSite" and name in sites:
        ray = document["spec"]["backend"]["ray"]
        ray["dashboardURL"], ray["serveURL"] = sites[name].dashboard_url, sites[name].serve_url
    if document["kind"] == "ModelDeployment":
        gguf = document["spec"]["model"].get("format") == "gguf"
        document["spec"]["model"]["uri"] = (models.gguf if gguf else models.scripted).as_uri()
    return document


def _kubernetes(demo: Demo, binaries: Binaries) -> Path:
    explicit = os.environ.get("KUBECONFIG")
    if explicit:
        demo.say("    using the cluster KUBECONFIG names; installing the CRDs there")
        path = Path(explicit.split(os.pathsep)[0])
        ControlPlane(demo.state_dir / "unused").apply_crds(
            path, binaries.kubectl, custom_resource_definitions()
        )
        return path
    plane = ControlPlane(demo.state_dir / "control-plane", progress=lambda m: demo.say(f"    {m}"))
    path = plane.up(binaries=binaries, crds=custom_resource_definitions())
    demo.started.callback(plane.down, quiet=True)
    return path


def _start(demo: Demo, name: str, arguments: list[str]) -> None:
    log = demo.state_dir / f"{name}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "soberana.operator.cli", *arguments],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def stop() -> None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    demo.started.callback(stop)
    if process.poll() is not None:
        raise DemoError(f"the {name} exited at once; see {log}")
    demo.say(f"    {name} running (pid {process.pid}), log: {log}")


def default_state_dir() -> Path:
    return (
        Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        / "soberana"
        / "demo"
    )
