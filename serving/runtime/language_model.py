"""The ``transformers`` runtime: a causal language model behind an OpenAI-compatible API.

``POST /v1/completions`` continues a prompt, ``POST /v1/chat/completions`` answers a conversation
rendered with the tokenizer's chat template, both with ``max_tokens``, ``temperature``,
``top_p``, ``stop``, ``seed`` and ``stream`` (Server-Sent Events, ending with ``data: [DONE]``);
``GET /v1/models`` lists the model. A request whose prompt and ``max_tokens`` together exceed the
model's context is a 400 with code ``context_length_exceeded``.

Generation steps run on worker threads, so the replica keeps answering health checks and
accepting requests while a model computes. It generates one sequence at a time: it is the
fallback for models that llama.cpp (:mod:`~.llamacpp_model`, GGUF files, concurrent requests
batched) and vLLM cannot load.
"""

# Ray Serve's ingress wrapper sees the module's names as they are when the class is defined: so no
# ``from __future__ import annotations`` (FastAPI resolves the routes' parameter types at run
# time), and everything the class uses is defined above it.

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from ray import serve

from soberana.serving.runtime.api import (
    ClientError,
    HealthResponse,
    check_model_name,
    health_response,
    install_error_handlers,
)
from soberana.serving.runtime.args import TransformersArgs
from soberana.serving.runtime.device import check_device, select_device
from soberana.serving.runtime.generation import (
    NoChatTemplateError,
    Sampling,
    TextDelta,
    TextGenerator,
)
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

_COMPLETION_DEFAULT_MAX_TOKENS = 16  # as OpenAI's completions API

app = FastAPI(title="soberana transformers runtime")
install_error_handlers(app)


@dataclass(frozen=True)
class _Generation:
    """One request's generation, once the request checks out against the model."""

    prompt: list[int]
    sampling: Sampling
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))


def _collect(generator: TextGenerator, generation: _Generation) -> list[TextDelta]:
    return list(generator.generate(generation.prompt, generation.sampling))


async def _deltas(generator: TextGenerator, generation: _Generation) -> AsyncIterator[TextDelta]:
    """The generation's deltas, each step computed on a worker thread."""
    steps: Iterator[TextDelta] = generator.generate(generation.prompt, generation.sampling)
    while (delta := await asyncio.to_thread(next, steps, None)) is not None:
        yield delta


def _event_stream(chunks: AsyncIterator[BaseModel]) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        async for chunk in chunks:
            yield f"data: {chunk.model_dump_json()}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def _usage(generation: _Generation, last: TextDelta) -> Usage:
    prompt_tokens = len(generation.prompt)
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=last.completion_tokens,
        total_tokens=prompt_tokens + last.completion_tokens,
    )


def _prompt_field(request: CompletionRequest | ChatCompletionRequest) -> str:
    return "messages" if isinstance(request, ChatCompletionRequest) else "prompt"


def _json(response: BaseModel) -> JSONResponse:
    return JSONResponse(content=response.model_dump(mode="json"))


@serve.ingress(app)
class LanguageModel:
    """One replica of a causal language model."""

    def __init__(self, args: TransformersArgs) -> None:
        self._args = args
        self._generator = TextGenerator.load(local_model_path(args.model_uri), select_device())
        self._created = int(time.time())

    @app.get("/v1/models")
    async def models(self) -> ModelList:
        card = ModelCard(
            id=self._args.served_model_name,
            created=self._created,
            max_model_len=self._generator.context_length,
        )
        return ModelList(data=[card])

    @app.post("/v1/completions", response_model=CompletionResponse)
    async def completions(self, request: CompletionRequest) -> Response:
        generation = self._start(
            request,
            self._generator.encode(request.prompt),
            request.max_tokens or _COMPLETION_DEFAULT_MAX_TOKENS,
        )
        if request.stream:
            return _event_stream(self._completion_chunks(generation))
        deltas = await asyncio.to_thread(_collect, self._generator, generation)
        choice = CompletionChoice(
            text="".join(delta.text for delta in deltas), finish_reason=deltas[-1].finish_reason
        )
        response = CompletionResponse(
            id=f"cmpl-{generation.id}",
            created=generation.created,
            model=self._args.served_model_name,
            choices=[choice],
            usage=_usage(generation, deltas[-1]),
        )
        return _json(response)

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse)
    async def chat_completions(self, request: ChatCompletionRequest) -> Response:
        messages = [message.model_dump() for message in request.messages]
        try:
            prompt = self._generator.encode_chat(messages)
        except NoChatTemplateError as error:
            raise ClientError(400, str(error), param="messages") from error
        generation = self._start(request, prompt, request.max_tokens or self._room_after(prompt))
        if request.stream:
            return _event_stream(self._chat_chunks(generation))
        deltas = await asyncio.to_thread(_collect, self._generator, generation)
        finish_reason = deltas[-1].finish_reason
        assert finish_reason is not None
        response = ChatCompletionResponse(
            id=f"chatcmpl-{generation.id}",
            created=generation.created,
            model=self._args.served_model_name,
            choices=[
                ChatChoice(
                    message=AssistantMessage(content="".join(delta.text for delta in deltas)),
                    finish_reason=finish_reason,
                )
            ],
            usage=_usage(generation, deltas[-1]),
        )
        return _json(response)

    @app.get("/healthz", response_model=HealthResponse)
    async def healthz(self) -> JSONResponse:
        """200 while the replica can serve, 503 once its device has failed."""
        return health_response(self._generator.device, self._args)

    def check_health(self) -> None:
        """Ray Serve's periodic health check: the replica is replaced when this raises."""
        check_device(self._generator.device)

    def _start(
        self,
        request: CompletionRequest | ChatCompletionRequest,
        prompt: list[int],
        max_tokens: int,
    ) -> _Generation:
        """Check the request against the model; refuse it with a :class:`ClientError`."""
        check_model_name(request.model, self._args.served_model_name)
        context = self._generator.context_length
        if len(prompt) + max_tokens > context:
            raise ClientError(
                400,
                f"this model's context is {context} tokens, but {len(prompt) + max_tokens} were "
                f"requested ({len(prompt)} in the prompt, {max_tokens} to generate): shorten the "
                "prompt or lower max_tokens",
                param=_prompt_field(request) if request.max_tokens is None else "max_tokens",
                code="context_length_exceeded",
            )
        sampling = Sampling(
            max_tokens=max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop=request.stop_sequences(),
            seed=request.seed,
        )
        return _Generation(prompt, sampling)

    def _room_after(self, prompt: Sequence[int]) -> int:
        """Tokens the context has left after ``prompt`` (at least 1, so that a full prompt is
        refused for its length)."""
        return max(1, self._generator.context_length - len(prompt))

    async def _completion_chunks(self, generation: _Generation) -> AsyncIterator[BaseModel]:
        async for delta in _deltas(self._generator, generation):
            yield CompletionResponse(
                id=f"cmpl-{generation.id}",
                created=generation.created,
                model=self._args.served_model_name,
                choices=[CompletionChoice(text=delta.text, finish_reason=delta.finish_reason)],
            )

    async def _chat_chunks(self, generation: _Generation) -> AsyncIterator[BaseModel]:
        def chunk(delta: ChatDelta, finish_reason: FinishReason | None = None) -> BaseModel:
            return ChatCompletionChunk(
                id=f"chatcmpl-{generation.id}",
                created=generation.created,
                model=self._args.served_model_name,
                choices=[ChatChunkChoice(delta=delta, finish_reason=finish_reason)],
            )

        yield chunk(ChatDelta(role="assistant", content=""))
        async for delta in _deltas(self._generator, generation):
            if delta.text:
                yield chunk(ChatDelta(content=delta.text))
            if delta.finish_reason is not None:
                yield chunk(ChatDelta(), delta.finish_reason)
