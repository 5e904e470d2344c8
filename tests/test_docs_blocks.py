"""Every Python block of the README and docs/ runs as written.

The blocks of one page run in order in one namespace, as a reader pastes them into one session (the README's
ModelOptimizer block uses the `wl` its migrate block made), in a fresh folder. A page that starts from a stored
study says so in its prose ("After `make demo`"); the test makes that study first, small."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)


def test_the_blocks_are_found():
    blocks = {page.name: len(python_blocks(page)) for page in PAGES}
    assert blocks["README.md"] >= 5 and blocks["picking.md"] == 2, blocks
    # a block fenced another way would silently escape the tests below
    for page in PAGES:
        fences = re.findall(r"^```(\w*)$", page.read_text(), flags=re.MULTILINE)
        assert all(f in ("", "python", "bash", "yaml", "text", "json", "mermaid") for f in fences), (page.name, fences)


def _demo_study() -> None:
    """What `make demo` leaves in the current folder, smaller: a study of `fashion-mnist-cnn` (quantization alone,
    no training step) in ./lepton_search.db."""
    from lepton_search import SearchSpace, search

    search("fashion-mnist-cnn", SearchSpace(prune_ratio=(0.0, 0.0, 0.125), bits=(8,), finetune_epochs=(0, 0)),
           n_trials=1, callbacks=[], remeasure=False)


@pytest.mark.slow  # real trainings and searches: the README's take ~5 min together here
@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_every_python_block_runs_as_written(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "After `make demo`" in page.read_text():
        _demo_study()
    namespace: dict = {"__name__": "__docs__"}
    for number, code in enumerate(python_blocks(page), start=1):
        exec(compile(code, f"{page.name} block {number}", "exec"), namespace)  # noqa: S102 - our own docs
    if page.name == "README.md":  # what the quickstart says it leaves behind
        assert (tmp_path / "deploy" / "model.onnx").is_file() and (tmp_path / "deploy" / "MODEL_CARD.md").is_file()
        assert len(namespace["trials"].query("state == 'COMPLETE'")) == 4
    if page.name == "picking.md":
        assert (tmp_path / "deploy" / "config.json").is_file()
