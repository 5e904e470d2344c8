"""A non-CNN model whose top level is a bare nn.Sequential, through the whole pipeline."""

import optuna
import pytest

from lepton_search import SearchSpace, search


@pytest.mark.slow  # a real 3-trial search (~7 s); unstructured pruning itself is covered fast in test_compress
def test_sequential_mlp_search_with_unstructured_pruning(digits_mlp, sqlite_url):
    space = SearchSpace(prune_ratio=(0.0, 0.5, 0.5), prune_method="unstructured", bits=(32, 8),
                        finetune_epochs=(0, 1), sampler="random", seed=1)
    result = search(digits_mlp, space, n_trials=3, storage=sqlite_url, study_name="mlp", verbose=False)
    complete = result.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 3
    for t in complete:
        expected = t.params.get("prune_ratio", 0.0)
        # classifier kept whole, so overall sparsity is a little under the ratio
        assert expected * 0.8 <= t.user_attrs["weight_sparsity"] <= expected + 0.01
        assert t.user_attrs["macs_ratio"] == 1.0  # unstructured keeps the graph's shape
        assert t.user_attrs["accuracy"] > 0.8
