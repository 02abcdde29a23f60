"""The `evaluation` pipeline: any guard models against the benchmark suite (method A.8).

    preflight -> plan_imports -> ParallelFor(benchmark): data_import -> evaluate -> report

Tables and models move by URI under ``work_root``; metrics, the confusion matrix and the
reports are also KFP artifacts. :func:`add_evaluation` builds the same tasks inside another
pipeline (guard_training uses it).
"""
from pathlib import Path
from typing import Dict, List

from kfp import dsl

from guardsmith.components.data_import import data_import
from guardsmith.components.evaluate import evaluate
from guardsmith.components.report import report
from guardsmith.kfp_support import (
    DEFAULT_GPU_NODE_SELECTOR,
    DEFAULT_GPU_TOLERATIONS,
    GPU_RESOURCE,
    GpuPool,
    component,
    configure,
    parameter_docs,
)

README = Path(__file__).with_name("README.md")
"""The parameter table here is also the parameters' descriptions in the compiled pipeline."""
PIPELINE_NAME = "guardsmith-evaluation"

BENCHMARKS: List[Dict[str, str]] = [
    {"benchmark": "wildguardtest", "source": "wildguardmix", "split": "test", "files": "hf"},
    {"benchmark": "aegis2_test", "source": "aegis2", "split": "test", "files": "hf"},
    {"benchmark": "openai_moderation", "source": "openai_moderation", "split": "train", "files": "hf"},
    {"benchmark": "toxicchat", "source": "toxicchat", "split": "test", "files": "hf"},
    {"benchmark": "simplesafetytests", "source": "simplesafetytests", "split": "test", "files": "hf"},
    {"benchmark": "xstest", "source": "xstest", "split": "response_harmfulness", "files": "hf"},
    {"benchmark": "jailbreakbench", "source": "jbb", "split": "judge_comparison", "files": "hf"},
    {"benchmark": "dynaguard", "source": "dynabench", "split": "test", "files": "hf"},
    *({"benchmark": f"cosapien_{s}", "source": "cosapien", "split": s, "files": "hf"}
      for s in ("game_development", "public_prosecutor", "book_publisher_arab", "language_learning",
                "film_production")),
]
"""The paper's suite: one entry per benchmark table (benchmark name, source, split, files). An entry
may also name ``mapping`` (with ``source: table``: your own file's column/label mapping, a URI of a
YAML mapping file or the YAML text) and ``encoding`` (text encoding of CSV/JSON files)."""


@component("cpu")
def preflight(work_root: str, inputs: List[str]) -> str:
    """Fail fast: the work root is writable and every input URI exists."""
    from guardsmith.kfp_support import preflight as check

    message = check(work_root, inputs)
    print(message, flush=True)
    return message


@component("cpu")
def plan_imports(specs: List[Dict], work_root: str, folder: str) -> List[Dict]:
    """Give every import spec its output table URI (<work_root>/<folder>/<benchmark>) and the optional
    keys (mapping, encoding) their empty defaults."""
    from guardsmith import storage

    return [{"mapping": "", "encoding": "", **spec, "table": storage.join(work_root, folder, spec["benchmark"])}
            for spec in specs]


def add_evaluation(*, work_root, models, benchmarks, pool: GpuPool, gpus, modes, dual, samples_per_row, temperature,
                   top_p, max_tokens, seed, tasks, limit, backend, concurrency, title, after=()):
    """Add import -> evaluate -> report tasks to the current pipeline; returns (evaluate, report) tasks."""
    plan = configure(plan_imports(specs=benchmarks, work_root=work_root, folder="benchmarks"),
                     "plan", display_name="plan benchmark imports")
    for task in after:
        plan.after(task)
    with dsl.ParallelFor(plan.output, parallelism=4) as spec:
        imported = configure(data_import(source=spec.source, split=spec.split, from_uri=spec.files,
                                         mapping=spec.mapping, encoding=spec.encoding, output=spec.table),
                             "data_import", display_name="import benchmark")
    scored = configure(
        evaluate(models=models, benchmarks=dsl.Collected(imported.outputs["output"]),
                 output=f"{work_root}/evaluate", modes=modes, dual=dual, samples_per_row=samples_per_row,
                 temperature=temperature,
                 top_p=top_p, max_tokens=max_tokens, seed=seed, tasks=tasks, limit=limit, backend=backend,
                 concurrency=concurrency, title=title),
        "evaluate", gpus=gpus, pool=pool, display_name="evaluate")
    built = configure(report(metrics=[scored.outputs["metrics"]], output=f"{work_root}/report", title=title),
                      "report", display_name="report")
    return scored, built


@dsl.pipeline(name=PIPELINE_NAME, description="Evaluate guard models on the guard benchmark suite "
                                              "(harmful F1, mean and std over k runs) and build the report.")
@parameter_docs(README)
def evaluation(
    work_root: str,
    models: List[str],
    benchmarks: List[Dict] = BENCHMARKS,
    evaluate_modes: List[str] = ["R"],
    evaluate_dual: bool = False,
    evaluate_samples_per_row: int = 4,
    evaluate_temperature: float = 0.6,
    evaluate_top_p: float = 0.95,
    evaluate_max_tokens: int = 512,
    evaluate_seed: int = 0,
    evaluate_tasks: List[str] = ["prompt_harm", "response_harm"],
    evaluate_limit: int = 0,
    evaluate_backend: str = "vllm",
    evaluate_concurrency: int = 8,
    evaluate_gpus: int = 1,
    report_title: str = "Guard evaluation",
    gpu_accelerator: str = GPU_RESOURCE,
    gpu_node_selector: Dict = DEFAULT_GPU_NODE_SELECTOR,
    gpu_tolerations: List[Dict] = DEFAULT_GPU_TOLERATIONS,
) -> str:
    """Evaluate `models` (name=URI) on `benchmarks`; returns the report's Markdown URI."""
    check = configure(preflight(work_root=work_root, inputs=models), "preflight", display_name="preflight")
    _, built = add_evaluation(
        work_root=work_root, models=models, benchmarks=benchmarks,
        pool=GpuPool(gpu_accelerator, gpu_node_selector, gpu_tolerations), gpus=evaluate_gpus,
        modes=evaluate_modes, dual=evaluate_dual, samples_per_row=evaluate_samples_per_row, temperature=evaluate_temperature,
        top_p=evaluate_top_p, max_tokens=evaluate_max_tokens, seed=evaluate_seed, tasks=evaluate_tasks,
        limit=evaluate_limit, backend=evaluate_backend, concurrency=evaluate_concurrency, title=report_title,
        after=[check])
    return built.outputs["markdown"]


PIPELINE = evaluation
