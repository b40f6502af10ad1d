"""The privacy audit's parts at tiny size: decoder, metrics, released rows, encoder loading,
and the command's answers to bad input (the membership test: test_privacy_membership.py).
No Ray."""
import numpy as np
import pytest
import torch

from conftest import TINY
from fcl_ray.config_io import load_config
from fcl_ray.privacy import audit as A


@pytest.mark.parametrize("size", [32, 48, 64])   # every multiple of 16 the config allows
def test_decoder_maps_rows_to_slices_in_the_unit_range(size):
    decoder = A.InversionDecoder(16, size, width=16)
    out = decoder(torch.nn.functional.normalize(torch.randn(3, 16), dim=1))
    assert out.shape == (3, 1, size, size) and out.min() >= 0 and out.max() <= 1


def test_inversion_learns_to_tell_two_kinds_of_slice_apart():
    # two row directions, two images: a trained decoder reconstructs each better than the mean
    rows = torch.nn.functional.normalize(torch.eye(16)[:2].repeat(8, 1), dim=1)
    images = torch.zeros(16, 1, 32, 32)
    images[0::2, :, :16] = 1.0    # kind 0: top half bright
    images[1::2, :, 16:] = 1.0    # kind 1: bottom half bright
    torch.manual_seed(0)
    decoder = A.train_inversion(rows, images, 0.0, 60, torch.Generator().manual_seed(0),
                                batch_size=16, lr=1e-2)
    recon = A.reconstruct(decoder, rows[:2])
    error = ((recon - images[:2]) ** 2).mean()
    mean_error = ((images.mean(0, keepdim=True) - images[:2]) ** 2).mean()
    assert error < 0.5 * mean_error


def test_image_quality_of_the_truth_is_perfect_and_of_noise_is_not():
    truth = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    same = A.image_quality(truth, truth)
    assert same["ssim"] == pytest.approx(1.0, abs=1e-4)
    other = A.image_quality(torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(1)),
                            truth)
    assert other["ssim"] < 0.2 and other["psnr"] < 15


def test_partition_means_are_the_baseline_reconstruction():
    images = torch.stack([torch.full((1, 4, 4), float(v)) for v in (0, 2, 10, 20)])
    partitions = torch.tensor([0, 0, 1, 1])
    means = A.partition_means(images, partitions, torch.tensor([1, 0, 5]))
    assert means[0].mean() == 15 and means[1].mean() == 1 and means[2].mean() == 8


def test_released_rows_follow_the_mechanism():
    rows = torch.nn.functional.normalize(torch.randn(10, 8), dim=1)
    units = [torch.tensor([i]) for i in range(10)]
    out = A.released_rows(rows, units, 4, 1, 0.0, 3, torch.Generator().manual_seed(0))
    assert out.shape == (12, 8)
    assert all((torch.isclose(rows @ r, torch.tensor(1.0))).any() for r in out)


def test_release_network_reads_encoder_files_head_states_and_checkpoints():
    cfg = load_config(None, TINY)
    source = A.release_network(cfg, None, seed=1)
    x = torch.rand(2, 1, 32, 32)
    full = A.release_network(cfg, source.state_dict(), seed=2)
    assert torch.allclose(full(x), source(x))
    from_checkpoint = A.release_network(cfg, {"momentum_net": source.state_dict()}, seed=2)
    assert torch.allclose(from_checkpoint(x), source(x))
    encoder_only = A.release_network(cfg, {"client0": source.encoder.state_dict()}, seed=1)
    assert torch.allclose(encoder_only(x), source(x))   # same head seed: same network


def test_audit_command_bad_input_is_exit_2(tmp_path, capsys):
    from fcl_ray.cli import main

    base = ["privacy-audit", "experiments/quickstart.yaml", "--out", str(tmp_path)]
    assert main(base + ["--client", "7"]) == 2
    assert "--client 7" in capsys.readouterr().err
    assert main(base + ["--multipliers", "1,-1"]) == 2
    assert main(base + ["--heldout", "-1"]) == 2
    assert "--heldout -1" in capsys.readouterr().err
    assert main(base + ["--encoder", str(tmp_path / "missing.pt")]) == 2
    (tmp_path / "junk.pt").write_text("not torch")
    assert main(base + ["--encoder", str(tmp_path / "junk.pt")]) == 2
    err = capsys.readouterr().err
    assert "missing.pt" in err and "junk.pt" in err and np.all(
        [line.startswith("fcl-ray: error:") for line in err.strip().splitlines()])


def test_heldout_defaults_to_100_on_the_phantom_and_0_on_data_on_disk():
    import dataclasses

    from fcl_ray.config import ConfigError
    from fcl_ray.privacy.audit_cli import DEFAULT_HELDOUT, _heldout

    cfg = load_config(None, TINY)
    assert _heldout(cfg, None) == DEFAULT_HELDOUT == 100 and _heldout(cfg, 7) == 7
    disk = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, kind="acdc"))
    assert _heldout(disk, None) == 0 and _heldout(disk, 0) == 0
    with pytest.raises(ConfigError, match="--heldout 5: .*phantom only"):
        _heldout(disk, 5)


def test_audit_scores_every_patient_on_the_same_frames():
    # test-fold patients lose their extra frames in the split: members and held-out patients
    # must be scored on their frames with masks only, or more slices would raise their score
    cfg = load_config(None, TINY + ["data.phases=ed_es", "data.extra_frames=1",
                                    "control.sites=1", "control.cases_per_site=1"])
    data = A.audit_data(cfg, client=0, fold=0, heldout=2)
    assert len(data.pool) > len(data.members)          # the pool keeps its extra frames
    for group in (data.members, data.outsiders, data.heldout):
        for p in group.patient.unique():
            assert len(group.volume[group.patient == p].unique()) == 2   # ED and ES only
    assert len(data.heldout.patient.unique()) == 2


def test_inversion_is_the_same_for_the_same_generator_seed():
    rows = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    images = torch.rand(8, 1, 32, 32)
    decoders = []
    for _ in range(2):
        torch.manual_seed(len(decoders))    # a different global state each time
        decoders.append(A.train_inversion(rows, images, 0.5, 3,
                                          torch.Generator().manual_seed(4), batch_size=4))
    assert torch.equal(A.reconstruct(decoders[0], rows), A.reconstruct(decoders[1], rows))
