"""Hard-sample mining (method A.7): best-of-N with the trained guard over a held-out pool.

Each pool row gets ``n`` guard samples from one prompt pass. A sample is **correct** when its
output parses and every labelled task of the row matches the row's label: prompt harm when
``prompt_harm`` is set, response harm when ``response_harm`` is set (a ``None`` or missing line
for a labelled task is wrong; refusal is not scored). Rows with neither label are skipped and
counted. By ``n_correct``: ``>= easy_min`` (default n) is *easy*, ``<= noise_max`` (default 1)
is *noise* (likely label noise, kept apart), anything between is *difficult*.

Outputs under ``output``: ``mined`` (every scored row), ``difficult``, ``noise`` (``mined``
schema), ``pairs`` (DPO pairs, :data:`PAIRS_SCHEMA`), ``generations`` (every sample), and
``report.json`` / ``report.md`` with the bucket histogram.

Re-runs: every table records the run's work identity (:func:`mine_identity`: the guard model and
the pool and exclude tables by content, the settings, the guardsmith version). ``mined`` is
committed last of the tables, then the report: a re-run of the same work into a finished output
skips (no sampling); other work is refused naming the difference unless ``overwrite`` (then every
output is recomputed and replaced).
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from guardsmith import settings, tables
from guardsmith.config import option
from guardsmith.errors import DataError, GuardsmithError
from guardsmith.identity import WorkIdentity, decide, work_identity
from guardsmith.guard_runner import GuardRow, is_correct, labelled_tasks, open_guard, run_guard

HELP = (
    "Best-of-N hard-sample mining: sample N guard outputs per pool row (one prompt pass), count "
    "the correct ones, bucket rows into easy (N/N), difficult (in between) and noise (0-1/N), "
    "and write the difficult set, the noise set, DPO pairs (correct vs incorrect sample of the "
    "same row) and a bucket histogram report."
)

PAIRS_SCHEMA = tables.SCHEMAS["pairs"]
"""Schema of the ``pairs`` table (read by continual DPO)."""

BUCKETS = tables.BUCKETS
_FLUSH = 512


@dataclass
class MineConfig(settings.sampling(samples_per_row=4), settings.backend()):
    """Settings of the ``mine`` stage."""

    model: str = option(help="Guard model URI (local folder, file:// or s3://) to sample with.")
    pool: str = option(help="Interactions table URI: labelled rows not used for SFT.")
    output: str = option(help="Output prefix URI; tables difficult, noise, mined, pairs, generations "
                              "and report.json/report.md are written under it.")
    exclude: str | None = option(None, "Optional table URI with an `id` column (e.g. the SFT set); "
                                       "pool rows with these ids are skipped and counted.")
    mode: Literal["R", "NR"] = option("R", "Guard mode: R (reasoning) or NR (answer only).")
    dual: bool = option(False, "The guard is a dual-mode model: start the prompt with the mode tag.")
    easy_min: int | None = option(None, "Rows with at least this many correct samples are easy; "
                                        "default samples_per_row (all correct).")
    noise_max: int = option(1, "Rows with at most this many correct samples are noise.")
    pair_buckets: list[str] = option(help="Buckets whose rows give DPO pairs.",
                                     factory=lambda: ["difficult"])
    pairs_per_row: int = option(1, "At most this many (chosen, rejected) pairs per row, each "
                                   "sample used once.")
    limit: int | None = option(None, "Mine at most this many eligible rows (after exclusion).")
    overwrite: bool = option(False, "Replace outputs made by other work (another model, pool or settings); "
                                    "output of the same work is kept (skipped) either way.")


CONFIG = MineConfig


@dataclass
class MineResult:
    """Output URIs and counts of a ``mine`` run."""

    difficult: str
    noise: str
    mined: str
    pairs: str
    generations: str
    report_json: str
    report_md: str
    rows_read: int
    excluded: int
    unlabelled: int
    scored: int
    buckets: dict[str, int]
    histogram: dict[int, int]
    n_pairs: int
    parse_error_rate: float
    skipped: bool = False

    def __str__(self) -> str:
        shares = ", ".join(f"{b} {self.buckets.get(b, 0)}" for b in BUCKETS)
        head = ["finished earlier by the same work; nothing to do"] if self.skipped else []
        return "\n".join([
            *head,
            f"pool rows {self.rows_read}, excluded {self.excluded}, unlabelled {self.unlabelled}, "
            f"mined {self.scored}",
            f"buckets: {shares}; DPO pairs {self.n_pairs}; sample parse-error rate "
            f"{self.parse_error_rate:.3f}",
            f"difficult: {self.difficult}",
            f"noise: {self.noise}",
            f"pairs: {self.pairs}",
            f"report: {self.report_md}",
        ])


def bucket_of(n_correct: int, n: int, easy_min: int | None = None, noise_max: int = 1) -> str:
    """The bucket of a row with ``n_correct`` of ``n`` samples correct (see module docs)."""
    easy = n if easy_min is None else easy_min
    if n_correct >= easy:
        return "easy"
    if n_correct <= noise_max:
        return "noise"
    return "difficult"


def check_config(cfg: MineConfig) -> None:
    """Reject impossible settings with a one-line error."""
    settings.group_values(cfg, settings.Sampling)
    settings.group_values(cfg, settings.BackendChoice)
    n = cfg.samples_per_row
    easy = n if cfg.easy_min is None else cfg.easy_min
    if not 0 <= cfg.noise_max < easy <= n:
        raise GuardsmithError(f"thresholds need 0 <= noise_max < easy_min <= samples_per_row; got noise_max "
                              f"{cfg.noise_max}, easy_min {easy}, samples_per_row {n}")
    unknown = [b for b in cfg.pair_buckets if b not in BUCKETS]
    if unknown:
        raise GuardsmithError(f"pair_buckets: unknown bucket(s) {', '.join(unknown)}; "
                              f"use {', '.join(BUCKETS)}")
    if cfg.pairs_per_row < 1:
        raise GuardsmithError(f"pairs_per_row must be at least 1, got {cfg.pairs_per_row}")
    if cfg.limit is not None and cfg.limit < 0:
        raise GuardsmithError(f"limit must be >= 0, got {cfg.limit}")


def read_ids(uri: str) -> set[str]:
    """The ``id`` column of any table at ``uri`` as a set of strings."""
    from guardsmith import storage

    ids: set[str] = set()
    for batch in storage.iter_batches(uri):
        if "id" not in batch.schema.names:
            raise DataError(f"missing column (columns present: {', '.join(batch.schema.names)})",
                            file=uri, column="id")
        ids.update(str(v) for v in batch.column("id").to_pylist() if v is not None)
    return ids


def count_rows(uri: str, schema_name: str) -> int:
    """Read the whole table once, validating every batch; return its row count."""
    from guardsmith import storage

    return sum(batch.num_rows for batch in storage.iter_batches(uri, schema_name=schema_name))


def iter_rows(uri: str, schema_name: str) -> Iterator[dict[str, Any]]:
    """Rows of a validated table as dicts, streamed batch by batch."""
    from guardsmith import storage

    for batch in storage.iter_batches(uri, schema_name=schema_name):
        yield from batch.to_pylist()


def interaction_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """The ``interactions`` columns of ``row`` (extra columns dropped)."""
    from guardsmith import tables

    return {name: row.get(name) for name in tables.schema("interactions").names}


def make_pairs(result: GuardRow, correct: list[bool], mode: str, n_correct: int, bucket: str,
               pairs_per_row: int = 1) -> list[dict[str, Any]]:
    """DPO pair records of one row: the i-th correct sample against the i-th incorrect one.

    Empty unless the row has at least one correct and one incorrect sample.
    """
    good = [s for s, ok in zip(result.samples, correct) if ok]
    bad = [s for s, ok in zip(result.samples, correct) if not ok]
    prompt = json.dumps([{"role": m["role"], "content": m["content"]} for m in result.messages],
                        ensure_ascii=False)
    return [
        {
            "id": str(result.row["id"]), "source": str(result.row["source"]), "prompt": prompt,
            "chosen": c.text, "rejected": r.text, "mode": mode, "n": len(result.samples),
            "n_correct": n_correct, "bucket": bucket, "chosen_index": c.sample_index,
            "rejected_index": r.sample_index,
        }
        for c, r in list(zip(good, bad))[:pairs_per_row]
    ]


class RecordSink:
    """Buffer dict records and write them to an open table writer in batches."""

    def __init__(self, writer: Any, to_table: Any, size: int = _FLUSH) -> None:
        self.writer, self.to_table, self.size = writer, to_table, size
        self.buffer: list[dict[str, Any]] = []
        self.count = 0

    def add(self, records: list[dict[str, Any]] | dict[str, Any]) -> None:
        """Queue one record or a list of records."""
        self.buffer.extend(records if isinstance(records, list) else [records])
        if len(self.buffer) >= self.size:
            self.flush()

    def flush(self) -> None:
        """Write what is queued."""
        if self.buffer:
            self.writer.write(self.to_table(self.buffer))
            self.count += len(self.buffer)
            self.buffer = []


def histogram_markdown(report: Mapping[str, Any]) -> str:
    """The Markdown version of the mining report (settings, histogram, buckets)."""
    n = report["settings"]["n"]
    scored = max(report["counts"]["mined"], 1)
    lines = [
        "# Hard-sample mining report", "",
        f"- model: `{report['settings']['model']}` (mode {report['settings']['mode']}"
        f"{', dual' if report['settings']['dual'] else ''})",
        f"- pool: `{report['settings']['pool']}`",
        f"- N = {n}, temperature {report['settings']['temperature']}, "
        f"top-p {report['settings']['top_p']}",
        f"- rows read {report['counts']['rows_read']}, excluded (used for SFT) "
        f"{report['counts']['excluded']}, unlabelled {report['counts']['unlabelled']}, "
        f"mined {report['counts']['mined']}",
        f"- sample parse-error rate {report['parse_error_rate']:.3f}; DPO pairs "
        f"{report['counts']['pairs']}", "",
        "## Correct samples per row", "",
        "| correct | bucket | rows | share | |", "|---:|---|---:|---:|---|",
    ]
    th = report["settings"]
    for k in range(n, -1, -1):
        rows = report["histogram"][str(k)]
        bucket = bucket_of(k, n, th["easy_min"], th["noise_max"])
        bar = "#" * round(40 * rows / scored)
        lines.append(f"| {k}/{n} | {bucket} | {rows} | {rows / scored:.1%} | `{bar}` |")
    lines += ["", "## Buckets", "", "| bucket | rows | share |", "|---|---:|---:|"]
    for b in BUCKETS:
        rows = report["buckets"][b]
        lines.append(f"| {b} | {rows} | {rows / scored:.1%} |")
    lines += ["", "Correct = the output parsed and every labelled task of the row (prompt harm; "
              "response harm where labelled) matches its label.", ""]
    return "\n".join(lines)


def mine_identity(cfg: MineConfig) -> WorkIdentity:
    """The work identity of a mine run: the guard model (its folder's content; a backend spec by
    name), the pool and exclude tables by content, the settings and the guardsmith version."""
    from guardsmith.teacher import model_location

    model = model_location(cfg.model) or cfg.model
    return work_identity("mine", cfg, {"model": model, "pool": cfg.pool, "exclude": cfg.exclude},
                         exclude=("model", "pool", "exclude", "output"))


def _finished(uris: Mapping[str, str], report: Mapping[str, Any]) -> MineResult:
    """The result of a run of the same work committed earlier, from its report."""
    counts = report["counts"]
    return MineResult(
        difficult=uris["difficult"], noise=uris["noise"], mined=uris["mined"], pairs=uris["pairs"],
        generations=uris["generations"], report_json=uris["report.json"], report_md=uris["report.md"],
        rows_read=counts["rows_read"], excluded=counts["excluded"], unlabelled=counts["unlabelled"],
        scored=counts["mined"], buckets=dict(report["buckets"]),
        histogram={int(k): v for k, v in report["histogram"].items()}, n_pairs=counts["pairs"],
        parse_error_rate=report["parse_error_rate"], skipped=True,
    )


def run(cfg: MineConfig) -> MineResult:
    """Mine the pool; write every output atomically under ``cfg.output`` (a no-op when the same work
    finished there; other work there is refused unless ``overwrite``)."""
    from guardsmith import storage, tables
    from guardsmith.progress import track

    check_config(cfg)
    done = {name: storage.join(cfg.output, name) for name in ("mined", "difficult", "noise", "pairs", "generations",
                                                              "report.json", "report.md")}
    identity = None
    if storage.is_committed(done["mined"]):
        identity = mine_identity(cfg)
        if decide(done["mined"], identity, cfg.overwrite) == "skip" and storage.exists(done["report.json"]):
            return _finished(done, storage.read_json(done["report.json"]))
    easy_min = cfg.samples_per_row if cfg.easy_min is None else cfg.easy_min
    excluded_ids = read_ids(cfg.exclude) if cfg.exclude else set()
    total = count_rows(cfg.pool, "interactions")
    backend = open_guard(cfg.model, settings.group_values(cfg, settings.BackendChoice))
    identity = identity or mine_identity(cfg)  # after the checks: bad input is reported the same on every run
    uris = {name: done[name] for name in ("mined", "difficult", "noise", "pairs", "generations")}
    counts = Counter(rows_read=0, excluded=0, unlabelled=0)

    def eligible() -> Iterator[dict[str, Any]]:
        taken = 0
        for row in iter_rows(cfg.pool, "interactions"):
            counts["rows_read"] += 1
            if str(row["id"]) in excluded_ids:
                counts["excluded"] += 1
                continue
            if not labelled_tasks(row):
                counts["unlabelled"] += 1
                continue
            if cfg.limit is not None and taken >= cfg.limit:
                continue
            taken += 1
            yield row

    histogram = Counter({k: 0 for k in range(cfg.samples_per_row + 1)})
    samples = parse_errors = 0
    with backend, ExitStack() as stack:
        def sink(name: str, schema_name: str | None) -> RecordSink:
            if schema_name is None:
                writer = stack.enter_context(storage.TableWriter(uris[name], PAIRS_SCHEMA, identity=identity))
                return RecordSink(writer, lambda recs: pa.Table.from_pylist(recs, schema=PAIRS_SCHEMA))
            writer = stack.enter_context(storage.TableWriter(uris[name], schema_name, identity=identity))
            return RecordSink(writer, lambda recs: tables.from_records(recs, schema_name, file=uris[name]))

        out = {"mined": sink("mined", "mined"), "difficult": sink("difficult", "mined"),
               "noise": sink("noise", "mined"), "pairs": sink("pairs", None),
               "generations": sink("generations", "generations")}
        results = run_guard(backend, eligible(), mode=cfg.mode, dual=cfg.dual,
                            sampling=settings.group_values(cfg, settings.Sampling), chunk_rows=cfg.chunk_rows)
        shown = total if cfg.limit is None else min(total, cfg.limit)
        for result in track(results, "mine", total=shown):
            correct = [is_correct(result.row, s) for s in result.samples]
            n_correct = sum(correct)
            bucket = bucket_of(n_correct, cfg.samples_per_row, easy_min, cfg.noise_max)
            histogram[n_correct] += 1
            record = {**interaction_record(result.row), "n": cfg.samples_per_row, "n_correct": n_correct, "bucket": bucket}
            out["mined"].add(record)
            if bucket in ("difficult", "noise"):
                out[bucket].add(record)
            if bucket in cfg.pair_buckets:
                out["pairs"].add(make_pairs(result, correct, cfg.mode, n_correct, bucket, cfg.pairs_per_row))
            out["generations"].add([s.generation_record(str(result.row["id"])) for s in result.samples])
            samples += len(result.samples)
            parse_errors += sum(not s.answer.parse_ok for s in result.samples)
        for s in out.values():
            s.flush()

    scored = sum(histogram.values())
    buckets = {b: 0 for b in BUCKETS}
    for k, rows in histogram.items():
        buckets[bucket_of(k, cfg.samples_per_row, easy_min, cfg.noise_max)] += rows
    parse_error_rate = parse_errors / samples if samples else 0.0
    report = {
        "settings": {"model": cfg.model, "pool": cfg.pool, "exclude": cfg.exclude, "mode": cfg.mode,
                     "dual": cfg.dual, "n": cfg.samples_per_row, "temperature": cfg.temperature, "top_p": cfg.top_p,
                     "max_tokens": cfg.max_tokens, "seed": cfg.seed, "easy_min": easy_min,
                     "noise_max": cfg.noise_max, "pair_buckets": list(cfg.pair_buckets),
                     "pairs_per_row": cfg.pairs_per_row, "limit": cfg.limit},
        "counts": {"rows_read": counts["rows_read"], "excluded": counts["excluded"],
                   "unlabelled": counts["unlabelled"], "mined": scored, "pairs": out["pairs"].count,
                   "samples": samples},
        "histogram": {str(k): histogram[k] for k in range(cfg.samples_per_row + 1)},
        "buckets": buckets,
        "bucket_share": {b: (v / scored if scored else 0.0) for b, v in buckets.items()},
        "parse_error_rate": parse_error_rate,
        "outputs": dict(uris),
        "identity": identity.to_json(),
    }
    report_json, report_md = done["report.json"], done["report.md"]
    storage.write_json_atomic(report_json, report)
    storage.write_bytes_atomic(report_md, histogram_markdown(report).encode())
    return MineResult(
        difficult=uris["difficult"], noise=uris["noise"], mined=uris["mined"], pairs=uris["pairs"],
        generations=uris["generations"], report_json=report_json, report_md=report_md,
        rows_read=counts["rows_read"], excluded=counts["excluded"], unlabelled=counts["unlabelled"],
        scored=scored, buckets=buckets, histogram=dict(histogram), n_pairs=out["pairs"].count,
        parse_error_rate=parse_error_rate,
    )
