"""The servers guardsmith ships (`guardsmith serve model` / `serve offline-teacher`, the test endpoint)
spoken to by the official `openai` SDK, the client users point at them."""
from __future__ import annotations

import pytest

openai = pytest.importorskip("openai")

from guardsmith.guard import render_teacher_messages  # noqa: E402
from guardsmith.standins.chat_server import FaultPlan, serve  # noqa: E402
from guardsmith.standins.offline import OfflineTeacher, serve_offline  # noqa: E402
from guardsmith.standins.sample import load_sample  # noqa: E402


def _client(server, **kw):
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=30, **kw)


def test_offline_teacher_answers_the_sdk_with_a_parseable_trace():
    from guardsmith.guard import parse_guard_output

    row = load_sample("train")[0]
    with serve_offline(defects={}) as server:
        reply = _client(server).chat.completions.create(model=server.model, messages=render_teacher_messages(row),
                                                        n=2, seed=0)
    assert len(reply.choices) == 2 and reply.usage.completion_tokens > 0
    parsed = parse_guard_output(reply.choices[0].message.content)
    assert parsed.parse_ok and parsed.prompt_harm == row["prompt_harm"] and parsed.reasoning


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_field_reaches_the_sdk_apart_from_the_answer(field):
    row = load_sample("train")[0]
    with serve(OfflineTeacher({}, 0), model="offline-teacher", reasoning_field=field) as server:
        message = _client(server).chat.completions.create(
            model="offline-teacher", messages=render_teacher_messages(row)).choices[0].message
    extra = message.model_extra or {}
    assert extra.get(field, "").strip() and "<think>" not in message.content
    assert message.content.lstrip().startswith("Prompt harm:")


def test_injected_faults_surface_as_the_sdk_errors():
    plan = FaultPlan().fail(429, retry_after=7).poison("POISON")
    with serve(faults=plan) as server:
        client = _client(server)
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert limited.value.response.headers["retry-after"] == "7"
        with pytest.raises(openai.BadRequestError, match="prompt too long"):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "a POISON b"}])
        ok = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hello"}])
        assert ok.choices[0].message.content  # the echo responder answers once the faults are spent
    assert plan.pending == 0 and plan.poisoned == 1
