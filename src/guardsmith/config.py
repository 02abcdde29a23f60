"""Typed stage configs: one dataclass per stage, help text on every field, YAML and CLI loading.

A config field is declared with `option(default, "help text")`. The same dataclass is
- loaded from YAML (`load_config(cls, path, overrides)`), unknown keys and wrong types rejected
  with the file and key named;
- exposed as CLI flags by `stage_command(...)` (one `--flag` per field, help from the field);
- the parameter list of the stage's KFP component.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

from guardsmith.errors import GuardsmithError

C = TypeVar("C")
_MISSING = dataclasses.MISSING


def option(default: Any = _MISSING, help: str = "", *, factory: Callable[[], Any] | None = None) -> Any:
    """A config field with help text. Without a default the field is required."""
    if not help:
        raise ValueError("every config field needs help text")
    meta = {"help": help}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    if default is _MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_help(cls: type) -> dict[str, str]:
    """Field name -> help text."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(inner type, optional?) for `X | None` / `Optional[X]`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, where: str) -> Any:
    inner, optional = _base_type(tp)
    if value is None:
        if optional:
            return None
        raise GuardsmithError(f"{where}: a value is required (got null)")
    origin = typing.get_origin(inner)
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(inner) or (str,)
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        if not isinstance(value, (list, tuple)):
            raise GuardsmithError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, where) for v in value]
    if origin is dict or inner is dict:
        if not isinstance(value, dict):
            raise GuardsmithError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        allowed = typing.get_args(inner)
        if value not in allowed:
            raise GuardsmithError(f"{where}: {value!r} is not one of {', '.join(map(str, allowed))}")
        return value
    if inner is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise GuardsmithError(f"{where}: expected true/false, got {value!r}")
    if inner in (int, float):
        if isinstance(value, bool):
            raise GuardsmithError(f"{where}: expected a number, got {value!r}")
        if inner is int and isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return inner(value) if isinstance(value, str) or inner is float else _exact_int(value, where)
        except ValueError:
            raise GuardsmithError(f"{where}: expected {inner.__name__}, got {value!r}") from None
    if inner is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise GuardsmithError(f"{where}: expected text, got {value!r}")
        return str(value)
    return value


def _exact_int(value: Any, where: str) -> int:
    if not isinstance(value, int):
        raise GuardsmithError(f"{where}: expected int, got {value!r}")
    return value


def _setting(name: str) -> str:
    """A setting as users write it: the config key and its flag, e.g. ``base_model (--base-model)``."""
    return f"{name} (--{name.replace('_', '-')})"


def _checked_values(cls: type, values: dict[str, Any], source: str) -> dict[str, Any]:
    """``values`` coerced to the field types of `cls`; unknown keys and wrong types are one-line errors."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise GuardsmithError(f"{source}: unknown setting(s) {', '.join(_setting(k) for k in unknown)}; "
                              f"known: {', '.join(sorted(names))}")
    return {k: _coerce(v, hints[k], f"{source}: {_setting(k)}") for k, v in values.items()}


def missing_settings(cls: type, values: dict[str, Any]) -> list[str]:
    """Required fields of `cls` (no default) that `values` does not set."""
    return [f.name for f in flag_order(cls)
            if f.name not in values and f.default is _MISSING and f.default_factory is _MISSING]


def build_config(cls: type[C], values: dict[str, Any], source: str = "config") -> C:
    """Build `cls` from a mapping, rejecting unknown keys and wrong types, naming `source` and the flags."""
    kwargs = _checked_values(cls, values, source)
    missing = missing_settings(cls, kwargs)
    if missing:
        raise GuardsmithError(f"{source}: missing required setting(s) {', '.join(_setting(m) for m in missing)}")
    return cls(**kwargs)


def describe_config(cls: type, values: dict[str, Any], source: str = "config") -> str:
    """The config `values` would give, as YAML (defaults filled in), without running anything: what
    `--print-config` shows. Required settings still unset are listed in a comment at the top and
    shown as null, so a preset can be inspected before its URIs are given."""
    import yaml

    given = _checked_values(cls, values, source)
    missing = missing_settings(cls, given)
    shown: dict[str, Any] = {}
    for f in flag_order(cls):
        if f.name in given:
            shown[f.name] = given[f.name]
        elif f.default is not _MISSING:
            shown[f.name] = f.default
        elif f.default_factory is not _MISSING:
            shown[f.name] = f.default_factory()
        else:
            shown[f.name] = None
    head = f"# still required: {', '.join(_setting(m) for m in missing)}\n" if missing else ""
    return head + yaml.safe_dump(shown, sort_keys=False)


PRESETS_DIR = Path(__file__).parent / "presets"


def presets(stage: str) -> list[str]:
    """Names of the bundled presets of a stage (files `presets/<stage>/<name>.yaml`)."""
    folder = PRESETS_DIR / stage
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def preset_path(stage: str, name: str) -> Path:
    path = PRESETS_DIR / stage / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(presets(stage)) or "none"
        raise GuardsmithError(f"unknown preset {name!r} for {stage}; bundled presets: {known}")
    return path


def _read_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GuardsmithError(f"cannot read config {path}: {exc}") from None
    try:
        loaded = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise GuardsmithError(f"config {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(loaded, dict):
        raise GuardsmithError(f"config {path} must be a mapping of field: value")
    return loaded


def load_config(cls: type[C], path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                *, stage: str | None = None, preset: str | None = None) -> C:
    """Load a config: bundled preset (optional), then a YAML file (optional), then `overrides`."""
    values, source = config_values(path, overrides, stage=stage, preset=preset)
    return build_config(cls, values, source)


def config_values(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                  *, stage: str | None = None, preset: str | None = None) -> tuple[dict[str, Any], str]:
    """The raw values of preset, file and overrides (in that order) and a name for their sources."""
    values: dict[str, Any] = {}
    sources = []
    if preset is not None:
        if stage is None:
            raise GuardsmithError("a preset needs the stage name")
        values.update(_read_yaml(preset_path(stage, preset)))
        sources.append(f"preset {stage}/{preset}")
    if path is not None:
        values.update(_read_yaml(path))
        sources.append(str(path))
    values.update(overrides or {})
    return values, " + ".join(sources) or "flags"


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Any) -> str:
    import yaml

    values = to_dict(cfg)
    return yaml.safe_dump({f.name: values[f.name] for f in flag_order(type(cfg))}, sort_keys=False)


def stage_command(name: str, cls: type, run: Callable[[Any], Any], help: str, *, stage: str | None = None):
    """A click command `name` with `--config FILE` plus one flag per config field; flags override
    the file. Presets are those of `stage` (default: `name`)."""
    import click

    stage = stage or name
    hints = typing.get_type_hints(cls)
    params: list[click.Parameter] = [
        click.Option(["--config", "config_path"], type=click.Path(dir_okay=False), default=None,
                     help="YAML file with field: value pairs; flags given here override it."),
        click.Option(["--print-config"], is_flag=True, default=False, help="Print the resolved config as YAML and exit."),
    ]
    if presets(stage):
        params.append(click.Option(["--preset"], type=click.Choice(presets(stage)), default=None,
                                   help="Bundled parameter set applied first (then --config, then flags)."))
    for f in flag_order(cls):
        flag = "--" + f.name.replace("_", "-")
        inner, _ = _base_type(hints[f.name])
        help_text = f.metadata.get("help", "")
        if f.default is not _MISSING and f.default is not None:
            help_text += f"  [default: {f.default}]"
        if inner is bool:
            params.append(click.Option([f"{flag}/--no-{f.name.replace('_', '-')}", f.name], default=None, help=help_text))
        else:
            params.append(click.Option([flag, f.name], default=None, help=help_text, metavar=_metavar(inner)))

    def callback(config_path: str | None, print_config: bool, preset: str | None = None, **flags: Any) -> None:
        overrides = {k: v for k, v in flags.items() if v is not None}
        if print_config:
            values, source = config_values(config_path, overrides, stage=stage, preset=preset)
            click.echo(describe_config(cls, values, source), nl=False)
            return
        cfg = load_config(cls, config_path, overrides, stage=stage, preset=preset)
        result = run(cfg)
        if result is not None:
            click.echo(str(result))

    return click.Command(name, params=params, callback=callback, help=help, short_help=help.split(". ")[0].split(": ")[0].rstrip("."))


def flag_order(cls: type) -> list[dataclasses.Field]:
    """The fields of ``cls`` in the order ``--help`` lists them: the stage's own fields first, then
    the shared settings groups it inherits (classes marked ``_group`` by ``guardsmith.settings``)."""
    shared = {f.name for base in cls.__mro__[1:] if getattr(base, "_group", None)
              for f in dataclasses.fields(base)}
    fields = dataclasses.fields(cls)
    return [f for f in fields if f.name not in shared] + [f for f in fields if f.name in shared]


def _metavar(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        return "A,B,..."
    if origin is typing.Literal:
        return "[" + "|".join(map(str, typing.get_args(tp))) + "]"
    return getattr(tp, "__name__", "TEXT").upper()
