"""evaluate with guards of any format (issue 13): NAME=FORMAT:SPEC, the format used per model, parse
failures per format, P(unsafe) with AUROC / AUPRC / threshold sweep, baseline rows in the report;
the slow done-when test trains a tiny model per registered format and evaluates it end to end.

Expected numbers are worked out by hand in the comments (and AUROC / AUPRC also by scikit-learn).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from guardsmith import storage, tables  # noqa: E402
from guardsmith.errors import DataError, GuardsmithError  # noqa: E402
from guardsmith.guard import GuardAnswer, has_response  # noqa: E402
from guardsmith.guard.formats import FORMATS, GuardFormat, Verdict, failed  # noqa: E402
from guardsmith.inference import Backend, Generation  # noqa: E402
from guardsmith.metrics import SWEEP_THRESHOLDS, score_metrics, threshold_sweep  # noqa: E402
from guardsmith.stages import evaluate  # noqa: E402
from guardsmith.vocabulary import HARM_TASKS  # noqa: E402

pytestmark = pytest.mark.timeout(120)

H, U = "harmful", "unharmful"


def _row(rid: str, **kw) -> dict:
    base = {"id": rid, "source": "hand", "taxonomy": "wildguard", "policy": None, "prompt": f"prompt of {rid}",
            "response": None, "prompt_harm": None, "response_harm": None, "response_refusal": None,
            "categories": []}
    return {**base, **kw}


ROWS = [
    _row("s1", prompt_harm=H),
    _row("s2", prompt_harm=H),
    _row("s3", prompt_harm=U),
    _row("s4", prompt_harm=U, response="Here you go.", response_harm=U),
    _row("s5", prompt_harm=H, response="Sure, step one.", response_harm=H),
]


class Toy(GuardFormat):
    """A single-verdict format (as Llama Guard): judges the last turn, answers 'safe' / 'unsafe'."""

    name = "toy"
    source = "tests/test_eval_formats.py"
    parse_rule = "TOY RULE: the whole output is 'safe' or 'unsafe'; anything else is a failure"
    tasks = HARM_TASKS
    own_template = True

    def messages(self, row, *, mode="NR", dual=False, taxonomy=None, style="full"):
        turn = "response" if has_response(row) else "prompt"
        return [{"role": "user", "content": f"judge {row['id']} {turn}"}]

    def row_tasks(self, row):
        return ("response_harm" if has_response(row) else "prompt_harm",)

    def answer(self, row):
        task = self.row_tasks(row)[0]
        return "unsafe" if row[task] == H else "safe"

    def parse(self, text, row=None, *, task=None):
        task = task or self.row_tasks(row)[0]
        word = text.strip()
        if word not in ("safe", "unsafe"):
            return failed(f"not a verdict: {word!r}")
        labels = {"prompt_harm": None, "response_harm": None, "response_refusal": None,
                  task: H if word == "unsafe" else U}
        return GuardAnswer(labels["prompt_harm"], labels["response_harm"], labels["response_refusal"], "", True)

    def verdict(self, row):
        return Verdict(prefix="", unsafe="unsafe", safe="safe", task=self.row_tasks(row)[0])


# (row id, turn judged) -> sampled text and P(unsafe)
TEXT = {("s1", "prompt"): "unsafe", ("s2", "prompt"): "safe", ("s3", "prompt"): "maybe",
        ("s4", "prompt"): "safe", ("s4", "response"): "safe",
        ("s5", "prompt"): "unsafe", ("s5", "response"): "unsafe"}
PROB = {("s1", "prompt"): 0.9, ("s2", "prompt"): 0.4, ("s3", "prompt"): 0.6,
        ("s4", "prompt"): 0.2, ("s4", "response"): 0.3,
        ("s5", "prompt"): 0.8, ("s5", "response"): 0.7}
LABELS = {r["id"]: r for r in ROWS}


def _key(messages) -> tuple[str, str] | None:
    """The toy key of a toy request (format text or plain turns); None for a guardsmith prompt."""
    text = messages[-1]["content"] if messages[-1]["role"] == "user" else messages[-2]["content"]
    if "<user_turn>" in text:
        return None
    m = re.search(r"(?:judge|prompt of) (s\d)", text)
    turn = "response" if messages[-1]["role"] == "assistant" or text.endswith("response") else "prompt"
    return m.group(1), turn


class Scripted(Backend):
    """Toy requests: TEXT / PROB; guardsmith prompts: the row's true labels in the A.3 lines."""

    kind = "scripted"

    def __init__(self) -> None:
        self.requests: list[list[dict]] = []
        self.scored: list[tuple[str, tuple[str, ...]]] = []

    def generate(self, requests, n=1, temperature=0.0, top_p=1.0, max_tokens=256, seed=None):
        out = []
        for messages in requests:
            self.requests.append(messages)
            key = _key(messages)
            if key is None:
                rid = re.search(r"prompt of (\S+)\n</user_turn>", messages[-1]["content"]).group(1)
                row = LABELS[rid]
                text = f"Prompt harm: {row['prompt_harm']}\nResponse harm: {row['response_harm']}\nResponse refusal: None"
            else:
                text = TEXT[key]
            out.append([Generation(text, 10, 2, 0.02, "stop") for _ in range(n)])
        return out

    def _answer_probability(self, requests, prefix, words):
        self.scored.append((prefix, words))
        return [{"unsafe": PROB[_key(m)], "safe": 1 - PROB[_key(m)]} for m in requests]


class NoScores(Scripted):
    _answer_probability = Backend._answer_probability


def _model(path: Path, summary: bool) -> str:
    from guardsmith.training import TrainingSummary

    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    if summary:
        TrainingSummary(stage="sft", method="sft", output=str(path), base_model="base", examples=5,
                        global_step=1, train_rows=5).write(path)
    return str(path)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(FORMATS, "toy", Toy())
    return FORMATS["toy"]


@pytest.fixture
def bench(tmp_path) -> str:
    uri = str(tmp_path / "bench")
    storage.write_table(uri, tables.from_records(ROWS, "interactions"), "interactions")
    return uri


def _run(tmp_path, monkeypatch, models, bench, backend=None, **kw):
    backend = backend or Scripted()
    monkeypatch.setattr(evaluate, "open_guard", lambda *a, **k: backend)
    cfg = evaluate.EvaluateConfig(models=models, benchmarks=[f"Safe={bench}"], output=str(tmp_path / "out"),
                                  samples_per_row=1, **kw)
    return evaluate.run(cfg), backend


def test_baseline_format_beside_trained_guard(tmp_path, monkeypatch, toy, bench, capsys):
    mine = _model(tmp_path / "mine", summary=True)
    other = _model(tmp_path / "toy-guard", summary=False)
    res, backend = _run(tmp_path, monkeypatch, [f"mine={mine}", f"Toy=toy:{other}"], bench)
    log = capsys.readouterr().err
    assert "model Toy (toy): sending the plain conversation" in log  # own template by default
    assert "no format named" not in log  # mine: trained here -> guardsmith without being named
    # the toy model got the plain turns (own template), never the format's text
    toy_requests = [m for m in backend.requests if _key(m) is not None]
    assert toy_requests and all("judge" not in m[-1]["content"] for m in toy_requests)
    assert {p for p, _ in backend.scored} == {""} and {w for _, w in backend.scored} == {("unsafe", "safe")}

    metrics = {(m["model"], m["task"]): m for m in storage.read_table(res.metrics, "metrics").to_pylist()}
    assert metrics[("mine", "prompt_harm")]["format"] == "guardsmith"
    assert metrics[("mine", "prompt_harm")]["f1_mean"] == 1.0 and metrics[("mine", "prompt_harm")]["auroc"] is None
    p = metrics[("Toy", "prompt_harm")]
    # prompt harm, s4 and s5 asked again without their response: s1 tp, s2 fn, s3 unreadable -> fp, s4 tn, s5 tp
    assert p["format"] == "toy" and p["support"] == 5 and p["positives"] == 3
    assert p["f1_mean"] == pytest.approx(2 / 3) and p["precision_mean"] == pytest.approx(2 / 3)
    assert p["parse_error_rate"] == pytest.approx(1 / 5)
    # scores: positives .9 .4 .8, negatives .6 .2 -> 5 of 6 pairs ordered; AP = 1/3 + 1/3 + 1/3 * 3/4
    assert p["scored"] == 5 and p["auroc"] == pytest.approx(5 / 6) and p["auprc"] == pytest.approx(11 / 12)
    sweep = {round(e["threshold"], 2): e for e in p["sweep"]}
    assert sorted(sweep) == list(SWEEP_THRESHOLDS)
    assert (sweep[0.05]["f1"], sweep[0.05]["precision"], sweep[0.05]["recall"]) == pytest.approx((0.75, 0.6, 1.0))
    assert sweep[0.25]["f1"] == pytest.approx(6 / 7) and sweep[0.4]["f1"] == pytest.approx(6 / 7)
    assert (sweep[0.5]["f1"], sweep[0.5]["precision"], sweep[0.5]["recall"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert (sweep[0.95]["f1"], sweep[0.95]["recall"]) == (0.0, 0.0)
    r = metrics[("Toy", "response_harm")]
    assert (r["f1_mean"], r["parse_error_rate"], r["scored"], r["auroc"], r["auprc"]) == (1.0, 0.0, 2, 1.0, 1.0)

    preds = storage.read_table(res.predictions, "predictions").to_pylist()
    p_of = {(x["id"], x["task"]): x["p_unsafe"] for x in preds if x["model"] == "Toy"}
    assert p_of == {("s1", "prompt_harm"): 0.9, ("s2", "prompt_harm"): 0.4, ("s3", "prompt_harm"): 0.6,
                    ("s4", "prompt_harm"): 0.2, ("s5", "prompt_harm"): 0.8,
                    ("s4", "response_harm"): 0.3, ("s5", "response_harm"): 0.7}
    assert all(x["p_unsafe"] is None for x in preds if x["model"] == "mine")

    saved = json.loads(Path(res.sweep).read_text())
    assert [(c["model"], c["task"], c["format"]) for c in saved] == [("Toy", "prompt_harm", "toy"),
                                                                      ("Toy", "response_harm", "toy")]
    assert saved[0]["auroc"] == pytest.approx(5 / 6) and len(saved[0]["sweep"]) == 19

    md = Path(res.report_md).read_text()
    table1 = md.split("## Harmful F1 (Table 1)")[1].split("##")[0]
    assert "| mine |" in table1 and "| Toy [toy] |" in table1  # the baseline beside the trained guard
    formats = md.split("## Guard formats")[1].split("\n## ")[0]
    assert "TOY RULE" in formats and FORMATS["guardsmith"].parse_rule in formats and "counts as wrong" in formats
    scores = md.split("## Scores: P(unsafe)")[1].split("\n## ")[0]
    assert "| Toy [toy] | Safe | prompt_harm | 5 | 0.833 | 0.917 | 0.25 | 0.857 | 0.667 |" in scores
    sweep_md = md.split("## Threshold sweep: Toy [toy]")[1].split("\n## ")[0]
    assert "| 0.50 | 0.667 / 0.667 / 0.667 | 1.000 / 1.000 / 1.000 |" in sweep_md
    assert "Threshold sweep: mine" not in md
    assert "Toy [toy] / Safe / prompt_harm: F1 0.667" in str(res) and "AUROC 0.833" in str(res)


def test_template_format_and_no_scores(tmp_path, monkeypatch, toy, bench):
    other = _model(tmp_path / "toy-guard", summary=False)
    res, backend = _run(tmp_path, monkeypatch, [f"Toy[template=format]=toy:{other}"], bench, unsafe_scores=False)
    assert all(m[-1]["content"].startswith("judge ") for m in backend.requests)  # the format's own text
    assert backend.scored == [] and res.sweep is None and not (tmp_path / "out" / evaluate.SWEEP_FILE).exists()
    preds = storage.read_table(res.predictions, "predictions").to_pylist()
    assert preds and all(x["p_unsafe"] is None for x in preds)
    metrics = storage.read_table(res.metrics, "metrics").to_pylist()
    assert all(m["auroc"] is None and m["sweep"] is None for m in metrics)
    assert "## Scores" not in Path(res.report_md).read_text()


def test_backend_without_probabilities_and_unnamed_format(tmp_path, monkeypatch, toy, bench, capsys):
    plain = _model(tmp_path / "plain", summary=False)
    other = _model(tmp_path / "toy-guard", summary=False)
    res, _ = _run(tmp_path, monkeypatch, [f"plain={plain}", f"Toy=toy:{other}"], bench, backend=NoScores())
    log = capsys.readouterr().err
    assert f"model plain ({plain}): no format named and no training summary; using the guardsmith format" in log
    assert "model Toy: the scripted backend gives no answer probabilities" in log
    assert "model plain: the scripted backend" not in log  # the guardsmith format has no verdict anyway
    metrics = storage.read_table(res.metrics, "metrics").to_pylist()
    assert {m["format"] for m in metrics if m["model"] == "plain"} == {"guardsmith"}
    assert all(m["scored"] is None for m in metrics) and res.sweep is None


def test_format_named_against_recorded_one_and_tasks_left_out(tmp_path, monkeypatch, toy, capsys):
    rows = ROWS + [_row("s6", prompt_harm=U, response="No.", response_harm=U, response_refusal="refusal")]
    for turn in ("prompt", "response"):
        monkeypatch.setitem(TEXT, ("s6", turn), "safe")
        monkeypatch.setitem(PROB, ("s6", turn), 0.1)
    monkeypatch.setitem(LABELS, "s6", rows[-1])
    uri = str(tmp_path / "b6")
    storage.write_table(uri, tables.from_records(rows, "interactions"), "interactions")
    trained = _model(tmp_path / "trained", summary=True)
    res, _ = _run(tmp_path, monkeypatch, [f"T=toy:{trained}"], uri,
                  tasks=["prompt_harm", "response_harm", "response_refusal"])
    log = capsys.readouterr().err
    assert "model T: trained to speak the guardsmith format; evaluating it in the toy format" in log
    assert "model T: the toy format does not answer response_refusal" in log
    assert "sending the format's prompt text (a model trained here)" in log
    metrics = storage.read_table(res.metrics, "metrics").to_pylist()
    assert {m["task"] for m in metrics} == {"prompt_harm", "response_harm"}  # refusal: not answered, no row


def test_spec_with_format():
    spec = evaluate.parse_model_spec("GR[size=1k]=guardreasoner:vllm:s3://b/models/gr")
    assert (spec.name, spec.format, spec.uri, spec.train_size) == ("GR", "guardreasoner", "vllm:s3://b/models/gr", 1000)
    spec = evaluate.parse_model_spec("GuardReasoner:/models/gr-8b/")
    assert (spec.name, spec.format, spec.uri) == ("gr-8b", "guardreasoner", "/models/gr-8b/")
    spec = evaluate.parse_model_spec("e=guardsmith:openai:http://h:8000/v1?model=g")
    assert (spec.format, spec.uri) == ("guardsmith", "openai:http://h:8000/v1?model=g")
    for plain in ("s3://b/m", "file:///m", "openai:http://h/v1?model=m", "tiny:causal-lm", "/m"):
        spec = evaluate.parse_model_spec(f"x={plain}", strict_format=True)
        assert (spec.format, spec.uri) == (None, plain)
    with pytest.raises(GuardsmithError, match="'wildgaurd' is not a guard format"):
        evaluate.parse_model_spec("x=wildgaurd:/m", strict_format=True)
    assert evaluate.parse_model_spec("x=wildgaurd:/m").uri == "wildgaurd:/m"  # not strict: a path
    with pytest.raises(GuardsmithError, match="names no model"):
        evaluate.parse_model_spec("x=guardreasoner:")


def test_bad_format_options_write_nothing(tmp_path, monkeypatch, bench):
    monkeypatch.setattr(evaluate, "open_guard", lambda *a, **k: Scripted())
    model = _model(tmp_path / "m", summary=False)
    for models, match in (([f"g=wildgaurd:{model}"], "not a guard format"),
                          ([f"g[template=mine]=guardsmith:{model}"], "template='mine'")):
        with pytest.raises(GuardsmithError, match=match):
            evaluate.run(evaluate.EvaluateConfig(models=models, benchmarks=[bench], output=str(tmp_path / "out")))
        assert not (tmp_path / "out").exists()


def test_score_metrics_by_hand_and_by_scikit_learn():
    labels = [H, H, U, U, H]
    scores = [0.9, 0.4, 0.6, 0.2, 0.8]
    r = score_metrics(labels, scores)
    assert (r.n, r.positives, r.auroc, r.auprc) == (5, 3, pytest.approx(5 / 6), pytest.approx(11 / 12))
    # ties: one positive and one negative at 0.5 -> that pair counts one half
    assert score_metrics([H, U, H, U], [0.5, 0.5, 0.9, 0.1]).auroc == pytest.approx(3.5 / 4)
    assert score_metrics(["refusal", "compliance"], [0.2, 0.7], positive="refusal").auroc == 0.0
    assert score_metrics([H, H], [0.1, 0.2]).auroc is None and score_metrics([U], [0.3]).auprc is None
    sklearn = pytest.importorskip("sklearn.metrics")
    import numpy as np

    rng = np.random.default_rng(13)
    for _ in range(50):
        y = rng.integers(0, 2, 12)
        if y.min() == y.max():
            continue
        p = np.round(rng.random(12), 1)  # rounded: many ties
        r = score_metrics([H if v else U for v in y], p)
        assert r.auroc == pytest.approx(sklearn.roc_auc_score(y, p))
        assert r.auprc == pytest.approx(sklearn.average_precision_score(y, p))


def test_threshold_sweep_and_bad_scores():
    sweep = threshold_sweep([H, U, H], [0.7, 0.5, 0.2], thresholds=[0.1, 0.5, 0.6, 0.8])
    # 0.1: all positive (tp 2, fp 1); 0.5: 0.7 and 0.5 (tp 1, fp 1, fn 1); 0.6: 0.7 only; 0.8: none
    assert [(e["threshold"], e["precision"], e["recall"]) for e in sweep] == \
        [(0.1, pytest.approx(2 / 3), 1.0), (0.5, 0.5, 0.5), (0.6, 1.0, 0.5), (0.8, 0.0, 0.0)]
    assert [e["f1"] for e in sweep] == pytest.approx([0.8, 0.5, 2 / 3, 0.0])
    with pytest.raises(DataError, match="scores"):
        score_metrics([H, U], [0.2, 1.5])
    with pytest.raises(DataError, match="y_true"):
        threshold_sweep([H, "unsafe"], [0.2, 0.5])
    with pytest.raises(GuardsmithError, match="length mismatch"):
        score_metrics([H], [0.2, 0.3])


# --------------------------------------------------------------------------- done when: every format end to end

def _train_tiny(fmt: GuardFormat, rows: list[dict], out: Path, *, steps: int, batch: int = 4) -> Path:
    """A tiny causal LM trained (TRL SFT, completion-only loss) to answer ``fmt.messages(row)`` with
    ``fmt.answer(row)``; returns the saved folder."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from guardsmith.standins.tiny import build_tiny_causal_lm, default_texts

    examples = [{"prompt": fmt.messages(r), "completion": [{"role": "assistant", "content": fmt.answer(r)}]}
                for r in rows]
    texts = default_texts() + [m["content"] for e in examples for m in e["prompt"] + e["completion"]]
    base = build_tiny_causal_lm(out / "base", texts=texts, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    args = SFTConfig(output_dir=str(out / "work"), max_steps=steps, learning_rate=1e-3, per_device_train_batch_size=batch,
                     lr_scheduler_type="constant", warmup_steps=0, max_length=1024, completion_only_loss=True,
                     logging_steps=steps, save_strategy="no", report_to="none", disable_tqdm=True, seed=0,
                     use_cpu=True, dataloader_num_workers=0, model_init_kwargs={"dtype": "float32"})
    trainer = SFTTrainer(model=str(base), args=args, train_dataset=Dataset.from_list(examples),
                         processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(out / "model"))
    tokenizer.save_pretrained(str(out / "model"))
    return out / "model"


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", sorted(FORMATS))
def test_tiny_model_trained_on_each_format_end_to_end(name, tmp_path):
    pytest.importorskip("trl")
    from guardsmith.standins.sample import load_sample

    fmt = FORMATS[name]
    train = [r for r in load_sample("train") if fmt.row_tasks(r)][:160]
    model = _train_tiny(fmt, train, tmp_path, steps=100)
    test = load_sample("test")
    rows = [r for label in (H, U) for r in [r for r in test if r["response"] is None and r["prompt_harm"] == label][:3]]
    rows += [r for label in (H, U) for r in [r for r in test if r["response_harm"] == label][:3]]
    uri = str(tmp_path / "bench")
    storage.write_table(uri, tables.from_records(rows, "interactions"), "interactions")
    res = evaluate.run(evaluate.EvaluateConfig(
        models=[f"tiny[template=format]={name}:{model}"], benchmarks=[f"T={uri}"], output=str(tmp_path / "out"),
        samples_per_row=1, temperature=0.0, max_tokens=48, modes=["NR"], concurrency=12))
    metrics = storage.read_table(res.metrics, "metrics").to_pylist()
    assert metrics and {m["format"] for m in metrics} == {name}
    for m in metrics:
        print(f"{name} {m['task']}: F1 {m['f1_mean']:.3f} parse errors {m['parse_error_rate']:.3f} "
              f"AUROC {m['auroc']} scored {m['scored']}")
        assert m["parse_error_rate"] < 0.5, (name, m["task"], m["parse_error_rate"])
        assert 0.0 <= m["f1_mean"] <= 1.0
    if any(fmt.verdict(r) is not None for r in rows):
        assert any(m["scored"] for m in metrics) and res.sweep is not None
    md = Path(res.report_md).read_text()
    label = "tiny" if name == "guardsmith" else f"tiny [{name}]"
    assert f"| {label} |" in md.split("## Harmful F1 (Table 1)")[1].split("##")[0]
    assert fmt.parse_rule.replace("|", "\\|") in md.split("## Guard formats")[1]  # Markdown escapes '|'
