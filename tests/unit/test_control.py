"""The positive control supervised_encoder: its config section, its data and encoder, its gate."""
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fcl_ray.cli import main
from fcl_ray.config import ConfigError
from fcl_ray.config_io import load_config
from fcl_ray.data import load_client_volumes
from fcl_ray.encoders import check_fits
from fcl_ray.methods.control import (control_config, control_slices, control_trainer,
                                     encoder_half)
from fcl_ray.statistics import GATE_MIN_DIFF, control_gate, positive_control

QUICKSTART = Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml"
TINY_DATA = ["data.clients=2", "data.cases_per_client=4", "data.folds=2", "data.image_size=32",
             "data.slices_min=4", "data.slices_max=5", "data.partitions=2",
             "model.features=[8,8,16,16,16,8]", "pretrain.methods=[random,supervised_encoder]",
             "control.sites=2", "control.cases_per_site=3", "control.batch_size=4"]


# ----------------------------------------------------------------------------- config
def test_control_defaults():
    c = load_config(None, []).control
    assert (c.sites, c.cases_per_site, c.steps, c.lr, c.batch_size, c.seed_offset, c.encoder) == \
        (4, 12, 1500, 1e-3, 8, 1_000_003, None)


@pytest.mark.parametrize("overrides,message", [
    (["control.sites=0"], "'control.sites': must be at least 1, got 0"),
    (["control.cases_per_site=0"], "'control.cases_per_site': must be at least 1, got 0"),
    (["control.steps=-3"], "'control.steps': must be at least 1, got -3"),
    (["control.batch_size=0"], "'control.batch_size': must be at least 1, got 0"),
    (["control.seed_offset=0"], "'control.seed_offset': must be at least 1, got 0"),
    (["control.lr=0"], "'control.lr': must be finite and > 0, got 0.0"),
    (["control.lr=-0.001"], "'control.lr': must be finite and > 0, got -0.001"),
    (["control.lr=.nan"], "'control.lr': must be finite and > 0, got nan"),
    (["control.lr=.inf"], "'control.lr': must be finite and > 0, got inf"),
    (["control.steps=abc"], "'control.steps': expected int, got 'abc'"),
    (["control.encoder=not-a-uri"], "'control.encoder': expected an MLflow model URI"),
    (["control.magic=1"], "unknown config key 'control.magic'"),
    # data on disk has no patients outside its sites: the control must come from a URI
    (["data.kind=acdc", "data.root=/data/acdc", "pretrain.methods=[random,supervised_encoder]"],
     "'control.encoder': pretrain.methods asks for supervised_encoder on data.kind=acdc"),
])
def test_bad_control_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_control_on_data_on_disk_is_accepted_with_an_encoder_uri():
    cfg = load_config(None, ["data.kind=acdc", "data.root=/data/acdc",
                             "pretrain.methods=[random,supervised_encoder]",
                             "control.encoder=models:/cardiac-supervised/2"])
    assert cfg.control.encoder == "models:/cardiac-supervised/2"
    load_config(None, ["data.kind=acdc", "data.root=/data/acdc"])   # no control asked: no URI


def test_a_bad_control_key_exits_2_with_one_line(capsys):
    assert main(["run", str(QUICKSTART), "--set", "control.lr=0"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "control.lr" in lines[0]


# ----------------------------------------------------------------------------- data and encoder
def test_control_patients_come_from_other_sites_through_the_run_loader():
    cfg = load_config(None, TINY_DATA + ["data.phases=ed_es", "data.extra_frames=1"])
    control = control_config(cfg)
    assert control.experiment.seed == cfg.experiment.seed + 1_000_003
    assert (control.data.clients, control.data.cases_per_client) == (2, 3)
    assert control.data.phases == "ed_es" and control.data.image_size == 32   # the run's phantom
    slices = control_slices(cfg)
    # 2 sites x 3 patients x (ED, ES); the unlabeled extra frames are left out
    assert int(slices.volume.max()) + 1 == 12
    assert slices.labels.sum() > 0 and slices.images.shape[1:] == (1, 32, 32)
    # Not the benchmark's patients: the run's client 0 has other images
    benchmark = load_client_volumes(cfg, 0)[0].image
    first = load_client_volumes(control, 0)[0].image
    assert benchmark.shape != first.shape or not np.allclose(benchmark, first)


def test_the_control_trains_a_unet_and_hands_out_its_encoder_half():
    cfg = load_config(None, TINY_DATA)
    trainer = control_trainer(cfg, torch.device("cpu"))
    before = encoder_half(trainer.unet)
    loss = trainer.train(2)
    after = encoder_half(trainer.unet)
    assert np.isfinite(loss)
    state = {k: torch.from_numpy(v) for k, v in after.items()}
    check_fits(state, cfg.model.features, "control")   # exactly the Encoder's parameters
    assert any(not np.array_equal(before[k], after[k]) for k in before)   # it trained
    again = encoder_half(control_trainer(cfg, torch.device("cpu")).unet)
    assert all(np.array_equal(before[k], again[k]) for k in before)       # seeded


# ----------------------------------------------------------------------------- the gate
def _rows(diffs, clients=4, folds=2, n=1, mode="local", others=()):
    """supervised_encoder and random rows whose paired difference at unit i is diffs[i]."""
    units = list(itertools.product(range(clients), range(folds)))
    diffs = np.broadcast_to(np.asarray(diffs, float), (len(units),))
    rows = []
    for (client, fold), d in zip(units, diffs):
        base = 0.45 + 0.01 * client + 0.005 * fold
        for method, dice in (("random", base), ("supervised_encoder", base + d),
                             *((m, base + 0.5 * d + 0.01 * (fold - client % 2))
                               for m in others)):
            rows.append({"method": method, "finetune_mode": mode, "n_labeled": n, "fold": fold,
                         "client": client, "dice_mean": dice})
    return pd.DataFrame(rows)


def test_gate_holds_for_a_large_difference_with_a_ci_above_zero():
    diffs = [0.10, 0.12, 0.09, 0.14, 0.11, 0.13, 0.10, 0.12]
    table = positive_control(_rows(diffs))
    gate = control_gate(table)
    assert gate.verdict == "holds" and gate.mean_diff == pytest.approx(np.mean(diffs))
    assert gate.client_ci_low > 0 and gate.mean_diff >= GATE_MIN_DIFF
    assert gate.message.startswith("gate holds: this benchmark can detect a good encoder")


def test_gate_warns_when_the_ci_contains_zero():
    diffs = [0.20, -0.15, 0.18, -0.12, 0.25, -0.2, 0.1, -0.05]   # large mean, noisy
    gate = control_gate(positive_control(_rows(diffs)))
    assert gate.client_ci_low <= 0 <= gate.client_ci_high
    assert gate.verdict == "ci_contains_zero"
    assert gate.message.startswith("WARNING: this benchmark cannot detect a good encoder "
                                   "(positive control's CI contains 0); read no method comparison")


def test_gate_says_a_small_but_clear_difference_does_not_meet_the_threshold():
    gate = control_gate(positive_control(_rows([0.03, 0.04, 0.035, 0.03, 0.045, 0.04, 0.03, 0.04])))
    assert gate.client_ci_low > 0 and gate.mean_diff < GATE_MIN_DIFF
    assert gate.verdict == "too_small"
    assert "below the gate's +0.08" in gate.message
    # a clearly negative control (CI below 0) does not meet it either
    assert control_gate(positive_control(_rows(-0.1))).verdict == "too_small"


def test_gate_is_read_at_local_n1_only_and_other_methods_are_ignored():
    rows = pd.concat([_rows(0.02, n=1), _rows(0.3, n=4),
                      _rows(0.3, n=1, mode="federated")])
    gate = control_gate(positive_control(rows))
    assert gate.verdict == "too_small" and gate.mean_diff == pytest.approx(0.02)
    # a method with missing units does not break the control's pairing
    with_fcl = pd.concat([_rows(0.1, others=("fcl",)).query("not (method == 'fcl' and client == 0)")])
    table = positive_control(with_fcl)
    assert set(table["method"]) == {"random"} and set(table["reference"]) == {"supervised_encoder"}
    assert control_gate(table).verdict == "holds"


def test_no_control_or_no_local_n1_is_no_gate():
    rows = _rows(0.1)
    assert positive_control(rows[rows.method == "random"]).empty
    gate = control_gate(positive_control(_rows(0.1, n=2)))
    assert gate.verdict == "missing" and np.isnan(gate.mean_diff)


def test_report_prints_the_positive_control_and_writes_it(tmp_path, capsys):
    path = tmp_path / "results.csv"
    _rows(0.1, others=("fcl",)).to_csv(path, index=False)
    out = tmp_path / "report"
    assert main(["report", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "## Positive control" in printed
    assert "gate holds: this benchmark can detect a good encoder" in printed
    text = (out / "positive_control.md").read_text()
    assert "supervised_encoder minus each method" in text and "gate holds" in text
    noisy = tmp_path / "noisy.csv"
    _rows([0.2, -0.15, 0.18, -0.12, 0.25, -0.2, 0.1, -0.05]).to_csv(noisy, index=False)
    assert main(["report", str(noisy)]) == 0
    assert "WARNING: this benchmark cannot detect a good encoder" in capsys.readouterr().out
    # without control rows: no section
    _rows(0.1).query("method == 'random'").to_csv(noisy, index=False)
    assert main(["report", str(noisy)]) == 0
    assert "Positive control" not in capsys.readouterr().out
