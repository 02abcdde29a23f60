"""Progress lines for long work in pod logs (no terminal): count, share, rate and ETA."""
from __future__ import annotations

import itertools

from guardsmith import progress


def test_lines_carry_rate_and_eta(monkeypatch, capsys):
    clock = itertools.count(0.0, 0.5)  # every call to the clock advances half a second
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    assert list(progress.track(range(40), "distilling shards", every_s=5.0)) == list(range(40))
    lines = capsys.readouterr().err.strip().splitlines()
    # the clock reads 0.0 at the start, then 0.5 s later after each item: 10 items per 5 s
    assert lines[0] == "[guardsmith] distilling shards: 10/40 (25%), 2/s, ETA 15s"
    assert lines[-1] == "[guardsmith] distilling shards: done, 40 items in 20.5 s, 1.95/s"


def test_durations_and_unknown_totals():
    assert [progress.duration(s) for s in (0, 12.4, 75, 3725)] == ["0s", "12s", "1m15s", "1h02m"]
    assert progress.progress_line(30, None, 10.0, "rows") == "30 rows, 3 rows/s"
    assert progress.progress_line(50, 50, 10.0) == "50/50 (100%), 5/s"  # no ETA once done
