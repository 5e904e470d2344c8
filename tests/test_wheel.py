"""The built wheel works on its own: installed (not editable) in a fresh venv, run from another folder.

Dependencies are not reinstalled (torch alone is gigabytes): the fresh venv gets the wheel with
`--no-deps` plus a .pth line pointing at this venv's site-packages. A plain path line in a .pth is
not itself scanned for .pth files, so this checkout's editable install does not leak in.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from lepton_search.space import SearchSpace

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "lepton_search", "search_spaces")


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(argv, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the sources (the shared checkout gets no build/ or egg-info)."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: setuptools comes from this venv, so the build needs no network.
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src), "-w", str(out)],
         cwd=src, env=dict(os.environ))
    (built,) = out.glob("lepton_search-*.whl")
    return built


@pytest.mark.slow
def test_wheel_ships_the_default_space_as_a_real_file(wheel):
    with zipfile.ZipFile(wheel) as zf:
        info = zf.getinfo("lepton_search/default_space.yaml")
        assert not stat.S_ISLNK(info.external_attr >> 16)
        assert zf.read(info) == (REPO / "search_spaces" / "default.yaml").read_bytes()
        assert any(n.startswith("lepton_search/latency/profiles/") and n.endswith(".yaml") for n in zf.namelist())
        # the default demo's base: a fresh install's demo loads it instead of training it (~7 min)
        assert {"lepton_search/workloads/weights/manifest.json",
                "lepton_search/workloads/weights/fashion-cnn-w48-e3-v5000-s0.pt"} <= set(zf.namelist())


@pytest.mark.slow
def test_installed_wheel_runs_from_another_folder(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
         cwd=tmp_path, env=dict(os.environ))
    fresh_site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                           cwd=tmp_path, env=dict(os.environ)).strip())
    (fresh_site / "main_venv_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    cli = str(env_dir / "bin" / "lepton-search")

    where = _run([str(python), "-c", "import lepton_search; print(lepton_search.__file__)"], elsewhere, env).strip()
    assert Path(where).is_relative_to(fresh_site), where
    assert not Path(where).is_relative_to(REPO)
    assert "--trials" in _run([cli, "run", "--help"], elsewhere, env)
    # the installed default space is the checkout's search_spaces/default.yaml, read as the library reads it
    space = _run([str(python), "-c", "import json, lepton_search as ls; print(json.dumps(ls.default_space().to_dict()))"],
                 elsewhere, env)
    assert json.loads(space) == json.loads(json.dumps(SearchSpace.from_yaml(REPO / "search_spaces" / "default.yaml")
                                                      .to_dict()))
    assert "host-cpu" in _run([cli, "targets"], elsewhere, env)
