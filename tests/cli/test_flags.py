"""The CLI renames the library's parameter names in ConfigErrors to the flags the user typed."""

from __future__ import annotations

import click
import pytest

from lepton_search.cli import FLAGS, cli, main, with_flags
from lepton_search.errors import ConfigError


def test_a_library_field_becomes_the_commands_flag(capsys):
    @click.command("probe")
    def probe() -> None:
        raise ConfigError("study_name", "../x", "use letters")

    with pytest.raises(ConfigError) as err:
        with_flags(probe, {"study_name": "--study"}).main([], standalone_mode=False)
    assert str(err.value) == "--study: got '../x'; use letters"


def test_fields_without_a_flag_pass_through():
    @click.command("probe")
    def probe() -> None:
        raise ConfigError("workload.train", "0 samples", "pass a non-empty split")

    with pytest.raises(ConfigError) as err:
        with_flags(probe, {"study_name": "--study"}).main([], standalone_mode=False)
    assert err.value.field == "workload.train"


def test_every_mapped_flag_is_an_option_of_its_command():
    for name, flags in FLAGS.items():
        options = {opt for param in cli.commands[name].params for opt in getattr(param, "opts", [])}
        assert set(flags.values()) <= options, name


def test_worker_grace_period_error_names_the_flag(sqlite_url, capsys):
    assert main(["worker", "--storage", sqlite_url, "--study", "s", "--heartbeat-interval", "30",
                 "--grace-period", "10"]) == 2
    assert capsys.readouterr().err.startswith("error: --grace-period: got 10;")
