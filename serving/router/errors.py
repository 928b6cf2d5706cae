"""The router's own error responses, in the OpenAI shape the sites also use.

``{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}``: ``type`` is
``invalid_request_error`` for the client's mistakes and ``server_error`` otherwise, and ``code``
is stable for programs to test (``no_compliant_site``, ``model_not_found``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)
