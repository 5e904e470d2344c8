"""Library errors name the API parameter (`csv_path`); the CLI names its flag (`--csv`)."""

from __future__ import annotations

import pytest

from lepton_search.calibration.kernel_table import calibrate_kernels
from lepton_search.calibration.profile_fit import read_measurements
from lepton_search.cli import main
from lepton_search.errors import ConfigError


def test_library_errors_name_the_parameter(tmp_path):
    with pytest.raises(ConfigError, match=r"^csv_path: got None; rpi4 is not this machine") as err:
        calibrate_kernels("rpi4")
    assert err.value.field == "csv_path"
    with pytest.raises(ConfigError) as err:
        calibrate_kernels("rpi4", csv_path=tmp_path / "m.csv")
    assert err.value.field == "graphs_dir"
    with pytest.raises(ConfigError) as err:
        read_measurements(tmp_path / "none.csv")
    assert err.value.field == "csv_path"


def test_cli_errors_name_the_flag(tmp_path, capsys):
    assert main(["calibrate", "--target", "rpi4", "--kernels"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --csv: got None")
    assert main(["calibrate", "--kernels", "--csv", str(tmp_path / "none.csv"), "--graphs", str(tmp_path)]) == 2
    assert "--csv: got" in capsys.readouterr().err
