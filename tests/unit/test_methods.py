"""The baseline pre-training methods and FCL ablations as plain PyTorch (no Ray).

Every registered method: finite losses, weights that move, a shared state that round-trips,
an encoder that loads into the U-Net. Then one check of what makes each method itself.
"""
import copy
import math

import numpy as np
import pytest
import torch

from fcl_ray.data.slices import volumes_to_slices
from fcl_ray.data.synthetic import make_site
from fcl_ray.methods.losses import rotation_loss, sinkhorn, swav_loss
from fcl_ray.methods import get_method_class, has_pretraining, registered_methods
from fcl_ray.methods.base import PretrainMethod
from fcl_ray.methods.fedrotation import rotate_quarter_turns
from fcl_ray.methods.models import build_unet, load_encoder_into_unet

from method_fixtures import build_method, remote_features, tiny_slices

PRETRAINED = [m for m in registered_methods() if get_method_class(m) is not None]
BASELINES = ["local_cl", "fedrotation", "fedsimclr", "fedswav", "fedca",
             "fcl_no_exchange", "fcl_no_matching", "fcl_literal_negatives"]


@pytest.fixture(scope="module")
def slices():
    return tiny_slices()


def _make(name, slices, overrides=()):
    torch.set_num_threads(1)
    return build_method(name, slices, overrides)


def test_every_baseline_is_registered():
    for name in BASELINES:
        assert name in PRETRAINED
        assert issubclass(get_method_class(name), PretrainMethod)


def test_has_pretraining_agrees_with_the_classes_without_importing_them():
    assert [m for m in registered_methods() if has_pretraining(m)] == PRETRAINED
    with pytest.raises(KeyError, match="unknown method 'simclr'"):
        has_pretraining("simclr")


@pytest.mark.parametrize("name", PRETRAINED)
def test_common_contract(name, slices):
    method = _make(name, slices)
    before = {k: v.clone() for k, v in method.encoder_state().items()}
    remote = remote_features(method)
    metrics = method.train_round(3, remote)
    assert metrics and all(math.isfinite(v) for v in metrics.values()), metrics
    after = method.encoder_state()
    assert any(not torch.equal(before[k], after[k]) for k in before), "encoder did not train"

    state = method.shared_state()
    assert set(state) and all(k.split(".")[0] in method.networks() for k in state)
    method.load_shared_state({k: torch.zeros_like(v) for k, v in state.items()})
    assert all(v.abs().sum() == 0 for k, v in method.shared_state().items()
               if v.is_floating_point())
    method.load_shared_state(state)
    assert all(torch.equal(state[k], v) for k, v in method.shared_state().items())

    unet = build_unet(method.cfg.model.features)
    load_encoder_into_unet(unet, method.encoder_state())
    assert torch.equal(unet.conv_0.conv_0.conv.weight, method.encoder().conv_0.conv_0.conv.weight)

    shared = method.shared_features()
    assert (shared is not None) == method.shares_features
    if shared is not None:
        feats, parts = shared
        assert feats.dtype == np.float32 and parts.dtype == np.int16 and len(feats) == len(parts)


def test_sinkhorn_codes_are_doubly_stochastic():
    gen = torch.Generator().manual_seed(0)
    scores = torch.nn.functional.normalize(torch.randn(40, 8, generator=gen), dim=1)
    codes = sinkhorn(scores, epsilon=0.05, iterations=3)
    assert codes.shape == (40, 8) and (codes >= 0).all()
    assert torch.allclose(codes.sum(1), torch.ones(40), atol=1e-5)          # rows: distributions
    # Columns move toward B/K = 5 each: more even than the plain softmax, even at 3 iterations.
    plain = torch.softmax(scores / 0.05, dim=1).sum(0)
    assert codes.sum(0).std() < plain.std()
    converged = sinkhorn(scores, epsilon=0.05, iterations=100).sum(0)
    assert torch.allclose(converged, torch.full((8,), 5.0), rtol=0.05)
    # Every sample preferring prototype 0 must not collapse onto it.
    lopsided = torch.tensor([[1.0, 0.0]] * 6)
    assert sinkhorn(lopsided, 0.05, 10).sum(0).tolist() == pytest.approx([3.0, 3.0], rel=0.05)


def test_swav_and_rotation_losses_match_cross_entropy():
    s1, s2 = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    q1, q2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    # swapped: q1 vs softmax(s2) -> -log(1/(1+e)); q2 vs softmax(s1) -> -log(1/(1+e^2))
    expected = 0.5 * (math.log(1 + math.e) + math.log(1 + math.e ** 2))
    assert swav_loss(s1, s2, q1, q2, 1.0).item() == pytest.approx(expected, abs=1e-6)
    logits = torch.tensor([[3.0, 0.0, 0.0, 0.0]])
    assert rotation_loss(logits, torch.tensor([0])).item() == pytest.approx(
        math.log(1 + 3 * math.exp(-3)), abs=1e-6)


def test_rotation_labels_match_the_rotations():
    x = torch.arange(2 * 16, dtype=torch.float32).view(2, 1, 4, 4)
    rotated, labels = rotate_quarter_turns(x)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    for img, k, src in zip(rotated, labels.tolist(), [0, 1] * 4):
        assert torch.equal(img, torch.rot90(x[src], k, dims=(1, 2)))
        assert torch.equal(torch.rot90(img, -k, dims=(1, 2)), x[src])   # undoing gives the input


def test_rotation_classifier_learns(slices):
    method = _make("fedrotation", slices, ["pretrain.lr=0.003"])
    first = method.train_round(2, None)["loss"]
    last = method.train_round(20, None)
    assert last["loss"] < first and last["accuracy"] > 0.4   # chance is 0.25


def test_local_cl_is_local_and_pulls_partitions_together():
    vols = make_site(0, 0, 6, 48, (6, 8))
    slices = volumes_to_slices([v.image for v in vols], [None] * len(vols), 3)
    method = _make("local_cl", slices, ["data.image_size=48", "data.partitions=3",
                                        "data.slices_min=6", "data.slices_max=8",
                                        "pretrain.volumes_per_batch=4"])
    assert method.federated is False and method.shares_features is False

    def gap():
        with torch.no_grad():
            z = method.net(slices.images)
        same = slices.partition[:, None] == slices.partition[None, :]
        off = ~torch.eye(len(z), dtype=torch.bool)
        sim = z @ z.T
        return (sim[same & off].mean() - sim[~same].mean()).item()

    before = gap()
    method.train_round(100, None)
    assert gap() > before + 0.05


def test_simclr_loss_starts_near_chance(slices):
    method = _make("fedsimclr", slices)
    batch = 2 * method.cfg.pretrain.volumes_per_batch * method.cfg.data.partitions
    loss = method.train_step(None)["loss"]
    # Random embeddings: about log(2B - 1) or above (a BatchNorm head spreads them, so the
    # similarities vary); far below only if the two views were trivially equal.
    assert loss > math.log(batch - 1) - 1.0


def test_swav_keeps_prototypes_normalised_and_a_bounded_queue(slices):
    method = _make("fedswav", slices, ["pretrain.bank_size=20"])
    assert method.queue_length == 40                   # bank_size per partition x 2 partitions
    scores = torch.randn(16, method.n_prototypes)
    assert method._codes(scores).shape == (16, method.n_prototypes)   # empty queue: batch only
    method.train_round(6, None)                        # 6 x 8 embeddings: the queue is full
    assert len(method.queue) == 40
    method.train_step(None)
    norms = method.prototypes.weight.norm(dim=1)
    assert (norms - 1).abs().max() < 0.1     # renormalised before each step, one Adam step since


def test_fedca_uses_the_shared_dictionary_and_aligns_to_the_global_model(slices):
    method = _make("fedca", slices, ["pretrain.sample_size=1000"])
    other = _make("fedca", slices)
    remote = remote_features(other)
    local_before = len(method.bank)
    method.train_step(None)
    assert method.last_dictionary_size == local_before
    local_before = len(method.bank)
    method.train_step(remote)
    assert method.last_dictionary_size == local_before + len(remote[0])
    # Right after receiving global weights the model equals the reference: no alignment loss.
    method.load_shared_state(other.shared_state())
    assert method.train_step(remote)["loss_align"] == pytest.approx(0.0, abs=1e-5)
    assert method.train_round(3, remote)["loss_align"] > 1e-4


def test_fcl_ablations_switch_off_one_thing(slices):
    no_exchange = _make("fcl_no_exchange", slices)
    assert no_exchange.shared_features() is None and not no_exchange.shares_features

    no_matching = _make("fcl_no_matching", slices)
    m = no_matching.train_step(remote_features(no_matching))
    assert m["loss"] == pytest.approx(m["loss_local"]) and m["loss_remote"] > 0
    assert no_matching.cfg.pretrain.remote_weight == 0.0

    literal = _make("fcl_literal_negatives", slices)
    assert literal.cfg.pretrain.negatives == "all"
    fcl = _make("fcl", slices)
    assert fcl.cfg.pretrain.negatives == "other_partitions"   # the shared config is untouched
    # Same state, same draws: counting same-partition keys as negatives can only raise the loss.
    twin = copy.deepcopy(fcl)
    twin.cfg = literal.cfg
    gen_state = fcl.gen.get_state()
    base = fcl.train_step(None)
    twin.gen.set_state(gen_state)
    assert twin.train_step(None)["loss_local"] > base["loss_local"]


def test_methods_return_their_loss_and_only_the_base_class_steps():
    """One optimiser step for all methods (PretrainMethod.train_step: backward and step
    outside autocast); a method only writes compute_loss."""
    from pathlib import Path

    for name in PRETRAINED:
        assert get_method_class(name).train_step is PretrainMethod.train_step, name
    folder = Path(PretrainMethod.__module__.replace(".", "/")).parent
    root = Path(__file__).resolve().parents[2]
    for path in sorted((root / folder).glob("*.py")):
        # The training loops: pre-training, fine-tuning, and the probes' linear read-outs.
        if path.name in ("base.py", "finetune.py", "probes.py"):
            continue
        text = path.read_text()
        assert ".backward(" not in text and ".step()" not in text, path.name


@pytest.mark.parametrize("name", ["fcl", "local_cl"])
def test_a_bf16_round_trains_and_shares_float32_features(name, slices):
    """model.amp=bf16 on CPU: the autocast forward's bf16 keys go into float32 banks."""
    method = _make(name, slices, ["model.amp=bf16"])
    metrics = method.train_round(2, remote_features(method))
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    shared = method.shared_features()
    if shared is not None:
        assert shared[0].dtype == np.float32


@pytest.mark.parametrize("name", ["fcl", "fedca"])
def test_a_bank_that_starts_empty_fills_with_the_steps_keys(name, slices):
    filled = _make(name, slices)
    assert len(filled.bank) == len(slices)      # default: every slice's initial key
    empty = _make(name, slices, ["pretrain.bank_start=empty"])
    assert len(empty.bank) == 0
    metrics = empty.train_step(None)            # round 1: nothing in the dictionary yet
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert 0 < len(empty.bank) < len(slices)
    feats, parts = empty.shared_features()       # what it shares comes from its own steps
    assert 0 < len(feats) <= len(empty.bank) and len(parts) == len(feats)
