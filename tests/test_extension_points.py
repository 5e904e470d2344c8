"""What each extension point touches, counted (docs/architecture.md, "Extending it").

- a knob or a quantization route: its technique + one table entry (at most 2 production files);
- a model family: one record (no code outside `families.py` names it or its block classes);
- a task: one file (`tasks.py`, or the user's own);
- a workload: one module + one line of the registry.

A knob is "read" by a file when its code (not a docstring or comment) takes it from a config or a space
(`config.<knob>`, `space.<knob>`), passes it by keyword to `CompressionConfig` / `SearchSpace` /
`dataclasses.replace`, or indexes a record with it (`x["<knob>"]`, `.get("<knob>")`, `.domain("<knob>")`).
The test fails when a new file starts reading a knob: the hub the stages removed would be growing back.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

import lepton_search
from lepton_search.knobs import KNOBS
from lepton_search.techniques import quantize, stages

PACKAGE = Path(lepton_search.__file__).parent
CONFIG_CALLS = ("CompressionConfig", "SearchSpace", "replace")
# The five knobs the engine was born with are its vocabulary: the one-call API names them as parameters
# (optimizer.py), the card and the records print them, early rejection and the horizon read the epochs, and the
# latency models' "bits" is the kernel width of a graph (another quantity of the same name). Each listed with why.
CORE = {
    "prune_ratio": {"optimizer.py": "ModelOptimizer.prune/compress take it as a parameter",
                    "results/card.py": "the card's summary line", "space.py": "CompressionConfig.label"},
    "prune_method": {"optimizer.py": "ModelOptimizer.prune(method=)", "results/card.py": "the card's summary line",
                     "techniques/weight_sharing.py": "shared weights refuse NNCF's unstructured masks"},
    "round_to": {"optimizer.py": "ModelOptimizer.compress(round_to=)"},
    "bits": {"optimizer.py": "ModelOptimizer.quantize(bits)", "results/card.py": "the card's summary line",
             "techniques/recovery.py": "quantization-aware fine-tuning happens at 8 bits",
             "techniques/embeddings.py": "a kernel-width homonym (row quantization of a table)",
             "techniques/fusion.py": "fusion refuses the static INT8 route (space.bits)",
             "techniques/weight_sharing.py": "a codebook in FP32/FP16 files only",
             "techniques/matmul_nbits.py": "int4_block refuses a space whose bits has no 4 (space.bits)",
             "calibration/kernel_sweep.py": "kernel width of a calibration graph (homonym)",
             "latency/kernels.py": "kernel width (homonym)", "latency/kernel_model.py": "kernel width (homonym)"},
    "finetune_epochs": {"optimizer.py": "ModelOptimizer.compress(finetune_epochs=)", "results/card.py": "card line",
                        "study.py": "the fine-tuning horizon of a study", "rejection.py": "untrained probes",
                        "techniques/weight_sharing.py": "a note where the centroids never fine-tune"},
}
# Knobs added through the extension point: a file beyond their technique's is an exception with its reason.
EXCEPTIONS = {
    "seq_len": {"default_spaces.py": "the default spaces: scaled to the model's length, left out without tokens"},
    "layers": {"default_spaces.py": "the default space scaled to the model's depth"},
    "int8_mode": {"techniques/fusion.py": "fusion refuses the static INT8 route"},
}


def _read_names(tree: ast.AST) -> set[str]:
    """Every name the code of `tree` reads as a knob would be read (see the module docstring)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and ast.unparse(node.value).split(".")[-1].endswith(("config", "space")):
            names.add(node.attr)
        elif isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] in CONFIG_CALLS:
            names.update(k.arg for k in node.keywords if k.arg)
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
            names.add(node.slice.value)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in ("get", "domain", "pop") and node.args and \
                isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            names.add(node.args[0].value)
    return names


def _reads(tree: ast.AST, name: str) -> bool:
    return name in _read_names(tree)


@functools.cache
def _tree(path: Path) -> ast.AST:
    return ast.parse(path.read_text())


@functools.cache
def _file_reads() -> dict[str, set[str]]:
    return {str(p.relative_to(PACKAGE)): _read_names(_tree(p)) for p in PACKAGE.rglob("*.py")}


def readers(name: str) -> set[str]:
    """Production files (relative to the package) whose code reads knob `name`."""
    return {f for f, names in _file_reads().items() if name in names}


@pytest.mark.parametrize("knob", [k for k in KNOBS], ids=lambda k: k.name)
def test_a_knob_is_read_by_its_technique_and_the_listed_exceptions_only(knob):
    own = knob.applied_by.removeprefix("lepton_search.").replace(".", "/") + ".py"
    allowed = {own, *CORE.get(knob.name, {}), *EXCEPTIONS.get(knob.name, {})}
    assert own in readers(knob.name), f"{knob.applied_by} does not read {knob.name}"
    assert readers(knob.name) <= allowed, f"{knob.name} read outside its technique: {readers(knob.name) - allowed}"
    if knob.name not in CORE:  # an extension-point knob: its technique + the table, plus its listed exceptions
        assert len({own, "knobs.py"}) + len(EXCEPTIONS.get(knob.name, {})) <= 3


def test_the_counter_sees_a_read_in_code_but_not_in_a_docstring():
    assert _reads(ast.parse("def f(config):\n    return config.toy\n"), "toy")
    assert _reads(ast.parse("x = record.get('toy')\n"), "toy")
    assert not _reads(ast.parse("def f(config):\n    '''config.toy'''\n    return 1\n"), "toy")
    assert not _reads(ast.parse("n = workload.toy\n"), "toy")  # another object's attribute of the same name


def _constants(path: Path) -> set[str]:
    """String constants of a file's code, docstrings left out."""
    tree = _tree(path)
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docs}


def test_a_quantization_route_is_one_table_entry():
    """Routes live in one table; no code outside quantize.py names a route (fp32 / fp16 are also dtype names)."""
    for name in set(quantize.ROUTES) - {"fp32", "fp16"}:
        files = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if name in _constants(p)}
        assert files == {"techniques/quantize.py"}, (name, files)


def test_every_technique_module_is_named_by_the_table():
    """A technique is registered by its knob's applied_by only: no other list of techniques exists."""
    modules = {type(t).__module__ for t in stages.registered()}
    assert modules == {k.applied_by for k in KNOBS}
    holders = {str(p.relative_to(PACKAGE)).replace("/", ".").removesuffix(".py")
               for p in PACKAGE.rglob("*.py") if "\nTECHNIQUES = (" in p.read_text()}
    assert holders == {m.removeprefix("lepton_search.") for m in modules}


def test_a_task_is_one_file():
    """No code outside tasks.py (and the workloads that pick one) names a task class; the base `Task` is the
    interface every layer types against."""
    from lepton_search.tasks import _TASKS

    for name, factory in _TASKS.items():
        cls = factory.__name__
        outside = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                   if p.name != "tasks.py" and not p.is_relative_to(PACKAGE / "workloads") and p.name != "__init__.py"
                   and any(isinstance(n, ast.Name) and n.id == cls for n in ast.walk(_tree(p)))}
        assert not outside, (name, outside)


def test_a_workload_is_one_module_and_one_registry_line():
    """A built-in workload's name is in its registry line and its own module only (the CLI's default and the
    one the worker drills use excepted, by name)."""
    from lepton_search import workloads

    defaults = {"fashion-mnist-cnn": "the default workload of run/search", "digits-mlp": "the workers' drill"}
    for name, target in workloads._REGISTRY.items():
        module = PACKAGE / "workloads" / (target.split(":")[0].removeprefix("lepton_search.workloads.") + ".py")
        assert module.exists(), (name, target)
        named = {p for p in PACKAGE.rglob("*.py") if name in _constants(p)}
        if name not in defaults:
            assert named <= {PACKAGE / "workloads" / "__init__.py", module, PACKAGE / "workloads" / "minilm.py"}, \
                (name, named)


def test_a_model_family_is_one_record():
    """No code outside families.py names a family, its block classes or its fusion type (string constants,
    docstrings left out): DistilBERT, GPT-2 and Llama were added as records, and a record is all a family takes."""
    from lepton_search.techniques.families import FAMILIES

    for family in FAMILIES:
        names = {family.name, *(t.rsplit(".", 1)[-1] for t in family.block_types), *family.block_types}
        outside = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                   if p.name != "families.py" and names & _constants(p)}
        assert not outside, (family.name, outside)
