"""Inference backends behind one interface: transformers, vLLM (GPU images) and OpenAI-compatible HTTP.

Importing this package imports neither torch nor vllm; each backend imports what it needs
when it is built. See docs/inference.md.
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from guardsmith.errors import GuardsmithError, redact
from guardsmith.inference.base import Backend, Generation, Message, SamplingParams
from guardsmith.inference.openai_backend import OpenAIBackend
from guardsmith.inference.transformers_backend import TransformersBackend
from guardsmith.inference.vllm_backend import VLLMBackend

if TYPE_CHECKING:
    from guardsmith.settings import BackendChoice, Endpoint

__all__ = [
    "Backend", "Generation", "Message", "SamplingParams", "OpenAIBackend", "TransformersBackend",
    "VLLMBackend", "BACKENDS", "make_backend", "open_backend", "option_value", "parse_spec",
]

BACKENDS: dict[str, type[Backend]] = {
    "transformers": TransformersBackend,
    "vllm": VLLMBackend,
    "openai": OpenAIBackend,
}


def option_value(text: str) -> Any:
    """Query-string option text -> bool/int/float/str."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_spec(spec: str | dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Split a backend spec into ``(kind, constructor kwargs)``.

    Strings: ``transformers:/path``, ``vllm:/path``, ``openai:http://host:port/v1?model=NAME&opt=v``
    (query options other than `model` become keyword options). Dicts: ``{"kind": ..., "path": ...}``
    for local models, ``{"kind": "openai", "url": ..., "model": ...}``, or ``{"spec": "...", **options}``.
    """
    if isinstance(spec, dict):
        opts = dict(spec)
        if "spec" in opts:
            kind, base = parse_spec(opts.pop("spec"))
            return kind, {**base, **opts}
        kind = str(opts.pop("kind", opts.pop("backend", ""))).lower()
        if kind in ("transformers", "vllm"):
            path = opts.pop("path", None) or opts.pop("model_path", None) or opts.pop("model", None)
            if not path:
                raise GuardsmithError(f"the {kind} backend spec needs 'path' (a local model folder)")
            opts["model_path"] = str(path)
        elif kind == "openai":
            url = opts.pop("url", None) or opts.pop("base_url", None)
            if not url:
                raise GuardsmithError("the openai backend spec needs 'url' (e.g. http://host:8000/v1)")
            opts["base_url"] = str(url)
        _check_kind(kind)
        return kind, opts
    if not isinstance(spec, str) or ":" not in spec:
        raise GuardsmithError(f"backend spec must look like 'kind:location' (kinds: {', '.join(BACKENDS)}), got {redact(spec)!r}")
    kind, rest = spec.split(":", 1)
    kind = kind.strip().lower()
    _check_kind(kind)
    if kind == "openai":
        parts = urlsplit(rest)
        opts = {k: option_value(v) for k, v in parse_qsl(parts.query)}
        if "model" in opts:
            opts["model"] = str(opts["model"])
        opts["base_url"] = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        return kind, opts
    if rest.startswith("file://"):
        rest = rest[len("file://"):]
    if "://" in rest:
        raise GuardsmithError(f"{kind} loads a local model folder; download {redact(rest)} first "
                              "(guardsmith.storage.download_dir) and pass the folder")
    if not rest:
        raise GuardsmithError(f"the {kind} backend spec needs a model folder: '{kind}:/path/to/model'")
    return kind, {"model_path": rest}


def _check_kind(kind: str) -> None:
    if kind not in BACKENDS:
        raise GuardsmithError(f"unknown inference backend {kind!r}; choose one of {', '.join(BACKENDS)}")


def make_backend(spec: str | dict[str, Any], **options: Any) -> Backend:
    """Build a backend from a spec string or dict; keyword `options` override the spec's own."""
    kind, kwargs = parse_spec(spec)
    kwargs.update(options)
    if kind == "openai" and "model" not in kwargs:
        raise GuardsmithError("the openai backend needs a model name: add ?model=NAME to the URL")
    cls = BACKENDS[kind]
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as exc:
        raise GuardsmithError(f"bad options for the {kind} backend: {exc}") from None
    return cls(**kwargs)


LOCAL_KINDS = ("transformers", "vllm")


def open_backend(spec: str, *, choice: BackendChoice | None = None, endpoint: Endpoint | None = None,
                 **options: Any) -> Backend:
    """The one way a stage opens a backend: from a spec and the stage's settings groups.

    ``spec`` is ``openai:URL?model=NAME``, ``vllm:FOLDER``, ``transformers:FOLDER`` or a bare model
    folder (``choice.backend`` then picks transformers or vllm); a folder may be a local path,
    ``file://`` or ``s3://`` URI (S3 folders are downloaded and cached by
    :func:`guardsmith.model_store.local_model`). ``endpoint`` fills the openai options the spec's
    query does not set (``api_key_env``, ``timeout_s``, ``max_retries``, ``retry_after_max_s``) and
    ``choice.concurrency`` the requests in flight (openai) or the batch size (transformers).
    ``choice.backend_options``, then ``options``, are passed on as backend keywords and win.
    """
    from guardsmith.model_store import local_model

    text = str(spec)
    kind, _, rest = text.partition(":")
    kind = kind.strip().lower()
    if kind not in BACKENDS:  # a bare model folder (path, file:// or s3:// URI)
        kind, rest = (choice.backend if choice else "transformers"), text
        if kind not in LOCAL_KINDS:
            raise GuardsmithError(f"unknown backend {kind!r} for a model folder; use {' or '.join(LOCAL_KINDS)}")
    wanted: dict[str, Any] = {}
    if kind == "openai":
        _, given = parse_spec(text)
        if endpoint is not None:
            wanted = {"api_key_env": endpoint.api_key_env, "timeout_s": endpoint.timeout_s,
                      "max_retries": endpoint.max_retries, "retry_after_max_s": endpoint.retry_after_max_s}
        if choice is not None:
            wanted["max_concurrency"] = choice.concurrency
        wanted = {k: v for k, v in wanted.items() if k not in given}
    else:
        text = f"{kind}:{local_model(rest.strip())}"
        if kind == "transformers" and choice is not None:
            wanted["batch_size"] = choice.concurrency
    extra = dict(choice.backend_options or {}) if choice is not None else {}
    return make_backend(text, **{**wanted, **extra, **options})
