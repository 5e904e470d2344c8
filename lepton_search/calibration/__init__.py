"""Offline device modelling: build calibration graphs, sweep kernels, fit profiles and kernel tables.

Run-time targets live in `lepton_search.latency` and never import this package; only the CLI does
(`lepton-search calibrate`).
"""
