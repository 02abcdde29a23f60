"""What a Hugging Face model folder must hold, checked before anything loads it.

Loading a damaged folder with transformers gives a long traceback deep inside the library (a
missing tokenizer, a truncated ``*.safetensors`` file, a ``config.json`` that is not JSON).
:func:`check_model_folder` finds those cases cheaply (it reads only ``config.json``, the
tokenizer file names and each safetensors header) and raises a one-line
:class:`~guardsmith.errors.GuardsmithError` naming the folder and what is wrong;
:func:`loading` turns what the libraries still raise while loading into the same kind of line.
Used wherever a model folder is loaded: training (`guardsmith.training`) and the transformers
inference backend.
"""
from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from guardsmith.errors import GuardsmithError, redact

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model")
"""A folder has a tokenizer when it holds at least one of these."""
_MAX_HEADER = 100 * 1024 * 1024


def _json_file(path: Path, what: str) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise GuardsmithError(f"{path} is not valid JSON (not UTF-8 text): the {what} is damaged") from None
    except json.JSONDecodeError as e:
        raise GuardsmithError(f"{path} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}): "
                              f"the {what} is damaged") from None


def check_safetensors(path: Path) -> None:
    """A one-line error when ``path`` is not a complete safetensors file (truncated, or not one)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise GuardsmithError(f"{path} is truncated ({size} bytes): not a complete safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, _MAX_HEADER):
            raise GuardsmithError(f"{path} is truncated or not a safetensors file: its header claims {n} bytes, "
                                  f"the file has {size}")
        raw = fh.read(n)
    try:
        header = json.loads(raw)
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise GuardsmithError(f"{path} is damaged: its safetensors header is not valid") from None
    expected = 8 + n + max(ends, default=0)
    if size < expected:
        raise GuardsmithError(f"{path} is truncated: {size} bytes, its header says {expected}")


_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def hub_hint(ref: str | Path) -> str:
    """For a missing folder named like a Hugging Face hub id (``owner/name``), how to get the model;
    empty otherwise."""
    text = str(ref)
    if not _HUB_ID.match(text) or Path(text).exists():
        return ""
    local = text.split("/")[-1]
    return (f"; {text!r} looks like a Hugging Face hub id: guardsmith loads models from a folder or object "
            f"storage and does not download from the hub (pods usually have no route to it). Download it where "
            f"there is network (huggingface-cli download {text} --local-dir ./{local}), then pass ./{local}, "
            f"or upload it: guardsmith models upload ./{local} s3://<bucket>/models/{local}")


def check_model_folder(folder: str | Path, *, what: str = "model", tokenizer: bool = True, weights: bool = True) -> Path:
    """``folder`` if it looks loadable; else a one-line GuardsmithError naming it and what is wrong.

    Checks: the folder exists; ``config.json`` is a JSON object; (``tokenizer``) a tokenizer file is
    there and ``tokenizer_config.json``, when present, is JSON; (``weights``) weights are there, the
    shards a ``*.safetensors.index.json`` lists exist, and every ``*.safetensors`` file is complete.
    """
    path = Path(folder)
    if not path.is_dir():
        raise GuardsmithError(f"{what} folder {redact(path)} does not exist{hub_hint(folder)}")
    config = path / "config.json"
    if not config.is_file():
        raise GuardsmithError(f"{path} is not a {what} folder: no config.json")
    if not isinstance(_json_file(config, f"{what} config"), dict):
        raise GuardsmithError(f"{config} must be a JSON object: the {what} config is damaged")
    if tokenizer:
        if not any((path / name).is_file() for name in TOKENIZER_FILES):
            raise GuardsmithError(f"{path} has no tokenizer (none of {', '.join(TOKENIZER_FILES[:3])}, ...): "
                                  f"save the tokenizer into the {what} folder")
        if (path / "tokenizer_config.json").is_file():
            _json_file(path / "tokenizer_config.json", "tokenizer config")
    if weights:
        shards = sorted(path.glob("*.safetensors"))
        for index in sorted(path.glob("*.safetensors.index.json")):
            listed = _json_file(index, "weights index")
            names = sorted(set((listed.get("weight_map") or {}).values())) if isinstance(listed, dict) else []
            missing = [n for n in names if not (path / n).is_file()]
            if missing:
                raise GuardsmithError(f"{path} lacks weight file {missing[0]} listed in {index.name}"
                                      + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
        if not shards and not any(path.glob("pytorch_model*.bin")) and not (path / "adapter_config.json").is_file():
            raise GuardsmithError(f"{path} has no weights (no *.safetensors or pytorch_model*.bin)")
        for shard in shards:
            check_safetensors(shard)
    return path


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return redact(text if len(text) <= limit else text[: limit - 3] + "...")


@contextmanager
def loading(folder: str | Path, what: str = "model") -> Iterator[None]:
    """Turn what transformers/safetensors raise while loading ``folder`` into one GuardsmithError line."""
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - safetensors comes with transformers
        SafetensorError = OSError  # noqa: N806
    try:
        yield
    except GuardsmithError:
        raise
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        raise GuardsmithError(f"cannot load the {what} from {redact(folder)}: {_one_line(exc)}") from None
