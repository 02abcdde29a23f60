"""Near-boundary interactions collected by the gateway, written as committed ``interactions`` tables.

Rows are buffered in memory and flushed every ``flush_rows`` rows or ``flush_seconds`` seconds,
each flush a new committed table ``<uri>/part-<UTC time>-<sequence>`` (``guardsmith.storage``
commit manifest, the ``interactions`` schema of ``guardsmith.tables``), so ``guardsmith mine``
(or any reader, ``storage.read_table(part, "interactions")``) reads each part as it lands. Labels
are left null (unknown); the extra columns ``t``, ``tau``, ``filtered``, ``gateway_model``,
``request_id`` and ``created`` record what the gateway saw and did.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from guardsmith.errors import GuardsmithError, redact
from guardsmith.scoring import DEFAULT_TAXONOMY

log = logging.getLogger("guardsmith.serving")


def part_uri(uri: str, seq: int) -> str:
    """The table of one flush: ``<uri>/part-<YYYYmmddTHHMMSSffffff>-<seq>``."""
    from guardsmith import storage

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    return storage.join(uri, f"part-{stamp}-{seq:06d}")


class InteractionSink:
    """Buffer interaction rows; `flush()` writes them as one new committed table (thread-safe)."""

    def __init__(self, uri: str, *, flush_rows: int = 100, flush_seconds: float = 60.0) -> None:
        if flush_rows < 1 or not flush_seconds > 0:
            raise GuardsmithError("flush_rows must be >= 1 and flush_seconds > 0")
        self.uri = uri
        self.flush_rows = int(flush_rows)
        self.flush_seconds = float(flush_seconds)
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._seq = itertools.count()
        self.written: list[str] = []
        self.last_flush = time.monotonic()

    def add(self, row: Mapping[str, Any]) -> bool:
        """Buffer one row; True when the buffer has reached `flush_rows` (the caller flushes)."""
        with self._lock:
            self._rows.append(dict(row))
            return len(self._rows) >= self.flush_rows

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._rows)

    def due(self) -> bool:
        """True when rows wait and `flush_seconds` have passed since the last flush."""
        return self.pending > 0 and time.monotonic() - self.last_flush >= self.flush_seconds

    def flush(self) -> str | None:
        """Write the buffered rows as one committed table; its URI, or None when nothing waited.
        A failed write keeps the rows for the next flush and logs one line."""
        import pyarrow as pa

        from guardsmith import storage
        from guardsmith.tables import SCHEMAS

        with self._write_lock:
            with self._lock:
                rows, self._rows = self._rows, []
            self.last_flush = time.monotonic()
            if not rows:
                return None
            schema = SCHEMAS["interactions"]
            extra = [pa.field("t", pa.float64()), pa.field("tau", pa.float64()), pa.field("filtered", pa.bool_()),
                     pa.field("gateway_model", pa.string()), pa.field("request_id", pa.string()),
                     pa.field("created", pa.string())]
            full = pa.schema([*schema, *extra])
            table = pa.Table.from_pylist([{f.name: r.get(f.name) for f in full} for r in rows], schema=full)
            target = part_uri(self.uri, next(self._seq))
            try:
                storage.write_table(target, table, "interactions")
            except Exception as exc:  # noqa: BLE001 - the gateway keeps serving; rows are retried
                with self._lock:
                    self._rows[:0] = rows
                log.error("could not write %d near-boundary rows to %s: %s", len(rows), redact(target),
                          str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                return None
            self.written.append(target)
            log.info("wrote %d near-boundary interactions to %s", len(rows), redact(target))
            return target


def interaction_row(*, prompt: str, response: str | None, t: float, tau: float, filtered: bool, model: str,
                    request_id: str, taxonomy: str | None, policy: str | None) -> dict[str, Any]:
    """One near-boundary interaction in the ``interactions`` schema (labels unknown) plus the extras."""
    return {
        "id": f"gateway-{uuid.uuid4().hex}", "source": "gateway",
        "taxonomy": taxonomy or ("custom" if policy else DEFAULT_TAXONOMY), "policy": policy,
        "prompt": prompt, "response": response, "prompt_harm": None, "response_harm": None,
        "response_refusal": None, "categories": [], "t": float(t), "tau": float(tau), "filtered": bool(filtered),
        "gateway_model": model, "request_id": request_id, "created": datetime.now(timezone.utc).isoformat(),
    }
