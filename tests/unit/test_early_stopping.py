"""Fine-tuning to convergence: the stopping rule, validation patients, the restored weights."""
import math

import numpy as np
import pytest
import torch

from fcl_ray.data.slices import SliceSet
from fcl_ray.data.split import patient_split
from fcl_ray.core.early_stopping import EarlyStopping, evaluation_steps
from fcl_ray.methods.evaluate import dice_per_volume
from fcl_ray.methods.finetune import SegmentationTrainer, init_unet, train_to_convergence


def test_stops_after_patience_evaluations_without_improvement():
    stopper = EarlyStopping(patience=2)
    verdicts = []
    for step, score in zip(range(10, 70, 10), [0.3, 0.5, 0.5, 0.4, 0.6, 0.1]):
        verdicts.append((stopper.update(score, step), stopper.should_stop))
        if stopper.should_stop:
            break
    # 0.5 again is no improvement (strictly greater is); the 2nd miss in a row stops.
    assert verdicts == [(True, False), (True, False), (False, False), (False, True)]
    assert stopper.summary(40) == {"steps": 40, "best_step": 20, "val_dice": 0.5}


def test_nan_scores_never_improve_and_no_evaluation_gives_nan():
    stopper = EarlyStopping(patience=1)
    assert not stopper.update(float("nan"), 5) and stopper.should_stop
    assert math.isnan(stopper.summary(5)["val_dice"]) and stopper.best_step == 0


def test_evaluation_steps_end_at_max_steps():
    assert evaluation_steps(50, 20) == [20, 40, 50]
    assert evaluation_steps(40, 20) == [20, 40]
    assert evaluation_steps(5, 20) == [5]


def _ids(patients: int, frames=("ED", "ES", "t02")):
    ids = [f"p{p:02d}:{f}" for p in range(patients) for f in frames]
    return ids, [not f.startswith("t") for f in ids for f in [f.split(":")[1]]]


def test_validation_patients_are_training_patients_outside_every_budget():
    ids, has = _ids(10)
    patient = lambda idx: {ids[i].split(":")[0] for i in idx}  # noqa: E731
    for fold in range(5):
        splits = {n: patient_split(ids, has, 5, fold, n, 0, 3, n_validation=2) for n in (1, 2, 6)}
        val = patient(splits[1].validation_volumes)
        assert len(val) == 2 and all(has[i] for i in splits[1].validation_volumes)
        for n, split in splits.items():
            assert patient(split.validation_volumes) == val          # the same for every N
            assert not val & patient(split.labeled) and not val & patient(split.test)
            assert val <= patient(split.train)                      # images stay in the pool
        # the probe's validation case is one of them
        assert patient([splits[1].validation]) <= val


def test_too_many_validation_patients_is_one_clear_error():
    ids, has = _ids(10)
    with pytest.raises(ValueError, match=r"7 labeled \+ 2 validation patients .* only 8"):
        patient_split(ids, has, 5, 0, 7, 0, 0, n_validation=2)


def _slices(n_volumes: int, depth: int = 3, size: int = 32, seed: int = 0) -> SliceSet:
    gen = torch.Generator().manual_seed(seed)
    n = n_volumes * depth
    labels = torch.zeros(n, size, size, dtype=torch.long)
    labels[:, 8:24, 8:24] = 3
    labels[:, 12:20, 12:20] = 1
    images = labels[:, None].float() / 3 + 0.05 * torch.randn(n, 1, size, size, generator=gen)
    return SliceSet(images, labels, torch.zeros(n, dtype=torch.long),
                    torch.arange(n_volumes).repeat_interleave(depth), torch.zeros(n))


def test_batched_dice_equals_volume_by_volume():
    unet = init_unet([4, 4, 8, 8, 8, 4], None, seed=0, device=torch.device("cpu"))
    test = _slices(4)
    batched = dice_per_volume(unet, test)
    one_by_one = np.concatenate([dice_per_volume(unet, test.select_volumes([v]))
                                 for v in range(4)])
    np.testing.assert_allclose(batched, one_by_one, rtol=0, atol=1e-6)


def test_train_to_convergence_restores_the_best_weights():
    unet = init_unet([4, 4, 8, 8, 8, 4], None, seed=0, device=torch.device("cpu"))
    trainer = SegmentationTrainer(unet, _slices(2), batch_size=4, lr=1e-2,
                                  generator=torch.Generator().manual_seed(0))
    scores = iter([0.2, 0.6, 0.4, 0.3, 0.9])
    seen = {}

    def score():   # a scripted validation curve; remembers the weights it scored
        value = next(scores)
        seen[value] = {k: v.clone() for k, v in unet.state_dict().items()}
        return value

    outcome = train_to_convergence(trainer, score, eval_every=3, patience=2, max_steps=100)
    assert (outcome["steps"], outcome["best_step"], outcome["val_dice"]) == (12, 6, 0.6)
    assert all(torch.equal(v, seen[0.6][k]) for k, v in unet.state_dict().items())
    assert not all(torch.equal(v, seen[0.3][k]) for k, v in unet.state_dict().items())
    assert np.isfinite(outcome["train_loss"])
