"""data.split=by_group: one client per pathology group, or groups mixed by data.site_skew
(fcl_ray/data/sites.py; pure, no files, no Ray)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fcl_ray.config_io import load_config
from fcl_ray.data import DataError
from fcl_ray.data.readers.common import CaseRef
from fcl_ray.data.sites import assign_clients, mix_groups, site_names

ACDC = ("DCM", "HCM", "MINF", "NOR", "RV")
BALANCED = [g for g in ACDC for _ in range(20)]          # ACDC's training set: 20 per group


def mixes(groups, parts):
    """Patients of each group per site: an array (sites, groups)."""
    names = sorted(set(groups))
    return np.array([[sum(groups[i] == g for i in p) for g in names] for p in parts])


@pytest.mark.parametrize("clients,skew,seed", [(1, 1.0, 0), (3, 0.01, 1), (7, 1.0, 2),
                                               (10, 1000.0, 3), (44, 0.5, 4)])
def test_every_patient_is_dealt_exactly_once_to_equal_nonempty_sites(clients, skew, seed):
    groups = ["DCM"] * 7 + ["NOR"] * 13 + ["RV"] * 3 + ["HCM"] * 20 + ["MINF"]   # uneven groups
    parts = mix_groups(groups, clients, skew, seed)
    assert len(parts) == clients
    assert sorted(i for p in parts for i in p) == list(range(len(groups)))
    sizes = [len(p) for p in parts]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1       # as equal as the random split


def test_large_skew_gives_every_site_the_same_mix():
    for seed in range(3):
        counts = mixes(BALANCED, mix_groups(BALANCED, 10, 1000.0, seed))
        assert (np.abs(counts - 2) <= 1).all(), counts           # 10 a site, 2 of each group


def test_small_skew_gives_sites_dominated_by_one_group():
    def dominance(skew):
        shares = [row.max() / row.sum() for seed in range(10)
                  for row in mixes(BALANCED, mix_groups(BALANCED, 10, skew, seed))]
        return float(np.mean(shares))
    assert dominance(0.01) >= 0.8
    assert dominance(1000.0) <= 0.3


def test_deal_is_deterministic_per_seed():
    assert mix_groups(BALANCED, 10, 1.0, 5) == mix_groups(BALANCED, 10, 1.0, 5)
    assert mix_groups(BALANCED, 10, 1.0, 5) != mix_groups(BALANCED, 10, 1.0, 6)


# ----------------------------------------------------------------------------- assign_clients
def cases(groups):
    return [CaseRef(f"patient{i + 1:03d}", (Path(f"p{i}"),), site={"group": g} if g else {})
            for i, g in enumerate(groups)]


def data(*extra):
    return load_config(None, ["data.kind=acdc", "data.root=/data/ACDC", "data.split=by_group",
                              *extra]).data


def test_one_client_per_group_in_sorted_order_and_named_by_group():
    d = data("data.clients=3")
    parts = assign_clients(cases(["NOR", "DCM", "RV", "NOR", "DCM"]), d, "root")
    assert [[c.case_id for c in p] for p in parts] == [["patient002", "patient005"],
                                                       ["patient001", "patient004"],
                                                       ["patient003"]]
    assert site_names(parts, d) == ["group DCM", "group NOR", "group RV"]


def test_wrong_client_count_names_the_groups_and_the_fix():
    with pytest.raises(DataError) as err:
        assign_clients(cases(["NOR", "DCM", "RV"]), data("data.clients=5"), "root")
    assert str(err.value) == ("root: 3 groups (DCM, NOR, RV) but data.clients=5; "
                              "set data.clients=3")


def test_mixed_sites_use_split_seed_and_name_their_mix():
    patients = cases(BALANCED)
    d = data("data.clients=4", "data.site_skew=1000", "data.split_seed=2")
    parts = assign_clients(patients, d, "root")
    assert sorted(c.case_id for p in parts for c in p) == [c.case_id for c in patients]
    assert site_names(parts, d)[0] == "client0 (DCM 5, HCM 5, MINF 5, NOR 5, RV 5)"
    other = assign_clients(patients, data("data.clients=4", "data.site_skew=1",
                                          "data.split_seed=3"), "root")
    assert other != assign_clients(patients, data("data.clients=4", "data.site_skew=1",
                                                  "data.split_seed=4"), "root")
    with pytest.raises(DataError, match="3 cases cannot fill data.clients=4"):
        assign_clients(cases(["NOR", "DCM", "RV"]), d, "root")


def test_cases_without_groups_are_refused_in_one_line():
    d = load_config(None, ["data.kind=mnms", "data.root=/data/MnM", "data.split=by_group",
                           "data.clients=2"]).data
    plain = [CaseRef("A1", (Path("a"),), site={"vendor": "A", "centre": "1"})]
    with pytest.raises(DataError) as err:
        assign_clients(plain, d, "root")
    assert str(err.value) == ("root: data.split=by_group needs 'group' metadata, which "
                              "data.kind=mnms does not have; use random or explicit")
