"""Progress output for long work: a rich bar on a terminal, periodic log lines otherwise."""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def track(items: Iterable[T], description: str, total: int | None = None, every_s: float = 10.0) -> Iterator[T]:
    """Yield ``items`` while reporting progress on stderr.

    On a terminal this is a rich progress bar; in pods and CI logs (no tty) it prints one line
    at most every ``every_s`` seconds plus a final line, so logs stay readable.
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if sys.stderr.isatty():
        from rich.progress import track as rich_track

        yield from rich_track(items, description=description, total=total, transient=False)
        return
    start = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= every_s:
            last = now
            of = f"/{total}" if total else ""
            print(f"[guardsmith] {description}: {done}{of} ({now - start:.1f} s)", file=sys.stderr, flush=True)
    print(f"[guardsmith] {description}: done, {done} items in {time.monotonic() - start:.1f} s", file=sys.stderr, flush=True)
