"""OpenAI-compatible client against the real local server: retries, faults, auth, concurrency, n."""
from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from email.utils import formatdate

import pytest

from guardsmith.errors import GuardsmithError
from guardsmith.inference import OpenAIBackend, make_backend, parse_spec
from guardsmith.inference.openai_backend import backoff_delay, parse_retry_after, words_from_top_logprobs
from guardsmith.inference.server import FaultPlan, ScriptedResponder, serve

pytestmark = pytest.mark.timeout(60)
SECRET = "sk-test-SECRET-4f9a1c"
KEY_ENV = "GUARDSMITH_TEACHER_API_KEY"
REQ = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hi"}]


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    return SECRET


def client(url: str, **kw) -> OpenAIBackend:
    opts = dict(api_key_env=KEY_ENV, max_retries=3, backoff_base_s=0.01, backoff_max_s=0.05, timeout_s=5.0)
    opts.update(kw)
    return OpenAIBackend(url, "teacher", **opts)


def numbered(messages, params):
    return [f"{messages[-1]['content']} #{i}" for i in range(params.n)]


def test_happy_path_n_samples(key):
    responder = ScriptedResponder(numbered)
    with serve(responder, api_key=key) as srv, client(srv.url) as be:
        out = be.generate([REQ, [{"role": "user", "content": "other"}]], n=3, temperature=0.8, top_p=0.9,
                          max_tokens=12, seed=5)
    assert [len(r) for r in out] == [3, 3]
    assert [g.text for g in out[1]] == ["other #0", "other #1", "other #2"]
    g = out[0][0]
    assert g.prompt_tokens == 4 and g.completion_tokens == 3 and g.finish_reason == "stop" and g.latency_s > 0
    _, params = responder.calls[0]
    assert (params.n, params.temperature, params.top_p, params.max_tokens, params.seed) == (3, 0.8, 0.9, 12, 5)


def test_fewer_choices_than_asked_tops_up(key):
    responder = ScriptedResponder(numbered)
    with serve(responder, api_key=key, max_n=2) as srv, client(srv.url) as be:
        out = be.generate([REQ], n=5, temperature=1.0, seed=10)
    assert [g.text for g in out[0]] == ["say hi #0", "say hi #1"] * 2 + ["say hi #0"]
    assert [p.n for _, p in responder.calls] == [2, 2, 1]
    assert [p.seed for _, p in responder.calls] == [10, 11, 12]


def test_429_retry_after_honoured(key):
    plan = FaultPlan().fail(429, retry_after=1)
    with serve(api_key=key, faults=plan) as srv, client(srv.url, backoff_base_s=0.0) as be:
        t0 = time.monotonic()
        out = be.generate([REQ])
        elapsed = time.monotonic() - t0
    assert out[0][0].text == "say hi"
    assert elapsed >= 1.0 and srv.stats.requests == 2


def test_retry_after_http_date_and_backoff_bounds():
    now = time.time()
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("2") == 2.0 and parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    rng = random.Random(0)
    delays = [backoff_delay(a, 0.5, 4.0, rng) for a in range(10) for _ in range(20)]
    assert all(0 <= d <= 4.0 for d in delays) and max(delays[:20]) <= 0.5


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_then_success(key, status):
    plan = FaultPlan().fail(status, times=2)
    with serve(api_key=key, faults=plan) as srv, client(srv.url) as be:
        assert be.generate([REQ])[0][0].text == "say hi"
    assert srv.stats.requests == 3


def test_slow_reply_beyond_timeout_then_success(key):
    plan = FaultPlan().slow(2.0)
    with serve(api_key=key, faults=plan) as srv, client(srv.url, timeout_s=0.3) as be:
        t0 = time.monotonic()
        assert be.generate([REQ])[0][0].text == "say hi"
        assert time.monotonic() - t0 < 1.5


def test_dropped_connection_then_success(key):
    plan = FaultPlan().drop(times=2)
    with serve(api_key=key, faults=plan) as srv, client(srv.url) as be:
        assert be.generate([REQ])[0][0].text == "say hi"
    assert plan.pending == 0


def test_retries_exhausted_names_cause_and_url_never_key(key, caplog):
    plan = FaultPlan().fail(503, times=10, message="overloaded")
    caplog.set_level(logging.DEBUG)
    with serve(api_key=key, faults=plan) as srv, client(srv.url, max_retries=2) as be:
        with pytest.raises(GuardsmithError) as err:
            be.generate([REQ])
        msg = str(err.value)
        assert "503" in msg and "overloaded" in msg and srv.url in msg and "3 attempts" in msg
        assert SECRET not in msg and SECRET not in repr(be) and SECRET not in caplog.text
        assert "retry" in caplog.text
    plan = FaultPlan().drop(times=5)
    with serve(api_key=key, faults=plan) as srv, client(srv.url, max_retries=1) as be:
        with pytest.raises(GuardsmithError, match="connection error") as err:
            be.generate([REQ])
        assert srv.url in str(err.value) and SECRET not in str(err.value)


def test_wrong_key_401_no_retry(monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, SECRET)
    caplog.set_level(logging.DEBUG)
    with serve(api_key="the-server-key") as srv, client(srv.url) as be:
        with pytest.raises(GuardsmithError) as err:
            be.generate([REQ])
    msg = str(err.value)
    assert "401" in msg and KEY_ENV in msg and SECRET not in msg and SECRET not in caplog.text
    assert srv.stats.requests == 1


def test_missing_key_hint(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with serve(api_key="k") as srv, client(srv.url) as be:
        with pytest.raises(GuardsmithError, match="not set"):
            be.generate([REQ])


def test_other_4xx_is_not_retried(key):
    plan = FaultPlan().fail(400, times=3, message="bad field")
    with serve(api_key=key, faults=plan) as srv, client(srv.url) as be:
        with pytest.raises(GuardsmithError, match="HTTP 400: bad field"):
            be.generate([REQ])
    assert srv.stats.requests == 1


def test_bounded_concurrency(key):
    with serve(api_key=key, delay_s=0.1) as srv, client(srv.url, max_concurrency=3) as be:
        out = be.generate([[{"role": "user", "content": str(i)}] for i in range(12)])
    assert [r[0].text for r in out] == [str(i) for i in range(12)]
    assert 2 <= srv.stats.max_in_flight <= 3


def test_agenerate_and_generate_inside_running_loop(key):
    async def main(url):
        be = client(url)
        first = await be.agenerate([REQ], n=2)
        second = be.generate([REQ])  # sync call from a thread that runs a loop
        return first, second

    with serve(api_key=key) as srv:
        first, second = asyncio.run(main(srv.url))
    assert len(first[0]) == 2 and second[0][0].text == "say hi"


def test_progress_for_long_batches(key, capsys):
    with serve(api_key=key) as srv, client(srv.url, progress_min_requests=3) as be:
        be.generate([REQ] * 4)
    assert "4 items" in capsys.readouterr().err


def test_answer_probability_from_top_logprobs(key):
    responder = ScriptedResponder(["x"], logprobs={" harm": math.log(0.6), "un": math.log(0.2), "The": -1.0})
    with serve(responder, api_key=key) as srv, client(srv.url) as be:
        out = be.answer_probability([REQ, REQ], "Prompt harm:", ("harmful", "unharmful"))
    assert out[0]["harmful"] == pytest.approx(0.75) and sum(out[1].values()) == pytest.approx(1.0)
    messages, params = responder.calls[0]
    assert messages[-1] == {"role": "assistant", "content": "Prompt harm:"} and params.max_tokens == 1
    with serve(api_key=key) as srv, client(srv.url) as be:
        with pytest.raises(GuardsmithError, match="no logprobs"):
            be.answer_probability([REQ], "Prompt harm: ", ("harmful", "unharmful"))


def test_words_from_top_logprobs_ignores_ambiguous_tokens():
    out = words_from_top_logprobs({"harmf": -1.0, "harm": -0.1, "un": -1.0}, ("harmful", "harmless", "unharmful"))
    assert out["harmless"] == 0.0 and out["harmful"] == pytest.approx(0.5)
    with pytest.raises(GuardsmithError):
        words_from_top_logprobs({"The": -0.1}, ("harmful", "unharmful"))


def test_spec_parsing_and_factory(monkeypatch):
    kind, opts = parse_spec("openai:http://h:8000/v1?model=Qwen/Qwen3-8B&max_concurrency=4&timeout_s=2.5")
    assert kind == "openai" and opts == {"base_url": "http://h:8000/v1", "model": "Qwen/Qwen3-8B",
                                         "max_concurrency": 4, "timeout_s": 2.5}
    assert parse_spec("transformers:/m/guard") == ("transformers", {"model_path": "/m/guard"})
    assert parse_spec("vllm:file:///m/guard") == ("vllm", {"model_path": "/m/guard"})
    assert parse_spec({"kind": "vllm", "path": "/m", "seed": 3}) == ("vllm", {"model_path": "/m", "seed": 3})
    assert parse_spec({"spec": "openai:http://h/v1?model=a", "max_retries": 1})[1]["max_retries"] == 1
    be = make_backend("openai:http://h:1/v1?model=m", api_key_env="GS_NONE", max_retries=0)
    assert isinstance(be, OpenAIBackend) and be.max_retries == 0 and be.url == "http://h:1/v1/chat/completions"
    be = make_backend({"kind": "openai", "url": "http://h:1/v1", "model": "m"})
    assert be.model == "m"
    for bad in ("llamacpp:/x", "nokind", {"kind": "tgi"}, "transformers:s3://b/model",
                "openai:http://h/v1", {"kind": "openai", "url": "http://h/v1", "model": "m", "bogus": 1}):
        with pytest.raises(GuardsmithError):
            make_backend(bad)
    with pytest.raises(GuardsmithError, match="environment variable"):
        OpenAIBackend("http://h/v1", "m", api_key_env="not a name")
