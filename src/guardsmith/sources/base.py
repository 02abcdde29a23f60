"""Shared machinery for the source adapters: streaming file readers, strict value parsers,
the adapter base class and drop accounting.

Every reader yields ``(row_index, dict)`` pairs, where the row index counts records from 0 in
file order (data rows for CSV, non-blank lines for JSON lines, array items for a JSON array,
rows for Parquet). The file format comes from the file name (``.parquet``, ``.jsonl``,
``.json``, ``.csv``, each optionally ``.gz``); gzip is also recognised by its magic bytes.
"""
from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import inspect
import io
import json
import math
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, ClassVar

from guardsmith.errors import DataError, GuardsmithError
from guardsmith.vocabulary import HARM_LABELS, REFUSAL_LABELS

PARQUET_BATCH_ROWS = 2048
HARM = {w: w for w in HARM_LABELS}
"""Label map of sources whose harm words are already ours (``harmful``/``unharmful``)."""
REFUSAL = {w: w for w in REFUSAL_LABELS}
"""Label map of sources whose refusal words are already ours (``refusal``/``compliance``)."""


# --------------------------------------------------------------------------------------------
# accounting


@dataclass
class Tally:
    """Rows dropped and fields adjusted while reading, each keyed by a human-readable reason."""

    dropped: Counter = field(default_factory=Counter)
    adjusted: Counter = field(default_factory=Counter)
    #: facts about kept rows worth reporting that are not changes (e.g. "unharmful: all flags known 0")
    notes: Counter = field(default_factory=Counter)
    #: rows read in a way the user should look at (e.g. "no label column mapped")
    warnings: Counter = field(default_factory=Counter)

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1

    def adjust(self, reason: str) -> None:
        self.adjusted[reason] += 1

    def note(self, reason: str) -> None:
        self.notes[reason] += 1

    def warn(self, reason: str) -> None:
        self.warnings[reason] += 1


@dataclass
class RowContext:
    """Where a raw row came from: used for error messages and derived ids."""

    source: str
    split: str
    file: str
    row: int
    tally: Tally
    file_tag: str | None = None  # set when one import reads several files

    def error(self, problem: str, column: str | None = None, value: Any = None) -> DataError:
        return DataError(problem, file=self.file, column=column, row=self.row, value=value)

    def derived_id(self, suffix: str = "") -> str:
        """Stable id from source, split, (file tag) and row index, for sources without ids."""
        parts = [self.source, self.split]
        if self.file_tag:
            parts.append(self.file_tag)
        parts.append(str(self.row))
        return ":".join(parts) + suffix


# --------------------------------------------------------------------------------------------
# strict value parsers


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _absent(value: Any, nullable: bool, problem: str, name: str, ctx: RowContext) -> bool:
    """True when ``value`` is missing and may be; a missing value that may not be is a DataError."""
    if not _missing(value):
        return False
    if nullable:
        return True
    raise ctx.error(problem, name, value)


def _check_text(value: Any, what: str, name: str, ctx: RowContext) -> str:
    if not isinstance(value, str):
        raise ctx.error(f"expected {what}, found {type(value).__name__}", name, value)
    return value


def column(rec: Mapping[str, Any], name: str, ctx: RowContext, *, optional: bool = False) -> Any:
    """The value of ``name``; a missing column is a DataError naming file and column, unless
    ``optional`` (a key the source may leave out, e.g. an unknown flag): then None."""
    try:
        return rec[name]
    except KeyError:
        if optional:
            return None
        raise DataError("missing column", file=ctx.file, column=name, row=ctx.row, show_value=False) from None


def text(
    rec: Mapping[str, Any], name: str, ctx: RowContext, *, nullable: bool = False, optional: bool = False
) -> str | None:
    """A text value; None (or NaN) only when ``nullable``. Non-text values are an error.
    ``optional``: an absent column reads as None (implies ``nullable``)."""
    value = column(rec, name, ctx, optional=optional)
    nullable = nullable or optional
    if _absent(value, nullable, "missing value", name, ctx):
        return None
    return _check_text(value, "text", name, ctx)


def prompt_text(rec: Mapping[str, Any], name: str, ctx: RowContext) -> str | None:
    """The prompt text, or None (row dropped, reason counted) when it is null or blank."""
    return nonblank(text(rec, name, ctx, nullable=True), name, ctx)


def nonblank(value: str | None, name: str, ctx: RowContext) -> str | None:
    """``value``, or None (row dropped as ``empty <name>``) when it is null or blank."""
    if value is None or not value.strip():
        ctx.tally.drop(f"empty {name}")
        return None
    return value


def own_id(rec: Mapping[str, Any], name: str, ctx: RowContext) -> str:
    """The source's own id as text (ints accepted); a null or blank id falls back to a derived one."""
    value = column(rec, name, ctx)
    if isinstance(value, bool) or not (_missing(value) or isinstance(value, (str, int))):
        raise ctx.error("expected an id (text or integer)", name, value)
    if _missing(value) or not str(value).strip():
        ctx.tally.adjust(f"null {name}: derived id used")
        return ctx.derived_id()
    return str(value).strip()


def blank_to_none(value: str | None) -> str | None:
    """Empty or whitespace-only text counts as missing."""
    return None if value is None or not value.strip() else value


def label(
    rec: Mapping[str, Any],
    name: str,
    mapping: Mapping[str, str],
    ctx: RowContext,
    *,
    nullable: bool = False,
    empty_is_null: bool = False,
    optional: bool = False,
) -> str | None:
    """Map a label word through ``mapping`` (keys lower-case; matched after strip + lower-case).

    A word not in the mapping raises a DataError naming file, column, row and word. ``optional``:
    an absent column reads as None (implies ``nullable``).
    """
    value = column(rec, name, ctx, optional=optional)
    nullable = nullable or optional
    if isinstance(value, str) and empty_is_null and not value.strip():
        value = None
    if _absent(value, nullable, "missing label", name, ctx):
        return None
    key = _check_text(value, "a label word", name, ctx).strip().lower()
    if key not in mapping:
        known = ", ".join(repr(k) for k in mapping)
        raise ctx.error(f"unknown label word (expected one of {known})", name, value)
    return mapping[key]


def flag01(
    rec: Mapping[str, Any], name: str, ctx: RowContext, *, nullable: bool = False, optional: bool = False
) -> int | None:
    """A 0/1 flag: ints 0/1, floats 0.0/1.0, booleans, or the text "0"/"1" (CSV).

    Null, NaN and (text formats) the empty string are null, allowed only when ``nullable``.
    ``optional``: an absent key is null too (implies ``nullable``). Anything else is a DataError.
    """
    value = column(rec, name, ctx, optional=optional)
    nullable = nullable or optional
    if isinstance(value, str):
        stripped = value.strip()
        if stripped == "":
            value = None
        elif stripped in ("0", "1"):
            return int(stripped)
        else:
            raise ctx.error("expected 0 or 1", name, value)
    if _absent(value, nullable, "missing 0/1 value", name, ctx):
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    raise ctx.error("expected 0 or 1", name, value)


def boolean(rec: Mapping[str, Any], name: str, ctx: RowContext) -> bool:
    """A boolean: a bool, or the text "true"/"false" in any case (CSV). Anything else is an error."""
    value = column(rec, name, ctx)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ctx.error("expected a boolean (true/false)", name, value)


def make_record(
    *,
    id: str,
    source: str,
    taxonomy: str,
    prompt: str,
    response: str | None = None,
    policy: str | None = None,
    prompt_harm: str | None = None,
    response_harm: str | None = None,
    response_refusal: str | None = None,
    categories: Iterable[str] = (),
) -> dict[str, Any]:
    """An A.1 interaction record with the fields in schema order."""
    return {
        "id": id,
        "source": source,
        "taxonomy": taxonomy,
        "policy": policy,
        "prompt": prompt,
        "response": response,
        "prompt_harm": prompt_harm,
        "response_harm": response_harm,
        "response_refusal": response_refusal,
        "categories": list(categories),
    }


def harm_word(harmful: Any) -> str:
    """``harmful`` for a true flag, ``unharmful`` for a false one."""
    return "harmful" if harmful else "unharmful"


def map_categories(
    names: Iterable[str | None], mapping: Mapping[str, Sequence[str]] | None, ctx: RowContext, column_name: str
) -> list[str]:
    """A source's category names (blank ones skipped) as the row's taxonomy names.

    ``mapping`` (source name -> target names, matched after strip + lower-case) maps onto another
    taxonomy; a name it lacks is a DataError naming file, column, row and name. Without a mapping
    the names are kept as they are (the source's own vocabulary). Order kept, repeats removed.
    """
    out: list[str] = []
    for name in names:
        if name is None or not name.strip():
            continue
        if mapping is None:
            targets: Sequence[str] = (name.strip(),)
        else:
            key = name.strip().lower()
            if key not in mapping:
                raise ctx.error("unknown category (no mapping for it; see docs/data-sources.md)", column_name, name)
            targets = mapping[key]
        out += [t for t in targets if t not in out]
    return out


def pick_layout(rec: Mapping[str, Any], layouts: Mapping[str, Sequence[str]], ctx: RowContext) -> str:
    """The first layout whose required columns are all in ``rec`` (the file's header for CSV).

    None fits: a DataError naming the file and the columns each layout needs.
    """
    for name, needed in layouts.items():
        if all(c in rec for c in needed):
            return name
    wanted = "; ".join(f"{n}: {', '.join(cols)}" for n, cols in layouts.items())
    raise DataError(
        f"unrecognised layout (columns {', '.join(map(str, rec))}); expected one of: {wanted}",
        file=ctx.file, row=ctx.row, show_value=False,
    )


def policy_id(prefix: str, policy: str) -> str:
    """A short stable id for a free-text policy: ``prefix:<12 hex of sha256>``."""
    return f"{prefix}:{hashlib.sha256(policy.encode('utf-8')).hexdigest()[:12]}"


# --------------------------------------------------------------------------------------------
# file readers


def _open_raw(uri: str) -> IO[bytes]:
    from guardsmith.storage import open_input

    try:
        return open_input(uri)
    except GuardsmithError:
        raise
    except FileNotFoundError:
        raise GuardsmithError(f"input file not found: {uri}") from None
    except OSError as exc:
        raise GuardsmithError(f"cannot open {uri}: {exc}") from None


class _Prefixed(io.RawIOBase):
    """A read-only stream that replays ``head`` before the rest of ``inner``."""

    def __init__(self, head: bytes, inner: IO[bytes]) -> None:
        self._head = head
        self._inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._inner.read(len(view))
        if not data:
            return 0
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            super().close()


def detect_format(uri: str, default: str) -> str:
    """File format from the name (``.gz`` stripped), else ``default``."""
    name = uri.split("?", 1)[0].lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for ext, fmt in ((".parquet", "parquet"), (".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json"), (".csv", "csv")):
        if name.endswith(ext):
            return fmt
    return default.removesuffix(".gz")


def _seekable(stream: Any) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, ValueError, OSError):
        return False


def open_source(uri: str, *, random_access: bool = False) -> IO[bytes]:
    """Open ``uri`` for reading as bytes, decompressing gzip; an empty file is a DataError.

    With ``random_access`` (Parquet) a seekable uncompressed input is returned as opened, so
    the Parquet reader can fetch only the row groups it needs.
    """
    raw = _open_raw(uri)
    head = raw.read(2)
    if not head:
        raw.close()
        raise DataError("file is empty", file=uri)
    if random_access and head != b"\x1f\x8b" and _seekable(raw):
        raw.seek(0)
        return raw
    stream: IO[bytes] = io.BufferedReader(_Prefixed(head, raw), buffer_size=1 << 16)  # type: ignore[arg-type]
    if head == b"\x1f\x8b":
        gz = gzip.GzipFile(fileobj=stream, mode="rb")
        stream = io.BufferedReader(_Prefixed(b"", gz), buffer_size=1 << 16)  # type: ignore[arg-type]
    return stream


def _compressed_error(uri: str, exc: BaseException) -> DataError:
    return DataError(f"cannot decompress gzip data: {exc}", file=uri)


DEFAULT_ENCODING = "utf-8"


def check_encoding(encoding: str) -> str:
    """The codec name of ``encoding`` (e.g. ``mac_roman``, ``cp1252``, ``latin-1``, ``utf-8``).

    Text is read line by line, so the encoding must write ``\\n`` as the byte 0x0A (ASCII-compatible:
    not UTF-16/32). An unknown or unsupported name is a GuardsmithError naming ``--encoding``.
    """
    try:
        name = codecs.lookup(encoding).name
    except (LookupError, TypeError):
        raise GuardsmithError(f"unknown text encoding {encoding!r} (--encoding); e.g. utf-8, cp1252, mac_roman, latin-1") from None
    try:
        ascii_compatible = "a,\n".encode(name) == b"a,\n"
    except (UnicodeError, LookupError):
        ascii_compatible = False
    if not ascii_compatible:
        raise GuardsmithError(f"text encoding {encoding!r} (--encoding) is not supported: only ASCII-compatible encodings are")
    return name


def _bad_text(uri: str, encoding: str, where: str, row: int | None, value: bytes) -> DataError:
    label = "UTF-8" if codecs.lookup(encoding).name == "utf-8" else encoding
    return DataError(
        f"not valid {label} text at {where}; if the file uses another encoding, pass it with --encoding "
        "(e.g. --encoding mac_roman, --encoding cp1252)",
        file=uri, row=row, value=value,
    )


def _raw_lines(stream: IO[bytes], size: int = 1 << 16) -> Iterator[bytes]:
    """Binary lines with universal line ends: ``\\r\\n``, ``\\n`` or a lone ``\\r`` (``bytes.splitlines``),
    each kept on its line; read in chunks, so a file with only ``\\r`` line ends is streamed too."""
    read = getattr(stream, "read1", stream.read)
    pending = b""
    while chunk := read(size):
        lines = (pending + chunk).splitlines(keepends=True)
        # the last piece may continue in the next chunk: no line end yet, or a \r whose \n follows
        pending = lines.pop() if not lines[-1].endswith(b"\n") else b""
        yield from lines
    if pending:
        yield pending


def _decoded_lines(stream: IO[bytes], uri: str, counter: list[int], encoding: str = DEFAULT_ENCODING) -> Iterator[str]:
    """Decode binary lines strictly in ``encoding``; a bad byte is a DataError with byte offset
    and line that names the ``--encoding`` flag. A leading BOM is dropped. Line ends are
    universal (``\\r\\n``, ``\\n``, a lone ``\\r`` as Excel's "CSV (Macintosh)" writes) and come out
    as ``\\n``, also inside quoted CSV fields.

    ``counter[0]`` must hold the index of the record being read (for the error's row).
    """
    offset = 0
    try:
        for lineno, raw in enumerate(_raw_lines(stream), start=1):
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                raise _bad_text(
                    uri, encoding, f"byte offset {offset + exc.start} (line {lineno})", counter[0],
                    raw[exc.start : exc.start + 4],
                ) from None
            if lineno == 1 and line.startswith("\ufeff"):
                line = line[1:]
            offset += len(raw)
            if line.endswith("\r\n"):
                line = line[:-2] + "\n"
            elif line.endswith("\r"):
                line = line[:-1] + "\n"
            yield line
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise _compressed_error(uri, exc) from None


def iter_jsonl(stream: IO[bytes], uri: str, encoding: str = DEFAULT_ENCODING) -> Iterator[tuple[int, dict[str, Any]]]:
    """JSON lines: one object per non-blank line."""
    counter = [0]
    for line in _decoded_lines(stream, uri, counter, encoding):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON: {exc.msg}", file=uri, row=counter[0], value=line[:80]) from None
        if not isinstance(obj, dict):
            raise DataError("expected a JSON object per line", file=uri, row=counter[0], value=obj)
        yield counter[0], obj
        counter[0] += 1


def iter_json(stream: IO[bytes], uri: str, encoding: str = DEFAULT_ENCODING) -> Iterator[tuple[int, dict[str, Any]]]:
    """JSON: a top-level array of objects (read whole), or JSON lines (streamed).

    The first non-whitespace byte decides: ``[`` is an array, anything else JSON lines.
    """
    buffered = stream if hasattr(stream, "peek") else io.BufferedReader(_Prefixed(b"", stream))  # type: ignore[arg-type]
    first = b""
    try:
        while True:
            chunk = buffered.peek(1)[:1]  # type: ignore[attr-defined]
            if not chunk:
                break
            if chunk in b" \t\r\n" or chunk == b"\xef":  # whitespace or a UTF-8 BOM byte
                if chunk == b"\xef":
                    if buffered.peek(3)[:3] != b"\xef\xbb\xbf":  # type: ignore[attr-defined]
                        first = chunk
                        break
                    buffered.read(3)
                    continue
                buffered.read(1)
                continue
            first = chunk
            break
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise _compressed_error(uri, exc) from None
    if first != b"[":
        yield from iter_jsonl(buffered, uri, encoding)  # type: ignore[arg-type]
        return
    try:
        data = buffered.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise _compressed_error(uri, exc) from None
    try:
        body = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise _bad_text(uri, encoding, f"byte offset {exc.start}", None, data[exc.start : exc.start + 4]) from None
    try:
        items = json.loads(body)
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON at line {exc.lineno}: {exc.msg}", file=uri) from None
    for index, obj in enumerate(items):
        if not isinstance(obj, dict):
            raise DataError("expected a JSON object per array item", file=uri, row=index, value=obj)
        yield index, obj


def iter_csv(stream: IO[bytes], uri: str, encoding: str = DEFAULT_ENCODING) -> Iterator[tuple[int, dict[str, Any]]]:
    """CSV with a header row; every value is text (empty fields are the empty string).

    LF, CRLF or CR line ends (a quoted line end comes out as ``\\n``), quoted fields with newlines,
    a BOM; extra columns are kept (adapters read the ones they need)."""
    csv.field_size_limit(2**31 - 1)
    counter = [0]
    reader = csv.reader(_decoded_lines(stream, uri, counter, encoding))
    try:
        header = next(reader)
    except StopIteration:
        raise DataError("file is empty", file=uri) from None
    except csv.Error as exc:
        raise DataError(f"not valid CSV: {exc}", file=uri, row=0) from None
    header = [h.strip() for h in header]
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(f"not valid CSV: {exc}", file=uri, row=counter[0]) from None
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        if len(fields) != len(header):
            raise DataError(
                f"expected {len(header)} fields, found {len(fields)}", file=uri, row=counter[0], show_value=False
            )
        yield counter[0], dict(zip(header, fields))
        counter[0] += 1


def iter_parquet(stream: IO[bytes], uri: str, encoding: str = DEFAULT_ENCODING) -> Iterator[tuple[int, dict[str, Any]]]:
    """Parquet, streamed in record batches of ``PARQUET_BATCH_ROWS`` rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source: Any = stream
    if not _seekable(stream):
        try:
            source = pa.BufferReader(stream.read())
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise _compressed_error(uri, exc) from None
    try:
        parquet = pq.ParquetFile(source)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"not a readable Parquet file: {exc}", file=uri) from None
    index = 0
    try:
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            try:
                rows = batch.to_pylist()
            except UnicodeDecodeError as exc:
                raise DataError(f"not valid UTF-8 text in rows {index}..{index + batch.num_rows - 1}: {exc.reason}", file=uri) from None
            for rec in rows:
                yield index, rec
                index += 1
    except pa.ArrowException as exc:
        raise DataError(f"cannot read Parquet data near row {index}: {exc}", file=uri) from None


def iter_file(uri: str, default_format: str, encoding: str = DEFAULT_ENCODING) -> Iterator[tuple[int, dict[str, Any]]]:
    """Stream ``(row_index, record)`` from a local, ``file://`` or ``s3://`` file.

    ``encoding`` applies to the text formats (CSV, JSON, JSON lines; Parquet text is UTF-8 by
    definition). A file with no records is a DataError.
    """
    fmt = detect_format(uri, default_format)
    encoding = check_encoding(encoding)
    readers = {"parquet": iter_parquet, "json": iter_json, "jsonl": iter_jsonl, "csv": iter_csv}
    stream = open_source(uri, random_access=fmt == "parquet")
    any_rows = False
    try:
        for item in readers[fmt](stream, uri, encoding):
            any_rows = True
            yield item
    finally:
        stream.close()
    if not any_rows:
        raise DataError("file has no rows", file=uri)


# --------------------------------------------------------------------------------------------
# adapter base class


class SourceAdapter:
    """Maps one public data set's own layout onto the A.1 interaction record.

    Subclasses describe the data set in their docstring, set the class attributes and implement
    :meth:`convert`, which turns one raw row into zero or more records (zero: the row is
    dropped, with the reason recorded in the tally; :meth:`record` builds a record).
    """

    name: ClassVar[str]
    file_format: ClassVar[str]  # the format the source ships: parquet, json, jsonl, csv, jsonl.gz
    #: the taxonomy label written to records (or a prefix for custom ones); ``wildguard`` for
    #: benchmarks without a taxonomy of their own, so a guard prompt can be rendered for them
    taxonomy: ClassVar[str] = "wildguard"
    hf_dataset: ClassVar[str]
    #: split -> (hub config or None, hub split or None = the only split of the config)
    hf_splits: ClassVar[Mapping[str, tuple[str | None, str | None]]]
    #: the files a split ships as (for documentation and error hints)
    files: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    #: split -> hub dataset id, for splits published in another hub repository than `hf_dataset`
    hf_repos: ClassVar[Mapping[str, str]] = {}
    #: extra accepted names -> split (besides the hub's ``config/split`` names, added automatically)
    aliases: ClassVar[Mapping[str, str]] = {}
    #: splits with no copy on the hub (files only; their `hf_splits` entry is (None, None))
    no_hub: ClassVar[tuple[str, ...]] = ()

    @property
    def splits(self) -> tuple[str, ...]:
        """The source's split names (those of `hf_splits`, in its order)."""
        return tuple(self.hf_splits)

    def hub_names(self, split: str) -> tuple[str, ...]:
        """The hub's names of ``split``: ``config/split`` (``default`` when the hub has no named
        config), and the config alone when the split is the config's only one."""
        config, hf_split = self.hf_splits[split]
        names: list[str] = []
        if split in self.no_hub:
            return ()
        if hf_split is not None:
            names.append(f"{config or 'default'}/{hf_split}")
        elif config is not None:
            names.append(config)
        return tuple(n for n in names if n != split)

    @property
    def split_names(self) -> dict[str, str]:
        """Every accepted split name -> the source's split: its own, the hub's, and `aliases`."""
        names = {s: s for s in self.splits}
        for split in self.splits:
            for alias in self.hub_names(split):
                names.setdefault(alias, split)
        for alias, split in self.aliases.items():
            names.setdefault(alias, split)
        return names

    def resolve_split(self, split: str) -> str:
        """The source's own name of ``split`` (given as its own, the hub's ``config/split`` or an
        alias); an unknown name is a GuardsmithError listing the accepted ones."""
        names = self.split_names
        key = split.strip()
        if key not in names:
            shown = ", ".join(
                s + (f" (or {', '.join(a for a, t in names.items() if t == s and a != s)})" if len(
                    [a for a, t in names.items() if t == s]) > 1 else "")
                for s in self.splits
            )
            raise GuardsmithError(f"source {self.name!r} has no split {split!r}; choose one of: {shown}")
        return names[key]

    def help_line(self) -> str:
        """One line for ``--help``: the name and each split with its hub names."""
        parts = []
        for split in self.splits:
            hub = self.hub_names(split)
            if split in self.hf_repos:
                hub = (f"{self.hf_repos[split]}" + (f" {', '.join(hub)}" if hub else ""),)
            parts.append(split + (f" (hub: {', '.join(hub)})" if hub else " (files only)" if split in self.no_hub else ""))
        return f"{self.name}: {'; '.join(parts)}"

    @property
    def description(self) -> str:
        """One line on the data set: the adapter class's docstring."""
        return inspect.getdoc(type(self)) or self.name

    def check_split(self, split: str) -> str:
        """The source's own split name for ``split`` (see :meth:`resolve_split`)."""
        return self.resolve_split(split)

    def convert(self, rec: Mapping[str, Any], ctx: RowContext) -> Iterable[dict[str, Any]]:
        raise NotImplementedError

    def record(self, ctx: RowContext, prompt: str, *, id: str | None = None, taxonomy: str | None = None,
               **fields: Any) -> dict[str, Any]:
        """This source's record of a row: the id defaults to the derived one, the taxonomy to the
        source's; `fields` are the other :func:`make_record` fields."""
        return make_record(id=ctx.derived_id() if id is None else id, source=self.name,
                           taxonomy=taxonomy or self.taxonomy, prompt=prompt, **fields)

    def _convert_all(
        self, rows: Iterable[tuple[int, Mapping[str, Any]]], split: str, file: str, tally: Tally, file_tag: str | None
    ) -> Iterator[dict[str, Any]]:
        for index, rec in rows:
            ctx = RowContext(self.name, split, file, index, tally, file_tag)
            for out in self.convert(rec, ctx):
                yield _finish(out, ctx)

    def read(
        self, uri: str | Sequence[str], split: str, tally: Tally | None = None, *, encoding: str = DEFAULT_ENCODING
    ) -> Iterator[dict[str, Any]]:
        """Stream records from one or more files of ``split`` (local path, ``file://``, ``s3://``).

        ``split`` may be the hub's name (see :meth:`resolve_split`); ``encoding`` is that of the
        text formats. Dropped rows and adjusted fields are counted in ``tally``. Ids are made
        unique: a source id seen before in this read gets a ``~N`` suffix (counted as adjusted).
        """
        split = self.check_split(split)
        check_encoding(encoding)
        tally = tally if tally is not None else Tally()
        uris = [uri] if isinstance(uri, str) else list(uri)
        if not uris:
            raise GuardsmithError(f"no input file given for source {self.name!r}")
        tags = _file_tags(uris) if len(uris) > 1 else [None]
        seen: dict[str, int] = {}
        for one, tag in zip(uris, tags):
            for out in self._convert_all(iter_file(one, self.file_format, encoding), split, one, tally, tag):
                yield _unique(out, seen, tally)

    def read_hf(
        self, split: str, tally: Tally | None = None, repo: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Stream records of ``split`` from the Hugging Face hub through ``datasets.load_dataset``."""
        split = self.check_split(split)
        tally = tally if tally is not None else Tally()
        repo = repo or self.hf_repos.get(split, self.hf_dataset)
        if split in self.no_hub:
            raise GuardsmithError(
                f"source {self.name!r} split {split!r} has no copy on the Hugging Face hub; download "
                f"{', '.join(self.files.get(split, ())) or 'the file'} and pass its path with --from"
            )
        config, hf_split = self.hf_splits[split]
        try:
            import datasets  # noqa: PLC0415 (lazy: heavy, optional)
        except ImportError:
            raise GuardsmithError(
                "reading from the Hugging Face hub needs the 'datasets' package (pip install 'guardsmith[train]')"
            ) from None
        where = f"hf://{repo}" + (f"/{config}" if config else "") + f"[{hf_split or 'only split'}]"
        hint = (
            f"could not load {where} from the Hugging Face hub (offline, gated without HF_TOKEN, or renamed?); "
            f"download the file ({', '.join(self.files.get(split, ())) or 'see docs/data-sources.md'}) and pass its path"
        )
        try:
            loaded = datasets.load_dataset(repo, config, split=hf_split, streaming=True)
            if hf_split is None:
                names = list(loaded.keys())
                if len(names) != 1:
                    raise GuardsmithError(f"{where}: expected one split, found {names}")
                loaded = loaded[names[0]]
        except GuardsmithError:
            raise
        except Exception as exc:  # noqa: BLE001 (network / auth / hub errors of any kind)
            raise GuardsmithError(f"{hint}: {type(exc).__name__}: {exc}") from None
        seen: dict[str, int] = {}

        def rows() -> Iterator[tuple[int, Mapping[str, Any]]]:
            try:
                yield from enumerate(loaded)
            except GuardsmithError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise GuardsmithError(f"{hint}: {type(exc).__name__}: {exc}") from None

        any_rows = False
        for out in self._convert_all(rows(), split, where, tally, None):
            any_rows = True
            yield _unique(out, seen, tally)
        if not any_rows and not tally.dropped:
            raise DataError("no rows", file=where)


def _file_tags(uris: Sequence[str]) -> list[str]:
    """Short per-file tags (the file stem, else the position) for derived ids."""
    stems = []
    for uri in uris:
        base = uri.rstrip("/").rsplit("/", 1)[-1]
        stems.append(base.split(".", 1)[0] or "file")
    if len(set(stems)) != len(stems):
        return [f"f{i}" for i in range(len(uris))]
    return stems


def _finish(out: dict[str, Any], ctx: RowContext) -> dict[str, Any]:
    """Enforce the record invariants shared by every source."""
    if out["response"] is None and (out["response_harm"] is not None or out["response_refusal"] is not None):
        ctx.tally.adjust("response label on a row without a response: label cleared")
        out["response_harm"] = None
        out["response_refusal"] = None
    return out


def _unique(out: dict[str, Any], seen: dict[str, int], tally: Tally) -> dict[str, Any]:
    key = out["id"]
    if key in seen:
        seen[key] += 1
        out["id"] = f"{key}~{seen[key]}"
        tally.adjust("duplicate id: suffixed with ~N")
    else:
        seen[key] = 1
    return out
