"""Evaluation of an exported candidate: accuracy from ONNX Runtime, latency from a target."""

from lepton_search.evaluate.accuracy import AccuracyResult, onnx_accuracy
from lepton_search.evaluate.measurement import Measurement, evaluate, measure_onnx

__all__ = ["AccuracyResult", "Measurement", "evaluate", "measure_onnx", "onnx_accuracy"]
