"""Throughput of the OpenAI-protocol client against a fast local endpoint, side by side in one run.

An ``aiohttp.web`` chat-completions server on uvloop in a child process (so its CPU does not
share the client's interpreter) answers every request after a fixed delay (default 100 ms) with a small
fixed reply. For each concurrency the same number of requests goes through

- ``guardsmith``: ``OpenAIBackend.generate`` (the client distill, filter and the guard runner use;
  its event loop is uvloop's);
- ``gs-asyncio``: the same on asyncio's own event loop (what the client ran on before uvloop);
- ``aiohttp``: a bare loop, one ``ClientSession`` and a semaphore (the reference of the issue);
- ``aiohttp-uv``: the same bare loop on uvloop;
- ``openai-sdk``: the official ``AsyncOpenAI`` client with a semaphore;

and ``ideal`` is concurrency / delay. Printed: requests/s, client CPU per request, and the
ratios to ideal and to the bare aiohttp loop. The machine is shared and noisy: read the ratios.

    .venv/bin/python benchmarks/client_throughput.py                      # 2,000 requests, 16/64/256
    .venv/bin/python benchmarks/client_throughput.py --requests 500 --concurrency 16,256

``serve_in_child`` is also used by ``benchmarks/distill_busy.py`` (log-normal delays).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import time
import urllib.request
from collections.abc import Callable
from typing import Any

REPLY = {"id": "x", "object": "chat.completion", "model": "m",
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello there"}, "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}
MESSAGES = [{"role": "user", "content": "say hi"}]


# --------------------------------------------------------------------------- the endpoint

def _serve(port: int, delay_s: float, sigma: float, seed: int, reply: bytes) -> None:
    """Child process: an aiohttp.web chat-completions endpoint; delay fixed (sigma 0) or log-normal
    with median ``delay_s``. ``GET /stats`` gives busy seconds (sum of request delays), count and
    the first start / last end; ``POST /reset`` clears them."""
    import math
    import random

    from aiohttp import web

    rng = random.Random(seed)
    state: dict[str, Any] = {}

    def reset() -> None:
        state.update(busy=0.0, count=0, first=None, last=None, in_flight=0, max_in_flight=0)

    reset()

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        delay = delay_s if sigma == 0 else rng.lognormvariate(math.log(delay_s), sigma)
        start = time.monotonic()
        state["first"] = start if state["first"] is None else state["first"]
        state["in_flight"] += 1
        state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
        await asyncio.sleep(delay)
        state["in_flight"] -= 1
        end = time.monotonic()
        state["busy"] += end - start
        state["count"] += 1
        state["last"] = end
        return web.Response(body=reply, content_type="application/json")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({k: v for k, v in state.items()})

    async def do_reset(request: web.Request) -> web.Response:
        reset()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", do_reset)
    import uvloop

    web.run_app(app, host="127.0.0.1", port=port, backlog=4096, print=None, access_log=None,
                handle_signals=True, keepalive_timeout=75, loop=uvloop.new_event_loop())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class serve_in_child:
    """Context manager: the endpoint in a child process; ``.url`` ends in ``/v1``; ``.stats()``, ``.reset()``."""

    def __init__(self, delay_s: float = 0.1, sigma: float = 0.0, seed: int = 0, reply: dict | None = None) -> None:
        self.port = _free_port()
        body = json.dumps(reply or REPLY).encode()
        self.proc = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(self.port, delay_s, sigma, seed, body), daemon=True)
        self.root = f"http://127.0.0.1:{self.port}"
        self.url = self.root + "/v1"

    def __enter__(self) -> serve_in_child:
        self.proc.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                self.stats()
                return self
            except OSError:
                if time.monotonic() > deadline or not self.proc.is_alive():
                    raise RuntimeError("the benchmark endpoint did not start") from None
                time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.join(10)

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.root + "/stats", timeout=10) as resp:
            return json.loads(resp.read())

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(self.root + "/reset", data=b"", method="POST"), timeout=10).read()


# --------------------------------------------------------------------------- the clients

def run_guardsmith(url: str, n: int, concurrency: int) -> None:
    from guardsmith.inference import OpenAIBackend

    with OpenAIBackend(url, "m", api_key_env="GUARDSMITH_BENCH_NO_KEY", max_concurrency=concurrency, max_retries=0,
                       progress_min_requests=10**9) as backend:
        out = backend.generate([MESSAGES] * n, max_tokens=8)
    assert len(out) == n and out[-1][0].text == "hello there"


def run_guardsmith_asyncio(url: str, n: int, concurrency: int) -> None:
    import guardsmith.inference.openai_backend as client

    chosen = client.new_event_loop
    client.new_event_loop = asyncio.new_event_loop
    try:
        run_guardsmith(url, n, concurrency)
    finally:
        client.new_event_loop = chosen


def run_aiohttp(url: str, n: int, concurrency: int, uv: bool = False) -> None:
    import aiohttp

    async def main() -> None:
        sem = asyncio.Semaphore(concurrency)
        body = {"model": "m", "messages": MESSAGES, "max_tokens": 8}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
            async def one() -> str:
                async with sem:
                    async with session.post(url + "/chat/completions", json=body) as resp:
                        return (await resp.json())["choices"][0]["message"]["content"]
            out = await asyncio.gather(*(one() for _ in range(n)))
        assert out[-1] == "hello there"

    if uv:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def run_openai_sdk(url: str, n: int, concurrency: int) -> None:
    import httpx
    import openai

    async def main() -> None:
        sem = asyncio.Semaphore(concurrency)
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0,
                                      http_client=httpx.AsyncClient(limits=limits)) as client:
            async def one() -> str:
                async with sem:
                    reply = await client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=8)
                    return reply.choices[0].message.content
            out = await asyncio.gather(*(one() for _ in range(n)))
        assert out[-1] == "hello there"

    asyncio.run(main())


CLIENTS: dict[str, Callable[[str, int, int], None]] = {
    "guardsmith": run_guardsmith, "gs-asyncio": run_guardsmith_asyncio, "aiohttp": run_aiohttp,
    "aiohttp-uv": lambda url, n, c: run_aiohttp(url, n, c, uv=True), "openai-sdk": run_openai_sdk}


def measure(fn: Callable[[str, int, int], None], url: str, n: int, concurrency: int) -> tuple[float, float]:
    """(requests/s, client CPU ms per request) of one run."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(url, n, concurrency)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return n / wall, 1000 * cpu / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--delay", type=float, default=0.1, help="server delay per request, seconds")
    parser.add_argument("--concurrency", default="16,64,256")
    parser.add_argument("--clients", default=",".join(CLIENTS))
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    names = [c for c in args.clients.split(",") if c]
    print(f"{args.requests} requests, server delay {args.delay * 1000:g} ms, endpoint: aiohttp.web in a child process")
    print(f"{'concurrency':>11} {'client':>11} {'req/s':>8} {'ideal':>7} {'of ideal':>8} {'of aiohttp':>10} {'CPU ms/req':>10}")
    with serve_in_child(args.delay) as server:
        for name in names:  # warm-up: imports, first connections
            CLIENTS[name](server.url, 20, 4)
        for c in levels:
            ideal = c / args.delay
            rates = {name: measure(CLIENTS[name], server.url, args.requests, c) for name in names}
            ref = rates.get("aiohttp", (None,))[0]
            for name, (rate, cpu) in rates.items():
                vs = f"{rate / ref:10.2f}" if ref else f"{'-':>10}"
                print(f"{c:>11} {name:>11} {rate:8.0f} {ideal:7.0f} {rate / ideal:8.2f} {vs} {cpu:10.2f}")


if __name__ == "__main__":
    main()
