"""federation.clients_per_actor: bad values are one line naming the key, exit 2."""
from pathlib import Path

import pytest

from fcl_ray.config import ConfigError
from fcl_ray.config_io import load_config


def test_default_is_one_client_per_actor():
    assert load_config(None).federation.clients_per_actor == 1


@pytest.mark.parametrize("value", ["0", "-1", "4"])
def test_out_of_range_names_the_key(value):
    with pytest.raises(ConfigError, match=r"'federation.clients_per_actor': must be in \[1, "
                                          r"data.clients=3\], got"):
        load_config(None, ["data.clients=3", f"federation.clients_per_actor={value}"])


def test_pinned_sites_keep_one_client_per_actor():
    with pytest.raises(ConfigError, match="'federation.clients_per_actor': must be 1 when"):
        load_config(None, ["data.clients=2", "federation.clients_per_actor=2",
                           "federation.client_resources=[{a: 1}, {b: 1}]"])


@pytest.mark.parametrize("value", ["0", "9"])
def test_cli_prints_one_line_and_exits_2(value, capsys):
    from fcl_ray.cli import main

    quickstart = Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml"
    assert main(["run", str(quickstart), "--set",
                 f"federation.clients_per_actor={value}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fcl-ray: error: ")
    assert "federation.clients_per_actor" in lines[0]
