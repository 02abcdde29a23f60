"""The one error type users see: a one-line cause, printed by the CLI without a traceback."""
from __future__ import annotations

import re
from typing import Any


class GuardsmithError(Exception):
    """An error the user can cause and fix (bad input, bad config, unreachable service)."""


class DataError(GuardsmithError):
    """Bad data in a file: names the file, column, row index and offending value."""

    def __init__(
        self,
        problem: str,
        *,
        file: str | None = None,
        column: str | None = None,
        row: int | None = None,
        value: Any = None,
        show_value: bool = True,
    ) -> None:
        self.problem = problem
        self.file = file
        self.column = column
        self.row = row
        self.value = value
        where = []
        if file is not None:
            where.append(f"file {file}")
        if column is not None:
            where.append(f"column {column!r}")
        if row is not None:
            where.append(f"row {row}")
        msg = problem
        if where:
            msg = f"{', '.join(where)}: {problem}"
        if show_value and (value is not None or row is not None):
            shown = repr(value)
            if len(shown) > 120:
                shown = shown[:117] + "..."
            msg += f" (value {shown})"
        super().__init__(msg)


_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/@\s'\"]+)@")
_SECRET_QUERY = re.compile(r"(?i)([?&](?:api[_-]?key|key|token|access[_-]?token|password|secret|sig|signature)=)[^&\s'\"]+")


def redact(text: Any) -> str:
    """``text`` with credentials inside URLs hidden: ``http://user:pass@host`` -> ``http://***@host``
    and secret-looking query values (``?api_key=...``, ``token=``, ``sig=``) -> ``***``. Every URL
    or spec guardsmith prints (errors, warnings, progress, results) goes through this."""
    out = _CREDENTIALS.sub(lambda m: f"{m.group('scheme')}***@", str(text))
    return _SECRET_QUERY.sub(lambda m: f"{m.group(1)}***", out)
