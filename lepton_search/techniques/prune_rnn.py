"""Hidden-unit pruning of nn.LSTM and nn.GRU that keeps the recurrent weights consistent.

Removing hidden unit j of one layer and direction removes row j of every gate block of that layer's
`weight_ih`, `weight_hh`, `bias_ih` and `bias_hh`, column j of its `weight_hh` (the unit's own
recurrent output), and the matching input column of the next layer inside the module; the layer that
consumes the module's output (a classifier Linear, another LSTM) loses the same input columns, found by
torch-pruning's dependency graph (which follows the output through pooling and element-wise ops).

Why not torch-pruning's own `LSTMPruner` (torch-pruning 1.6): it slices `weight_hh` rows with the
un-expanded unit indices and `weight_ih` along its input columns with the gate-expanded ones, so the
pruned LSTM fails on its first forward (`IndexError`); it asserts `num_layers == 1` and does not know GRU.
Here it is only used for the part it gets right: tracing who reads the recurrent output.

All layers and directions of one module keep the same number of units (`hidden_size` is shared); each
chooses its own units by the L2 norm of the weights it owns (its gate rows and recurrent column).
Bidirectional modules are handled (the output's features are [forward units, backward units]); LSTMs
with `proj_size` are refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import nn

RNN_TYPES = (nn.LSTM, nn.GRU)
GATES = {nn.LSTM: 4, nn.GRU: 3}  # gate blocks stacked along the rows of weight_ih / weight_hh


def rnn_modules(model: nn.Module) -> list[tuple[str, nn.RNNBase]]:
    """(name, module) of every LSTM/GRU in `model` (vanilla nn.RNN is not pruned)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, RNN_TYPES)]


def _suffixes(rnn: nn.RNNBase) -> list[str]:
    return ["", "_reverse"] if rnn.bidirectional else [""]


def _check(rnn: nn.RNNBase) -> None:
    if getattr(rnn, "proj_size", 0):
        raise ValueError(f"LSTM with proj_size={rnn.proj_size} cannot be pruned by hidden units (the projection "
                         "changes what the recurrent weights read); leave it out of pruning or drop proj_size")


def unit_importance(rnn: nn.RNNBase, layer: int, suffix: str = "") -> torch.Tensor:
    """L2 norm of the weights one hidden unit owns: its rows in every gate block of weight_ih, weight_hh and
    the biases, and its column of weight_hh. Shape (hidden_size,)."""
    h, g = rnn.hidden_size, GATES[type(rnn)]
    total = torch.zeros(h)
    for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        p = getattr(rnn, f"{kind}_l{layer}{suffix}", None)
        if p is None:
            continue
        rows = p.detach().reshape(g, h, -1)  # (gate, unit, inputs)
        total += rows.pow(2).sum(dim=(0, 2))
    total += getattr(rnn, f"weight_hh_l{layer}{suffix}").detach().pow(2).sum(dim=0)
    return total.sqrt()


def keep_count(hidden: int, ratio: float, round_to: int = 1) -> int:
    """Units kept when `ratio` of `hidden` are removed, rounded down to a multiple of `round_to`."""
    keep = hidden - int(hidden * ratio)
    if round_to > 1:
        keep = keep // round_to * round_to
    return keep


def plan(rnn: nn.RNNBase, keep: int) -> list[list[torch.Tensor]]:
    """Units to keep, [layer][direction] -> sorted indices, the `keep` most important of each."""
    _check(rnn)
    return [[unit_importance(rnn, layer, sfx).topk(keep).indices.sort().values for sfx in _suffixes(rnn)]
            for layer in range(rnn.num_layers)]


def _slice(rnn: nn.RNNBase, name: str, idx: torch.Tensor, dim: int) -> None:
    p = getattr(rnn, name)
    # nn.RNNBase.__setattr__ updates its _flat_weights list for a registered weight name.
    setattr(rnn, name, nn.Parameter(p.detach().index_select(dim, idx).clone(), requires_grad=p.requires_grad))


def _out_features(keeps: Sequence[torch.Tensor], hidden: int) -> torch.Tensor:
    """Output-feature indices kept for one layer: forward units, then backward units shifted by `hidden`."""
    return torch.cat([k + d * hidden for d, k in enumerate(keeps)])


def apply_plan(rnn: nn.RNNBase, keeps: list[list[torch.Tensor]]) -> None:
    """Slice `rnn` in place to the units in `keeps` ([layer][direction] -> indices, equal lengths)."""
    _check(rnn)
    h, g = rnn.hidden_size, GATES[type(rnn)]
    new_h = len(keeps[0][0])
    if any(len(k) != new_h for layer in keeps for k in layer):
        raise ValueError("every layer and direction of one RNN module must keep the same number of units, got "
                         f"{[[len(k) for k in layer] for layer in keeps]}")
    for layer in range(rnn.num_layers):
        below = _out_features(keeps[layer - 1], h) if layer > 0 else None
        for sfx, keep in zip(_suffixes(rnn), keeps[layer]):
            rows = torch.cat([keep + gate * h for gate in range(g)])
            _slice(rnn, f"weight_ih_l{layer}{sfx}", rows, 0)
            if below is not None:
                _slice(rnn, f"weight_ih_l{layer}{sfx}", below, 1)
            _slice(rnn, f"weight_hh_l{layer}{sfx}", rows, 0)
            _slice(rnn, f"weight_hh_l{layer}{sfx}", keep, 1)
            if rnn.bias:
                _slice(rnn, f"bias_ih_l{layer}{sfx}", rows, 0)
                _slice(rnn, f"bias_hh_l{layer}{sfx}", rows, 0)
    rnn.hidden_size = new_h


class RNNPruner(tp.pruner.BasePruningFunc):
    """torch-pruning pruning function for LSTM/GRU: out channels are the last layer's output features
    (hidden_size, or 2 x hidden_size bidirectional), in channels the first layer's input features.

    Pruning out channels removes those units of the last layer; inner layers lose the same number of units,
    chosen by `unit_importance` unless `inner` holds a plan for the module (id -> [layer][direction] keeps).
    """

    TARGET_MODULES = RNN_TYPES

    def __init__(self) -> None:
        super().__init__()
        self.inner: dict[int, list[list[torch.Tensor]]] = {}

    def prune_out_channels(self, layer: nn.RNNBase, idxs: Sequence[int]) -> nn.Module:
        h, dirs = layer.hidden_size, len(_suffixes(layer))
        removed = {int(i) for i in idxs}
        last = [torch.tensor([j for j in range(h) if d * h + j not in removed], dtype=torch.long) for d in range(dirs)]
        keeps = self.inner.pop(id(layer), None)
        if keeps is None:
            keeps = plan(layer, len(last[0]))
        keeps = [*keeps[:-1], last]
        apply_plan(layer, keeps)
        return layer

    def prune_in_channels(self, layer: nn.RNNBase, idxs: Sequence[int]) -> nn.Module:
        removed = {int(i) for i in idxs}
        keep = torch.tensor([j for j in range(layer.input_size) if j not in removed], dtype=torch.long)
        for sfx in _suffixes(layer):
            _slice(layer, f"weight_ih_l0{sfx}", keep, 1)
        layer.input_size = len(keep)
        return layer

    def get_out_channels(self, layer: nn.RNNBase) -> int:
        return layer.hidden_size * len(_suffixes(layer))

    def get_in_channels(self, layer: nn.RNNBase) -> int:
        return layer.input_size


def customized_pruners() -> dict[type, RNNPruner]:
    """For torch-pruning's pruners and dependency graph: LSTM/GRU pruned (and fed) through `RNNPruner`."""
    pruner = RNNPruner()
    return {t: pruner for t in RNN_TYPES}


def prune_units(model: nn.Module, example_input: torch.Tensor | tuple[torch.Tensor, ...], rnn: nn.RNNBase,
                keeps: list[list[torch.Tensor]], *, graph: tp.DependencyGraph | None = None) -> None:
    """Keep only the units in `keeps` ([layer][direction] -> indices) of `rnn`, inside `model`, in place;
    whatever reads the module's output loses the same input features."""
    graph = graph or tp.DependencyGraph().build_dependency(model, example_inputs=example_input,
                                                           customized_pruners=customized_pruners(), verbose=False)
    pruner = graph.get_pruner_of_module(rnn)
    h = rnn.hidden_size
    kept = set(_out_features(keeps[-1], h).tolist())
    removed = [i for i in range(h * len(_suffixes(rnn))) if i not in kept]
    if not removed:
        return
    pruner.inner[id(rnn)] = keeps
    group = graph.get_pruning_group(rnn, pruner.prune_out_channels, idxs=removed)
    group.prune()


def prune_rnns(model: nn.Module, example_input: torch.Tensor | tuple[torch.Tensor, ...], ratio: float, round_to: int = 1) -> nn.Module:
    """Remove `ratio` of the hidden units of every LSTM/GRU in `model` (in place; returns `model`).

    Example:
        >>> rnn_model = nn.Sequential(nn.Embedding(50, 8), nn.LSTM(8, 16, batch_first=True))
        >>> class Head(nn.Module):
        ...     def __init__(self): super().__init__(); self.body, self.fc = rnn_model, nn.Linear(16, 3)
        ...     def forward(self, ids): return self.fc(self.body(ids)[0].mean(1))
        >>> m = prune_rnns(Head(), torch.randint(0, 50, (2, 7)), 0.5)
        >>> m.body[1].hidden_size, m.fc.in_features
        (8, 8)
    """
    if ratio <= 0:
        return model
    pruners = customized_pruners()
    for name, rnn in rnn_modules(model):
        _check(rnn)
        keep = keep_count(rnn.hidden_size, ratio, round_to)
        if keep < 1:
            raise ValueError(f"round_to {round_to} at prune ratio {ratio} leaves no hidden unit in {name} "
                             f"(hidden_size {rnn.hidden_size}); use a smaller round_to or prune ratio")
        # One graph per module: pruning the previous one changed the shapes the graph recorded.
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input,
                                                      customized_pruners=pruners, verbose=False)
        if rnn not in graph.module2node:
            raise ValueError(_UNTRACED.format(name=name))
        prune_units(model, example_input, rnn, plan(rnn, keep), graph=graph)
        try:
            with torch.no_grad():
                model(*example_input) if isinstance(example_input, tuple) else model(example_input)
        except RuntimeError as exc:
            raise ValueError(f"{_UNTRACED.format(name=name)} ({str(exc).splitlines()[0]})") from None
    return model


_UNTRACED = ("cannot prune the hidden units of {name}: torch-pruning follows only the module's first output (the "
             "output sequence) to the layers that read it; a model that reads only h_n/c_n is not supported "
             "(read output[:, -1] instead, the same values for a one-direction RNN)")
