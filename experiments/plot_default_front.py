"""The default search's Pareto plot as a PNG for the README (kaleido + the system Chromium, no download).

Reads a stored study (made by experiments/default_front.py); runs nothing.

    .venv/bin/python experiments/plot_default_front.py
    .venv/bin/python experiments/plot_default_front.py --storage sqlite:///lepton_search.db --study fashion-mnist-cnn

Writes experiments/results/default_front.png and prints the recommended configs it shows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lepton_search import load
from lepton_search.errors import LeptonError
from lepton_search.results.html import save_png

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--storage", default=f"sqlite:///{RESULTS / 'default_front.db'}")
    ap.add_argument("--study", default="default-front")
    ap.add_argument("--out", default=str(RESULTS / "default_front.png"))
    args = ap.parse_args()

    result = load(args.storage, args.study)
    path = save_png(result.plot_pareto(), args.out, width=900, height=560, scale=1.5)
    print(f"wrote {path}")
    for drop in (0.5, 1.0, 2.0):
        try:
            print(f"fastest within {drop:g} pt: {result.recommend(max_accuracy_drop_pts=drop).label()}")
        except LeptonError as exc:
            print(f"fastest within {drop:g} pt: none ({exc})")
    if not result.pareto().empty:
        print(f"knee: {result.knee().label()}")
        print(f"hypervolume: {result.hypervolume():.4g} (accuracy points x ms)")


if __name__ == "__main__":
    main()
