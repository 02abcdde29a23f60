"""Run the distill stage in a subprocess so a test can SIGKILL it mid-run (resume test).

Usage: python distill_victim.py INPUT OUTPUT TEACHER_SPEC SHARD_SIZE

Runs with ``concurrency=1`` and ``keep_shards=True``; the test slows the teacher (offline
server ``delay_s``) and kills this process once some shards are committed.
"""
from __future__ import annotations

import sys

from guardsmith.stages.distill import DistillConfig, run


def main() -> None:
    src, out, teacher, shard_size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    run(DistillConfig(input=src, output=out, teacher=teacher, shard_size=shard_size, concurrency=1,
                      max_retries=0, keep_shards=True))


if __name__ == "__main__":
    main()
