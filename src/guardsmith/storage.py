"""Every input and output of guardsmith, behind one URI scheme.

URIs
    ``s3://bucket/key`` on any S3-compatible endpoint (AWS, MinIO, SeaweedFS), ``file:///abs/path``
    or a plain local path. The S3 endpoint comes from ``GUARDSMITH_S3_ENDPOINT`` (falling back to
    ``AWS_ENDPOINT_URL_S3`` then ``AWS_ENDPOINT_URL``; unset means AWS); credentials and region
    from the standard ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
    ``AWS_REGION`` / ``AWS_DEFAULT_REGION``. Addressing is path-style. Connections fail fast:
    ``GUARDSMITH_S3_CONNECT_TIMEOUT`` seconds (default 3) and ``GUARDSMITH_S3_MAX_ATTEMPTS``
    attempts (default 3). Secrets are never logged nor put in error messages: ``user:pass@`` in an
    endpoint URL is removed from it (and used as the keys only when ``AWS_ACCESS_KEY_ID`` is unset).
    An endpoint that answers HTTP but is not an S3 server is reported as such.

Tables
    A table is a directory of Parquet part files plus a commit manifest ``_SUCCESS`` (JSON: the
    part names, row counts, byte sizes and sha256, schema name, total rows, creation time, the
    attempt id and, when given, the work identity). Readers read only the listed parts and refuse
    a directory without a manifest, so a crashed writer never exposes a partial table. A single
    ``.parquet`` file (a user's input) is also readable.

One writer per URI (see docs/storage.md)
    Each write is an attempt with its own id: on S3 its parts are named ``part-<attempt>-NNNNN``
    under the target; locally they are staged in a sibling ``<name>.tmp-<attempt>`` directory.
    The commit is conditional on the manifest the writer saw when it opened: on S3 one
    ``PUT _SUCCESS`` with ``If-None-Match: *`` (nothing was committed) or ``If-Match: <ETag>`` (a
    replace); locally a rename under an exclusive ``flock`` of the parent directory after checking
    the manifest is unchanged. Of two writers racing for one URI exactly one commits; the other
    gets :class:`ConcurrentWriteError` and removes what it wrote. After a commit the writer deletes
    the parts of the table it replaced and unlisted parts that were there when it opened (crashed
    or losing writers), never parts that appeared later. Every manifest carries a unique attempt
    id, so an identical re-commit still changes it.

Folders
    Model and checkpoint folders move with :func:`upload_dir` / :func:`download_dir` (boto3's
    transfer manager: multipart, concurrent). On S3 each upload is an immutable version
    ``<uri>/versions/<attempt>/``; ``<uri>/_SUCCESS`` (files, sizes, sha256, ``root``) points at the
    current one and is switched by the same conditional PUT, so a republish never removes the
    previous model before the new one is complete. The replaced version is kept for readers still
    downloading it; older ones are removed. A folder committed before versions (files beside
    ``_SUCCESS``, no ``root``) still reads. Locally the copy is staged and renamed into place.

Identity
    :func:`content_id` (what is at a URI, as a digest of its manifest's content, or of a file's
    bytes), :func:`recorded_identity` (the work identity stored in a manifest) and
    :func:`is_location` serve :mod:`guardsmith.identity`.
"""
from __future__ import annotations

import errno
import functools
import hashlib
import json
import logging
import os
import posixpath
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from guardsmith import tables
from guardsmith.errors import DataError, GuardsmithError, redact

log = logging.getLogger(__name__)

MANIFEST = "_SUCCESS"
TABLE_FORMAT = "guardsmith-table"
FOLDER_FORMAT = "guardsmith-folder"
VERSIONS = "versions"
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
                raise GuardsmithError(f"bad S3 endpoint {redact(endpoint)!r}: expected http(s)://host[:port]")
            # credentials inside the URL never reach a message: keep host:port, use them as keys
            # only when AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are unset
            userinfo, _, hostport = parsed.netloc.rpartition("@")
            if userinfo and not get("AWS_ACCESS_KEY_ID"):
                user, _, password = userinfo.partition(":")
                env = {**env, "AWS_ACCESS_KEY_ID": unquote(user), "AWS_SECRET_ACCESS_KEY": unquote(password)}
            endpoint = f"{parsed.scheme}://{hostport}"
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
        return redact(self.endpoint) if self.endpoint else "AWS S3 (default endpoint)"


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


def _not_s3_server(cfg: S3Config) -> str | None:
    """When the endpoint answers HTTP but is not an S3 server, a description of what answered.

    An S3 server answers an unsigned ``GET /`` with an ``x-amz-*`` header or an XML ``<Error>``
    (AccessDenied) or bucket listing; a web server, a proxy's landing page or another API does not.
    Only asked on error paths (a "missing bucket" or an unknown error)."""
    if not cfg.endpoint:
        return None
    import urllib.error
    import urllib.request

    try:
        try:
            resp = urllib.request.urlopen(cfg.endpoint + "/", timeout=cfg.connect_timeout)  # noqa: S310
        except urllib.error.HTTPError as e:
            resp = e
        with resp:
            headers = {k.lower(): v for k, v in resp.headers.items()}
            body = resp.read(4096)
            status = resp.status if hasattr(resp, "status") else resp.code
    except (OSError, ValueError):
        return None  # unreachable: reported as such by the caller
    if any(k.startswith("x-amz-") for k in headers) or b"<Error>" in body or b"ListAllMyBucketsResult" in body:
        return None
    kind = headers.get("content-type", "unknown content").split(";")[0]
    server = f", server {headers['server']!r}" if headers.get("server") else ""
    return f"HTTP {status} ({kind}{server})"


def _not_s3_error(cfg: S3Config, loc: Location, action: str, what: str) -> GuardsmithError:
    return GuardsmithError(
        f"S3 endpoint {cfg.label} answers HTTP but is not an S3 server ({what}) to {action} {loc.uri}: "
        "check GUARDSMITH_S3_ENDPOINT (or AWS_ENDPOINT_URL): host and port of the S3 API")


def _missing_bucket(loc: Location, action: str | None = None) -> GuardsmithError:
    """'bucket does not exist', unless the endpoint is not an S3 server at all."""
    cfg = S3Config.from_env()
    what = _not_s3_server(cfg)
    if what is not None:
        return _not_s3_error(cfg, loc, action or "open", what)
    where = f"{action} {loc.uri}" if action else loc.uri
    return GuardsmithError(f"S3 bucket {loc.bucket_key[0]!r} does not exist at {cfg.label} ({where})")


def _s3_error(loc: Location, action: str, err: BaseException | str) -> GuardsmithError:
    cfg = S3Config.from_env()
    msg = redact(_one_line(err, 2000))
    if any(k in msg for k in _UNREACHABLE):
        return GuardsmithError(
            f"cannot reach S3 endpoint {cfg.label} to {action} {loc.uri}: "
            "check GUARDSMITH_S3_ENDPOINT (or AWS_ENDPOINT_URL) and the network")
    if "NoSuchBucket" in msg or "bucket does not exist" in msg.lower():
        return _missing_bucket(loc, action)
    if any(k in msg for k in _DENIED):
        return GuardsmithError(
            f"S3 endpoint {cfg.label} refused access to {loc.uri} ({action}): "
            "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket's permissions")
    what = _not_s3_server(cfg)
    if what is not None:
        return _not_s3_error(cfg, loc, action, what)
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
            return _missing_bucket(loc)
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


class ConcurrentWriteError(GuardsmithError):
    """Another writer committed the same URI while this one was writing; this attempt was discarded."""

    def __init__(self, uri: str) -> None:
        super().__init__(
            f"{redact(uri)} was committed by another writer at the same time; this attempt's output was "
            "discarded and the other writer's output is intact (one writer per URI: re-run to reuse it, "
            "or --overwrite to replace it)")


def _parse_manifest(mloc: Location, raw: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(raw)
        if not isinstance(manifest, dict) or manifest.get("format") not in (TABLE_FORMAT, FOLDER_FORMAT):
            raise ValueError("unknown format")
    except ValueError:
        raise GuardsmithError(f"{mloc.uri} is damaged: not a guardsmith manifest") from None
    return manifest


def _read_manifest_tagged(loc: Location) -> tuple[dict[str, Any] | None, str | None]:
    """The ``_SUCCESS`` manifest of a directory and its version tag (the S3 ETag, or the sha256 of
    the local file), or ``(None, None)`` when there is none. The tag is what a commit is
    conditional on."""
    mloc = loc.child(MANIFEST)
    if loc.is_s3:
        from botocore.exceptions import ClientError

        bucket, key = mloc.bucket_key
        with _boto_io(mloc, "read"):
            try:
                got = _client(mloc).get_object(Bucket=bucket, Key=key)
            except ClientError as e:
                if str(e.response.get("Error", {}).get("Code", "")) in ("NoSuchKey", "404", "NotFound"):
                    return None, None
                raise
            raw, tag = got["Body"].read(), str(got.get("ETag", ""))
        return _parse_manifest(mloc, raw), tag
    try:
        with open(mloc.path, "rb") as f:
            raw = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None, None
    except OSError as e:
        raise _fail(mloc, "read", e) from e
    return _parse_manifest(mloc, raw), hashlib.sha256(raw).hexdigest()


def _read_manifest(loc: Location) -> dict[str, Any] | None:
    """The ``_SUCCESS`` manifest of a directory, or None when there is none."""
    return _read_manifest_tagged(loc)[0]


def _manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=1) + "\n").encode()


def _put_manifest_s3(loc: Location, data: bytes, seen: str | None) -> None:
    """The commit on S3: one conditional PUT of ``_SUCCESS``. ``If-None-Match: *`` when there was no
    manifest when the writer started, else ``If-Match: <the ETag it saw>``; a failed condition
    means another writer committed first: :class:`ConcurrentWriteError`."""
    from botocore.exceptions import ClientError

    mloc = loc.child(MANIFEST)
    bucket, key = mloc.bucket_key
    _probe_conditional_writes(loc)
    cond = {"IfNoneMatch": "*"} if seen is None else {"IfMatch": seen}
    with _boto_io(mloc, "commit"):
        try:
            _client(mloc).put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/json", **cond)
        except ClientError as e:
            err = e.response.get("Error", {})
            code, status = str(err.get("Code", "")), e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                raise ConcurrentWriteError(loc.uri) from None
            if code in ("NotImplemented", "501") or status == 501:
                raise GuardsmithError(
                    f"S3 endpoint {S3Config.from_env().label} does not support conditional writes "
                    f"(If-None-Match / If-Match on PutObject), which guardsmith needs to commit {loc.uri} safely"
                ) from None
            raise


_CONDITIONAL: dict[tuple[str, str], bool] = {}


def _probe_conditional_writes(loc: Location) -> None:
    """Once per endpoint and bucket: check that the store honours ``If-None-Match`` on PutObject (a
    store that silently ignores it would let two writers both "win"). A small probe object beside
    the target is created twice and removed; a store that ignores the condition gets a warning
    that one writer per URI is not enforced there."""
    from botocore.exceptions import ClientError

    bucket, key = loc.child(f"{MANIFEST}.tmp-probe-{uuid.uuid4().hex[:12]}").bucket_key
    cache_key = (S3Config.from_env().label, bucket)
    if cache_key in _CONDITIONAL:
        return
    client = _client(loc)
    with _boto_io(loc, "commit"):
        client.put_object(Bucket=bucket, Key=key, Body=b"probe", IfNoneMatch="*")
        try:
            client.put_object(Bucket=bucket, Key=key, Body=b"probe", IfNoneMatch="*")
            honoured = False
        except ClientError:
            honoured = True
        finally:
            client.delete_object(Bucket=bucket, Key=key)
    _CONDITIONAL[cache_key] = honoured
    if not honoured:
        log.warning("S3 endpoint %s ignores conditional writes (If-None-Match): one writer per URI is not "
                    "enforced there; do not run two writers of one output at once", cache_key[0])


@contextmanager
def _local_commit_lock(target: str) -> Iterator[None]:
    """Serialize local commits next to ``target``: an exclusive ``flock`` on its parent directory
    (between processes and threads alike; nothing is created)."""
    import fcntl

    parent = os.path.dirname(target) or "."
    os.makedirs(parent, exist_ok=True)
    fd = os.open(parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _check_unchanged_local(loc: Location, seen: str | None) -> None:
    """Under the commit lock: fail when the manifest changed since the writer started."""
    if _read_manifest_tagged(loc)[1] != seen:
        raise ConcurrentWriteError(loc.uri)


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
        raise _missing_bucket(loc, "open the bucket of")


def _delete_parts(loc: Location, names: set[str]) -> None:
    for name in sorted(names):
        try:
            loc.fs.delete_file(loc.child(name).path)
        except FileNotFoundError:
            pass
        except (OSError, pa.ArrowException) as e:
            log.warning("could not delete stale part %s/%s: %s", loc.uri, name, _one_line(e))


class _HashingSink:
    """A write-only file that passes bytes on to ``raw`` and keeps their count and sha256."""

    def __init__(self, raw: pa.NativeFile) -> None:
        self.raw, self.size, self.sha256, self.closed = raw, 0, hashlib.sha256(), False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.sha256.update(view)
        self.size += view.nbytes
        self.raw.write(data)
        return view.nbytes

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.raw.flush()

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.raw.close()


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
        identity: Any = None,
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
        self.identity = identity
        self.rows = 0
        self.manifest: dict[str, Any] | None = None
        self._loc = resolve(uri)
        self._id = uuid.uuid4().hex[:12]
        self._state = "new"
        self._stage: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._written: list[str] = []
        self._seen: str | None = None  # the manifest tag when the writer opened: the commit's condition
        self._found_parts: set[str] = set()  # unlisted parts present at open (crashed or losing writers)
        self._old_parts: set[str] = set()  # the parts of the table this writer replaces
        self._sink: _HashingSink | None = None
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
        manifest, self._seen = _read_manifest_tagged(self._loc)
        if self._loc.is_s3:
            listed = {p.get("name") for p in (manifest or {}).get("parts", [])}
            with _io(self._loc, "list"):
                entries = self._loc.fs.get_file_info(pafs.FileSelector(self._loc.path, allow_not_found=True))
            self._found_parts = {e.base_name for e in entries if _PART_RE.match(e.base_name)} - listed
            self._old_parts = listed
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
            self._sink = _HashingSink(loc.fs.open_output_stream(path, compression=None))
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
        size, sha = self._sink.size, self._sink.sha256.hexdigest()
        self._writer = self._sink = None
        self._parts.append({"name": posixpath.basename(self._written[-1]), "rows": self._part_rows,
                            "bytes": size, "sha256": sha})
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
                "total_rows": self.rows, "created": _now(), "attempt": self._id, "parts": self._parts,
            }
            if self.identity is not None:
                manifest["identity"] = self.identity.to_json()
            data = _manifest_bytes(manifest)
            if self._loc.is_s3:
                _put_manifest_s3(self._loc, data, self._seen)  # one conditional PUT: the commit
            else:
                self._commit_local(data)
        except BaseException:
            self.abort()
            raise
        self._state = "committed"
        self.manifest = manifest
        if self._loc.is_s3:
            # only parts that were there when this writer opened: the table it replaced and
            # writers that started earlier (crashed, or losing now); never a later writer's parts
            _delete_parts(self._loc, (self._found_parts | self._old_parts) - {p["name"] for p in self._parts})
        else:
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
            with _local_commit_lock(target):
                _check_unchanged_local(self._loc, self._seen)
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
    identity: Any = None,
) -> dict[str, Any]:
    """Write a whole table atomically; returns the manifest (recording ``identity``, a
    :class:`guardsmith.identity.WorkIdentity`, when given).

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
    with TableWriter(uri, schema, schema_name, rows_per_part=rows_per_part, identity=identity) as writer:
        writer.write(table)
    assert writer.manifest is not None
    return writer.manifest


# --------------------------------------------------------------------------- folders

def default_transfer_config() -> Any:
    """boto3 ``TransferConfig``: 64 MiB multipart threshold and chunks, 8 concurrent requests."""
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=64 * _MiB, multipart_chunksize=64 * _MiB,
                          max_concurrency=8, use_threads=True)


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * _MiB):
            h.update(chunk)
    return h.hexdigest()


def _scan_folder(root: str) -> list[dict[str, Any]]:
    """Manifest entries (path, size, sha256) of every file under ``root``, sorted."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if rel == MANIFEST:
                continue
            files.append({"path": rel, "size": os.path.getsize(full), "sha256": _sha256_file(full)})
    return files


def _folder_manifest(files: list[dict[str, Any]], identity: Any = None, root: str | None = None) -> dict[str, Any]:
    # the attempt id makes every commit's manifest unique, so a commit conditional on the manifest
    # a writer saw never mistakes an identical re-commit for "unchanged"
    manifest: dict[str, Any] = {"format": FOLDER_FORMAT, "version": 2, "created": _now(),
                                "attempt": uuid.uuid4().hex[:12],
                                "total_bytes": sum(f["size"] for f in files), "files": files}
    if root is not None:
        manifest["root"] = root  # the files live under <uri>/<root>/ (an immutable version)
    if identity is not None:
        manifest["identity"] = identity.to_json()
    return manifest


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


_ANY = object()


def _materialize_local(target: str, files: list[tuple[str, int]], manifest: dict[str, Any],
                       fetch: Any, label: str, seen: Any = _ANY) -> None:
    """Fill a staging sibling of ``target`` with ``fetch(stage)`` then rename it in; with ``seen``
    (the manifest tag when the writer started) the rename happens only if the target's manifest
    is still that one (else :class:`ConcurrentWriteError`)."""
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
        local_manifest = {k: v for k, v in manifest.items() if k != "root"}  # a local copy is flat
        with open(os.path.join(stage, MANIFEST), "w") as f:
            json.dump(local_manifest, f, indent=1)
        with _local_commit_lock(target):
            if seen is not _ANY:
                _check_unchanged_local(Location(_LOCAL, target), seen)
                _check_local_folder_target(target)
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


def _list_keys(client: Any, bucket: str, prefix: str, delimiter: str | None = None) -> Iterator[str]:
    """Keys (or, with ``delimiter``, common prefixes) under ``prefix``."""
    kwargs = {"Bucket": bucket, "Prefix": prefix, **({"Delimiter": delimiter} if delimiter else {})}
    for page in client.get_paginator("list_objects_v2").paginate(**kwargs):
        if delimiter:
            yield from (p["Prefix"] for p in page.get("CommonPrefixes", []))
        else:
            yield from (o["Key"] for o in page.get("Contents", []))


def _delete_keys(client: Any, bucket: str, keys: list[str], label: str) -> None:
    """Best-effort delete (cleanup after a commit or a failed attempt)."""
    for i in range(0, len(keys), 1000):
        batch = keys[i:i + 1000]
        try:
            client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
        except Exception as e:  # noqa: BLE001 - cleanup is best effort
            log.warning("could not delete %d stale objects of %s: %s", len(batch), label, _one_line(e))


def upload_dir(local_dir: str, uri: str, *, transfer_config: Any = None, identity: Any = None) -> dict[str, Any]:
    """Copy a local folder (model, checkpoint) to ``uri`` and commit it; returns the manifest.

    The manifest lists every file's path, size and sha256, and records ``identity`` (a
    :class:`guardsmith.identity.WorkIdentity`) when given. On S3 the files go up as a new immutable
    version ``<uri>/versions/<id>/`` through boto3's transfer manager (multipart above the
    threshold, concurrent; ``transfer_config`` is a ``boto3.s3.transfer.TransferConfig``), then
    ``<uri>/_SUCCESS`` is switched to it with one conditional PUT: the previous version stays
    readable until then, and of two concurrent uploads exactly one commits (the other raises
    :class:`ConcurrentWriteError` and removes its version). The previous version is kept; older
    ones are removed. A local ``uri`` gets a staged copy renamed into place under the same rule.
    """
    src = resolve(local_dir)
    if src.is_s3:
        raise GuardsmithError(f"upload_dir needs a local folder, got {src.uri}")
    if not os.path.isdir(src.path):
        raise GuardsmithError(f"{src.path} is not a folder" if os.path.exists(src.path)
                              else f"{src.path} does not exist")
    dst = resolve(uri)
    if not dst.is_s3:
        _, seen = _read_manifest_tagged(dst) if os.path.isdir(dst.path) else (None, None)
        entries = _scan_folder(src.path)
        files = [(f["path"], f["size"]) for f in entries]
        manifest = _folder_manifest(entries, identity)
        with _io(dst, "write"):
            _materialize_local(dst.path, files, manifest, _copy_files(src.path, files), src.path, seen)
        return manifest

    from boto3.s3.transfer import create_transfer_manager

    bucket, prefix = dst.bucket_key
    key = (lambda rel: f"{prefix}/{rel}" if prefix else rel)
    client = _client(dst)
    with _boto_io(dst, "open the bucket of"):
        client.head_bucket(Bucket=bucket)
    old, seen = _read_manifest_tagged(dst)
    if old is not None and old["format"] != FOLDER_FORMAT:
        raise GuardsmithError(f"refusing to overwrite {dst.uri}: it is a guardsmith table, not a folder")
    with _boto_io(dst, "list"):
        found = set(_list_keys(client, bucket, key(VERSIONS) + "/", delimiter="/"))  # present at start
    entries = _scan_folder(src.path)
    manifest = _folder_manifest(entries, identity)
    root = manifest["root"] = f"{VERSIONS}/{manifest['attempt']}"
    try:
        with _boto_io(dst, "upload to"):
            with create_transfer_manager(client, transfer_config or default_transfer_config()) as tm:
                futures = [tm.upload(os.path.join(src.path, f["path"]), bucket, key(f"{root}/{f['path']}"))
                           for f in entries]
                for fut in futures:
                    fut.result()
        _put_manifest_s3(dst, _manifest_bytes(manifest), seen)  # the commit
    except BaseException:
        _delete_keys(client, bucket, [key(f"{root}/{f['path']}") for f in entries], dst.uri)
        raise
    # cleanup: versions that were there when this upload started, except the one it replaced
    # (kept for readers still downloading it), and the files of a pre-version (flat) folder
    stale: list[str] = []
    keep = key(old["root"]) + "/" if old and old.get("root") else None
    try:
        for version in sorted(found - {keep}):
            stale += list(_list_keys(client, bucket, version))
        if old is not None and not old.get("root"):
            stale += [key(_safe_name(f.get("path"), dst)) for f in old.get("files", [])]
    except Exception as e:  # noqa: BLE001 - cleanup is best effort
        log.warning("could not list stale versions of %s: %s", dst.uri, _one_line(e))
    _delete_keys(client, bucket, stale, dst.uri)
    log.info("uploaded %s to %s (%s): %d files, %d bytes", src.path, dst.uri, root, len(entries),
             manifest["total_bytes"])
    return manifest


def download_dir(uri: str, local_dir: str, *, transfer_config: Any = None) -> str:
    """Copy a committed folder from ``uri`` to ``local_dir`` (replaced atomically); returns its path.

    Follows the manifest to the current version; refuses a folder without a ``_SUCCESS`` manifest
    (an upload that did not finish). The local copy is flat and carries the manifest (without
    ``root``), so :func:`content_id` of the copy equals that of the source.
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
        root = _safe_name(manifest["root"], src) if manifest.get("root") else None
    except (KeyError, TypeError, ValueError):
        raise GuardsmithError(f"{src.uri}/{MANIFEST} is damaged: bad files list") from None
    base = src.child(root) if root else src

    if not src.is_s3:
        with _io(dst, "write"):
            _materialize_local(dst.path, files, manifest, _copy_files(base.path, files), src.uri)
        return dst.path

    from boto3.s3.transfer import create_transfer_manager

    bucket, prefix = base.bucket_key
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


# --------------------------------------------------------------------------- identity

def folder_file(uri: str, name: str) -> str:
    """URI of file ``name`` inside the committed folder ``uri``, following the manifest to the current
    version (``<uri>/versions/<id>/name`` for a versioned model); ``<uri>/name`` otherwise."""
    loc = resolve(uri)
    manifest = _read_manifest(loc) if _info(loc).type == pafs.FileType.Directory else None
    root = manifest.get("root") if manifest and manifest.get("format") == FOLDER_FORMAT else None
    return join(uri, _safe_name(root, loc), name) if root else join(uri, name)


def is_location(text: str) -> bool:
    """Whether ``text`` names storage (``s3://``, ``file://`` or a local path) rather than a spec
    such as ``openai:...``, ``hf`` or a Hugging Face model id: a plain path counts when it exists
    or is written as a path (``/``, ``./``, ``../``, ``~``)."""
    s = str(text).strip()
    if not s:
        return False
    if s.startswith(("s3://", "file://")):
        return True
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", s):  # another scheme or a backend spec
        return False
    return s.startswith(("/", "./", "../", "~")) or os.path.exists(os.path.expanduser(s))


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def manifest_id(manifest: dict[str, Any]) -> str:
    """The content identity of a committed manifest: a digest of its parts (rows, bytes, sha256)
    or files (path, size, sha256), never of commit times, attempt ids or where the files live.
    Manifests written before part hashes were recorded fall back to part names (unique per write)
    or, for folders, to the commit time: a rewrite then counts as a change."""
    if manifest.get("format") == TABLE_FORMAT:
        parts = manifest.get("parts") or []
        if all(isinstance(p, dict) and "sha256" in p for p in parts):
            basis = [{"rows": p.get("rows"), "bytes": p.get("bytes"), "sha256": p["sha256"]} for p in parts]
        else:
            basis = [{"name": p.get("name"), "rows": p.get("rows")} for p in parts if isinstance(p, dict)]
        return _digest({"format": TABLE_FORMAT, "schema_name": manifest.get("schema_name"), "parts": basis})
    files = manifest.get("files") or []
    if all(isinstance(f, dict) and "sha256" in f for f in files):
        return _digest({"format": FOLDER_FORMAT,
                        "files": [{"path": f.get("path"), "size": f.get("size"), "sha256": f["sha256"]}
                                  for f in files]})
    return _digest({"format": FOLDER_FORMAT, "created": manifest.get("created"),
                    "files": [{"path": f.get("path"), "size": f.get("size")} for f in files if isinstance(f, dict)]})


def content_id(uri: str) -> str:
    """What is at ``uri``, as a digest: a committed table or folder -> :func:`manifest_id` of its
    manifest (one small read); a plain file -> the sha256 of its bytes (streamed); a local folder
    without a manifest (e.g. a Hugging Face model folder) -> a digest of its files' paths and
    sha256. An S3 prefix without a manifest is an error (an unfinished write)."""
    loc = resolve(uri)
    info = _info(loc)
    if info.type == pafs.FileType.NotFound:
        raise _not_found(loc)
    if info.type == pafs.FileType.File:
        h = hashlib.sha256()
        with _io(loc, "read"), loc.fs.open_input_stream(loc.path) as f:
            while chunk := f.read(4 * _MiB):
                h.update(chunk)
        return h.hexdigest()
    manifest = _read_manifest(loc)
    if manifest is not None:
        return manifest_id(manifest)
    if loc.is_s3:
        raise GuardsmithError(f"{loc.uri} is not a committed guardsmith table or folder (no {MANIFEST} "
                              "manifest): an earlier write may have crashed")
    with _io(loc, "read"):
        return _digest({"format": "local-folder",
                        "files": [{"path": f["path"], "sha256": f["sha256"]} for f in _scan_folder(loc.path)]})


def recorded_identity(uri: str) -> dict[str, Any] | None:
    """The work identity (``WorkIdentity.to_json()``) recorded in the commit manifest at ``uri``;
    None when nothing is committed there or the manifest records none."""
    loc = resolve(uri)
    if _info(loc).type != pafs.FileType.Directory:
        return None
    manifest = _read_manifest(loc)
    identity = manifest.get("identity") if manifest else None
    return identity if isinstance(identity, dict) else None


# --------------------------------------------------------------------------- served folders: promotion
# A served model URI keeps versions <uri>/versions/<id>/ behind the pointer <uri>/_SUCCESS (the
# layout upload_dir writes); a switch is one conditional write of the pointer (one writer per URI).

KEEP_VERSIONS = 3
"""Versions a promotion keeps at a served URI: the current one and the last ones it replaced."""

VERSIONS = "versions"
HISTORY = 20  # pointer switches remembered for rollback (versions no longer kept are skipped)


@dataclass(frozen=True)
class ModelVersion:
    """One kept version of a served model URI."""

    id: str
    uri: str  # <uri>/versions/<id>: this version as a model URI of its own ("" when not addressable)
    current: bool
    promoted_at: str
    source: str  # where it was promoted from (redacted); "" when it was uploaded in place
    total_bytes: int


@dataclass(frozen=True)
class Promotion:
    """What a promotion or rollback did."""

    uri: str
    current: str
    previous: str | None
    copied_from: str | None = None
    removed: tuple[str, ...] = field(default_factory=tuple)
    rollback: bool = False

    def __str__(self) -> str:
        if self.rollback:
            lines = [f"{redact(self.uri)}: current version {self.current} (rolled back from {self.previous})"]
        else:
            lines = [f"{redact(self.uri)}: current version {self.current}"
                     + (f" (copied from {redact(self.copied_from)})" if self.copied_from else ""),
                     f"replaced version: {self.previous or '-'} (back to it: guardsmith models rollback {redact(self.uri)})"]
        if self.removed:
            lines.append(f"removed old versions: {', '.join(self.removed)}")
        lines.append("servers read the pointer at start: kubectl rollout restart the guard deployments")
        return "\n".join(lines)


def _now_precise() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _version_uri(uri: str, vid: str) -> str:
    return join(str(uri), VERSIONS, vid)


def _read_pointer(uri: str) -> tuple[dict[str, Any] | None, str | None]:
    """The pointer manifest of a served URI and its tag (what the switch is conditional on)."""
    manifest, tag = _read_manifest_tagged(resolve(uri))
    if manifest is not None and manifest.get("format") != FOLDER_FORMAT:
        raise GuardsmithError(f"{redact(uri)} is a guardsmith table, not a model folder")
    return manifest, tag


def _write_pointer(uri: str, manifest: dict[str, Any], seen: str | None) -> None:
    """Switch the pointer: storage's conditional commit (ConcurrentWriteError when another writer
    switched it since ``seen`` was read)."""
    loc = resolve(uri)
    data = _manifest_bytes(manifest)
    if loc.is_s3:
        _put_manifest_s3(loc, data, seen)
        return
    with _local_commit_lock(loc.path):
        _check_unchanged_local(loc, seen)
        write_bytes_atomic(join(str(uri), MANIFEST), data)


def _read_version(uri: str, vid: str) -> dict[str, Any] | None:
    manifest = _read_manifest(resolve(_version_uri(uri, vid)))
    return manifest if manifest and manifest.get("format") == FOLDER_FORMAT else None


def _write_version_record(uri: str, vid: str, manifest: dict[str, Any]) -> None:
    """The version's own manifest (flat: the files beside it), which makes it a model URI."""
    record = {k: v for k, v in manifest.items() if k not in ("root", "history")}
    record["attempt"] = vid
    write_bytes_atomic(join(_version_uri(uri, vid), MANIFEST), _manifest_bytes(record))


def _current_id(pointer: dict[str, Any] | None) -> str | None:
    root = (pointer or {}).get("root") or ""
    return root.split("/", 1)[1] if root.startswith(VERSIONS + "/") else None


def _listed_versions(uri: str) -> list[str]:
    where = join(str(uri), VERSIONS)
    if not exists(where):
        return []
    return [n for n in list_dir(where) if ".tmp-" not in n]


def model_versions(uri: str) -> list[ModelVersion]:
    """The versions kept at ``uri``, oldest first (by promotion time), the current one marked."""
    pointer, _ = _read_pointer(uri)
    if pointer is None:
        raise GuardsmithError(f"{redact(uri)} holds no committed model (no pointer manifest)")
    current = _current_id(pointer)
    out = []
    for vid in _listed_versions(uri):
        record = _read_version(uri, vid)
        info = record or (pointer if vid == current else {})
        out.append(ModelVersion(id=vid, uri=_version_uri(uri, vid) if record else "", current=vid == current,
                                promoted_at=str(info.get("promoted_at") or info.get("created") or ""),
                                source=str(info.get("promoted_from") or ""),
                                total_bytes=int(info.get("total_bytes") or 0)))
    if current is None:  # a folder committed flat (before versions): the files beside the pointer
        out.append(ModelVersion(id="(flat)", uri="", current=True, promoted_at=str(pointer.get("created") or ""),
                                source="", total_bytes=int(pointer.get("total_bytes") or 0)))
    return sorted(out, key=lambda v: (v.promoted_at, v.id))


def _copy_into_version(source: str, uri: str, vid: str, origin: str | None = None) -> dict[str, Any]:
    """Copy the model at ``source`` into ``<uri>/versions/<vid>/`` and write its record; returns the
    version manifest. S3 to S3: server-side copies of the files its manifest lists; otherwise from a
    local folder (an S3 source is downloaded into the cache first)."""
    dst = resolve(_version_uri(uri, vid))
    src = resolve(source) if source.startswith("s3://") else None
    config = default_transfer_config() if dst.is_s3 else None
    if dst.is_s3 and src is not None:
        src_manifest = _read_manifest(src)
        if src_manifest is None or src_manifest.get("format") != FOLDER_FORMAT:
            raise GuardsmithError(f"{redact(source)} is not a committed model folder (no manifest): "
                                  "an upload may not have finished")
        files = list(src_manifest.get("files") or [])
        if not any(f.get("path") == "config.json" for f in files):
            raise GuardsmithError(f"{redact(source)} is not a model folder (no config.json)")
        root = src_manifest.get("root")
        base = src.child(_safe_name(root, src)) if root else src
        (sb, sp), (db, dp) = base.bucket_key, dst.bucket_key
        client = _client(dst)

        def put(f: dict[str, Any]) -> None:
            rel = _safe_name(f["path"], src)
            client.copy({"Bucket": sb, "Key": f"{sp}/{rel}" if sp else rel}, db, f"{dp}/{rel}", Config=config)
        identity = src_manifest.get("identity")
    else:
        from guardsmith.model_store import local_model

        folder = local_model(source)
        entries = _scan_folder(str(folder))
        files = [f for f in entries if not f["path"].startswith(VERSIONS + "/")]
        identity = recorded_identity(str(folder))
        if dst.is_s3:
            (db, dp), client = dst.bucket_key, _client(dst)

            def put(f: dict[str, Any]) -> None:
                client.upload_file(str(folder / f["path"]), db, f"{dp}/{f['path']}", Config=config)
        else:
            def put(f: dict[str, Any]) -> None:
                target = Path(dst.path) / f["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(folder / f["path"], target)
    try:
        with _boto_io(dst, "copy a model into") if dst.is_s3 else _io(dst, "write"):
            with ThreadPoolExecutor(max_workers=4) as pool:
                list(pool.map(put, files))
        manifest = _folder_manifest([{k: f[k] for k in ("path", "size", "sha256") if k in f} for f in files])
        if isinstance(identity, dict):
            manifest["identity"] = identity
        manifest.update(promoted_from=redact(source if origin is None else origin), promoted_at=_now_precise())
        _write_version_record(uri, vid, manifest)
    except BaseException:
        remove(_version_uri(uri, vid))
        raise
    return manifest


def _remove_flat_files(uri: str, pointer: dict[str, Any]) -> None:
    """After a flat folder was moved into a version: delete its files beside the pointer."""
    loc = resolve(uri)
    parents = set()
    for f in pointer.get("files") or []:
        rel = _safe_name(f.get("path"), loc)
        if not rel.startswith(VERSIONS + "/"):
            remove(join(str(uri), rel))
            parents.update(Path(rel).parents)
    if not loc.is_s3:  # folders the files left empty (S3 has none)
        for rel in sorted((p for p in parents if str(p) != "."), key=lambda p: -len(p.parts)):
            try:
                os.rmdir(Path(loc.path) / rel)
            except OSError:
                pass


def _switch(uri: str, target: str, target_manifest: dict[str, Any], pointer: dict[str, Any] | None,
            seen: str | None, history: list[str]) -> None:
    new = {k: v for k, v in target_manifest.items() if k != "history"}
    new.update(root=f"{VERSIONS}/{target}", history=history)
    _write_pointer(uri, new, seen)
    if pointer is not None and _current_id(pointer) is None:
        _remove_flat_files(uri, pointer)


def _adopt_current(uri: str, pointer: dict[str, Any] | None) -> str | None:
    """Make the current version a kept, addressable one before the pointer moves away from it: write
    its record when it has none (uploaded by upload_dir), or copy a flat folder into a
    version. Returns its id (None when nothing is committed)."""
    if pointer is None:
        return None
    current = _current_id(pointer)
    if current is None:
        current = uuid.uuid4().hex[:12]
        _copy_into_version(str(uri), str(uri), current, origin="")
    elif _read_version(uri, current) is None:
        _write_version_record(uri, current, {**pointer, "promoted_at": pointer.get("created", "")})
    return current


def promote_model(uri: str, *, source: str | None = None, version: str | None = None,
                  keep: int = KEEP_VERSIONS) -> Promotion:
    """Point the served model ``uri`` at a new version: a copy of the model at ``source`` (a new
    version), or the kept version ``version``. The replaced version stays kept (rollback);
    after a copy, versions beyond the ``keep`` newest (current and rollback history) are removed."""
    if (source is None) == (version is None):
        raise GuardsmithError("promote needs exactly one of --from SOURCE (a new version) or --version ID (a kept one)")
    if keep < 2:
        raise GuardsmithError(f"--keep must be at least 2 (the current version and one to roll back to), got {keep}")
    pointer, seen = _read_pointer(uri)
    at_start = set(_listed_versions(uri))
    if version is not None:
        record = _read_version(uri, version)
        if record is None:
            kept = ", ".join(v.id for v in model_versions(uri)) if pointer else "none"
            raise GuardsmithError(f"{redact(uri)} keeps no version {version!r} (kept: {kept})")
        previous = _adopt_current(uri, pointer)
        if previous == version:
            return Promotion(uri=str(uri), current=version, previous=None)
        history = [h for h in [previous, *(pointer or {}).get("history", [])] if h and h != version]
        _switch(uri, version, record, pointer, seen, history[:HISTORY])
        return Promotion(uri=str(uri), current=version, previous=previous)

    assert source is not None
    if resolve(source).uri.rstrip("/") == resolve(uri).uri.rstrip("/"):
        raise GuardsmithError(f"--from {redact(source)} is the served URI itself")
    previous = _adopt_current(uri, pointer)
    vid = uuid.uuid4().hex[:12]
    manifest = _copy_into_version(source, str(uri), vid)
    history = [h for h in [previous, *(pointer or {}).get("history", [])] if h][:keep - 1]
    try:
        _switch(uri, vid, manifest, pointer, seen, history)
    except BaseException:
        remove(_version_uri(uri, vid))
        raise
    stale = sorted(at_start - {vid, *history})
    for old in stale:
        remove(_version_uri(uri, old))
    return Promotion(uri=str(uri), current=vid, previous=previous, copied_from=source, removed=tuple(stale))


def rollback_model(uri: str) -> Promotion:
    """Point the served model ``uri`` back at the version that was current before the last
    promotion or rollback target switch (the first kept one of the pointer's history)."""
    pointer, seen = _read_pointer(uri)
    if pointer is None:
        raise GuardsmithError(f"{redact(uri)} holds no committed model (no pointer manifest)")
    current = _current_id(pointer)
    history = [h for h in pointer.get("history") or [] if h != current]
    for i, vid in enumerate(history):
        record = _read_version(uri, vid)
        if record is not None:
            _adopt_current(uri, pointer)
            _switch(uri, vid, record, pointer, seen, history[i + 1:])
            return Promotion(uri=str(uri), current=vid, previous=current, rollback=True)
    raise GuardsmithError(f"{redact(uri)} has no earlier version to roll back to "
                          "(promotions record one; see guardsmith models versions)")
