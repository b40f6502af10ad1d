"""The label set comes from the data: class names, Dice columns, the U-Net's outputs."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from nifti_factories import write_decathlon  # noqa: E402

from fcl_ray.config import ConfigError  # noqa: E402
from fcl_ray.config_io import load_config  # noqa: E402
from fcl_ray.data import DataError  # noqa: E402
from fcl_ray.data.labels import (CARDIAC_CLASSES, agreed_classes, check_classes,  # noqa: E402
                                 class_names, column_name)
from fcl_ray.methods.evaluate import summarise_dice  # noqa: E402
from fcl_ray.methods.models import build_unet  # noqa: E402
from fcl_ray.results import RESULT_COLUMNS, result_columns  # noqa: E402


def decathlon(root, *extra):
    return load_config(None, ["data.kind=decathlon", f"data.root={root}", *extra]).data


def test_cardiac_is_the_default_and_keeps_the_committed_columns():
    assert class_names(load_config(None, []).data) == CARDIAC_CLASSES == ("rv", "myo", "lv")
    assert RESULT_COLUMNS == ["method", "finetune_mode", "n_labeled", "fold", "client",
                              "dice_mean", "dice_rv", "dice_myo", "dice_lv"]
    assert build_unet([8, 8, 16, 16, 16, 8]).final_conv.out_channels == 4


def test_decathlon_names_come_from_dataset_json_in_data_classes_order(tmp_path):
    root = write_decathlon(tmp_path / "dec", n_cases=1, labels=("left atrium", "Wall"))
    assert class_names(decathlon(root)) == ("left atrium", "Wall")
    assert class_names(decathlon(root, "data.classes=['2', left atrium]")) == ("Wall", "left atrium")
    assert result_columns(class_names(decathlon(root)))[-3:] == [
        "dice_mean", "dice_left_atrium", "dice_wall"]
    with pytest.raises(DataError, match=r"data.classes names 'aorta', not a foreground label "
                                        r"\(1=left atrium, 2=Wall\)"):
        class_names(decathlon(root, "data.classes=[aorta]"))


def test_column_names_must_be_distinct():
    assert column_name("Non-enhancing tumour") == "dice_non_enhancing_tumour"
    with pytest.raises(DataError, match="'left atrium' and 'Left-Atrium' give the results "
                                        "column 'dice_left_atrium'"):
        check_classes(["left atrium", "Left-Atrium"], "x/dataset.json")
    with pytest.raises(DataError, match="'Mean' give the results column 'dice_mean'"):
        check_classes(["Mean"], "x/dataset.json")


def test_sites_must_segment_the_same_classes():
    assert agreed_classes([["a", "b"], ("a", "b")]) == ("a", "b")
    with pytest.raises(DataError, match="client 1 segments b but client 0 segments a"):
        agreed_classes([["a"], ["b"]])


def test_data_classes_is_only_for_decathlon():
    with pytest.raises(ConfigError, match=r"^config key 'data.classes': only for "
                                          r"data.kind=decathlon .* rv, myo, lv; leave it \[\]$"):
        load_config(None, ["data.classes=[lv]"])


def test_dice_summary_follows_the_classes_and_refuses_a_mismatch():
    per_volume = np.array([[0.5, np.nan], [0.7, 0.2]])
    assert summarise_dice(per_volume, ("left atrium", "wall")) == pytest.approx(
        {"dice_left_atrium": 0.6, "dice_wall": 0.2, "dice_mean": 0.4})
    with pytest.raises(ValueError, match="2 Dice per volume for 3 classes"):
        summarise_dice(per_volume)            # the cardiac default has three
