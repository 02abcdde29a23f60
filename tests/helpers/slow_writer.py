"""Write an interactions table slowly, part after part, until killed (atomic-commit tests).

Usage: python slow_writer.py URI ROWS_PER_PART SLEEP_S [MAX_PARTS]

Prints ``PART <n> <path>`` (flushed) after each completed part so the test knows a partial
table exists before it sends SIGKILL. If never killed, it commits after MAX_PARTS parts.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from guardsmith.storage import TableWriter  # noqa: E402
from helpers.data import interactions  # noqa: E402


def main() -> None:
    uri, rows_per_part, sleep_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    max_parts = int(sys.argv[4]) if len(sys.argv) > 4 else 10_000
    with TableWriter(uri, "interactions", rows_per_part=rows_per_part) as writer:
        for i in range(max_parts):
            writer.write(interactions(rows_per_part, start=i * rows_per_part, tag="v2"))
            print(f"PART {writer.parts_written} {writer._written[-1]}", flush=True)
            time.sleep(sleep_s)


if __name__ == "__main__":
    main()
