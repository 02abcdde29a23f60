"""Every input and output of guardsmith, behind one URI scheme.

URIs
    ``s3://bucket/key`` on any S3-compatible endpoint (AWS, MinIO, SeaweedFS), ``file:///abs/path``
    or a plain local path. The S3 endpoint comes from ``GUARDSMITH_S3_ENDPOINT`` (falling back to
    ``AWS_ENDPOINT_URL_S3`` then ``AWS_ENDPOINT_URL``; unset means AWS); credentials and region
    from the standard ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
    ``AWS_REGION`` / ``AWS_DEFAULT_REGION``. Addressing is path-style. Connections fail fast:
    ``GUARDSMITH_S3_CONNECT_TIMEOUT`` seconds (default 3) and ``GUARDSMITH_S3_MAX_ATTEMPTS``
    attempts (default 3). Secrets are never logged nor put in error messages.

Tables
    A table is a directory of Parquet part files plus a commit manifest ``_SUCCESS`` (JSON: the
    part names and row counts, schema name, total rows, creation time). Readers read only the
    listed parts and refuse a directory without a manifest, so a crashed writer never exposes a
    partial table. Locally, a writer stages parts in a sibling ``<name>.tmp-<id>`` directory and
    renames it into place; when overwriting a committed table it moves the new parts in and
    atomically replaces the manifest. On S3 parts get unique names under the target prefix and the
    manifest is PUT last (a single PUT is atomic). Unlisted parts left by a crashed writer are
    ignored, and deleted by the next successful write to the same URI. One writer per URI at a
    time. A single ``.parquet`` file (a user's input) is also readable.

Folders
    Model and checkpoint folders move with :func:`upload_dir` / :func:`download_dir` (boto3's
    transfer manager: multipart, concurrent) and carry a ``_SUCCESS`` manifest listing files and
    sizes, written last. On S3 an overwrite first removes the old manifest, so a crash mid-upload
    leaves an uncommitted folder that :func:`download_dir` refuses, never a mix of versions.
    Locally the copy is staged in a sibling directory and renamed into place.
"""
from __future__ import annotations

import errno
import functools
import json
import logging
import os
import posixpath
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from guardsmith import tables
from guardsmith.errors import DataError, GuardsmithError

log = logging.getLogger(__name__)

MANIFEST = "_SUCCESS"
TABLE_FORMAT = "guardsmith-table"
FOLDER_FORMAT = "guardsmith-folder"
DEFAULT_BATCH_SIZE = 8_192
DEFAULT_ROWS_PER_PART = 250_000
DEFAULT_ROW_GROUP_ROWS = 65_536
_MiB = 1024 * 1024
_PART_RE = re.compile(r"^part-[0-9a-f]{12}-\d{5}\.parquet$")
_LOCAL = pafs.LocalFileSystem()


# --------------------------------------------------------------------------- configuration

@dataclass(frozen=True)
class S3Config:
    """S3 connection settings read from the environment (secrets hidden from ``repr``)."""

    endpoint: str | None
    region: str | None
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    connect_timeout: float = 3.0
    max_attempts: int = 3

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Config:
        """Read ``GUARDSMITH_S3_ENDPOINT`` / ``AWS_*`` variables (see the module docs)."""
        env = os.environ if env is None else env

        def get(*names: str) -> str | None:
            return next((env[n].strip() for n in names if env.get(n, "").strip()), None)

        endpoint = get("GUARDSMITH_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
        if endpoint:
            if "://" not in endpoint:
                endpoint = "https://" + endpoint
            parsed = urlparse(endpoint)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise GuardsmithError(f"bad S3 endpoint {endpoint!r}: expected http(s)://host[:port]")
            endpoint = f"{parsed.scheme}://{parsed.netloc}"
        try:
            timeout = float(get("GUARDSMITH_S3_CONNECT_TIMEOUT") or 3.0)
            attempts = int(get("GUARDSMITH_S3_MAX_ATTEMPTS") or 3)
        except ValueError as e:
            raise GuardsmithError(f"bad GUARDSMITH_S3_CONNECT_TIMEOUT / GUARDSMITH_S3_MAX_ATTEMPTS: {e}") from None
        return cls(
            endpoint=endpoint,
            region=get("AWS_REGION", "AWS_DEFAULT_REGION"),
            access_key=get("AWS_ACCESS_KEY_ID"),
            secret_key=get("AWS_SECRET_ACCESS_KEY"),
            session_token=get("AWS_SESSION_TOKEN"),
            connect_timeout=timeout,
            max_attempts=max(1, attempts),
        )

    @property
    def label(self) -> str:
        """The endpoint as shown in messages."""
        return self.endpoint or "AWS S3 (default endpoint)"


@functools.lru_cache(maxsize=32)
def _region(cfg: S3Config, bucket: str) -> str:
    if cfg.region:
        return cfg.region
    if cfg.endpoint:
        return "us-east-1"
    try:
        return pafs.resolve_s3_region(bucket)
    except (OSError, ValueError):
        return "us-east-1"


@functools.lru_cache(maxsize=32)
def _s3_filesystem(cfg: S3Config, region: str) -> pafs.S3FileSystem:
    kwargs: dict[str, Any] = dict(
        region=region,
        connect_timeout=cfg.connect_timeout,
        request_timeout=60.0,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=cfg.max_attempts),
        force_virtual_addressing=False,
    )
    if cfg.access_key:
        kwargs.update(access_key=cfg.access_key, secret_key=cfg.secret_key, session_token=cfg.session_token)
    if cfg.endpoint:
        parsed = urlparse(cfg.endpoint)
        kwargs.update(endpoint_override=parsed.netloc, scheme=parsed.scheme)
    log.debug("S3 filesystem: endpoint %s, region %s", cfg.label, region)
    return pafs.S3FileSystem(**kwargs)


@functools.lru_cache(maxsize=32)
def _boto3_client(cfg: S3Config, region: str) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=cfg.connect_timeout,
        read_timeout=60,
        retries={"max_attempts": cfg.max_attempts, "mode": "standard"},
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=32,
    )
    session = boto3.session.Session(
        aws_access_key_id=cfg.access_key,
        aws_secret_access_key=cfg.secret_key,
        aws_session_token=cfg.session_token,
        region_name=region,
    )
    return session.client("s3", endpoint_url=cfg.endpoint, config=config)


# --------------------------------------------------------------------------- URIs

class Location(NamedTuple):
    """A resolved URI: unpacks as ``(filesystem, path)``; ``path`` is ``bucket/key`` on S3."""

    fs: pafs.FileSystem
    path: str

    @property
    def is_s3(self) -> bool:
        return isinstance(self.fs, pafs.S3FileSystem)

    @property
    def uri(self) -> str:
        return f"s3://{self.path}" if self.is_s3 else self.path

    @property
    def bucket_key(self) -> tuple[str, str]:
        bucket, _, key = self.path.partition("/")
        return bucket, key

    def child(self, *names: str) -> Location:
        return Location(self.fs, "/".join([self.path.rstrip("/"), *names]))


def resolve(uri: str | os.PathLike[str]) -> Location:
    """Resolve ``uri`` to a filesystem and a path in it."""
    s = os.fspath(uri)
    if not s:
        raise GuardsmithError("empty path or URI")
    if s.startswith("s3://"):
        path = s[5:].strip("/")
        bucket = path.partition("/")[0]
        if not bucket:
            raise GuardsmithError(f"bad S3 URI {s!r}: expected s3://bucket/key")
        cfg = S3Config.from_env()
        return Location(_s3_filesystem(cfg, _region(cfg, bucket)), path)
    if s.startswith("file://"):
        parsed = urlparse(s)
        if parsed.netloc not in ("", "localhost"):
            raise GuardsmithError(f"bad file URI {s!r}: expected file:///absolute/path")
        return Location(_LOCAL, os.path.abspath(unquote(parsed.path)))
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", s):
        raise GuardsmithError(f"unsupported URI {s!r}: use s3://bucket/key, file:///path or a local path")
    return Location(_LOCAL, os.path.abspath(os.path.expanduser(s)))


def join(uri: str, *parts: str) -> str:
    """Join path segments onto a URI or path, keeping its scheme."""
    if "://" not in uri:
        return os.path.join(uri, *parts)
    out = uri.rstrip("/")
    for p in parts:
        if p.strip("/"):
            out += "/" + p.strip("/")
    return out


# --------------------------------------------------------------------------- errors

_UNREACHABLE = ("NETWORK_CONNECTION", "curlCode", "Could not connect", "Couldn't connect",
                "Connection refused", "Timeout was reached", "Could not resolve", "timed out",
                "Connect timeout", "EndpointConnectionError", "Could not connect to the endpoint")
_DENIED = ("ACCESS_DENIED", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
           "InvalidToken", "ExpiredToken", "Forbidden")


def _one_line(err: BaseException | str, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _s3_error(loc: Location, action: str, err: BaseException | str) -> GuardsmithError:
    cfg = S3Config.from_env()
    msg = _one_line(err, 2000)
    bucket = loc.bucket_key[0]
    if any(k in msg for k in _UNREACHABLE):
        return GuardsmithError(
            f"cannot reach S3 endpoint {cfg.label} to {action} {loc.uri}: "
            "check GUARDSMITH_S3_ENDPOINT (or AWS_ENDPOINT_URL) and the network")
    if "NoSuchBucket" in msg or "bucket does not exist" in msg.lower():
        return GuardsmithError(f"S3 bucket {bucket!r} does not exist at {cfg.label} ({action} {loc.uri})")
    if any(k in msg for k in _DENIED):
        return GuardsmithError(
            f"S3 endpoint {cfg.label} refused access to {loc.uri} ({action}): "
            "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket's permissions")
    return GuardsmithError(f"S3 error at {cfg.label} to {action} {loc.uri}: {_one_line(msg)}")


def _fail(loc: Location, action: str, err: BaseException) -> GuardsmithError:
    if loc.is_s3:
        return _s3_error(loc, action, err)
    if isinstance(err, FileNotFoundError):
        return GuardsmithError(f"{loc.uri} does not exist")
    if isinstance(err, PermissionError):
        return GuardsmithError(f"permission denied to {action} {loc.uri}")
    return GuardsmithError(f"cannot {action} {loc.uri}: {_one_line(err)}")


@contextmanager
def _errors_as(loc: Location, action: str, kinds: tuple[type[BaseException], ...],
               make: Callable[[Location, str, Any], GuardsmithError]) -> Iterator[None]:
    """Turn errors of `kinds` raised in the block into the one-line GuardsmithError `make` builds."""
    try:
        yield
    except GuardsmithError:
        raise
    except kinds as e:
        raise make(loc, action, e) from e


def _io(loc: Location, action: str):
    """Turn filesystem errors into one-line :class:`GuardsmithError`s."""
    return _errors_as(loc, action, (OSError, pa.ArrowException), _fail)


def _boto_error(loc: Location, action: str, err: Exception) -> GuardsmithError:
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(err, NoCredentialsError):
        return GuardsmithError("no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if isinstance(err, ClientError):
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound") and action == "open the bucket of":
            return _s3_error(loc, action, "NoSuchBucket")
        if code in ("403",):
            return _s3_error(loc, action, "AccessDenied")
    return _s3_error(loc, action, f"{type(err).__name__}: {err}")


def _boto_io(loc: Location, action: str):
    """Turn boto3 errors into one-line :class:`GuardsmithError`s."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    return _errors_as(loc, action, (BotoCoreError, ClientError, Boto3Error), _boto_error)


def _not_found(loc: Location) -> GuardsmithError:
    if loc.is_s3:
        bucket = loc.bucket_key[0]
        with _io(loc, "look up"):
            missing = loc.fs.get_file_info(bucket).type == pafs.FileType.NotFound
        if missing:
            return GuardsmithError(f"S3 bucket {bucket!r} does not exist at {S3Config.from_env().label} "
                                   f"({loc.uri})")
    return GuardsmithError(f"{loc.uri} does not exist")


def _info(loc: Location) -> pafs.FileInfo:
    with _io(loc, "look up"):
        return loc.fs.get_file_info(loc.path)


# --------------------------------------------------------------------------- small files

def exists(uri: str) -> bool:
    """Whether a file or directory (an S3 prefix with objects) exists at ``uri``."""
    return _info(resolve(uri)).type != pafs.FileType.NotFound


def open_input(uri: str) -> pa.NativeFile:
    """Open a file (a raw source: JSON, CSV, ...) for binary reading; use it as a context manager."""
    loc = resolve(uri)
    info = _info(loc)
    if info.type == pafs.FileType.NotFound:
        raise _not_found(loc)
    if info.type == pafs.FileType.Directory:
        raise GuardsmithError(f"{loc.uri} is a directory, not a file")
    with _io(loc, "open"):
        return loc.fs.open_input_file(loc.path)


def read_bytes(uri: str) -> bytes:
    """The whole content of a (small) file."""
    with open_input(uri) as f:
        return f.read()


def read_json(uri: str) -> Any:
    """Parse a JSON file."""
    try:
        return json.loads(read_bytes(uri))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"not valid JSON ({_one_line(e)})", file=str(uri)) from None


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Write a small file so readers see either the old or the complete new content."""
    loc = resolve(uri)
    if loc.is_s3:
        with _io(loc, "write"), loc.fs.open_output_stream(loc.path, compression=None) as f:
            f.write(data)
        return
    with _io(loc, "write"):
        parent = os.path.dirname(loc.path)
        os.makedirs(parent, exist_ok=True)
        tmp = f"{loc.path}.tmp-{uuid.uuid4().hex[:12]}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, loc.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def write_json_atomic(uri: str, obj: Any) -> None:
    """Write ``obj`` as indented JSON with :func:`write_bytes_atomic`."""
    write_bytes_atomic(uri, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode())


def list_dir(uri: str) -> list[str]:
    """Sorted names of the entries directly under a directory (or S3 prefix)."""
    loc = resolve(uri)
    info = _info(loc)
    if info.type == pafs.FileType.NotFound:
        raise _not_found(loc)
    if info.type != pafs.FileType.Directory:
        raise GuardsmithError(f"{loc.uri} is a file, not a directory")
    with _io(loc, "list"):
        entries = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=False))
    return sorted({e.base_name for e in entries if e.base_name})


def remove(uri: str) -> None:
    """Delete a file or a whole directory / prefix; nothing happens when it does not exist."""
    loc = resolve(uri)
    info = _info(loc)
    with _io(loc, "delete"):
        if info.type == pafs.FileType.Directory:
            if loc.is_s3 and "/" not in loc.path:
                loc.fs.delete_dir_contents(loc.path)
            else:
                loc.fs.delete_dir(loc.path)
        elif info.type == pafs.FileType.File:
            loc.fs.delete_file(loc.path)


# --------------------------------------------------------------------------- manifests

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read_manifest(loc: Location) -> dict[str, Any] | None:
    """The ``_SUCCESS`` manifest of a directory, or None when there is none."""
    mloc = loc.child(MANIFEST)
    try:
        with loc.fs.open_input_stream(mloc.path) as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except (OSError, pa.ArrowException) as e:
        if _info(mloc).type == pafs.FileType.NotFound:
            return None
        raise _fail(mloc, "read", e) from e
    try:
        manifest = json.loads(raw)
        if not isinstance(manifest, dict) or manifest.get("format") not in (TABLE_FORMAT, FOLDER_FORMAT):
            raise ValueError("unknown format")
    except ValueError:
        raise GuardsmithError(f"{mloc.uri} is damaged: not a guardsmith manifest") from None
    return manifest


def is_committed(uri: str) -> bool:
    """Whether ``uri`` is a committed guardsmith table or folder (has a valid manifest)."""
    loc = resolve(uri)
    if _info(loc).type != pafs.FileType.Directory:
        return False
    return _read_manifest(loc) is not None


def _safe_name(name: Any, loc: Location) -> str:
    """A manifest entry's relative path, refusing absolute paths and ``..`` (path traversal)."""
    if not isinstance(name, str) or not name or name.startswith("/") or ".." in name.split("/"):
        raise GuardsmithError(f"{loc.uri}/{MANIFEST} is damaged: bad entry {name!r}")
    return name


# --------------------------------------------------------------------------- reading tables

def _table_parts(uri: str) -> tuple[Location, list[tuple[Location, int | None]]]:
    """The parts to read for ``uri`` with their manifest row counts (None for a single file)."""
    loc = resolve(uri)
    info = _info(loc)
    if info.type == pafs.FileType.NotFound:
        raise _not_found(loc)
    if info.type == pafs.FileType.File:
        return loc, [(loc, None)]
    manifest = _read_manifest(loc)
    if manifest is None:
        raise GuardsmithError(
            f"{loc.uri} is not a committed guardsmith table (no {MANIFEST} manifest): "
            "an earlier write may have crashed")
    if manifest["format"] != TABLE_FORMAT:
        raise GuardsmithError(f"{loc.uri} is a guardsmith folder, not a table")
    try:
        return loc, [(loc.child(_safe_name(p["name"], loc)), int(p["rows"])) for p in manifest["parts"]]
    except (KeyError, TypeError, ValueError):
        raise GuardsmithError(f"{loc.uri}/{MANIFEST} is damaged: bad parts list") from None


def _open_parquet(part: Location, in_manifest: bool) -> pq.ParquetFile:
    try:
        f = part.fs.open_input_file(part.path)
    except FileNotFoundError:
        note = f" although {MANIFEST} lists it: the table is damaged" if in_manifest else ""
        raise GuardsmithError(f"{part.uri} does not exist{note}") from None
    except (OSError, pa.ArrowException) as e:
        raise _fail(part, "open", e) from e
    try:
        if f.size() == 0:
            raise DataError("empty file (0 bytes), not a Parquet file", file=part.uri)
        return pq.ParquetFile(f)
    except pa.ArrowInvalid as e:
        f.close()
        raise DataError(f"not a valid Parquet file ({_one_line(e, 160)})", file=part.uri) from None
    except (OSError, pa.ArrowException) as e:
        f.close()
        raise _fail(part, "read", e) from e
    except BaseException:
        f.close()
        raise


def _stream(
    loc: Location,
    parts: list[tuple[Location, int | None]],
    schema_name: str | None,
    batch_size: int,
    columns: Sequence[str] | None,
) -> Iterator[pa.RecordBatch]:
    offset = 0
    for part, expected in parts:
        pf = _open_parquet(part, expected is not None)
        try:
            if expected is not None and pf.metadata.num_rows != expected:
                raise GuardsmithError(f"{part.uri} has {pf.metadata.num_rows} rows but {MANIFEST} lists "
                                      f"{expected}: the table is damaged")
            cols = list(columns) if columns is not None else None
            if cols is not None:
                present = set(pf.schema_arrow.names)
                known = set(tables.schema(schema_name).names) if schema_name is not None else set()
                missing = [c for c in cols if c not in present and c not in known]
                if missing:  # missing schema columns are reported by the validation below
                    raise DataError("missing column", file=loc.uri, column=missing[0])
                cols = [c for c in cols if c in present]  # validation below names the missing one
            try:
                for batch in pf.iter_batches(batch_size=batch_size, columns=cols):
                    if schema_name is not None:
                        batch = tables.conform(batch, schema_name, loc.uri, offset, columns=columns)
                    offset += batch.num_rows
                    yield batch
            except pa.ArrowInvalid as e:
                raise DataError(f"corrupt Parquet data ({_one_line(e, 160)})", file=part.uri) from None
            except (OSError, pa.ArrowException) as e:
                raise _fail(part, "read", e) from e
        finally:
            pf.close(force=True)


def iter_batches(
    uri: str,
    schema_name: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    columns: Sequence[str] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream a table (or a single Parquet file) as record batches of at most ``batch_size`` rows.

    Memory stays bounded by a row group, whatever the table size. With ``schema_name`` each batch
    is validated and conformed (:func:`guardsmith.tables.conform`) with its global row offset.
    Missing or uncommitted inputs raise here, before the first batch is requested.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    if schema_name is not None:
        tables.schema(schema_name)
    loc, parts = _table_parts(uri)
    return _stream(loc, parts, schema_name, batch_size, columns)


def read_table(uri: str, schema_name: str | None = None, columns: Sequence[str] | None = None) -> pa.Table:
    """Read a whole (small) table; see :func:`iter_batches` for large ones."""
    loc, parts = _table_parts(uri)
    if schema_name is not None:
        tables.schema(schema_name)
    batches = list(_stream(loc, parts, schema_name, DEFAULT_BATCH_SIZE, columns))
    if batches:
        return pa.Table.from_batches(batches)
    if schema_name is not None:
        empty = tables.empty_table(schema_name)
    else:
        pf = _open_parquet(parts[0][0], parts[0][1] is not None)
        try:
            empty = pf.schema_arrow.empty_table()
        finally:
            pf.close(force=True)
    return empty.select(list(columns)) if columns is not None else empty


# --------------------------------------------------------------------------- writing tables

def _check_table_target(loc: Location) -> None:
    """Refuse to write a table over a file or over a directory holding foreign files."""
    info = _info(loc)
    if info.type == pafs.FileType.File:
        raise GuardsmithError(f"refusing to overwrite {loc.uri}: it is a file, a table is a directory")
    if info.type == pafs.FileType.Directory:
        with _io(loc, "list"):
            entries = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=False))
        for e in entries:
            if e.base_name and e.base_name != MANIFEST and not _PART_RE.match(e.base_name) \
                    and not e.base_name.startswith(MANIFEST + ".tmp-"):
                raise GuardsmithError(f"refusing to overwrite {loc.uri}: it holds {e.base_name!r}, "
                                      "which is not part of a guardsmith table")
        manifest = _read_manifest(loc)
        if manifest is not None and manifest["format"] != TABLE_FORMAT:
            raise GuardsmithError(f"refusing to overwrite {loc.uri}: it is a guardsmith folder")


def _check_bucket(loc: Location) -> None:
    bucket = loc.bucket_key[0]
    with _io(loc, "open the bucket of"):
        missing = loc.fs.get_file_info(bucket).type == pafs.FileType.NotFound
    if missing:
        raise GuardsmithError(f"S3 bucket {bucket!r} does not exist at {S3Config.from_env().label} ({loc.uri})")


def _cleanup_stale_parts(loc: Location) -> None:
    """Delete part files the current manifest does not list (left by crashed writers)."""
    try:
        manifest = _read_manifest(loc)
        if manifest is None:
            return
        listed = {p["name"] for p in manifest["parts"]}
        for e in loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=False)):
            if _PART_RE.match(e.base_name) and e.base_name not in listed:
                loc.fs.delete_file(e.path)
    except (OSError, pa.ArrowException, GuardsmithError) as e:
        log.warning("could not clean stale parts of %s: %s", loc.uri, _one_line(e))


class TableWriter:
    """Write a table as Parquet parts plus a ``_SUCCESS`` manifest, atomically.

    Use as a context manager: ``.write(table_or_batch)`` any number of times; a clean exit commits,
    an exception removes everything written. ``schema`` is the output schema (an Arrow schema or
    a name in :data:`guardsmith.tables.SCHEMAS`); with ``schema_name`` every write is also
    validated against that named schema (label words included). Incoming data must have every
    schema column with a compatible type; columns outside the schema are an error.
    """

    def __init__(
        self,
        uri: str,
        schema: pa.Schema | str,
        schema_name: str | None = None,
        *,
        rows_per_part: int = DEFAULT_ROWS_PER_PART,
        row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
        compression: str = "zstd",
    ) -> None:
        if isinstance(schema, str):
            schema_name = schema_name or schema
            schema = tables.schema(schema)
        if schema_name is not None:
            tables.schema(schema_name)
        if rows_per_part < 1 or row_group_rows < 1:
            raise ValueError("rows_per_part and row_group_rows must be positive")
        self.uri = str(uri)
        self.schema = schema
        self.schema_name = schema_name
        self.rows_per_part = rows_per_part
        self.row_group_rows = row_group_rows
        self.compression = compression
        self.rows = 0
        self.manifest: dict[str, Any] | None = None
        self._loc = resolve(uri)
        self._id = uuid.uuid4().hex[:12]
        self._state = "new"
        self._stage: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._written: list[str] = []
        self._sink: pa.NativeFile | None = None
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._part_rows = 0

    @property
    def parts_written(self) -> int:
        """Number of part files completed so far."""
        return len(self._parts)

    def __enter__(self) -> TableWriter:
        self.open()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def open(self) -> None:
        """Check the target (bucket, no foreign files) before anything is written."""
        if self._state != "new":
            return
        if self._loc.is_s3:
            _check_bucket(self._loc)
        _check_table_target(self._loc)
        self._state = "open"

    def write(self, data: pa.Table | pa.RecordBatch) -> None:
        """Validate and append rows; parts are cut every ``rows_per_part`` rows."""
        if self._state == "new":
            self.open()
        if self._state != "open":
            raise GuardsmithError(f"TableWriter for {self.uri} is already {self._state}")
        if isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        elif not isinstance(data, pa.Table):
            raise TypeError(f"write() needs a pyarrow Table or RecordBatch, got {type(data).__name__}")
        if self.schema_name is not None:
            tables.validate(data, self.schema_name, self.uri, self.rows)
        extra = [n for n in data.schema.names if n not in self.schema.names]
        if extra:
            raise DataError("column is not in the output schema", file=self.uri, column=extra[0])
        data = tables.conform(data, self.schema, self.uri, self.rows, keep_extra=False)
        try:
            offset = 0
            while offset < data.num_rows:
                chunk = data.slice(offset, self.rows_per_part - self._part_rows)
                offset += chunk.num_rows
                self.rows += chunk.num_rows
                self._part_rows += chunk.num_rows
                self._buffer.append(chunk)
                self._buffered += chunk.num_rows
                if self._buffered >= self.row_group_rows:
                    self._flush()
                if self._part_rows >= self.rows_per_part:
                    self._close_part()
        except BaseException:
            self.abort()
            raise

    def _open_part(self) -> None:
        loc = self._loc
        with _io(loc, "write"):
            if self._stage is None:
                if loc.is_s3:
                    self._stage = loc.path
                else:
                    self._stage = f"{loc.path}.tmp-{self._id}"
                    os.makedirs(self._stage)
            path = f"{self._stage}/part-{self._id}-{len(self._parts):05d}.parquet"
            self._written.append(path)
            self._sink = loc.fs.open_output_stream(path, compression=None)
            self._writer = pq.ParquetWriter(self._sink, self.schema, compression=self.compression)

    def _flush(self, final: bool = False) -> None:
        """Write buffered rows as whole row groups (all of them when ``final``)."""
        if not self._buffer:
            return
        table = pa.concat_tables(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        n = table.num_rows if final else table.num_rows - table.num_rows % self.row_group_rows
        if n == 0 and not final:
            return
        if self._writer is None:
            self._open_part()
        rest = table.slice(n)
        self._buffer, self._buffered = ([rest] if rest.num_rows else []), rest.num_rows
        with _io(self._loc, "write"):
            assert self._writer is not None
            self._writer.write_table(table.slice(0, n), row_group_size=self.row_group_rows)

    def _close_part(self) -> None:
        self._flush(final=True)
        if self._writer is None:
            return
        with _io(self._loc, "write"):
            self._writer.close()
            assert self._sink is not None
            self._sink.close()
        self._writer = self._sink = None
        self._parts.append({"name": posixpath.basename(self._written[-1]), "rows": self._part_rows})
        self._part_rows = 0

    def commit(self) -> dict[str, Any]:
        """Finish the last part and publish the manifest; returns the manifest."""
        if self._state == "committed":
            assert self.manifest is not None
            return self.manifest
        if self._state == "new":
            self.open()
        if self._state != "open":
            raise GuardsmithError(f"TableWriter for {self.uri} is {self._state}")
        try:
            self._close_part()
            if not self._parts:  # an empty table still records its schema
                self._open_part()
                self._close_part()
            manifest = {
                "format": TABLE_FORMAT, "version": 1, "schema_name": self.schema_name,
                "total_rows": self.rows, "created": _now(), "parts": self._parts,
            }
            data = (json.dumps(manifest, indent=1) + "\n").encode()
            if self._loc.is_s3:
                with _io(self._loc, "commit"), \
                        self._loc.fs.open_output_stream(self._loc.child(MANIFEST).path, compression=None) as f:
                    f.write(data)  # one PUT: the table appears atomically
            else:
                self._commit_local(data)
        except BaseException:
            self.abort()
            raise
        self._state = "committed"
        self.manifest = manifest
        _cleanup_stale_parts(self._loc)
        log.info("committed %s: %d rows in %d parts", self._loc.uri, self.rows, len(self._parts))
        return manifest

    def _commit_local(self, manifest: bytes) -> None:
        assert self._stage is not None
        target, stage = self._loc.path, self._stage
        with _io(self._loc, "commit"):
            with open(os.path.join(stage, MANIFEST), "wb") as f:
                f.write(manifest)
                f.flush()
                os.fsync(f.fileno())
            os.makedirs(os.path.dirname(target), exist_ok=True)
            try:
                os.rename(stage, target)  # target absent (or an empty directory)
                self._stage = None
                return
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
            _check_table_target(self._loc)
            for part in self._parts:  # an existing table: move parts in, swap the manifest
                os.replace(os.path.join(stage, part["name"]), os.path.join(target, part["name"]))
            os.replace(os.path.join(stage, MANIFEST), os.path.join(target, MANIFEST))
            shutil.rmtree(stage, ignore_errors=True)
            self._stage = None

    def abort(self) -> None:
        """Discard everything this writer wrote (its parts and staging directory)."""
        if self._state in ("committed", "aborted"):
            return
        self._state = "aborted"
        for closer in (self._writer, self._sink):
            try:
                if closer is not None:
                    closer.close()
            except Exception:  # noqa: BLE001 - best effort on the error path
                pass
        self._writer = self._sink = None
        self._buffer = []
        loc = self._loc
        try:
            if not loc.is_s3:
                if self._stage is not None:
                    shutil.rmtree(self._stage, ignore_errors=True)
            else:
                for path in self._written:
                    try:
                        loc.fs.delete_file(path)
                    except FileNotFoundError:
                        pass
                # pyarrow leaves a directory marker behind; drop it if nothing else is there
                if self._written and not loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True)):
                    loc.fs.delete_dir(loc.path)
        except (OSError, pa.ArrowException) as e:
            log.warning("could not remove partial output of %s: %s", loc.uri, _one_line(e))


def write_table(
    uri: str,
    table: pa.Table | pa.RecordBatch,
    schema_name: str | None = None,
    *,
    schema: pa.Schema | None = None,
    rows_per_part: int = DEFAULT_ROWS_PER_PART,
) -> dict[str, Any]:
    """Write a whole table atomically; returns the manifest.

    With ``schema_name`` the table is validated first and written with the named schema's exact
    types and order, extra columns kept after it. Otherwise ``schema`` (or the table's own
    schema) is used. Nothing is written when validation fails.
    """
    if isinstance(schema_name, pa.Schema):  # write_table(uri, table, some_schema)
        schema, schema_name = schema_name, None
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    if schema is None:
        if schema_name is not None:
            tables.validate(table, schema_name, str(uri))
            base = tables.schema(schema_name)
            extra = [table.schema.field(n) for n in table.schema.names if n not in base.names]
            schema = pa.schema(list(base) + extra, metadata=base.metadata)
        else:
            schema = table.schema
    with TableWriter(uri, schema, schema_name, rows_per_part=rows_per_part) as writer:
        writer.write(table)
    assert writer.manifest is not None
    return writer.manifest


# --------------------------------------------------------------------------- folders

def default_transfer_config() -> Any:
    """boto3 ``TransferConfig``: 64 MiB multipart threshold and chunks, 8 concurrent requests."""
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=64 * _MiB, multipart_chunksize=64 * _MiB,
                          max_concurrency=8, use_threads=True)


def _scan_folder(root: str) -> list[tuple[str, int]]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if rel == MANIFEST:
                continue
            files.append((rel, os.path.getsize(full)))
    return files


def _folder_manifest(files: list[tuple[str, int]]) -> dict[str, Any]:
    return {"format": FOLDER_FORMAT, "version": 1, "created": _now(),
            "total_bytes": sum(s for _, s in files),
            "files": [{"path": rel, "size": size} for rel, size in files]}


def _check_local_folder_target(path: str) -> None:
    if os.path.isfile(path):
        raise GuardsmithError(f"refusing to replace {path}: it is a file")
    if os.path.isdir(path) and os.listdir(path):
        manifest = _read_manifest(Location(_LOCAL, path))
        if manifest is None or manifest["format"] != FOLDER_FORMAT:
            raise GuardsmithError(f"refusing to replace {path}: it is not empty and not a guardsmith folder")


def _swap_into_place(stage: str, target: str) -> None:
    try:
        os.rename(stage, target)
        return
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    old = f"{target}.old-{uuid.uuid4().hex[:12]}"
    os.rename(target, old)
    os.rename(stage, target)
    shutil.rmtree(old, ignore_errors=True)


def _materialize_local(target: str, files: list[tuple[str, int]], manifest: dict[str, Any],
                       fetch: Any, label: str) -> None:
    """Fill a staging sibling of ``target`` with ``fetch(rel, dest_path)`` then rename it in."""
    _check_local_folder_target(target)
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    stage = f"{target}.tmp-{uuid.uuid4().hex[:12]}"
    os.makedirs(stage)
    try:
        fetch(stage)
        for rel, size in files:
            got = os.path.getsize(os.path.join(stage, rel))
            if got != size:
                raise GuardsmithError(f"{label}/{rel} has {got} bytes, the manifest says {size}: "
                                      "the folder changed during the copy or is damaged")
        with open(os.path.join(stage, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1)
        _swap_into_place(stage, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _copy_files(src_root: str, files: list[tuple[str, int]]) -> Any:
    def fetch(stage: str) -> None:
        for rel, _ in files:
            dest = os.path.join(stage, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copy2(os.path.join(src_root, rel), dest)
    return fetch


def _client(loc: Location) -> Any:
    cfg = S3Config.from_env()
    return _boto3_client(cfg, _region(cfg, loc.bucket_key[0]))


def upload_dir(local_dir: str, uri: str, *, transfer_config: Any = None) -> dict[str, Any]:
    """Copy a local folder (model, checkpoint) to ``uri`` and commit it; returns the manifest.

    On S3 files go through boto3's transfer manager (multipart above the threshold, concurrent);
    ``transfer_config`` is a ``boto3.s3.transfer.TransferConfig``. A local ``uri`` gets a staged
    copy renamed into place.
    """
    src = resolve(local_dir)
    if src.is_s3:
        raise GuardsmithError(f"upload_dir needs a local folder, got {src.uri}")
    if not os.path.isdir(src.path):
        raise GuardsmithError(f"{src.path} is not a folder" if os.path.exists(src.path)
                              else f"{src.path} does not exist")
    files = _scan_folder(src.path)
    manifest = _folder_manifest(files)
    dst = resolve(uri)
    if not dst.is_s3:
        with _io(dst, "write"):
            _materialize_local(dst.path, files, manifest, _copy_files(src.path, files), src.path)
        return manifest

    from boto3.s3.transfer import create_transfer_manager

    bucket, prefix = dst.bucket_key
    key = (lambda rel: f"{prefix}/{rel}" if prefix else rel)
    client = _client(dst)
    with _boto_io(dst, "open the bucket of"):
        client.head_bucket(Bucket=bucket)
    old = _read_manifest(dst)
    if old is not None and old["format"] != FOLDER_FORMAT:
        raise GuardsmithError(f"refusing to overwrite {dst.uri}: it is a guardsmith table, not a folder")
    with _boto_io(dst, "upload to"):
        if old is not None:  # uncommit first: a crash mid-upload must not leave a mixed folder
            client.delete_object(Bucket=bucket, Key=key(MANIFEST))
        with create_transfer_manager(client, transfer_config or default_transfer_config()) as tm:
            futures = [tm.upload(os.path.join(src.path, rel), bucket, key(rel)) for rel, _ in files]
            for fut in futures:
                fut.result()
        client.put_object(Bucket=bucket, Key=key(MANIFEST), Body=json.dumps(manifest, indent=1).encode())
    if old is not None:
        stale = {f["path"] for f in old.get("files", [])} - {rel for rel, _ in files}
        for rel in sorted(stale):
            try:
                client.delete_object(Bucket=bucket, Key=key(_safe_name(rel, dst)))
            except Exception as e:  # noqa: BLE001 - cleanup is best effort
                log.warning("could not delete stale %s/%s: %s", dst.uri, rel, _one_line(e))
    log.info("uploaded %s to %s: %d files, %d bytes", src.path, dst.uri, len(files), manifest["total_bytes"])
    return manifest


def download_dir(uri: str, local_dir: str, *, transfer_config: Any = None) -> str:
    """Copy a committed folder from ``uri`` to ``local_dir`` (replaced atomically); returns its path.

    Refuses a folder without a ``_SUCCESS`` manifest (an upload that did not finish).
    """
    src = resolve(uri)
    dst = resolve(local_dir)
    if dst.is_s3:
        raise GuardsmithError(f"download_dir needs a local destination, got {dst.uri}")
    info = _info(src)
    if info.type == pafs.FileType.NotFound:
        raise _not_found(src)
    manifest = _read_manifest(src) if info.type == pafs.FileType.Directory else None
    if manifest is None:
        raise GuardsmithError(f"{src.uri} is not a committed guardsmith folder (no {MANIFEST} manifest): "
                              "an earlier upload may have crashed")
    if manifest["format"] != FOLDER_FORMAT:
        raise GuardsmithError(f"{src.uri} is a guardsmith table, not a folder")
    try:
        files = [(_safe_name(f["path"], src), int(f["size"])) for f in manifest["files"]]
    except (KeyError, TypeError, ValueError):
        raise GuardsmithError(f"{src.uri}/{MANIFEST} is damaged: bad files list") from None

    if not src.is_s3:
        with _io(dst, "write"):
            _materialize_local(dst.path, files, manifest, _copy_files(src.path, files), src.uri)
        return dst.path

    from boto3.s3.transfer import create_transfer_manager

    bucket, prefix = src.bucket_key
    client = _client(src)

    def fetch(stage: str) -> None:
        with create_transfer_manager(client, transfer_config or default_transfer_config()) as tm:
            futures = []
            for rel, _ in files:
                dest = os.path.join(stage, rel)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                futures.append(tm.download(bucket, f"{prefix}/{rel}" if prefix else rel, dest))
            for fut in futures:
                fut.result()

    with _boto_io(src, "download"), _io(dst, "write"):
        _materialize_local(dst.path, files, manifest, fetch, src.uri)
    return dst.path
