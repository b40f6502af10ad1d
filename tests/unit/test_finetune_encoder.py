"""finetune.encoder_lr_scale and finetune.encoder_warmup_steps: what they do to the encoder
and the decoder, and that their defaults are a plain single-group Adam, bit for bit."""
import pytest
import torch

from fcl_ray.methods.finetune import SegmentationTrainer, init_unet
from fcl_ray.methods.models import ENCODER_PREFIXES

from conftest import TINY
from test_early_stopping import _slices

FEATURES = [4, 4, 8, 8, 8, 4]


def _trainer(**options) -> SegmentationTrainer:
    unet = init_unet(FEATURES, None, seed=0, device=torch.device("cpu"))
    return SegmentationTrainer(unet, _slices(2), batch_size=4, lr=1e-2,
                               generator=torch.Generator().manual_seed(0), **options)


def _weights(trainer, encoder: bool) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.unet.named_parameters()
            if k.startswith(ENCODER_PREFIXES) == encoder}


def _moved(before: dict, trainer, encoder: bool) -> bool:
    now = _weights(trainer, encoder)
    return any(not torch.equal(before[k], now[k]) for k in before)


def test_scale_zero_keeps_the_encoder_while_the_decoder_learns():
    torch.set_num_threads(1)
    trainer = _trainer(encoder_lr_scale=0.0)
    encoder, decoder = _weights(trainer, True), _weights(trainer, False)
    assert encoder and decoder
    trainer.train(3)
    assert not _moved(encoder, trainer, encoder=True)
    assert _moved(decoder, trainer, encoder=False)


def test_warmup_freezes_the_encoder_for_k_steps_then_it_trains():
    torch.set_num_threads(1)
    trainer = _trainer(encoder_warmup_steps=3)
    encoder, decoder = _weights(trainer, True), _weights(trainer, False)
    trainer.train(2)
    trainer.train(1)                   # the count runs across calls (federated rounds)
    assert not _moved(encoder, trainer, encoder=True)
    assert _moved(decoder, trainer, encoder=False)
    trainer.train(2)
    assert _moved(encoder, trainer, encoder=True)


@pytest.mark.parametrize("cosine_steps", [0, 10])
def test_defaults_are_a_single_group_adam_bit_for_bit(cosine_steps):
    torch.set_num_threads(1)
    grouped = _trainer(cosine_steps=cosine_steps)
    plain = _trainer(cosine_steps=cosine_steps)
    plain.optimizer = torch.optim.Adam(plain.unet.parameters(), lr=1e-2)   # today's optimiser
    if cosine_steps:
        plain.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(plain.optimizer, cosine_steps)
    assert grouped.train(4) == plain.train(4)
    for (name, a), b in zip(grouped.unet.state_dict().items(), plain.unet.state_dict().values()):
        assert torch.equal(a, b), name


def test_the_cosine_schedule_decays_both_groups_and_keeps_their_ratio():
    trainer = _trainer(encoder_lr_scale=0.1, encoder_warmup_steps=1, cosine_steps=8)
    assert [g["lr"] for g in trainer.optimizer.param_groups] == pytest.approx([1e-3, 1e-2])
    trainer.train(4)
    encoder_lr, decoder_lr = (g["lr"] for g in trainer.optimizer.param_groups)
    assert decoder_lr == pytest.approx(1e-2 * 0.5)   # half way down the cosine
    assert encoder_lr == pytest.approx(0.1 * decoder_lr)


def test_every_row_gets_the_options_through_the_site():
    """Random init (no encoder) and federated fine-tuning too: the trainer of a setting."""
    from fcl_ray.config_io import load_config, to_dict
    from fcl_ray.federation.site import ClientSite

    cfg = load_config(None, TINY + ["finetune.encoder_lr_scale=0.25",
                                    "finetune.encoder_warmup_steps=3"])   # local_steps=2
    site = ClientSite(to_dict(cfg), client_id=0, num_threads=1)
    trainer = site._new_trainer(None, fold=0, n_labeled=1)            # a random-init row
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [0.25 * cfg.finetune.lr,
                                                                 cfg.finetune.lr]
    site.start_federated_finetune(None, fold=0, n_labeled=1)
    encoder = _weights(site.trainer, True)
    site.finetune_round(None)                                          # steps 1-2: frozen
    assert not _moved(encoder, site.trainer, encoder=True)
    site.finetune_round(None)                                          # steps 3-4: step 4 trains
    assert _moved(encoder, site.trainer, encoder=True)


def test_unets_built_in_concurrent_threads_get_their_own_seeds_init():
    """finetune.concurrency > 1 builds U-Nets in threads of one actor: each must be what its
    seed gives when built alone."""
    from concurrent.futures import ThreadPoolExecutor

    features, cpu = (4, 4, 8, 8, 8, 4), torch.device("cpu")
    seeds = list(range(12))
    alone = {s: init_unet(features, None, s, cpu).state_dict() for s in seeds}
    with ThreadPoolExecutor(max_workers=4) as pool:
        built = list(pool.map(lambda s: init_unet(features, None, s, cpu).state_dict(), seeds))
    for seed, state in zip(seeds, built):
        assert all(torch.equal(state[k], alone[seed][k]) for k in state), f"seed {seed}"
