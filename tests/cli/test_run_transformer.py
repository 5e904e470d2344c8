"""`lepton-search run` with no SPACE picks search_spaces/transformer.yaml for a BERT- or ViT-style model."""

from __future__ import annotations

from pathlib import Path

import transformers  # noqa: F401 - in the lock ([nlp]): a missing install fails here, not as skipped tests

from lepton_search.cli import main


def test_run_takes_the_transformer_space_and_refuses_what_is_above_the_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # tiny_bert_workload has 2 layers of 8 tokens: the shipped space's layers 4 (checked first: the module stage's
    # technique) and seq_len 64 are refused before any study is made, each in one line
    assert main(["run", "--workload", "hf_workload:tiny_bert_workload", "--trials", "1"]) == 2
    err = capsys.readouterr().err
    assert "space: search_spaces/transformer.yaml" in err
    assert err.strip().splitlines()[-1] == ("error: knobs.layers: got 4; is more than the model's 2 encoder layers; "
                                            "give 1..2 (0: all)")
    (tmp_path / "space.yaml").write_text((Path(__file__).parents[2] / "search_spaces" / "transformer.yaml")
                                         .read_text().replace("layers: [0, 3, 4]", "layers: [0, 1, 2]"))
    assert main(["run", "space.yaml", "--workload", "hf_workload:tiny_bert_workload", "--trials", "1"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: knobs.seq_len: got 64; is above the model's 8 tokens; give 1..8 (0: all)")
    (tmp_path / "space.yaml").unlink()
    # refused before any study is made: no database, nothing stored (the artifacts folder is made, empty)
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if not p.is_dir()] == []


def test_run_on_a_vit_takes_the_transformer_space_without_seq_len_and_searches(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--workload", "hf_workload:tiny_vit_workload", "--trials", "1"]) == 0
    captured = capsys.readouterr()
    assert "no seq_len: the model takes no tokens" in captured.err
    assert "seq_len" not in captured.out  # the front table shows no token column for it
