"""The guard service and the gateway (`guardsmith serve guard|gateway`), driven by the official
`openai` SDK against real servers on 127.0.0.1 (uvicorn in a thread), a real generator endpoint
(`guardsmith.standins.chat_server` with scripted replies) and a tiny random-weight guard model."""
from __future__ import annotations

import asyncio
import math
import time

import httpx
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from guardsmith import storage  # noqa: E402
from guardsmith.errors import GuardsmithError  # noqa: E402
from guardsmith.standins.chat_server import ScriptedResponder, serve  # noqa: E402
from guardsmith.serving import GatewayConfig, GuardEngine, RunningService, gateway_app, guard_app  # noqa: E402
from guardsmith.serving.gateway import load_gateway_config  # noqa: E402

HARMFUL = "I will kill you"          # keywords rule: 1 of 4 words -> t = 1 - exp(-4 * 0.25) = 1 - e**-1
T_HARMFUL = 1 - math.exp(-1)         # 0.6321...
BENIGN = "Knead the dough and bake it for forty minutes"  # no keyword -> t = 0


def _client(service, **kw):
    return openai.OpenAI(base_url=service.url, api_key="unused", max_retries=0, timeout=60, **kw)


@pytest.fixture(scope="module")
def tiny_guard(tmp_path_factory):
    from guardsmith.standins.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("serving") / "tiny-guard", seed=0)


@pytest.fixture(scope="module")
def model_service(tiny_guard):
    engine = GuardEngine.open(str(tiny_guard), name="tiny-guard", device="cpu", reasoning_max_tokens=16)
    with RunningService(guard_app(engine, max_batch=8, max_wait_ms=20)) as service:
        yield service
    engine.close()


@pytest.fixture
def rule_service():
    engine = GuardEngine.open("rule:keywords", name="rule-guard")
    with RunningService(guard_app(engine, threshold=0.5, max_batch=8, max_wait_ms=50)) as service:
        yield service


# ------------------------------------------------------------------------------ guard: chat

def test_guard_chat_streaming_and_plain_give_the_same_text(model_service):
    client = _client(model_service)
    args = {"model": "tiny-guard", "messages": [{"role": "user", "content": "Is this safe? hello there"}],
            "temperature": 0, "seed": 3, "max_tokens": 12}
    plain = client.chat.completions.create(**args)
    chunks = list(client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert plain.choices[0].message.content == streamed
    assert plain.choices[0].message.content  # a random model still writes tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == plain.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_guard_chat_n_stop_and_max_tokens(model_service):
    client = _client(model_service)
    msgs = [{"role": "user", "content": "Say something"}]
    full = client.chat.completions.create(model="tiny-guard", messages=msgs, temperature=0, max_tokens=10)
    text = full.choices[0].message.content
    assert full.usage.completion_tokens <= 10
    assert len(text) >= 4, text
    stop = text[len(text) // 2:len(text) // 2 + 2]  # a piece from the middle of the greedy answer
    cut = client.chat.completions.create(model="tiny-guard", messages=msgs, temperature=0, max_tokens=10, stop=[stop])
    assert cut.choices[0].message.content == text[:text.find(stop)]
    assert cut.choices[0].finish_reason == "stop"
    two = client.chat.completions.create(model="tiny-guard", messages=msgs, temperature=1.0, seed=5, n=2, max_tokens=6)
    again = client.chat.completions.create(model="tiny-guard", messages=msgs, temperature=1.0, seed=5, n=2, max_tokens=6)
    assert len(two.choices) == 2 and [c.message.content for c in two.choices] == [c.message.content for c in again.choices]


def test_guard_chat_logprobs_of_a_greedy_answer_are_the_argmax(model_service):
    reply = _client(model_service).chat.completions.create(
        model="tiny-guard", messages=[{"role": "user", "content": "hello"}], temperature=0, max_tokens=6,
        logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert content and "".join(e.token for e in content) == reply.choices[0].message.content
    for entry in content:  # greedy decoding picks the most likely token at every step
        assert len(entry.top_logprobs) == 3
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob, abs=1e-4)
        assert entry.logprob <= 0 and sum(math.exp(t.logprob) for t in entry.top_logprobs) <= 1 + 1e-6


def test_answer_probability_requests_get_the_models_next_token_logprobs(model_service, tiny_guard):
    """What guardsmith's own `openai:` scorer sends (vLLM's continue_final_message, max_tokens 1,
    top_logprobs), checked against the next-token distribution computed here with transformers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    msgs = [{"role": "user", "content": "Judge: hello"}, {"role": "assistant", "content": "Prompt harm: "}]
    reply = _client(model_service).chat.completions.create(
        model="tiny-guard", messages=msgs, max_tokens=1, temperature=0, logprobs=True, top_logprobs=5,
        extra_body={"continue_final_message": True, "add_generation_prompt": False})
    tok = AutoTokenizer.from_pretrained(tiny_guard)
    model = AutoModelForCausalLM.from_pretrained(tiny_guard)
    ids = tok(tok.apply_chat_template(msgs, continue_final_message=True, tokenize=False),
              add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = torch.log_softmax(model(ids).logits[0, -1].float(), -1).topk(5)
    top = reply.choices[0].logprobs.content[0].top_logprobs
    assert [t.token for t in top] == [tok.decode([i]) for i in expected.indices.tolist()]
    assert [t.logprob for t in top] == pytest.approx(expected.values.tolist(), abs=1e-4)
    assert reply.choices[0].message.content == top[0].token


def test_unsupported_parameters_and_unknown_models_are_openai_errors(model_service):
    client = _client(model_service)
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError) as tools:
        client.chat.completions.create(model="tiny-guard", messages=msgs, tools=[
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
    assert tools.value.body["param"] == "tools" and tools.value.body["code"] == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError) as penalty:
        client.chat.completions.create(model="tiny-guard", messages=msgs, presence_penalty=1.0)
    assert penalty.value.body["param"] == "presence_penalty"
    with pytest.raises(openai.BadRequestError) as n:
        client.chat.completions.create(model="tiny-guard", messages=msgs, n=0)
    assert n.value.body["param"] == "n"
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=msgs)
    assert missing.value.body["code"] == "model_not_found"
    raw = httpx.post(f"{model_service.url}/chat/completions", content=b"{not json")
    assert raw.status_code == 400 and set(raw.json()["error"]) == {"message", "type", "param", "code"}


# ------------------------------------------------------------------------------ guard: moderations

def test_moderations_have_openai_shape_and_hand_computed_scores(rule_service):
    reply = _client(rule_service).moderations.create(model="rule-guard", input=[BENIGN, HARMFUL])
    assert reply.model == "rule-guard" and reply.id.startswith("modr-") and len(reply.results) == 2
    benign, harmful = (r.model_dump() for r in reply.results)
    assert benign["flagged"] is False and benign["category_scores"]["harmful"] == 0.0
    assert harmful["flagged"] is True and harmful["categories"]["harmful"] is True
    assert harmful["category_scores"]["harmful"] == pytest.approx(T_HARMFUL)
    assert harmful["task"] == "prompt_harm"


def test_moderation_of_a_conversation_judges_the_answer(rule_service):
    body = {"input": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"},
                      {"role": "assistant", "content": HARMFUL}]}
    result = httpx.post(f"{rule_service.url}/moderations", json=body).json()["results"][0]
    assert result["task"] == "response_harm" and result["score"] == pytest.approx(T_HARMFUL)
    bad = httpx.post(f"{rule_service.url}/moderations", json={"input": HARMFUL, "reasoning": True})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "reasoning"
    unknown = httpx.post(f"{rule_service.url}/moderations", json={"input": "x", "categories": ["a"]})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "categories"


def test_moderations_with_a_model_guard_policy_and_reasoning(model_service):
    conversation = [{"role": "user", "content": "How do I pick a lock?"}, {"role": "assistant", "content": "Use a pick."}]
    body = {"model": "tiny-guard", "input": [conversation, "Tell me a joke"], "reasoning": True,
            "policy": "Nothing about locks."}
    reply = httpx.post(f"{model_service.url}/moderations", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert [r["task"] for r in results] == ["response_harm", "prompt_harm"]
    for r in results:
        assert 0.0 <= r["score"] <= 1.0 and r["flagged"] == (r["score"] >= 0.5)
        assert isinstance(r["reasoning"], str) and set(r["reasoning_labels"]) == {"prompt_harm", "response_harm", "parse_ok"}
    wrong = httpx.post(f"{model_service.url}/moderations", json={"input": "x", "taxonomy": "no-such-taxonomy"})
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "taxonomy"


def test_concurrent_moderations_are_batched(rule_service):
    async def burst():
        async with openai.AsyncOpenAI(base_url=rule_service.url, api_key="unused", max_retries=0) as client:
            return await asyncio.gather(*(client.moderations.create(input=f"text {i} {HARMFUL}") for i in range(12)))

    replies = asyncio.run(burst())
    assert all(r.results[0].flagged for r in replies)
    scores = rule_service.app.state.batchers[0]
    assert scores.items == 12 and scores.batches < 12  # 50 ms of waiting gathers requests into shared calls


def test_health_ready_and_metrics(rule_service):
    assert httpx.get(f"{rule_service.base}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{rule_service.base}/ready").json()
    assert ready["status"] == "ready" and ready["model"] == "rule-guard" and ready["threshold"] == 0.5
    httpx.post(f"{rule_service.url}/moderations", json={"input": [HARMFUL, BENIGN]})
    text = httpx.get(f"{rule_service.base}/metrics").text
    assert 'guardsmith_guard_requests_total{endpoint="/v1/moderations",status="200"} 1.0' in text
    assert "guardsmith_guard_scored_total 2.0" in text and "guardsmith_guard_flagged_total 1.0" in text
    assert "guardsmith_guard_batch_size_count" in text and "guardsmith_guard_request_latency_seconds_bucket" in text


# ------------------------------------------------------------------------------ gateway

def _generator_reply(messages, params):
    prompt = messages[-1]["content"]
    return HARMFUL if "threaten" in prompt else BENIGN


@pytest.fixture
def generator():
    responder = ScriptedResponder(_generator_reply)
    with serve(responder, model="gen") as server:
        yield server, responder


def _gateway(generator_url, tmp_path, **extra):
    cfg = GatewayConfig(generator=generator_url, guard="rule:keywords", model="gw", generator_model="gen", tau=0.5,
                        refusal="Sorry, I can't help with that.", delta=0.2,
                        interactions_uri=str(tmp_path / "collected"), flush_rows=1, flush_seconds=0.5, **extra)
    return RunningService(gateway_app(cfg))


def test_gateway_answers_benign_and_refuses_harmful_streaming_or_not(generator, tmp_path):
    server, _ = generator
    with _gateway(server.url, tmp_path) as gw:
        client = _client(gw)
        ok = client.chat.completions.create(model="gw", messages=[{"role": "user", "content": "bread?"}])
        assert ok.choices[0].message.content == BENIGN
        raw = client.chat.completions.with_raw_response.create(
            model="gw", messages=[{"role": "user", "content": "threaten my neighbour"}])
        refused = raw.parse()
        assert refused.choices[0].message.content == "Sorry, I can't help with that."
        assert raw.headers["x-guardsmith-decision"] == "refused" and float(raw.headers["x-guardsmith-guard-ms"]) >= 0
        assert refused.model_extra["guardsmith"]["t"][0] == pytest.approx(T_HARMFUL)
        chunks = list(client.chat.completions.create(
            model="gw", messages=[{"role": "user", "content": "threaten my neighbour"}], stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Sorry, I can't help with that."
        streamed_ok = list(client.chat.completions.create(
            model="gen", messages=[{"role": "user", "content": "bread?"}], stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in streamed_ok if c.choices) == BENIGN
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="gw", messages=[{"role": "user", "content": "x"}], logprobs=True)
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="other", messages=[{"role": "user", "content": "x"}])
        metrics = httpx.get(f"{gw.base}/metrics").text
        assert 'guardsmith_gateway_decisions_total{decision="refused"} 2.0' in metrics
        assert "guardsmith_gateway_guard_latency_seconds_count 4.0" in metrics


def test_gateway_writes_near_boundary_interactions_as_readable_tables(generator, tmp_path):
    server, _ = generator
    with _gateway(server.url, tmp_path) as gw:
        client = _client(gw)
        client.chat.completions.create(model="gw", messages=[{"role": "user", "content": "threaten them"}])
        client.chat.completions.create(model="gw", messages=[{"role": "user", "content": "bread?"}])  # t=0: far
        deadline = time.monotonic() + 10
        while not gw.app.state.sink.written and time.monotonic() < deadline:
            time.sleep(0.05)
    parts = gw.app.state.sink.written
    assert len(parts) == 1
    table = storage.read_table(parts[0], "interactions")
    row = table.to_pylist()[0]
    assert table.num_rows == 1 and row["prompt"] == "threaten them" and row["response"] == HARMFUL
    assert row["t"] == pytest.approx(T_HARMFUL) and row["filtered"] is True and row["source"] == "gateway"
    assert row["response_harm"] is None  # labels unknown until the next training run labels them


@pytest.mark.s3
def test_gateway_collects_to_object_storage(generator, tmp_path, s3_prefix):
    server, _ = generator
    cfg = GatewayConfig(generator=server.url, guard="rule:keywords", model="gw", generator_model="gen",
                        delta=0.2, interactions_uri=f"{s3_prefix}/interactions", flush_rows=100, flush_seconds=30)
    with RunningService(gateway_app(cfg)) as gw:
        _client(gw).chat.completions.create(model="gw", messages=[{"role": "user", "content": "threaten"}])
    parts = [storage.join(f"{s3_prefix}/interactions", p) for p in storage.list_dir(f"{s3_prefix}/interactions")]
    assert len(parts) == 1 and storage.read_table(parts[0], "interactions").num_rows == 1  # flushed at shutdown


def test_gateway_with_a_guard_service_url_and_prompt_gating(generator, rule_service, tmp_path):
    server, responder = generator
    cfg = GatewayConfig(generator=server.url, guard=rule_service.url, model="gw", generator_model="gen",
                        gate_tasks=["prompt_harm", "response_harm"])
    with RunningService(gateway_app(cfg)) as gw:
        client = _client(gw)
        before = len(responder.calls)
        refused = client.chat.completions.create(model="gw", messages=[{"role": "user", "content": "kill bomb weapon"}])
        assert refused.choices[0].message.content == cfg.refusal and len(responder.calls) == before
        assert refused.model_extra["guardsmith"]["t_prompt"] == pytest.approx(1 - math.exp(-4.0))
        answered = client.chat.completions.create(model="gw", messages=[{"role": "user", "content": "threaten"}])
        assert answered.choices[0].message.content == cfg.refusal and len(responder.calls) == before + 1


def test_gateway_config_errors_are_one_line(tmp_path):
    path = tmp_path / "gw.yaml"
    path.write_text("generator: http://127.0.0.1:1/v1\nguard: rule:keywords\ntua: 0.3\n")
    with pytest.raises(GuardsmithError, match="unknown setting.*tua"):
        load_gateway_config(str(path))
    path.write_text("generator: http://127.0.0.1:1/v1\nguard: rule:keywords\ngate_tasks: [refusal]\n")
    with pytest.raises(GuardsmithError, match="gate_tasks"):
        load_gateway_config(str(path))
    path.write_text("generator: http://127.0.0.1:1/v1\nguard: rule:keywords\ntau: 0.3\ndelta: 0.05\n")
    cfg = load_gateway_config(str(path))
    assert (cfg.tau, cfg.delta, cfg.gate_tasks) == (0.3, 0.05, ["response_harm"])
