"""Hidden-unit pruning of LSTM/GRU: the pruned module against a numpy recurrence on weights sliced here,
units nobody reads removed without changing the outputs, and `prune_ratio` acting through `prune.prune`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lepton_search.space import CompressionConfig
from lepton_search.techniques import prune, prune_rnn


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def np_lstm_dir(x: np.ndarray, w_ih, w_hh, b_ih, b_hh) -> np.ndarray:
    """One direction of one LSTM layer, PyTorch's gate order (i, f, g, o); x (T, B, in) -> (T, B, H)."""
    h_size = w_hh.shape[1]
    h = np.zeros((x.shape[1], h_size))
    c = np.zeros_like(h)
    out = []
    for x_t in x:
        i, f, g, o = np.split(x_t @ w_ih.T + b_ih + h @ w_hh.T + b_hh, 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.stack(out)


def np_gru_dir(x: np.ndarray, w_ih, w_hh, b_ih, b_hh) -> np.ndarray:
    """One direction of one GRU layer, PyTorch's gate order (r, z, n)."""
    h = np.zeros((x.shape[1], w_hh.shape[1]))
    out = []
    for x_t in x:
        xr, xz, xn = np.split(x_t @ w_ih.T + b_ih, 3, axis=1)
        hr, hz, hn = np.split(h @ w_hh.T + b_hh, 3, axis=1)
        r, z = sigmoid(xr + hr), sigmoid(xz + hz)
        h = (1 - z) * np.tanh(xn + r * hn) + z * h
        out.append(h)
    return np.stack(out)


def np_rnn(rnn: nn.RNNBase, x: np.ndarray, keeps: list[list[np.ndarray]]) -> np.ndarray:
    """The pruned network computed from the *unpruned* module's weights, sliced here by hand.
    x: (B, T, in) batch-first. Returns (B, T, H_kept x directions)."""
    cell = np_lstm_dir if isinstance(rnn, nn.LSTM) else np_gru_dir
    gates, h = (4 if isinstance(rnn, nn.LSTM) else 3), rnn.hidden_size
    w = {k: v.detach().double().numpy() for k, v in rnn.named_parameters()}
    seq = x.transpose(1, 0, 2)
    for layer, layer_keeps in enumerate(keeps):
        outs = []
        for d, keep in enumerate(layer_keeps):
            sfx = f"l{layer}" + ("_reverse" if d else "")
            rows = np.concatenate([keep + g * h for g in range(gates)])
            w_ih = w[f"weight_ih_{sfx}"][rows]
            if layer:  # inputs are the previous layer's kept units: forward block, then backward block
                w_ih = w_ih[:, np.concatenate([k + i * h for i, k in enumerate(keeps[layer - 1])])]
            args = (w_ih, w[f"weight_hh_{sfx}"][rows][:, keep], w[f"bias_ih_{sfx}"][rows], w[f"bias_hh_{sfx}"][rows])
            o = cell(seq[::-1] if d else seq, *args)
            outs.append(o[::-1] if d else o)
        seq = np.concatenate(outs, axis=2)
    return seq.transpose(1, 0, 2)


class SeqClassifier(nn.Module):
    """Embedding -> RNN -> masked mean over time -> Linear: the shape of the bbc-lstm workload."""

    def __init__(self, cell: type = nn.LSTM, *, layers: int = 2, bidirectional: bool = False, hidden: int = 12) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 6, padding_idx=0)
        self.rnn = cell(6, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(hidden * (2 if bidirectional else 1), 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.emb(ids))
        mask = (ids != 0).unsqueeze(-1).to(out.dtype)
        return self.fc((out * mask).sum(1) / mask.sum(1).clamp_min(1))


def ids_batch(seed: int = 0) -> torch.Tensor:
    ids = torch.randint(1, 50, (3, 9), generator=torch.Generator().manual_seed(seed))
    ids[1, 6:] = 0  # padding at the end
    return ids


def random_keeps(rnn: nn.RNNBase, keep: int, seed: int = 0) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    dirs = 2 if rnn.bidirectional else 1
    return [[torch.randperm(rnn.hidden_size, generator=gen)[:keep].sort().values for _ in range(dirs)]
            for _ in range(rnn.num_layers)]


CASES = [(nn.LSTM, 1, False), (nn.LSTM, 2, False), (nn.LSTM, 2, True), (nn.GRU, 2, False), (nn.GRU, 1, True)]


@pytest.mark.parametrize(("cell", "layers", "bidirectional"), CASES)
def test_pruned_rnn_matches_numpy_recurrence_on_sliced_weights(cell, layers, bidirectional):
    torch.manual_seed(0)
    model = SeqClassifier(cell, layers=layers, bidirectional=bidirectional).eval()
    ids = ids_batch()
    reference_rnn = cell(6, 12, num_layers=layers, batch_first=True, bidirectional=bidirectional)
    reference_rnn.load_state_dict(model.rnn.state_dict())
    keeps = random_keeps(model.rnn, 7)
    prune_rnn.prune_units(model, ids, model.rnn, keeps)

    assert model.rnn.hidden_size == 7
    assert model.fc.in_features == 7 * (2 if bidirectional else 1)
    with torch.no_grad():
        got = model.rnn(model.emb(ids))[0].double().numpy()
    want = np_rnn(reference_rnn, model.emb(ids).detach().double().numpy(), [[k.numpy() for k in la] for la in keeps])
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize(("cell", "layers", "bidirectional"), CASES)
def test_units_nobody_reads_are_removed_without_changing_the_logits(cell, layers, bidirectional):
    """Zero every weight that reads the units to be removed (their recurrent columns, the next layer's input
    columns, the classifier's columns): the logits before and after removing them are the same."""
    torch.manual_seed(1)
    model = SeqClassifier(cell, layers=layers, bidirectional=bidirectional).eval()
    rnn, h, ids = model.rnn, model.rnn.hidden_size, ids_batch(1)
    keeps = random_keeps(rnn, 5, seed=2)
    with torch.no_grad():
        for layer, layer_keeps in enumerate(keeps):
            dropped_out = []  # output-feature indices of this layer that go
            for d, keep in enumerate(layer_keeps):
                gone = torch.tensor([j for j in range(h) if j not in set(keep.tolist())])
                getattr(rnn, f"weight_hh_l{layer}{'_reverse' if d else ''}")[:, gone] = 0
                dropped_out.append(gone + d * h)
            dropped_out = torch.cat(dropped_out)
            if layer + 1 < rnn.num_layers:
                for sfx in ("", "_reverse")[: 2 if bidirectional else 1]:
                    getattr(rnn, f"weight_ih_l{layer + 1}{sfx}")[:, dropped_out] = 0
            else:
                model.fc.weight[:, dropped_out] = 0
        before = model(ids)
    prune_rnn.prune_units(model, ids, rnn, keeps)
    with torch.no_grad():
        after = model(ids)
    assert rnn.hidden_size == 5
    torch.testing.assert_close(after, before, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
def test_importance_removes_dead_units_first(cell):
    """A unit with all its own weights zero stays 0 from a zero start (LSTM: g = tanh(0) = 0, so c stays 0; GRU:
    h = z * h = 0): it ranks last and removing it changes nothing."""
    torch.manual_seed(2)
    model = SeqClassifier(cell, layers=2, hidden=8).eval()
    dead = [1, 4, 6, 7]
    with torch.no_grad():
        for name, p in model.rnn.named_parameters():
            gates = p.reshape(-1, 8, *p.shape[1:])
            gates[:, dead] = 0
            if name.startswith("weight_hh"):
                p[:, dead] = 0
        before = model(ids_batch())
    prune_rnn.prune_rnns(model, ids_batch(), 0.5)
    assert model.rnn.hidden_size == 4
    torch.testing.assert_close(model(ids_batch()), before, atol=1e-6, rtol=1e-5)


def test_prune_ratio_acts_on_hidden_units_through_prune_prune():
    torch.manual_seed(3)
    model = SeqClassifier(nn.LSTM, layers=1, hidden=64).eval()
    shrinkable, _ = prune.layers_pruning_skips(model)
    assert shrinkable == ["rnn (LSTM hidden units)"]  # so study.acting_space keeps prune_ratio
    pruned = prune.prune(model, ids_batch(), CompressionConfig(0.3, 32, 0, round_to=8))
    assert pruned.rnn.hidden_size == 40  # 64 - int(19.2) = 45 kept, rounded down to a multiple of 8
    assert pruned.fc.in_features == 40 and model.rnn.hidden_size == 64  # a pruned copy
    assert pruned(ids_batch()).shape == (3, 3)
    macs_base, _ = prune.count(model, ids_batch())
    macs_pruned, _ = prune.count(pruned, ids_batch())
    assert macs_pruned < 0.7 * macs_base


def test_linear_feeding_an_lstm_and_the_lstm_are_both_pruned():
    torch.manual_seed(4)

    class Projected(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(6, 16)
            self.rnn = nn.LSTM(16, 16, batch_first=True)
            self.fc = nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.rnn(torch.relu(self.proj(x)))[0][:, -1])

    model = Projected().eval()
    x = torch.randn(2, 5, 6)
    pruned = prune.prune(model, x, CompressionConfig(0.5, 32, 0))
    assert (pruned.proj.out_features, pruned.rnn.input_size, pruned.rnn.hidden_size, pruned.fc.in_features) == (8, 8, 8, 8)
    assert pruned(x).shape == (2, 3)


def test_refusals_name_the_module_and_the_fix():
    class LastState(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(4, 8, batch_first=True)
            self.fc = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.rnn(x)[1][-1])

    with pytest.raises(ValueError, match=r"rnn: .*reads only h_n.*output\[:, -1\]"):
        prune_rnn.prune_rnns(LastState().eval(), torch.randn(2, 5, 4), 0.5)
    projected = nn.LSTM(4, 8, proj_size=3)
    with pytest.raises(ValueError, match="proj_size=3"):
        prune_rnn.plan(projected, 4)
    with pytest.raises(ValueError, match="round_to 16 at prune ratio 0.5 leaves no hidden unit in rnn"):
        prune_rnn.prune_rnns(SeqClassifier(hidden=12).eval(), ids_batch(), 0.5, round_to=16)


def test_unstructured_pruning_says_it_leaves_the_lstm_dense():
    with pytest.warns(UserWarning, match=r"unstructured pruning leaves rnn \(LSTM\) dense.*'structured' removes"):
        prune.prune(SeqClassifier(hidden=8).eval(), ids_batch(), CompressionConfig(0.5, 32, 0, prune_method="unstructured"))
