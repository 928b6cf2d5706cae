"""Engine argument checks: which `spec.engine.args` keys each serving engine accepts.

Pure: no I/O and no import of the api package. Each engine module lists the keys it accepts
(`ENGINE_ARGS`), the keys soberana sets itself (`RESERVED_ARGS`, key -> the field it comes from)
and the version of the engine the list was taken from.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, NamedTuple

from soberana.operator.core.engines import llamacpp, vllm

__all__ = ["EngineArgs", "check_args", "engine_args_spec"]


class EngineArgs(NamedTuple):
    """The arguments one engine accepts and the ones soberana reserves."""

    accepted: frozenset[str]
    reserved: Mapping[str, str]
    version: str


_NO_ARGS = EngineArgs(frozenset(), {}, "")


_ENGINES: dict[str, EngineArgs] = {
    "vllm": EngineArgs(vllm.ENGINE_ARGS, vllm.RESERVED_ARGS, f"vLLM {vllm.VLLM_VERSION}"),
    "llamacpp": EngineArgs(
        llamacpp.ENGINE_ARGS, llamacpp.RESERVED_ARGS, llamacpp.XLLAMACPP_VERSION
    ),
    "transformers": _NO_ARGS,
    "torch": _NO_ARGS,
}


def engine_args_spec(engine: str) -> EngineArgs:
    """The argument lists of `engine` (KeyError for an engine soberana does not know)."""
    return _ENGINES[str(engine)]


def check_args(engine: str, args: Mapping[str, Any]) -> list[str]:
    """One message per bad key of `spec.engine.args` for `engine`; empty when all are accepted."""
    spec = _ENGINES.get(str(engine))
    if spec is None:
        return [
            f"spec.engine.name: unknown engine {engine!r}; one of {', '.join(sorted(_ENGINES))}"
        ]
    errors: list[str] = []
    for key in args:
        name = str(key)
        where = f"spec.engine.args.{name}"
        if name in spec.reserved:
            errors.append(
                f"{where}: soberana sets {name!r} itself from {spec.reserved[name]}; remove it"
            )
        elif name not in spec.accepted:
            errors.append(f"{where}: {_unknown(str(engine), name, spec)}")
    return errors


def _unknown(engine: str, name: str, spec: EngineArgs) -> str:
    if not spec.accepted:
        return f"unknown argument {name!r}: engine {engine} accepts no args"
    close = difflib.get_close_matches(name, sorted(spec.accepted), n=3, cutoff=0.6)
    source = f" ({spec.version})" if spec.version else ""
    if close:
        return (
            f"unknown argument {name!r} for engine {engine}{source}; "
            f"did you mean {', '.join(close)}?"
        )
    if len(spec.accepted) <= 40:
        return (
            f"unknown argument {name!r} for engine {engine}{source}; "
            f"valid: {', '.join(sorted(spec.accepted))}"
        )
    return (
        f"unknown argument {name!r} for engine {engine}{source}; "
        f"see the engine's documentation for its {len(spec.accepted)} arguments"
    )
