"""pretrain.batch_by: contrastive batches of distinct volumes (frames) or distinct patients."""
import pytest
import torch

from fcl_ray.data import patient_of
from fcl_ray.data.slices import volumes_to_slices
from fcl_ray.data.synthetic import make_cine_site
from fcl_ray.methods.base import PartitionBatchSampler

from method_fixtures import build_method

M = 4   # patients per batch: all of them, the case where frames of one patient meet most


def _cine_slices(patients: int = 6, with_patients: bool = True):
    """A phantom site's ED, ES and 2 extra frames of each patient (4 volumes a patient)."""
    vols = make_cine_site(0, 0, patients, 32, (4, 5), phases=("ED", "ES"), extra_frames=2)
    names = [patient_of(v.volume_id) for v in vols]
    slices = volumes_to_slices([v.image for v in vols], [v.label for v in vols], 2,
                               patients=names if with_patients else None)
    return slices, names


def _batches(slices, by: str, count: int = 200):
    sampler, gen = PartitionBatchSampler(slices, 2, by), torch.Generator().manual_seed(0)
    return [sampler.sample(M, gen)[0] for _ in range(count)]


def test_patient_batches_never_hold_two_frames_of_one_patient():
    slices, names = _cine_slices()
    shared = 0
    for by in ("volume", "patient"):
        for idx in _batches(slices, by):
            volumes = slices.volume[idx].unique()
            patients = {names[v] for v in volumes.tolist()}
            assert len(volumes) == M
            shared += len(patients) < M
            if by == "patient":
                assert len(patients) == M, f"a batch holds two frames of one patient: {volumes}"
        if by == "volume":   # the fault the option fixes is there, so the test can see it
            assert shared > 20, shared
            shared = 0


def test_a_patient_batch_takes_any_of_the_patients_frames():
    slices, names = _cine_slices()
    drawn = {v for idx in _batches(slices, "patient") for v in slices.volume[idx].tolist()}
    assert drawn == set(range(len(names)))   # every frame of every patient, in time


def test_one_frame_per_patient_gives_the_volume_batches_bit_for_bit():
    slices, _ = _cine_slices(with_patients=False)       # no patients: one per volume
    for a, b in zip(_batches(slices, "volume", 50), _batches(slices, "patient", 50)):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="unknown batch unit"):
        PartitionBatchSampler(slices, 2, "case")


def test_slice_sets_keep_their_patients_and_methods_use_the_option():
    slices, names = _cine_slices()
    assert slices.patient.tolist() == [int(names[v][-3:]) for v in slices.volume.tolist()]
    some = slices.select_volumes([4, 5, 9])   # the patients' numbers, not re-numbered
    assert some.patient.tolist() == [int(names[v][-3:]) for v in some.volume.tolist()]
    assert some.to("cpu").patient.tolist() == some.patient.tolist()
    for name in ("fcl", "local_cl", "fedswav"):
        method = build_method(name, slices, ["pretrain.batch_by=patient"])
        assert [len(u) for u in method.sampler.units] == [4] * 6, name
        assert len(build_method(name, slices).sampler.units) == 24, name   # default: volumes


def test_a_site_tags_its_slices_with_their_patients():
    from conftest import TINY
    from fcl_ray.config_io import load_config, to_dict
    from fcl_ray.federation.site import ClientSite

    cfg = load_config(None, TINY + ["data.phases=ed_es", "pretrain.batch_by=patient"])
    site = ClientSite(to_dict(cfg), client_id=0, num_threads=1)
    info = site.info()
    assert (info["patients"], info["volumes"]) == (4, 8)
    assert len(site.slices.patient.unique()) == 4
    site.start_pretraining("fcl", fold=0)
    assert all(len(unit) == 2 for unit in site.method.sampler.units)   # ED and ES
