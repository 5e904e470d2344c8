"""A Hugging Face model goes into Workload, search and ModelOptimizer as it comes (no wrapper written by hand)."""

from __future__ import annotations

import onnx
import pytest
import transformers  # noqa: F401 - in the lock ([nlp]): missing, it fails here instead of skipping
from hf_workload import tiny_bert as _bert
from hf_workload import token_data as _data

from lepton_search import FinetuneSettings, ModelOptimizer, SearchSpace, Workload, search
from lepton_search.errors import ConfigError
from lepton_search.techniques import prune_transformer


def test_a_hugging_face_classifier_is_taken_as_it_comes():
    ids, mask, y = _data()
    wl = Workload("bert", _bert(), train=(ids, mask, y), val=(ids, mask, y), example_input=(ids[:1], mask[:1]))
    wl.validate()  # the ModelOutput is read as (batch, classes) logits
    assert wl.input_names == ["input_ids", "attention_mask"] and wl.seq_len == 8
    assert prune_transformer.is_transformer(wl.model)  # heads and FFN channels prune, AdamW recipe


def test_more_inputs_than_the_model_takes_is_one_line():
    ids, mask, y = _data()
    five = (ids[:1],) * 7
    with pytest.raises(ConfigError, match="workload.example_input: got '7 inputs'"):
        Workload("bert", _bert(), train=(ids, mask, y), val=(ids, mask, y), example_input=five)


@pytest.mark.slow  # a real (tiny) search: prune heads, fine-tune with AdamW, INT8, measure
def test_search_and_model_optimizer_prune_a_hugging_face_model(tmp_path):
    ids, mask, y = _data()
    wl = Workload("bert", _bert(), train=(ids, mask, y), val=(ids, mask, y), example_input=(ids[:1], mask[:1]))
    settings = FinetuneSettings(subset_size="all", batch_size=16, calibration_size=8, bn_batches=1)
    space = SearchSpace(prune_ratio=(0.5, 0.5, 0.5), bits=(8,), finetune_epochs=(1, 1), anchors="off",
                        early_reject="off", finetune=settings)
    result = search(wl, space, n_trials=1, storage=f"sqlite:///{tmp_path / 's.db'}", study_name="bert",
                    callbacks=[], remeasure=False)
    assert result.study.user_attrs["space"]["finetune"]["optimizer"] == "auto"  # the space as given
    assert result.study.user_attrs["finetune_recipe"]["optimizer"] == "adamw"  # what it became for this model
    out = ModelOptimizer(wl.model, wl, settings=settings, out_dir=tmp_path).compress(prune_ratio=0.5, bits=8,
                                                                                       finetune_epochs=1)
    graph = onnx.load(str(out.onnx_path))
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask"]
    assert out.table.loc["after", "params"] < out.table.loc["before", "params"]
