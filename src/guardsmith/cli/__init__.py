"""The `guardsmith` command line, the only top of the import graph: a thin shell over the library
(heavy imports happen lazily). ``guardsmith pipeline ...`` lives in :mod:`guardsmith.cli.pipeline`,
``guardsmith deploy ...`` in :mod:`guardsmith.cli.deploy`; one command per stage is generated from
:data:`guardsmith.stages.STAGES`. ``python -m guardsmith`` runs :func:`main`."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from guardsmith.cli.deploy import deploy_app
from guardsmith.cli.pipeline import pipeline_app
from guardsmith.cli.score import score
from guardsmith.errors import GuardsmithError
from guardsmith.stages import STAGES

app = typer.Typer(
    help="guardsmith: train reasoning guard models and Boundary-Guidance generators.",
    no_args_is_help=True,
    rich_markup_mode=None,  # one help style: the generated stage commands use click's plain help too
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Import public data sets and inspect tables.", no_args_is_help=True, rich_markup_mode=None)
tiny_app = typer.Typer(help="Tiny random-weight local models for tests and the demo.", no_args_is_help=True, rich_markup_mode=None)
serve_app = typer.Typer(help="Serve models: a trained guard (moderation API), the filtered-generation gateway, and "
                             "plain local models (OpenAI-compatible HTTP; docs/serving.md).", no_args_is_help=True, rich_markup_mode=None)
models_app = typer.Typer(help="Move model and checkpoint folders to and from object storage; promote and roll back a served model.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")
app.add_typer(tiny_app, name="tiny")
app.add_typer(serve_app, name="serve")
app.add_typer(models_app, name="models")
app.add_typer(pipeline_app, name="pipeline", help="Compile, run locally, submit and schedule the Kubeflow pipelines.")
app.add_typer(deploy_app, name="deploy", help="Deployment helpers: quality gates, image pinning, KFP upload and submit.")
app.command("score")(score)


@data_app.command("sources")
def data_sources() -> None:
    """List every source with its split names: the source's own and the Hugging Face hub's config/split."""
    from guardsmith.sources import sources_help

    typer.echo(sources_help())


def _split_names() -> str:
    """The ``data import`` epilog: each source's own split names and the hub's (``\\b`` keeps click
    from rewrapping the lines)."""
    from guardsmith.sources import sources_help

    return "\b\nSplit names (--split), each source's own and (hub: ...) the Hugging Face hub's config/split:\n" \
        + "\n".join(f"  {line}" for line in sources_help().splitlines())


@data_app.command("import", epilog=_split_names())
def data_import(
    source: str = typer.Argument(..., help="Data set: wildguardmix, aegis2, topic_following, dynabench, cosapien, xstest, jbb, openai_moderation, toxicchat, simplesafetytests; or 'table' for your own CSV/JSON/JSONL/Parquet (gz) file mapped with --map/--labels or --mapping."),
    split: Optional[str] = typer.Option(None, "--split", help="The split: the source's own name (e.g. train, test) or the hub's config/split (e.g. judge_comparison/test); the list below gives both for every source. Optional for 'table' (default: all)."),
    from_uri: str = typer.Option(..., "--from", help="The source file as shipped (path, file:// or s3:// URI), or 'hf' to load from the Hugging Face hub; for 'table' your file(s) or a guardsmith table."),
    out: str = typer.Option(..., "--out", help="Output table URI (path, file:// or s3://)."),
    encoding: Optional[str] = typer.Option(None, "--encoding", help="Text encoding of CSV/JSON input (default utf-8), e.g. cp1252, mac_roman."),
    mapping: Optional[str] = typer.Option(None, "--mapping", help="table: YAML mapping file (keys map, labels, categories, policy_file, taxonomy, encoding); the flags below override it."),
    map_: Optional[str] = typer.Option(None, "--map", help="table: field=COLUMN pairs, e.g. 'prompt=text,response=answer,prompt_harm=verdict' (fields: prompt, response, prompt_harm, response_harm, response_refusal, id, categories, policy, taxonomy); a field left out reads the column of its own name if the file has one."),
    labels: Optional[str] = typer.Option(None, "--labels", help="table: your label word=ours pairs, e.g. 'safe=unharmful,unsafe=harmful,1=harmful,0=unharmful' (ours: harmful, unharmful, refusal, compliance)."),
    categories: Optional[str] = typer.Option(None, "--categories", help="table: your category name=the built-in taxonomy's pairs, e.g. 'vandalism=Violence' (under a built-in taxonomy every category must be one of its names)."),
    policy_file: Optional[str] = typer.Option(None, "--policy-file", help="table: a text file with one custom policy for every row."),
    taxonomy: Optional[str] = typer.Option(None, "--taxonomy", help="table: aegis2, wildguard, or your own name for the policy and its categories (default: a taxonomy column, else custom:<hash> with a policy, else wildguard)."),
) -> None:
    """Normalise a public data set, or your own table, into an interactions table and print label counts and drops."""
    from guardsmith.stages.data_import import DataImportConfig, import_files

    table_options = {"--mapping": mapping, "--map": map_, "--labels": labels, "--categories": categories,
                     "--policy-file": policy_file, "--taxonomy": taxonomy}
    if source == "table":
        from guardsmith.sources.table import configured

        chosen: object = configured(mapping, map=map_, labels=labels, categories=categories, policy_file=policy_file,
                                    taxonomy=taxonomy, encoding=encoding)
        split = split or "all"
    else:
        given = [flag for flag, value in table_options.items() if value]
        if given:
            raise GuardsmithError(f"{', '.join(given)}: only for the 'table' source")
        if not split:
            raise GuardsmithError(f"--split is required for source {source!r}")
        chosen = source
    cfg = DataImportConfig(source=source, split=split, from_uri=from_uri, output=out, encoding=encoding or "")
    report = import_files(cfg, chosen)
    typer.echo(str(report))
    typer.echo(f"wrote {out}")


@data_app.command("sample")
def data_sample(
    out: str = typer.Option(..., "--out", help="Output table URI."),
    split: Optional[str] = typer.Option(None, "--split", help="train, pool or test; all rows when omitted."),
) -> None:
    """Write the bundled synthetic sample corpus as an interactions table."""
    from guardsmith.stages.data_import import DataImportConfig, run

    typer.echo(str(run(DataImportConfig(source="sample", split=split or "all", from_uri="", output=out))))


@data_app.command("show")
def data_show(
    uri: str = typer.Argument(..., help="Table URI."),
    schema: Optional[str] = typer.Option(None, "--schema", help="Validate against this table schema (e.g. interactions)."),
    limit: int = typer.Option(5, "--limit", help="Rows to print."),
) -> None:
    """Validate a table while streaming it, print its row count and the first rows."""
    from guardsmith import storage

    total, shown = 0, 0
    for batch in storage.iter_batches(uri, schema_name=schema):
        total += batch.num_rows
        for row in batch.to_pylist():
            if shown >= limit:
                break
            typer.echo(row)
            shown += 1
    typer.echo(f"{total} rows" + (f", valid {schema} table" if schema else ""))


@tiny_app.command("build")
def tiny_build(
    out: Path = typer.Argument(..., help="Output folder (must be new or empty)."),
    kind: str = typer.Option("causal-lm", "--kind", help="causal-lm (generator/guard) or classifier (reward model / safety classifier)."),
    num_labels: int = typer.Option(1, "--num-labels", help="classifier only: 1 = reward model, 2 = safe/unsafe classifier."),
    seed: int = typer.Option(0, "--seed", help="Seed for the random weights."),
) -> None:
    """Build a tiny Llama model with random weights and a locally trained tokenizer."""
    from guardsmith.standins import tiny

    if kind == "causal-lm":
        path = tiny.build_tiny_causal_lm(out, seed=seed)
    elif kind == "classifier":
        path = tiny.build_tiny_classifier(out, num_labels=num_labels, seed=seed)
    else:
        raise GuardsmithError(f"unknown --kind {kind!r}; use causal-lm or classifier")
    typer.echo(f"wrote {path}")


@serve_app.command("model")
def serve_model(
    model: str = typer.Argument(..., help="Local model folder (Hugging Face format)."),
    port: int = typer.Option(8000, "--port", help="Port on 127.0.0.1."),
    name: str = typer.Option("guardsmith-local", "--name", help="Model name reported by /v1/models."),
) -> None:
    """Serve a local model over the OpenAI chat-completions protocol until interrupted."""
    from guardsmith.inference import make_backend
    from guardsmith.standins.chat_server import BackendResponder, serve

    backend = make_backend(f"transformers:{model}")
    with serve(BackendResponder(backend), port=port, model=name) as server:
        typer.echo(f"serving {model} at {server.url} (Ctrl-C to stop)")
        server.wait()


@serve_app.command("guard")
def serve_guard(
    model: str = typer.Argument(..., help="The guard: a model folder (path, file:// or s3:// URI), vllm:FOLDER / "
                                          "transformers:FOLDER, openai:URL?model=NAME (e.g. the guard behind vLLM's "
                                          "own server), or rule:keywords / rule:letters (deterministic stand-ins)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; 0.0.0.0 in a container."),
    port: int = typer.Option(8000, "--port", help="Port to bind."),
    name: str = typer.Option("guardsmith-guard", "--name", help="Model name the service answers to (/v1/models)."),
    threshold: float = typer.Option(0.5, "--threshold", help="A moderation result is flagged when P(unsafe) >= this."),
    backend: str = typer.Option("transformers", "--backend", help="Backend of a model folder: transformers (CPU/GPU) or vllm (GPU)."),
    device: str = typer.Option("auto", "--device", help="transformers device: auto, cpu, cuda."),
    max_batch: int = typer.Option(16, "--max-batch", help="Most requests batched into one model call."),
    max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", help="Longest wait for more requests to batch, milliseconds."),
    reasoning_max_tokens: int = typer.Option(512, "--reasoning-max-tokens", help="Token limit of the reasoning returned on request."),
) -> None:
    """Serve a trained guard: /v1/moderations, the guard as a chat model, /health, /ready, /metrics."""
    from guardsmith.serving import GuardEngine, guard_app, run_foreground

    engine = GuardEngine.open(model, name=name, backend=backend, device=device, batch_size=max_batch,
                              reasoning_max_tokens=reasoning_max_tokens)
    typer.echo(f"serving guard {name} at http://{host}:{port}/v1 (Ctrl-C to stop)", err=True)
    run_foreground(guard_app(engine, threshold=threshold, max_batch=max_batch, max_wait_ms=max_wait_ms), host, port)


@serve_app.command("gateway")
def serve_gateway(
    config: Path = typer.Option(..., "--config", help="Gateway YAML config (generator, guard, tau, refusal, gate_tasks, "
                                                      "delta, interactions_uri, ...; docs/serving.md)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; 0.0.0.0 in a container."),
    port: int = typer.Option(8080, "--port", help="Port to bind."),
) -> None:
    """Serve the filtered generation system: generator -> guard -> answer, or the refusal when t >= tau."""
    import logging

    from guardsmith.serving import gateway_app, load_gateway_config, run_foreground

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_gateway_config(str(config))
    typer.echo(f"serving the gateway ({cfg.model}) at http://{host}:{port}/v1 (Ctrl-C to stop)", err=True)
    run_foreground(gateway_app(cfg), host, port)


@serve_app.command("offline-teacher")
def serve_offline_teacher(
    port: int = typer.Option(8100, "--port", help="Port on 127.0.0.1."),
    defects: str = typer.Option("", "--defects", help="Defect rates the template teacher injects, e.g. 'leakage=0.1,repetition=0.05' (kinds: leakage, repetition, overthinking, wrong_answer, unparseable, ungrounded)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the deterministic defect choice."),
    delay_s: float = typer.Option(0.0, "--delay-s", help="Delay before every answer (to simulate a slow teacher)."),
) -> None:
    """Serve the offline template teacher and rule judge (stand-ins for a real teacher LLM) until interrupted."""
    from guardsmith.standins.offline import offline_spec, parse_defects, serve_offline

    server = serve_offline(port=port, defects=parse_defects(defects) if defects else None, seed=seed, delay_s=delay_s)
    with server:
        typer.echo(f"offline teacher and judge at {server.url}; use --teacher {offline_spec(server)} (Ctrl-C to stop)")
        server.wait()


@models_app.command("upload")
def models_upload(local: Path = typer.Argument(..., help="Local folder."), uri: str = typer.Argument(..., help="Destination URI.")) -> None:
    """Upload a model/checkpoint folder (multipart, concurrent, committed atomically)."""
    from guardsmith import storage

    storage.upload_dir(local, uri)
    typer.echo(f"uploaded {local} to {uri}")


@models_app.command("download")
def models_download(uri: str = typer.Argument(..., help="Source URI."), local: Path = typer.Argument(..., help="Local folder.")) -> None:
    """Download a committed model/checkpoint folder."""
    from guardsmith import storage

    storage.download_dir(uri, local)
    typer.echo(f"downloaded {uri} to {local}")


@models_app.command("push")
def models_push(
    uri: str = typer.Argument(..., help="Model URI (folder, file:// or s3://; a served URI pushes its current version)."),
    to: str = typer.Option(..., "--to", help="Hugging Face Hub repository id, owner/name (created when missing)."),
    public: bool = typer.Option(False, "--public", help="Create the repository public (default: private)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the files that would be sent and stop."),
) -> None:
    """Push a trained model with its model card to the Hugging Face Hub (needs network and HF_TOKEN or
    `huggingface-cli login`; the token is never a flag)."""
    from guardsmith.model_store import push_model

    files = push_model(uri, to, private=not public, dry_run=dry_run)
    typer.echo(f"{'would send' if dry_run else 'pushed'} {len(files)} file(s) to {to}: {', '.join(files)}")


@models_app.command("promote")
def models_promote(
    uri: str = typer.Argument(..., help="Served model URI (what the guard servers load, e.g. s3://bucket/guardsmith/production/guard)."),
    source: Optional[str] = typer.Option(None, "--from", help="Model to promote as a new version (e.g. <work_root>/continual/model of a gated run)."),
    version: Optional[str] = typer.Option(None, "--version", help="Kept version id to point at instead (see `guardsmith models versions`)."),
    keep: Optional[int] = typer.Option(None, "--keep", help="Versions kept after a promotion: the current one and the last ones it replaced (rollback targets). Default: 3 (model_store.KEEP_VERSIONS)."),
) -> None:
    """Point the served model URI at a new version (copied server-side on S3) or a kept one; the
    replaced version stays for `guardsmith models rollback`. Servers read the pointer at start:
    `kubectl rollout restart` the guard deployments afterwards."""
    from guardsmith.model_store import KEEP_VERSIONS, promote_model

    typer.echo(str(promote_model(uri, source=source, version=version, keep=KEEP_VERSIONS if keep is None else keep)))


@models_app.command("rollback")
def models_rollback(uri: str = typer.Argument(..., help="Served model URI.")) -> None:
    """Point the served model URI back at the version that was current before the last switch."""
    from guardsmith.model_store import rollback_model

    typer.echo(str(rollback_model(uri)))


@models_app.command("versions")
def models_versions(uri: str = typer.Argument(..., help="Served model URI.")) -> None:
    """List the versions kept at a served model URI (id, current, promoted at, size, source)."""
    from guardsmith.errors import redact
    from guardsmith.model_store import model_versions

    for v in model_versions(uri):
        typer.echo(f"{'*' if v.current else ' '} {v.id}  {v.promoted_at or '-'}  {v.total_bytes} bytes  "
                   f"{redact(v.source) or '-'}  {v.uri or ''}".rstrip())


DEMO = ("guard_training", "tiny-cpu")
"""``guardsmith demo`` (and ``make demo``): this pipeline and preset, run locally."""


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", help="Folder for the demo's outputs."),
) -> None:
    """Run the guard_training pipeline locally on the bundled sample with tiny models (the tiny-cpu
    preset; what `make demo` runs) and print where the report is."""
    from guardsmith.cli.pipeline import run_and_show

    name, preset = DEMO
    run_and_show(name, preset, out=out)


def build_cli():
    """The click group: the typer commands plus one generated command per stage (``command=True``)."""
    from guardsmith.config import stage_command

    group = typer.main.get_command(app)
    for stage in STAGES.values():
        if stage.command:
            module = stage.module()
            name = stage.name.replace("_", "-")  # commands are kebab-case, like `serve offline-teacher`
            group.add_command(stage_command(name, module.CONFIG, module.run, module.HELP, stage=stage.name))
            if name != stage.name:  # the stage's own name still works, unlisted
                alias = stage_command(stage.name, module.CONFIG, module.run, module.HELP, stage=stage.name)
                alias.hidden = True
                group.add_command(alias)
    return group


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors print one line on stderr and exit 1 (no traceback)."""
    return invoke(build_cli(), argv, "guardsmith")


def invoke(command, argv: list[str] | None, prog_name: str) -> int:
    """Run a click command; a GuardsmithError prints one line on stderr and gives exit status 1."""
    import click

    try:
        command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except GuardsmithError as exc:
        typer.echo(f"guardsmith: error: {exc}", err=True)
        return 1
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        typer.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        return 130
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())

