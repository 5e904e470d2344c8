"""The `round_to` knob: pruned widths are multiples of it, and the knob shows in report, model card and dashboard."""

from __future__ import annotations

import json
from wsgiref.util import setup_testing_defaults

import optuna
import torch
from torch import nn

from lepton_search import SearchSpace, search
from lepton_search.records import CARD_ARTIFACT
from lepton_search.results.report import front_table
from lepton_search.space import CompressionConfig
from lepton_search.techniques import prune


def separable_cnn() -> nn.Module:
    """A depthwise-separable CNN: the kind whose odd pruned widths ran slower than the unpruned net."""
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(),
                nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                         *block(32, 64), *block(64, 128), *block(128, 250),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(250, 10)).eval()


def conv_widths(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_round_to_keeps_multiples_and_plain_pruning_does_not():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 16, 16)
    plain = prune.prune(separable_cnn(), x, CompressionConfig(0.35, 32, 0))
    rounded = prune.prune(separable_cnn(), x, CompressionConfig(0.35, 32, 0, round_to=8))
    assert any(w % 8 for w in conv_widths(plain))  # 250 * 0.65 etc.: odd widths without rounding
    assert all(w % 8 == 0 for w in conv_widths(rounded))
    assert all(r <= p for r, p in zip(conv_widths(rounded), conv_widths(plain)))  # rounded down
    assert rounded(x).shape == (1, 10)


def test_round_to_is_sampled_and_shown_in_report_card_and_dashboard(digits_cnn, sqlite_url, tmp_path):
    space = SearchSpace(prune_ratio=(0.25, 0.25, 0.25), round_to=[1, 4], bits=(32,), finetune_epochs=(0, 0), trials=2)
    assert space.n_configs == 2
    result = search(digits_cnn, space, n_trials=2, storage=sqlite_url, study_name="rt", verbose=False,
                    artifacts=tmp_path / "art", callbacks=[])
    trials = result.trials()
    assert set(trials.loc[trials.state == "COMPLETE", "round_to"]) == {1, 4}
    header = next(line for line in front_table(result).splitlines() if "prune_ratio" in line)
    assert "round_to" in header  # the table's header row (after the base and inputs lines)

    complete = [t for t in result.study.trials if t.state.name == "COMPLETE"]
    for t in complete:
        with result.artifact_store.open_reader(t.user_attrs[CARD_ARTIFACT]) as fh:
            card = fh.read().decode()
        assert f"| round_to | {t.params['round_to']} |" in card

    from optuna_dashboard import wsgi

    app = wsgi(sqlite_url)
    environ: dict = {}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = f"/api/studies/{result.study._study_id}"
    status: list[str] = []
    body = json.loads(b"".join(app(environ, lambda s, h, e=None: status.append(s))))
    assert status[0].startswith("200")
    shown = [t for t in body["trials"] if t["state"] == "Complete"]
    assert len(shown) == 2
    for t in shown:
        assert "round_to" in {p["name"] for p in t["params"]}
        config = json.loads(next(a["value"] for a in t["user_attrs"] if a["key"] == "config"))
        assert config["round_to"] in (1, 4)
    # the front optuna-dashboard draws (Optuna's own, feasible trials) is the one lepton-search reports
    best = optuna.load_study(study_name="rt", storage=sqlite_url).best_trials
    assert {t.number for t in best if all(v <= 0 for v in t.constraints.values())} == set(result.pareto()["number"])


def test_global_ranking_leaves_uneven_layer_widths_and_uniform_does_not():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                          nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)).eval()
    with torch.no_grad():  # the middle layer: a few strong channels and many weak ones, as trained nets have
        weak = torch.arange(64) % 5 != 0
        for param in (model[3].weight, model[4].weight, model[4].bias):
            param[weak] *= 0.01
        model[6].weight[:, weak] *= 0.01
    x = torch.randn(1, 3, 16, 16)
    base = conv_widths(model)
    kept = lambda widths: [w / b for w, b in zip(widths, base)]
    uniform = kept(conv_widths(prune.prune(model, x, CompressionConfig(0.4, 32, 0, prune_method="structured"))))
    ranked = kept(conv_widths(prune.prune(model, x, CompressionConfig(0.4, 32, 0, prune_method="global"))))
    assert max(uniform) - min(uniform) <= 0.05  # every layer keeps ~60%
    assert ranked[1] < min(ranked[0], ranked[2]) - 0.2  # the weak layer lost more than the others
