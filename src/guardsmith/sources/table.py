"""Your own data (``table``): any CSV, JSON, JSON lines, Parquet file or guardsmith table, gzip or
not, whose columns and label words are named by a mapping instead of code.

    guardsmith data import table --from my.csv --out data/mine \\
        --map prompt=text,response=answer,prompt_harm=verdict,response_harm=reply_verdict \\
        --labels 'ok=unharmful,bad=harmful' --policy-file policy.txt

The mapping (:class:`TableMapping`, also read from a YAML file with keys ``map``, ``labels``,
``categories``, ``policy_file``, ``taxonomy``, ``encoding``):

- ``map``: record field -> column, for ``prompt``, ``response``, ``prompt_harm``,
  ``response_harm``, ``response_refusal``, ``id``, ``categories``, ``policy``, ``taxonomy``. A
  field the map leaves out reads the column of its own name where the file has one (so a
  guardsmith ``interactions`` table re-imports as it is), else stays empty. No label field mapped
  at all is a warning in the import report.
- ``labels``: the table's label word -> ours (``harmful``, ``unharmful``, ``refusal``,
  ``compliance``); matched after strip and lower-case, integers and booleans as their text
  (``1``, ``0``, ``true``, ``false``). Our own words always map to themselves. A word that is not
  mapped (or maps to a word of another task) is an error naming file, column, row and value.
- ``categories``: the table's category name -> the built-in taxonomy's name (matched after strip
  and lower-case). Under a built-in taxonomy every category must be one of its names (matched
  case-insensitively, written in its spelling), else an error naming file, column, row and
  value; under your own taxonomy (a policy) the names are your own vocabulary.
- ``policy_file``: one custom policy text for every row (a ``policy`` column takes precedence
  where it has text).
- ``taxonomy``: a built-in taxonomy (``aegis2``, ``wildguard``) or your own name for the policy
  (needs policy text); it wins over a ``taxonomy`` column. Default: the row's ``taxonomy``
  column, else ``custom:<12 hex of sha256(policy)>`` for rows with a policy, else ``wildguard``.

Lenient about types a writer produces (``large_string``, ``list<null>`` categories, integer or
boolean labels, a categories column as a list, a JSON list text or comma-separated text), strict
about values. Rows without an ``id`` column get a stable derived id ``table:<split>:<row>``.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from guardsmith.errors import GuardsmithError
from guardsmith.sources.base import (
    RowContext,
    SourceAdapter,
    Tally,
    _file_tags,
    _unique,
    blank_to_none,
    column,
    label,
    own_id,
    policy_id,
    prompt_text,
    text,
)
from guardsmith.vocabulary import BUILT_IN_TAXONOMIES, HARM_LABELS, REFUSAL_LABELS, SOURCE_VOCABULARIES

FIELDS = ("prompt", "response", "prompt_harm", "response_harm", "response_refusal", "id", "categories", "policy",
          "taxonomy")
"""Record fields a column can be mapped to (by default the column of the field's own name)."""
LABEL_FIELDS = {"prompt_harm": HARM_LABELS, "response_harm": HARM_LABELS, "response_refusal": REFUSAL_LABELS}
MAPPING_KEYS = ("map", "labels", "categories", "policy_file", "taxonomy", "encoding")
NO_LABELS = "no label column mapped (prompt_harm, response_harm, response_refusal): rows unlabelled; see --map"


def built_in(taxonomy: str) -> str | None:
    """The built-in taxonomy's name for ``taxonomy`` (any case), else None."""
    key = taxonomy.strip().lower()
    return key if key in BUILT_IN_TAXONOMIES else None


def source_vocabulary(taxonomy: str) -> str | None:
    """``taxonomy`` (any case) when it names a data set's own category vocabulary (``jbb``,
    ``simplesafetytests``: prompted with a built-in policy, so no policy text is needed), else None."""
    key = taxonomy.strip().lower()
    return key if key in SOURCE_VOCABULARIES else None


def taxonomy_categories(taxonomy: str) -> dict[str, str]:
    """A built-in taxonomy's category names, lower-case -> its spelling."""
    return {name.lower(): name for name in BUILT_IN_TAXONOMIES[taxonomy]}


def parse_pairs(value: str | Mapping[str, Any] | None, flag: str) -> dict[str, str]:
    """``a=b,c=d`` (or a mapping) -> ``{a: b, c: d}``; a malformed pair is an error naming ``flag``."""
    if value is None or value == "":
        return {}
    if isinstance(value, Mapping):
        return {str(k).strip(): str(v).strip() for k, v in value.items()}
    if not isinstance(value, str):
        raise GuardsmithError(f"{flag}: expected KEY=VALUE pairs, got {value!r}")
    out: dict[str, str] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        if not sep or not key.strip() or not val.strip():
            raise GuardsmithError(f"{flag}: expected KEY=VALUE, got {item.strip()!r}")
        out[key.strip()] = val.strip()
    return out


def label_key(value: Any) -> str:
    """A label value as its word: booleans as true/false, integral numbers as digits."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value


@dataclass(frozen=True)
class TableMapping:
    """How a user's table maps onto interaction records (see the module docstring)."""

    map: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    categories: dict[str, str] = field(default_factory=dict)
    policy: str | None = None
    policy_file: str | None = None
    taxonomy: str | None = None
    encoding: str | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.map) - set(FIELDS))
        if unknown:
            raise GuardsmithError(f"--map: unknown field(s) {', '.join(unknown)}; fields: {', '.join(FIELDS)}")
        ours = (*HARM_LABELS, *REFUSAL_LABELS)
        for word, target in self.labels.items():
            if target not in ours:
                raise GuardsmithError(f"--labels: {word}={target}: {target!r} is not one of {', '.join(ours)}")
        if self.taxonomy is not None and not self.taxonomy.strip():
            raise GuardsmithError("--taxonomy: empty name")
        fixed = built_in(self.taxonomy) if self.taxonomy else None
        if fixed:
            names = taxonomy_categories(fixed)
            for theirs, ours in self.categories.items():
                if ours.lower() not in names:
                    raise GuardsmithError(f"--categories: {theirs}={ours}: {ours!r} is not in taxonomy {fixed!r} "
                                          f"(one of: {', '.join(names.values())})")

    @classmethod
    def from_options(cls, *, map: str | Mapping[str, Any] | None = None, labels: str | Mapping[str, Any] | None = None,
                     categories: str | Mapping[str, Any] | None = None, policy_file: str | None = None,
                     taxonomy: str | None = None, encoding: str | None = None) -> TableMapping:
        """From the command-line forms (``--map``, ``--labels``, ``--categories`` pairs); reads the policy file."""
        policy = None
        if policy_file:
            policy = read_text(policy_file, "--policy-file", encoding).strip()
            if not policy:
                raise GuardsmithError(f"--policy-file {policy_file}: the file is empty")
        return cls(map=parse_pairs(map, "--map"),
                   labels={k.lower(): v.lower() for k, v in parse_pairs(labels, "--labels").items()},
                   categories={k.lower(): v for k, v in parse_pairs(categories, "--categories").items()},
                   policy=policy, policy_file=policy_file or None, taxonomy=taxonomy or None,
                   encoding=encoding or None)

    def with_options(self, **options: Any) -> TableMapping:
        """This mapping with command-line options laid over it (pairs merged, others replaced)."""
        given = {k: v for k, v in options.items() if v not in (None, "", {})}
        if not given:
            return self
        other = TableMapping.from_options(**given)
        return replace(self, map={**self.map, **other.map}, labels={**self.labels, **other.labels},
                       categories={**self.categories, **other.categories}, policy=other.policy or self.policy,
                       policy_file=other.policy_file or self.policy_file,
                       taxonomy=other.taxonomy or self.taxonomy, encoding=other.encoding or self.encoding)

    def column_of(self, name: str, rec: Mapping[str, Any] | None = None) -> str | None:
        """The column of field ``name``: the mapped one, else the column of the field's own name
        (``prompt`` always; the others where ``rec`` has it), else None (the field stays empty)."""
        if name in self.map:
            return self.map[name]
        return name if name == "prompt" or (rec is not None and name in rec) else None

    def words(self, field_name: str) -> dict[str, str]:
        """The label map for ``field_name``: our own words plus the user's that map into its task."""
        allowed = LABEL_FIELDS[field_name]
        words = {w: w for w in allowed}
        words.update({k: v for k, v in self.labels.items() if v in allowed})
        return words


def read_text(uri: str, flag: str, encoding: str | None = None) -> str:
    """A whole small text file (path, file:// or s3://); errors name ``flag``."""
    from guardsmith import storage

    try:
        data = storage.read_bytes(uri)
    except GuardsmithError as exc:
        raise GuardsmithError(f"{flag} {uri}: {exc}") from None
    except OSError as exc:
        raise GuardsmithError(f"{flag} {uri}: cannot read: {exc}") from None
    try:
        return data.decode(encoding or "utf-8-sig")
    except (UnicodeDecodeError, LookupError) as exc:
        raise GuardsmithError(f"{flag} {uri}: not {encoding or 'UTF-8'} text ({exc}); set --encoding") from None


def load_mapping(spec: str | Mapping[str, Any]) -> TableMapping:
    """A mapping from a YAML mapping (dict), inline YAML text, or the URI of a YAML file.

    Keys: ``map``, ``labels``, ``categories`` (each a mapping or ``a=b,c=d`` text), ``policy_file``,
    ``taxonomy``, ``encoding``. A relative ``policy_file`` in a mapping file is read next to that file.
    """
    import yaml

    where = "mapping"
    values: Any = spec
    base_dir = None
    if isinstance(spec, str):
        stripped = spec.strip()
        if not stripped:
            return TableMapping()
        inline = "\n" in stripped or stripped.startswith("{") or stripped.startswith(("map:", "labels:", "categories:"))
        if not inline:
            where = f"--mapping {spec}"
            text_ = read_text(spec, "--mapping")
            base_dir = spec.rsplit("/", 1)[0] if "/" in spec else "."
        else:
            text_ = stripped
        try:
            values = yaml.safe_load(text_)
        except yaml.YAMLError as exc:
            raise GuardsmithError(f"{where}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if values is None:
        return TableMapping()
    if not isinstance(values, Mapping):
        raise GuardsmithError(f"{where}: expected a mapping with keys {', '.join(MAPPING_KEYS)}")
    unknown = sorted(set(values) - set(MAPPING_KEYS))
    if unknown:
        raise GuardsmithError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; keys: {', '.join(MAPPING_KEYS)}")
    policy_file = values.get("policy_file")
    if policy_file and base_dir is not None and "://" not in str(policy_file) and not str(policy_file).startswith("/"):
        policy_file = f"{base_dir}/{policy_file}"  # relative to the mapping file (local or s3://)
    return TableMapping.from_options(map=values.get("map"), labels=values.get("labels"),
                                     categories=values.get("categories"), policy_file=policy_file,
                                     taxonomy=values.get("taxonomy"), encoding=values.get("encoding"))


class TableSource(SourceAdapter):
    """Your own table (CSV, JSON, JSON lines, Parquet, gzip, or a guardsmith table) mapped by --map/--labels/--mapping."""

    name = "table"
    file_format = "csv"
    hf_dataset = ""
    hf_splits = {"all": (None, None), "train": (None, None), "validation": (None, None), "test": (None, None)}
    files = {"all": ("your file",)}

    def __init__(self, mapping: TableMapping | None = None) -> None:
        self.mapping = mapping or TableMapping()

    def _label(self, rec: Mapping[str, Any], name: str, ctx: RowContext) -> str | None:
        col = self.mapping.column_of(name, rec)
        if col is None:
            return None
        value = label_key(column(rec, col, ctx))
        return label({col: value}, col, self.mapping.words(name), ctx, nullable=True, empty_is_null=True)

    def _category_names(self, rec: Mapping[str, Any], col: str, ctx: RowContext) -> list[str]:
        """The names of a categories cell: a list, JSON list text or comma/semicolon-separated text."""
        value = column(rec, col, ctx)
        if isinstance(value, str):
            stripped = value.strip()
            if stripped.startswith("["):
                try:
                    value = json.loads(stripped)
                except json.JSONDecodeError:
                    raise ctx.error("expected a JSON list of category names", col, value) from None
            else:
                value = [v for v in stripped.replace(";", ",").split(",")]
        if value is None:
            return []
        if not isinstance(value, (list, tuple)):
            raise ctx.error("expected a list of category names", col, value)
        out = []
        for item in value:
            if item is None:
                continue
            if not isinstance(item, str):
                raise ctx.error("expected category names (text)", col, value)
            if item.strip():
                out.append(item.strip())
        return out

    def _categories(self, rec: Mapping[str, Any], taxonomy: str, ctx: RowContext) -> list[str]:
        """The row's categories, renamed by the ``categories`` mapping; under a built-in taxonomy
        each must be one of its names (written in its spelling), else a one-line error."""
        col = self.mapping.column_of("categories", rec)
        if col is None:
            return []
        known = taxonomy_categories(taxonomy) if built_in(taxonomy) else None
        out: list[str] = []
        for name in self._category_names(rec, col, ctx):
            mapped = self.mapping.categories.get(name.lower(), name)
            if known is not None:
                if mapped.lower() not in known:
                    via = f" (mapped to {mapped!r})" if mapped != name else ""
                    raise ctx.error(
                        f"category{via} is not in taxonomy {taxonomy!r}; map it with --categories "
                        f"'{name}=<a {taxonomy} category>' (mapping file key categories), or name your own "
                        "vocabulary with --taxonomy <your-own-name> and --policy-file", col, name)
                mapped = known[mapped.lower()]
            if mapped not in out:
                out.append(mapped)
        return out

    def _policy(self, rec: Mapping[str, Any], ctx: RowContext) -> str | None:
        col = self.mapping.column_of("policy", rec)
        if col is not None:
            own = blank_to_none(text(rec, col, ctx, nullable=True))
            if own is not None:
                return own.strip()
        return self.mapping.policy

    def _taxonomy(self, rec: Mapping[str, Any], policy: str | None, ctx: RowContext) -> str:
        """The --taxonomy name, else the row's taxonomy column, else custom:<hash> with a policy,
        else wildguard; a name that is neither built in nor a data set's own vocabulary (a
        re-imported ``jbb`` table) needs policy text."""
        m = self.mapping
        col = m.column_of("taxonomy", rec)
        own = blank_to_none(text(rec, col, ctx, nullable=True)) if col is not None and not m.taxonomy else None
        taxonomy = (m.taxonomy or own or (policy_id("custom", policy) if policy else "wildguard")).strip()
        known = built_in(taxonomy) or (source_vocabulary(taxonomy) if not policy else None)
        if known:
            return known
        if not policy:
            raise ctx.error(f"taxonomy {taxonomy!r} is not built in ({', '.join(BUILT_IN_TAXONOMIES)}) and the row has "
                            "no policy text: give it with --policy-file or map a policy column",
                            m.column_of("policy", rec) or "policy", taxonomy)
        return taxonomy

    def convert(self, rec: Mapping[str, Any], ctx: RowContext) -> Iterator[dict[str, Any]]:
        m = self.mapping
        prompt = prompt_text(rec, m.column_of("prompt"), ctx)  # type: ignore[arg-type]
        if prompt is None:
            return
        response_col, id_col = m.column_of("response", rec), m.column_of("id", rec)
        response = blank_to_none(text(rec, response_col, ctx, nullable=True)) if response_col else None
        policy = self._policy(rec, ctx)
        taxonomy = self._taxonomy(rec, policy, ctx)
        if not any(m.column_of(name, rec) for name in LABEL_FIELDS):
            ctx.tally.warn(NO_LABELS)
        yield self.record(
            ctx, prompt, id=own_id(rec, id_col, ctx) if id_col else None, taxonomy=taxonomy,
            response=response, policy=policy,
            prompt_harm=self._label(rec, "prompt_harm", ctx),
            response_harm=self._label(rec, "response_harm", ctx),
            response_refusal=self._label(rec, "response_refusal", ctx),
            categories=self._categories(rec, taxonomy, ctx))

    def read(self, uri: str | Sequence[str], split: str, tally: Tally | None = None, **options: Any) -> Iterator[dict[str, Any]]:
        """Files as every source reads them; a committed guardsmith table (a folder) streamed from storage."""
        from guardsmith import storage

        uris = [uri] if isinstance(uri, str) else list(uri)
        if not any(storage.is_committed(u) for u in uris):
            return super().read(uri, split, tally, **options)
        if not all(storage.is_committed(u) for u in uris):
            raise GuardsmithError("--from: give either files or guardsmith tables, not both")
        return self._read_tables(uris, split, tally if tally is not None else Tally())

    def _read_tables(self, uris: list[str], split: str, tally: Tally) -> Iterator[dict[str, Any]]:
        from guardsmith import storage

        self.check_split(split)
        tags = _file_tags(uris) if len(uris) > 1 else [None]
        seen: dict[str, int] = {}
        for one, tag in zip(uris, tags):
            rows = (row for batch in storage.iter_batches(one) for row in batch.to_pylist())
            for out in self._convert_all(enumerate(rows), split, one, tally, tag):
                yield _unique(out, seen, tally)


ADAPTER = TableSource()
"""The registered ``table`` source with the default mapping (columns named like our fields)."""


def configured(mapping: TableMapping | str | Mapping[str, Any] | None = None, **options: Any) -> TableSource:
    """A ``table`` adapter for ``mapping`` (a :class:`TableMapping`, a mapping-file URI, inline YAML
    text or a dict) with command-line ``options`` (map, labels, categories, policy_file, taxonomy,
    encoding) laid over it."""
    base = mapping if isinstance(mapping, TableMapping) else load_mapping(mapping or "")
    return TableSource(base.with_options(**options))


__all__ = ["ADAPTER", "TableMapping", "TableSource", "configured", "load_mapping", "parse_pairs"]
