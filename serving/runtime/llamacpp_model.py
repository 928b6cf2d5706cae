"""The ``llamacpp`` runtime: a GGUF model served by llama.cpp behind an OpenAI-compatible API.

The engine is llama.cpp's own server, in process through the ``xllamacpp`` bindings: requests go
to it as calls, not over HTTP. Concurrent requests share its parallel slots and are decoded
together (continuous batching), so they are batched rather than served one after the other; a
request beyond the slots waits in llama.cpp's queue. Its threads follow the replica's ``cpus``,
and ``spec.engine.args`` set its ``CommonParams`` (:mod:`soberana.operator.core.engines.llamacpp`
lists them), over soberana's defaults :data:`DEFAULT_ENGINE_ARGS`.

The API is the one the ``transformers`` runtime serves (:mod:`~.language_model`): ``POST
/v1/completions`` and ``POST /v1/chat/completions``, with and without ``stream`` (Server-Sent
Events ending with ``data: [DONE]``), ``GET /v1/models``, ``GET /healthz``, and 4xx JSON errors
for a request the model cannot take. ``GET /engine/metrics`` is llama.cpp's own Prometheus text
(slots busy per decode, requests processing and deferred).

The ``transformers`` runtime stays as the fallback for models that llama.cpp and vLLM cannot load.
"""

# As in language_model: no ``from __future__ import annotations`` (FastAPI resolves the routes'
# parameter types at run time), and everything the class uses is defined above it.

import asyncio
import json
import secrets
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import xllamacpp  # type: ignore[import-untyped]
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel
from ray import serve

from soberana.serving.runtime.api import (
    ClientError,
    HealthResponse,
    check_model_name,
    health_response,
    install_error_handlers,
)
from soberana.serving.runtime.args import LlamaCppArgs
from soberana.serving.runtime.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    FinishReason,
    ModelCard,
    ModelList,
    Usage,
)
from soberana.serving.runtime.storage import local_model_path

DEFAULT_ENGINE_ARGS: Mapping[str, Any] = {
    "n_parallel": 8,  # slots: requests decoded together
    "n_ctx": 4096,  # tokens of KV cache, shared by the slots (kv_unified)
    "kv_unified": True,
}
MAX_ONGOING_REQUESTS = 64  # per replica; those beyond the slots wait in llama.cpp's queue

_COMPLETION_DEFAULT_MAX_TOKENS = 16  # as OpenAI's completions API
_ENUMS: Mapping[str, tuple[Any, str, Mapping[str, str]]] = {
    "cache_type_k": (xllamacpp.ggml_type, "GGML_TYPE_", {}),
    "cache_type_v": (xllamacpp.ggml_type, "GGML_TYPE_", {}),
    "flash_attn_type": (
        xllamacpp.llama_flash_attn_type,
        "LLAMA_FLASH_ATTN_TYPE_",
        {"on": "enabled", "off": "disabled"},
    ),
}

app = FastAPI(title="soberana llama.cpp runtime")
install_error_handlers(app)


def _enum_value(key: str, value: str) -> Any:
    enum, prefix, aliases = _ENUMS[key]
    name = prefix + aliases.get(value.lower(), value).upper()
    members = {member.name: member for member in enum}
    if name not in members:
        valid = sorted(m.removeprefix(prefix).lower() for m in members)
        raise ValueError(f"spec.engine.args.{key}: {value!r} is not one of {', '.join(valid)}")
    return members[name]


def engine_params(args: LlamaCppArgs, model: Path) -> xllamacpp.CommonParams:
    """llama.cpp's server parameters for ``args``: the model file, the threads and the args."""
    params = xllamacpp.CommonParams()
    params.model.path = str(model)
    params.model_alias = {args.served_model_name}
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.endpoint_metrics = True
    for key, value in {**DEFAULT_ENGINE_ARGS, **args.engine_args}.items():
        setattr(params, key, _enum_value(key, value) if key in _ENUMS else value)
    return params


def _finish_reason(reason: Any) -> FinishReason:
    return "length" if reason == "length" else "stop"


def _engine_error(result: Any) -> ClientError | None:
    """The client error llama.cpp answered with, or None for a result."""
    if not isinstance(result, Mapping) or "error" not in result:
        return None
    error = result["error"]
    status = int(error.get("code", 500))
    message = str(error.get("message", "the engine failed"))
    if error.get("type") == "exceed_context_size_error":
        return ClientError(400, message + ": shorten the prompt", code="context_length_exceeded")
    return ClientError(status if 400 <= status < 600 else 500, message)


def _usage(result: Mapping[str, Any]) -> Usage:
    usage = result.get("usage") or {}
    prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


class _Stream:
    """One streamed request: llama.cpp's callback (on the request's worker thread) hands chunks to
    the event loop; once the client has gone, the next callback tells llama.cpp to stop."""

    _END = object()

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._first: Any = self._END
        self.cancelled = False

    def push(self, chunk: Any) -> bool:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, chunk)
        return self.cancelled

    def run(self, handle: Callable[..., Any], body: dict[str, Any]) -> None:
        """On a worker thread: the whole generation, then the end marker."""
        try:
            handle(body, self.push)
        except Exception as error:  # reaches the client as a server error
            self.push({"error": {"code": 500, "message": f"the engine failed: {error}"}})
        finally:
            self.push(self._END)

    async def open(self) -> None:
        """Wait for the first chunk: raise the :class:`ClientError` llama.cpp refused with."""
        self._first = await self._queue.get()
        error = _engine_error(self._first)
        if error is not None:
            self.cancelled = True
            raise error

    def pending(self) -> bool:
        """Whether more chunks have already arrived."""
        return not self._queue.empty()

    async def chunks(self) -> AsyncIterator[Mapping[str, Any]]:
        """The chunks from the first on, until the end or an error."""
        chunk = self._first
        while chunk is not self._END and _engine_error(chunk) is None:
            yield chunk
            chunk = await self._queue.get()


def _event_stream(chunks: AsyncIterator[BaseModel], stream: _Stream) -> StreamingResponse:
    """Server-Sent Events of ``chunks``: each as soon as it comes, but the events of chunks that
    arrived together (a replica busier than its clients) in one write, which Serve sends on as
    one message."""

    async def events() -> AsyncIterator[str]:
        try:
            ready: list[str] = []
            async for chunk in chunks:
                ready.append(f"data: {chunk.model_dump_json()}\n\n")
                if not stream.pending():
                    yield "".join(ready)
                    ready.clear()
            ready.append("data: [DONE]\n\n")
            yield "".join(ready)
        finally:
            stream.cancelled = True

    return StreamingResponse(events(), media_type="text/event-stream")


def _json(response: BaseModel) -> JSONResponse:
    return JSONResponse(content=response.model_dump(mode="json"))


@serve.ingress(app)
class LlamaCppModel:
    """One replica of a GGUF model in llama.cpp's server."""

    def __init__(self, args: LlamaCppArgs) -> None:
        self._args = args
        params = engine_params(args, local_model_path(args.model_uri))
        # llama.cpp's server also listens on loopback: only this replica may use it (requests
        # go in as calls, which need no key; the listener serves /props and /health here)
        self._key = secrets.token_urlsafe(32)
        params.api_keys = [self._key]
        self._server = xllamacpp.Server(params)
        # one blocked thread per request in the engine: as many as the replica takes at once
        self._workers = ThreadPoolExecutor(MAX_ONGOING_REQUESTS, thread_name_prefix="llamacpp")
        props = self._engine_get("/props")
        self._context = int(props["default_generation_settings"]["n_ctx"])
        self._created = int(time.time())
        self._running: set[asyncio.Future[None]] = set()  # streamed generations, kept referenced

    def _engine_get(self, path: str) -> Any:
        """A GET on llama.cpp's own loopback listener (properties, health)."""
        request = urllib.request.Request(
            f"{self._server.listening_address}{path}",
            headers={"Authorization": f"Bearer {self._key}"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)

    @app.get("/v1/models")
    async def models(self) -> ModelList:
        card = ModelCard(
            id=self._args.served_model_name, created=self._created, max_model_len=self._context
        )
        return ModelList(data=[card])

    @app.post("/v1/completions", response_model=CompletionResponse)
    async def completions(self, request: CompletionRequest) -> Response:
        max_tokens = request.max_tokens or _COMPLETION_DEFAULT_MAX_TOKENS
        body = self._body(request, max_tokens) | {"prompt": request.prompt}
        if request.stream:
            stream = await self._start_stream(self._server.handle_completions, body)
            return _event_stream(self._completion_chunks(stream), stream)
        result = await self._call(self._server.handle_completions, body)
        choice = result["choices"][0]
        response = CompletionResponse(
            id=f"cmpl-{uuid.uuid4().hex}",
            created=int(result.get("created", time.time())),
            model=self._args.served_model_name,
            choices=[
                CompletionChoice(
                    text=choice.get("text") or "",
                    finish_reason=_finish_reason(choice.get("finish_reason")),
                )
            ],
            usage=_usage(result),
        )
        return _json(response)

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse)
    async def chat_completions(self, request: ChatCompletionRequest) -> Response:
        messages = [message.model_dump() for message in request.messages]
        body = self._body(request, request.max_tokens) | {"messages": messages}
        if request.stream:
            stream = await self._start_stream(self._server.handle_chat_completions, body)
            return _event_stream(self._chat_chunks(stream), stream)
        result = await self._call(self._server.handle_chat_completions, body)
        choice = result["choices"][0]
        response = ChatCompletionResponse(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(result.get("created", time.time())),
            model=self._args.served_model_name,
            choices=[
                ChatChoice(
                    message=AssistantMessage(content=choice["message"].get("content") or ""),
                    finish_reason=_finish_reason(choice.get("finish_reason")),
                )
            ],
            usage=_usage(result),
        )
        return _json(response)

    @app.get("/healthz", response_model=HealthResponse)
    async def healthz(self) -> JSONResponse:
        """200 while llama.cpp's server answers its health check, 503 otherwise."""
        fault = await asyncio.to_thread(self._engine_fault)
        return health_response("cpu", self._args, fault)

    @app.get("/engine/metrics", response_class=PlainTextResponse)
    async def engine_metrics(self) -> str:
        """llama.cpp's own metrics, in the Prometheus text format."""
        return str(await asyncio.to_thread(self._server.handle_metrics))

    def check_health(self) -> None:
        """Ray Serve's periodic health check: the replica is replaced when this raises."""
        fault = self._engine_fault()
        if fault is not None:
            raise RuntimeError(fault)

    def _engine_fault(self) -> str | None:
        try:
            health = self._engine_get("/health")
        except OSError as error:
            return f"llama.cpp's server does not answer: {error}"
        return None if health.get("status") == "ok" else f"llama.cpp's server: {health}"

    def _body(
        self, request: CompletionRequest | ChatCompletionRequest, max_tokens: int | None
    ) -> dict[str, Any]:
        """llama.cpp's request for ``request``, once it checks out against the model."""
        check_model_name(request.model, self._args.served_model_name)
        if max_tokens is not None and max_tokens >= self._context:
            raise ClientError(
                400,
                f"this model's context is {self._context} tokens, but max_tokens is "
                f"{max_tokens}: lower max_tokens",
                param="max_tokens",
                code="context_length_exceeded",
            )
        body: dict[str, Any] = {
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stream": request.stream,
        }
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if request.stop is not None:
            body["stop"] = list(request.stop_sequences())
        if request.seed is not None:
            body["seed"] = request.seed
        return body

    async def _call(
        self, handle: Callable[[dict[str, Any]], Any], body: dict[str, Any]
    ) -> Mapping[str, Any]:
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._workers, handle, body)
        error = _engine_error(result)
        if error is not None:
            raise error
        return result  # type: ignore[no-any-return]

    async def _start_stream(self, handle: Callable[..., Any], body: dict[str, Any]) -> _Stream:
        """Start a streamed generation; a request llama.cpp refuses is an error, not a stream."""
        stream = _Stream()
        running = asyncio.get_running_loop().run_in_executor(
            self._workers, stream.run, handle, body
        )
        self._running.add(running)
        running.add_done_callback(self._running.discard)
        await stream.open()
        return stream

    async def _completion_chunks(self, stream: _Stream) -> AsyncIterator[BaseModel]:
        completion_id = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        async for chunk in stream.chunks():
            for choice in chunk.get("choices", ()):
                reason = choice.get("finish_reason")
                yield CompletionResponse(
                    id=completion_id,
                    created=created,
                    model=self._args.served_model_name,
                    choices=[
                        CompletionChoice(
                            text=choice.get("text") or "",
                            finish_reason=None if reason is None else _finish_reason(reason),
                        )
                    ],
                )

    async def _chat_chunks(self, stream: _Stream) -> AsyncIterator[BaseModel]:
        chat_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())

        def chunk(delta: ChatDelta, finish_reason: FinishReason | None = None) -> BaseModel:
            return ChatCompletionChunk(
                id=chat_id,
                created=created,
                model=self._args.served_model_name,
                choices=[ChatChunkChoice(delta=delta, finish_reason=finish_reason)],
            )

        yield chunk(ChatDelta(role="assistant", content=""))
        async for engine_chunk in stream.chunks():
            for choice in engine_chunk.get("choices", ()):
                content = (choice.get("delta") or {}).get("content")
                if content:
                    yield chunk(ChatDelta(content=content))
                if choice.get("finish_reason") is not None:
                    yield chunk(ChatDelta(), _finish_reason(choice["finish_reason"]))
