"""HTML report (self-contained) and PNG export (kaleido + system Chromium)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from picking_study import picking_study

from lepton_search import ConfigError, load
from lepton_search.cli import main
from lepton_search.results.html import chromium_path, report_data


@pytest.fixture(scope="module")
def result():
    storage, _ = picking_study()
    return load(storage, "pick")


def test_report_data_is_plain(result):
    data = report_data(result)
    assert list(data["front"]["number"]) == list(result.pareto()["number"])
    assert data["infeasible"] >= 1 and data["counts"]["COMPLETE"] == 4
    assert any(name == "knee (balanced)" and p.trial == result.knee().trial for name, p in data["picks"])


def test_html_is_self_contained(result, tmp_path, monkeypatch, capsys):
    storage, _ = picking_study()
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--storage", storage, "--study", "pick", "--html", "out.html"]) == 0
    assert "wrote out.html" in capsys.readouterr().out
    page = Path("out.html").read_text()
    assert "Plotly.newPlot" in page and len(page) > 1_000_000  # plotly.js inlined
    assert not re.search(r"<script[^>]+src=", page)  # nothing loaded from the network
    knee = result.knee()
    named = "the base (keep the unmodified model" if knee.is_base else f"trial {knee.trial}:"
    for text in ("Recommended configs", "Pareto front", "Failures by reason", named):
        assert text in page
    assert main(["report", "--storage", storage, "--study", "pick", "--html", "out.txt"]) == 2


@pytest.mark.slow  # starts Chromium through kaleido
def test_png_with_system_chromium(result, tmp_path):
    if not Path("/usr/bin/chromium").exists() and not os.environ.get("BROWSER_PATH"):
        if os.environ.get("CI"):
            pytest.fail("CI needs /usr/bin/chromium for PNG export (apt-get install -y chromium)")
        pytest.skip("no system Chromium")
    from lepton_search.results.html import save_png

    path = save_png(result.plot_pareto(), tmp_path / "front.png", width=640, height=400)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 640 and int.from_bytes(data[20:24], "big") == 400


def test_missing_browser_is_a_config_error(monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", "/nonexistent/chrome")
    monkeypatch.setattr("lepton_search.results.html.SYSTEM_CHROMIUM", ())
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(ConfigError, match="apt-get install -y chromium"):
        chromium_path()
