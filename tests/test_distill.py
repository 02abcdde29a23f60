"""The distill stage over real HTTP with the offline teacher: traces, budgets, resume, bad input."""
from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from guardsmith import storage, tables
from guardsmith.config import load_config
from guardsmith.errors import DataError, GuardsmithError
from guardsmith.guard import sentence_count
from guardsmith.standins.offline import offline_spec, serve_offline
from guardsmith.standins.sample import load_sample
from guardsmith.stages import distill
from guardsmith.inference import open_backend
from guardsmith.settings import BackendChoice, Endpoint
from guardsmith.stages.distill import DistillConfig, budget_curve, run
from guardsmith.teacher import shard_root, shard_uri, teacher_label

pytestmark = pytest.mark.timeout(60)
VICTIM = Path(__file__).parent / "helpers" / "distill_victim.py"


def sample_rows(n: int = 40) -> list[dict]:
    """Rows from every part of the bundled sample (safety taxonomies, custom policies, topics)."""
    rows = load_sample()
    by_tax = collections.defaultdict(list)
    for r in rows:
        by_tax[r["taxonomy"].split(":")[0]].append(r)
    picked = by_tax["aegis2"][: n // 2 - 4] + by_tax["wildguard"][: n // 2 - 4] + by_tax["custom"][:4] + by_tax["topic"][:4]
    return picked


@pytest.fixture(scope="module")
def server():
    with serve_offline(defects={}) as srv:
        yield srv


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[str, list[dict]]:
    rows = sample_rows()
    uri = str(tmp_path_factory.mktemp("src") / "interactions")
    storage.write_table(uri, tables.from_records(rows, "interactions"), "interactions")
    return uri, rows


def cfg(src: str, out: str, srv, **kw) -> DistillConfig:
    return DistillConfig(input=src, output=out, teacher=kw.pop("teacher", offline_spec(srv)), concurrency=4, max_retries=1,
                         shard_size=kw.pop("shard_size", 16), **kw)


@pytest.fixture(scope="module")
def traces(tmp_path_factory, server, source) -> str:
    out = str(tmp_path_factory.mktemp("tr") / "traces")
    run(cfg(source[0], out, server))
    return out


def test_distill_writes_every_id_once_with_usage(traces, source, server):
    table = storage.read_table(traces, "traces")
    rows = {r["id"]: r for r in source[1]}
    assert sorted(table.column("id").to_pylist()) == sorted(rows)
    for t in table.to_pylist():
        row = rows[t["id"]]
        assert t["parse_ok"] and t["teacher"] == "offline-teacher" and t["round"] == 0 and t["budget"] is None
        assert (t["pred_prompt_harm"], t["pred_response_harm"], t["pred_response_refusal"]) == (
            row["prompt_harm"], row["response_harm"], row["response_refusal"])
        assert t["prompt_tokens"] > 0 and t["completion_tokens"] > 0 and t["latency_s"] > 0
        assert t["raw_output"].rstrip().endswith(t["answer"]) and t["reasoning"] in t["raw_output"].replace("<think>\n", "")
        assert t["n_sentences"] == sentence_count(t["reasoning"]) >= 2 and t["n_words"] > 5
    assert not storage.exists(shard_root(traces))


def test_rerun_of_a_committed_output_does_nothing(traces, source, server):
    before = server.stats.requests
    result = run(cfg(source[0], traces, server))
    assert result.skipped and result.rows == len(source[1]) and server.stats.requests == before
    assert "already committed" in str(result)


def test_budget_rewrites_and_curve(tmp_path, traces, server, capsys):
    means = []
    for budget in (1, 3, 8):
        out = str(tmp_path / f"b{budget}")
        result = run(cfg(traces, out, server, budget=budget))
        table = storage.read_table(out, "traces").to_pylist()
        assert result.mode == "budget" and len(table) == result.rows
        assert all(t["budget"] == budget and 1 <= t["n_sentences"] <= budget for t in table)
        assert all(sentence_count(t["reasoning"]) == t["n_sentences"] for t in table)
        means.append(result.mean_words)
        # the offline teacher replies with the rewrite alone: its usage is the reasoning's own count
        assert result.tokens["sources"] == {"usage": result.rows}
        assert result.tokens["median"] <= result.tokens["p90"] and f"at budget {budget}: mean" in str(result)
    assert means[0] < means[1] < means[2]
    curve = budget_curve([traces] + [str(tmp_path / f"b{b}") for b in (1, 3, 8)])
    assert [c["budget"] for c in curve] == [1, 3, 8, None]
    words = [c["mean_words"] for c in curve]
    assert words[0] < words[1] < words[2] <= words[3]
    assert words[0] < 25  # one-sentence traces are short (the paper: ~15 tokens)
    tokens = [c["mean_tokens"] for c in curve]
    assert tokens[0] < tokens[1] < tokens[2] <= tokens[3] and 5 < tokens[0] < 30
    # original traces end with answer lines, so their usage is not the reasoning's count: approximated
    assert curve[-1]["token_sources"] == {"approx": curve[-1]["traces"]}
    out = capsys.readouterr().out
    assert "mean_words" in out and "p90_tokens" in out


def test_ids_filter_and_unknown_ids(tmp_path, source, server):
    ids = [r["id"] for r in source[1][3:8]]
    out = str(tmp_path / "some")
    run(cfg(source[0], out, server, ids=ids, round=2, seed=5))
    table = storage.read_table(out, "traces")
    assert sorted(table.column("id").to_pylist()) == sorted(ids)
    assert set(table.column("round").to_pylist()) == {2}
    with pytest.raises(GuardsmithError, match="not in"):
        run(cfg(source[0], str(tmp_path / "none"), server, ids=["nope"]))
    assert not storage.exists(str(tmp_path / "none"))


def nothing_written(out: str) -> bool:
    return not storage.exists(out) and not storage.exists(shard_root(out))


def test_bad_input_fails_before_writing(tmp_path, source, server):
    rows = source[1]
    good = tables.from_records(rows, "interactions")
    missing = str(tmp_path / "missing")
    storage.write_table(missing, good.drop_columns(["prompt_harm"]))
    out = str(tmp_path / "out")
    with pytest.raises(DataError, match="prompt_harm"):
        run(cfg(missing, out, server))
    assert nothing_written(out)
    bad_word = str(tmp_path / "word")
    late = [dict(r) for r in rows]
    late[-1]["prompt_harm"] = "unsafe"  # in the last shard: still caught before any shard
    storage.write_table(bad_word, pa.Table.from_pylist(late, schema=tables.schema("interactions")))
    with pytest.raises(DataError) as err:
        run(cfg(bad_word, out, server))
    assert "unsafe" in str(err.value) and "prompt_harm" in str(err.value) and f"row {len(rows) - 1}" in str(err.value)
    assert nothing_written(out)
    dup = str(tmp_path / "dup")
    storage.write_table(dup, tables.from_records(rows + rows[:1], "interactions"), "interactions")
    with pytest.raises(DataError, match="duplicate id"):
        run(cfg(dup, out, server))
    assert nothing_written(out)
    with pytest.raises(GuardsmithError, match="budget"):
        run(cfg(source[0], out, server, budget=11))


def test_unreachable_teacher(tmp_path, source):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "out")
    config = DistillConfig(input=source[0], output=out, teacher=f"openai:http://127.0.0.1:{port}/v1?model=m",
                           max_retries=0, concurrency=2)
    with pytest.raises(GuardsmithError, match="failed after 1 attempts"):
        run(config)
    assert nothing_written(out)


def test_shards_resume_only_with_the_same_settings(tmp_path, source, server):
    out = str(tmp_path / "t")
    first = run(cfg(source[0], out, server, keep_shards=True))
    assert first.shards == 3 and storage.is_committed(shard_uri(out, 2))
    storage.remove(out)  # as if the run had stopped before its final commit
    with pytest.raises(GuardsmithError, match="other settings.*temperature"):
        run(cfg(source[0], out, server, temperature=0.1))
    before = server.stats.requests
    again = run(cfg(source[0], out, server))
    assert again.shards_reused == 3 and again.requests == 0 and server.stats.requests == before
    assert storage.read_table(out).equals(storage.read_table(out))  # committed and readable
    assert not storage.exists(shard_root(out))
    # issue 10: --overwrite replaces the output of other work only; the same work is kept
    same = run(cfg(source[0], out, server, overwrite=True))
    assert same.skipped and server.stats.requests == before
    redo = run(cfg(source[0], out, server, overwrite=True, seed=3))
    assert redo.shards_reused == 0 and redo.requests == len(source[1])
    assert storage.recorded_identity(out)["config"]["seed"] == 3


def test_resume_after_sigkill(tmp_path, source):
    src, rows = source
    out = str(tmp_path / "killed")
    with serve_offline(defects={}, delay_s=0.15) as srv:
        proc = subprocess.Popen([sys.executable, str(VICTIM), src, out, offline_spec(srv), "4"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 40
            while not storage.is_committed(shard_uri(out, 1)):
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "no shard committed in time"
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            proc.stderr.close()
        assert not storage.is_committed(out)
        n_shards = -(-len(rows) // 4)
        committed = [i for i in range(n_shards) if storage.is_committed(shard_uri(out, i))]
        assert 2 <= len(committed) < n_shards
        time.sleep(0.3)  # let the server finish with the killed client's last request
        manifests = {i: storage.read_bytes(storage.join(shard_uri(out, i), "_SUCCESS")) for i in committed}
        mtimes = {i: os.stat(os.path.join(shard_uri(out, i), "_SUCCESS")).st_mtime_ns for i in committed}
        before = srv.stats.requests
        result = run(DistillConfig(input=src, output=out, teacher=offline_spec(srv), shard_size=4,
                                   concurrency=4, max_retries=1, keep_shards=True))
        assert result.shards_reused == len(committed)
        assert srv.stats.requests - before == result.requests == len(rows) - 4 * len(committed)
    ids = storage.read_table(out, "traces").column("id").to_pylist()
    assert collections.Counter(ids) == collections.Counter(r["id"] for r in rows)
    for i in committed:  # committed shards were not recomputed
        assert storage.read_bytes(storage.join(shard_uri(out, i), "_SUCCESS")) == manifests[i]
        assert os.stat(os.path.join(shard_uri(out, i), "_SUCCESS")).st_mtime_ns == mtimes[i]


def test_teacher_spec_helpers(tmp_path):
    assert teacher_label("openai:http://h:1/v1?model=deepseek-r1") == "deepseek-r1"
    assert teacher_label("vllm:/models/qwen-32b/") == "qwen-32b"
    with pytest.raises(GuardsmithError, match="model name"):
        teacher_label("openai:http://h:1/v1")
    backend = open_backend("openai:http://h:1/v1?model=m&max_concurrency=9", choice=BackendChoice(concurrency=3),
                           endpoint=Endpoint(api_key_env="MY_KEY", retry_after_max_s=7.0))
    assert backend.max_concurrency == 9 and backend.api_key_env == "MY_KEY"  # the spec wins over settings
    assert backend.retry_after_max_s == 7.0


def test_presets_load():
    for name in ("r1", "offline"):
        config = load_config(DistillConfig, None, {"input": "i", "output": "o", "teacher": "t"},
                             stage="distill", preset=name)
        assert isinstance(config, distill.CONFIG)


@pytest.mark.s3
def test_distill_and_resume_on_s3(s3_prefix, source, server):
    src, rows = source
    out = f"{s3_prefix}/traces"
    first = run(cfg(src, out, server, keep_shards=True))
    assert first.shards == 3 and storage.is_committed(shard_uri(out, 0))
    storage.remove(out)
    storage.remove(shard_uri(out, 2))  # as if the last shard had not been committed
    again = run(cfg(src, out, server))
    assert again.shards_reused == 2 and again.requests == len(rows) - 32
    ids = storage.read_table(out, "traces").column("id").to_pylist()
    assert sorted(ids) == sorted(r["id"] for r in rows)
    # SeaweedFS may keep an empty folder entry, so check the contents are gone
    assert not storage.exists(storage.join(shard_root(out), "_config.json"))
    assert not any(storage.is_committed(shard_uri(out, i)) for i in range(3))


def test_every_config_field_is_documented():
    import dataclasses

    doc = (Path(__file__).parent.parent / "docs" / "stages" / "distill.md").read_text()
    assert all(f"`{f.name}`" in doc for f in dataclasses.fields(DistillConfig))


# --------------------------------------------------------------------------- issue 10: re-runs, failed rows, bounds, SIGTERM

def write_interactions(path, rows) -> str:
    uri = str(path)
    storage.write_table(uri, tables.from_records(rows, "interactions"), "interactions")
    return uri


def test_rerun_with_other_work_is_refused_and_overwrite_recomputes(tmp_path, traces, source, server):
    src, rows = source
    before = server.stats.requests
    other_src = write_interactions(tmp_path / "other", rows[:10])
    cases = [
        (dict(src=other_src), r"input table \(--input\)"),
        (dict(seed=9), "config.seed"),
        (dict(teacher=f"openai:{server.url}?model=another-teacher"), "config.teacher_model"),
    ]
    for change, named in cases:
        config = cfg(change.pop("src", src), traces, server, **change)
        with pytest.raises(GuardsmithError, match=f"other work: .*{named}") as err:
            run(config)
        assert "--overwrite" in str(err.value) and "\n" not in str(err.value)
    assert server.stats.requests == before
    assert sorted(storage.read_table(traces).column("id").to_pylist()) == sorted(r["id"] for r in rows)
    # the same work into another folder, then --overwrite with the new input: rows come from it
    out = str(tmp_path / "copy")
    run(cfg(src, out, server))
    redo = run(cfg(other_src, out, server, overwrite=True))
    assert not redo.skipped and redo.rows == 10 and redo.requests == 10
    assert sorted(storage.read_table(out, "traces").column("id").to_pylist()) == sorted(r["id"] for r in rows[:10])
    assert run(cfg(other_src, out, server)).skipped


def poisoned_rows(rows, which):
    out = [dict(r) for r in rows]
    for i in which:
        out[i]["prompt"] = f"POISON-{i} " + out[i]["prompt"]
    return out


def test_a_rejected_row_is_counted_not_fatal(tmp_path, source):
    rows = poisoned_rows(source[1], [5])
    src = write_interactions(tmp_path / "in", rows)
    out = str(tmp_path / "out")
    handler = signal.getsignal(signal.SIGTERM)
    with serve_offline(defects={}) as srv:
        srv.faults.poison("POISON-5", 400, "prompt is longer than the model's context")
        result = run(cfg(src, out, srv, shard_size=16))
    assert signal.getsignal(signal.SIGTERM) is handler  # the stage's SIGTERM handler is gone again
    assert result.failed_rows == 1 and srv.faults.poisoned >= 1
    failed = storage.read_table(result.failed, "failed").to_pylist()
    assert [(f["id"], f["stage"], f["round"], f["cause"]) for f in failed] == [(rows[5]["id"], "distill", 0, "request_failed")]
    assert "400" in failed[0]["detail"] and "context" in failed[0]["detail"]
    ids = storage.read_table(out, "traces").column("id").to_pylist()
    assert sorted(ids) == sorted(r["id"] for i, r in enumerate(rows) if i != 5)  # the rest of shard 0 too
    assert "failed rows 1" in str(result) and result.failed == out + ".failed"


def test_too_many_failed_rows_fail_the_stage_and_resume(tmp_path, source):
    rows = poisoned_rows(source[1], [2, 20, 30])
    src = write_interactions(tmp_path / "in", rows)
    out = str(tmp_path / "out")
    with serve_offline(defects={}) as srv:
        for i in (2, 20, 30):
            srv.faults.poison(f"POISON-{i}")
        with pytest.raises(GuardsmithError) as err:
            run(cfg(src, out, srv, shard_size=16))
        msg = str(err.value)
        assert "3 of 40 rows failed" in msg and "max_failed_fraction" in msg and "\n" not in msg
        assert all(rows[i]["id"] in msg for i in (2, 20, 30))
        assert not storage.is_committed(out) and storage.is_committed(shard_uri(out, 2))
        assert storage.read_table(out + ".failed", "failed").num_rows == 3
        before = srv.stats.requests
        ok = run(cfg(src, out, srv, shard_size=16, max_failed_fraction=0.1))  # how to run, not what: resumes
        assert ok.shards_reused == 3 and srv.stats.requests == before and ok.failed_rows == 3
        # a finished output is held to the gate of the re-run: the stricter one fails as a fresh run would
        with pytest.raises(GuardsmithError) as err:
            run(cfg(src, out, srv, shard_size=16))
        assert str(err.value) == msg and srv.stats.requests == before
        assert run(cfg(src, out, srv, shard_size=16, max_failed_fraction=0.1)).skipped
    assert storage.read_table(out).num_rows == 37


def test_a_run_where_no_reply_parses_fails(tmp_path, source):
    out = str(tmp_path / "out")
    with serve_offline(defects={"unparseable": 1.0}) as srv:
        with pytest.raises(GuardsmithError, match="no teacher reply of the 40 rows parsed"):
            run(cfg(source[0], out, srv))
    assert not storage.is_committed(out)


def test_over_long_input_errors_or_is_truncated(tmp_path, source, server):
    rows = [dict(r) for r in source[1]]
    rows[7]["prompt"] = "x" * 300
    rows[9]["response"] = "y" * 301
    src = write_interactions(tmp_path / "long", rows)
    out = str(tmp_path / "out")
    with pytest.raises(DataError) as err:
        run(cfg(src, out, server, max_input_chars=200))
    msg = str(err.value)
    assert src in msg and "'prompt'" in msg and "row 7" in msg and "xxxxxxxx" in msg and "max_input_chars" in msg
    assert nothing_written(out)
    result = run(cfg(src, out, server, max_input_chars=200, input_policy="truncate"))
    assert result.truncated == 2 and "cut to max_input_chars 2" in str(result)
    got = {r["id"]: r for r in storage.read_table(out, "traces").to_pylist()}
    assert got[rows[7]["id"]]["prompt"] == "x" * 200 and got[rows[9]["id"]]["response"] == "y" * 200


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "guardsmith", "distill", *args]


def test_sigterm_stops_cleanly_and_a_rerun_resumes(tmp_path, source):
    src, rows = source
    out = str(tmp_path / "t")
    with serve_offline(defects={}, delay_s=0.15) as srv:
        args = ["--input", src, "--output", out, "--teacher", offline_spec(srv), "--shard-size", "4",
                "--concurrency", "1", "--max-retries", "0", "--keep-shards"]
        proc = subprocess.Popen(cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 40
            while not storage.is_committed(shard_uri(out, 1)):
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "no shard committed in time"
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        err = err.decode()
        assert proc.returncode != 0 and "stopped by SIGTERM" in err and "resume" in err
        assert "Traceback" not in err
        assert not storage.is_committed(out)
        names = os.listdir(shard_root(out))
        committed = [n for n in names if storage.is_committed(os.path.join(shard_root(out), n))]
        assert set(names) == set(committed), names  # nothing half-written, no staging left
        assert not [n for n in os.listdir(tmp_path) if n not in ("t.shards",)]
        done = subprocess.run(cli(*args), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
    ids = storage.read_table(out, "traces").column("id").to_pylist()
    assert collections.Counter(ids) == collections.Counter(r["id"] for r in rows)


def test_credentials_in_the_teacher_url_are_never_printed(tmp_path, source, caplog):
    rows = poisoned_rows(source[1], [1, 2, 3])
    src = write_interactions(tmp_path / "in", rows)
    out = str(tmp_path / "out")
    with serve_offline(defects={}) as srv:
        for i in (1, 2, 3):
            srv.faults.poison(f"POISON-{i}")
        spec = f"openai:http://alice:s3cretpw@127.0.0.1:{srv.port}/v1?model=offline-teacher"
        assert teacher_label(spec) == "offline-teacher"
        with pytest.raises(GuardsmithError, match="needs a model name") as err:
            teacher_label("openai:http://alice:s3cretpw@h:1/v1")
        assert "s3cretpw" not in str(err.value)
        done = subprocess.run(cli("--input", src, "--output", out, "--teacher", spec, "--shard-size", "16",
                                  "--max-retries", "0"), capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and "3 of 40 rows failed" in done.stderr
        assert "s3cretpw" not in done.stdout + done.stderr
        assert "s3cretpw" not in str(storage.read_table(out + ".failed").to_pylist())
        assert "s3cretpw" not in str(storage.recorded_identity(out + ".failed"))
    with socket.socket() as s:  # an unreachable teacher: warnings and the error
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = f"openai:http://alice:s3cretpw@127.0.0.1:{port}/v1?model=m"
    done = subprocess.run(cli("--input", src, "--output", str(tmp_path / "dead"), "--teacher", dead,
                              "--max-retries", "1"), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "failed after" in done.stderr
    assert "s3cretpw" not in done.stdout + done.stderr and "alice" not in done.stderr


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_teacher_reasoning_in_a_separate_field_is_kept(tmp_path, source, field):
    """A reasoning teacher behind a reasoning parser (vLLM, hosted APIs) returns its chain of thought
    in `message.reasoning_content` / `message.reasoning` and only the answer in `content`: the traces
    hold the same reasoning as from a server that sends it inline in a <think> block."""
    import json as _json
    import urllib.request

    from guardsmith.standins.chat_server import serve
    from guardsmith.standins.offline import OfflineTeacher

    src, rows = source
    traces = {}
    for name, where in (("inline", None), ("split", field)):
        with serve(OfflineTeacher({}, 0), model="offline-teacher", reasoning_field=where) as server:
            if where:  # the server really splits it off: content alone holds no reasoning
                from guardsmith.guard import render_teacher_messages
                from guardsmith.standins.sample import load_sample

                probe = render_teacher_messages(load_sample("train")[0])
                body = _json.dumps({"model": "offline-teacher", "messages": probe}).encode()
                req = urllib.request.Request(f"{server.url}/chat/completions", body, {"Content-Type": "application/json"})
                message = _json.loads(urllib.request.urlopen(req, timeout=30).read())["choices"][0]["message"]
                assert message[field].strip() and "<think>" not in message["content"]
            out = str(tmp_path / name)
            run(DistillConfig(input=src, output=out, teacher=f"openai:{server.url}?model=offline-teacher",
                              shard_size=8, concurrency=4))
            traces[name] = {r["id"]: r for r in storage.read_table(out, "traces").to_pylist()}
    assert traces["split"].keys() == traces["inline"].keys()
    for key, row in traces["split"].items():
        assert row["parse_ok"] and row["reasoning"] and row["reasoning"] == traces["inline"][key]["reasoning"]


# --------------------------------------------------------------------------- issue 15: one client, one window across shards

def test_one_client_and_one_window_across_shards_committed_in_order(tmp_path, source, monkeypatch):
    from guardsmith import teacher

    src, rows = source
    opened = []
    real = teacher.open_teacher
    monkeypatch.setattr(teacher, "open_teacher", lambda *a, **k: opened.append(a[0]) or real(*a, **k))
    out = str(tmp_path / "t")
    with serve_offline(defects={}, delay_s=0.1) as srv:
        from helpers.servers import counting_connections

        accepted = counting_connections(srv)
        result = run(DistillConfig(input=src, output=out, teacher=offline_spec(srv), shard_size=4, concurrency=8,
                                   max_retries=0, keep_shards=True))
        # 8 in flight with shards of 4: requests of later shards go out while earlier ones finish
        assert srv.stats.max_in_flight == 8 and srv.stats.requests == len(rows) == 40
        assert accepted[0] == 8  # one pool of 8 connections for the whole run, not one client per shard
        assert len(opened) == 1 and result.shards == 10 and result.requests == 40
        mtimes = [os.stat(os.path.join(shard_uri(out, i), "_SUCCESS")).st_mtime_ns for i in range(10)]
        assert mtimes == sorted(mtimes)  # committed in shard order
        ids = [r["id"] for i in range(10) for r in storage.read_table(shard_uri(out, i)).to_pylist()]
        assert ids == [r["id"] for r in rows]  # each shard holds its own rows, in input order
        # a hole in the middle: only that shard is asked again
        storage.remove(out)
        storage.remove(shard_uri(out, 4))
        before = srv.stats.requests
        again = run(DistillConfig(input=src, output=out, teacher=offline_spec(srv), shard_size=4, concurrency=8,
                                  max_retries=0))
        assert again.shards_reused == 9 and again.requests == 4 and srv.stats.requests - before == 4
    assert storage.read_table(out).column("id").to_pylist() == [r["id"] for r in rows]


def test_a_staging_folder_left_by_a_kill_mid_commit_is_not_a_shard(tmp_path, source, server):
    """SIGKILL while a shard's manifest is being written leaves ``<shard>.tmp-<id>/_SUCCESS`` half
    written (seen in the fault suite): the re-run must not read it as a damaged shard."""
    src, rows = source
    out = str(tmp_path / "t")
    stage = Path(shard_root(out)) / "failed-00001.tmp-0123456789ab"
    stage.mkdir(parents=True)
    (stage / "_SUCCESS").write_bytes(b'{"format": "guardsm')
    result = run(cfg(src, out, server))
    assert result.rows == len(rows) and sorted(storage.read_table(out).column("id").to_pylist()) == sorted(
        r["id"] for r in rows)


def test_a_local_teacher_model_is_identified_by_its_content(tmp_path, source):
    from guardsmith.teacher import job_identity

    model = tmp_path / "models" / "qwen-teacher"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"layers": 2}')
    (model / "model.safetensors").write_bytes(b"weights-1")
    for kind in ("vllm", "transformers"):
        job = DistillConfig(input=source[0], output=str(tmp_path / "t"), teacher=f"{kind}:{model}")
        first = job_identity(job)
        assert first.inputs["teacher"] and first.config["teacher_model"] == "qwen-teacher"
        assert job_identity(DistillConfig(input=source[0], output="o2", teacher=f"{kind}:file://{model}")) == first
        (model / "model.safetensors").write_bytes(f"weights-{kind}".encode())  # republished at the same path
        again = job_identity(job)
        assert again.digest != first.digest and again.differences(first) == ["input teacher"]
    openai = job_identity(DistillConfig(input=source[0], output="o", teacher="openai:http://h:1/v1?model=m"))
    assert "teacher" not in openai.inputs  # an endpoint is identified by its model name only
