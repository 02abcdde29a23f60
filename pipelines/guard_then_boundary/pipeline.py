"""The `guard_then_boundary` pipeline: train a guard (method A), then use it as Boundary Guidance's filter (method B).

    boundary preflight -> guard_training's tasks (preflight, import, subset, distill, filter, sft, mine,
                          continual, evaluate, report)
                       -> boundary_guidance's tasks with safety = guard:<continual guard URI>
                          (import prompts, ParallelFor(reward): boundary, boundary_eval)

The guard steps are exactly guard_training's (:func:`add_guard_training`, same parameters, same
layout under ``work_root``); the Boundary Guidance steps are exactly boundary_guidance's
(:func:`add_boundary_guidance`, under ``<work_root>/boundary/``) with the continually trained
guard as the safety scorer t of the rewards and as the evaluated filter. The parameters are
guard_training's followed by boundary_guidance's (without ``safety``, which is the trained guard)
and ``safety_options``; they are derived from the two pipelines' signatures, so the three stay in
step. Returns the Boundary Guidance report's Markdown URI; the guard's own report is under
``<work_root>/report``.
"""
import inspect
from pathlib import Path
from types import SimpleNamespace

from kfp import dsl

from guardsmith.kfp_support import configure, parameter_docs
from guardsmith.pipelines.boundary_guidance.pipeline import PARAMETERS as BOUNDARY_PARAMETERS
from guardsmith.pipelines.boundary_guidance.pipeline import add_boundary_guidance, boundary_preflight
from guardsmith.pipelines.guard_training.pipeline import PARAMETERS as GUARD_PARAMETERS
from guardsmith.pipelines.guard_training.pipeline import add_guard_training

PIPELINE_NAME = "guardsmith-guard-then-boundary"
SHARED = ("work_root", "gpu_accelerator", "gpu_node_selector", "gpu_tolerations")
"""Parameters both pipelines have; guard_then_boundary has each once."""
SAFETY_OPTIONS = inspect.Parameter("safety_options", inspect.Parameter.POSITIONAL_OR_KEYWORD, default="",
                                   annotation=str)
"""Query options appended to the guard scorer spec ``guard:<continual guard URI>``, e.g.
``?prompt_line=predict`` or ``?dual=true`` for a dual-mode guard (see guardsmith.scoring)."""


def _parameters() -> list[inspect.Parameter]:
    """guard_training's parameters, then boundary_guidance's (shared ones once, no ``safety``), then
    ``safety_options``; required ones first and the GPU pool last, as in the other pipelines."""
    clash = (set(GUARD_PARAMETERS) & set(BOUNDARY_PARAMETERS)) - set(SHARED)
    if clash:
        raise RuntimeError(f"guard_training and boundary_guidance both have parameter(s) {sorted(clash)}")
    boundary = [p for n, p in BOUNDARY_PARAMETERS.items() if n not in (*SHARED, "safety")]
    every = [*GUARD_PARAMETERS.values(), *boundary, SAFETY_OPTIONS]
    required = [p for p in every if p.default is inspect.Parameter.empty]
    pool = [p for p in every if p.name in SHARED[1:]]
    return required + [p for p in every if p not in required and p not in pool] + pool


PARAMETERS = {p.name: p for p in _parameters()}
"""guard_then_boundary's parameters (name -> inspect.Parameter)."""


def _guard_then_boundary(*args):
    """Train a guard under `work_root`, then Boundary Guidance generators with it as the filter; returns
    the Boundary Guidance report's Markdown URI."""
    p = SimpleNamespace(**dict(zip(PARAMETERS, args)))
    check = configure(boundary_preflight(work_root=p.work_root, inputs=[p.generator, p.prompts_from],
                                         scorers=[p.utility], rewards=p.rewards),
                      "preflight", display_name="preflight (Boundary Guidance inputs)")
    guard = add_guard_training(p, after=[check])
    safety = f"guard:{guard.updated.outputs['output']}{p.safety_options}"
    held = [guard.chosen.outputs["output"], guard.mined.outputs["difficult"]]  # what the guard trained on
    return add_boundary_guidance(p, safety, after=[check], hold_apart=held).evaluated.outputs["report_md"]


_guard_then_boundary.__signature__ = inspect.Signature(list(PARAMETERS.values()), return_annotation=str)
_HERE = Path(__file__).parent
parameter_docs(_HERE / "README.md", _HERE.parent / "guard_training" / "README.md",
               _HERE.parent / "boundary_guidance" / "README.md")(_guard_then_boundary)
guard_then_boundary = dsl.pipeline(
    name=PIPELINE_NAME,
    description="Train a reasoning guard (guard_training's steps), then train Boundary Guidance generators "
                "with that guard as the safety filter and judge the filtered systems.")(_guard_then_boundary)

PIPELINE = guard_then_boundary
