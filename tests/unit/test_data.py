"""Synthetic phantom, partitions, slices and splits."""
import numpy as np
import pytest

from fcl_ray.data.slices import normalise_volume, partition_index, volumes_to_slices
from fcl_ray.data.split import kfold_split
from fcl_ray.data.synthetic import make_volume, site_profile


@pytest.mark.parametrize("depth,parts", [(4, 4), (5, 4), (9, 4), (12, 4), (7, 3), (18, 5), (6, 1)])
def test_partitions_are_contiguous_nonempty_and_balanced(depth, parts):
    idx = [partition_index(i, depth, parts) for i in range(depth)]
    assert idx == sorted(idx)                          # base to apex, contiguous
    counts = np.bincount(idx, minlength=parts)
    assert (counts > 0).all() and counts.max() - counts.min() <= 1


def test_partition_index_rejects_slices_outside_the_stack():
    with pytest.raises(ValueError):
        partition_index(5, 5, 4)


def test_phantom_is_deterministic_and_labelled_like_acdc():
    a, b = make_volume(3, 1, 2, 48), make_volume(3, 1, 2, 48)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    assert set(np.unique(a.label)) == {0, 1, 2, 3}
    assert a.image.dtype == np.float32 and a.label.dtype == np.uint8
    assert not np.array_equal(make_volume(4, 1, 2, 48).image, a.image)


def test_anatomy_changes_from_base_to_apex():
    for case in range(5):
        v = make_volume(0, 0, case, 64, slices=(10, 10))
        area = lambda k: (v.label == k).reshape(len(v.label), -1).sum(1)  # noqa: E731
        lv, rv = area(3), area(1)
        assert lv[0] > 2 * lv[-1]                      # LV cavity shrinks toward the apex
        assert rv[0] > 0 and rv[-1] == 0               # RV present at the base, gone at the apex
        assert (area(2) > 0).all()                     # myocardium in every slice


def test_sites_differ_like_scanners():
    profiles = [site_profile(0, s) for s in range(4)]
    assert len({round(p.noise, 4) for p in profiles}) == 4
    means = [make_volume(0, s, 0, 48).image.mean() for s in range(4)]
    assert max(means) / min(means) > 1.2


def test_normalisation_and_slice_tagging():
    v1, v2 = make_volume(0, 0, 0, 32, (5, 5)), make_volume(0, 0, 1, 32, (7, 7))
    x = normalise_volume(v1.image)
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    s = volumes_to_slices([v1.image, v2.image], [v1.label, None], partitions=3)
    assert s.images.shape == (12, 1, 32, 32)
    assert s.volume.tolist() == [0] * 5 + [1] * 7
    assert s.partition[:5].tolist() == [0, 0, 1, 1, 2]
    assert s.position[0] == 0 and s.position[4] == 1
    assert s.labels[5:].sum() == 0                     # unlabeled volume
    assert len(s.select_volumes([1])) == 7


def test_kfold_split_is_disjoint_covering_and_nested():
    tests = []
    for fold in range(5):
        one = kfold_split(10, 5, fold, 1, seed=0, client=3)
        four = kfold_split(10, 5, fold, 4, seed=0, client=3)
        assert set(one.labeled) <= set(four.labeled)   # nested label budgets
        assert not set(four.test) & set(four.train)
        assert sorted(four.test + four.train) == list(range(10))
        assert one.train == four.train                 # pre-training pool independent of N
        tests += four.test
    assert sorted(tests) == list(range(10))            # every case is tested exactly once


def test_kfold_split_rejects_too_many_labels():
    with pytest.raises(ValueError, match="client 2: 9 labeled"):
        kfold_split(10, 5, 0, 9, seed=0, client=2)


def test_numpy_gaussian_filter_matches_scipy():
    from scipy.ndimage import gaussian_filter

    from fcl_ray.data.synthetic import gaussian_filter_numpy

    image = np.random.default_rng(0).normal(size=(40, 33))
    for sigma in (0.5, 1.3, 6.0):
        assert np.abs(gaussian_filter_numpy(image, sigma) - gaussian_filter(image, sigma)).max() < 1e-12
