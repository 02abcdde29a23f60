"""guardsmith.storage on the local filesystem and on a real SeaweedFS S3 server (no mocks)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from guardsmith import storage, tables
from guardsmith.errors import DataError, GuardsmithError
from helpers.data import interactions
from helpers.s3env import apply_s3_env

HELPERS = Path(__file__).parent / "helpers"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def base(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh output location: a local directory or a unique S3 prefix."""
    if request.param == "local":
        return str(tmp_path / "out")
    return request.getfixturevalue("s3_prefix")


def _siblings(uri: str) -> list[str]:
    """Staging leftovers next to a local target (``<name>.tmp-*`` / ``.old-*``)."""
    if "://" in uri:
        return []
    parent = Path(uri).parent
    return sorted(p.name for p in parent.glob(Path(uri).name + ".*")) if parent.exists() else []


def _objects(uri: str) -> list[str]:
    """Every file (recursively) under a URI, as paths relative to it."""
    loc = storage.resolve(uri)
    if loc.fs.get_file_info(loc.path).type.name == "NotFound":
        return []
    infos = loc.fs.get_file_info(storage.pafs.FileSelector(loc.path, recursive=True))
    return sorted(i.path[len(loc.path) + 1:] for i in infos if i.type.name == "File")


# --------------------------------------------------------------------------- URIs

def test_resolve_and_join(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fs, path = storage.resolve(str(tmp_path / "a"))
    assert isinstance(fs, storage.pafs.LocalFileSystem) and path == str(tmp_path / "a")
    assert storage.resolve(f"file://{tmp_path}/b").path == str(tmp_path / "b")
    apply_s3_env(monkeypatch, {"GUARDSMITH_S3_ENDPOINT": "http://127.0.0.1:1", "AWS_ACCESS_KEY_ID": "k",
                               "AWS_SECRET_ACCESS_KEY": "topsecret"})
    loc = storage.resolve("s3://bucket/some/key/")
    assert loc.is_s3 and loc.path == "bucket/some/key" and loc.uri == "s3://bucket/some/key"
    assert "topsecret" not in repr(storage.S3Config.from_env())
    for bad in ("gs://b/k", "s3://", "file://host/x", ""):
        with pytest.raises(GuardsmithError):
            storage.resolve(bad)
    assert storage.join("s3://b/x/", "y", "z.parquet") == "s3://b/x/y/z.parquet"
    assert storage.join(str(tmp_path), "y") == str(tmp_path / "y")


def test_endpoint_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    apply_s3_env(monkeypatch, {"AWS_ENDPOINT_URL": "https://minio.example:9000/", "AWS_DEFAULT_REGION": "eu-west-1"})
    cfg = storage.S3Config.from_env()
    assert (cfg.endpoint, cfg.region) == ("https://minio.example:9000", "eu-west-1")
    monkeypatch.setenv("GUARDSMITH_S3_ENDPOINT", "http://seaweed:8333")
    assert storage.S3Config.from_env().endpoint == "http://seaweed:8333"
    monkeypatch.setenv("GUARDSMITH_S3_ENDPOINT", "ftp://x")
    with pytest.raises(GuardsmithError, match="bad S3 endpoint"):
        storage.S3Config.from_env()


# --------------------------------------------------------------------------- tables

def test_round_trip_and_streaming(base: str) -> None:
    uri = storage.join(base, "interactions")
    t = interactions(10_000)
    manifest = storage.write_table(uri, t, "interactions", rows_per_part=3_000)
    assert [p["rows"] for p in manifest["parts"]] == [3000, 3000, 3000, 1000]
    assert manifest["total_rows"] == 10_000 and manifest["schema_name"] == "interactions"
    assert storage.is_committed(uri) and storage.exists(uri)
    assert json.loads(storage.read_bytes(storage.join(uri, "_SUCCESS")))["parts"] == manifest["parts"]
    assert storage.read_table(uri, "interactions").equals(t)
    sizes = []
    for batch in storage.iter_batches(uri, "interactions", batch_size=700):
        sizes.append(batch.num_rows)
        assert batch.schema == tables.SCHEMAS["interactions"]
    assert max(sizes) <= 700 and sum(sizes) == 10_000
    ids = pa.concat_arrays([b.column(0) for b in storage.iter_batches(uri, batch_size=999, columns=["id"])])
    assert ids.equals(t.column("id").combine_chunks())
    with pytest.raises(DataError, match="column 'nope'.*missing column"):
        next(storage.iter_batches(uri, "interactions", columns=["id", "nope"]))
    assert _siblings(uri) == []


def test_writer_cuts_parts_across_odd_batches(base: str) -> None:
    uri = storage.join(base, "t")
    with storage.TableWriter(uri, "interactions", rows_per_part=1000, row_group_rows=256) as w:
        for start in range(0, 3500, 333):
            w.write(interactions(min(333, 3500 - start), start=start).to_batches()[0])
        assert w.parts_written == 3
    assert [p["rows"] for p in w.manifest["parts"]] == [1000, 1000, 1000, 500]
    assert storage.read_table(uri).equals(interactions(3500))
    part = storage.join(uri, w.manifest["parts"][0]["name"])
    with storage.open_input(part) as f:
        meta = pq.ParquetFile(f).metadata
    assert meta.num_rows == 1000
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [256, 256, 256, 232]


def test_overwrite_replaces_and_cleans(base: str) -> None:
    uri = storage.join(base, "t")
    storage.write_table(uri, interactions(500, tag="v1"), "interactions", rows_per_part=100)
    m2 = storage.write_table(uri, interactions(150, tag="v2"), "interactions", rows_per_part=100)
    assert storage.read_table(uri).equals(interactions(150, tag="v2"))
    assert storage.list_dir(uri) == sorted(["_SUCCESS", *(p["name"] for p in m2["parts"])])
    assert _siblings(uri) == []


def test_empty_table_keeps_schema(base: str) -> None:
    uri = storage.join(base, "empty")
    with storage.TableWriter(uri, tables.SCHEMAS["metrics"]):
        pass
    out = storage.read_table(uri)
    assert out.num_rows == 0 and out.schema == tables.SCHEMAS["metrics"]
    assert list(storage.iter_batches(uri, "metrics")) == []


def test_exception_leaves_nothing(base: str) -> None:
    uri = storage.join(base, "t")
    with pytest.raises(RuntimeError):
        with storage.TableWriter(uri, "interactions", rows_per_part=100) as w:
            w.write(interactions(350))
            assert w.parts_written == 3
            raise RuntimeError("stage failed")
    assert not storage.exists(uri) and _objects(uri) == [] and _siblings(uri) == []


def test_bad_batch_aborts_whole_write(base: str) -> None:
    uri = storage.join(base, "t")
    bad = interactions(100, start=100)
    bad = bad.set_column(6, "prompt_harm", pa.array(["harmful"] * 30 + ["toxic"] + [None] * 69))
    with pytest.raises(DataError, match="unknown label word") as e:
        with storage.TableWriter(uri, "interactions", rows_per_part=50) as w:
            w.write(interactions(100))
            w.write(bad)
    assert (e.value.column, e.value.row, e.value.value) == ("prompt_harm", 130, "toxic")
    assert not storage.exists(uri) and _siblings(uri) == []
    with pytest.raises(DataError):  # write_table validates before anything is written
        storage.write_table(uri, bad, "interactions")
    assert not storage.exists(uri)


def test_writer_refuses_foreign_columns_and_targets(base: str) -> None:
    uri = storage.join(base, "t")
    with pytest.raises(DataError, match="not in the output schema"):
        with storage.TableWriter(uri, "interactions") as w:
            w.write(interactions(3).append_column("x", pa.array([1, 2, 3])))
    storage.write_bytes_atomic(storage.join(base, "keep", "notes.txt"), b"mine")
    with pytest.raises(GuardsmithError, match="refusing to overwrite .*notes.txt"):
        storage.write_table(storage.join(base, "keep"), interactions(3))
    assert storage.read_bytes(storage.join(base, "keep", "notes.txt")) == b"mine"
    extra = interactions(3).append_column("note", pa.array(["a", "b", "c"]))
    storage.write_table(uri, extra, "interactions")  # write_table keeps extra columns
    assert storage.read_table(uri, "interactions").schema.names[-1] == "note"


def test_uncommitted_directory_is_refused(base: str) -> None:
    uri = storage.join(base, "t")
    sink = pa.BufferOutputStream()
    pq.write_table(interactions(5), sink)
    storage.write_bytes_atomic(storage.join(uri, "part-0123456789ab-00000.parquet"), sink.getvalue().to_pybytes())
    assert storage.exists(uri) and not storage.is_committed(uri)
    for read in (storage.read_table, storage.iter_batches):
        with pytest.raises(GuardsmithError, match="not a committed guardsmith table .no _SUCCESS manifest.: "
                                                  "an earlier write may have crashed"):
            read(uri)
    storage.write_table(uri, interactions(2))  # a crashed write's parts are replaced
    assert storage.read_table(uri).num_rows == 2 and len(storage.list_dir(uri)) == 2


def test_single_external_parquet_file(base: str) -> None:
    uri = storage.join(base, "user.parquet")
    sink = pa.BufferOutputStream()
    pq.write_table(interactions(1000), sink, row_group_size=300)
    storage.write_bytes_atomic(uri, sink.getvalue().to_pybytes())
    assert storage.read_table(uri, "interactions").equals(interactions(1000))
    sizes = [b.num_rows for b in storage.iter_batches(uri, batch_size=200)]
    assert max(sizes) <= 200 and sum(sizes) == 1000


def test_bad_inputs_name_file_column_row_value(base: str) -> None:
    out = storage.join(base, "out")

    def copy(src: str) -> None:
        with storage.TableWriter(out, "interactions") as w:
            for b in storage.iter_batches(src, "interactions", batch_size=64):
                w.write(b)

    def put(name: str, table: pa.Table) -> str:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, row_group_size=100)
        uri = storage.join(base, name)
        storage.write_bytes_atomic(uri, sink.getvalue().to_pybytes())
        return uri

    t = interactions(300)
    cases = [
        (put("nocol.parquet", t.drop(["taxonomy"])), "missing column", "taxonomy", None, None),
        (put("ints.parquet", t.set_column(4, "prompt", pa.array([None] * 5 + list(range(295))))),
         "wrong type", "prompt", 5, 0),
        (put("word.parquet", t.set_column(8, "response_refusal", pa.array([None] * 250 + ["sure"] * 50))),
         "unknown label word", "response_refusal", 250, "sure"),
        (put("null.parquet", t.set_column(0, "id", pa.array(["x"] * 199 + [None] * 101))),
         "null in a required column", "id", 199, None),
    ]
    for uri, problem, column, row, value in cases:
        with pytest.raises(DataError, match=problem) as e:
            copy(uri)
        assert (e.value.file, e.value.column, e.value.row, e.value.value) == (uri, column, row, value)
        assert not storage.exists(out) and _siblings(out) == []

    corrupt = storage.join(base, "corrupt.parquet")
    storage.write_bytes_atomic(corrupt, b"PAR1 this is not parquet at all" * 10)
    empty = storage.join(base, "empty.parquet")
    storage.write_bytes_atomic(empty, b"")
    for uri, problem in ((corrupt, "not a valid Parquet file"), (empty, "empty file")):
        with pytest.raises(DataError, match=problem) as e:
            copy(uri)
        assert e.value.file == uri and uri in str(e.value)
    with pytest.raises(GuardsmithError, match="does not exist"):
        copy(storage.join(base, "missing.parquet"))
    assert not storage.exists(out)

    damaged = storage.join(base, "damaged")
    m = storage.write_table(damaged, t, rows_per_part=100)
    part = storage.join(damaged, m["parts"][1]["name"])
    storage.write_bytes_atomic(part, storage.read_bytes(part)[:-50])
    with pytest.raises(DataError, match="not a valid Parquet file") as e:
        storage.read_table(damaged)
    assert e.value.file == part


# --------------------------------------------------------------------------- small files

def test_small_files(base: str) -> None:
    uri = storage.join(base, "reports", "r.json")
    storage.write_json_atomic(uri, {"f1": 0.5})
    storage.write_json_atomic(uri, {"f1": 0.75})
    assert storage.read_json(uri) == {"f1": 0.75}
    with storage.open_input(uri) as f:
        assert json.loads(f.read()) == {"f1": 0.75}
    assert storage.list_dir(storage.join(base, "reports")) == ["r.json"]
    assert storage.exists(uri) and not storage.is_committed(storage.join(base, "reports"))
    with pytest.raises(GuardsmithError, match="does not exist"):
        storage.open_input(storage.join(base, "nope.json"))
    with pytest.raises(GuardsmithError, match="is a directory"):
        storage.open_input(storage.join(base, "reports"))
    storage.write_bytes_atomic(storage.join(base, "bad.json"), b"{nope")
    with pytest.raises(DataError, match="not valid JSON"):
        storage.read_json(storage.join(base, "bad.json"))
    storage.remove(storage.join(base, "reports"))
    assert not storage.exists(uri)
    storage.remove(storage.join(base, "reports"))  # missing is fine


# --------------------------------------------------------------------------- folders

def _make_model(root: Path, big_bytes: int) -> dict[str, bytes]:
    files = {
        "config.json": b'{"hidden": 8}',
        "tokenizer/vocab.json": b'{"a": 1}',
        "model.safetensors": os.urandom(big_bytes),
        "empty.txt": b"",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def _read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_folder_round_trip(base: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from boto3.s3.transfer import TransferConfig

    src = tmp_path / "model"
    files = _make_model(src, 12 * 1024 * 1024 + 123)
    small = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024,
                           max_concurrency=4)
    uri = storage.join(base, "models", "guard")
    manifest = storage.upload_dir(str(src), uri, transfer_config=small)
    assert {f["path"]: f["size"] for f in manifest["files"]} == {k: len(v) for k, v in files.items()}
    assert storage.is_committed(uri)
    if uri.startswith("s3://"):
        bucket, key = storage.resolve(uri).bucket_key
        client = request.getfixturevalue("s3").client()
        assert manifest["root"].startswith("versions/")  # an immutable version under the URI
        head = client.head_object(Bucket=bucket, Key=f"{key}/{manifest['root']}/model.safetensors")
        assert "-" in head["ETag"], "the big file should have gone up in multipart chunks"
    dest = tmp_path / "dl" / "guard"
    assert storage.download_dir(uri, str(dest), transfer_config=small) == str(dest)
    got = _read_tree(dest)
    assert json.loads(got.pop("_SUCCESS"))["files"] == manifest["files"]
    assert got == files

    # overwrite with fewer files: stale ones go, the download replaces the local copy
    (src / "tokenizer" / "vocab.json").unlink()
    second = storage.upload_dir(str(src), uri)
    current = f"{second['root']}/" if "root" in second else ""
    assert f"{current}config.json" in _objects(uri) and f"{current}tokenizer/vocab.json" not in _objects(uri)
    storage.download_dir(uri, str(dest))
    assert "tokenizer/vocab.json" not in _read_tree(dest)
    assert list(dest.parent.iterdir()) == [dest]  # no staging leftovers

    # an upload that never committed is refused
    storage.remove(storage.join(uri, "_SUCCESS"))
    with pytest.raises(GuardsmithError, match="not a committed guardsmith folder .no _SUCCESS manifest."):
        storage.download_dir(uri, str(tmp_path / "other"))
    assert not (tmp_path / "other").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(GuardsmithError, match="refusing to replace"):
        storage.upload_dir(str(src), str(foreign))
    assert (foreign / "keep.txt").read_text() == "mine"


# --------------------------------------------------------------------------- crash safety

def _start_writer(uri: str, rows_per_part: int = 2000) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HELPERS / "slow_writer.py"), uri, str(rows_per_part), "0.5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())


def _kill_after_first_part(proc: subprocess.Popen) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PART"):
        proc.kill()
        raise AssertionError(f"writer failed: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    return line.split()[2]


@pytest.mark.parametrize("previous", [False, True], ids=["fresh", "over-previous"])
def test_sigkill_mid_write_never_exposes_partial_table(base: str, previous: bool) -> None:
    uri = storage.join(base, "table")
    if previous:
        storage.write_table(uri, interactions(1234, tag="v1"), "interactions", rows_per_part=500)
    proc = _start_writer(uri)
    part_path = _kill_after_first_part(proc)
    loc = storage.resolve(uri)
    assert loc.fs.get_file_info(part_path).type.name == "File"  # a part really was written
    if previous:
        assert storage.read_table(uri, "interactions").equals(interactions(1234, tag="v1"))
    else:
        with pytest.raises(GuardsmithError, match="does not exist|not a committed guardsmith table"):
            storage.read_table(uri)
        assert not storage.is_committed(uri)
    # the next write succeeds and removes what the killed writer left in the table directory
    storage.write_table(uri, interactions(10, tag="v3"), "interactions")
    assert storage.read_table(uri).equals(interactions(10, tag="v3"))
    assert len(storage.list_dir(uri)) == 2


# --------------------------------------------------------------------------- S3 failures

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



def _s3_calls(tmp_path: Path) -> list:
    """One read, write, upload and download against s3://bucket (for endpoint-error tests)."""
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"x")
    return [
        lambda: storage.read_table("s3://bucket/t"),
        lambda: storage.write_table("s3://bucket/t", interactions(3)),
        lambda: storage.upload_dir(str(tmp_path / "m"), "s3://bucket/m"),
        lambda: storage.download_dir("s3://bucket/m", str(tmp_path / "dl")),
    ]


@pytest.mark.s3
def test_unreachable_endpoint_fails_fast(s3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    port = _closed_port()
    env = {**s3.env(), "GUARDSMITH_S3_ENDPOINT": f"http://127.0.0.1:{port}"}
    apply_s3_env(monkeypatch, env)
    calls = _s3_calls(tmp_path)
    for call in calls:
        start = time.monotonic()
        with pytest.raises(GuardsmithError, match=f"cannot reach S3 endpoint http://127.0.0.1:{port}") as e:
            call()
        assert time.monotonic() - start < 8
        assert "\n" not in str(e.value) and s3.secret_key not in str(e.value)
    assert not (tmp_path / "dl").exists()


@pytest.mark.s3
def test_missing_bucket_and_bad_credentials(s3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    apply_s3_env(monkeypatch, s3.env())
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"x")
    for call in (lambda: storage.read_table("s3://no-such-bucket-gs/t"),
                 lambda: storage.write_table("s3://no-such-bucket-gs/t", interactions(3)),
                 lambda: storage.upload_dir(str(tmp_path / "m"), "s3://no-such-bucket-gs/m")):
        with pytest.raises(GuardsmithError, match="S3 bucket 'no-such-bucket-gs' does not exist"):
            call()
    apply_s3_env(monkeypatch, {**s3.env(), "AWS_SECRET_ACCESS_KEY": "wrong-secret-value"})
    for call in (lambda: storage.read_table(s3.uri("t")),
                 lambda: storage.upload_dir(str(tmp_path / "m"), s3.uri("m"))):
        with pytest.raises(GuardsmithError, match="refused access") as e:
            call()
        assert "wrong-secret-value" not in str(e.value)


# --------------------------------------------------------------------------- one writer per URI

def _race(*jobs):
    """Run the jobs in threads started together; returns (results, errors) in job order."""
    import threading

    results: list = [None] * len(jobs)
    errors: list = [None] * len(jobs)

    def run(i: int) -> None:
        try:
            results[i] = jobs[i]()
        except BaseException as e:  # noqa: BLE001 - collected for the assertions
            errors[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results, errors


def _one_winner(errors: list) -> int:
    """Index of the single job that succeeded; the others failed with the clear one-line error."""
    winners = [i for i, e in enumerate(errors) if e is None]
    assert len(winners) == 1, f"expected exactly one writer to commit, got errors {errors}"
    for i, e in enumerate(errors):
        if i != winners[0]:
            assert isinstance(e, storage.ConcurrentWriteError), repr(e)
            assert "was committed by another writer at the same time" in str(e) and "\n" not in str(e)
    return winners[0]


@pytest.mark.parametrize("previous", [False, True], ids=["fresh", "over-previous"])
def test_two_concurrent_table_writers_one_commits(base: str, previous: bool) -> None:
    import threading

    uri = storage.join(base, "t")
    if previous:
        storage.write_table(uri, interactions(300, tag="v0"), "interactions", rows_per_part=100)
    opened = threading.Barrier(2)
    data = {"a": interactions(2500, tag="a"), "b": interactions(1700, tag="b")}

    def writer(tag: str):
        def job():
            w = storage.TableWriter(uri, "interactions", rows_per_part=500)
            with w:
                opened.wait(10)  # both have opened (seen the same committed state) before either commits
                for batch in data[tag].to_batches(max_chunksize=400):
                    w.write(batch)
            return w.manifest
        return job

    results, errors = _race(writer("a"), writer("b"))
    win = _one_winner(errors)
    tag = "ab"[win]
    assert storage.read_table(uri, "interactions").equals(data[tag])
    assert storage.list_dir(uri) == sorted(["_SUCCESS", *(p["name"] for p in results[win]["parts"])])
    assert _siblings(uri) == []


@pytest.mark.parametrize("previous", [False, True], ids=["fresh", "over-previous"])
def test_two_concurrent_uploads_one_commits(base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            previous: bool) -> None:
    import threading

    uri = storage.join(base, "models", "guard")
    small, large = tmp_path / "small", tmp_path / "large"
    for root, n in ((small, 2), (large, 58)):
        for i in range(n):
            (root / f"f{i:02d}.bin").parent.mkdir(parents=True, exist_ok=True)
            (root / f"f{i:02d}.bin").write_bytes(f"{root.name}-{i}".encode() * 100)
    if previous:
        storage.upload_dir(str(small), uri)
    scanned = threading.Barrier(2)
    real_scan = storage._scan_folder

    def scan(root: str):  # both uploads have read the committed state before either commits
        out = real_scan(root)
        if root in (str(small), str(large)):
            scanned.wait(10)
        return out

    monkeypatch.setattr(storage, "_scan_folder", scan)
    results, errors = _race(lambda: storage.upload_dir(str(small), uri), lambda: storage.upload_dir(str(large), uri))
    win = _one_winner(errors)
    dest = tmp_path / "dl"
    storage.download_dir(uri, str(dest))
    got = _read_tree(dest)
    got.pop("_SUCCESS")
    assert got == _read_tree((small, large)[win])
    if uri.startswith("s3://"):  # the loser's version is gone: only the winner's (and the replaced one)
        versions = {o.split("/")[1] for o in _objects(uri) if o.startswith("versions/")}
        assert results[win]["root"].split("/")[1] in versions and len(versions) == (2 if previous else 1)
    assert _siblings(uri) == []


@pytest.mark.parametrize("where", ["transfer", "commit"])
def test_interrupted_republish_keeps_previous_version(base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      where: str) -> None:
    uri = storage.join(base, "models", "guard")
    v1 = tmp_path / "v1"
    files1 = _make_model(v1, 1000)
    first = storage.upload_dir(str(v1), uri)
    v2 = tmp_path / "v2"
    _make_model(v2, 2000)

    class Crash(Exception):
        pass

    def crash(*a, **k):
        raise Crash("killed mid-upload")

    with monkeypatch.context() as m:
        if where == "commit":  # every file is up, the commit never happens
            m.setattr(storage, "_put_manifest_s3" if uri.startswith("s3://") else "_swap_into_place", crash)
        elif uri.startswith("s3://"):  # the transfer of a file fails
            from boto3.s3.transfer import TransferManager
            m.setattr(TransferManager, "upload", crash)
        else:
            m.setattr(storage.shutil, "copy2", crash)
        with pytest.raises(Crash):
            storage.upload_dir(str(v2), uri)
    assert storage.is_committed(uri) and storage.content_id(uri) == storage.manifest_id(first)
    dest = tmp_path / "dl"
    storage.download_dir(uri, str(dest))
    got = _read_tree(dest)
    got.pop("_SUCCESS")
    assert got == files1
    if uri.startswith("s3://"):  # the failed attempt removed its version
        assert {o.split("/")[1] for o in _objects(uri) if o.startswith("versions/")} == {first["root"].split("/")[1]}
    assert _siblings(uri) == []


@pytest.mark.s3
def test_sigkill_mid_republish_keeps_previous_version(s3_prefix: str, tmp_path: Path) -> None:
    uri = storage.join(s3_prefix, "guard")
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    files1 = _make_model(v1, 1000)
    first = storage.upload_dir(str(v1), uri)
    _make_model(v2, 3000)
    script = ("import sys, time\nfrom guardsmith import storage\n"
              "def stall(*a, **k):\n    print('UPLOADED', flush=True)\n    time.sleep(60)\n"
              "storage._put_manifest_s3 = stall\nstorage.upload_dir(sys.argv[1], sys.argv[2])\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(v2), uri], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "UPLOADED", proc.stderr.read() if proc.stderr else ""
    assert len({o.split("/")[1] for o in _objects(uri) if o.startswith("versions/")}) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    storage.download_dir(uri, str(tmp_path / "dl"))
    got = _read_tree(tmp_path / "dl")
    got.pop("_SUCCESS")
    assert got == files1
    # the next publish succeeds and removes the killed attempt's version
    third = storage.upload_dir(str(v2), uri)
    versions = {o.split("/")[1] for o in _objects(uri) if o.startswith("versions/")}
    # the new one and the one it replaced; the killed attempt's is gone
    assert versions == {third["root"].split("/")[1], first["root"].split("/")[1]}


@pytest.mark.s3
def test_flat_folder_from_before_versions_still_reads(s3_prefix: str, tmp_path: Path) -> None:
    uri = storage.join(s3_prefix, "old-model")
    files = {"config.json": b'{"hidden": 8}', "model.safetensors": b"w" * 100}
    for rel, data in files.items():
        storage.write_bytes_atomic(storage.join(uri, rel), data)
    storage.write_json_atomic(storage.join(uri, "_SUCCESS"), {
        "format": "guardsmith-folder", "version": 1, "created": "2026-01-01T00:00:00+00:00", "total_bytes": 113,
        "files": [{"path": k, "size": len(v)} for k, v in files.items()]})
    storage.download_dir(uri, str(tmp_path / "dl"))
    got = _read_tree(tmp_path / "dl")
    got.pop("_SUCCESS")
    assert got == files
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "config.json").write_bytes(b'{"hidden": 16}')
    m = storage.upload_dir(str(tmp_path / "new"), uri)  # republished as a version; the flat files go
    assert _objects(uri) == sorted(["_SUCCESS", f"{m['root']}/config.json"])


# --------------------------------------------------------------------------- model cache

@pytest.mark.s3
def test_model_cache_keys_on_content(s3_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from guardsmith import model_store

    monkeypatch.setenv("GUARDSMITH_CACHE", str(tmp_path / "cache"))
    downloads = []
    real = storage.download_dir
    monkeypatch.setattr(storage, "download_dir", lambda *a, **k: downloads.append(a[0]) or real(*a, **k))
    uri = storage.join(s3_prefix, "guard")
    src = tmp_path / "m"
    src.mkdir()
    (src / "config.json").write_text('{"v": 1}')
    model_store.publish_model(src, uri)
    p1 = model_store.local_model(uri)
    assert (p1 / "config.json").read_text() == '{"v": 1}' and len(downloads) == 1
    assert model_store.local_model(uri) == p1 and len(downloads) == 1  # cached
    model_store.publish_model(src, uri)  # republished unchanged: still cached
    assert model_store.local_model(uri) == p1 and len(downloads) == 1
    (src / "config.json").write_text('{"v": 2}')
    model_store.publish_model(src, uri)  # republished with new content: downloaded again
    p2 = model_store.local_model(uri)
    assert p2 != p1 and (p2 / "config.json").read_text() == '{"v": 2}' and len(downloads) == 2
    assert sorted(p.name for p in (tmp_path / "cache" / "models").iterdir()) == sorted([p1.name, p2.name])


# --------------------------------------------------------------------------- identity

def test_identity_round_trip_through_manifest(base: str, tmp_path: Path) -> None:
    from guardsmith.identity import WorkIdentity, decide

    ident = WorkIdentity(stage="distill", config={"seed": 1, "teacher": "offline"}, inputs={"data": "abc"})
    uri = storage.join(base, "t")
    assert storage.recorded_identity(uri) is None and decide(uri, ident) == "run"
    storage.write_table(uri, interactions(5), "interactions", identity=ident)
    assert storage.recorded_identity(uri) == ident.to_json()
    assert WorkIdentity.from_json(storage.recorded_identity(uri)).digest == ident.digest
    assert decide(uri, ident) == "skip"
    other = WorkIdentity(stage="distill", config={"seed": 2, "teacher": "offline"}, inputs={"data": "abd"})
    with pytest.raises(GuardsmithError, match=r"made by other work: config.seed, input data; .*--overwrite"):
        decide(uri, other)
    assert decide(uri, other, overwrite=True) == "run"
    with storage.TableWriter(uri, "interactions", identity=other) as w:
        w.write(interactions(3))
    assert storage.recorded_identity(uri) == other.to_json()
    storage.write_table(uri, interactions(3))
    assert storage.recorded_identity(uri) is None  # written without identity: records none

    src = tmp_path / "m"
    src.mkdir()
    (src / "config.json").write_text("{}")
    folder = storage.join(base, "model")
    storage.upload_dir(str(src), folder, identity=ident)
    assert storage.recorded_identity(folder) == ident.to_json()
    storage.download_dir(folder, str(tmp_path / "dl"))
    assert storage.recorded_identity(str(tmp_path / "dl")) == ident.to_json()
    assert storage.recorded_identity(storage.join(folder, "nothing-here")) is None


def test_content_id_follows_data_not_commits(base: str, tmp_path: Path) -> None:
    import hashlib

    a, b = storage.join(base, "a"), storage.join(base, "b")
    storage.write_table(a, interactions(1000), "interactions", rows_per_part=300)
    first = storage.content_id(a)
    storage.write_table(a, interactions(1000), "interactions", rows_per_part=300)  # re-committed identically
    assert storage.content_id(a) == first
    storage.write_table(b, interactions(1000), "interactions", rows_per_part=300)  # same data elsewhere
    assert storage.content_id(b) == first
    storage.write_table(a, interactions(1000, tag="x"), "interactions", rows_per_part=300)
    assert storage.content_id(a) != first

    f = storage.join(base, "user.json")
    storage.write_bytes_atomic(f, b'{"x": 1}')
    assert storage.content_id(f) == hashlib.sha256(b'{"x": 1}').hexdigest()

    src = tmp_path / "m"
    files = _make_model(src, 5000)
    assert storage.content_id(str(src)) == storage.content_id(str(src))  # a plain local folder
    folder = storage.join(base, "model")
    storage.upload_dir(str(src), folder)
    before = storage.content_id(folder)
    storage.upload_dir(str(src), folder)
    assert storage.content_id(folder) == before
    storage.download_dir(folder, str(tmp_path / "dl"))
    assert storage.content_id(str(tmp_path / "dl")) == before
    (src / "model.safetensors").write_bytes(bytes(reversed(files["model.safetensors"])))  # same size
    storage.upload_dir(str(src), folder)
    assert storage.content_id(folder) != before
    with pytest.raises(GuardsmithError, match="does not exist"):
        storage.content_id(storage.join(base, "missing"))


def test_is_location(tmp_path: Path) -> None:
    (tmp_path / "here").mkdir()
    for text in ("s3://b/k", "file:///x", "/abs/path", "./rel", "~/x", str(tmp_path / "here")):
        assert storage.is_location(text), text
    for text in ("openai:http://h/v1#m", "hf", "offline", "Qwen/Qwen2.5-0.5B-Instruct", "http://host/x", ""):
        assert not storage.is_location(text), text


# --------------------------------------------------------------------------- not an S3 server

def test_http_server_that_is_not_s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    (tmp_path / "www").mkdir()
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # noqa: ANN002
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path / "www"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        apply_s3_env(monkeypatch, {"GUARDSMITH_S3_ENDPOINT": f"http://admin:hunter2pw@127.0.0.1:{port}",
                                   "AWS_REGION": "us-east-1", "GUARDSMITH_S3_MAX_ATTEMPTS": "1"})
        calls = _s3_calls(tmp_path)
        for call in calls:
            with pytest.raises(GuardsmithError) as e:
                call()
            msg = str(e.value)
            assert f"S3 endpoint http://127.0.0.1:{port} answers HTTP but is not an S3 server" in msg, msg
            assert "does not exist" not in msg and "hunter2pw" not in msg and "\n" not in msg
    finally:
        server.shutdown()
        server.server_close()


def test_folder_file_follows_the_current_version(base: str, tmp_path: Path) -> None:
    """Files inside a published model folder are read through the manifest, whatever its layout."""
    uri = storage.join(base, "model-ff")
    for n in (1, 2):
        local = tmp_path / f"v{n}"
        local.mkdir()
        (local / "config.json").write_text("{}")
        (local / "guardsmith_training.json").write_text(json.dumps({"n": n}))
        storage.upload_dir(str(local), uri)
        assert storage.read_json(storage.folder_file(uri, "guardsmith_training.json")) == {"n": n}
    assert storage.folder_file(str(tmp_path / "plain"), "x.json") == storage.join(str(tmp_path / "plain"), "x.json")
