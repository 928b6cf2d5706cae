"""Small local HTTP servers that stand in for sites in the router's tests and benchmark.

A :class:`FakeSite` answers like a site's Ray Serve proxy in front of soberana's runtime: every
model under its route prefix ``/<namespace>/<name>``, with the OpenAI-compatible API (Server-Sent
Events when ``"stream": true``) and ``/predict``. It records every request it receives, and a
test makes it fail on purpose: answer 5xx, drop the connection, or hold responses. Streamed
answers can be gated so that the test releases each chunk itself.

``python -m tests.router_sites --port P --name N`` runs one as a process, for tests that kill it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from soberana.serving.router.app import Background, Router, serving_router


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeSite:
    name: str
    failing_status: int | None = None  # answer every request with this status
    drop_connections: bool = False  # close every connection without answering
    chunks: int = 3  # events in a streamed answer
    # when set, each streamed chunk waits for a token: True sends it, False drops the connection
    gate: asyncio.Queue[bool] | None = None
    hold: asyncio.Event | None = None  # when set, answers wait until it is set
    failing_paths: dict[str, int] = field(default_factory=dict)  # path after the model: status
    silent_paths: set[str] = field(default_factory=set)  # paths never answered
    headers: dict[str, str] = field(default_factory=dict)  # added to every answer
    received: list[Received] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._add_headers])
        app.router.add_route("*", "/{namespace}/{name}/{path:.*}", self._handle)
        return app

    @web.middleware
    async def _add_headers(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await handler(request)
        if not response.prepared:
            response.headers.update(self.headers)
        return response

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(Received(request.method, request.path, dict(request.headers), body))
        if self.hold is not None:
            await self.hold.wait()
        if self.drop_connections:
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        if request.match_info["path"] in self.silent_paths:
            await asyncio.Event().wait()
        status = self.failing_paths.get(request.match_info["path"], self.failing_status)
        if status is not None:
            return web.json_response({"error": {"message": "failing"}}, status=status)
        model = f"{request.match_info['namespace']}/{request.match_info['name']}"
        path = request.match_info["path"]
        document: Any = json.loads(body) if body else {}
        if path in ("v1/chat/completions", "v1/completions") and document.get("stream"):
            return await self._stream(request, model, path)
        if path == "v1/chat/completions":
            return web.json_response(_chat_completion(model, self.name))
        if path == "v1/completions":
            return web.json_response(_completion(model, self.name))
        if path == "v1/models":
            return web.json_response({"object": "list", "data": [{"id": model}]})
        return web.json_response({"model": model, "site": self.name, "path": "/" + path})

    async def _stream(self, request: web.Request, model: str, path: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **self.headers})
        await response.prepare(request)
        for index in range(self.chunks):
            if self.gate is not None and not await self.gate.get():
                assert request.transport is not None
                request.transport.abort()
                return response
            chunk = _chunk(model, self.name, index, chat=path == "v1/chat/completions")
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _chat_completion(model: str, site: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{site}",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"hello from {site}"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
    }


def _completion(model: str, site: str) -> dict[str, Any]:
    return {
        "id": f"cmpl-{site}",
        "object": "text_completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "text": f"hello from {site}", "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
    }


def _chunk(model: str, site: str, index: int, *, chat: bool) -> dict[str, Any]:
    text = f"{site}-{index} "
    choice = {"index": 0, "finish_reason": None}
    if chat:
        return {
            "id": f"chatcmpl-{site}",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{**choice, "delta": {"content": text}}],
        }
    return {
        "id": f"cmpl-{site}",
        "object": "text_completion",
        "created": 0,
        "model": model,
        "choices": [{**choice, "text": text}],
    }


@asynccontextmanager
async def serving(app: web.Application, port: int = 0) -> AsyncIterator[str]:
    """Serve ``app`` on loopback (a free port unless given); yields its base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def running_router(
    router: Router, background: tuple[Background, ...] = ()
) -> AsyncIterator[str]:
    """Serve ``router`` on a free loopback port; yields its base URL."""
    async with serving_router(router, "127.0.0.1", 0, background, shutdown_timeout_s=0.5) as server:
        yield f"http://127.0.0.1:{server.port}"


async def _main(port: int, name: str) -> None:
    async with serving(FakeSite(name).app(), port):
        print("serving", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    arguments = parser.parse_args()
    asyncio.run(_main(arguments.port, arguments.name))
