"""Streaming benchmark for guardsmith.storage: a 1M-row interactions table never held whole.

Writes an ``interactions`` table in chunks with ``TableWriter``, then streams it back with
``iter_batches`` (validated against the schema) and reports rows/s and peak RSS of each phase.
For contrast, ``--full`` also loads the table whole with ``read_table``. Each phase runs in a
fresh subprocess, so its peak RSS (``resource.getrusage``) is its own.

    python benchmarks/storage_stream.py                       # local temp directory
    python benchmarks/storage_stream.py --uri s3://bucket/k   # S3 (GUARDSMITH_S3_ENDPOINT, AWS_*)
    python benchmarks/storage_stream.py --seaweed             # a throw-away local SeaweedFS

``GUARDSMITH_BENCH_URI`` sets the default ``--uri``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHUNK = 50_000


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _chunk(start: int, n: int):  # noqa: ANN202 - pyarrow Table
    import random

    import pyarrow as pa

    from guardsmith import tables

    rng = random.Random(start)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
             "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo"]
    pool = [" ".join(rng.choices(words, k=rng.randint(20, 80))) for _ in range(500)]
    ids = range(start, start + n)
    cols = {
        "id": [f"bench-{i}" for i in ids],
        "source": ["bench"] * n,
        "taxonomy": ["aegis2"] * n,
        "policy": [None] * n,
        "prompt": [f"{pool[i % 500]} #{i}" for i in ids],
        "response": [None if i % 4 == 0 else f"{pool[(i * 7) % 500]} @{i}" for i in ids],
        "prompt_harm": [("harmful", "unharmful")[i % 2] for i in ids],
        "response_harm": [None if i % 4 == 0 else ("harmful", "unharmful")[i % 3 % 2] for i in ids],
        "response_refusal": [None if i % 4 == 0 else ("refusal", "compliance")[i % 5 % 2] for i in ids],
        "categories": [["S1", "S7"] if i % 2 == 0 else [] for i in ids],
    }
    schema = tables.SCHEMAS["interactions"]
    return pa.Table.from_arrays([pa.array(cols[f.name], type=f.type) for f in schema], schema=schema)


def phase_write(uri: str, rows: int) -> dict:
    from guardsmith import storage

    start = time.perf_counter()
    nbytes = 0
    with storage.TableWriter(uri, "interactions", schema_name="interactions") as writer:
        for offset in range(0, rows, CHUNK):
            chunk = _chunk(offset, min(CHUNK, rows - offset))
            nbytes += chunk.nbytes
            writer.write(chunk)
    seconds = time.perf_counter() - start
    loc = storage.resolve(uri)
    stored = sum(loc.fs.get_file_info(loc.child(p["name"]).path).size for p in writer.manifest["parts"])
    return {"phase": "write", "rows": writer.rows, "parts": writer.parts_written, "seconds": seconds,
            "rows_per_s": writer.rows / seconds, "arrow_mib": nbytes / 2**20, "stored_mib": stored / 2**20,
            "peak_rss_mib": _rss_mib()}


def phase_stream(uri: str, batch_size: int) -> dict:
    from guardsmith import storage

    total = storage.read_json(storage.join(uri, storage.MANIFEST))["total_rows"]
    start = time.perf_counter()
    rows = batches = largest = 0
    nbytes = 0
    quarter_rss = None
    for batch in storage.iter_batches(uri, "interactions", batch_size=batch_size):
        rows += batch.num_rows
        batches += 1
        nbytes += batch.nbytes
        largest = max(largest, batch.num_rows)
        if quarter_rss is None and rows >= total / 4:
            quarter_rss = _rss_mib()
    seconds = time.perf_counter() - start
    return {"phase": f"stream batch_size={batch_size}", "rows": rows, "batches": batches, "largest_batch": largest,
            "seconds": seconds, "rows_per_s": rows / seconds, "arrow_mib": nbytes / 2**20,
            "peak_rss_after_quarter_mib": quarter_rss, "peak_rss_mib": _rss_mib()}


def phase_full(uri: str) -> dict:
    from guardsmith import storage

    start = time.perf_counter()
    table = storage.read_table(uri, "interactions")
    seconds = time.perf_counter() - start
    return {"phase": "full read_table", "rows": table.num_rows, "seconds": seconds,
            "rows_per_s": table.num_rows / seconds, "arrow_mib": table.nbytes / 2**20,
            "peak_rss_mib": _rss_mib()}


def phase_idle() -> dict:
    import pyarrow  # noqa: F401

    from guardsmith import storage, tables  # noqa: F401

    return {"phase": "imports only", "peak_rss_mib": _rss_mib()}


def _child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--phase", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--uri", default=os.environ.get("GUARDSMITH_BENCH_URI"))
    ap.add_argument("--seaweed", action="store_true", help="start a local SeaweedFS and write there")
    ap.add_argument("--batch-sizes", default="65536,8192", help="comma-separated iter_batches batch sizes")
    ap.add_argument("--full", action="store_true", help="also load the table whole, for contrast")
    ap.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.phase:
        name, *rest = args.phase
        result = {"write": lambda: phase_write(rest[0], int(rest[1])),
                  "stream": lambda: phase_stream(rest[0], int(rest[1])),
                  "full": lambda: phase_full(rest[0]), "idle": phase_idle}[name]()
        print(json.dumps(result))
        return

    server = None
    tmp = tempfile.TemporaryDirectory(prefix="gs-bench-")
    try:
        if args.seaweed:
            from guardsmith.standins.local_s3 import LocalS3

            server = LocalS3(bucket="gs-bench").start()
            os.environ.update(server.env())
            uri = server.uri("interactions")
        else:
            uri = args.uri or os.path.join(tmp.name, "interactions")
        print(f"table: {uri}  ({args.rows:,} rows, python {sys.version.split()[0]})")
        idle, w = _child("idle"), _child("write", uri, str(args.rows))
        streams = [_child("stream", uri, b) for b in args.batch_sizes.split(",")]
        full = [_child("full", uri)] if args.full else []
        for r in [idle, w, *streams, *full]:
            print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}))
        print(f"imports only: peak RSS {idle['peak_rss_mib']:.0f} MiB")
        print(f"write : {w['rows_per_s']:,.0f} rows/s, {w['parts']} parts, {w['stored_mib']:.0f} MiB stored, "
              f"{w['arrow_mib']:.0f} MiB as Arrow, peak RSS {w['peak_rss_mib']:.0f} MiB")
        for s in streams:
            print(f"{s['phase']}: {s['rows_per_s']:,.0f} rows/s in {s['batches']} batches "
                  f"(max {s['largest_batch']:,} rows), peak RSS {s['peak_rss_mib']:.0f} MiB "
                  f"({s['peak_rss_after_quarter_mib']:.0f} MiB after the first quarter of the rows) "
                  f"for a table of {s['arrow_mib']:.0f} MiB in Arrow")
        for f in full:
            print(f"full read_table: {f['rows_per_s']:,.0f} rows/s, peak RSS {f['peak_rss_mib']:.0f} MiB")
    finally:
        if server is not None:
            server.stop()
        tmp.cleanup()


if __name__ == "__main__":
    main()
