"""DistilBERT, GPT-2 and Llama classifiers (tiny configs, trained briefly on BBC News: `tests/family_models.py`) go
into `Workload`, `search` and `ModelOptimizer` as they come from transformers, each a family record and nothing
else: heads, MLP channels and layers prune (checked against the unpruned model with the removed units zeroed, and
against transformers' own shallower model), and every exported file re-scores to the score its trial stored.
"""

from __future__ import annotations

import copy

import onnx
import optuna
import pytest
import torch
from family_models import bbc_small, bbc_workload, trained_bbc, zeroed_reference

from lepton_search import FinetuneSettings, ModelOptimizer, SearchSpace, search
from lepton_search.evaluate import onnx_accuracy
from lepton_search.space import LatencySettings
from lepton_search.techniques import families
from lepton_search.techniques import prune_transformer as pt

DECODERS_AND_DISTILBERT = ["distilbert", "gpt2", "llama"]
SETTINGS = FinetuneSettings(subset_size=96, batch_size=32, calibration_size=8, bn_batches=1)


def _val_logits(model: torch.nn.Module) -> torch.Tensor:
    ids, mask, _ = bbc_small()["val"]
    with torch.no_grad():
        return model(input_ids=ids[:24], attention_mask=mask[:24]).logits


@pytest.mark.slow  # trains the model once per session (~5-25 s)
@pytest.mark.parametrize("name", DECODERS_AND_DISTILBERT)
def test_the_trained_model_prunes_heads_channels_and_layers_as_the_references_say(name):
    torch.set_num_threads(1)
    model = trained_bbc(name)
    assert families.family_of(model).name == name
    pruned = pt.prune_blocks(model, 0.5)
    torch.testing.assert_close(_val_logits(pruned), _val_logits(zeroed_reference(model, pruned)), rtol=1e-4,
                               atol=1e-5)
    kept = pt.keep_layers(copy.deepcopy(model), 1)
    shallow = type(model)(copy.deepcopy(kept.config)).eval()
    shallow.set_attn_implementation("eager")
    shallow.load_state_dict(model.state_dict(), strict=False)
    torch.testing.assert_close(_val_logits(kept), _val_logits(shallow), rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # a 2-trial search and one ModelOptimizer candidate on a tiny model (~30-60 s)
@pytest.mark.parametrize("name", DECODERS_AND_DISTILBERT)
def test_search_and_model_optimizer_take_it_as_it_comes_and_files_rescore_to_the_stored_score(name, tmp_path):
    torch.set_num_threads(1)
    wl = bbc_workload(name)
    assert wl.input_names == ["input_ids", "attention_mask"]
    space = SearchSpace(prune_ratio=(0.0, 0.5, 0.5), layers=(0, 1), bits=(8, 32), finetune_epochs=(0, 1),
                        sampler="random", seed=0, anchors="off", early_reject="off", finetune=SETTINGS,
                        latency=LatencySettings(warmup=2, runs=20))
    result = search(wl, space, n_trials=2, storage=f"sqlite:///{tmp_path / 's.db'}", study_name=name, verbose=False,
                    remeasure=False)
    assert result.study.user_attrs["finetune_recipe"]["optimizer"] == "adamw"  # the record's recipe
    done = result.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 2
    for t in done:
        fresh = onnx_accuracy(result.export(t.number, tmp_path / f"t{t.number}"), wl, "val")
        assert (fresh.correct, fresh.accuracy) == (t.user_attrs["val_correct"], t.user_attrs["accuracy"])
        if t.user_attrs["config"]["prune_ratio"] > 0 or t.user_attrs["config"]["layers"]:
            assert t.user_attrs["params_ratio"] < 1  # heads, channels or layers left the graph
    out = ModelOptimizer(wl.model, wl, settings=SETTINGS, out_dir=tmp_path / "opt").compress(
        prune_ratio=0.5, bits=8, finetune_epochs=0, layers=1)
    assert [i.name for i in onnx.load(str(out.onnx_path)).graph.input] == ["input_ids", "attention_mask"]
    assert out.table.loc["after", "params"] < out.table.loc["before", "params"]
