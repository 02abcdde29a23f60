"""A small asyncio micro-batcher: concurrent requests share one model call.

Requests submitted with the same *key* (e.g. the same policy, or the same sampling settings) wait
at most ``max_wait_ms`` for company, up to ``max_batch`` items, then the batch runs as one call of
``run(key, items) -> results`` in a worker thread (one batch at a time: the model is one device).
A batch whose call raises fails each of its requests with that exception.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from guardsmith.errors import GuardsmithError


class Batcher:
    """Collect items per key into batches of at most `max_batch`, waiting at most `max_wait_ms`."""

    def __init__(self, run: Callable[[Hashable, list[Any]], Sequence[Any]], *, max_batch: int = 16,
                 max_wait_ms: float = 5.0, on_batch: Callable[[int, float], None] | None = None) -> None:
        if max_batch < 1:
            raise GuardsmithError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_ms < 0:
            raise GuardsmithError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.run = run
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self.on_batch = on_batch
        self._pending: dict[Hashable, list[tuple[Any, asyncio.Future]]] = {}
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._lock: asyncio.Lock | None = None
        self.batches = 0
        self.items = 0

    async def submit(self, key: Hashable, item: Any) -> Any:
        """Queue one item; its result once its batch has run."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        group = self._pending.setdefault(key, [])
        group.append((item, future))
        if len(group) >= self.max_batch:
            self._launch(key)
        elif key not in self._timers:
            self._timers[key] = loop.call_later(self.max_wait_s, self._launch, key)
        return await future

    def _launch(self, key: Hashable) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        group = self._pending.pop(key, [])
        if group:
            asyncio.ensure_future(self._execute(key, group))

    async def _execute(self, key: Hashable, group: list[tuple[Any, asyncio.Future]]) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one model call at a time; later batches queue (and grow) meanwhile
            start = time.perf_counter()
            try:
                results = await asyncio.to_thread(self.run, key, [item for item, _ in group])
                if len(results) != len(group):
                    raise GuardsmithError(f"a batch of {len(group)} returned {len(results)} results")
            except BaseException as exc:  # noqa: BLE001 - every waiter gets the failure
                for _, fut in group:
                    if not fut.done():
                        fut.set_exception(exc)
                return
            finally:
                self.batches += 1
                self.items += len(group)
                if self.on_batch is not None:
                    self.on_batch(len(group), time.perf_counter() - start)
        for (_, fut), result in zip(group, results):
            if not fut.done():
                fut.set_result(result)
