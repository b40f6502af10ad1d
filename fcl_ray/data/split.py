"""Per-client case splits: K folds by patient, nested label budgets. Pure, no Ray."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClientSplit:
    """Indices into one client's case list."""
    test: tuple[int, ...]       # held out, scored by Dice
    labeled: tuple[int, ...]    # the N volumes whose masks fine-tuning may use
    unlabeled: tuple[int, ...]  # the other training volumes (images only)
    order: tuple[int, ...] = ()  # the training cases in their seeded order
    # Early-stopping validation volumes (finetune.budget=converge): the masked volumes of the
    # last patients of the seeded order, so never among the N labeled while N + V <= training.
    validation_volumes: tuple[int, ...] = ()

    @property
    def validation(self) -> int:
        """The training case whose mask the pre-training probe scores against: the last of the
        seeded training order, so it is labeled only when every training case is."""
        return self.order[-1]

    @property
    def train(self) -> tuple[int, ...]:
        """Every non-test volume: the pre-training pool (images only, no masks)."""
        return tuple(sorted(self.labeled + self.unlabeled))


def kfold_split(n_cases: int, folds: int, fold: int, n_labeled: int, seed: int,
                client: int) -> ClientSplit:
    """Split a client's cases by patient: fold ``fold`` of ``folds`` is the test set.

    The order of the training cases is a seeded permutation that does not depend on
    ``n_labeled``, so budgets are nested (the N=1 volume is among the N=2 volumes), which
    keeps comparisons across N paired.
    """
    if not 0 <= fold < folds:
        raise ValueError(f"fold {fold} not in [0, {folds})")
    order = np.random.default_rng([seed, client, 104729]).permutation(n_cases)
    test = np.array_split(order, folds)[fold]
    train = [int(c) for c in order if c not in set(test.tolist())]
    if n_labeled > len(train):
        raise ValueError(f"client {client}: {n_labeled} labeled volumes asked, "
                         f"only {len(train)} training cases")
    return ClientSplit(test=tuple(sorted(int(c) for c in test)),
                       labeled=tuple(train[:n_labeled]),
                       unlabeled=tuple(sorted(train[n_labeled:])), order=tuple(train))


def patient_split(volume_ids: list[str], labeled: list[bool], folds: int, fold: int,
                  n_labeled: int, seed: int, client: int,
                  n_validation: int = 0) -> ClientSplit:
    """:func:`kfold_split` over patients, mapped back to volume indices.

    For datasets with several volumes per patient (ED and ES frames, unlabeled extra cine
    frames; ids ``<case>:<frame>``): all volumes of a patient fall on the same side, N counts
    labeled patients, volumes without masks only ever join the pre-training pool, and a test
    patient's extra frames are left out altogether (its images stay unseen).

    ``n_validation`` > 0 names the last that many patients of the seeded training order as
    validation patients (``validation_volumes``: their masked volumes). They stay in the
    pre-training pool (images only, like every training patient) and are the same for every
    N and method; N + n_validation may not exceed the training patients.
    """
    from fcl_ray.data import patient_of

    patients = list(dict.fromkeys(patient_of(v) for v, has in zip(volume_ids, labeled) if has))
    by_patient = kfold_split(len(patients), folds, fold, n_labeled, seed, client)
    training = len(by_patient.order)
    if n_validation and n_labeled + n_validation > training:
        raise ValueError(f"client {client}, fold {fold}: {n_labeled} labeled + {n_validation} "
                         f"validation patients (finetune.validation_patients) asked, only "
                         f"{training} training patients")
    validating = ({patients[i] for i in by_patient.order[training - n_validation:]}
                  if n_validation else set())
    side = {patients[i]: "test" for i in by_patient.test}
    side.update({patients[i]: "labeled" for i in by_patient.labeled})
    test, lab, unlab = [], [], []
    for i, (vid, has) in enumerate(zip(volume_ids, labeled)):
        where = side.get(patient_of(vid), "unlabeled")
        if where == "test":
            if has:
                test.append(i)
        elif where == "labeled" and has:
            lab.append(i)
        else:
            unlab.append(i)
    # Keep the seeded patient order (nested label budgets: N=1's patient first); ``order``
    # lists the training volumes with masks in that order (the probe scores its last one).
    rank = {patients[i]: k for k, i in enumerate(by_patient.order)}
    by_rank = lambda i: (rank[patient_of(volume_ids[i])], i)  # noqa: E731
    order = sorted((i for i, has in enumerate(labeled)
                    if has and patient_of(volume_ids[i]) in rank), key=by_rank)
    return ClientSplit(test=tuple(test), labeled=tuple(sorted(lab, key=by_rank)),
                       unlabeled=tuple(unlab), order=tuple(order),
                       validation_volumes=tuple(i for i in order
                                                if patient_of(volume_ids[i]) in validating))
