"""Where a run's numbers were computed: CPU, its vector instructions, torch build, threads.

The same config and seed give bitwise-equal rows on one machine, but rows made on machines
whose CPUs or torch builds differ can move by a few hundredths of Dice at one setting (float
sums in another order; measured in experiments/results/v2/README.md, "Pre-training 2400
steps"). So every run records, in ``<output_dir>/machine.json``, the machine of each client
at each start (a fresh run or a resume), warns when a resume continues on a different one, and
``fcl-ray choose`` warns when the candidates it pairs were made on different ones.

Plain Python: no Ray, no MLflow; torch only where a machine is described (the readers, which
``fcl-ray choose`` uses, import none).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Iterable, Optional

MACHINE_FILE = "machine.json"
# What moves floating point: the CPU and the instructions torch dispatches to on it, the
# torch build (its CUDA version), the GPU and the intra-op threads (how sums are split).
NUMERICS_FIELDS = ("cpu", "cpu_capability", "torch", "cuda", "gpu", "torch_threads")


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _cpu_capability() -> str:
    import torch

    try:   # the SIMD level torch's CPU kernels dispatch to (AVX2, AVX512, ...)
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return "unknown"


def describe_machine(device="cpu") -> dict:
    """This process's machine as JSON-ready fields: the numerics fields, then the rest."""
    import torch

    device = torch.device(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"cpu": cpu_model(), "cpu_capability": _cpu_capability(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "gpu": gpu,
            "torch_threads": torch.get_num_threads(), "device": str(device),
            "logical_cpus": os.cpu_count(), "os": platform.platform(),
            "python": platform.python_version()}


def numerics(machine: dict) -> dict:
    """The fields of ``machine`` that change floating point (:data:`NUMERICS_FIELDS`)."""
    return {key: machine.get(key) for key in NUMERICS_FIELDS}


def group_clients(client_machines: dict[int, dict]) -> list[dict]:
    """``{client: machine}`` as one entry per distinct machine, with the clients on it."""
    groups: list[dict] = []
    for client in sorted(client_machines):
        machine = client_machines[client]
        for group in groups:
            if {k: v for k, v in group.items() if k != "clients"} == machine:
                group["clients"].append(client)
                break
        else:
            groups.append({"clients": [client], **machine})
    return groups


def _describe(setup: dict) -> str:
    """A setup in words: CPU (SIMD level), torch, GPU, threads."""
    return (f"{setup['cpu']} ({setup['cpu_capability']}), torch {setup['torch']}"
            + (f", {setup['gpu']}" if setup.get("gpu") else "")
            + f", {setup['torch_threads']} thread(s)")


def summary(groups: list[dict]) -> str:
    """One line: how many machine setups, each one described, with its clients."""
    parts = [f"{_describe(g)}: clients {', '.join(map(str, g['clients']))}" for g in groups]
    return f"clients on {len(groups)} machine setup(s): " + "; ".join(parts)


def read_starts(folder: str | Path) -> list[dict]:
    """The starts a run folder's machine.json records (oldest first); [] when it has none or
    it cannot be read (a folder from before machines were recorded)."""
    try:
        starts = json.loads((Path(folder) / MACHINE_FILE).read_text())
    except (OSError, ValueError):
        return []
    return starts if isinstance(starts, list) else []


def _setups(starts: list[dict]) -> list[dict]:
    """The distinct numerics of these starts' machines, in the order first seen."""
    setups: list[dict] = []
    for start in starts:
        for group in start.get("machines", []):
            if numerics(group) not in setups:
                setups.append(numerics(group))
    return setups


def _same(setups: list[dict], others: list[dict]) -> bool:
    return all(s in others for s in setups) and all(s in setups for s in others)


def record_start(folder: str | Path, client_machines: dict[int, dict],
                 resumed: bool) -> tuple[list[dict], Optional[str]]:
    """Append this start (time, resumed or not, each client's machine) to the folder's
    machine.json (a fresh run starts the file again). Returns the machine groups and a
    warning when a resume runs where the last start's numerics differ, else None."""
    path = Path(folder) / MACHINE_FILE
    earlier = read_starts(folder) if resumed else []
    groups = group_clients(client_machines)
    start = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "resumed": resumed, "machines": groups}
    path.parent.mkdir(parents=True, exist_ok=True)   # a Flower study makes it after connecting
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(earlier + [start], indent=1) + "\n")
    os.replace(tmp, path)
    warning = None
    if earlier and not _same(_setups(earlier[-1:]), _setups([start])):
        before = "; ".join(map(_describe, _setups(earlier[-1:])))
        warning = (f"this resume runs on another machine setup than the start of "
                   f"{earlier[-1].get('started', '?')} ({before}): its new rows are not bitwise "
                   f"comparable with the earlier ones ({MACHINE_FILE})")
    return groups, warning


def different_machines(folders: Iterable[str | Path]) -> Optional[str]:
    """A warning naming two run folders whose recorded machine setups differ (every start of
    each counts), else None; folders without machine.json are not compared."""
    seen: list[tuple[Path, list[dict]]] = []
    for folder in folders:
        setups = _setups(read_starts(folder))
        if not setups:
            continue
        for other, other_setups in seen:
            if not _same(setups, other_setups):
                return (f"'{other}' was made on {'; '.join(map(_describe, other_setups))} but "
                        f"'{folder}' on {'; '.join(map(_describe, setups))}: rows of different "
                        f"machines are not bitwise comparable, and paired differences across "
                        f"them mix machine noise into the effect")
        seen.append((Path(folder), setups))
    return None
