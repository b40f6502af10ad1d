"""Which settings a resume keeps and which it runs: pure functions over results rows and the
config (no Ray), and the resume rule that lets the grid's lists grow at their end."""
from pathlib import Path

import pytest

from fcl_ray.config_io import load_config
from fcl_ray.federation.driver import finished_settings, settings_to_run
from fcl_ray.output_dir import RESUME_MAY_EXTEND, config_differences, extends
from fcl_ray.protocol.messages import ALL_LABELED

QUICKSTART = str(Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml")


def _cfg(*overrides: str):
    return load_config(QUICKSTART, list(overrides))


def _row(method, mode, n, fold=0, client=0):
    return {"method": method, "finetune_mode": mode, "n_labeled": n, "fold": fold,
            "client": client, "dice_mean": 0.5}


def test_a_setting_is_finished_per_label_budget():
    rows = [_row("fcl", "local", 1), _row("fcl", "local", 1, client=1),
            _row("fcl", "federated", 1), _row("upper_bound", "local", 7)]
    assert finished_settings(rows) == {(0, "fcl", "local", 1), (0, "fcl", "federated", 1),
                                       (0, "upper_bound", "local", ALL_LABELED)}


def test_only_the_budgets_without_rows_run():
    cfg = _cfg("finetune.n_labeled=[1,2,4]", "finetune.modes=[local,federated]")
    done = finished_settings([_row("fcl", "local", 1), _row("fcl", "local", 4),
                              _row("fcl", "federated", 1)])
    assert settings_to_run(cfg, done, 0, "fcl") == {"local": [2], "federated": [2, 4]}
    assert settings_to_run(cfg, done, 1, "fcl") == {"local": [1, 2, 4], "federated": [1, 2, 4]}
    assert settings_to_run(cfg, done, 0, "random") == {"local": [1, 2, 4],
                                                       "federated": [1, 2, 4]}


@pytest.mark.parametrize("key, old, new", [
    ("finetune.n_labeled", [1], [1, 2, 4, 8]),
    ("pretrain.methods", ["random", "fcl"], ["random", "fcl", "local_cl"]),
    ("finetune.folds", [0], [0, 1]),
    ("finetune.modes", ["local"], ["local", "federated"]),
])
def test_a_grid_list_may_grow_at_its_end(key, old, new):
    assert key in RESUME_MAY_EXTEND and extends(key, old, new)


@pytest.mark.parametrize("key, old, new", [
    ("finetune.n_labeled", [1, 2], [2, 1, 4]),       # reordered: the first N is probed
    ("finetune.n_labeled", [1, 2], [1]),             # shortened: rows of N=2 would stay
    ("finetune.n_labeled", [1, 2], [1, 2]),          # equal is no extension (and no difference)
    ("finetune.folds", [0], [1, 0]),                 # added at the front
    ("model.features", [16, 32], [16, 32, 64]),      # not a grid list: another network
])
def test_other_list_changes_are_no_extension(key, old, new):
    assert not extends(key, old, new)


def test_a_grown_grid_is_no_difference_but_a_changed_one_is():
    saved = _cfg("finetune.n_labeled=[1]", "pretrain.methods=[random,fcl]")
    grown = _cfg("finetune.n_labeled=[1,2,4]", "pretrain.methods=[random,fcl,local_cl]")
    assert config_differences(saved, grown) == []
    assert config_differences(saved, _cfg("finetune.n_labeled=[2]",
                                          "pretrain.methods=[random,fcl]")) \
        == [("finetune.n_labeled", [1], [2])]


def test_the_upper_bounds_budget_is_logged_as_all():
    from fcl_ray.federation.driver import budget_label
    assert (budget_label(ALL_LABELED), budget_label(4)) == ("all", "4")
