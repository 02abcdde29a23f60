"""`guardsmith deploy ...`: quality gates, image pinning, and the KFP upload/submit entry points
that the Helm chart's hook Job and CronJobs and the CI workflow run (over a ``--dir`` of compiled
packages). A thin shell over :mod:`guardsmith.ops`."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import typer

from guardsmith.errors import GuardsmithError
from guardsmith.ops import gates, images, kfp, presets

deploy_app = typer.Typer(help="Deployment helpers: quality gates, image pinning, KFP upload and submit.",
                         no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False,
                         add_completion=False)


def echo_dict(values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        typer.echo(f"{key}: {value}")


def echo_gate_report(report: gates.GateReport) -> None:
    """Print each gate's outcome, then fail (one line) or print the summary."""
    for result in report.results:
        typer.echo(str(result))
    report.raise_for_failure()
    typer.echo(report.message)


def overrides(config: Path | None, sets: Sequence[str]) -> dict[str, Any]:
    """``--config FILE`` parameters, then ``--set key=value`` pairs over them (both over the preset)."""
    return {**presets.load_config(config), **presets.parse_sets(sets)}


def sweep_overrides(name: str, preset: str, base: Mapping[str, Any], sweep: Sequence[str],
                    root: Path | None = None) -> list[dict[str, Any]]:
    """The overrides of each run of a ``--sweep``: ``base`` plus one combination of the swept
    values, each under its own work root (``<work_root>/sweep/<key>-<value>``) when one is set."""
    points = presets.sweep_points(sweep)
    if points == [{}]:
        return [dict(base)]
    work_root = presets.load_preset(name, preset, base, root=root).get("work_root")
    return [{**base, **point, **({"work_root": presets.sweep_root(str(work_root), point)} if work_root else {})}
            for point in points]


def submit_run(name: str, preset: str, *, host: str, root: Path | None, namespace: str | None, experiment: str,
               sets: Sequence[str], cache: bool, wait: bool, timeout: int, gate: Sequence[str],
               baseline: str | None, model: str | None, baseline_model: str | None,
               config: Path | None = None, sweep: Sequence[str] = ()) -> None:
    """What `guardsmith pipeline submit` and `guardsmith deploy submit` run: submit (once per sweep
    point), print the ids, optionally wait and gate the finished run's metrics."""
    parsed = gates.parse_gates(gate) if gate else []
    if parsed and not wait:
        raise GuardsmithError("--gate needs --wait")
    runs = sweep_overrides(name, preset, overrides(config, sets), sweep, root)
    if len(runs) > 1 and (wait or parsed):
        raise GuardsmithError("--sweep submits several runs: use it without --wait and --gate")
    for params in runs:  # refuse local-only values before reaching out to KFP (kfp.submit checks again)
        presets.submit_parameters(name, preset, params, root=root)
    client = kfp.kfp_client(host, namespace or None)
    for params in runs[:-1]:
        result = kfp.submit(client, name, preset, root=root, overrides=params, namespace=namespace or None,
                            experiment=experiment, cache=cache)
        echo_dict({**result, "url": kfp.run_url(host, result["run_id"])})
    result = kfp.submit(client, name, preset, root=root, overrides=runs[-1],
                        namespace=namespace or None, experiment=experiment, cache=cache)
    echo_dict({**result, "url": kfp.run_url(host, result["run_id"])})
    if wait:
        typer.echo(f"state: {kfp.wait_for_run(client, result['run_id'], timeout)}")
    if parsed:
        echo_gate_report(gates.gate_run(name, result["work_root"], parsed, baseline=baseline, model=model,
                                        baseline_model=baseline_model))


EXPERIMENT_OPTION = typer.Option("guardsmith", "--experiment", help="Experiment name (created when missing).")
PRESET_HELP = "Parameter set: a bundled preset name (pipelines/<name>/presets/<preset>.yaml) or the path of your own YAML file of parameters (e.g. ./my-preset.yaml)."
CONFIG_OPTION = typer.Option(None, "--config", help="YAML file of parameters applied after the preset and before --set.")
SWEEP_OPTION = typer.Option([], "--sweep", help="Run once per value: key=v1,v2 (YAML values); repeatable: one run per combination, each under <work_root>/sweep/<key>-<value>. Feeds the report's size and budget curves.")
SET_OPTION = typer.Option([], "--set", help="Override a parameter: key=value (YAML value; {timestamp} and {date} expanded); repeatable.")
CACHE_OPTION = typer.Option(True, "--cache/--no-cache", help="Let KFP reuse cached results of deterministic tasks.")
WAIT_OPTION = typer.Option(False, "--wait", help="Wait for the run to finish; exit 1 unless it succeeded.")
GATE_OPTION = typer.Option([], "--gate", help='Quality gate on the run\'s metrics, "METRIC OP VALUE" (e.g. "harmful_f1_avg>=baseline-0.005"); needs --wait; repeatable.')
GATE_MODEL_OPTION = typer.Option(None, "--gate-model", help="Model of the metrics table to gate (default: continual for guard_training).")
BASELINE_OPTION = typer.Option(None, "--baseline", help="Baseline metrics (table URI or JSON/YAML file) for 'baseline' gate values.")
BASELINE_MODEL_OPTION = typer.Option(None, "--baseline-model", help="Model whose rows form the baseline.")
DIGESTS_OPTION = typer.Option(None, "--digests", help="Digests file (default images/digests.yaml).")
KIND_ARGUMENT = typer.Argument(..., help="Image kind: cpu, train or infer.")


@deploy_app.command("gate")
def gate_cmd(
    metrics: str = typer.Option(..., "--metrics", help="Metrics table URI (e.g. <work_root>/evaluate/metrics) or a JSON/YAML file."),
    gate: list[str] = typer.Option(..., "--gate", help='Gate "METRIC OP VALUE", e.g. "harmful_f1_avg>=baseline-0.01"; repeatable.'),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Baseline metrics (table URI or JSON/YAML file) for 'baseline' values."),
    model: Optional[str] = typer.Option(None, "--gate-model", help="Model whose rows are gated (metrics tables with several models)."),
    baseline_model: Optional[str] = typer.Option(None, "--baseline-model", help="Model whose rows form the baseline."),
) -> None:
    """Evaluate gates on a metrics table or file; exit 1 when one fails."""
    echo_gate_report(gates.evaluate_gates(gates.parse_gates(gate), metrics, baseline=baseline, model=model,
                                          baseline_model=baseline_model))


@deploy_app.command("image-env")
def image_env_cmd(
    digests: Optional[Path] = DIGESTS_OPTION,
    require_digest: bool = typer.Option(False, "--require-digest", help="Fail when an image has no recorded digest."),
) -> None:
    """Print GUARDSMITH_IMAGE_<KIND>=ref lines (for `export`, or $GITHUB_ENV) from the digests file."""
    for key, value in images.image_env(digests, require_digest=require_digest).items():
        typer.echo(f"{key}={value}")


@deploy_app.command("record-digest")
def record_digest_cmd(
    kind: str = KIND_ARGUMENT,
    repository: str = typer.Option(..., "--repository", help="Repository the image was pushed to."),
    tag: str = typer.Option(..., "--tag", help="Tag pushed."),
    digest: str = typer.Option(..., "--digest", help="Pushed manifest digest, sha256:..."),
    digests: Optional[Path] = DIGESTS_OPTION,
) -> None:
    """Record a pushed image's digest in images/digests.yaml (scripts/build_images.sh calls this)."""
    rec = images.record_digest(kind, repository, tag, digest, digests)
    typer.echo(f"{kind}: {rec.ref}")


@deploy_app.command("base-image")
def base_image_cmd(
    kind: str = KIND_ARGUMENT,
    digests: Optional[Path] = DIGESTS_OPTION,
    bare: bool = typer.Option(False, "--tag-only", help="Print the tag even when a digest is recorded."),
) -> None:
    """Print the base image of KIND: tag@sha256:... once its digest is recorded, else the tag."""
    images.check_kind(kind)
    typer.echo(images.load_bases(digests)[kind][0] if bare else images.base_image_ref(kind, digests))


@deploy_app.command("record-base")
def record_base_cmd(
    kind: str = KIND_ARGUMENT,
    digest: str = typer.Option(..., "--digest", help="Digest the base tag resolved to, sha256:..."),
    digests: Optional[Path] = DIGESTS_OPTION,
) -> None:
    """Record the digest of KIND's base image tag (scripts/build_images.sh calls this once)."""
    typer.echo(images.record_base_digest(kind, digest, digests))


@deploy_app.command("upload")
def upload_cmd(
    host: str = typer.Option(..., "--host", envvar="KFP_HOST", help="KFP API endpoint."),
    pipelines_dir: Path = typer.Option(..., "--dir", help="Folder with <name>/pipeline.yaml packages."),
    namespace: Optional[str] = typer.Option(None, "--namespace", envvar="KFP_NAMESPACE", help="Kubeflow profile namespace."),
    name: list[str] = typer.Option([], "--name", help="Only these pipelines; repeatable."),
) -> None:
    """Upload every compiled package as a new pipeline version (unchanged packages are reused)."""
    for rec in kfp.upload_all(kfp.kfp_client(host, namespace or None), pipelines_dir, namespace or None, name):
        typer.echo(f"{rec['pipeline']}: version {rec['version']} ({'uploaded' if rec['created'] else 'unchanged'}) "
                   f"id {rec['version_id']}")


@deploy_app.command("submit")
def submit_cmd(
    name: str = typer.Argument(..., help="Pipeline name (folder under --dir)."),
    host: str = typer.Option(..., "--host", envvar="KFP_HOST", help="KFP API endpoint."),
    pipelines_dir: Path = typer.Option(..., "--dir", help="Folder with <name>/pipeline.yaml and <name>/presets/."),
    preset: str = typer.Option(..., "--preset", help="Preset name, or the path of your own YAML file of parameters."),
    namespace: Optional[str] = typer.Option(None, "--namespace", envvar="KFP_NAMESPACE", help="Kubeflow profile namespace."),
    experiment: str = EXPERIMENT_OPTION,
    config: Optional[Path] = CONFIG_OPTION,
    set_: list[str] = SET_OPTION,
    cache: bool = CACHE_OPTION,
    wait: bool = WAIT_OPTION,
    timeout: int = typer.Option(86400, "--timeout", help="Seconds to wait with --wait."),
    gate: list[str] = GATE_OPTION,
    baseline: Optional[str] = BASELINE_OPTION,
    model: Optional[str] = GATE_MODEL_OPTION,
    baseline_model: Optional[str] = BASELINE_MODEL_OPTION,
) -> None:
    """Start a run from a folder of compiled packages and presets (what the chart's CronJob runs)."""
    submit_run(name, preset, host=host, root=pipelines_dir, namespace=namespace, experiment=experiment, sets=set_,
               cache=cache, wait=wait, timeout=timeout, gate=gate, baseline=baseline, model=model,
               baseline_model=baseline_model, config=config)
