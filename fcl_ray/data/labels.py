"""The label set: which structures a run segments, and the names its Dice columns carry.

The classes come from the data. The cardiac datasets (the phantom, ACDC, M&Ms) share the
project's convention, labels 1 RV, 2 myocardium, 3 LV (:data:`CARDIAC_CLASSES`). A Decathlon
task names its labels in ``dataset.json`` (``data.classes`` picks some of them). Label value
``i`` of a mask is class ``classes[i - 1]``; 0 is background. The U-Net has
``len(classes) + 1`` outputs and the results one ``dice_<name>`` column per class.
No torch, no Ray: the driver checks the names before Ray starts, each site reads them again.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence

from fcl_ray.config import DataConfig
from fcl_ray.data import DataError

CARDIAC_CLASSES = ("rv", "myo", "lv")   # labels 1, 2, 3 of every cardiac reader
MEAN_COLUMN = "dice_mean"


def network_outputs(classes: Sequence[str]) -> int:
    """The U-Net's output channels for ``classes``: one per class, plus background."""
    return len(classes) + 1


CARDIAC_OUTPUTS = network_outputs(CARDIAC_CLASSES)


def column_name(name: str) -> str:
    """A class name as a results column: ``left atrium`` -> ``dice_left_atrium``."""
    return "dice_" + re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_")


def dice_columns(classes: Sequence[str]) -> list[str]:
    """The per-class Dice columns, in label order (``dice_mean`` is not among them)."""
    return [column_name(c) for c in classes]


def check_classes(classes: Sequence[str], where: str) -> tuple[str, ...]:
    """``classes`` if every one gives a column of its own (not empty, not ``dice_mean``,
    no two alike after :func:`column_name`); else DataError naming ``where``."""
    seen: dict[str, str] = {}
    for name in classes:
        column = column_name(name)
        if column in ("dice_", MEAN_COLUMN) or column in seen:
            clash = f"'{seen[column]}' and " if column in seen else ""
            raise DataError(f"{where}: class names {clash}'{name}' give the results column "
                            f"{column!r}; rename the label or pick classes with data.classes")
        seen[column] = name
    return tuple(classes)


def class_names(d: DataConfig, client: Optional[int] = None) -> tuple[str, ...]:
    """The classes a run on ``d`` segments, label 1 first. Decathlon: from ``dataset.json``
    under ``data.root`` (or under ``data.client_roots[client]``, default the first), as
    ``data.classes`` keeps them; DataError when it names no label there. Others: cardiac."""
    if d.kind != "decathlon":
        return CARDIAC_CLASSES
    from fcl_ray.data.readers import decathlon   # reads JSON only

    root = Path(d.client_roots[client or 0] if d.client_roots else d.root).expanduser()
    return check_classes(decathlon.class_names(root, d), str(root / "dataset.json"))


def agreed_classes(per_client: Sequence[Sequence[str]]) -> tuple[str, ...]:
    """The classes every client reported (with client_roots each reads its own
    dataset.json); DataError naming the first client that differs from client 0."""
    first = tuple(per_client[0])
    for client, classes in enumerate(per_client):
        if tuple(classes) != first:
            raise DataError(f"client {client} segments {', '.join(classes) or 'nothing'} but "
                            f"client 0 segments {', '.join(first)}: every site's dataset.json "
                            f"must name the same labels (or pick them with data.classes)")
    return first
