"""Load on the guard service and the gateway on 127.0.0.1: p50/p95 latency and requests/s, side by side.

A child process (so the servers do not share the client's interpreter) runs

- ``guard``: ``guardsmith serve guard`` with a tiny random-weight guard on CPU, batching on
  (``--max-batch 16 --max-wait-ms 5``);
- ``guard-unbatched``: the same guard with ``max_batch 1`` (every request its own model call);
- ``generator``: ``guardsmith.standins.chat_server`` answering a fixed reply (the generator stand-in);
- ``gateway``: ``guardsmith serve gateway`` in front of that generator, the tiny guard in process
  (batched), tau 0.5;

and the client (httpx, one ``AsyncClient``, a semaphore) sends the same bounded number of
requests at each concurrency: moderations of a (prompt, response) pair to both guards, chat
completions to the generator directly and through the gateway. Printed per target and
concurrency: p50 / p95 latency, requests/s, and the ratios batched / unbatched (guard) and
gateway / generator (overhead of scoring every answer). The machine is shared and noisy: read the
ratios of one run.

    .venv/bin/python benchmarks/serve_load.py                          # 64 requests at 1, 4, 16
    .venv/bin/python benchmarks/serve_load.py --requests 32 --concurrency 1,8
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

PAIR = [{"role": "user", "content": "How do I bake bread at home?"},
        {"role": "assistant", "content": "Mix flour, water, salt and yeast, knead, let it rise, then bake."}]
CHAT = [{"role": "user", "content": "How do I bake bread at home?"}]


def _child(conn, folder: str) -> None:
    from guardsmith.standins.chat_server import ScriptedResponder, serve
    from guardsmith.serving import GatewayConfig, GuardEngine, RunningService, gateway_app, guard_app
    from guardsmith.serving.gateway import LocalGuard
    from guardsmith.serving.metrics import ServiceMetrics
    from guardsmith.standins.tiny import build_tiny_causal_lm

    model = build_tiny_causal_lm(Path(folder) / "guard", seed=0)
    batched = RunningService(guard_app(GuardEngine.open(str(model), name="g", device="cpu"), max_batch=16, max_wait_ms=5))
    single = RunningService(guard_app(GuardEngine.open(str(model), name="g", device="cpu"), max_batch=1, max_wait_ms=0))
    generator = serve(ScriptedResponder([PAIR[1]["content"]]), model="gen")
    cfg = GatewayConfig(generator=generator.url, guard=str(model), model="gw", generator_model="gen",
                        guard_device="cpu", max_batch=16, max_wait_ms=5)
    metrics = ServiceMetrics("gateway")
    gw_guard = LocalGuard(GuardEngine.open(str(model), name="gateway-guard", device="cpu"), cfg, metrics)
    gateway = RunningService(gateway_app(cfg, guard=gw_guard, metrics=metrics))
    conn.send({"guard": batched.url, "guard-unbatched": single.url, "generator": generator.url, "gateway": gateway.url})
    conn.recv()  # until the parent is done
    for s in (gateway, batched, single):
        s.stop()
    generator.stop()


async def _drive(url: str, path: str, body: dict, requests: int, concurrency: int) -> tuple[list[float], float]:
    import httpx

    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        async def one() -> None:
            async with sem:
                start = time.perf_counter()
                resp = await client.post(f"{url}{path}", json=body)
                resp.raise_for_status()
                latencies.append(time.perf_counter() - start)

        await client.post(f"{url}{path}", json=body)  # warm up (connection, first model call)
        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(requests)))
        return latencies, time.perf_counter() - start


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64, help="Requests per target and concurrency.")
    parser.add_argument("--concurrency", default="1,4,16", help="Comma-separated concurrencies.")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    targets = {
        "guard": ("/moderations", {"model": "g", "input": [PAIR]}),
        "guard-unbatched": ("/moderations", {"model": "g", "input": [PAIR]}),
        "generator": ("/chat/completions", {"model": "gen", "messages": CHAT, "max_tokens": 32}),
        "gateway": ("/chat/completions", {"model": "gw", "messages": CHAT, "max_tokens": 32}),
    }
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    with tempfile.TemporaryDirectory() as folder:
        proc = ctx.Process(target=_child, args=(child, folder), daemon=True)
        proc.start()
        urls = parent.recv()
        rows: dict[tuple[str, int], tuple[float, float, float]] = {}
        try:
            for c in levels:
                for name, (path, body) in targets.items():
                    lat, wall = asyncio.run(_drive(urls[name], path, body, args.requests, c))
                    rows[name, c] = (_pct(lat, 50) * 1000, _pct(lat, 95) * 1000, len(lat) / wall)
        finally:
            parent.send("stop")
            proc.join(timeout=30)
    print(f"{args.requests} requests per cell; latency in ms")
    print(f"{'target':<16}{'conc':>5}{'p50':>9}{'p95':>9}{'req/s':>9}   ratio")
    for c in levels:
        for name in targets:
            p50, p95, rps = rows[name, c]
            ratio = ""
            if name == "guard":
                ratio = f"req/s x{rps / rows['guard-unbatched', c][2]:.2f} vs unbatched"
            elif name == "gateway":
                ratio = f"req/s x{rps / rows['generator', c][2]:.2f} vs generator alone"
            print(f"{name:<16}{c:>5}{p50:>9.1f}{p95:>9.1f}{rps:>9.1f}   {ratio}")


if __name__ == "__main__":
    main()
