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
            print(f"[guardsmith] {description}: {progress_line(done, total, now - start)}", file=sys.stderr, flush=True)
    elapsed = time.monotonic() - start
    rate = f", {done / elapsed:.3g}/s" if elapsed > 0 and done else ""
    print(f"[guardsmith] {description}: done, {done} items in {elapsed:.1f} s{rate}", file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``3725`` -> ``1h02m``; under a minute ``12s``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress_line(done: int, total: int | None, elapsed: float, unit: str = "") -> str:
    """``done`` of ``total`` with the share, the rate so far and the ETA at that rate, e.g.
    ``40/200 (20%), 3.1/s, ETA 52s``; without a total only the count and the rate."""
    rate = done / elapsed if elapsed > 0 else 0.0
    per = f"{rate:.3g} {unit}/s" if unit else f"{rate:.3g}/s"
    if not total:
        return f"{done} {unit}".rstrip() + f", {per}"
    eta = f", ETA {duration((total - done) / rate)}" if rate > 0 and done < total else ""
    return f"{done}/{total} ({done / total:.0%}), {per}{eta}"
