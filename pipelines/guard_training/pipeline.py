"""The `guard_training` pipeline: a reasoning guard from public data (method A.1-A.8).

    preflight -> import (train, pool) -> subset -> distill_split
      -> ParallelFor(part): distill -> distill_merge -> filter
      -> (sft_budget > 0: rewrite the accepted traces to that many sentences) -> sft -> mine
      -> distill + filter the difficult set (or the pool) -> continual
      -> import benchmarks -> evaluate (sft and continual guards) -> report
    (+TF: when sft_topic_following is set, it is distilled and filtered too before sft)

Every table and model moves by URI under ``work_root`` (tasks hand each other URIs, never
copies); metrics, the confusion matrix and the reports are also KFP artifacts.
:func:`add_guard_training` builds the same tasks inside another pipeline (guard_then_boundary
uses it).
"""
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List

from kfp import dsl

from guardsmith.components.continual import continual
from guardsmith.components.data_import import data_import
from guardsmith.components.distill import distill, distill_merge, distill_split, reasoning_rows, same_uri
from guardsmith.components.filter import filter_traces
from guardsmith.components.mine import mine
from guardsmith.components.sft import sft
from guardsmith.components.subset import subset
from guardsmith.kfp_support import (
    DEFAULT_GPU_NODE_SELECTOR,
    DEFAULT_GPU_TOLERATIONS,
    GPU_RESOURCE,
    JUDGE_KEY_ENV,
    TEACHER_KEY_ENV,
    GpuPool,
    configure,
    parameter_docs,
)
from guardsmith.pipelines.evaluation.pipeline import BENCHMARKS, add_evaluation, preflight

README = Path(__file__).with_name("README.md")
"""The parameter table here is also the parameters' descriptions in the compiled pipeline."""
PIPELINE_NAME = "guardsmith-guard-training"
MAX_PARALLEL_DISTILL = 16
"""Most distillation parts running at once (a compile-time constant in KFP)."""


@dataclass
class GuardTraining:
    """The tasks of :func:`add_guard_training` that later steps build on."""

    check: Any
    """preflight"""
    chosen: Any
    """subset: ``outputs["output"]`` is the table of training rows"""
    mined: Any
    """mine: ``outputs["difficult"]`` is the difficult set continual training adds"""
    tuned: Any
    """sft: ``outputs["output"]`` is the SFT guard's URI"""
    updated: Any
    """continual: ``outputs["output"]`` is the continually trained guard's URI (the shipped guard)"""
    scored: Any
    """evaluate (sft and continual guards on the benchmarks)"""
    report: Any
    """report: ``outputs["markdown"]`` is the report's Markdown URI"""


def add_guard_training(p: Any, after: Sequence[Any] = ()) -> GuardTraining:
    """Add the guard-training tasks (preflight to report) to the current pipeline.

    ``p`` carries :func:`guard_training`'s parameters as attributes (pipeline parameters of the
    calling pipeline, see :data:`PARAMETERS`); the preflight waits for the tasks in ``after``.
    """
    pool = GpuPool(p.gpu_accelerator, p.gpu_node_selector, p.gpu_tolerations)
    check = configure(preflight(work_root=p.work_root, inputs=[p.import_from, p.import_pool_from, p.sft_base_model,
                                                             p.sft_topic_following]),
                      "preflight", display_name="preflight")
    for task in after:
        check.after(task)
    train_rows = configure(data_import(source=p.import_source, split=p.import_split, from_uri=p.import_from,
                                       mapping=p.import_mapping, encoding=p.import_encoding,
                                       output=f"{p.work_root}/data/train"), "data_import", display_name="import train")
    pool_rows = configure(data_import(source=p.import_pool_source, split=p.import_pool_split, from_uri=p.import_pool_from,
                                      mapping=p.import_pool_mapping, encoding=p.import_encoding,
                                      output=f"{p.work_root}/data/pool"), "data_import", display_name="import pool")
    train_rows.after(check)
    pool_rows.after(check)
    chosen = configure(subset(input=train_rows.outputs["output"], output=f"{p.work_root}/subset", n=p.subset_n,
                              seed=p.subset_seed), "subset", display_name="subset")

    parts = configure(distill_split(input=chosen.outputs["output"], output_prefix=f"{p.work_root}/distill",
                                    parts=p.distill_workers), "distill_split", display_name="split for distillation")
    with dsl.ParallelFor(parts.output, parallelism=MAX_PARALLEL_DISTILL) as part:
        traces = _distill(p, part.part_input, part.part_output, p.distill_taxonomy, "distill part")
    merged = configure(distill_merge(parts=dsl.Collected(traces.outputs["output"]),
                                     output=f"{p.work_root}/distill/traces"), "distill_merge", display_name="merge traces")
    kept = _filter(p, merged.outputs["output"], f"{p.work_root}/filter", p.distill_taxonomy, "filter")
    with dsl.If(p.sft_budget > 0, name="sentence budget set"):
        # the accepted traces rewritten by the teacher to at most sft_budget sentences (paper Fig. 5)
        rewritten = _distill(p, kept.outputs["accepted"], f"{p.work_root}/budget/traces", p.distill_taxonomy,
                             "rewrite to the sentence budget", budget=p.sft_budget)
    with dsl.Else(name="no sentence budget"):
        whole = configure(same_uri(uri=kept.outputs["accepted"]), "plan", display_name="full traces")
    train = dsl.OneOf(rewritten.outputs["output"], whole.output)

    with dsl.If(p.sft_topic_following != "", name="topic-following data given"):
        # +TF: the topic-following dialogues get teacher reasoning too (each row keeps its own policy)
        tf_traces = _distill(p, p.sft_topic_following, f"{p.work_root}/topic_following/traces", "",
                             "distill topic following")
        tf_kept = _filter(p, tf_traces.outputs["output"], f"{p.work_root}/topic_following/filter", "",
                          "filter topic following")
    with dsl.Else(name="no topic-following data"):
        no_tf = configure(same_uri(uri=""), "plan", display_name="no topic-following data")
    topic_following = dsl.OneOf(tf_kept.outputs["accepted"], no_tf.output)

    tuned = configure(sft(
        base_model=p.sft_base_model, output=f"{p.work_root}/sft/model", train=train, mode=p.sft_mode,
        prompt_style=p.sft_prompt_style,
        topic_following=topic_following, learning_rate=p.sft_learning_rate, lr_scheduler=p.sft_lr_scheduler,
        warmup_ratio=p.sft_warmup_ratio, epochs=p.sft_epochs, max_steps=p.sft_max_steps, batch_size=p.sft_batch_size,
        per_device_batch_size=p.sft_per_device_batch_size, max_length=p.sft_max_length, packing=p.sft_packing,
        group_by_length=p.sft_group_by_length, attn_implementation=p.sft_attn_implementation,
        use_liger_kernel=p.sft_use_liger_kernel, finetune=p.sft_finetune, precision=p.sft_precision, distributed=p.sft_distributed, gpus=p.sft_gpus,
        checkpoint_uri=f"{p.work_root}/sft/checkpoints", save_steps=p.sft_save_steps, seed=p.sft_seed,
        max_example_chars=p.sft_max_example_chars, long_examples=p.sft_long_examples, overwrite=p.sft_overwrite),
        "sft", gpus=p.sft_gpus, pool=pool, display_name="sft")

    mined = configure(mine(
        model=tuned.outputs["output"], pool=pool_rows.outputs["output"], output=f"{p.work_root}/mine",
        exclude=chosen.outputs["output"], mode=p.mine_mode, dual=p.mine_dual, samples_per_row=p.mine_samples_per_row, temperature=p.mine_temperature,
        top_p=p.mine_top_p, max_tokens=p.mine_max_tokens, limit=p.mine_limit, noise_max=p.mine_noise_max, seed=p.mine_seed, backend=p.mine_backend,
        concurrency=p.mine_concurrency, overwrite=p.sft_overwrite), "mine", gpus=p.mine_gpus, pool=pool, display_name="mine hard samples")

    # The rows continual training learns from get the teacher's reasoning, like the first SFT set
    # (otherwise R-mode targets of difficult rows fall back to `continual_missing_reasoning`).
    hard_rows = configure(reasoning_rows(which=p.continual_reasoning_rows, difficult=mined.outputs["difficult"],
                                         pool=pool_rows.outputs["output"]), "plan",
                          display_name="rows to distill for continual")
    hard_traces = _distill(p, hard_rows.output, f"{p.work_root}/continual/traces", p.distill_taxonomy,
                           "distill difficult set")
    hard_kept = _filter(p, hard_traces.outputs["output"], f"{p.work_root}/continual/filter", p.distill_taxonomy,
                        "filter difficult set")

    updated = configure(continual(
        base_model=tuned.outputs["output"], output=f"{p.work_root}/continual/model", method=p.continual_method,
        train=train, difficult=mined.outputs["difficult"], pairs=mined.outputs["pairs"],
        reasoning_source=hard_kept.outputs["accepted"], missing_reasoning=p.continual_missing_reasoning,
        oversample=p.continual_oversample, mode=p.sft_mode, learning_rate=p.continual_learning_rate,
        epochs=p.continual_epochs, max_steps=p.continual_max_steps, batch_size=p.continual_batch_size,
        per_device_batch_size=p.continual_per_device_batch_size, max_length=p.continual_max_length,
        packing=p.sft_packing, group_by_length=p.sft_group_by_length, attn_implementation=p.sft_attn_implementation,
        use_liger_kernel=p.sft_use_liger_kernel, dpo_beta=p.continual_dpo_beta, precision=p.sft_precision, distributed=p.sft_distributed, gpus=p.continual_gpus,
        checkpoint_uri=f"{p.work_root}/continual/checkpoints", save_steps=p.sft_save_steps, seed=p.continual_seed,
        max_example_chars=p.sft_max_example_chars, long_examples=p.sft_long_examples, overwrite=p.sft_overwrite),
        "continual", gpus=p.continual_gpus, pool=pool, display_name="continual training")

    scored, built = add_evaluation(
        work_root=p.work_root,
        models=[f"sft={tuned.outputs['output']}", f"continual={updated.outputs['output']}"],
        benchmarks=p.benchmarks, pool=pool, gpus=p.evaluate_gpus, modes=p.evaluate_modes, dual=p.evaluate_dual,
        samples_per_row=p.evaluate_samples_per_row, temperature=p.evaluate_temperature, top_p=p.evaluate_top_p, max_tokens=p.evaluate_max_tokens,
        seed=p.evaluate_seed, tasks=p.evaluate_tasks, limit=p.evaluate_limit, backend=p.evaluate_backend,
        concurrency=p.evaluate_concurrency, title=p.report_title, after=[check])
    return GuardTraining(check=check, chosen=chosen, mined=mined, tuned=tuned, updated=updated, scored=scored, report=built)



def _distill(p: Any, input: Any, output: Any, taxonomy: Any, label: str, budget: Any = 0) -> Any:
    """A distill task with the pipeline's teacher settings (with ``budget``: a sentence-budget rewrite)."""
    return configure(distill(
        input=input, output=output, teacher=p.distill_teacher, taxonomy=taxonomy, budget=budget,
        temperature=p.distill_temperature, top_p=p.distill_top_p, max_tokens=p.distill_max_tokens, seed=p.distill_seed,
        concurrency=p.distill_concurrency, api_key_env=TEACHER_KEY_ENV, timeout_s=p.distill_timeout_s,
        max_retries=p.distill_max_retries, retry_after_max_s=p.distill_retry_after_max_s,
        shard_size=p.distill_shard_size, max_failed_fraction=p.distill_max_failed_fraction,
        max_input_chars=p.distill_max_input_chars, input_policy=p.distill_input_policy),
        "distill", display_name=label)


def _filter(p: Any, input: Any, output: str, taxonomy: Any, label: str) -> Any:
    """A filter task with the pipeline's rules, judge and (for regeneration) teacher settings."""
    return configure(filter_traces(
        input=input, output=output, rules=p.filter_rules,
        max_words=p.filter_max_words, max_completion_tokens=p.filter_max_completion_tokens, judge=p.filter_judge,
        judge_min_score=p.filter_judge_min_score, teacher=p.distill_teacher, rounds=p.filter_rounds,
        taxonomy=taxonomy, temperature=p.distill_temperature, top_p=p.distill_top_p,
        max_tokens=p.distill_max_tokens, seed=p.distill_seed, concurrency=p.distill_concurrency,
        api_key_env=TEACHER_KEY_ENV, judge_api_key_env=JUDGE_KEY_ENV, timeout_s=p.distill_timeout_s,
        max_retries=p.distill_max_retries, retry_after_max_s=p.distill_retry_after_max_s,
        shard_size=p.distill_shard_size, max_failed_fraction=p.distill_max_failed_fraction,
        max_input_chars=p.distill_max_input_chars, input_policy=p.distill_input_policy,
        min_yield=p.filter_min_yield), "filter", display_name=label)


@dsl.pipeline(name=PIPELINE_NAME, description="Distil, filter, fine-tune, mine and continually train a "
                                              "reasoning guard, then evaluate it on the benchmark suite.")
@parameter_docs(README)
def guard_training(
    work_root: str,
    sft_base_model: str,
    distill_teacher: str,
    import_source: str = "wildguardmix",
    import_split: str = "train",
    import_from: str = "hf",
    import_mapping: str = "",
    import_encoding: str = "",
    import_pool_source: str = "wildguardmix",
    import_pool_split: str = "train",
    import_pool_from: str = "hf",
    import_pool_mapping: str = "",
    subset_n: int = 0,
    subset_seed: int = 0,
    distill_workers: int = 4,
    distill_taxonomy: str = "",
    distill_temperature: float = 0.6,
    distill_top_p: float = 0.95,
    distill_max_tokens: int = 2048,
    distill_seed: int = 0,
    distill_concurrency: int = 16,
    distill_shard_size: int = 256,
    distill_timeout_s: float = 600.0,
    distill_max_retries: int = 6,
    distill_retry_after_max_s: float = 300.0,
    distill_max_failed_fraction: float = 0.05,
    distill_max_input_chars: int = 50000,
    distill_input_policy: str = "error",
    filter_rules: List[str] = ["unparsed", "wrong_answer", "leakage", "overthinking", "repetition",
                               "overlength", "no_reasoning"],
    filter_max_words: int = 400,
    filter_max_completion_tokens: int = 4096,
    filter_judge: str = "",
    filter_judge_min_score: float = 4.0,
    filter_rounds: int = 2,
    filter_min_yield: float = 0.05,
    sft_mode: str = "R",
    sft_budget: int = 0,
    sft_prompt_style: str = "full",
    sft_topic_following: str = "",
    sft_learning_rate: float = 1e-6,
    sft_lr_scheduler: str = "cosine",
    sft_warmup_ratio: float = 0.03,
    sft_epochs: float = 5.0,
    sft_max_steps: int = -1,
    sft_batch_size: int = 32,
    sft_per_device_batch_size: int = 4,
    sft_max_length: int = 4096,
    sft_packing: bool = False,
    sft_group_by_length: bool = True,
    sft_attn_implementation: str = "",
    sft_use_liger_kernel: bool = False,
    sft_finetune: str = "full",
    sft_precision: str = "auto",
    sft_distributed: str = "ddp",
    sft_save_steps: int = 200,
    sft_seed: int = 0,
    sft_gpus: int = 8,
    sft_max_example_chars: int = 100000,
    sft_long_examples: str = "error",
    sft_overwrite: bool = False,
    mine_mode: str = "R",
    mine_dual: bool = False,
    mine_samples_per_row: int = 4,
    mine_temperature: float = 0.6,
    mine_top_p: float = 0.95,
    mine_max_tokens: int = 512,
    mine_limit: int = 0,
    mine_noise_max: int = 1,
    mine_seed: int = 0,
    mine_backend: str = "vllm",
    mine_concurrency: int = 8,
    mine_gpus: int = 1,
    continual_method: str = "sft",
    continual_reasoning_rows: str = "difficult",
    continual_missing_reasoning: str = "drop",
    continual_oversample: float = 2.0,
    continual_learning_rate: float = 1e-6,
    continual_epochs: float = 1.0,
    continual_max_steps: int = -1,
    continual_batch_size: int = 32,
    continual_per_device_batch_size: int = 4,
    continual_max_length: int = 4096,
    continual_dpo_beta: float = 0.1,
    continual_seed: int = 0,
    continual_gpus: int = 8,
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
    report_title: str = "Guard training",
    gpu_accelerator: str = GPU_RESOURCE,
    gpu_node_selector: Dict = DEFAULT_GPU_NODE_SELECTOR,
    gpu_tolerations: List[Dict] = DEFAULT_GPU_TOLERATIONS,
) -> str:
    """Train a guard end to end under `work_root`; returns the report's Markdown URI."""
    return add_guard_training(SimpleNamespace(**locals())).report.outputs["markdown"]


PIPELINE = guard_training
PARAMETERS = inspect.signature(guard_training.pipeline_func).parameters
"""guard_training's parameters (name -> inspect.Parameter), reused by pipelines that train a guard first."""
