"""One graph, one latency: a chain's epochs and the base's own graph are timed once in a study (`graphs.py`)."""

from __future__ import annotations

import itertools

import optuna

from lepton_search import records, search
from lepton_search.graphs import graph_key, is_base_graph
from lepton_search.latency import LatencyEstimate, LatencyModel
from lepton_search.space import CompressionConfig, SearchSpace


class _Noisy(LatencyModel):
    """Every timing a new figure (1.0, 1.1, 1.2, ... ms) and every file counted: two timings of one graph would
    give two points."""

    name, source = "noisy", "measured"

    def __init__(self) -> None:
        self.timed: list[str] = []
        self._next = itertools.count()

    def latency(self, onnx_path, inputs=None):
        self.timed.append(str(onnx_path))
        return LatencyEstimate(p50_ms=1.0 + 0.1 * next(self._next), p90_ms=2.0, source=self.source)


def test_a_graph_is_timed_once_per_study_and_the_base_graph_reads_the_base(digits_mlp, sqlite_url):
    target = _Noisy()
    space = SearchSpace(prune_ratio=(0.0, 0.25, 0.25), bits=(32,), finetune_epochs=(0, 2), trials=5,
                        early_reject="off", anchors="off")
    created = optuna.create_study(storage=sqlite_url, study_name="g", directions=space.directions)
    chain = [{"prune_ratio": 0.25, "finetune_epochs": e} for e in (0, 1, 2)]
    for params in [*chain, {"prune_ratio": 0.0, "finetune_epochs": 1}, {"prune_ratio": 0.0, "finetune_epochs": 0}]:
        created.enqueue_trial(params)
    result = search(digits_mlp, space, target=target, n_trials=5, storage=sqlite_url, study_name="g",
                    verbose=False, callbacks=[], remeasure=False)
    trials = result.study.get_trials()
    done = {t.number: t.user_attrs for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
    # the unpruned FP32 model untrained is the base itself: not evaluated again, the search goes on to another
    assert trials[4].state == optuna.trial.TrialState.PRUNED and trials[4].user_attrs["duplicate_of"] == -1
    assert len(done) == 5 and 4 not in done
    assert len(target.timed) == 2, f"the base and the pruned graph, once each; timed {target.timed}"
    pruned = {done[n]["latency_ms"] for n in (0, 1, 2)}
    assert pruned == {1.1}, "a chain's epochs are one graph: one latency"
    assert done[3]["latency_ms"] == done[5]["latency_ms"] == result.base.latency_ms == 1.0
    assert done[3]["speedup"] == 1.0  # the base's graph fine-tuned is no faster than the base
    stored = records.graph_latencies(result.study)
    assert list(stored) == [graph_key(CompressionConfig(0.25, 32, 0))] and stored[next(iter(stored))]["trial"] == 0
    assert is_base_graph(CompressionConfig(0.0, 32, 1, prune_method="global"))  # ratio 0 prunes nothing
    assert graph_key(CompressionConfig(0.25, 8, 1)) != graph_key(CompressionConfig(0.25, 32, 1))


def test_knobs_that_do_not_act_on_a_config_do_not_make_a_new_model():
    """MatMulNBits' knobs act on 4-bit files with a block size only, and a zero point only in asymmetric blocks: the
    FP32 model with them set is the base, and symmetric blocks with either zero point are one model (the live
    bbc-smollm2 search ran an FP32 trial labelled int4_symmetric=False as a new config)."""
    from lepton_search.graphs import distinct_models, is_base, model_config

    assert is_base(CompressionConfig(0.0, 32, 0, int4_symmetric=False, int4_head_bits=8, int4_accuracy_level=4))
    assert is_base_graph(CompressionConfig(0.0, 8, 0, int4_block=32)) is False  # INT8: bits act, int4_block not
    assert model_config(CompressionConfig(0.0, 8, 0, int4_block=32)) == model_config(CompressionConfig(0.0, 8, 0))
    sym = [CompressionConfig(0.0, 4, 0, int4_block=32, int4_zero_point=z) for z in ("int", "float")]
    assert graph_key(sym[0]) == graph_key(sym[1]) and len(distinct_models(sym)) == 1
    asym = [CompressionConfig(0.0, 4, 0, int4_block=32, int4_symmetric=False, int4_zero_point=z) for z in ("int", "float")]
    assert graph_key(asym[0]) != graph_key(asym[1])
    assert graph_key(CompressionConfig(0.0, 4, 0, int4_block=32, int4_head_bits=8)) != graph_key(sym[0])
