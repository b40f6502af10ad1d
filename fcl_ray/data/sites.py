"""Which cases belong to which client: ``random``, ``by_site`` or ``explicit``.

Pure and deterministic: every client actor lists the same dataset and computes the same
assignment, then loads only its own cases.

- ``random`` (the paper's): cases sorted by id, shuffled with ``data.split_seed``, dealt into
  ``data.clients`` groups of (nearly) equal size.
- ``by_site``: one client per site (M&Ms vendor or centre, ``data.sites_by``), sites in sorted
  order; ``data.clients`` must equal the number of sites.
- ``explicit``: ``data.split_lists``, one list of case ids per client.
"""
from __future__ import annotations

import numpy as np

from fcl_ray.config import DataConfig
from fcl_ray.data import DataError
from fcl_ray.data.readers.common import CaseRef


def assign_clients(cases: list[CaseRef], d: DataConfig, where: str) -> list[list[CaseRef]]:
    """``d.clients`` lists of cases; ``where`` (the dataset root) names the data in errors."""
    cases = sorted(cases, key=lambda c: c.case_id)
    if d.split == "random":
        if len(cases) < d.clients:
            raise DataError(f"{where}: {len(cases)} cases cannot fill data.clients={d.clients}")
        order = np.random.default_rng([d.split_seed, 7727]).permutation(len(cases))
        return [[cases[i] for i in sorted(part)] for part in np.array_split(order, d.clients)]
    if d.split == "by_site":
        if not all(d.sites_by in c.site for c in cases):
            raise DataError(f"{where}: data.split=by_site needs '{d.sites_by}' metadata, which "
                            f"data.kind={d.kind} does not have; use random or explicit")
        sites = sorted({c.site[d.sites_by] for c in cases})
        if len(sites) != d.clients:
            raise DataError(f"{where}: {len(sites)} {d.sites_by}s ({', '.join(sites)}) but "
                            f"data.clients={d.clients}; set data.clients={len(sites)}")
        return [[c for c in cases if c.site[d.sites_by] == s] for s in sites]
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


def site_names(groups: list[list[CaseRef]], d: DataConfig) -> list[str]:
    """A readable name per client: its site for by_site, else 'client<i>'."""
    if d.split == "by_site" and not d.client_roots:
        return [f"{d.sites_by} {g[0].site[d.sites_by]}" if g else "-" for g in groups]
    return [f"client{i}" for i in range(len(groups))]
