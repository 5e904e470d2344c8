"""The README's Python quickstart runs as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow  # trains a model and runs a real search (~30 s)
def test_readme_python_quickstart_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    code = next(b for b in blocks if "ls.search(" in b)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README, in a test
    assert (tmp_path / "deploy" / "model.onnx").is_file()
    assert (tmp_path / "deploy" / "MODEL_CARD.md").is_file()
    assert len(namespace["trials"].query("state == 'COMPLETE'")) == 4
