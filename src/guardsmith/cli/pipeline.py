"""`guardsmith pipeline ...`: compile, run locally, submit and schedule the Kubeflow pipelines.

- ``compile``: writes every committed YAML (``components/<stage>/component.yaml`` and
  ``pipelines/<name>/pipeline.yaml``); images, the Kueue queue and Secret names are read from
  the environment at compile time (:mod:`guardsmith.ops.pipelines`).
- ``run NAME --local --preset P``: the real pipeline graph through ``kfp.local``
  (:mod:`guardsmith.ops.local`).
- ``submit`` / ``schedule``: upload (or reuse) the compiled package on a KFP server and start a
  run / a recurring run with a preset's parameters (:mod:`guardsmith.ops.kfp`); presets holding
  local-only values are refused.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from guardsmith.cli.deploy import (BASELINE_MODEL_OPTION, BASELINE_OPTION, CACHE_OPTION, CONFIG_OPTION, EXPERIMENT_OPTION,
                                   GATE_MODEL_OPTION, GATE_OPTION, PRESET_HELP, SET_OPTION, SWEEP_OPTION, WAIT_OPTION,
                                   echo_dict, overrides, submit_run, sweep_overrides)
from guardsmith.errors import GuardsmithError
from guardsmith.ops import kfp, local, pipelines, presets

pipeline_app = typer.Typer(help="Compile, run locally, submit and schedule the Kubeflow pipelines.",
                           no_args_is_help=True, rich_markup_mode=None)
NAME_ARGUMENT = typer.Argument(..., help=f"Pipeline: {', '.join(pipelines.PIPELINES)}.")


@pipeline_app.command("compile")
def compile_cmd(
    out: Optional[Path] = typer.Option(None, "--out", help="Write the YAML under this folder instead of in place."),
    kueue_queue: Optional[str] = typer.Option(None, "--kueue-queue", help="Kueue LocalQueue for every task pod (default: $GUARDSMITH_KUEUE_QUEUE; empty = no label)."),
) -> None:
    """Compile every component and pipeline to YAML (images and Kueue queue from the environment)."""
    env = {} if kueue_queue is None else {"GUARDSMITH_KUEUE_QUEUE": kueue_queue}
    for path in pipelines.compile_all(out, env):
        typer.echo(f"wrote {path}")


@pipeline_app.command("run")
def run_cmd(
    name: str = NAME_ARGUMENT,
    preset: str = typer.Option(..., "--preset", help=PRESET_HELP),
    local_run: bool = typer.Option(False, "--local", help="Run with kfp.local in this environment (required; cluster runs use `submit`)."),
    store: Optional[Path] = typer.Option(None, "--store", help="Keep objects in this folder instead of a throw-away local S3."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the KFP local root and report copy (default: --store, else demo-out)."),
    config: Optional[Path] = CONFIG_OPTION,
    set_: list[str] = typer.Option([], "--set", help="Override a parameter: key=value (YAML value); repeatable."),
    sweep: list[str] = SWEEP_OPTION,
    discard: bool = typer.Option(False, "--discard", help="Keep objects in a throw-away local S3 (SeaweedFS) removed at the end, instead of under --out/store."),
    verbose: bool = typer.Option(False, "--verbose", help="Show every task's full log (KFP executor output) instead of one line per task."),
) -> None:
    """Run a pipeline locally (real graph, tiny models, bundled sample): one line per task, then the
    results table and where the report and the trained models are."""
    if not local_run:
        raise GuardsmithError("only --local runs are supported here; use `guardsmith pipeline submit` for a cluster")
    for params in sweep_overrides(name, preset, overrides(config, set_), sweep):
        run_and_show(name, preset, store=store, overrides=params, out=out, discard=discard, verbose=verbose)


def run_and_show(name: str, preset: str, *, store: Path | None = None, overrides: dict | None = None,
                 out: Path | None = None, discard: bool = False, verbose: bool = False) -> None:
    """`guardsmith pipeline run --local` and `guardsmith demo`: run, then print the results and paths."""
    typer.echo(f"running {name} ({preset}) locally with kfp.local{'' if verbose else '; task logs under <out>/logs'}")
    result = local.run_local(name, preset, store, overrides, out, discard=discard, verbose=verbose, echo=typer.echo)
    typer.echo("")
    for line in result.pop("results", []):
        typer.echo(line)
    models = result.pop("models", {})
    typer.echo("")
    echo_dict({"report": result["report_html"], "report (Markdown)": result["report_md"],
               **{k: v for k, v in models.items()}, "work root": result["work_root"],
               **({"task logs": result["logs"]} if "logs" in result else {}), "seconds": result["seconds"]})


@pipeline_app.command("submit")
def submit_cmd(
    name: str = NAME_ARGUMENT,
    host: str = typer.Option(..., "--host", help="KFP API endpoint, e.g. http://localhost:8080."),
    preset: str = typer.Option(..., "--preset", help=PRESET_HELP),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="Kubeflow profile namespace (multi-user installs)."),
    experiment: str = EXPERIMENT_OPTION,
    config: Optional[Path] = CONFIG_OPTION,
    set_: list[str] = SET_OPTION,
    wait: bool = WAIT_OPTION,
    cache: bool = CACHE_OPTION,
    gate: list[str] = GATE_OPTION,
    gate_model: Optional[str] = GATE_MODEL_OPTION,
    baseline: Optional[str] = BASELINE_OPTION,
    baseline_model: Optional[str] = BASELINE_MODEL_OPTION,
    sweep: list[str] = SWEEP_OPTION,
) -> None:
    """Upload (or reuse) the compiled pipeline and start a run with a preset's parameters (one per sweep point)."""
    submit_run(name, preset, host=host, root=None, namespace=namespace, experiment=experiment, sets=set_,
               cache=cache, wait=wait, timeout=86400, gate=gate, baseline=baseline, model=gate_model,
               baseline_model=baseline_model, config=config, sweep=sweep)


@pipeline_app.command("schedule")
def schedule_cmd(
    name: str = NAME_ARGUMENT,
    cron: str = typer.Option(..., "--cron", help="KFP cron expression, six fields with seconds first, e.g. '0 0 3 * * 1'."),
    host: str = typer.Option(..., "--host", help="KFP API endpoint."),
    preset: str = typer.Option(..., "--preset", help=PRESET_HELP),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="Kubeflow profile namespace."),
    experiment: str = EXPERIMENT_OPTION,
    config: Optional[Path] = CONFIG_OPTION,
    set_: list[str] = SET_OPTION,
    max_concurrency: int = typer.Option(1, "--max-concurrency", help="Runs of this schedule allowed at once."),
    cache: bool = typer.Option(False, "--cache/--no-cache", help="Reuse cached task results across scheduled runs."),
) -> None:
    """Create a recurring run of a pipeline with a preset's parameters."""
    params = overrides(config, set_)
    presets.submit_parameters(name, preset, params)  # local-only values refused before reaching out to KFP
    echo_dict(kfp.schedule(kfp.kfp_client(host, namespace or None), name, preset, cron, overrides=params,
                           namespace=namespace or None, experiment=experiment, max_concurrency=max_concurrency,
                           cache=cache))
