"""`lepton-search run` with no SPACE picks search_spaces/transformer.yaml for a BERT- or ViT-style model, scaled to\nits depth and length (`default_spaces`)."""

from __future__ import annotations

from pathlib import Path

import optuna
import transformers  # noqa: F401 - in the lock ([nlp]): a missing install fails here, not as skipped tests

from lepton_search.cli import main


def test_run_scales_the_transformer_space_to_the_model_and_refuses_the_file_above_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shipped = Path(__file__).parents[2] / "search_spaces" / "transformer.yaml"
    # tiny_bert_workload has 2 layers of 8 tokens: the shipped file, given as SPACE, asks layers 4 (checked first:
    # the module stage's technique) and seq_len 64; each is refused before any study is made, in one line
    assert main(["run", str(shipped), "--workload", "hf_workload:tiny_bert_workload", "--trials", "1"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: knobs.layers: got 4; is more than the model's 2 encoder layers; give 1..2 (0: all)")
    (tmp_path / "space.yaml").write_text(shipped.read_text().replace("layers: [0, 3, 4]", "layers: [0, 1, 2]"))
    assert main(["run", "space.yaml", "--workload", "hf_workload:tiny_bert_workload", "--trials", "1"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: knobs.seq_len: got 64; is above the model's 8 tokens; give 1..8 (0: all)")
    (tmp_path / "space.yaml").unlink()
    # refused before any study is made: no database, nothing stored (the artifacts folder is made, empty)
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if not p.is_dir()] == []
    # with no SPACE the same file is scaled to this model: half of its layers, a quarter and half of its tokens
    assert main(["run", "--workload", "hf_workload:tiny_bert_workload", "--trials", "1"]) == 0
    captured = capsys.readouterr()
    assert "space: search_spaces/transformer.yaml (a Transformer encoder: tokens, layers, heads, INT8)" in captured.err
    stored = optuna.load_study(study_name="bert", storage="sqlite:///lepton_search.db").user_attrs["space"]["knobs"]
    assert stored["layers"] == [0, 1] and stored["seq_len"] == [0, 2, 4]


def test_run_on_a_vit_takes_the_transformer_space_without_seq_len_and_searches(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--workload", "hf_workload:tiny_vit_workload", "--trials", "1"]) == 0
    captured = capsys.readouterr()
    assert "no seq_len: the model takes no tokens" in captured.err
    assert "seq_len" not in captured.out  # the front table shows no token column for it
