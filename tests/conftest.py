"""Shared fixtures: tiny real workloads (scikit-learn digits) and throwaway storage."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

# Test files live in folders that mirror the package (tests/results/, tests/cli/, ...) and are imported with
# `--import-mode=importlib`, so nothing puts tests/ on sys.path by itself. The shared helpers here are imported
# by name: `from picking_study import ...`, and the CLI tests pass `--workload failing_workloads:NAME`.
TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

# Base models trained by tests go to a throwaway cache, never the user's ~/.cache.
os.environ.setdefault("LEPTON_SEARCH_CACHE", tempfile.mkdtemp(prefix="lepton_test_cache_"))
# One OpenMP thread for torch: the digits models are too small to gain from two, and on a 2-core machine shared with
# ONNX Runtime sessions and other processes two spinning threads made digits-cnn training ~6x slower (18.7 s vs 2.8 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def digits_cnn():
    from lepton_search import workloads

    return workloads.get("digits-cnn")


@pytest.fixture(scope="session")
def digits_mlp():
    from lepton_search import workloads

    return workloads.get("digits-mlp")


@pytest.fixture()
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'study.db'}"
