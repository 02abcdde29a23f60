"""KFP component `continual`: thin shell over guardsmith.stages.continual."""
from typing import List, NamedTuple, Optional

from kfp.dsl import Metrics, Output

from guardsmith.kfp_support import component


@component("train")
def continual(
    base_model: str,
    output: str,
    metrics: Output[Metrics],
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
    method: str = "sft",
    train: Optional[str] = None,
    difficult: Optional[str] = None,
    oversample: float = 2.0,
    reasoning_source: Optional[str] = None,
    pairs: Optional[str] = None,
    mode: str = "R",
    missing_reasoning: str = "short",
    prompt_style: Optional[str] = None,
    dpo_beta: float = 0.1,
    samples_per_row: int = 4,
    max_tokens: int = 256,
    temperature: float = 1.0,
    top_p: float = 1.0,
    grpo_beta: float = 0.0,
    reward_prompt_weight: float = 1.0,
    reward_response_weight: float = 1.0,
    reward_refusal_weight: float = 0.5,
    reward_fp_penalty: float = 1.0,
    reward_fn_penalty: float = 1.0,
    reward_parse_failure: float = -2.0,
) -> NamedTuple("Outputs", [("output", str), ("examples", int), ("global_step", int)]):
    """Continual training of the guard on mined hard samples."""
    params = dict(locals())
    from guardsmith.kfp_support import log_training, outputs, run_stage

    result = run_stage("continual", params)
    log_training(result, metrics)
    return outputs(result, "output", "examples", "global_step")
