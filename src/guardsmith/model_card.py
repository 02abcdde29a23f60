"""Model cards (README.md) of trained models, written with huggingface_hub's `ModelCard`.

The card's metadata (`ModelCardData`) names the base model, the training data URIs, the license
(the base model's, when its own card states one), tags and, once a model is evaluated, its
results as model-index metadata (`EvalResult`: harmful F1 per benchmark and task). The body
says what the model is and lists the inputs, the run facts of its `TrainingSummary` and the
full config.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from huggingface_hub import EvalResult

    from guardsmith.training import TrainingSummary

CARD_FILE = "README.md"

GUARD_DESCRIPTION = (
    "A safety guard model trained by `guardsmith {stage}` from `{base}`. It classifies a "
    "user prompt and an optional assistant response (prompt harm, response harm, response "
    "refusal); prompts are rendered with `guardsmith.guard.render_guard_messages` and answers "
    "parsed with `guardsmith.guard.parse_guard_output`."
)

_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

{{ description }}

## Data

| input | URI | rows used |
|---|---|---|
{% for name, uri, rows in inputs -%}
| {{ name }} | `{{ uri }}` | {{ rows }} |
{% endfor %}
## Run

| fact | value |
|---|---|
{% for key, value in facts -%}
| {{ key }} | {{ value }} |
{% endfor %}
## Full config

```yaml
{{ config }}
```
"""

_RUN_FIELDS = ("method", "mode", "prompt_style", "taxonomy", "train_rows", "subset", "budget",
               "topic_following_rows", "examples", "global_step", "resumed_from_step", "train_loss",
               "train_seconds", "seconds_per_step", "runtime", "guardsmith_version")
"""Summary fields shown in the card's run table, in this order."""


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def base_license(model_dir: str | Path) -> str | None:
    """The license a local model folder's own card states, or None (no card, or none stated)."""
    from huggingface_hub import ModelCard

    card = Path(model_dir) / CARD_FILE
    if not card.is_file():
        return None
    try:
        return ModelCard.load(card, ignore_metadata_errors=True).data.license
    except ValueError:  # a README without valid front matter
        return None


def guard_eval_result(benchmark: str, task: str, f1: float, *, mode: str | None = None,
                      benchmark_uri: str | None = None) -> EvalResult:
    """One evaluation result of a guard: harmful F1 of `task` (in `mode`) on `benchmark`.

    model-index groups results by task type and dataset (type, config, split), so the task is
    the dataset config (one group per benchmark and task, its `task_name`) and the mode is in
    the metric name ("harmful F1 (NR)"): every result reads back as it was written.
    """
    from huggingface_hub import EvalResult

    return EvalResult(task_type="text-classification", task_name=task,
                      dataset_type=benchmark_uri or benchmark, dataset_name=benchmark, dataset_config=task,
                      metric_type="f1", metric_name=f"harmful F1 ({mode})" if mode else "harmful F1",
                      metric_value=round(float(f1), 4))


def _render(summary: TrainingSummary, *, title: str, description: str, license: str | None,
            eval_results: Sequence[EvalResult]) -> Any:
    import yaml
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(
        library_name="transformers", pipeline_tag="text-generation", base_model=summary.base_model,
        datasets=list(summary.datasets.values()) or None, license=license,
        tags=["guardsmith", "safety", summary.stage], model_name=title,
        eval_results=list(eval_results) or None,
    )
    facts = [(k, getattr(summary, k)) for k in _RUN_FIELDS] + list(summary.facts.items())
    facts += [(f"rows {k}", v) for k, v in summary.counts.items()]
    inputs = [(name, uri, _fmt(summary.input_rows.get(name))) for name, uri in summary.datasets.items()]
    return ModelCard.from_template(
        data, template_str=_TEMPLATE, title=title,
        description=description.format(stage=summary.stage, base=summary.base_model),
        inputs=inputs, facts=[(k, _fmt(v)) for k, v in facts],
        config=yaml.safe_dump(summary.config, sort_keys=False).rstrip())


def write_model_card(folder: str | Path, summary: TrainingSummary, *, title: str,
                     description: str = GUARD_DESCRIPTION, license: str | None = None,
                     eval_results: Sequence[EvalResult] = ()) -> Path:
    """Write `README.md` into local `folder` for the model `summary` describes; return its path.

    ``description`` may use ``{stage}`` and ``{base}``. ``eval_results`` (see
    `guard_eval_result`) become model-index metadata.
    """
    path = Path(folder) / CARD_FILE
    _render(summary, title=title, description=description, license=license, eval_results=eval_results).save(path)
    return path


def _merged(card: Any, eval_results: Sequence[EvalResult], name: str) -> Any:
    """``card`` with ``eval_results`` in its model-index metadata: a result for the same benchmark,
    task and metric replaces the earlier one. A card without a model name gets ``name``."""

    def key(r: EvalResult) -> tuple:
        return r.dataset_type, r.dataset_name, r.dataset_config, r.task_name, r.metric_type, r.metric_name

    merged = {key(r): r for r in (card.data.eval_results or [])}
    merged.update({key(r): r for r in eval_results})
    card.data.eval_results = list(merged.values())
    card.data.model_name = card.data.model_name or name
    return card


def add_eval_results(folder: str | Path, eval_results: Sequence[EvalResult]) -> Path:
    """Add `eval_results` to the model-index metadata of the card in local `folder` (the rest of
    the card is kept)."""
    from huggingface_hub import ModelCard

    path = Path(folder) / CARD_FILE
    _merged(ModelCard.load(path, ignore_metadata_errors=True), eval_results, Path(folder).name).save(path)
    return path


def evaluated_card(folder: str | Path, eval_results: Sequence[EvalResult], name: str) -> str:
    """The text of the card of the model in local `folder` with `eval_results` added, leaving the
    folder untouched; a model without a card (not trained here) gets a card holding only its name
    and the results."""
    from huggingface_hub import ModelCard, ModelCardData

    path = Path(folder) / CARD_FILE
    if path.is_file():
        card = ModelCard.load(path, ignore_metadata_errors=True)
    else:
        card = ModelCard.from_template(ModelCardData(model_name=name, tags=["guardsmith"]),
                                       template_str="---\n{{ card_data }}\n---\n\n# {{ title }}\n",
                                       title=name)
    return str(_merged(card, eval_results, name))
