"""The HTTP surface the runtimes share: JSON errors for clients' mistakes, and ``/healthz``.

Every error is a JSON body in the OpenAI shape, ``{"error": {"message", "type", "param",
"code"}}``. A request that does not match its schema (malformed JSON, a missing or unknown field,
a value out of range) is a 400 whose message names the field, never a 500.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from soberana.serving.runtime.args import RuntimeArgs
from soberana.serving.runtime.device import device_fault

_CLIENT_ERROR = "invalid_request_error"
_SERVER_ERROR = "server_error"


class ClientError(Exception):
    """A request the runtime refuses; answered with ``status`` and a JSON error body."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, param=self.param, code=self.code)


class HealthResponse(BaseModel):
    """``GET /healthz``: whether the replica can serve, what and where."""

    status: Literal["ok", "unhealthy"]
    model: str
    format: Literal["torchscript", "transformers", "gguf"]
    device: str
    site: str | None
    message: str | None = None


def health_response(
    device: torch.device | str, args: RuntimeArgs, fault: str | None = None
) -> JSONResponse:
    """200 with a :class:`HealthResponse` while ``device`` works, 503 with one saying why not
    (``fault``, or for a torch device what :func:`device_fault` finds)."""
    if isinstance(device, torch.device):
        fault = device_fault(device)
    health = HealthResponse(
        status="ok" if fault is None else "unhealthy",
        model=args.served_model_name,
        format=args.format,
        device=str(device),
        site=args.site,
        message=fault,
    )
    return JSONResponse(status_code=200 if fault is None else 503, content=health.model_dump())


def check_model_name(requested: str | None, served: str) -> None:
    """Refuse (404, ``model_not_found``) a request naming a model this application does not
    serve."""
    if requested is not None and requested != served:
        raise ClientError(
            404,
            f"model {requested!r} is not served here; this application serves {served!r}",
            param="model",
            code="model_not_found",
        )


def error_response(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> JSONResponse:
    """A JSON error in the OpenAI shape."""
    kind = _CLIENT_ERROR if status < 500 else _SERVER_ERROR
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(status_code=status, content=body)


def install_error_handlers(app: FastAPI) -> None:
    """Answer schema violations, :class:`ClientError` and HTTP errors with JSON errors."""
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(ClientError, _client_error)
    app.add_exception_handler(HTTPException, _http_error)


async def _invalid_request(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = [_describe(detail) for detail in error.errors()]
    first = problems[0][0] if problems else None
    message = "; ".join(f"{field}: {text}" if field else text for field, text in problems)
    return error_response(400, message or "invalid request", param=first)


async def _client_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ClientError)
    return error.response()


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    return error_response(error.status_code, str(error.detail))


def _describe(detail: Any) -> tuple[str | None, str]:
    """(field, message) of one pydantic error, the field as ``messages[0].role``."""
    location: Sequence[str | int] = detail.get("loc", ())
    if location and location[0] == "body":
        location = location[1:]
    field = ""
    for part in location:
        field += f"[{part}]" if isinstance(part, int) else f".{part}" if field else str(part)
    if detail.get("type") == "extra_forbidden":
        return field or None, "unknown field"
    if detail.get("type") == "json_invalid":
        return None, f"the body is not valid JSON: {detail.get('ctx', {}).get('error', '')}"
    return field or None, str(detail.get("msg", "invalid value")).removeprefix("Value error, ")
