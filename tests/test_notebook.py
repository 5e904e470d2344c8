"""notebooks/quickstart.ipynb executes top to bottom and shows a plotly figure (and its PNG twin)."""

from __future__ import annotations

from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


@pytest.mark.slow  # runs a kernel and a real search (~30 s)
def test_quickstart_notebook_executes():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # python3 is the kernel of the interpreter running the tests (ipykernel from the venv)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    mimes = [m for o in outputs for m in o.get("data", {})]
    assert "application/vnd.plotly.v1+json" in mimes
    assert mimes.count("image/png") == mimes.count("application/vnd.plotly.v1+json")  # each plot has a static twin
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "recommended: trial" in text and "['MODEL_CARD.md', 'config.json', 'model.onnx', 'sample_inputs.npz']" in text


def test_committed_notebook_has_outputs_and_is_small():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    mimes = [m for c in nb.cells if c.cell_type == "code" for o in c.outputs for m in o.get("data", {})]
    assert "application/vnd.plotly.v1+json" in mimes and "image/png" in mimes
    assert NOTEBOOK.stat().st_size < 1_000_000
