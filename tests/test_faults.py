"""The fault suite (issue 10): what Kubernetes and KFP do to a task, done to each stage through the CLI.

- SIGKILL at seeded random points, then a re-run: the output equals an uninterrupted run's
  (rows lost 0, duplicated 0, nothing recomputed that was committed and nothing stale reused).
- Two writers started together on one output: one result, complete; no traceback.
- A re-run with changed input into a finished output: refused in one line naming the input.
- distill against a real local endpoint that injects 429 with a huge Retry-After, 500s, a
  dripping reply, a dropped connection, malformed bodies and one poisoned row: every input row ends
  in exactly one of the output and the failed table, in bounded time.

Run alone with ``pytest -m faults``. docs/reliability.md tabulates the faults and the guarantees.
"""
from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from guardsmith import storage, tables
from guardsmith.standins.chat_server import FaultPlan, serve
from guardsmith.standins.offline import OfflineTeacher, offline_spec, serve_offline
from guardsmith.standins.sample import load_sample

pytestmark = pytest.mark.faults

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "guardsmith", *args]


def _run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=ENV)


def _kill_at(args: list[str], delay_s: float) -> int | None:
    """Start ``args``, SIGKILL it after ``delay_s`` (if still running); returns its exit status."""
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        proc.wait(timeout=delay_s)
        return proc.returncode  # finished before the kill
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        return None


def _ids(uri: str, schema: str | None = None) -> collections.Counter:
    return collections.Counter(storage.read_table(uri, schema).column("id").to_pylist())


def _rows(uri: str, columns: tuple[str, ...]) -> list[tuple]:
    table = storage.read_table(uri)
    return sorted(zip(*(table.column(c).to_pylist() for c in columns)))


@pytest.fixture(scope="module")
def interactions(tmp_path_factory) -> tuple[str, list[dict]]:
    rows = load_sample("train")[:24]
    uri = str(tmp_path_factory.mktemp("faults") / "interactions")
    storage.write_table(uri, tables.from_records(rows, "interactions"), "interactions")
    return uri, rows


@pytest.fixture(scope="module")
def teacher():
    with serve_offline(defects={"leakage": 0.2}, delay_s=0.05) as server:
        yield offline_spec(server)


def _distill_args(src: str, out: str, spec: str) -> list[str]:
    return _cli("distill", "--input", src, "--output", out, "--teacher", spec, "--shard-size", "4",
                "--concurrency", "2", "--max-retries", "2")


@pytest.mark.slow
def test_distill_killed_at_random_points_equals_a_clean_run(tmp_path, interactions, teacher):
    src, rows = interactions
    clean = str(tmp_path / "clean")
    start = time.monotonic()
    assert _run(_distill_args(src, clean, teacher)).returncode == 0
    span = time.monotonic() - start
    rng = random.Random(10)
    for attempt in range(3):
        out = str(tmp_path / f"killed-{attempt}")
        for _ in range(2):  # killed twice at random points, then run to the end
            _kill_at(_distill_args(src, out, teacher), rng.uniform(0.2, span))
        done = _run(_distill_args(src, out, teacher))
        assert done.returncode == 0, done.stderr[-2000:]
        assert _ids(out, "traces") == collections.Counter(r["id"] for r in rows)  # lost 0, duplicated 0
        assert _rows(out, ("id", "reasoning", "pred_prompt_harm")) == _rows(clean, ("id", "reasoning", "pred_prompt_harm"))
        assert storage.recorded_identity(out)["digest"] == storage.recorded_identity(clean)["digest"]


@pytest.mark.slow
def test_filter_killed_at_random_points_equals_a_clean_run(tmp_path, interactions, teacher):
    src, _ = interactions
    traces = str(tmp_path / "traces")
    assert _run(_distill_args(src, traces, teacher)).returncode == 0

    def args(out: str) -> list[str]:
        return _cli("filter", "--input", traces, "--output", out, "--judge", teacher, "--teacher", teacher,
                    "--rounds", "2", "--concurrency", "2", "--min-yield", "0.1")

    clean = str(tmp_path / "clean")
    start = time.monotonic()
    first = _run(args(clean))
    assert first.returncode == 0, first.stderr[-2000:]
    span = time.monotonic() - start
    rng = random.Random(11)
    for attempt in range(2):
        out = str(tmp_path / f"killed-{attempt}")
        _kill_at(args(out), rng.uniform(0.3, span))
        done = _run(args(out))
        assert done.returncode == 0, done.stderr[-2000:]
        for table in ("accepted", "rejected"):  # rejected holds every rejected version, one per round
            assert _ids(storage.join(out, table)) == _ids(storage.join(clean, table)), table
        accepted = _ids(storage.join(out, "accepted"))
        assert max(accepted.values()) == 1  # at most one accepted trace per id
        assert set(accepted) | set(_ids(storage.join(out, "rejected"))) == set(_ids(traces, "traces"))  # lost 0


@pytest.mark.slow
def test_sft_killed_mid_training_resumes_to_the_same_step(tmp_path, interactions):
    from guardsmith.standins.tiny import build_tiny_causal_lm

    src, _ = interactions
    base = str(build_tiny_causal_lm(tmp_path / "base"))
    out, ckpt = str(tmp_path / "guard"), str(tmp_path / "ckpt")
    args = _cli("sft", "--preset", "tiny-cpu", "--base-model", base, "--train", src, "--output", out, "--mode", "NR",
                "--max-steps", "6", "--save-steps", "2", "--batch-size", "4", "--per-device-batch-size", "4",
                "--checkpoint-uri", ckpt, "--work-dir", str(tmp_path / "work"))
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        deadline = time.monotonic() + 240
        while not storage.is_committed(storage.join(ckpt, "checkpoint-2")):
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint before the kill"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert not storage.is_committed(out)
    done = _run(args)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = storage.read_json(storage.join(out, "guardsmith_training.json"))
    assert summary["global_step"] == 6 and summary["resumed_from_step"] >= 2
    again = _run(args)  # finished: a no-op that says so, nothing republished
    assert again.returncode == 0 and "already there" in again.stdout + again.stderr
    assert storage.read_json(storage.join(out, "guardsmith_training.json")) == summary


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_two_writers_on_one_output_leave_one_complete_result(tmp_path, interactions, teacher, where, request):
    src, rows = interactions
    env = dict(ENV)
    if where == "s3":
        server = request.getfixturevalue("s3_env")
        env.update(server.env())
        out = storage.join(request.getfixturevalue("s3_prefix"), "shared")
    else:
        out = str(tmp_path / "shared")
    procs = [subprocess.Popen(_distill_args(src, out, teacher), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    for code, _, err in results:
        assert code in (0, 1) and "Traceback" not in err, err[-2000:]
        if code == 1:  # the loser of the race says so in one line
            errors = [line for line in err.splitlines() if line.startswith("guardsmith: error:")]
            assert len(errors) == 1 and "another writer" in errors[0], err
    assert any(code == 0 for code, _, _ in results)
    assert _ids(out, "traces") == collections.Counter(r["id"] for r in rows)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> str:
    from guardsmith.standins.tiny import build_tiny_causal_lm

    return str(build_tiny_causal_lm(tmp_path_factory.mktemp("faults-base") / "tiny"))


def _stage_args(stage: str, src: str, out: str, teacher: str, request) -> list[str]:
    """The CLI of ``stage`` reading ``src`` (distill: interactions; filter: traces; sft and continual:
    interactions in NR mode, one step of a tiny model) into ``out``."""
    if stage == "distill":
        return _distill_args(src, out, teacher)
    if stage == "filter":
        return _cli("filter", "--input", src, "--output", out, "--judge", teacher, "--rounds", "0",
                    "--concurrency", "2", "--min-yield", "0")
    train = ["--preset", "tiny-cpu", "--base-model", request.getfixturevalue("tiny_base"), "--train", src,
             "--output", out, "--mode", "NR", "--max-steps", "1", "--batch-size", "4", "--per-device-batch-size", "4",
             "--report-to", "none"]
    return _cli(stage, *train, *(["--method", "sft"] if stage == "continual" else []))


CHANGED_INPUT = {"distill": "input table (--input)", "filter": "input table (--input)", "sft": "input train",
                 "continual": "input train"}


def _contents(stage: str, out: str) -> collections.Counter | bytes:
    """What a finished output holds: ids of a table, or the model's manifest."""
    if stage in ("distill", "filter"):
        return _ids(storage.join(out, "accepted") if stage == "filter" else out)
    return Path(out, "_SUCCESS").read_bytes()


@pytest.mark.parametrize("stage", ["distill", "filter", "sft", "continual"])
def test_changed_input_into_a_finished_output_is_refused(tmp_path, interactions, teacher, stage, request):
    src, rows = interactions
    other = str(tmp_path / "other")
    storage.write_table(other, tables.from_records(rows[:10], "interactions"), "interactions")
    if stage == "filter":  # the filter reads traces: distill both inputs first
        for name in ("src-traces", "other-traces"):
            assert _run(_distill_args(src if name == "src-traces" else other, str(tmp_path / name), teacher)
                        ).returncode == 0
        src, other = str(tmp_path / "src-traces"), str(tmp_path / "other-traces")
    out = str(tmp_path / "out")
    first = _run(_stage_args(stage, src, out, teacher, request))
    assert first.returncode == 0, first.stderr[-2000:]
    before = _contents(stage, out)
    same = _run(_stage_args(stage, src, out, teacher, request))  # the same work: skipped, nothing rewritten
    assert same.returncode == 0 and _contents(stage, out) == before, same.stderr[-2000:]
    refused = _run(_stage_args(stage, other, out, teacher, request))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("guardsmith: error:")]
    assert len(errors) == 1 and CHANGED_INPUT[stage] in errors[0] and "--overwrite" in errors[0], refused.stderr
    assert _contents(stage, out) == before  # the finished output is untouched
    replaced = _run([*_stage_args(stage, other, out, teacher, request), "--overwrite"])
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    if stage == "distill":
        assert _ids(out, "traces") == collections.Counter(r["id"] for r in rows[:10])
    elif stage == "filter":
        report = storage.read_json(storage.join(out, "report.json"))
        assert report["rows"] == 10 and report["input"] == other
    else:
        summary = storage.read_json(storage.join(out, "guardsmith_training.json"))
        assert summary["datasets"]["train"] == other and _contents(stage, out) != before


def test_distill_through_a_faulty_endpoint_loses_and_duplicates_nothing(tmp_path, interactions):
    from guardsmith.stages import distill

    src_rows = [dict(r) for r in interactions[1]]
    src_rows[5]["prompt"] = "POISON " + src_rows[5]["prompt"]
    src = str(tmp_path / "input")
    storage.write_table(src, tables.from_records(src_rows, "interactions"), "interactions")
    plan = (FaultPlan().fail(429, retry_after=100000).fail(500, times=2).drip(0.4).drop(partial=True)
            .malformed("list").malformed("usage").poison("POISON"))
    out = str(tmp_path / "traces")
    with serve(OfflineTeacher({}, 0), faults=plan, model="offline-teacher") as server:
        start = time.monotonic()
        result = distill.run(distill.DistillConfig(
            input=src, output=out, teacher=f"openai:{server.url}?model=offline-teacher", shard_size=6, concurrency=2,
            max_retries=4, timeout_s=1.5, retry_after_max_s=0.2, max_failed_fraction=0.25))
        elapsed = time.monotonic() - start
    assert elapsed < 60, f"{elapsed:.1f} s: a Retry-After or a drip was not bounded"
    traced, failed = _ids(out, "traces"), _ids(out + ".failed", "failed")
    assert max(traced.values(), default=1) == 1 and max(failed.values(), default=1) == 1  # duplicated 0
    assert set(traced) | set(failed) == {r["id"] for r in src_rows} and not set(traced) & set(failed)  # lost 0
    assert src_rows[5]["id"] in failed
    assert 1 <= len(failed) <= 3  # the poisoned row and the rows that got a malformed body
    assert plan.pending == 0  # every injected fault was met
    assert str(len(failed)) in str(result)


def test_filter_through_a_faulty_endpoint_loses_and_duplicates_nothing(tmp_path, interactions):
    from guardsmith.stages import distill, filter as filter_stage

    src_rows = [dict(r) for r in interactions[1]]
    src_rows[5]["prompt"] = "POISON " + src_rows[5]["prompt"]
    src, traces = str(tmp_path / "input"), str(tmp_path / "traces")
    storage.write_table(src, tables.from_records(src_rows, "interactions"), "interactions")
    with serve_offline(defects={}) as clean:
        distill.run(distill.DistillConfig(input=src, output=traces, teacher=offline_spec(clean), concurrency=2))
    plan = FaultPlan().drip(0.4).fail(429, retry_after=100000).malformed("list").poison("POISON")
    out = str(tmp_path / "filtered")
    with serve(OfflineTeacher({}, 0), faults=plan, model="offline-teacher") as server:
        start = time.monotonic()
        result = filter_stage.run(filter_stage.FilterConfig(
            input=traces, output=out, judge=f"openai:{server.url}?model=offline-teacher", rules=["unparsed"],
            rounds=0, concurrency=2, shard_size=8, max_retries=4, timeout_s=1.5, retry_after_max_s=0.2,
            max_failed_fraction=0.25, min_yield=0.0))
        elapsed = time.monotonic() - start
    assert elapsed < 60, f"{elapsed:.1f} s: a Retry-After or a drip was not bounded"
    accepted, rejected = _ids(result.accepted), _ids(result.rejected)
    failed = _ids(result.failed, "failed")
    assert max([*accepted.values(), *rejected.values(), *failed.values()]) == 1  # duplicated 0
    assert set(accepted) | set(rejected) == {r["id"] for r in src_rows} and not set(accepted) & set(rejected)  # lost 0
    assert src_rows[5]["id"] in failed and set(failed) <= set(rejected)  # a failed row is judged rejected, listed
    assert 1 <= len(failed) <= 2  # the poisoned row and the row that got a malformed body
    assert plan.pending == 0 and result.failed_rows == len(failed)


def test_cheap_stages_record_their_identity_and_recompute_the_same_output(tmp_path, interactions):
    from guardsmith.stages import data_import, subset

    src, _ = interactions
    out = str(tmp_path / "subset")
    first = subset.run(subset.SubsetConfig(input=src, output=out, n=5, seed=3))
    recorded = storage.recorded_identity(out)
    assert recorded["stage"] == "subset" and recorded["config"]["n"] == 5
    again = subset.run(subset.SubsetConfig(input=src, output=out, n=5, seed=3))  # recomputed, replaced atomically
    assert storage.recorded_identity(out)["digest"] == recorded["digest"] and again.rows_out == first.rows_out == 5
    assert _ids(out) == _ids(out, "interactions")
    sample = str(tmp_path / "sample")
    data_import.run(data_import.DataImportConfig(source="sample", split="test", output=sample))
    assert storage.recorded_identity(sample)["config"]["split"] == "test"


def test_boundary_eval_of_a_retrained_generator_is_refused_then_overwritten(tmp_path, interactions, teacher, tiny_base):
    import shutil

    from guardsmith.standins.tiny import build_tiny_causal_lm

    src, _ = interactions
    gen = tmp_path / "generator"
    shutil.copytree(tiny_base, gen)
    out = tmp_path / "eval"
    args = _cli("boundary-eval", "--base", f"base={gen}", "--scorer", "rule:keywords", "--judge", teacher,
                "--prompt-sets", f"sample={src}", "--output", str(out), "--limit", "3", "--max-tokens", "8")
    first = _run(args)
    assert first.returncode == 0, first.stderr[-2000:]
    before = {n: (out / n / "_SUCCESS").read_bytes() for n in ("judged_outputs", "metrics")}
    same = _run(args)  # the same work: skipped, nothing generated, judged or rewritten
    assert same.returncode == 0 and "finished earlier by the same work" in same.stdout, same.stderr[-2000:]
    assert {n: (out / n / "_SUCCESS").read_bytes() for n in before} == before
    shutil.rmtree(gen)
    build_tiny_causal_lm(gen, seed=1)  # retrained at the same path
    refused = _run(args)
    errors = [line for line in refused.stderr.splitlines() if line.startswith("guardsmith: error:")]
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert len(errors) == 1 and "input generator base" in errors[0] and "--overwrite" in errors[0], refused.stderr
    assert {n: (out / n / "_SUCCESS").read_bytes() for n in before} == before  # the finished output is untouched
    redone = _run([*args, "--overwrite"])
    assert redone.returncode == 0 and "finished earlier" not in redone.stdout, redone.stderr[-2000:]
    assert (out / "metrics" / "_SUCCESS").read_bytes() != before["metrics"]
    again = _run(args)  # the new evaluation is now the same work
    assert again.returncode == 0 and "finished earlier by the same work" in again.stdout, again.stderr[-2000:]
