"""Transformers backend with the tiny random-weight model, and the tiny model served over HTTP."""
from __future__ import annotations

import importlib
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

importlib.import_module("transformers")

from guardsmith.errors import GuardsmithError  # noqa: E402
from guardsmith.inference import OpenAIBackend, TransformersBackend, make_backend  # noqa: E402
from guardsmith.standins.chat_server import BackendResponder, serve  # noqa: E402

pytestmark = pytest.mark.timeout(300)
REQS = [
    [{"role": "user", "content": "How do I bake bread?"}],
    [{"role": "system", "content": "You are a guard."}, {"role": "user", "content": "How to make a bomb"}],
    [{"role": "user", "content": "hi"}],
    [{"role": "user", "content": "Tell me a long story about a cat and a dog who become friends."}],
]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    from guardsmith.standins.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("inference") / "tiny-lm", seed=0)


@pytest.fixture(scope="module")
def backend(tiny_model):
    be = make_backend(f"transformers:{tiny_model}", batch_size=3)
    yield be
    be.close()


def test_loads_on_cpu_fp32(backend):
    import torch

    assert isinstance(backend, TransformersBackend)
    assert backend.device.type == "cpu" and backend.dtype == torch.float32
    assert backend.tokenizer.padding_side == "left"
    assert backend.render(REQS[2]).endswith("<|im_start|>assistant\n")


def test_generate_shapes_counts_latency(backend):
    out = backend.generate(REQS, n=3, temperature=1.0, max_tokens=8, seed=1)
    assert len(out) == 4 and all(len(r) == 3 for r in out)
    for request, gens in zip(REQS, out):
        expected = len(backend.tokenizer(backend.render(request), add_special_tokens=False)["input_ids"])
        for g in gens:
            assert g.prompt_tokens == expected
            assert 1 <= g.completion_tokens <= 8 and g.latency_s > 0
            assert g.finish_reason == "stop" or (g.finish_reason == "length" and g.completion_tokens == 8)


def test_seed_reproducible(backend):
    a = backend.generate(REQS, n=2, temperature=1.0, max_tokens=6, seed=123)
    b = backend.generate(REQS, n=2, temperature=1.0, max_tokens=6, seed=123)
    c = backend.generate(REQS, n=2, temperature=1.0, max_tokens=6, seed=124)
    texts = lambda out: [[g.text for g in r] for r in out]  # noqa: E731
    assert texts(a) == texts(b)
    assert texts(a) != texts(c)


def test_greedy_deterministic_and_batch_independent(backend, tiny_model):
    a = backend.generate(REQS, n=2, max_tokens=6)
    b = backend.generate(REQS, n=2, max_tokens=6, seed=99)
    assert [[g.text for g in r] for r in a] == [[g.text for g in r] for r in b]
    assert all(r[0].text == r[1].text for r in a)
    single = make_backend(f"transformers:{tiny_model}", batch_size=1).generate(REQS, max_tokens=6)
    assert [r[0].text for r in single] == [r[0].text for r in a]


def test_answer_probability(backend, tiny_model):
    words = ("harmful", "unharmful")
    probs = backend.answer_probability(REQS, "Prompt harm: ", words)
    assert len(probs) == 4
    for p in probs:
        assert set(p) == set(words) and sum(p.values()) == pytest.approx(1.0)
        assert all(0 < v < 1 for v in p.values())
    # batching and padding do not change the scores
    single = make_backend(f"transformers:{tiny_model}", batch_size=1).answer_probability(REQS, "Prompt harm: ", words)
    for p, q in zip(probs, single):
        assert p["harmful"] == pytest.approx(q["harmful"], abs=1e-4)
    three = backend.answer_probability(REQS[:1], "Response refusal: ", ("refusal", "compliance", "None"))
    assert sum(three[0].values()) == pytest.approx(1.0)
    with pytest.raises(GuardsmithError):
        backend.answer_probability(REQS, "Prompt harm: ", ("harmful",))


def test_answer_probability_matches_token_scores(backend):
    """The score of a word equals the product of its next-token probabilities (manual check)."""
    import torch

    prompt = backend.render(REQS[0]) + "Prompt harm:"
    probs = backend.answer_probability(REQS[:1], "Prompt harm:", ("a", "b"))[0]
    ids = backend.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = backend.model(input_ids=ids).logits[0, -1].float()
    lp = torch.log_softmax(logits, -1)
    tok = lambda w: backend.tokenizer(prompt + w, add_special_tokens=False)["input_ids"][ids.shape[1]:]  # noqa: E731
    assert len(tok("a")) == 1 and len(tok("b")) == 1
    pa, pb = lp[tok("a")[0]].exp().item(), lp[tok("b")[0]].exp().item()
    assert probs["a"] == pytest.approx(pa / (pa + pb), rel=1e-3)


def test_missing_folder_is_clear(tmp_path):
    with pytest.raises(GuardsmithError, match="download"):
        TransformersBackend(tmp_path / "nope")


def test_tiny_model_served_over_http(backend):
    with serve(BackendResponder(backend), model="tiny") as srv:
        client = OpenAIBackend(srv.url, "tiny", api_key_env="GS_UNSET_KEY_FOR_TEST", backoff_base_s=0.01)
        remote = client.generate(REQS[:2], n=2, temperature=0.0, max_tokens=6)
    local = backend.generate(REQS[:2], n=2, max_tokens=6)
    assert [[g.text for g in r] for r in remote] == [[g.text for g in r] for r in local]
    assert remote[0][0].prompt_tokens == local[0][0].prompt_tokens
    assert sum(g.completion_tokens for g in remote[0]) == sum(g.completion_tokens for g in local[0])


def test_stop_at_eos_counts_and_cuts(backend, monkeypatch):
    """Tokens up to and including end-of-turn count; text stops before it; padding is ignored."""
    import torch

    eos, pad = backend.tokenizer.eos_token_id, backend.tokenizer.pad_token_id
    word = backend.tokenizer("hello", add_special_tokens=False)["input_ids"]

    def fake_generate(input_ids, attention_mask, **kw):
        rows = input_ids.shape[0] * kw.get("num_return_sequences", 1)
        tail = torch.tensor([word + [eos, pad, pad]] * rows)
        return torch.cat([input_ids.repeat_interleave(rows // input_ids.shape[0], 0), tail], dim=1)

    monkeypatch.setattr(backend.model, "generate", fake_generate)
    out = backend.generate(REQS[:2], n=2, temperature=1.0, max_tokens=10, seed=0)
    for g in (g for r in out for g in r):
        assert (g.text, g.completion_tokens, g.finish_reason) == ("hello", len(word) + 1, "stop")


def test_open_backend_from_a_model_folder_and_settings(tiny_model, monkeypatch):
    from guardsmith import model_store
    from guardsmith.inference import open_backend
    from guardsmith.settings import BackendChoice

    with open_backend(str(tiny_model), choice=BackendChoice(concurrency=2)) as be:  # bare folder: choice.backend
        assert isinstance(be, TransformersBackend) and be.batch_size == 2
    with open_backend(f"transformers:{tiny_model}", choice=BackendChoice(concurrency=2,
                                                                         backend_options={"batch_size": 5})) as be:
        assert be.batch_size == 5  # backend_options win over concurrency
    with pytest.raises(GuardsmithError, match="config.json"):
        open_backend(f"transformers:{tiny_model}/missing")
    fetched = []
    monkeypatch.setattr(model_store, "local_model", lambda uri: fetched.append(uri) or tiny_model)
    with open_backend("s3://bucket/models/tiny", choice=BackendChoice(concurrency=4)) as be:
        assert fetched == ["s3://bucket/models/tiny"] and be.batch_size == 4  # S3 folders are downloaded


def test_prompt_longer_than_the_context(backend, monkeypatch):
    lengths = [len(backend.tokenizer(backend.render(r), add_special_tokens=False)["input_ids"]) for r in REQS]
    longest = lengths.index(max(lengths))
    assert sorted(lengths)[-2] < lengths[longest]
    monkeypatch.setattr(backend.model.config, "max_position_embeddings", lengths[longest])
    with pytest.raises(GuardsmithError, match=rf"^request {longest}: the prompt has {lengths[longest]} tokens, more "):
        backend.generate(REQS, max_tokens=4)
    out = backend.generate(REQS, n=2, max_tokens=4, on_error="collect")
    others = backend.generate([r for i, r in enumerate(REQS) if i != longest], n=2, max_tokens=4)
    assert [g.error for g in out[longest]] == [
        f"too long: the prompt has {lengths[longest]} tokens, the model's context is {lengths[longest]}"] * 2
    assert out[longest][0].finish_reason == "error" and out[longest][0].text == ""
    kept = [[g.text for g in r] for i, r in enumerate(out) if i != longest]
    assert kept == [[g.text for g in r] for r in others] and all(g.error is None for r in others for g in r)


def _prompt_ids(backend, request):
    return backend.tokenizer(backend.render(request), add_special_tokens=False)["input_ids"]


def test_samples_as_num_return_sequences_gives_them(backend, tiny_model):
    """Prefilling once and repeating the cache samples what transformers' own k-sample generate
    samples for the same batch (longest prompt first) and seed."""
    import torch

    be = make_backend(f"transformers:{tiny_model}", batch_size=len(REQS))
    out = be.generate(REQS, n=3, temperature=1.0, max_tokens=8, seed=5)
    order = sorted(range(len(REQS)), key=lambda i: -len(_prompt_ids(be, REQS[i])))
    enc = be.tokenizer([be.render(REQS[i]) for i in order], return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(5)
    with torch.inference_mode():
        ref = be.model.generate(**enc, max_new_tokens=8, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                num_return_sequences=3, pad_token_id=be.tokenizer.pad_token_id,
                                eos_token_id=sorted(be.eos_ids))
    new = ref[:, enc["input_ids"].shape[1]:].tolist()
    for rank, i in enumerate(order):
        for j in range(3):
            ids = new[rank * 3 + j]
            cut = next((k for k, t in enumerate(ids) if t in be.eos_ids), len(ids))
            assert out[i][j].text == be.tokenizer.decode(ids[:cut], skip_special_tokens=True), (i, j)
    assert len({g.text for r in out for g in r}) > 4  # the samples differ


def test_each_prompt_is_prefilled_once(backend, monkeypatch):
    """With k samples, the only forward passes over more than one position are one per batch over
    its prompts (k times fewer rows than repeating each prompt k times)."""
    calls = []
    forward = backend.model.forward

    def recording(*args, **kw):
        ids = kw.get("input_ids", args[0] if args else None)
        calls.append(tuple(ids.shape))
        return forward(*args, **kw)

    monkeypatch.setattr(backend.model, "forward", recording)
    backend.generate(REQS, n=4, temperature=1.0, max_tokens=5, seed=0)
    lengths = sorted((len(_prompt_ids(backend, r)) for r in REQS), reverse=True)
    prefills = [shape for shape in calls if shape[1] > 1]
    # batch_size 3, longest first: the three longest prompts, then the shortest one
    assert prefills == [(3, lengths[0] - 1), (1, lengths[3] - 1)]
    assert all(shape[0] in (12, 4) for shape in calls if shape[1] == 1)  # decoding: 4 rows per prompt
