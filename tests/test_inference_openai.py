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
from guardsmith.standins.chat_server import FaultPlan, ScriptedResponder, serve
from helpers.servers import counting_connections

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


# ---------------------------------------------------------------- bounded waits, bad rows, credentials

MALFORMED_CAUSES = {
    "list": "the body is a list, not an object",
    "string": "the body is a string, not an object",
    "number": "the body is a number, not an object",
    "not_json": "body that is not JSON",
    "truncated": "body that is not JSON",
    "empty": "body that is not JSON",
    "no_choices": "no choices",
    "choices_not_list": "choices is an object, not a list",
    "message_not_object": "message is a string, not an object",
    "content_not_text": "content is an object, not text",
    "usage": "usage is a string, not an object: 'many'",
    "usage_tokens": "usage.completion_tokens is not a non-negative integer: 'lots'",
}


@pytest.mark.parametrize("body", sorted(MALFORMED_CAUSES))
def test_each_malformed_body_is_one_line_naming_the_request(key, body):
    plan = FaultPlan().malformed(body)
    with serve(api_key=key, faults=plan) as srv, client(srv.url, max_concurrency=1) as be:
        with pytest.raises(GuardsmithError) as err:
            be.generate([REQ, REQ])
        msg = str(err.value)
        assert msg.startswith(f"request 0: {srv.url}/chat/completions sent a malformed reply: ")
        assert MALFORMED_CAUSES[body] in msg and "\n" not in msg and err.value.__cause__ is None
        assert srv.stats.requests == 1  # a malformed reply is the request's failure: not retried
        plan.malformed(body)
        out = be.generate([REQ, REQ], n=2, on_error="collect")
    assert all(g.error.startswith("malformed reply: ") and MALFORMED_CAUSES[body] in g.error for g in out[0])
    assert out[0][0].text == "" and out[0][0].finish_reason == "error"
    assert [g.text for g in out[1]] == ["say hi", "say hi"] and out[1][0].error is None


def test_malformed_logprobs_is_one_line(key):
    responder = ScriptedResponder(["x"], logprobs={"harm": -0.1, "un": -2.0})
    plan = FaultPlan().malformed("logprobs")
    with serve(responder, api_key=key, faults=plan) as srv, client(srv.url) as be:
        with pytest.raises(GuardsmithError, match=r"^request 0: .* malformed reply: logprobs are not") as err:
            be.answer_probability([REQ], "Prompt harm:", ("harmful", "unharmful"))
    assert "\n" not in str(err.value)


def test_dripping_server_is_cut_at_the_deadline(key, caplog):
    # one byte every 0.2 s: each read is quick, so only a deadline on the whole attempt stops it
    plan = FaultPlan().drip(0.2, times=10)
    timeout, retries = 0.6, 1
    with serve(api_key=key, faults=plan) as srv, client(srv.url, timeout_s=timeout, max_retries=retries) as be:
        t0 = time.monotonic()
        with pytest.raises(GuardsmithError, match="timed out: no complete reply within 0.6 s") as err:
            be.generate([REQ])
        elapsed = time.monotonic() - t0
    assert elapsed < timeout * (retries + 1) + 0.05 + 1.0  # backoff at most 0.05 s, 1 s slack
    assert elapsed >= timeout * (retries + 1) and "2 attempts" in str(err.value)
    assert "retry 1/1" in caplog.text


def test_drip_once_then_success_and_slow_but_complete_drip_passes(key):
    plan = FaultPlan().drip(0.3)
    with serve(api_key=key, faults=plan) as srv, client(srv.url, timeout_s=0.8) as be:
        assert be.generate([REQ])[0][0].text == "say hi"
    assert srv.stats.requests == 2
    plan = FaultPlan().drip(0.001)  # the whole body in well under the deadline
    with serve(api_key=key, faults=plan) as srv, client(srv.url, timeout_s=5.0) as be:
        assert be.generate([REQ])[0][0].text == "say hi"
    assert srv.stats.requests == 1


def test_huge_retry_after_is_capped(key, caplog):
    plan = FaultPlan().fail(429, retry_after=100000).fail(503, retry_after=formatdate(time.time() + 86400, usegmt=True))
    with serve(api_key=key, faults=plan) as srv, client(srv.url, retry_after_max_s=0.2, backoff_base_s=0.0) as be:
        t0 = time.monotonic()
        assert be.generate([REQ])[0][0].text == "say hi"
        elapsed = time.monotonic() - t0
    assert 0.4 <= elapsed < 1.5 and srv.stats.requests == 3
    assert "in 0.20 s" in caplog.text


def test_retry_after_cap_from_endpoint_settings(key):
    from guardsmith.inference import open_backend
    from guardsmith.settings import Endpoint

    plan = FaultPlan().fail(429, retry_after=100000)
    with serve(api_key=key, faults=plan) as srv:
        be = open_backend(f"openai:{srv.url}?model=teacher",
                          endpoint=Endpoint(api_key_env=KEY_ENV, timeout_s=5, max_retries=1, retry_after_max_s=0.1))
        assert be.retry_after_max_s == 0.1
        t0 = time.monotonic()
        assert be.generate([REQ])[0][0].text == "say hi"
        assert time.monotonic() - t0 < 1.5


def test_collect_reports_poisoned_requests_only(key):
    plan = FaultPlan().poison("POISON-ROW")
    requests = [[{"role": "user", "content": f"row {i}" + (" POISON-ROW" if i in (1, 4) else "")}] for i in range(6)]
    with serve(ScriptedResponder(numbered), api_key=key, faults=plan) as srv, client(srv.url) as be:
        out = be.generate(requests, n=2, on_error="collect")
        assert plan.poisoned == 2 and srv.stats.requests == 6  # the 400 is not retried
        for i, gens in enumerate(out):
            assert len(gens) == 2
            if i in (1, 4):
                assert all(g.error == "HTTP 400: prompt too long" and g.text == "" and g.finish_reason == "error"
                           and g.completion_tokens == 0 for g in gens)
            else:
                assert [g.text for g in gens] == [f"row {i} #0", f"row {i} #1"] and gens[0].error is None
        with pytest.raises(GuardsmithError) as err:
            be.generate(requests[:4])
    assert str(err.value) == f"request 1: {srv.url}/chat/completions answered HTTP 400: prompt too long"


def test_collect_still_raises_on_infrastructure_failures(key, monkeypatch):
    plan = FaultPlan().fail(503, times=10)
    with serve(api_key=key, faults=plan) as srv, client(srv.url, max_retries=1) as be:
        with pytest.raises(GuardsmithError, match="request 0: POST .* failed after 2 attempts; last error: HTTP 503"):
            be.generate([REQ], on_error="collect")
    monkeypatch.setenv(KEY_ENV, "wrong")
    with serve(api_key=key) as srv, client(srv.url) as be:  # a wrong key concerns every row alike
        with pytest.raises(GuardsmithError, match="HTTP 401"):
            be.generate([REQ], on_error="collect")
    with pytest.raises(GuardsmithError, match="on_error must be"):
        be.generate([REQ], on_error="ignore")


def test_dropped_mid_body_is_retried_not_malformed(key):
    plan = FaultPlan().drop(partial=True)
    with serve(api_key=key, faults=plan) as srv, client(srv.url) as be:
        out = be.generate([REQ], on_error="collect")
    assert out[0][0].text == "say hi" and out[0][0].error is None and srv.stats.requests == 2


def test_password_in_base_url_is_basic_auth_and_never_shown(monkeypatch, caplog):
    import base64

    monkeypatch.delenv(KEY_ENV, raising=False)
    password = "pa55-SECRET-77"
    hidden = (password, base64.b64encode(f"user:{password}".encode()).decode())
    caplog.set_level(logging.DEBUG)
    texts = []
    with serve(basic_auth=("user", password)) as srv:
        url = f"http://user:{password}@127.0.0.1:{srv.port}/v1"
        be = make_backend(f"openai:{url}?model=teacher", api_key_env=KEY_ENV, max_retries=1, backoff_base_s=0.0)
        assert be.generate([REQ])[0][0].text == "say hi"
        texts += [repr(be), be.url, be.base_url]
        srv.faults.fail(503, times=5, message="overloaded")
        with pytest.raises(GuardsmithError) as err:
            be.generate([REQ])
        texts.append(str(err.value))
        wrong = make_backend(f"openai:http://user:wrong-{password}@127.0.0.1:{srv.port}/v1?model=t", api_key_env=KEY_ENV)
        with pytest.raises(GuardsmithError, match="HTTP 401") as err:
            wrong.generate([REQ])
        texts.append(str(err.value))
    with socket_closed_port() as port:
        dead = make_backend(f"openai:http://user:{password}@127.0.0.1:{port}/v1?model=t", api_key_env=KEY_ENV,
                            max_retries=1, backoff_base_s=0.0, timeout_s=2)
        with pytest.raises(GuardsmithError, match="connection error") as err:
            dead.generate([REQ])
        texts.append(str(err.value))
    for bad in (f"openai:http://user:{password}@h/v1", f"transformers:s3://user:{password}@h/b/model",
                f"bogus:http://user:{password}@h/v1", {"kind": "openai", "url": f"ftp://user:{password}@h"}):
        with pytest.raises(GuardsmithError) as err:
            make_backend(bad, **({"model": "m"} if isinstance(bad, dict) else {}))
        texts.append(str(err.value))
    with pytest.raises(GuardsmithError, match=r"no model name for http://\*\*\*@h/v1") as err:
        OpenAIBackend(f"http://user:{password}@h/v1", "")
    texts.append(str(err.value))
    assert "retry" in caplog.text and "127.0.0.1" in texts[3]
    for text in [*texts, caplog.text]:
        assert not any(h in text for h in hidden), text


class socket_closed_port:
    """A local port nothing listens on."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def __exit__(self, *exc) -> None:
        pass


def test_reasoning_fields_are_joined_in_front_of_the_answer():
    from guardsmith.inference.openai_backend import BadReply, parse_reply

    def body(message):
        return {"choices": [{"message": {"role": "assistant", **message}, "finish_reason": "stop"}]}

    (text, _), = parse_reply(body({"reasoning_content": " Think. ", "content": "Prompt harm: harmful"}))[0]
    assert text == "<think>\nThink.\n</think>\n\nPrompt harm: harmful"
    (text, _), = parse_reply(body({"reasoning": "Why.", "content": None}))[0]
    assert text == "<think>\nWhy.\n</think>\n\n"
    (text, _), = parse_reply(body({"reasoning_content": "", "content": "<think>x</think>A"}))[0]
    assert text == "<think>x</think>A"  # nothing to add; an inline block is kept as it is
    with pytest.raises(BadReply, match="reasoning_content is"):
        parse_reply(body({"reasoning_content": ["no"], "content": "A"}))


def sleepy(messages, params):
    """Replies with the request's text; a request saying ``slow`` takes 0.5 s."""
    text = messages[-1]["content"]
    if text == "slow":
        time.sleep(0.5)
    return [text] * params.n


def test_one_session_serves_every_call_until_close(key):
    import threading

    with serve(api_key=key, delay_s=0.05) as srv:
        accepted = counting_connections(srv)
        be = client(srv.url, max_concurrency=2)
        for _ in range(3):
            assert [r[0].text for r in be.generate([[{"role": "user", "content": str(i)}] for i in range(4)])] == \
                ["0", "1", "2", "3"]
        assert accepted[0] == 2  # the pool of 2 connections is kept across calls, not reopened per call
        thread = be._runtime().thread
        assert thread.name == "guardsmith-openai" and thread in threading.enumerate()
        be.close()
        be.close()  # safe twice
        assert not thread.is_alive()
        assert be.generate([REQ])[0][0].text == "say hi"  # a call after close opens a new session
        assert accepted[0] == 3
        be.close()


def test_latency_is_measured_from_send_not_from_queueing(key):
    with serve(api_key=key, delay_s=0.2) as srv, client(srv.url, max_concurrency=1) as be:
        t0 = time.monotonic()
        out = be.generate([REQ] * 4)
        elapsed = time.monotonic() - t0
    assert elapsed >= 0.8  # one at a time: the last one waited 0.6 s for its slot
    assert all(0.2 <= r[0].latency_s < 0.4 for r in out), [r[0].latency_s for r in out]


def test_stream_yields_in_completion_order_with_a_rolling_window(key):
    requests = [[{"role": "user", "content": t}] for t in ("slow", "a", "b", "c", "d")]
    with serve(ScriptedResponder(sleepy), api_key=key, delay_s=0.05) as srv, client(srv.url, max_concurrency=2) as be:
        got = [(i, g[0].text) for i, g in be.generate_stream(iter(requests), max_tokens=4)]
        # while "slow" holds one slot, the other slot serves a, b, c, d one after another
        assert got == [(1, "a"), (2, "b"), (3, "c"), (4, "d"), (0, "slow")]
        assert srv.stats.max_in_flight == 2
        srv.stats.max_in_flight = 0
        # ahead=1: request i waits until every request before i - 1 is done, so "slow" blocks b
        got = [i for i, _ in be.generate_stream(requests, ahead=1)]
        assert got[:2] == [1, 0] and sorted(got[2:]) == [2, 3, 4]
        assert srv.stats.max_in_flight == 2


def test_stream_errors_and_early_close(key):
    plan = FaultPlan().poison("BAD")
    requests = [[{"role": "user", "content": t}] for t in ("x", "BAD", "y")]
    with serve(api_key=key, faults=plan) as srv, client(srv.url, max_concurrency=1) as be:
        with pytest.raises(GuardsmithError, match="^request 1: .*answered HTTP 400"):
            list(be.generate_stream(requests))
        collected = dict(be.generate_stream(requests, on_error="collect"))
        assert collected[1][0].error == "HTTP 400: prompt too long" and collected[2][0].text == "y"
        with pytest.raises(GuardsmithError, match="^request 2 has no messages"):
            list(be.generate_stream([REQ, REQ, []]))
        stream = be.generate_stream([REQ] * 50)
        assert next(stream)[1][0].text == "say hi"
        stream.close()  # cancels the rest
        before = srv.stats.requests
        time.sleep(0.2)
        assert srv.stats.requests == before < 50


def test_agenerate_stream_from_async_code(key):
    async def collect(url):
        be = client(url, max_concurrency=3)
        try:
            return [(i, g[0].text) async for i, g in be.agenerate_stream(
                [[{"role": "user", "content": str(i)}] for i in range(6)], max_tokens=4)]
        finally:
            be.close()

    with serve(api_key=key) as srv:
        got = asyncio.run(collect(srv.url))
    assert sorted(got) == [(i, str(i)) for i in range(6)]
