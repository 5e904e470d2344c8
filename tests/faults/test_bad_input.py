"""Bad input for the fault settings: one line naming field, value and fix, before any training."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from lepton_search.cli import main
from lepton_search.errors import ConfigError
from lepton_search.faults import PoliteStop, ReconnectSettings
from lepton_search.storage import artifact_store_for, open_storage


@pytest.mark.parametrize("retries", [0, -3])
def test_a_retry_bound_of_zero_or_less_is_refused(retries, capsys):
    with pytest.raises(ConfigError, match=r"^db_retries: got -?\d+; must be an integer >= 1"):
        ReconnectSettings(retries=retries)
    assert main(["worker", "--storage", "sqlite:///x.db", "--study", "s", "--db-retries", str(retries)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --db-retries: got") and "\n" not in err


def test_a_negative_grace_is_refused():
    with pytest.raises(ConfigError, match="^grace_s: got -1"):
        PoliteStop(-1)


def test_a_storage_url_that_never_answers_is_one_line(capsys):
    pytest.importorskip("psycopg2")
    with socket.socket() as silent:  # accepts the connection at the TCP level, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ConfigError) as err:
            open_storage(f"postgresql+psycopg2://u:secret@127.0.0.1:{port}/db")
    assert time.monotonic() - started < 30
    message = str(err.value)
    assert message.startswith("storage: got ") and "secret" not in message and "\n" not in message
    assert "check host, port" in message


def test_an_artifact_folder_that_cannot_be_written_is_refused(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="^artifacts: got .*cannot write there"):
        artifact_store_for("sqlite:///x.db", blocker / "art")
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["run", "--workload", "digits-mlp", "--storage", url, "--artifacts", str(blocker / "art")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --artifacts: got") and "fine-tune" not in "".join(err)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a read-only tmpfs needs root (CI runs as root)")
def test_a_read_only_artifact_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], check=True)
    try:
        with pytest.raises(ConfigError, match="cannot write there .*Read-only"):
            artifact_store_for("sqlite:///x.db", folder)
    finally:
        subprocess.run(["umount", str(folder)], check=False)
