"""The module map as built (docs/architecture.md): the import graph has no cycle at import time, no
stage imports another stage, nothing but the CLI imports the CLI, and the one stage registry
matches the stage modules and component folders on disk.

The graph is read from the source (``ast``), so a test module importing things cannot hide an edge.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOTS = {"guardsmith": ROOT / "src" / "guardsmith", "guardsmith.components": ROOT / "components",
         "guardsmith.pipelines": ROOT / "pipelines"}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for prefix, folder in ROOTS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([prefix, *parts])] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(name: str) -> str | None:
    """The longest known module that ``name`` names (``guardsmith.x.func`` -> ``guardsmith.x``)."""
    while name:
        if name in MODULES:
            return name
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return None


def _targets(node: ast.AST, module: str) -> list[str]:
    out: list[str] = []
    if isinstance(node, ast.Import):
        out = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
            for _ in range(node.level - 1):
                package = package.rsplit(".", 1)[0]
            base = f"{package}.{base}" if base else package
        out = [f"{base}.{a.name}" for a in node.names] or [base]
        out.append(base)
    return [r for r in (_resolve(t) for t in out) if r and r != module]


def imports(module: str, *, import_time: bool) -> set[str]:
    """guardsmith modules that ``module`` imports: all of them, or only those run at import time
    (module and class bodies; not function bodies, not ``if TYPE_CHECKING:`` blocks)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if import_time and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if import_time and isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            found.update(_targets(child, module))
            visit(child)

    visit(tree)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = dfs(start)
            if found:
                return found
    return None


def test_the_graph_reader_sees_real_edges() -> None:
    """Guard against a reader that finds nothing: known edges of the code base are seen."""
    assert "guardsmith.errors" in imports("guardsmith.storage", import_time=True)
    assert any(m.startswith("guardsmith.stages") for m in imports("guardsmith.kfp_support", import_time=False))
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_at_import_time() -> None:
    graph = {m: imports(m, import_time=True) for m in MODULES}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle at import time: " + " -> ".join(cycle or [])


def test_no_stage_imports_another_stage() -> None:
    offenders = []
    for module in MODULES:
        if not module.startswith("guardsmith.stages.") or module == "guardsmith.stages":
            continue
        for target in imports(module, import_time=False):
            if target.startswith("guardsmith.stages.") and target != module:
                offenders.append(f"{module} -> {target}")
    assert not offenders, "stage modules import other stages: " + "; ".join(offenders)


def test_stand_ins_and_library_do_not_import_stages() -> None:
    """Library code is below the stages: only stages, the CLI, ops and the KFP shells run them."""
    allowed = ("guardsmith.stages", "guardsmith.cli", "guardsmith.ops", "guardsmith.kfp_support",
               "guardsmith.components", "guardsmith.pipelines", "guardsmith.__main__")
    offenders = []
    for module in MODULES:
        if module.startswith(allowed):
            continue
        for target in imports(module, import_time=False):
            if target.startswith("guardsmith.stages."):
                offenders.append(f"{module} -> {target}")
    assert not offenders, "library modules import stages: " + "; ".join(offenders)


def test_only_the_cli_imports_the_cli() -> None:
    offenders = []
    for module in MODULES:
        if module.startswith(("guardsmith.cli", "guardsmith.__main__")):
            continue
        for target in imports(module, import_time=False):
            if target == "guardsmith.cli" or target.startswith("guardsmith.cli."):
                offenders.append(f"{module} -> {target}")
    assert not offenders, "library modules import the CLI: " + "; ".join(offenders)


def test_label_words_are_defined_once() -> None:
    """Label words and task tuples are spelled out only in guardsmith.vocabulary."""
    words = ('("harmful", "unharmful")', '("refusal", "compliance")',
             '("prompt_harm", "response_harm", "response_refusal")', '("prompt_harm", "response_harm")')
    offenders = []
    for module, path in MODULES.items():
        if module == "guardsmith.vocabulary":
            continue
        text = path.read_text(encoding="utf-8")
        offenders += [f"{module}: {w}" for w in words if w in text]
    assert not offenders, "label words defined outside guardsmith.vocabulary: " + "; ".join(offenders)


def test_registry_matches_stage_modules_and_components() -> None:
    from guardsmith.stages import STAGES

    on_disk = {p.stem for p in (ROOTS["guardsmith"] / "stages").glob("*.py") if p.stem != "__init__"}
    assert set(STAGES) == on_disk
    folders = {p.parent.name for p in ROOTS["guardsmith.components"].glob("*/component.py")}
    assert set(STAGES) == folders
    for stage in STAGES.values():
        module = stage.module()
        assert callable(module.run) and module.HELP and module.CONFIG.__dataclass_fields__
        component = (ROOTS["guardsmith.components"] / stage.name / "component.py").read_text(encoding="utf-8")
        assert f"def {stage.component_function}(" in component
    from guardsmith.kfp_support import PROFILES

    assert set(STAGES) <= set(PROFILES), "a stage without pod settings (kfp_support.PROFILES)"


OLD_NAMES = {"n": "samples_per_row", "k": "samples_per_row", "num_generations": "samples_per_row",
             "max_completion_length": "max_tokens", "judge_concurrency_limit": "judge_concurrency"}


@pytest.mark.parametrize("stage", ["distill", "filter", "mine", "evaluate", "boundary", "boundary_eval", "continual"])
def test_one_name_per_sampling_concept(stage: str) -> None:
    """Every stage that samples spells the shared settings the same way (settings groups)."""
    from guardsmith.stages import STAGES

    fields = set(STAGES[stage].module().CONFIG.__dataclass_fields__)
    stale = {old: new for old, new in OLD_NAMES.items() if old in fields}
    assert not stale, f"{stage} uses old names: {stale}"
    assert {"temperature", "max_tokens"} <= fields
    if stage not in ("distill", "filter"):
        assert "samples_per_row" in fields
    if stage in ("mine", "evaluate", "boundary_eval"):
        assert "batch_size" not in fields and "concurrency" in fields
