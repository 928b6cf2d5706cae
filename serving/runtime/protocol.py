"""Requests and responses of the OpenAI-compatible text API, as pydantic models.

Only what the runtime implements is accepted: an unknown field is a 400 naming it, rather than a
setting silently ignored. Streaming responses are Server-Sent Events, one ``data: <chunk>``
event per piece of text, ending with ``data: [DONE]``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

FinishReason = Literal["stop", "length"]

StopSequences = (
    Annotated[str, Field(min_length=1)]
    | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=4)]
)


class _SamplingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        None, description="The served model's name; when set, it must match it."
    )
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate.")
    temperature: float = Field(
        1.0, ge=0, le=2, description="Sampling temperature; 0 always picks the likeliest token."
    )
    top_p: float = Field(
        1.0, gt=0, le=1, description="Sample among the likeliest tokens holding this much mass."
    )
    stop: StopSequences | None = Field(
        None, description="Up to 4 sequences that end the text; they are not returned."
    )
    stream: bool = Field(False, description="Send the text as Server-Sent Events as it comes.")
    seed: int | None = Field(None, description="Seed for sampling, for repeatable answers.")
    n: Literal[1] = Field(1, description="Choices to generate; only 1 is supported.")

    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class CompletionRequest(_SamplingRequest):
    """``POST /v1/completions``: continue a prompt. Without max_tokens, 16 tokens at most."""

    prompt: str = Field(min_length=1, description="The text to continue.")


class ChatMessage(BaseModel):
    """One message of a conversation."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class ChatCompletionRequest(_SamplingRequest):
    """``POST /v1/chat/completions``: the assistant's next message. Without max_tokens, as many
    tokens as the context has room for."""

    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far.")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: FinishReason | None
    logprobs: None = None


class CompletionResponse(BaseModel):
    """A completion, whole or (``object`` the same, ``usage`` unset) one streamed chunk of it."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = Field(None, exclude_if=lambda usage: usage is None)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    """What a chunk adds to the assistant's message: the role first, then content."""

    role: Literal["assistant"] | None = Field(None, exclude_if=lambda role: role is None)
    content: str | None = Field(None, exclude_if=lambda content: content is None)


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    finish_reason: FinishReason | None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "soberana"
    max_model_len: int = Field(description="The model's context length, in tokens.")


class ModelList(BaseModel):
    """``GET /v1/models``: the one model this application serves."""

    object: Literal["list"] = "list"
    data: list[ModelCard]
