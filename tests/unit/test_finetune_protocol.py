"""finetune.loss and finetune.augment: ``ce`` is plain cross-entropy on the logits, ``dice_ce``
adds the Dice term; ``standard`` augmentation draws what it always drew, ``strong`` keeps the
labels on their image, ``none`` leaves the batch alone; both keys reach the trainer."""
import pytest
import torch
import torch.nn.functional as F

from fcl_ray.config_io import load_config
from fcl_ray.methods.augment import intensity_jitter, random_affine, segmentation_augment, warp
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
    loss = segmentation_loss("ce")(logits, labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_dice_ce_adds_a_dice_term():
    logits, labels = _batch()
    assert segmentation_loss("dice_ce")(logits, labels) > segmentation_loss("ce")(logits, labels)


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="unknown fine-tuning loss 'dice'"):
        segmentation_loss("dice")


def test_config_key_reaches_the_trainer():
    cfg = load_config(None, TINY + ["finetune.loss=ce", "finetune.augment=none"])
    assert (cfg.finetune.loss, cfg.finetune.augment) == ("ce", "none")
    unet = init_unet([4, 4, 8, 8, 8, 4], None, seed=0, device=torch.device("cpu"))
    trainer = SegmentationTrainer(unet, _slices(2), batch_size=4, lr=1e-2,
                                  generator=torch.Generator().manual_seed(0),
                                  loss=cfg.finetune.loss, augment=cfg.finetune.augment)
    assert trainer.loss_fn.lambda_dice == 0.0 and trainer.augment == "none"
    default = load_config(None, TINY).finetune
    assert (default.loss, default.augment) == ("dice_ce", "standard")


def _square_batch(n=16, size=16):
    """Images that are their label (1 inside an off-centre square), so a misaligned label map
    would fall on dark pixels."""
    y = torch.zeros(n, size, size, dtype=torch.long)
    y[:, 2:7, 3:9] = 1
    return y[:, None].float(), y


def test_standard_draws_what_it_always_drew():
    x, y = _square_batch()
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    xa, ya = segmentation_augment(x, y, gen_a, "standard")
    theta = random_affine(len(x), gen_b)
    xb = intensity_jitter(warp(x, theta), gen_b, noise=0.01)
    yb = warp(y[:, None].float(), theta, mode="nearest")[:, 0].long()
    assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_strong_keeps_labels_on_their_image_and_none_changes_nothing():
    x, y = _square_batch()
    xs, ys = segmentation_augment(x, y, torch.Generator().manual_seed(0), "strong")
    inside, outside = xs[:, 0][ys == 1].mean(), xs[:, 0][ys == 0].mean()
    assert inside - outside > 0.5          # misaligned labels would give about 0
    assert ys.sum() > 0 and not torch.equal(ys, y)
    xn, yn = segmentation_augment(x, y, torch.Generator().manual_seed(0), "none")
    assert xn is x and yn is y
    with pytest.raises(ValueError, match="unknown fine-tuning augmentation 'heavy'"):
        segmentation_augment(x, y, torch.Generator(), "heavy")
