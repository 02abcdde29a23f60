"""What both services share on the HTTP side: the FastAPI app skeleton (OpenAI-shaped errors,
request metrics, /health, /ready, /metrics) and running a service, in the foreground (the CLI) or
in a background thread (tests, benchmarks)."""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from guardsmith.errors import GuardsmithError
from guardsmith.serving.api import APIError, api_error_from, bad
from guardsmith.serving.metrics import ServiceMetrics

log = logging.getLogger("guardsmith.serving")

ROUTES = ("/v1/moderations", "/v1/chat/completions", "/v1/models", "/health", "/ready", "/metrics")


def base_app(title: str, metrics: ServiceMetrics, ready: Callable[[], dict[str, Any] | None],
             lifespan: Any = None):
    """A FastAPI app with the shared endpoints and handlers; ``ready()`` returns what /ready reports
    (None: not ready yet, answered 503)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    app = FastAPI(title=title, lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(GuardsmithError)
    async def _user_error(request: Request, exc: GuardsmithError):
        err = api_error_from(exc)
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.exception("request failed")
        err = api_error_from(exc)
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(404)
    async def _no_route(request: Request, exc: Exception):
        return JSONResponse(APIError(404, f"no route for {request.method} {request.url.path}",
                                     code="not_found").body(), status_code=404)

    @app.exception_handler(405)
    async def _no_method(request: Request, exc: Exception):
        return JSONResponse(APIError(405, f"{request.method} is not allowed on {request.url.path}",
                                     code="method_not_allowed").body(), status_code=405)

    @app.middleware("http")
    async def _measure(request: Request, call_next):
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            path = request.url.path
            endpoint = path if path in ROUTES else "other"
            metrics.requests.labels(endpoint, str(status)).inc()
            if endpoint not in ("/metrics", "/health", "/ready"):
                metrics.latency.labels(endpoint).observe(time.perf_counter() - start)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def readiness():
        info = ready()
        if info is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        return {"status": "ready", **info}

    @app.get("/metrics")
    async def prometheus():
        body, kind = metrics.exposition()
        return Response(body, media_type=kind)

    return app


async def json_body(request: Any) -> Any:
    """The request's JSON body; a 400 in OpenAI's shape when it is not JSON."""
    raw = await request.body()
    try:
        return json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise bad("the request body is not valid JSON") from None


def _check_host(host: str, port: int) -> None:
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise GuardsmithError(f"--port must be from 0 to 65535, got {port!r}")
    if not host:
        raise GuardsmithError("--host must not be empty")


class RunningService:
    """A service running in a background thread: `.url` (ends in ``/v1``), `.base`, `.stop()`; a context manager."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *, start_timeout_s: float = 60.0) -> None:
        import uvicorn

        _check_host(host, port)
        self.app = app
        self.host = host
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on",
                                access_log=False, timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main thread
        self._thread = threading.Thread(target=self._server.run, name="guardsmith-service", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + start_timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                raise GuardsmithError(f"the service did not start on {host}:{port} (is the port in use?)")
            if time.monotonic() > deadline:
                self.stop()
                raise GuardsmithError(f"the service did not start on {host}:{port} within {start_timeout_s:g}s")
            time.sleep(0.01)
        self.port: int = self._server.servers[0].sockets[0].getsockname()[1]

    @property
    def base(self) -> str:
        """``http://host:port`` (health, ready and metrics live here)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The base URL for OpenAI clients: ``http://host:port/v1``."""
        return f"{self.base}/v1"

    def stop(self) -> None:
        """Stop serving (waits for the thread; idempotent)."""
        self._server.should_exit = True
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=15)

    def __enter__(self) -> RunningService:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def run_foreground(app: Any, host: str, port: int) -> None:
    """Serve until interrupted (the CLI); uvicorn's own signal handling stops it cleanly."""
    import uvicorn

    _check_host(host, port)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False, timeout_graceful_shutdown=10)
