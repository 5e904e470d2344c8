"""Safety rules, checked on the source: safe loaders only, no eval/exec, loopback dashboard, confined outputs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from lepton_search.errors import ConfigError
from lepton_search.paths import confined_dir, confined_file, safe_name

PACKAGE = Path(__file__).resolve().parents[1] / "lepton_search"
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _calls(path: Path) -> list[tuple[str, ast.Call]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            out.append((ast.unparse(node.func), node))
    return out


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_safe_loaders_and_no_eval(path):
    for name, call in _calls(path):
        assert name not in ("eval", "exec", "builtins.eval", "builtins.exec", "pickle.load", "pickle.loads"), \
            f"{path.name}:{call.lineno} calls {name}"
        assert name not in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"), f"{path.name}:{call.lineno}: use yaml.safe_load"
        if name == "torch.load":
            kw = {k.arg: k.value for k in call.keywords}
            assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, \
                f"{path.name}:{call.lineno}: torch.load needs weights_only=True"


def test_dashboard_binds_to_loopback_by_default():
    from lepton_search.cli import cli

    host = next(p for p in cli.commands["dashboard"].params if p.name == "host")
    assert host.default == "127.0.0.1"


@pytest.mark.parametrize("path", ["../x", "a/../../x", "..", "./../x"])
def test_relative_outputs_may_not_leave_their_folder(path, tmp_path):
    with pytest.raises(ConfigError, match="leaves"):
        confined_dir("out_dir", path, root=tmp_path)


def test_inside_and_absolute_outputs_are_allowed(tmp_path):
    assert confined_dir("out_dir", "a/b/../c", root=tmp_path) == (tmp_path / "a" / "c").resolve()
    assert confined_dir("out_dir", "/srv/models") == Path("/srv/models")
    assert confined_file("name", tmp_path, "model.onnx") == (tmp_path / "model.onnx").resolve()
    with pytest.raises(ConfigError):
        confined_file("name", tmp_path, "../model.onnx")


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".hidden", "", "a..b", "x" * 200])
def test_unsafe_names_are_refused(name):
    with pytest.raises(ConfigError):
        safe_name("study_name", name)
