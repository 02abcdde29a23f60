"""The local OpenAI-compatible server: routes, auth, responders, fault plan (raw HTTP, real sockets)."""
from __future__ import annotations

import socket

import httpx
import pytest

from guardsmith.errors import GuardsmithError
from guardsmith.inference.base import Generation, SamplingParams
from guardsmith.standins.chat_server import (
    BackendResponder,
    ChatServer,
    FaultPlan,
    ScriptedResponder,
    serve,
)

pytestmark = pytest.mark.timeout(60)
MSGS = [{"role": "user", "content": "hello there"}]


def post(url: str, body: dict, **kw) -> httpx.Response:
    return httpx.post(url + "/chat/completions", json=body, timeout=5, **kw)


def test_models_and_default_echo():
    with serve(model="tiny") as srv:
        assert srv.url == f"http://127.0.0.1:{srv.port}/v1"
        models = httpx.get(srv.url + "/models", timeout=5).json()
        assert models["data"][0]["id"] == "tiny"
        data = post(srv.url, {"messages": MSGS, "n": 2}).json()
        assert [c["message"]["content"] for c in data["choices"]] == ["hello there"] * 2
        assert data["usage"]["completion_tokens"] == 4 and data["object"] == "chat.completion"
        assert httpx.get(srv.url + "/nope", timeout=5).status_code == 404


def test_scripted_list_callable_and_params_passed():
    seen = []

    def reply(messages, params):
        seen.append(params)
        return [f"{messages[-1]['content']}-{i}" for i in range(params.n)]

    with serve(ScriptedResponder(reply)) as srv:
        body = {"messages": MSGS, "n": 3, "temperature": 0.7, "top_p": 0.9, "max_tokens": 5, "seed": 11}
        texts = [c["message"]["content"] for c in post(srv.url, body).json()["choices"]]
    assert texts == ["hello there-0", "hello there-1", "hello there-2"]
    assert seen == [SamplingParams(n=3, temperature=0.7, top_p=0.9, max_tokens=5, seed=11)]
    scripted = ScriptedResponder(["x", "y"])
    assert scripted(MSGS, SamplingParams(n=3)) == ["x", "y", "x"]
    with pytest.raises(GuardsmithError):
        ScriptedResponder([])


def test_bad_request_and_responder_error():
    def boom(messages, params):
        raise RuntimeError("kaput")

    with serve(ScriptedResponder(boom)) as srv:
        assert post(srv.url, {"nomessages": 1}).status_code == 400
        assert post(srv.url, {"messages": MSGS, "n": 0}).status_code == 400
        r = post(srv.url, {"messages": MSGS})
        assert r.status_code == 500 and "kaput" in r.json()["error"]["message"]


def test_api_key_check():
    with serve(api_key="right-key") as srv:
        assert post(srv.url, {"messages": MSGS}).status_code == 401
        bad = post(srv.url, {"messages": MSGS}, headers={"Authorization": "Bearer wrong"})
        assert bad.status_code == 401 and "right-key" not in bad.text
        ok = post(srv.url, {"messages": MSGS}, headers={"Authorization": "Bearer right-key"})
        assert ok.status_code == 200
        assert httpx.get(srv.url + "/models", timeout=5).status_code == 401
        assert srv.stats.auth_failures == 3


def test_api_key_env_must_be_set(monkeypatch):
    monkeypatch.delenv("GS_TEST_SERVER_KEY", raising=False)
    with pytest.raises(GuardsmithError, match="GS_TEST_SERVER_KEY"):
        serve(api_key_env="GS_TEST_SERVER_KEY")


def test_fault_plan_order_and_kinds():
    plan = FaultPlan().fail(429, retry_after=2).fail(503).drop().slow(0.5)
    with serve(faults=plan) as srv:
        r = post(srv.url, {"messages": MSGS})
        assert r.status_code == 429 and r.headers["retry-after"] == "2"
        assert post(srv.url, {"messages": MSGS}).status_code == 503
        with pytest.raises(httpx.RemoteProtocolError):
            post(srv.url, {"messages": MSGS})
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(srv.url + "/chat/completions", json={"messages": MSGS}, timeout=0.1)
        assert post(srv.url, {"messages": MSGS}).status_code == 200
        assert plan.pending == 0 and len(plan.served) == 4
        assert srv.stats.requests == 5


def test_max_n_and_logprobs():
    responder = ScriptedResponder(["a"], logprobs={"harm": -0.2, "un": -1.9, "x": -5.0})
    with serve(responder, max_n=1) as srv:
        data = post(srv.url, {"messages": MSGS, "n": 3, "logprobs": True, "top_logprobs": 2}).json()
    assert len(data["choices"]) == 1
    top = data["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    assert [t["token"] for t in top] == ["harm", "un"]


def test_backend_responder_reports_token_counts():
    class Fake:
        def generate(self, requests, n=1, temperature=0.0, top_p=1.0, max_tokens=256, seed=None, on_error="raise"):
            assert on_error == "collect"
            if "LONG" in requests[0][-1]["content"]:
                return [[Generation("", 0, 0, 0.0, "error", error="too long: 9999 tokens") for _ in range(n)]]
            return [[Generation(f"s{i}", 7, 3, 0.01, "length") for i in range(n)] for _ in requests]

    with serve(BackendResponder(Fake())) as srv:
        data = post(srv.url, {"messages": MSGS, "n": 2}).json()
        bad = post(srv.url, {"messages": [{"role": "user", "content": "LONG"}]})
    assert data["usage"] == {"prompt_tokens": 7, "completion_tokens": 6, "total_tokens": 13}
    assert data["choices"][1]["finish_reason"] == "length"
    assert bad.status_code == 400 and bad.json()["error"]["message"] == "too long: 9999 tokens"


def test_stop_frees_port_and_is_idempotent():
    srv = serve()
    port = srv.port
    srv.stop()
    srv.stop()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
    assert isinstance(srv, ChatServer) and "auth=off" in repr(srv)


def test_malformed_bodies_as_named():
    import json as _json

    from guardsmith.standins.chat_server import MALFORMED

    plan = FaultPlan()
    for name in MALFORMED:
        plan.malformed(name)
    with serve(faults=plan) as srv:
        bodies = {name: post(srv.url, {"messages": MSGS}) for name in MALFORMED}
        assert post(srv.url, {"messages": MSGS}).json()["choices"][0]["message"]["content"] == "hello there"
    assert all(r.status_code == 200 for r in bodies.values())
    assert isinstance(bodies["list"].json(), list) and bodies["string"].json() == "the teacher is thinking"
    assert bodies["number"].json() == 42 and bodies["empty"].content == b""
    for name in ("not_json", "truncated"):
        with pytest.raises(_json.JSONDecodeError):
            bodies[name].json()
    assert bodies["truncated"].text.startswith('{"id": "chatcmpl-')
    assert bodies["usage"].json()["usage"] == "many"
    assert bodies["usage_tokens"].json()["usage"]["completion_tokens"] == "lots"
    assert bodies["no_choices"].json()["choices"] == []
    assert bodies["message_not_object"].json()["choices"][0]["message"] == "just text"
    assert bodies["content_not_text"].json()["choices"][0]["message"]["content"] == {"parts": ["a", "b"]}
    assert bodies["logprobs"].json()["choices"][0]["logprobs"] == {"content": "not a list"}
    with pytest.raises(GuardsmithError, match="unknown malformed body"):
        FaultPlan().malformed("weird")


def test_drip_sends_a_byte_at_a_time():
    plan = FaultPlan().drip(0.02)
    with serve(faults=plan) as srv:
        with httpx.stream("POST", srv.url + "/chat/completions", json={"messages": MSGS}, timeout=5) as r:
            assert r.status_code == 200
            chunks = list(r.iter_raw())
            length = int(r.headers["content-length"])
    assert len(chunks) > length // 4  # arrives in many small pieces, every read well inside 5 s
    assert b"".join(chunks).startswith(b'{"id": "chatcmpl-') and len(b"".join(chunks)) == length


def test_drop_partial_and_poison():
    plan = FaultPlan().drop(partial=True).fail(500).poison("TOO-LONG-ROW")
    with serve(faults=plan) as srv:
        bad = post(srv.url, {"messages": [{"role": "user", "content": "x TOO-LONG-ROW"}]})
        assert bad.status_code == 400 and bad.json()["error"]["message"] == "prompt too long"
        assert plan.pending == 2  # a poisoned request takes no queued fault
        with pytest.raises(httpx.RemoteProtocolError):
            post(srv.url, {"messages": MSGS})
        assert post(srv.url, {"messages": MSGS}).status_code == 500
        assert post(srv.url, {"messages": MSGS}).status_code == 200
        assert post(srv.url, {"messages": [{"role": "user", "content": "TOO-LONG-ROW"}]}).status_code == 400
    assert plan.poisoned == 2 and srv.stats.requests == 5
    with pytest.raises(GuardsmithError):
        FaultPlan().poison("")


def test_basic_auth():
    with serve(basic_auth=("u", "pw")) as srv:
        assert post(srv.url, {"messages": MSGS}).status_code == 401
        assert post(srv.url, {"messages": MSGS}, auth=("u", "nope")).status_code == 401
        assert post(srv.url, {"messages": MSGS}, auth=("u", "pw")).status_code == 200
        assert "auth=on" in repr(srv)
