"""finetune.loss: ``ce`` is plain cross-entropy on the logits, ``dice_ce`` adds the Dice term,
and the key reaches the trainer from a config."""
import pytest
import torch
import torch.nn.functional as F

from fcl_ray.config_io import load_config
from fcl_ray.methods.finetune import SegmentationTrainer, init_unet, segmentation_loss

from conftest import TINY
from test_early_stopping import _slices


def _batch():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, generator=gen)
    labels = torch.randint(0, 4, (2, 1, 8, 8), generator=gen)
    return logits, labels


def test_ce_is_cross_entropy_alone():
    logits, labels = _batch()
    expected = F.cross_entropy(logits, labels[:, 0])
    assert segmentation_loss("ce")(logits, labels).item() == pytest.approx(expected.item(), rel=1e-5)


def test_dice_ce_adds_a_dice_term():
    logits, labels = _batch()
    assert segmentation_loss("dice_ce")(logits, labels) > segmentation_loss("ce")(logits, labels)


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="unknown fine-tuning loss 'dice'"):
        segmentation_loss("dice")


def test_config_key_reaches_the_trainer():
    cfg = load_config(None, TINY + ["finetune.loss=ce"])
    assert cfg.finetune.loss == "ce"
    unet = init_unet([4, 4, 8, 8, 8, 4], None, seed=0, device=torch.device("cpu"))
    trainer = SegmentationTrainer(unet, _slices(2), batch_size=4, lr=1e-2,
                                  generator=torch.Generator().manual_seed(0), loss=cfg.finetune.loss)
    assert trainer.loss_fn.lambda_dice == 0.0
    assert load_config(None, TINY).finetune.loss == "dice_ce"
