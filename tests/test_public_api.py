"""Every name the README and docs/ use from `lepton_search` is importable from it and listed in `__all__`."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

import lepton_search

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def used_names(code: str, aliases: set[str] | None = None) -> tuple[set[str], set[tuple[str, str]]]:
    """Names taken from `lepton_search` in `code` (`ls.X`, `lepton_search.X`, `from lepton_search import X`),
    and (module, name) pairs from `from lepton_search.sub import name`. `aliases` holds the names the package
    is bound to; a block's `import lepton_search as ls` adds to it, and later blocks of the page read it as
    a reader does (the README's ModelOptimizer block uses the import of the block before it)."""
    tree = ast.parse(code)
    aliases = aliases if aliases is not None else {"lepton_search"}
    names: set[str] = set()
    deep: set[tuple[str, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname or a.name for a in node.names if a.name == "lepton_search"}
        elif isinstance(node, ast.ImportFrom) and node.module == "lepton_search":
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lepton_search."):
            deep |= {(str(node.module), a.name) for a in node.names}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            names.add(node.attr)
    return names, deep


def inline_names(text: str) -> set[str]:
    """`ls.X...` in inline code spans of the prose (the README's alias; `lepton_search.db` is a file name)."""
    return set(re.findall(r"`ls\.(\w+)", text))


def documented() -> tuple[dict[str, list[str]], set[tuple[str, str]]]:
    names: dict[str, list[str]] = {}
    deep: set[tuple[str, str]] = set()
    for path in DOCS:
        text = path.read_text()
        found = inline_names(text)
        aliases = {"lepton_search"}
        for block in python_blocks(text):
            block_names, block_deep = used_names(block, aliases)
            found |= block_names
            deep |= block_deep
        for name in found:
            names.setdefault(name, []).append(path.name)
    return names, deep


def missing(names: dict[str, list[str]]) -> list[str]:
    def public(name: str) -> bool:  # a dunder (`ls.__all__`) need only exist
        return hasattr(lepton_search, name) and (name.startswith("__") or name in lepton_search.__all__)

    return sorted(f"{name} (used in {', '.join(where)})" for name, where in names.items() if not public(name))


@pytest.mark.parametrize("name", lepton_search.__all__)
def test_every_public_name_resolves(name):
    assert getattr(lepton_search, name) is not None


def test_dir_lists_the_public_surface_and_unknown_names_raise():
    assert dir(lepton_search) == lepton_search.__all__
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        _ = lepton_search.NoSuchThing  # type: ignore[attr-defined]


def test_names_the_issue_named_are_public():
    for name in ("InputSpec", "FinetuneSettings", "Task", "get_task", "InputTransform", "ModelOptimizer", "load",
                 "search", "SearchSpace", "Workload", "default_space", "list_workloads", "LatencyModel",
                 "LatencyEstimate", "register_target"):
        assert name in lepton_search.__all__
    assert lepton_search.InputSpec is importlib.import_module("lepton_search.workloads").InputSpec


def test_every_name_the_readme_and_docs_use_exists():
    names, deep = documented()
    # The collector reads the blocks: the README's quickstart alone uses these.
    assert {"Workload", "SearchSpace", "search", "load", "migrate", "ModelOptimizer"} <= set(names)
    assert missing(names) == []
    for module, name in sorted(deep):
        assert hasattr(importlib.import_module(module), name), f"{module}.{name} is documented but does not exist"


def test_the_check_fails_on_a_name_that_is_not_public():
    block = "import lepton_search as ls\nfrom lepton_search import load, NotThere\nls.Workload; ls.NoSuchThing(1)\n"
    names, _ = used_names(block)
    assert names == {"load", "NotThere", "Workload", "NoSuchThing"}
    assert missing({n: ["x.md"] for n in names}) == ["NoSuchThing (used in x.md)", "NotThere (used in x.md)"]
    assert inline_names("see `ls.workloads.get(name)` and `lepton_search.db`") == {"workloads"}
