"""Pre-training methods: one module each, one line each in the registry below.

A method is plain PyTorch behind :class:`fcl_ray.methods.base.PretrainMethod`; the federation
code drives any of them the same way. ``None`` marks an encoder with no federated pre-training:
random init, and the positive control ``supervised_encoder`` (:mod:`fcl_ray.methods.control`).
"""
from __future__ import annotations

from importlib import import_module

# name -> "module:Class" (imported lazily so config validation stays cheap), or None.
REGISTRY: dict[str, str | None] = {
    "random": None,                                   # random initialisation, no pre-training
    "fcl": "fcl_ray.methods.fcl:FCL",                 # Wu et al. 2021 (this project's method)
    "local_cl": "fcl_ray.methods.local_cl:LocalCL",   # Chaitanya et al. 2020, each site alone
    "fedrotation": "fcl_ray.methods.fedrotation:FedRotation",  # Gidaris et al. 2018 + FedAvg
    "fedsimclr": "fcl_ray.methods.fedsimclr:FedSimCLR",  # Chen et al. 2020 + FedAvg
    "fedswav": "fcl_ray.methods.fedswav:FedSwAV",     # Caron et al. 2020 + FedAvg
    "fedca": "fcl_ray.methods.fedca:FedCA",           # Zhang et al. 2020
    "fcl_no_exchange": "fcl_ray.methods.fcl_ablations:FCLNoExchange",        # ablation
    "fcl_no_matching": "fcl_ray.methods.fcl_ablations:FCLNoMatching",        # ablation
    "fcl_literal_negatives": "fcl_ray.methods.fcl_ablations:FCLLiteralNegatives",  # ablation
    # Positive control: a U-Net encoder trained with labels on patients outside the sites,
    # once per run (fcl_ray/methods/control.py), then fine-tuned like every encoder.
    "supervised_encoder": None,
}
SUPERVISED_ENCODER = "supervised_encoder"


def registered_methods() -> list[str]:
    return list(REGISTRY)


def has_pretraining(name: str) -> bool:
    """False for random init and the positive control (no federated pre-training); imports nothing (the driver asks this, and
    only client processes need the methods' torch and MONAI code)."""
    if name not in REGISTRY:
        raise KeyError(f"unknown method '{name}'; registered methods: {', '.join(REGISTRY)}")
    return REGISTRY[name] is not None


def get_method_class(name: str):
    """The class implementing ``name``, or None for the no-pre-training baseline."""
    if name not in REGISTRY:
        raise KeyError(f"unknown method '{name}'; registered methods: {', '.join(REGISTRY)}")
    target = REGISTRY[name]
    if target is None:
        return None
    module, cls = target.split(":")
    return getattr(import_module(module), cls)
