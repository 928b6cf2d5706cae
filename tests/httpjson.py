"""A small JSON-over-HTTP client on the standard library, for tests and benchmarks.

It never raises for an HTTP status: a test looks at the status and the JSON error body itself.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    method: str,
    url: str,
    body: Any = None,
    timeout: float = 60,
    *,
    raw: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """Send ``body`` as JSON (or ``raw`` bytes as if JSON) and return the reply, whatever its
    status."""
    request = _request(method, url, body, raw, headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Reply(error.code, error.read())


def events(url: str, body: Any, timeout: float = 60) -> Iterator[str]:
    """POST ``body`` and yield the data of each Server-Sent Event as it arrives."""
    request = _request("POST", url, body, None, {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        content_type = response.headers.get("content-type", "")
        assert content_type.startswith("text/event-stream"), content_type
        for raw in response:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("data: "):
                yield line.removeprefix("data: ")


def _request(
    method: str, url: str, body: Any, raw: bytes | None, headers: Mapping[str, str]
) -> urllib.request.Request:
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    content = {} if data is None else {"Content-Type": "application/json"}
    return urllib.request.Request(url, data=data, headers={**content, **headers}, method=method)
