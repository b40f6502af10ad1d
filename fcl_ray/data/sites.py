"""Which cases belong to which client: ``random``, ``by_site``, ``by_group`` or ``explicit``.

Pure and deterministic: every client actor lists the same dataset and computes the same
assignment, then loads only its own cases.

- ``random`` (the paper's): cases sorted by id, shuffled with ``data.split_seed``, dealt into
  ``data.clients`` groups of (nearly) equal size.
- ``by_site``: one client per site (M&Ms vendor or centre, ``data.sites_by``), sites in sorted
  order; ``data.clients`` must equal the number of sites.
- ``by_group``: one client per ACDC pathology group (``Group`` in ``Info.cfg``), groups in
  sorted order; or, with ``data.site_skew``, groups mixed over ``data.clients`` sites
  (:func:`mix_groups`).
- ``explicit``: ``data.split_lists``, one list of case ids per client.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from fcl_ray.config import DataConfig
from fcl_ray.data import DataError
from fcl_ray.data.readers.common import CaseRef


def assign_clients(cases: list[CaseRef], d: DataConfig, where: str) -> list[list[CaseRef]]:
    """``d.clients`` lists of cases; ``where`` (the dataset root) names the data in errors."""
    cases = sorted(cases, key=lambda c: c.case_id)
    if d.split == "random":
        _enough_cases(cases, d, where)
        order = np.random.default_rng([d.split_seed, 7727]).permutation(len(cases))
        return [[cases[i] for i in sorted(part)] for part in np.array_split(order, d.clients)]
    if d.split == "by_site":
        return _one_client_per(cases, d.sites_by, f"{d.sites_by}s", d, where)
    if d.split == "by_group":
        if d.site_skew is None:
            return _one_client_per(cases, "group", "groups", d, where)
        _has_metadata(cases, "group", d, where)
        _enough_cases(cases, d, where)
        parts = mix_groups([c.site["group"] for c in cases], d.clients, d.site_skew,
                           d.split_seed)
        return [[cases[i] for i in part] for part in parts]
    by_id = {c.case_id: c for c in cases}
    seen: dict[str, int] = {}
    groups = []
    for client, ids in enumerate(d.split_lists):
        for case_id in ids:
            if case_id not in by_id:
                raise DataError(f"{where}: data.split_lists[{client}] names case '{case_id}', "
                                f"which is not in the dataset (or was skipped as bad)")
            if case_id in seen:
                raise DataError(f"{where}: case '{case_id}' is listed for clients "
                                f"{seen[case_id]} and {client}")
            seen[case_id] = client
        groups.append([by_id[i] for i in ids])
    return groups


def _enough_cases(cases: list[CaseRef], d: DataConfig, where: str) -> None:
    if len(cases) < d.clients:
        raise DataError(f"{where}: {len(cases)} cases cannot fill data.clients={d.clients}")


def _has_metadata(cases: list[CaseRef], key: str, d: DataConfig, where: str) -> None:
    if not all(key in c.site for c in cases):
        raise DataError(f"{where}: data.split={d.split} needs '{key}' metadata, which "
                        f"data.kind={d.kind} does not have; use random or explicit")


def _one_client_per(cases: list[CaseRef], key: str, plural: str, d: DataConfig,
                    where: str) -> list[list[CaseRef]]:
    """One client per value of ``case.site[key]`` (sorted); data.clients must match."""
    _has_metadata(cases, key, d, where)
    values = sorted({c.site[key] for c in cases})
    if len(values) != d.clients:
        raise DataError(f"{where}: {len(values)} {plural} ({', '.join(values)}) but "
                        f"data.clients={d.clients}; set data.clients={len(values)}")
    return [[c for c in cases if c.site[key] == v] for v in values]


def mix_groups(groups: Sequence[str], clients: int, skew: float,
               seed: int) -> list[list[int]]:
    """Deal patients (their ``groups``) to ``clients`` sites whose group mixes differ.

    Returns the patient indices of every site (sorted). Sites get (nearly) equal sizes, as in
    the random split. Each site draws its group proportions from a Dirichlet of concentration
    ``skew`` over the groups (large: every site alike; small: each site mostly one group).
    The patients are fixed, so the site x group table is the one closest to those proportions
    (iterative proportional fitting) that uses every patient exactly once; a group cannot
    dominate more sites than it has patients for.
    """
    n = len(groups)
    if not 1 <= clients <= n:
        raise ValueError(f"{n} patients cannot fill {clients} sites")
    names = sorted(set(groups))
    of = np.array([names.index(g) for g in groups])
    supply = np.bincount(of, minlength=len(names)).astype(float)
    sizes = np.array([len(p) for p in np.array_split(np.arange(n), clients)], float)
    rng = np.random.default_rng([seed, 4241])
    # Floored: a zero share would forbid a group at a site, and the group totals could become
    # impossible to meet when several sites want the same group.
    mix = np.maximum(rng.dirichlet(np.full(len(names), float(skew)), size=clients), 1e-12)
    target = sizes[:, None] * mix
    for _ in range(1000):          # scale columns to the group totals, rows to the site sizes
        target *= supply / target.sum(0)
        target *= (sizes / target.sum(1))[:, None]
        if np.allclose(target.sum(0), supply, atol=1e-6):
            break
    # Whole patients: repeatedly give the cell furthest below its target one patient, among
    # sites with room and groups with patients left; ends with every patient dealt.
    counts = np.zeros_like(target, dtype=int)
    room, left = sizes.astype(int), supply.astype(int)
    for _ in range(n):
        gap = np.where((room[:, None] > 0) & (left[None, :] > 0), target - counts, -np.inf)
        s, g = np.unravel_index(int(np.argmax(gap)), gap.shape)
        counts[s, g] += 1
        room[s] -= 1
        left[g] -= 1
    queues = [list(rng.permutation(np.flatnonzero(of == g))) for g in range(len(names))]
    return [sorted(int(queues[g].pop()) for g in range(len(names)) for _ in range(counts[s, g]))
            for s in range(clients)]


def site_names(groups: list[list[CaseRef]], d: DataConfig) -> list[str]:
    """A readable name per client: its site for by_site, its group for by_group, its group
    mix for mixed by_group, else 'client<i>'."""
    if d.client_roots or d.split not in ("by_site", "by_group"):
        return [f"client{i}" for i in range(len(groups))]
    if d.split == "by_site":
        return [f"{d.sites_by} {g[0].site[d.sites_by]}" if g else "-" for g in groups]
    if d.site_skew is None:
        return [f"group {g[0].site['group']}" if g else "-" for g in groups]
    names = []
    for i, g in enumerate(groups):
        found = [c.site["group"] for c in g]
        mix = ", ".join(f"{name} {found.count(name)}" for name in sorted(set(found)))
        names.append(f"client{i} ({mix})")
    return names
