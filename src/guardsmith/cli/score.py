"""``guardsmith score FILE --format FORMAT --task TASK``: score a file of published guard outputs
with gold labels (a thin shell over :mod:`guardsmith.published`)."""
from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Optional

import typer


def score(
    file: str = typer.Argument(..., help="File of guard outputs with gold labels: JSON array, JSON lines, CSV or Parquet (gzip or not; format from the name, JSON lines otherwise), a path, file:// or s3:// URI."),
    format_name: str = typer.Option(..., "--format", help="Guard format the outputs are written in, e.g. guardreasoner, guardsmith (see docs/stages/evaluate.md)."),
    task: str = typer.Option(..., "--task", help="Task to score: prompt_harm, response_harm or response_refusal (positive class harmful; refusal)."),
    output_field: str = typer.Option("predict", "--output-field", help="Field holding the guard's output text."),
    label_field: str = typer.Option("label", "--label-field", help="Field holding the gold label (harmful/unharmful, refusal/compliance, 1/0, true/false, yes/no, unsafe/safe)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (f1, precision, recall, support, parse_failure_rate, ...) instead of text."),
    output: Optional[str] = typer.Option(None, "--output", help="Also write the metrics table OUTPUT/metrics (what `guardsmith report --metrics` reads)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model name in the metrics table (default: the format name)."),
    benchmark: Optional[str] = typer.Option(None, "--benchmark", help="Benchmark name in the metrics table (default: the file name without extensions)."),
    mode: str = typer.Option("R", "--mode", help="Guard mode recorded in the metrics table: R (outputs with reasoning) or NR."),
) -> None:
    """Score published guard outputs against gold labels: F1, precision, recall, support and
    parse-failure rate of the task's positive class; a parse failure counts as wrong."""
    from guardsmith.published import check_mode, metrics_record, score_file, write_metrics

    if output:
        check_mode(mode)
    result = score_file(file, format_name, task, output_field=output_field, label_field=label_field)
    written = None
    if output:
        from guardsmith.stages.evaluate import METRIC_EXTRAS

        name = benchmark or PurePosixPath(file.split("?", 1)[0].rstrip("/")).name.split(".", 1)[0]
        record = metrics_record(result, model=model or result.format, benchmark=name, mode=mode)
        written = write_metrics([record], output, METRIC_EXTRAS)
    if as_json:
        typer.echo(json.dumps(result.summary()))
        if written:
            typer.echo(f"wrote {written}", err=True)
    else:
        typer.echo(str(result))
        if written:
            typer.echo(f"wrote {written}")
