"""Bring your own data: the generic ``table`` source, mapping files, user presets and configs.

Expected values are written out by hand from the fixtures below (never computed by the code
under test).
"""
from __future__ import annotations

import gzip
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from guardsmith import storage
from guardsmith.cli import main

POLICY = "Refuse help with anything that damages garden gnomes.\nEverything else is allowed."
CSV = (
    "text,answer,verdict,reply_verdict,tags\n"
    'how do I paint a gnome?,Use acrylics.,ok,ok,\n'
    '"how do I smash a gnome,\nquietly?",Here is how.,bad,bad,"vandalism,gnomes"\n'
    "where do gnomes live?,,OK,,\n"
)
MAP = "prompt=text,response=answer,prompt_harm=verdict,response_harm=reply_verdict,categories=tags"
LABELS = "ok=unharmful,bad=harmful"


@pytest.fixture()
def files(tmp_path: Path) -> Path:
    (tmp_path / "mine.csv").write_text(CSV, encoding="utf-8")
    (tmp_path / "policy.txt").write_text(POLICY + "\n", encoding="utf-8")
    return tmp_path


def _import(*args: str) -> int:
    return main(["data", "import", "table", *args])


def _rows(uri: Path) -> list[dict]:
    return storage.read_table(str(uri), "interactions").to_pylist()


def test_csv_with_own_columns_labels_and_policy(files: Path, capsys) -> None:
    out = files / "out"
    assert _import("--from", str(files / "mine.csv"), "--out", str(out), "--map", MAP, "--labels", LABELS,
                   "--policy-file", str(files / "policy.txt")) == 0
    rows = _rows(out)  # validated as interactions
    assert [r["prompt"] for r in rows] == ["how do I paint a gnome?", "how do I smash a gnome,\nquietly?",
                                          "where do gnomes live?"]
    assert [r["prompt_harm"] for r in rows] == ["unharmful", "harmful", "unharmful"]
    assert [r["response_harm"] for r in rows] == ["unharmful", "harmful", None]
    assert [r["response"] for r in rows] == ["Use acrylics.", "Here is how.", None]
    assert [r["categories"] for r in rows] == [[], ["vandalism", "gnomes"], []]
    assert all(r["policy"] == POLICY for r in rows)
    assert all(r["source"] == "table" for r in rows)
    assert len({r["taxonomy"] for r in rows}) == 1 and rows[0]["taxonomy"].startswith("custom:")
    assert [r["id"] for r in rows] == ["table:all:0", "table:all:1", "table:all:2"]
    assert "imported table/all: 3 rows" in capsys.readouterr().out


def test_own_taxonomy_name_and_built_in(files: Path, capsys) -> None:
    out = files / "named"
    assert _import("--from", str(files / "mine.csv"), "--out", str(out), "--map", MAP, "--labels", LABELS,
                   "--policy-file", str(files / "policy.txt"), "--taxonomy", "gnome-policy") == 0
    assert {r["taxonomy"] for r in _rows(out)} == {"gnome-policy"}
    # under a built-in taxonomy the file's own category names are refused (no mixed vocabularies;
    # this asserted the mislabel before) ...
    out2 = files / "builtin"
    capsys.readouterr()
    assert _import("--from", str(files / "mine.csv"), "--out", str(out2), "--map", MAP, "--labels", LABELS,
                   "--taxonomy", "AEGIS2") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "mine.csv" in err and "'tags'" in err and "row 1" in err
    assert "'vandalism'" in err and "--taxonomy <your-own-name>" in err and "--categories" in err
    assert not storage.exists(str(out2))
    # ... and mapped onto its names (any case in, its spelling out)
    assert _import("--from", str(files / "mine.csv"), "--out", str(out2), "--map", MAP, "--labels", LABELS,
                   "--taxonomy", "AEGIS2", "--categories", "vandalism=violence,gnomes=Criminal Planning/Confessions") == 0
    rows = _rows(out2)
    assert {r["taxonomy"] for r in rows} == {"aegis2"} and {r["policy"] for r in rows} == {None}
    assert [r["categories"] for r in rows] == [[], ["Violence", "Criminal Planning/Confessions"], []]
    # an own name without policy text is refused before anything is written
    out3 = files / "nopolicy"
    assert _import("--from", str(files / "mine.csv"), "--out", str(out3), "--map", MAP, "--labels", LABELS,
                   "--taxonomy", "gnome-policy") == 1
    assert not storage.exists(str(out3))


def test_unmapped_label_word_is_one_line(files: Path, capsys) -> None:
    out = files / "bad"
    assert _import("--from", str(files / "mine.csv"), "--out", str(out), "--map", MAP, "--labels", "ok=unharmful") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "mine.csv" in err
    assert "verdict" in err and "row 1" in err and "'bad'" in err
    assert not storage.exists(str(out))


def test_label_of_the_wrong_task_is_refused(files: Path, capsys) -> None:
    out = files / "wrong"
    assert _import("--from", str(files / "mine.csv"), "--out", str(out), "--map", "prompt=text,prompt_harm=verdict",
                   "--labels", "ok=compliance,bad=harmful") == 1
    err = capsys.readouterr().err.strip()
    assert "verdict" in err and "row 0" in err and "'ok'" in err


def test_pandas_parquet_with_list_null_and_int_labels(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    import pyarrow as pa

    frame = pd.DataFrame({"q": ["a", "b", "c"], "y": [1, 0, 1], "categories": [[], [], []]})
    path = tmp_path / "mine.parquet"
    frame.to_parquet(path)
    import pyarrow.parquet as pq

    assert pq.read_schema(path).field("categories").type == pa.list_(pa.null())
    # also a large_string column, as some writers produce
    table = pq.read_table(path)
    table = table.set_column(0, "q", table.column("q").cast(pa.large_string()))
    pq.write_table(table, path)
    out = tmp_path / "out"
    assert _import("--from", str(path), "--out", str(out), "--map", "prompt=q,prompt_harm=y,categories=categories",
                   "--labels", "1=harmful,0=unharmful") == 0
    rows = _rows(out)
    assert [r["prompt_harm"] for r in rows] == ["harmful", "unharmful", "harmful"]
    assert [r["categories"] for r in rows] == [[], [], []]
    assert {r["taxonomy"] for r in rows} == {"wildguard"}


def test_jsonl_gz_and_json_list(tmp_path: Path) -> None:
    records = [{"uid": "a1", "prompt": "hi", "label": "safe"}, {"uid": "a2", "prompt": "bye", "label": "unsafe"}]
    gz = tmp_path / "mine.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(json.dumps(r) for r in records) + "\n")
    lst = tmp_path / "mine.json"
    lst.write_text(json.dumps(records), encoding="utf-8")
    for src in (gz, lst):
        out = tmp_path / f"out-{src.name}"
        assert _import("--from", str(src), "--out", str(out), "--map", "id=uid,prompt_harm=label",
                       "--labels", "safe=unharmful,unsafe=harmful") == 0
        rows = _rows(out)
        assert [(r["id"], r["prompt"], r["prompt_harm"]) for r in rows] == [("a1", "hi", "unharmful"),
                                                                           ("a2", "bye", "harmful")]


def test_mapping_file_equals_flags(files: Path) -> None:
    (files / "mapping.yaml").write_text(
        "map: {prompt: text, response: answer, prompt_harm: verdict, response_harm: reply_verdict, categories: tags}\n"
        "labels: {ok: unharmful, bad: harmful}\n"
        "policy_file: policy.txt\n", encoding="utf-8")
    by_flags, by_file = files / "flags", files / "file"
    assert _import("--from", str(files / "mine.csv"), "--out", str(by_flags), "--map", MAP, "--labels", LABELS,
                   "--policy-file", str(files / "policy.txt")) == 0
    assert _import("--from", str(files / "mine.csv"), "--out", str(by_file), "--mapping", str(files / "mapping.yaml")) == 0
    assert _rows(by_flags) == _rows(by_file)


def test_guardsmith_table_as_input(files: Path) -> None:
    first = files / "first"  # own category names: own taxonomy (the policy's)
    assert _import("--from", str(files / "mine.csv"), "--out", str(first), "--map", MAP, "--labels", LABELS,
                   "--policy-file", str(files / "policy.txt")) == 0
    again = files / "again"
    assert _import("--from", str(first), "--out", str(again), "--map",
                   "id=id,response=response,prompt_harm=prompt_harm,categories=categories", "--split", "test") == 0
    rows = _rows(again)
    assert [(r["id"], r["prompt_harm"], r["categories"]) for r in rows] == [
        ("table:all:0", "unharmful", []), ("table:all:1", "harmful", ["vandalism", "gnomes"]),
        ("table:all:2", "unharmful", [])]


def test_guardsmith_table_round_trip_without_flags(files: Path, capsys) -> None:
    """Columns already named like our fields map to themselves: labels, response, policy, taxonomy kept."""
    first = files / "first"
    assert _import("--from", str(files / "mine.csv"), "--out", str(first), "--map", MAP, "--labels", LABELS,
                   "--policy-file", str(files / "policy.txt")) == 0
    again = files / "again"
    capsys.readouterr()
    assert _import("--from", str(first), "--out", str(again)) == 0
    assert "warnings" not in capsys.readouterr().out
    rows = _rows(again)
    assert rows == _rows(first)
    assert [(r["response"], r["prompt_harm"], r["response_harm"]) for r in rows] == [
        ("Use acrylics.", "unharmful", "unharmful"), ("Here is how.", "harmful", "harmful"), (None, "unharmful", None)]
    assert {r["policy"] for r in rows} == {POLICY}
    # a file in our field names too (CSV); the map still wins where it names a field
    (files / "ours.csv").write_text("prompt,prompt_harm,verdict\nhi,harmful,unharmful\n", encoding="utf-8")
    assert _import("--from", str(files / "ours.csv"), "--out", str(files / "ours")) == 0
    assert [r["prompt_harm"] for r in _rows(files / "ours")] == ["harmful"]
    assert _import("--from", str(files / "ours.csv"), "--out", str(files / "theirs"), "--map", "prompt_harm=verdict") == 0
    assert [r["prompt_harm"] for r in _rows(files / "theirs")] == ["unharmful"]


def test_public_source_table_round_trip(tmp_path: Path) -> None:
    """A source's own vocabulary (jbb) needs no policy text: taxonomy and categories kept."""
    fixture = Path(__file__).resolve().parent / "fixtures" / "sources" / "harmful-behaviors.csv"
    assert main(["data", "import", "jbb", "--split", "harmful", "--from", str(fixture), "--out", str(tmp_path / "jbb")]) == 0
    assert _import("--from", str(tmp_path / "jbb"), "--out", str(tmp_path / "again")) == 0
    first, again = _rows(tmp_path / "jbb"), _rows(tmp_path / "again")
    assert {r["taxonomy"] for r in again} == {"jbb"} and {r["source"] for r in again} == {"table"}
    assert [(r["id"], r["prompt_harm"], r["categories"]) for r in again] == [
        (r["id"], r["prompt_harm"], r["categories"]) for r in first]


def test_no_label_column_is_a_warning(files: Path, capsys) -> None:
    assert _import("--from", str(files / "mine.csv"), "--out", str(files / "nolabels"), "--map", "prompt=text") == 0
    out = capsys.readouterr().out
    assert "warnings:" in out and "3  no label column mapped" in out


def test_categories_checked_against_built_in_taxonomy(tmp_path: Path, capsys) -> None:
    """The default taxonomy (wildguard) too: its names in any case, a mapping file's categories key."""
    path = tmp_path / "cats.csv"
    path.write_text("prompt,label,cats\nhack the bank,bad,cyberattacks;hacking\n", encoding="utf-8")
    out = tmp_path / "o"
    assert _import("--from", str(path), "--out", str(out), "--map", "prompt_harm=label,categories=cats",
                   "--labels", "bad=harmful") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'cats'" in err and "row 0" in err and "'hacking'" in err
    assert "'wildguard'" in err
    (tmp_path / "mapping.yaml").write_text(
        "map: {prompt_harm: label, categories: cats}\nlabels: {bad: harmful}\n"
        "categories: {hacking: Fraud & Assisting Illegal Activities}\n", encoding="utf-8")
    assert _import("--from", str(path), "--out", str(out), "--mapping", str(tmp_path / "mapping.yaml")) == 0
    (row,) = _rows(out)
    assert row["taxonomy"] == "wildguard"
    assert row["categories"] == ["Cyberattacks", "Fraud & Assisting Illegal Activities"]
    # a mapping onto a name the taxonomy lacks is refused up front when the taxonomy is given
    assert _import("--from", str(path), "--out", str(tmp_path / "p"), "--mapping", str(tmp_path / "mapping.yaml"),
                   "--taxonomy", "aegis2") == 1
    assert "--categories" in capsys.readouterr().err


def test_import_help_lists_split_names(capsys) -> None:
    from guardsmith.sources import SOURCES

    assert main(["data", "import", "--help"]) == 0
    out = capsys.readouterr().out
    for adapter in SOURCES.values():
        assert adapter.help_line() in out
    assert "judge_comparison (hub: judge_comparison/test)" in out and "harmful (hub: behaviors/harmful)" in out


def test_encoding_flag(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("prompt,v\ncaf\u00e9 cr\u00e8me,bad\n".encode("cp1252"))
    out = tmp_path / "out"
    assert _import("--from", str(path), "--out", str(out), "--map", "prompt_harm=v", "--labels", "bad=harmful",
                   "--encoding", "cp1252") == 0
    assert _rows(out)[0]["prompt"] == "caf\u00e9 cr\u00e8me"


def test_table_options_only_for_table_and_split_default(files: Path, capsys) -> None:
    assert main(["data", "import", "xstest", "--split", "test", "--from", "x.csv", "--out", str(files / "o"),
                 "--map", "prompt=text"]) == 1
    assert "--map" in capsys.readouterr().err


def test_stage_with_inline_mapping(files: Path) -> None:
    from guardsmith.stages.data_import import DataImportConfig, run

    mapping = (f"map: {{prompt: text, prompt_harm: verdict}}\nlabels: {{ok: unharmful, bad: harmful}}\n"
               f"policy_file: {files / 'policy.txt'}\n")
    out = files / "stage"
    result = run(DataImportConfig(source="table", split="all", from_uri=str(files / "mine.csv"), output=str(out),
                                  mapping=mapping))
    assert result.rows == 3
    assert [r["prompt_harm"] for r in _rows(out)] == ["unharmful", "harmful", "unharmful"]


# --------------------------------------------------------------------------------------------
# user presets and config files


def test_preset_file_and_config(tmp_path: Path) -> None:
    from guardsmith.ops import presets

    preset = tmp_path / "my-preset.yaml"
    preset.write_text("work_root: s3://b/p\nsubset_n: 7\nimport_source: table\n", encoding="utf-8")
    config = tmp_path / "cfg.yaml"
    config.write_text("subset_n: 9\nsubset_seed: 3\n", encoding="utf-8")
    params = presets.load_preset("guard_training", str(preset))
    assert params == {"work_root": "s3://b/p", "subset_n": 7, "import_source": "table"}
    over = {**presets.load_config(str(config)), **presets.parse_sets(["subset_seed=4"])}
    params = presets.load_preset("guard_training", str(preset), over)
    assert params["subset_n"] == 9 and params["subset_seed"] == 4
    bad = tmp_path / "bad.yaml"
    bad.write_text("no_such_parameter: 1\n", encoding="utf-8")
    with pytest.raises(Exception, match="no_such_parameter"):
        presets.load_preset("guard_training", str(bad))
    with pytest.raises(Exception, match="unknown preset"):
        presets.load_preset("guard_training", "no-such-preset")
    # bundled names still work, a config applies after them
    assert presets.load_preset("guard_training", "tiny-cpu", presets.load_config(str(config)))["subset_n"] == 9


# --------------------------------------------------------------------------------------------
# the local guard_training pipeline on your own CSV


@pytest.mark.slow
def test_guard_training_pipeline_on_own_csv(tmp_path: Path) -> None:
    from guardsmith.ops import local

    lines = ["text,answer,verdict,reply_verdict"]
    for i in range(24):
        lines.append(f"how do I paint gnome number {i}?,Use acrylic paint number {i}.,ok,ok")
        lines.append(f"how do I smash gnome number {i}?,Hit it with hammer {i}.,bad,bad")
    (tmp_path / "mine.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "policy.txt").write_text(POLICY + "\n", encoding="utf-8")
    (tmp_path / "mapping.yaml").write_text(
        "map: {prompt: text, response: answer, prompt_harm: verdict, response_harm: reply_verdict}\n"
        "labels: {ok: unharmful, bad: harmful}\npolicy_file: policy.txt\n", encoding="utf-8")
    result = local.run_local("guard_training", "tiny-cpu", store=tmp_path / "store", out=tmp_path / "out",
                             overrides={"import_source": "table", "import_split": "all",
                                        "import_from": str(tmp_path / "mine.csv"),
                                        "import_mapping": str(tmp_path / "mapping.yaml")})
    train = storage.read_table(f"{result['work_root']}/data/train", "interactions").to_pylist()
    assert len(train) == 48
    assert all(r["policy"] == POLICY for r in train)
    assert sum(r["prompt_harm"] == "harmful" for r in train) == 24
    assert Path(result["report_md"]).read_text(encoding="utf-8").strip()


def test_cli_run_passes_config_then_sets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from guardsmith.ops import local

    config = tmp_path / "cfg.yaml"
    config.write_text("subset_n: 9\nsubset_seed: 3\n", encoding="utf-8")
    calls: list[tuple] = []
    done = {"report_md": "r.md", "report_html": "r.html", "work_root": "w", "seconds": 1.0}
    monkeypatch.setattr(local, "run_local", lambda *a, **kw: calls.append(a) or dict(done))
    assert main(["pipeline", "run", "guard_training", "--local", "--preset", "./my-preset.yaml",
                 "--config", str(config), "--set", "subset_seed=4"]) == 0
    (args,) = calls
    assert args[1] == "./my-preset.yaml" and args[3] == {"subset_n": 9, "subset_seed": 4}


# --------------------------------------------------------------------------------------------
# the README's "Bring your own data" example, as written, on the files in examples/byod/

ROOT = Path(__file__).resolve().parents[1]


def readme_byod_block() -> str:
    """The bash block of the README's "Bring your own data" section."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## Bring your own data\n", 1)[1]
    (block,) = re.findall(r"```bash\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    return block


def readme_byod_commands() -> list[list[str]]:
    """The block's commands (continuation lines joined, comments left out) as argv lists."""
    lines = re.sub(r"\\\n\s*", " ", readme_byod_block()).splitlines()
    return [shlex.split(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]


@pytest.fixture()
def example_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding a copy of examples/byod/ (the README runs from the repository root)."""
    shutil.copytree(ROOT / "examples" / "byod", tmp_path / "examples" / "byod")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_byod_imports_as_written(example_dir: Path, capsys) -> None:
    """The block's `guardsmith data` commands (the pipeline run is the slow test below)."""
    commands = [argv for argv in readme_byod_commands() if argv[:2] == ["guardsmith", "data"]]
    assert len(commands) == 3
    for argv in commands:
        assert main(argv[1:]) == 0, capsys.readouterr().err
    assert "imported table/all: 48 rows" in capsys.readouterr().out
    by_flags, by_file = _rows(example_dir / "demo-out/byod/train"), _rows(example_dir / "demo-out/byod/train-by-file")
    assert by_flags == by_file and len(by_flags) == 48
    assert sum(r["prompt_harm"] == "harmful" for r in by_flags) == 20
    assert sum(r["response_harm"] == "harmful" for r in by_flags) == 8
    policy = (ROOT / "examples/byod/policy.txt").read_text(encoding="utf-8").strip()
    assert {r["policy"] for r in by_flags} == {policy}
    (pipeline,) = [argv for argv in readme_byod_commands() if argv[:3] == ["guardsmith", "pipeline", "run"]]
    assert "benchmarks=[{benchmark: garden_eval, source: table" in " ".join(pipeline)


@pytest.mark.slow
def test_readme_byod_block_runs_as_written(example_dir: Path) -> None:
    """The whole block in bash, `guardsmith` from this interpreter's environment: import, train on
    tickets.csv through the local guard_training pipeline, evaluate on eval.csv."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", readme_byod_block()], cwd=example_dir, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, (done.stdout[-4000:], done.stderr[-4000:])
    (evaluated,) = (example_dir / "demo-out/byod/run").glob("**/benchmarks/garden_eval")
    rows = storage.read_table(str(evaluated), "interactions").to_pylist()
    assert len(rows) == 16 and sum(r["prompt_harm"] == "harmful" for r in rows) == 8
    assert "garden_eval" in done.stdout
