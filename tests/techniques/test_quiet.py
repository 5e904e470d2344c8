"""INT8 quantization prints no third-party chatter; it reaches the "lepton_search" logger at DEBUG instead."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from lepton_search.logging import LOGGER_NAME, routed_to_debug
from lepton_search.techniques.export import to_onnx
from lepton_search.techniques.quantize import quantize_with_route
from lepton_search.testing.toy_graphs import mlp_net

CHATTER = ("pre-processing before quantization", "Statistics collection", "Applying Fast Bias correction",
           "━", "WARNING:root", "INFO:nncf", "No CUDA runtime")


def token_net(vocab: int = 50, dim: int = 16, classes: int = 4, seq: int = 8) -> onnx.ModelProto:
    """Embedding Gather on int64 token ids -> mean over the sequence -> MatMul: takes the dynamic INT8 route."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((vocab, dim)).astype(np.float32), "emb"),
             numpy_helper.from_array(rng.standard_normal((dim, classes)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")]
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["e"]),
             helper.make_node("ReduceMean", ["e", "axes"], ["m"], keepdims=0),
             helper.make_node("MatMul", ["m", "w"], ["logits"])]
    graph = helper.make_graph(nodes, "tokens", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", seq])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _calibration(n: int = 8) -> list[np.ndarray]:
    return [np.random.default_rng(i).standard_normal((1, 8)).astype(np.float32) for i in range(n)]


def _assert_quiet(capfd) -> None:
    out, err = capfd.readouterr()
    for text in CHATTER:
        assert text not in out and text not in err, f"{text!r} reached the output:\n{out}\n{err}"


def test_static_nncf_int8_prints_nothing(capfd, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    capfd.readouterr()
    _, route = quantize_with_route(mlp_net((8, 16, 4)), 8, _calibration())
    assert route.tool == "nncf"
    _assert_quiet(capfd)
    assert not [r for r in caplog.records if r.name != LOGGER_NAME and r.levelno < logging.ERROR]


def test_dynamic_ort_int8_prints_nothing_and_logs_the_hint_at_debug(capfd, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    capfd.readouterr()
    _, route = quantize_with_route(token_net(), 8)
    assert route.tool == "onnxruntime"
    _assert_quiet(capfd)
    hints = [r for r in caplog.records if "pre-processing before quantization" in r.getMessage()]
    assert hints and all(r.name == LOGGER_NAME and r.levelno == logging.DEBUG for r in hints)


def test_a_root_logger_without_handlers_stays_without(capfd, monkeypatch):
    # ONNX Runtime's logging.warning() would call basicConfig() and leave a stderr handler on the user's root logger.
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    seen: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = seen.append  # type: ignore[method-assign]
    ours = logging.getLogger(LOGGER_NAME)
    ours.addHandler(handler)
    monkeypatch.setattr(ours, "level", logging.DEBUG)
    try:
        quantize_with_route(token_net(), 8)
    finally:
        ours.removeHandler(handler)
    assert root.handlers == []
    assert any("pre-processing" in r.getMessage() for r in seen)
    _assert_quiet(capfd)


def test_export_routes_tracer_warnings_and_keeps_errors(capfd, caplog, tmp_path):
    class Branchy(torch.nn.Module):
        def forward(self, x):
            if x.sum() > 0:  # a data-dependent branch: torch's TracerWarning
                return x * 2
            return x

    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning that escaped would fail the export
        to_onnx(Branchy(), torch.ones(1, 3), tmp_path / "m.onnx")
    _assert_quiet(capfd)
    assert any("TracerWarning" in r.getMessage() for r in caplog.records if r.name == LOGGER_NAME)


def test_errors_pass_through_and_warnings_are_logged(caplog):
    with pytest.raises(RuntimeError, match="boom"), routed_to_debug():
        raise RuntimeError("boom")
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with routed_to_debug():
            warnings.warn("theirs", FutureWarning, stacklevel=1)
            logging.getLogger("onnxruntime").error("an ONNX Runtime error")
            logging.warning("a root warning")  # noqa: LOG015 - as ONNX Runtime does
    errors = [r for r in caplog.records if r.getMessage() == "an ONNX Runtime error"]
    assert errors and errors[0].name == "onnxruntime" and errors[0].levelno == logging.ERROR
    assert not [r for r in caplog.records if r.name == "root"]
    debug = [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME and r.levelno == logging.DEBUG]
    assert any("a root warning" in m for m in debug) and any("FutureWarning: theirs" in m for m in debug)
    assert logging.getLogger().filters == [] and logging.getLogger("onnxruntime").filters == []
