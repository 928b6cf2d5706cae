"""The router's own error responses, in the OpenAI shape the sites also use.

``{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}``: ``type`` is
``invalid_request_error`` for the client's mistakes and ``server_error`` otherwise, and ``code``
is stable for programs to test (``no_compliant_site``, ``model_not_found``, ...).
"""

from __future__ import annotations

from soberana.serving.router.httpserver import Headers, Response, json_response


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    param: str | None = None,
    headers: Headers = (),
) -> Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return json_response(body, status=status, headers=headers)
