"""Frozen-encoder probes on tiny synthetic tensors whose answers are known."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fcl_ray.data.slices import SliceSet
from fcl_ray.methods.finetune import init_unet
from fcl_ray.methods.models import ENCODER_PREFIXES
from fcl_ray.methods.probes import (HypercolumnProbe, SiteFeatures, cross_site_probes,
                                    frozen_encoder, partition_probe, pooled_features,
                                    position_retrieval, segmentation_probe, standardise)

FEATURES = [8, 8, 16, 16, 16, 8]
PARTITIONS = 4


def _site(seed: int, n: int = 160, dim: int = 16, informative: bool = True,
          held_out: bool = False) -> SiteFeatures:
    """Slices at uniform positions; features encode the position (and so the partition)
    when ``informative``, else are noise unrelated to it."""
    g = torch.Generator().manual_seed(seed)
    position = torch.rand(n, generator=g)
    partition = torch.clamp((position * PARTITIONS).long(), max=PARTITIONS - 1)
    noise = torch.randn(n, dim, generator=g)
    if informative:   # a one-hot partition code and the position itself, plus a little noise
        code = torch.cat([F.one_hot(partition, PARTITIONS).float(), 4 * position[:, None]], 1)
        features = code + 0.01 * noise[:, :PARTITIONS + 1]
    else:
        features = noise
    mask = torch.arange(n) % 2 == 0 if held_out else None
    return SiteFeatures(features, partition, position, mask)


def test_features_that_encode_the_partition_give_accuracy_one():
    sites = [_site(s) for s in range(3)]
    assert [partition_probe(sites, i, PARTITIONS) for i in range(3)] == [1.0, 1.0, 1.0]


def test_random_features_give_about_chance():
    sites = [_site(s, n=400, informative=False) for s in range(3)]
    accuracy = [partition_probe(sites, i, PARTITIONS) for i in range(3)]
    assert all(abs(a - 1 / PARTITIONS) < 0.08 for a in accuracy), accuracy


def test_the_probe_learns_from_the_other_sites_only():
    """Held-out rows are scored, the other rows of the other sites teach: relabel the
    teaching rows (partition p -> p + 1) and the held-out site is always wrong."""
    sites = [_site(s, held_out=True) for s in range(3)]
    for site in sites[1:]:
        teach = ~site.held_out
        site.partition[teach] = (site.partition[teach] + 1) % PARTITIONS
    assert partition_probe(sites, 0, PARTITIONS) == 0.0
    # the relabelled rows of site 0 itself are not what it is scored on
    sites[0].partition[~sites[0].held_out] = 0
    assert partition_probe(sites, 0, PARTITIONS) == 0.0


def test_position_retrieval_finds_the_same_level_in_other_sites():
    sites = [_site(s) for s in range(3)]
    dt, same = position_retrieval(sites, 0)
    assert dt < 0.03 and same > 0.9
    values = cross_site_probes(sites, 1, PARTITIONS)
    assert values["partition_accuracy"] == 1.0 and values["position_dt"] < 0.03


def test_random_features_retrieve_a_random_position():
    """A random neighbour: E|t - t'| = 1/3 for uniform positions; same partition 1/4."""
    sites = [_site(s, n=400, informative=False) for s in range(3)]
    dt, same = position_retrieval(sites, 2)
    assert abs(dt - 1 / 3) < 0.06 and abs(same - 1 / PARTITIONS) < 0.08


def test_cross_site_probes_need_two_sites():
    with pytest.raises(ValueError, match="at least 2 sites"):
        partition_probe([_site(0)], 0, PARTITIONS)


def test_site_features_from_the_arrays_a_client_sends():
    site = _site(0, held_out=True)
    arrays = {"features": site.features.numpy(), "partition": site.partition.numpy(),
              "position": site.position.numpy(), "held_out": site.held_out.numpy()}
    back = SiteFeatures.from_arrays(arrays)
    assert torch.equal(back.features, site.features) and back.held_out.dtype == torch.bool
    assert torch.equal(back.rows(True), site.held_out) and torch.equal(back.rows(False), ~site.held_out)


def test_standardise_uses_the_reference_and_zeroes_constant_dimensions():
    reference = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
    other = torch.tensor([[2.0, 100.0]])
    ref, out = standardise(reference, other)
    assert torch.allclose(ref[:, 0], torch.tensor([-1.0, 1.0]))
    assert out.tolist() == [[0.0, 0.0]]   # the mean of dim 0; dim 1 is constant there


# ----------------------------------------------------------------------------- the encoder
def test_random_init_is_the_encoder_random_init_fine_tuning_starts_from():
    encoder = frozen_encoder(FEATURES, None, seed=3)
    unet = init_unet(FEATURES, None, seed=3, device=torch.device("cpu")).state_dict()
    for key, value in encoder.state_dict().items():
        assert key.startswith(ENCODER_PREFIXES) and torch.equal(value, unet[key])
    assert not any(p.requires_grad for p in encoder.parameters())
    other = frozen_encoder(FEATURES, None, seed=4).state_dict()
    assert not torch.equal(other["conv_0.conv_0.conv.weight"],
                           encoder.state_dict()["conv_0.conv_0.conv.weight"])
    loaded = frozen_encoder(FEATURES, other, seed=3).state_dict()
    assert all(torch.equal(v, other[k]) for k, v in loaded.items())


def test_pooled_features_are_the_projection_heads_input():
    encoder = frozen_encoder(FEATURES, None, seed=0)
    images = torch.rand(5, 1, 32, 32)
    features = pooled_features(encoder, images, chunk=2)
    assert features.shape == (5, FEATURES[4] * 16)
    assert torch.allclose(features[3], F.adaptive_avg_pool2d(encoder(images[3:4]), 4).flatten(),
                          atol=1e-5)


def test_the_head_is_a_1x1_convolution_of_the_concatenated_upsampled_maps():
    probe = HypercolumnProbe(frozen_encoder(FEATURES, None, seed=0), n_classes=3)
    torch.nn.init.normal_(probe.head.weight, generator=torch.Generator().manual_seed(0))
    torch.nn.init.normal_(probe.head.bias, generator=torch.Generator().manual_seed(1))
    images = torch.rand(2, 1, 32, 32)
    maps = probe.levels(images)
    assert [m.shape[1] for m in maps] == FEATURES[:5] and maps[-1].shape[-1] == 2
    columns = torch.cat([F.interpolate(m, size=(32, 32), mode="bilinear", align_corners=False)
                         for m in maps], dim=1)
    with torch.no_grad():
        assert torch.allclose(probe(images), probe.head(columns), atol=1e-4)


# ----------------------------------------------------------------------------- segmentation
def _blobs(n: int, seed: int, size: int = 32) -> SliceSet:
    """Smooth random blobs; the label is the threshold of the image (4 slices a volume)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images = torch.zeros(n, 1, size, size)
    for i in range(n):
        for _ in range(3):
            centre, radius = torch.rand(2, generator=g) * size, 3 + 5 * torch.rand(1, generator=g)
            images[i, 0] += torch.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2)
                                      / (2 * radius ** 2))
    images = images.clamp(0, 1)
    return SliceSet(images, (images[:, 0] > 0.5).long(), torch.zeros(n, dtype=torch.long),
                    torch.arange(n) // 4, torch.zeros(n))


def test_segmentation_probe_learns_a_threshold_of_the_input():
    encoder = frozen_encoder(FEATURES, None, seed=0)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    train, test = _blobs(8, seed=0), _blobs(8, seed=1)
    dice = segmentation_probe(encoder, train, test, n_classes=2, steps=40, seed=0)
    assert dice > 0.8
    assert segmentation_probe(encoder, train, test, n_classes=2, steps=40, seed=0) == dice
    assert all(torch.equal(v, before[k]) for k, v in encoder.state_dict().items())   # frozen


def test_segmentation_probe_cannot_learn_a_label_unrelated_to_the_input():
    encoder = frozen_encoder(FEATURES, None, seed=0)
    train, test = _blobs(8, seed=0), _blobs(8, seed=1)
    test.labels = _blobs(8, seed=2).labels   # another image's blobs: nothing to see
    assert segmentation_probe(encoder, train, test, n_classes=2, steps=40, seed=0) < 0.6
