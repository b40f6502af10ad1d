"""`fcl-ray choose`: a fine-tuning setting chosen on validation Dice, setting by setting, from
run folders that share their encoders (pure pandas; folders written here, no Ray)."""
from pathlib import Path

import pandas as pd
import pytest

from fcl_ray.cli import main
from fcl_ray.config import ConfigError
from fcl_ray.config_io import dump_yaml, load_config
from fcl_ray.validation_choice import choose, choose_on_validation

QUICKSTART = str(Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml")


def _rows(method, val, test, n=1, clients=(0, 1, 2)):
    """One setting's rows: each client's validation and test Dice."""
    return [{"method": method, "finetune_mode": "local", "n_labeled": n, "fold": 0,
             "client": c, "dice_mean": t, "val_dice": v, "seed": 0}
            for c, v, t in zip(clients, val, test)]


def test_the_higher_mean_validation_dice_is_chosen_never_the_test_dice():
    low_lr = pd.DataFrame(_rows("fcl", [0.6, 0.6, 0.6], [0.1, 0.1, 0.1])
                          + _rows("random", [0.4, 0.4, 0.4], [0.9, 0.9, 0.9]))
    high_lr = pd.DataFrame(_rows("fcl", [0.5, 0.5, 0.5], [0.9, 0.9, 0.9])
                           + _rows("random", [0.5, 0.5, 0.5], [0.2, 0.2, 0.2]))
    results, table = choose_on_validation([("scale 0.1", low_lr), ("scale 1", high_lr)])
    chosen = results.groupby("method")["candidate"].first().to_dict()
    assert chosen == {"fcl": "scale 0.1", "random": "scale 1"}
    assert results.set_index(["method", "client"])["dice_mean"].to_dict() == {
        ("fcl", 0): 0.1, ("fcl", 1): 0.1, ("fcl", 2): 0.1,
        ("random", 0): 0.2, ("random", 1): 0.2, ("random", 2): 0.2}
    assert len(table) == 4 and table["candidates"].eq(2).all()
    assert table.loc[table["chosen"], "test"].round(3).tolist() == [0.2, 0.1]  # random first


def test_each_label_budget_is_its_own_choice_and_a_lone_candidate_is_kept():
    a = pd.DataFrame(_rows("fcl", [0.6] * 3, [0.5] * 3, n=1) + _rows("fcl", [0.6] * 3, [0.5] * 3, n=2))
    b = pd.DataFrame(_rows("fcl", [0.5] * 3, [0.5] * 3, n=1) + _rows("fcl", [0.7] * 3, [0.5] * 3, n=2)
                     + _rows("fcl", [0.7] * 3, [0.7] * 3, n=4))
    results, table = choose_on_validation([("a", a), ("b", b)])
    assert results.groupby("n_labeled")["candidate"].first().to_dict() == {1: "a", 2: "b", 4: "b"}
    assert table.loc[table["n_labeled"] == 4, "candidates"].tolist() == [1]


def test_equal_scores_go_to_the_first_candidate():
    same = pd.DataFrame(_rows("fcl", [0.5] * 3, [0.5] * 3))
    results, _ = choose_on_validation([("first", same), ("second", same.assign(dice_mean=0.9))])
    assert set(results["candidate"]) == {"first"}


@pytest.mark.parametrize("second, message", [
    (pd.DataFrame(_rows("fcl", [0.5] * 2, [0.5] * 2, clients=(0, 1))), "has clients"),
    (pd.DataFrame(_rows("fcl", [0.5, None, 0.5], [0.5] * 3)), "without val_dice"),
    (pd.DataFrame(_rows("fcl", [0.5] * 3, [0.5] * 3)).drop(columns="val_dice"), "no val_dice"),
])
def test_candidates_that_cannot_be_compared_are_refused(second, message):
    first = pd.DataFrame(_rows("fcl", [0.5] * 3, [0.5] * 3))
    with pytest.raises(ConfigError, match=message):
        choose_on_validation([("a", first), ("b", second)])


# ----------------------------------------------------------------------------- run folders
def _folder(root: Path, name: str, rows: list, *overrides: str) -> Path:
    """A run folder as `fcl-ray run` leaves it: config.yaml, results.csv, probes.csv."""
    folder = root / name
    folder.mkdir()
    (folder / "config.yaml").write_text(dump_yaml(load_config(QUICKSTART, list(overrides))))
    pd.DataFrame(rows).to_csv(folder / "results.csv", index=False)
    pd.DataFrame([{"method": "fcl", "fold": 0, "client": 0, "probe": "partition",
                   "value": 0.5}]).to_csv(folder / "probes.csv", index=False)
    return folder


def test_folders_are_labelled_by_the_fine_tuning_key_they_differ_in(tmp_path):
    a = _folder(tmp_path, "a", _rows("fcl", [0.6] * 3, [0.4] * 3),
                "finetune.encoder_lr_scale=0.1", "experiment.output_dir=a")
    b = _folder(tmp_path, "b", _rows("fcl", [0.5] * 3, [0.6] * 3),
                "finetune.encoder_lr_scale=1", "experiment.output_dir=b",
                "pretrain.methods=[random,fcl]")   # a grown grid names no candidate
    choice = choose([a, b])
    assert set(choice.choices["candidate"]) == {"finetune.encoder_lr_scale=0.1",
                                                "finetune.encoder_lr_scale=1.0"}
    assert set(choice.results["candidate"]) == {"finetune.encoder_lr_scale=0.1"}
    assert len(choice.probes) == 1   # the shared encoders' probes, once
    out = tmp_path / "chosen"
    assert main(["choose", str(a), str(b), "--out", str(out)]) == 0
    assert main(["report", str(out)]) == 0   # the chosen rows are a results set
    assert pd.read_csv(out / "results.csv")["candidate"].nunique() == 1


def test_folders_of_one_candidate_are_put_together(tmp_path, capsys):
    """A candidate's rows may sit in several folders (one per fold or mode); two of its folders
    holding the same setting are refused."""
    fold1 = [dict(r, fold=1) for r in _rows("fcl", [0.4] * 3, [0.4] * 3)]
    a0 = _folder(tmp_path, "a0", _rows("fcl", [0.6] * 3, [0.4] * 3), "finetune.encoder_lr_scale=0.1")
    a1 = _folder(tmp_path, "a1", fold1, "finetune.encoder_lr_scale=0.1", "finetune.folds=[1]")
    b = _folder(tmp_path, "b", _rows("fcl", [0.5] * 3, [0.6] * 3)
                + [dict(r, val_dice=0.5) for r in fold1], "finetune.encoder_lr_scale=1")
    choice = choose([a0, a1, b])
    assert choice.choices.groupby("fold")["candidates"].max().to_dict() == {0: 2, 1: 2}
    assert choice.results.groupby("fold")["candidate"].first().to_dict() == {
        0: "finetune.encoder_lr_scale=0.1", 1: "finetune.encoder_lr_scale=1.0"}
    copy = _folder(tmp_path, "copy", _rows("fcl", [0.6] * 3, [0.4] * 3),
                   "finetune.encoder_lr_scale=0.1")     # the same rows: counted once
    assert choose([a0, copy, a1, b]).results.equals(choice.results)
    other = _folder(tmp_path, "other", _rows("fcl", [0.6] * 3, [0.5] * 3),
                    "finetune.encoder_lr_scale=0.1")
    assert main(["choose", str(a0), str(other), str(b)]) == 2
    assert "hold different rows of method fcl" in capsys.readouterr().err


@pytest.mark.parametrize("overrides_b, message", [
    (["pretrain.rounds=7"], "differ in pretrain.rounds"),
    (["data.noise=0.3"], "differ in data.noise"),
    (["experiment.seed=3"], "differ in experiment.seed"),
    (["federation.num_cpus_per_client=1"], "same fine-tuning settings"),
])
def test_folders_that_do_not_share_encoders_exit_2_with_one_line(tmp_path, capsys, overrides_b,
                                                                 message):
    a = _folder(tmp_path, "a", _rows("fcl", [0.6] * 3, [0.4] * 3))
    b = _folder(tmp_path, "b", _rows("fcl", [0.6] * 3, [0.4] * 3), *overrides_b)
    assert main(["choose", str(a), str(b)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "fcl-ray: error: choose:" in err


def test_a_missing_folder_or_a_single_folder_exit_2(tmp_path, capsys):
    a = _folder(tmp_path, "a", _rows("fcl", [0.6] * 3, [0.4] * 3))
    assert main(["choose", str(a)]) == 2
    assert "two or more run folders" in capsys.readouterr().err
    assert main(["choose", str(a), str(tmp_path / "nowhere")]) == 2
    assert "is not a run folder" in capsys.readouterr().err
