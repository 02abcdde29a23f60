"""How busy distill keeps a teacher endpoint, side by side with a one-rolling-window reference.

The endpoint (``aiohttp.web`` in a child process, see ``client_throughput.serve_in_child``) answers
each request after a log-normal delay (median ``--median`` s, sigma ``--sigma``, seeded) with a
well-formed offline-teacher trace. Busy fraction = the sum of the endpoint's request times /
(concurrency x the time from its first request's start to its last request's end): 1.0 means
every one of the ``concurrency`` slots was working all the time.

For each concurrency, over the same ``--rows`` interactions in shards of ``--shard-size``:

- ``guardsmith``: ``guardsmith.teacher.write_traces`` (what ``guardsmith distill`` runs: one
  client, one rolling window across shards, shards committed in order);
- ``per-shard``: the calling pattern before issue 15 (a new client and a barrier per shard:
  one ``generate`` call per shard), for comparison;
- ``reference``: a bare aiohttp loop over all requests with one semaphore (one rolling window,
  no shards, no parsing, no writing).

    .venv/bin/python benchmarks/distill_busy.py                           # 2,048 rows, 16/32/64
    .venv/bin/python benchmarks/distill_busy.py --rows 1024 --concurrency 32 --median 0.1
"""
from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from client_throughput import serve_in_child

from guardsmith import storage, tables, teacher
from guardsmith.guard import render_teacher_messages
from guardsmith.inference import OpenAIBackend
from guardsmith.inference.base import SamplingParams
from guardsmith.standins.offline import OfflineTeacher
from guardsmith.standins.sample import load_sample


def make_rows(n: int) -> list[dict]:
    base = load_sample()
    return [{**base[i % len(base)], "id": f"r{i:06d}"} for i in range(n)]


def teacher_reply(row: dict) -> dict:
    text = OfflineTeacher({}, 0)(render_teacher_messages(row), SamplingParams())[0]
    return {"id": "x", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 300, "completion_tokens": 120, "total_tokens": 420}}


def job(src: str, out: str, url: str, c: int, shard_size: int) -> teacher.TracesJob:
    return teacher.TracesJob(input=src, output=out, teacher=f"openai:{url}?model=m", concurrency=c, shard_size=shard_size,
                             max_retries=0, api_key_env="GUARDSMITH_BENCH_NO_KEY")


def run_guardsmith(src: str, out: str, url: str, c: int, shard_size: int, rows: list[dict]) -> None:
    result = teacher.write_traces(job(src, out, url, c, shard_size))
    assert result.rows == len(rows) and not result.failed_ids


def run_per_shard(src: str, out: str, url: str, c: int, shard_size: int, rows: list[dict]) -> None:
    cfg = job(src, out, url, c, shard_size)
    for start in range(0, len(rows), shard_size):
        with OpenAIBackend(url, "m", api_key_env="GUARDSMITH_BENCH_NO_KEY", max_concurrency=c, max_retries=0,
                           progress_min_requests=10**9) as backend:
            shard = teacher.distill_job(rows[start:start + shard_size], cfg)
            shard.gens = backend.generate(shard.requests, **teacher.sampling_of(cfg, None))
            records, failures = teacher.distill_results(shard, "m")
        assert not failures
        tables.from_records(records, "traces")


def run_reference(src: str, out: str, url: str, c: int, shard_size: int, rows: list[dict]) -> None:
    import aiohttp

    bodies = [json.dumps({"model": "m", "messages": render_teacher_messages(r), "max_tokens": 2048}).encode()
              for r in rows]

    async def main() -> None:
        sem = asyncio.Semaphore(c)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c),
                                         headers={"Content-Type": "application/json"}) as session:
            async def one(body: bytes) -> None:
                async with sem:
                    async with session.post(url + "/chat/completions", data=body) as resp:
                        await resp.read()
            await asyncio.gather(*(one(b) for b in bodies))

    asyncio.run(main())


MODES = {"guardsmith": run_guardsmith, "per-shard": run_per_shard, "reference": run_reference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--median", type=float, default=0.2, help="median endpoint latency, seconds")
    parser.add_argument("--sigma", type=float, default=0.7)
    parser.add_argument("--concurrency", default="16,32,64")
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args()
    rows = make_rows(args.rows)
    names = [m for m in args.modes.split(",") if m]
    print(f"{args.rows} rows, shards of {args.shard_size}, endpoint latency log-normal (median "
          f"{args.median * 1000:g} ms, sigma {args.sigma}); busy = endpoint request time / (concurrency x span)")
    print(f"{'concurrency':>11} {'mode':>11} {'busy':>6} {'of reference':>12} {'wall s':>7}")
    with tempfile.TemporaryDirectory() as tmp, serve_in_child(args.median, args.sigma, 0, teacher_reply(rows[0])) as server:
        src = str(Path(tmp) / "interactions")
        storage.write_table(src, tables.from_records(rows, "interactions"), "interactions")
        for c in [int(x) for x in args.concurrency.split(",")]:
            busy = {}
            for name in names:
                out = str(Path(tmp) / f"traces-{name}-{c}")
                server.reset()
                wall = time.perf_counter()
                MODES[name](src, out, server.url, c, args.shard_size, rows)
                wall = time.perf_counter() - wall
                st = server.stats()
                assert st["count"] == len(rows), st
                busy[name] = (st["busy"] / (c * (st["last"] - st["first"])), wall)
            ref = busy.get("reference", (None,))[0]
            for name, (b, wall) in busy.items():
                vs = f"{b / ref:12.2f}" if ref else f"{'-':>12}"
                print(f"{c:>11} {name:>11} {b:6.1%} {vs} {wall:7.1f}")


if __name__ == "__main__":
    main()
