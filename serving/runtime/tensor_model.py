"""The ``torchscript`` runtime: a scripted torch module behind ``POST /predict``, batched.

A request carries a tensor as nested JSON lists, its first dimension being rows::

    POST /predict  {"inputs": [[0.1, 0.2, 0.3, 0.4]], "dtype": "float32"}
    -> 200         {"model": "payments/fraud-scoring", "outputs": [[0.7, 0.3]]}

Concurrent requests are batched with ``@serve.batch``: requests whose rows have the same shape
and dtype are concatenated along the first dimension, run through the module together, and the
output is split back by rows. ``GET /stats`` reports the batch sizes this replica has run.

A client's tensor that is ragged, not numeric or empty is a 400 before it joins a batch. A shape
the module rejects is a 400 too, unless the module has accepted that shape before: then the
module itself failed, and the answer is a 500.
"""

# Ray Serve's ingress wrapper sees the module's names as they are when the class is defined: so no
# ``from __future__ import annotations`` (FastAPI resolves the routes' parameter types at run
# time), and everything the class uses is defined above it.

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from soberana.serving.runtime.api import (
    ClientError,
    HealthResponse,
    health_response,
    install_error_handlers,
)
from soberana.serving.runtime.args import TorchScriptArgs
from soberana.serving.runtime.device import check_device, select_device
from soberana.serving.runtime.storage import local_model_path

DType = Literal["float32", "int64"]

app = FastAPI(title="soberana torchscript runtime")
install_error_handlers(app)


class PredictRequest(BaseModel):
    """``POST /predict``: one or more rows of input."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[Any] = Field(
        min_length=1, description="A tensor as nested lists; the first dimension is rows."
    )
    dtype: DType = Field("float32", description="Element type of the tensor.")

    def tensor(self) -> torch.Tensor:
        """The inputs as a tensor; a :class:`ClientError` when they are not a numeric tensor."""
        try:
            array = np.asarray(self.inputs, dtype=np.dtype(self.dtype))
        except (ValueError, TypeError, OverflowError) as error:
            raise ClientError(
                400,
                f"inputs is not a rectangular tensor of {self.dtype} numbers: {error}",
                param="inputs",
            ) from error
        if array.size == 0:
            raise ClientError(400, "inputs holds no numbers", param="inputs")
        return torch.from_numpy(array)


class PredictResponse(BaseModel):
    """The module's output for the request's rows, in the same order."""

    model: str
    outputs: list[Any]


class BatchStats(BaseModel):
    """``GET /stats``: the batches this replica has run since it started."""

    requests: int
    batches: int
    largest_batch: int
    batch_sizes: dict[str, int] = Field(description="How many batches had each size.")


@dataclass(frozen=True)
class _Signature:
    """What must match for requests to share one forward pass."""

    dtype: torch.dtype
    row_shape: tuple[int, ...]

    @classmethod
    def of(cls, tensor: torch.Tensor) -> "_Signature":
        return cls(tensor.dtype, tuple(tensor.shape[1:]))

    def describe(self) -> str:
        dims = ", ".join(["N", *(str(size) for size in self.row_shape)])
        return f"[{dims}] {str(self.dtype).removeprefix('torch.')}"


@dataclass
class _BatchLog:
    sizes: Counter[int] = field(default_factory=Counter)

    def record(self, size: int) -> None:
        self.sizes[size] += 1

    def stats(self) -> BatchStats:
        return BatchStats(
            requests=sum(size * count for size, count in self.sizes.items()),
            batches=sum(self.sizes.values()),
            largest_batch=max(self.sizes, default=0),
            batch_sizes={str(size): count for size, count in sorted(self.sizes.items())},
        )


@serve.ingress(app)
class TensorModel:
    """One replica of a scripted torch module."""

    def __init__(self, args: TorchScriptArgs) -> None:
        self._args = args
        self._device = select_device()
        path = local_model_path(args.model_uri)
        module = torch.jit.load(str(path), map_location=self._device)  # type: ignore[no-untyped-call]
        self._module = module.eval()
        self._accepted: set[_Signature] = set()
        self._batches = _BatchLog()
        self._predict = serve.batch(
            max_batch_size=args.max_batch_size, batch_wait_timeout_s=args.batch_wait_timeout_s
        )(self._predict_batch)

    @app.post("/predict")
    async def predict(self, request: PredictRequest) -> PredictResponse:
        """Run the module on the request's rows, batched with concurrent requests."""
        outcome = await self._predict(request.tensor())
        if isinstance(outcome, ClientError):
            raise outcome
        return PredictResponse(model=self._args.served_model_name, outputs=outcome)

    @app.get("/stats")
    async def stats(self) -> BatchStats:
        return self._batches.stats()

    @app.get("/healthz", response_model=HealthResponse)
    async def healthz(self) -> JSONResponse:
        """200 while the replica can serve, 503 once its device has failed."""
        return health_response(self._device, self._args)

    def check_health(self) -> None:
        """Ray Serve's periodic health check: the replica is replaced when this raises."""
        check_device(self._device)

    async def _predict_batch(self, inputs: list[torch.Tensor]) -> list[list[Any] | ClientError]:
        self._batches.record(len(inputs))
        groups: dict[_Signature, list[int]] = {}
        for index, tensor in enumerate(inputs):
            groups.setdefault(_Signature.of(tensor), []).append(index)
        outcomes: list[list[Any] | ClientError] = [[] for _ in inputs]
        for signature, members in groups.items():
            rows = [inputs[index] for index in members]
            try:
                outputs = await asyncio.to_thread(self._forward, rows)
            except RuntimeError as error:
                if signature in self._accepted:
                    raise
                refusal = self._refusal(signature, error)
                for index in members:
                    outcomes[index] = refusal
                continue
            self._accepted.add(signature)
            for index, output in zip(members, outputs, strict=True):
                outcomes[index] = output
        return outcomes

    def _forward(self, rows: list[torch.Tensor]) -> list[list[Any]]:
        """The module's output for each tensor of ``rows``, which share a signature."""
        batch = torch.cat(rows).to(self._device)
        with torch.inference_mode():
            output = self._module(batch)
        if not isinstance(output, torch.Tensor) or output.shape[:1] != batch.shape[:1]:
            raise TypeError(
                "the module must return one tensor with a row per input row; it returned "
                f"{type(output).__name__} for {batch.shape[0]} rows"
            )
        sizes = [len(tensor) for tensor in rows]
        return [part.tolist() for part in torch.split(output.cpu(), sizes)]

    def _refusal(self, signature: _Signature, error: RuntimeError) -> ClientError:
        reason = next(
            (line for line in reversed(str(error).splitlines()) if line.strip()), str(error)
        )
        accepted = ", ".join(sorted(known.describe() for known in self._accepted))
        hint = f"; it accepts {accepted}" if accepted else ""
        return ClientError(
            400,
            f"the model cannot take inputs of shape {signature.describe()}: {reason}{hint}",
            param="inputs",
        )
