"""KFP component `boundary`: thin shell over guardsmith.stages.boundary."""
from typing import List, NamedTuple, Optional

from kfp.dsl import Metrics, Output

from guardsmith.kfp_support import component


@component("train")
def boundary(
    output: str,
    prompts: str,
    safety: str,
    rewards: Output[Metrics],
    generator: Optional[str] = None,
    base_model: Optional[str] = None,
    sources: List[str] = [],
    prompt_labels: List[str] = [],
    max_prompts: int = 0,
    min_prompt_words: int = 0,
    system_prompt: Optional[str] = None,
    utility: Optional[str] = None,
    reward: str = "boundary",
    tau: float = 0.5,
    w_utility: float = 1.0,
    w_margin: float = 1.0,
    margin_normalisation: str = "zscore",
    filter_lambda: float = 1.0,
    refusal_utility: float = 0.0,
    utility_normalisation: str = "zscore",
    utility_scale: float = 1.0,
    utility_shift: float = 0.0,
    scorer_device: str = "auto",
    scorer_batch_size: int = 16,
    score_concurrently: bool = True,
    samples_per_row: int = 8,
    max_tokens: int = 512,
    temperature: float = 1.0,
    top_p: float = 1.0,
    grpo_beta: float = 0.0,
    loss_type: str = "dapo",
    scale_rewards: str = "group",
    use_vllm: Optional[bool] = None,
    vllm_mode: str = "colocate",
    vllm_server_base_url: Optional[str] = None,
    vllm_gpu_memory_utilization: float = 0.3,
    vllm_tensor_parallel_size: int = 1,
    vllm_max_model_length: int = 0,
    vllm_enable_sleep_mode: bool = False,
    rewards_log: Optional[str] = None,
    learning_rate: float = 1e-06,
    lr_scheduler: str = "cosine",
    warmup_ratio: float = 0.03,
    epochs: float = 5.0,
    max_steps: int = -1,
    batch_size: int = 32,
    per_device_batch_size: int = 4,
    max_length: int = 4096,
    packing: Optional[bool] = None,
    group_by_length: bool = True,
    attn_implementation: Optional[str] = None,
    use_liger_kernel: bool = False,
    finetune: str = "full",
    lora_r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.05,
    lora_target_modules: List[str] = ["q_proj", "k_proj", "v_proj", "o_proj"],
    merge_lora: bool = True,
    precision: str = "auto",
    activation_checkpointing: Optional[bool] = None,
    gpus: int = 0,
    distributed: str = "ddp",
    checkpoint_uri: Optional[str] = None,
    save_steps: int = 200,
    save_total_limit: int = 2,
    resume: bool = True,
    logging_steps: int = 10,
    report_to: List[str] = ["tensorboard"],
    logs_uri: Optional[str] = None,
    seed: int = 0,
    work_dir: Optional[str] = None,
    max_example_chars: int = 100000,
    long_examples: str = "error",
    overwrite: bool = False,
) -> NamedTuple("Outputs", [("output", str), ("rewards_log", str), ("examples", int), ("global_step", int)]):
    """Boundary Guidance: GRPO fine-tuning of a generator with one reward variant (boundary, guard_only, rm_only, filter_avoid, prompt_aware)."""
    params = dict(locals())
    from guardsmith.kfp_support import log_training, outputs, run_stage

    result = run_stage("boundary", params)
    log_training(result, rewards)
    return outputs(result, "output", "rewards_log", "examples", "global_step")
