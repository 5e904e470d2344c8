"""A real browser on `lepton-search dashboard`: Pareto plot points, infeasible drawing, artifact download.

Headless system Chromium through Playwright (never `playwright install`). In CI (CI=true) a missing
browser or Playwright fails the test; locally it skips.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from picking_study import picking_study

from lepton_search import load

pytestmark = pytest.mark.slow  # optuna-dashboard server driven by headless Chromium (~25 s)

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def _need(ok: bool, why: str) -> None:
    if not ok:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must run the browser test: {why}")
        pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dashboard():
    storage, _ = picking_study()
    port = _free_port()
    code = "import sys; from lepton_search.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, "dashboard", "--storage", storage, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(url + "/api/meta", timeout=2).read()
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dashboard did not start: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.3)
        yield url, load(storage, "pick")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def page():
    _need(Path(CHROMIUM).exists(), f"{CHROMIUM} is missing (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "playwright is not installed (pip install playwright)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(accept_downloads=True)
        yield context.new_page()
        browser.close()


def test_pareto_plot_draws_every_complete_trial(dashboard, page):
    url, result = dashboard
    trials = result.trials()
    complete = trials[trials["state"] == "COMPLETE"]
    infeasible = set(complete.loc[~complete["feasible"], "number"])
    assert infeasible, "the study must have an infeasible trial"
    page.goto(f"{url}/dashboard/studies/{result.study._study_id}")
    page.wait_for_selector("#graph-pareto-front .scatterlayer .point", timeout=30_000)
    traces = page.evaluate("""() => document.getElementById('graph-pareto-front').data.map(
        t => ({kind: t.hovertemplate || '', text: t.text || [], x: t.x || [], y: t.y || []}))""")
    drawn = {}
    for trace in traces:  # the plot also lists non-complete trials, with no coordinates (not drawn)
        for text, x, y in zip(trace["text"], trace["x"], trace["y"]):
            if x is not None and y is not None:
                drawn[json.loads(text.replace("<br>", ""))["number"]] = trace["kind"]
    assert sorted(drawn) == sorted(complete["number"])  # one point per complete trial
    assert page.locator("#graph-pareto-front .scatterlayer .point").count() == len(complete)
    shown_infeasible = {n for n, kind in drawn.items() if "Infeasible Trial" in kind}
    assert shown_infeasible == infeasible


def test_onnx_artifact_downloads_with_stored_bytes_and_note_shows(dashboard, page):
    url, result = dashboard
    number = int(result.pareto()["number"].iloc[0])
    frozen = result.study.trials[number]
    with result.artifact_store.open_reader(frozen.user_attrs["onnx_artifact_id"]) as fh:
        stored = hashlib.sha256(fh.read()).hexdigest()
    page.goto(f"{url}/dashboard/studies/{result.study._study_id}/trials?numbers={number}")
    link = page.locator(f'a[aria-label="download artifact"][download="trial_{number}.onnx"]')
    link.wait_for(timeout=30_000)
    with page.expect_download() as info:
        link.click()
    downloaded = Path(info.value.path()).read_bytes()
    assert hashlib.sha256(downloaded).hexdigest() == stored
    for name in ("config.json", "MODEL_CARD.md"):
        assert page.locator(f'a[aria-label="download artifact"][download="{name}"]').count() == 1
    assert page.get_by_text("Pareto role:").count() >= 1  # the trial's note, rendered from Markdown
