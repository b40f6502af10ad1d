"""machine.json: where a run's clients computed, every start recorded; a resume on another
machine setup, and `fcl-ray choose` over folders made on different ones, are warned about."""
import json

import pandas as pd
import torch

from fcl_ray.cli import main
from fcl_ray.config_io import dump_yaml, load_config
from fcl_ray.machine import (MACHINE_FILE, NUMERICS_FIELDS, describe_machine,
                             different_machines, group_clients, read_starts, record_start)
from test_validation_choice import QUICKSTART, _rows


def test_this_machine_is_described_by_the_fields_that_move_floating_point():
    machine = describe_machine("cpu")
    assert set(NUMERICS_FIELDS) <= set(machine)
    assert machine["torch"] == torch.__version__ and machine["gpu"] is None
    assert machine["torch_threads"] == torch.get_num_threads() and machine["cpu"]
    json.dumps(machine)   # JSON-ready


def test_clients_on_one_machine_are_one_group():
    a, b = describe_machine(), dict(describe_machine(), cpu_capability="AVX2")
    groups = group_clients({2: a, 0: a, 1: b})
    assert [g["clients"] for g in groups] == [[0, 2], [1]]
    assert groups[1]["cpu_capability"] == "AVX2"


def test_starts_are_appended_on_resume_and_a_moved_resume_is_warned(tmp_path):
    here = describe_machine()
    elsewhere = dict(here, cpu="Another CPU", cpu_capability="AVX2")
    assert record_start(tmp_path, {0: here, 1: here}, resumed=False)[1] is None
    groups, warning = record_start(tmp_path, {0: here, 1: here}, resumed=True)
    assert warning is None and groups[0]["clients"] == [0, 1]
    _, warning = record_start(tmp_path, {0: elsewhere, 1: elsewhere}, resumed=True)
    assert "another machine setup" in warning and here["cpu"] in warning   # the earlier one
    assert [s["resumed"] for s in read_starts(tmp_path)] == [False, True, True]
    # Only the numerics count: another OS string or CPU count is the same setup.
    _, warning = record_start(tmp_path, {0: dict(elsewhere, os="x", logical_cpus=64),
                                         1: elsewhere}, resumed=True)
    assert warning is None
    # A fresh run in the folder starts the record again.
    record_start(tmp_path, {0: here}, resumed=False)
    assert len(read_starts(tmp_path)) == 1


def test_an_unreadable_record_is_no_record(tmp_path):
    (tmp_path / MACHINE_FILE).write_text("{not json")
    assert read_starts(tmp_path) == []
    assert record_start(tmp_path, {0: describe_machine()}, resumed=True)[1] is None


def _run_folder(root, name, machine, scale):
    folder = root / name
    folder.mkdir()
    (folder / "config.yaml").write_text(dump_yaml(load_config(
        QUICKSTART, [f"finetune.encoder_lr_scale={scale}", f"experiment.output_dir={name}"])))
    pd.DataFrame(_rows("fcl", [0.6] * 3, [0.4] * 3)).to_csv(folder / "results.csv", index=False)
    if machine is not None:
        record_start(folder, {0: machine, 1: machine, 2: machine}, resumed=False)
    return folder


def test_choose_warns_when_its_candidates_were_made_on_different_machines(tmp_path, capsys):
    here = describe_machine()
    a = _run_folder(tmp_path, "a", here, 0.1)
    b = _run_folder(tmp_path, "b", here, 1)
    old = _run_folder(tmp_path, "old", None, 1)   # from before machines were recorded
    assert different_machines([a, b, old]) is None
    assert main(["choose", str(a), str(b), str(old)]) == 0
    assert "warning" not in capsys.readouterr().err
    other = _run_folder(tmp_path, "other", dict(here, torch="2.11.0+cu128"), 1)
    assert main(["choose", str(a), str(other)]) == 0   # a warning, not a refusal
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("fcl-ray: warning: choose:") and "2.11.0+cu128" in line
    assert f"'{a}'" in line and f"'{other}'" in line
