"""Fault drills on the tiny digits-mlp workload: each fault is caused for real, then the study is tallied.

    PYTHONPATH=. .venv/bin/python experiments/fault_drills.py            # ~6 minutes on 2 cores; root for the disk drill
    PYTHONPATH=. .venv/bin/python experiments/fault_drills.py db_restarts many_workers   # some of them

Prints a table (fault, what happened, trials lost / duplicated / left RUNNING) and writes
`experiments/results/fault_drills.json`. The tests under tests/faults/ run the same drills (`run_drill`).
Needs PostgreSQL's server binaries (apt-get install -y postgresql) and psycopg2 for the database drills.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lepton_search.testing.drills import (
    DELAY_ENV,
    DRILL_SPACE,
    DRILL_TRIALS,
    can_mount,
    cli,
    env,
    fill,
    init_cli,
    many_workers,
    restartable_cluster,
    small_filesystem,
    tally,
    wait_for_running,
)
from lepton_search.testing.drills import worker_process as _worker


def _init(url: str, tmp: Path, space: str) -> Path:
    return init_cli(url, tmp, space)


def db_restarts(tmp: Path) -> dict[str, Any]:
    """PostgreSQL restarted 3 times (2 s down each) while 4 workers run an 11-trial study (DRILL_SPACE)."""
    with restartable_cluster() as pg:
        _init(pg.url, tmp, DRILL_SPACE)
        logs = [tmp / f"w{i}.log" for i in range(4)]
        procs = [_worker(pg.url, "--db-retries", "12", "--db-max-wait-s", "2", delay_s=1.0, log=log)
                 for log in logs]
        wait_for_running(pg.url, "d", 300)
        for _ in range(3):
            time.sleep(2.0)
            pg.restart(down_s=2.0)
        codes = [p.wait(timeout=600) for p in procs]
        text = "".join(log.read_text() for log in logs)
        bad = [log.read_text()[-1500:] for log, code in zip(logs, codes, strict=True) if code != 0]
        t = tally(pg.url, "d", DRILL_TRIALS)
    return {"fault": "PostgreSQL restarted 3x, 4 workers", "exit_codes": codes, **t.as_dict(), "failed_logs": bad,
            "what happened": f"{pg.restarts} restarts; workers waited and reconnected "
                             f"({text.count('answers again')} reconnects logged, "
                             f"{text.count('failed and queued again')} trials in flight re-queued); "
                             f"every worker exit {sorted(set(codes))}"}


def disk_full(tmp: Path) -> dict[str, Any]:
    """The artifact folder (a 2 MB tmpfs) filled mid-search; freed; the search resumed."""
    if not can_mount():
        return {"fault": "artifact filesystem full", "what happened": "skipped: needs root to mount a tmpfs"}
    space = DRILL_SPACE.replace("finetune_epochs: {low: 0, high: 1}", "finetune_epochs: 0").replace(
        "trials: 11", "trials: 4")
    (tmp / "space.yaml").write_text(space)
    url = f"sqlite:///{tmp / 'disk.db'}"
    with small_filesystem("2m") as art:
        run = cli("run", str(tmp / "space.yaml"), "--workload", "digits-mlp", "--storage", url, "--study", "d",
                  "--artifacts", str(art))
        proc = subprocess.Popen(run, env=env(**{DELAY_ENV: "3"}), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        wait_for_running(url, "d", 300, proc=proc)
        filler = fill(art)
        out, _ = proc.communicate(timeout=300)
        first = proc.returncode
        line = next((x for x in out.splitlines() if x.startswith("error:")), "")
        leftovers = [p.name for p in art.rglob("*") if p.name.endswith(".tmp")]
        import optuna

        failed = [t for t in optuna.load_study(study_name="d", storage=url).get_trials() if t.state.name == "FAIL"]
        reason = failed[0].user_attrs.get("fail_reason", "") if failed else ""
        filler.unlink()
        again = subprocess.run(run, env=env(), capture_output=True, text=True, timeout=300, check=False)
        t = tally(url, "d", 4)
    return {"fault": "artifact filesystem full (2 MB tmpfs)", "exit_codes": [first, again.returncode], **t.as_dict(),
            "half_written_files": len(leftovers),
            "what happened": f"trial FAILed ({reason[:90]}); run stopped with one line ({line[:110]}); "
                             f"freed, the same command resumed to {t.complete}/4"}


def files_rot(tmp: Path) -> dict[str, Any]:
    """A flipped byte in a stored model.onnx and a truncated checkpoint."""
    import logging

    from lepton_search import SearchSpace, load, search
    from lepton_search.faults import DigestMismatch
    from lepton_search.techniques.checkpoints import CheckpointStore

    url, art = f"sqlite:///{tmp / 'rot.db'}", tmp / "art"
    space = SearchSpace(prune_ratio=(0.0, 0.5), bits=(32,), finetune_epochs=(1, 1), anchors="off", trials=2)
    result = search("digits-mlp", space, n_trials=1, storage=url, study_name="d", artifacts=art, remeasure=False,
                    verbose=False)
    done = next(t for t in result.study.trials if t.state.name == "COMPLETE")
    onnx = art / done.user_attrs["onnx_artifact_id"]
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 1
    onnx.write_bytes(bytes(data))
    try:
        load(url, "d", artifacts=art).export(done.number, tmp / "out")
        export = "exported (NOT refused)"
    except DigestMismatch as exc:
        export = f"export refused: {str(exc)[:80]}..."
    cut = sorted((art / "checkpoints").glob("*/epoch*.pt"))
    for ck in cut:
        ck.write_bytes(ck.read_bytes()[:-64])
    warnings: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: warnings.append(r.getMessage())  # type: ignore[method-assign]
    logging.getLogger("lepton_search").addHandler(handler)
    try:
        refused = sum(CheckpointStore(art / "checkpoints").latest(ck.parent.name, upto=1) is None for ck in cut)
    finally:
        logging.getLogger("lepton_search").removeHandler(handler)
    again = search("digits-mlp", space, n_trials=2, storage=url, study_name="d", artifacts=art, remeasure=False,
                   verbose=False)
    t = tally(url, "d", 2)
    return {"fault": "flipped byte in model.onnx; truncated checkpoint", **t.as_dict(),
            "what happened": f"{export}; {refused}/{len(cut)} truncated checkpoints refused by digest "
                             f"({sum('SHA-256' in w for w in warnings)} warnings naming the file), retrained; "
                             f"study went on to {sum(x.state.name == 'COMPLETE' for x in again.study.trials)}/2"}


def _sigterm(cmd: list[str], url: str, delay_s: float, resume: list[str], goal: int) -> dict[str, Any]:
    proc = subprocess.Popen(cmd, env=env(**{DELAY_ENV: str(delay_s)}), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    wait_for_running(url, "d", 300, proc=proc)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    took = time.monotonic() - sent
    line = next((x for x in out.splitlines() if x.startswith("stopped:")), "")
    mid = tally(url, "d", goal)
    again = subprocess.run(resume, env=env(), capture_output=True, text=True, timeout=300, check=False)
    t = tally(url, "d", goal)
    return {"exit_codes": [proc.returncode, again.returncode], "stop_s": round(took, 1),
            "running_after_stop": mid.running, **t.as_dict(), "line": line}


def sigterm_run(tmp: Path) -> dict[str, Any]:
    """SIGTERM to `lepton-search run` mid-trial (the trial holds 60 s, grace 3 s), then the same command again."""
    (tmp / "space.yaml").write_text(DRILL_SPACE.replace("trials: 11", "trials: 3"))
    url = f"sqlite:///{tmp / 'term.db'}"
    run = cli("run", str(tmp / "space.yaml"), "--workload", "digits-mlp", "--storage", url, "--study", "d",
              "--artifacts", str(tmp / "art"))
    row = _sigterm([*run, "--grace-s", "3"], url, 60, run, 3)
    return {"fault": "SIGTERM to run mid-trial (grace 3 s)", **row,
            "what happened": f"exit {row['exit_codes'][0]} {row['stop_s']} s after the signal, "
                             f"{row['running_after_stop']} left RUNNING; resumed to {row['complete']}/3"}


def sigterm_worker(tmp: Path) -> dict[str, Any]:
    url = f"sqlite:///{tmp / 'wterm.db'}"
    _init(url, tmp, DRILL_SPACE.replace("trials: 11", "trials: 3"))
    worker = cli("worker", "--storage", url, "--study", "d")
    row = _sigterm([*worker, "--grace-s", "3"], url, 60, worker, 3)
    return {"fault": "SIGTERM to a worker mid-trial (grace 3 s)", **row,
            "what happened": f"exit {row['exit_codes'][0]} {row['stop_s']} s after the signal, "
                             f"{row['running_after_stop']} left RUNNING; a new worker completed {row['complete']}/3"}


DRILLS = {"files_rot": files_rot, "sigterm_run": sigterm_run, "sigterm_worker": sigterm_worker,
          "disk_full": disk_full, "db_restarts": db_restarts, "many_workers": many_workers}


def run_drill(name: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"lepton_drill_{name}_") as tmp:
        started = time.monotonic()
        row = DRILLS[name](Path(tmp))
        row["seconds"] = round(time.monotonic() - started, 1)
        return row


def main(names: list[str]) -> None:
    rows = []
    for name in names or list(DRILLS):
        print(f"drill {name} ...", file=sys.stderr, flush=True)
        rows.append({"drill": name, **run_drill(name)})
    print(f"\n{'fault':<48} {'lost':>4} {'dup':>4} {'RUN':>4}  what happened")
    for r in rows:
        print(f"{r['fault'][:48]:<48} {r.get('lost', '-'):>4} {r.get('duplicated', '-'):>4} "
              f"{r.get('running', '-'):>4}  {r['what happened']}")
    out = Path(__file__).parent / "results" / "fault_drills.json"
    out.parent.mkdir(exist_ok=True)
    if names:  # a partial run updates its rows only
        old = {r["drill"]: r for r in json.loads(out.read_text())["drills"]} if out.is_file() else {}
        rows = list({**old, **{r["drill"]: r for r in rows}}.values())
    out.write_text(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "drills": rows}, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
