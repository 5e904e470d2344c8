"""What the engine's open search on bbc-smollm2 found, beside ONNX Runtime GenAI's model builder INT4 build (the peer)
and its FP32 build (the base), in one harness.

1. The search (run it first; nothing here is planned): `lepton-search run --workload bbc-smollm2 --timeout S` with
   no space file (search_spaces/llm.yaml, the files the builder's graph: `generation_graph` "builder").
2. This script opens that study, takes two of its COMPLETE trials, chosen on validation perplexity as the study
   stored it: the fastest at <= 1.05x the base's (issue 31's quality bar) and the fastest at <= the peer's (the
   peer's own bar), exports them (`results.release.export_trial`), builds the peer and base with the builder
   (`llm_front.builder_files`, cached under --work), and scores and times all of them with llm_front's harness:
   val/test perplexity from each file, decode tokens/s at 1 thread after a 64-token prompt, 32 tokens, 3 rounds
   interleaved (median of medians), prefill ms.

    .venv/bin/lepton-search run --workload bbc-smollm2 --storage sqlite:///llm.db --study smol --timeout 1800
    PYTHONPATH=. .venv/bin/python experiments/llm_open_search.py --storage sqlite:///llm.db --study smol --budget-s 1800

Writes experiments/results/llm_open_search.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from experiments.llm_front import builder_files, perplexities, table, timed, tokenizer
from lepton_search.latency.cpu_identity import this_cpu
from lepton_search.results.frame import StudyFrame
from lepton_search.results.release import export_trial
from lepton_search.workloads.bbc_smollm2 import bbc_smollm2, load_model

RESULTS = Path(__file__).parent / "results" / "llm_open_search.json"
BASE, PEER = "builder-fp32", "builder-int4"


def picks(frame: StudyFrame, bounds: dict[str, float]) -> dict[str, int | None]:
    """Rule -> the fastest COMPLETE trial whose stored validation perplexity is within the bound (None: none is)."""
    df = frame.trials()
    df = df[(df["state"] == "COMPLETE") & df["duplicate_of"].isna()]
    out = {}
    for rule, bound in bounds.items():
        ok = df[df["perplexity"] <= bound]
        out[rule] = None if ok.empty else int(ok.sort_values("latency_ms").iloc[0]["number"])
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study", required=True)
    parser.add_argument("--budget-s", type=float, required=True, help="the --timeout the study was run with")
    parser.add_argument("--work", default="/tmp/lepton_llm_front", help="folder for the builder's files")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--host-note", default="not stated: treat the timings as from a shared host")
    args = parser.parse_args(argv)
    started = time.time()
    frame = StudyFrame.open(args.storage, args.study)
    work = Path(args.work)
    files = {n: work / n / "model.onnx" for n in (BASE, PEER)}
    if not all(p.is_file() for p in files.values()):
        files = builder_files(load_model(), tokenizer(), work)
    wl = bbc_smollm2()  # the study's own windows (val 64, test 64 of 128 tokens)
    refs = perplexities(files, wl)
    bounds = {"fastest at val ppl <= 1.05x base": 1.05 * refs[BASE]["val_perplexity"],
              "fastest at val ppl <= the peer's": refs[PEER]["val_perplexity"]}
    chosen = picks(frame, bounds)
    for number in sorted({n for n in chosen.values() if n is not None}):
        files[f"trial-{number}"] = export_trial(frame, number, work / f"open-{args.study}-trial-{number}")
    ids = wl.test[0][0][wl.test[1][0].bool()].tolist()
    prompt = (ids * (64 // max(len(ids), 1) + 1))[:64]
    scored = refs | perplexities({n: p for n, p in files.items() if n not in refs}, wl)
    rows = {n: scored[n] | t for n, t in timed(files, prompt, new=32, rounds=3).items()}
    trials = frame.trials()
    record = {
        "workload": "bbc-smollm2", "study": args.study, "budget_s": args.budget_s, "host": this_cpu().as_dict(),
        "cores": os.cpu_count(), "host_note": args.host_note, "complete_trials": len(frame.records()),
        "trials": len(trials), "space": "search_spaces/llm.yaml (no space file given)",
        "picks": {rule: None if n is None else {"trial": n, **rows[f"trial-{n}"]} for rule, n in chosen.items()},
        "base": rows[BASE], "peer": rows[PEER], "seconds": round(time.time() - started, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2, default=str))
    print(table(rows, BASE, PEER))
    for rule, n in chosen.items():
        print(f"{rule}: {'none' if n is None else f'trial {n}'}")
    return record


if __name__ == "__main__":
    main()
