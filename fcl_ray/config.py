"""Typed experiment configuration: the schema (one dataclass per section) and its checks.

Every section is a dataclass; :func:`validate` holds the cross-field checks. Every error names
the offending key (``pretrain.temperature``) and what is allowed, and is raised as
:class:`ConfigError` so the CLI can print one line and exit with code 2. Reading a YAML file
and ``--set a.b=c`` overrides into a Config, and writing one back, is :mod:`fcl_ray.config_io`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal, Optional, Union, get_args

from fcl_ray.errors import FclRayError


class ConfigError(FclRayError):
    """A bad configuration value or key; the message (one line) names the key."""


@dataclass
class ExperimentConfig:
    name: str = "quickstart"
    seed: int = 0
    output_dir: str = "runs/quickstart"


@dataclass
class DataConfig:
    # synthetic: embedded phantom; acdc / mnms / decathlon: a dataset on disk (README, "Use your own data")
    kind: Literal["synthetic", "acdc", "mnms", "decathlon"] = "synthetic"
    root: Optional[str] = None      # real data: the dataset folder (shared by all clients)
    client_roots: list[str] = field(default_factory=list)  # or one folder per client (its own site)
    # cases -> clients (with root): random, by_site (M&Ms), by_group (ACDC pathology), explicit
    split: Literal["random", "by_site", "by_group", "explicit"] = "random"
    sites_by: Literal["vendor", "centre"] = "vendor"  # by_site: the M&Ms metadata column
    # Dirichlet concentration of each site's mix (> 0 and finite; null: off). Large: every site
    # alike; small: each site mostly one kind. Synthetic: phenotype mix per site. ACDC with
    # split=by_group: pathology-group mix over data.clients sites (null: one site per group).
    site_skew: Optional[float] = None
    split_lists: list[list[str]] = field(default_factory=list)  # explicit: case ids per client
    split_seed: int = 0             # random, by_group with site_skew: seed of the deal
    metadata: Optional[str] = None  # M&Ms metadata CSV; None: the one *.csv under root
    classes: list[str] = field(default_factory=list)  # decathlon: label names/values kept ([]: all)
    phases: Literal["ed", "es", "ed_es"] = "ed"  # synthetic/ACDC/M&Ms: labeled frames per case
    extra_frames: int = 0           # synthetic/ACDC/M&Ms: unlabeled frames per case, pre-training only
    cine_frames: Optional[int] = None  # synthetic: frames per cardiac cycle (null: 12)
    # synthetic: which phantom. v2 (fcl_ray/data/phantom_v2.py): anatomy changes over the whole
    # slice, no global-brightness shortcut to position, sites differ in anatomy (phenotypes
    # mixed by site_skew; null: 1.0). v1 (fcl_ray/data/synthetic.py): sites differ by scanner
    # only; the rows committed before issue 28 were made with it.
    phantom: Literal["v1", "v2"] = "v2"
    # synthetic v2: the phenotypes patients are drawn from ([]: all of PHENOTYPES)
    phenotypes: list[str] = field(default_factory=list)
    # real data: what the crop to image_size centres on: the bright blood pools or the image
    # centre (no mask looked at), or the mask's bounding box (looks at test masks too)
    crop: Literal["intensity", "centre", "label"] = "intensity"
    spacing: float = 1.37           # real data: in-plane resampling (mm); slice spacing kept
    orientation: str = "RAS"        # real data: common axis code before resampling
    normalise: Literal["percentile", "zscore"] = "percentile"  # per-volume intensity normalisation
    skip_bad_cases: bool = False    # real data: warn about and skip broken cases instead of failing
    cache: bool = True              # real data: keep preprocessed volumes on disk
    cache_dir: Optional[str] = None  # None: $FCL_RAY_CACHE or ~/.cache/fcl-ray (safe to delete)
    clients: int = 3
    cases_per_client: int = 8       # synthetic: volumes generated per client (site)
    image_size: int = 64            # slices are resampled/cropped to image_size x image_size
    slices_min: int = 8             # synthetic: slices per volume, drawn in [min, max]
    slices_max: int = 12
    partitions: int = 4             # S: contiguous partitions per stack, base to apex
    folds: int = 4                  # K-fold split by patient, per client
    noise: float = 1.0              # synthetic: scales every site's noise level


@dataclass
class ModelConfig:
    # BasicUNet widths: 5 encoder levels + the last decoder level.
    features: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 128, 16])
    projection_hidden: int = 256
    projection_dim: int = 128
    head_norm: Literal["batch", "none"] = "batch"  # projection head: BatchNorm before its ReLU
    amp: Literal["fp32", "bf16"] = "fp32"  # bf16: mixed precision (autocast) in training
    channels_last: bool = False     # NHWC memory layout (faster convolutions on GPUs)


@dataclass
class PretrainConfig:
    methods: list[str] = field(default_factory=lambda: ["fcl", "random"])
    rounds: int = 10
    local_steps: int = 10
    volumes_per_batch: int = 4      # m: a batch is m volumes x one slice per partition
    # What the m are: distinct volumes (volume), so two frames (ED/ES/extra cine frames) of one
    # patient can meet as "other volumes", or distinct patients with one random frame each
    # (patient). Either draws with replacement when m exceeds the volumes or patients there are.
    batch_by: Literal["volume", "patient"] = "volume"
    lr: float = 1e-3
    # Per-method learning rates chosen by a tuning sweep (method -> lr); others use pretrain.lr.
    lr_per_method: dict[str, float] = field(default_factory=dict)
    temperature: float = 0.1
    momentum: float = 0.99          # EMA factor of the momentum encoder (FCL, FedCA) ...
    # ... at every step (constant), or rising from `momentum` to `momentum_end` along a half
    # cosine over a client's rounds x local_steps steps (cosine, BYOL's schedule: a fast
    # momentum encoder early, a steady one late). The position follows the federation's round.
    momentum_schedule: Literal["constant", "cosine"] = "constant"
    momentum_end: float = 0.999     # cosine: the factor at the last step, in (0, 1)
    # Local bank capacity per partition; auto = about the slices per partition this client holds,
    # so the sampled dictionary is not mostly copies of the same few slices.
    bank_size: Union[int, Literal["auto"]] = "auto"
    sample_size: int = 512          # K: features drawn from local + remote banks per step
    exchange_size: int = 256        # features each client shares per round (a random subset)
    # Remote features each client receives per round at most, drawn per partition from the
    # pool of the other clients' shared features; null: all of them (grows with the clients).
    remote_sample: Optional[int] = None
    feature_noise: float = 0.0      # Gaussian noise (std) added to shared features, then re-normalised
    remote_weight: float = 1.0      # lambda of the structural-matching (remote) loss
    negatives: Literal["other_partitions", "all"] = "other_partitions"  # rule for bank/remote rows
    # In-batch negatives computed at this step (losses.fcl_losses): the batch's momentum keys of
    # other partitions (keys), also the other queries (keys_and_queries), or none (stale bank and
    # remote rows only: the formulation that collapses, kept for the ablation).
    fresh_negatives: Literal["keys", "keys_and_queries", "none"] = "keys"
    # Structural matching positives Lambda(q): same-partition features of the *other clients*
    # (remote, the paper's meaning) or of the local bank too (bank_and_remote, the old reading).
    matching: Literal["remote", "bank_and_remote"] = "remote"
    # Contrastive views (augment.VIEW_STYLES): shrink = crop-resize that may shrink the slice
    # inside a border; zoom / zoom_mild = crop part of the slice and enlarge it (+ flips), as
    # Chaitanya et al. On the phantom zooming lowered the partition gap FCL learns (0.11 shrink,
    # 0.08 zoom_mild, 0.02 zoom after 150 steps, experiments/results/README.md), so shrink stays.
    views: Literal["shrink", "zoom_mild", "zoom"] = "shrink"
    # Representation health, every round (fcl_ray/methods/health.py): warn or stop when collapsed, i.e.
    # mean pairwise cosine > collapse_cosine or effective rank < collapse_rank.
    collapse_guard: Literal["warn", "stop", "off"] = "warn"
    collapse_cosine: float = 0.99   # measured: collapsed runs 0.9998+, healthy 0.84-0.95
    collapse_rank: float = 1.5      # below: the embeddings lie on about a line
    # Measure health every k rounds (and at the last): with health_source=probe each measurement
    # is a forward pass over the client's probe slices, ~40 % of a 2-step round
    # (benchmarks/README.md); with steps it costs a pass of the projection head only.
    health_every: int = 1
    # Where the health figures are read: "steps", the encoder features of the round's last
    # query batch (m x S augmented slices), computed by the step anyway, through the projection
    # head alone; or "probe", a forward pass of its own over 64 fixed slices of the client (no
    # augmentation). Both run the head in eval mode. fedrotation always uses the probe.
    health_source: Literal["steps", "probe"] = "steps"
    aggregate_momentum: bool = True  # FedAvg the momentum encoder too (else keep it local)
    probe_every: int = 0            # every k rounds: quick fine-tune Dice on a validation case
    probe_steps: int = 30           # (0 = off); the cheap quality signal Tune schedulers use


@dataclass
class FinetuneConfig:
    modes: list[str] = field(default_factory=lambda: ["local"])
    n_labeled: list[int] = field(default_factory=lambda: [1])
    folds: list[int] = field(default_factory=lambda: [0])
    # How long fine-tuning runs. "steps": a fixed budget (steps; rounds x local_steps).
    # "converge": per client, validation_patients patients of the training pool (never the
    # test fold, never among the N labeled) are scored every eval_every steps; training stops
    # when their Dice has not improved for `patience` evaluations, or at max_steps, and the
    # best weights are restored (federated: the global model's mean validation Dice over
    # clients decides, every ceil(eval_every / local_steps) rounds).
    budget: Literal["steps", "converge"] = "steps"
    validation_patients: int = 1
    eval_every: int = 20
    patience: int = 5
    max_steps: int = 2000
    steps: int = 150                # local mode: optimiser steps per client
    rounds: int = 10                # federated mode: FedAvg rounds ...
    local_steps: int = 15           # ... of this many steps each
    batch_size: int = 8
    lr: float = 1e-3
    lr_schedule: Literal["constant", "cosine"] = "constant"  # cosine: decays to 0 over the steps
    # Protecting a pre-trained encoder: the U-Net encoder's parameters (models.ENCODER_PREFIXES)
    # learn at lr x encoder_lr_scale (>= 0; 0 keeps them fixed) and not at all during the first
    # encoder_warmup_steps optimiser steps of a setting (federated: counted across rounds).
    # Every row gets it, random init, the upper bound and each method alike: choose it once.
    encoder_lr_scale: float = 1.0
    encoder_warmup_steps: int = 0
    upper_bound: bool = False       # also fine-tune from random init with every training label
    concurrency: int = 1            # local fine-tunes run at once inside each client actor
    # Fine-tune from this encoder instead of pre-training: an MLflow model URI,
    # models:/<name>/<version or @alias> or runs:/<run id>/<path> (see README, "Results dashboard").
    encoder: Optional[str] = None


# federation.strategy values; fcl_ray/core/strategy.py REGISTRY maps each to its class.
StrategyName = Literal["fedavg", "fedprox"]
STRATEGIES = get_args(StrategyName)


@dataclass
class FederationConfig:
    address: Optional[str] = None   # Ray address; None starts a local Ray
    num_cpus_per_client: Union[float, Literal["auto"]] = "auto"
    num_gpus_per_client: float = 0.0
    # Pin client i to a node: custom Ray resources per client, e.g. [{site_a: 1}, {site_b: 1}]
    # (each worker node started with `ray start --resources '{"site_a": 1}'`). [] = anywhere.
    client_resources: list[dict[str, float]] = field(default_factory=list)
    # ... or by node label: [{site: a}, {site: b}] (`ray start --labels site=a`); [] = anywhere.
    client_labels: list[dict[str, str]] = field(default_factory=list)
    # Fault tolerance (see fcl_ray/federation/coordinator.py).
    min_clients: int = 1            # a round counts if at least this many clients answered
    # Partial participation in pre-training rounds: a count (>= 1) or a fraction in (0, 1] of
    # data.clients (rounded up) sampled per round from a seeded, checkpointed generator; the
    # others do no work that round. null: all clients. min_clients counts against the sampled
    # clients. Federated fine-tuning rounds always use all clients.
    clients_per_round: Union[int, float, None] = None
    round_timeout_s: Optional[float] = None  # per-round deadline; late updates are dropped
    round_retries: int = 2          # below min_clients: retry the round this often, then stop
    max_restarts: int = 3           # Ray restarts a dead client actor this often
    checkpoint_every: int = 1       # rounds between checkpoints (0 = off)
    checkpoint_dir: Optional[str] = None  # local path or fsspec URI; None: <output_dir>/checkpoints
    # The clients are reserved as one placement group before any actor starts; if the cluster
    # cannot place it within this many seconds the run stops (exit 2) naming what was asked.
    placement_timeout_s: float = 60.0
    # Logical clients per client actor process: 1 (the design) gives every client its own
    # actor; k > 1 hosts k clients (own data, networks, optimiser, bank, RNG) per actor, run
    # one after another in a round: the same results with fewer processes, to simulate many
    # clients on one machine (one per site is what a real federation uses).
    clients_per_actor: int = 1
    # How a round's updates are combined (fcl_ray/core/strategy.py): fedavg, or fedprox (FedAvg
    # with mu/2 * ||w - w_global||^2 added to every client's local objective; mu below).
    strategy: StrategyName = "fedavg"
    proximal_mu: float = 0.0        # fedprox's mu (> 0); must stay 0 with fedavg


@dataclass
class FaultsConfig:
    """Deliberate faults for drills and tests (chaos engineering); all off by default."""
    delay_seconds: dict[int, float] = field(default_factory=dict)  # client id -> extra s/round


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: Optional[str] = None       # None: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db
    experiment: Optional[str] = None  # MLflow experiment name; None: experiment.name
    # Register each pre-trained encoder in the model registry as <register_as>-<method>
    # (one new version per fold); None: log the encoders as models without registering them.
    register_as: Optional[str] = None


@dataclass
class ControlConfig:
    """The positive control ``supervised_encoder`` (a ``pretrain.methods`` name): the encoder
    of a U-Net trained with labels on patients outside the benchmark's sites, fine-tuned like
    every pre-trained encoder. It shows whether the protocol can reward a good encoder."""
    sites: int = 4                  # synthetic: phantom sites of its training patients ...
    cases_per_site: int = 12        # ... and patients per site (every labeled frame is used)
    steps: int = 1500               # optimiser steps (Dice-CE, augmented batches)
    lr: float = 1e-3
    batch_size: int = 8
    # Its patients are drawn from seed experiment.seed + seed_offset: other patients than
    # the benchmark's (which use experiment.seed), from the same phantom.
    seed_offset: int = 1_000_003
    # An MLflow model URI (as finetune.encoder) to use instead of training one; required for
    # data on disk (data.kind other than synthetic), which has no patients outside its sites.
    encoder: Optional[str] = None


@dataclass
class ProbesConfig:
    """Frozen-encoder probes (fcl_ray/methods/probes.py): after each encoder is ready, per
    fold, rows in <output_dir>/probes.csv."""
    enabled: bool = False
    # The encoders to probe: names of pretrain.methods, or random (random init, always there);
    # [] = every encoder the run has.
    methods: list[str] = field(default_factory=list)
    steps: int = 200                # segmentation probe: steps of its 1x1 convolution
    n_labeled: int = 1              # segmentation probe: labeled patients per client


@dataclass
class Config:
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    probes: ProbesConfig = field(default_factory=ProbesConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    control: ControlConfig = field(default_factory=ControlConfig)


FINETUNE_MODES = ("local", "federated")
ENCODER_URI = re.compile(r"^(models:/[^/@\s]+(/[^/\s]+|@[^/\s]+)?|runs:/[0-9a-zA-Z_-]+/\S+)$")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# ----------------------------------------------------------------------------- validation
def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"config key '{key}': {message}")


def participants_per_round(clients: int, clients_per_round: Union[int, float, None]) -> int:
    """What federation.clients_per_round means: all clients (None), a count, or a fraction of
    ``clients`` rounded up (0.5 of 3 clients is 2), never fewer than 1."""
    if clients_per_round is None:
        return clients
    if isinstance(clients_per_round, float):   # - 1e-9: 0.3 * 10 is 3.0000000000000004
        return max(1, math.ceil(clients_per_round * clients - 1e-9))
    return clients_per_round


def _check_clients_per_round(value: Union[int, float, None], clients: int,
                             min_clients: int) -> None:
    """federation.clients_per_round: null, a count in [min_clients, clients] or a fraction in
    (0, 1] whose share of the clients (rounded up) is at least min_clients."""
    key, allowed = "federation.clients_per_round", (
        f"null (all clients), an integer in [federation.min_clients={min_clients}, "
        f"data.clients={clients}] or a fraction in (0, 1]")
    if value is None:
        return
    if isinstance(value, float):
        _check(0 < value <= 1, key, f"must be {allowed}, got {value}")
        count = participants_per_round(clients, value)
        _check(count >= min_clients, key, f"must be {allowed}; {value} of {clients} clients is "
               f"{count}, below federation.min_clients={min_clients}")
    else:
        _check(min_clients <= value <= clients, key, f"must be {allowed}, got {value}")


def _check_strategy(fed: FederationConfig) -> None:
    """federation.proximal_mu: > 0 with fedprox, 0 otherwise (a mu that nothing reads)."""
    mu = fed.proximal_mu
    if fed.strategy == "fedprox":
        _check(math.isfinite(mu) and mu > 0, "federation.proximal_mu",
               f"must be a number > 0 with federation.strategy=fedprox (e.g. 0.01), got {mu}")
    else:
        _check(mu == 0, "federation.proximal_mu",
               f"is only read with federation.strategy=fedprox; got {mu} with "
               f"federation.strategy={fed.strategy}")


def _check_encoder_uri(uri: Optional[str], key: str) -> None:
    _check(uri is None or bool(ENCODER_URI.match(uri)), key,
           f"expected an MLflow model URI: models:/<name>/<version>, models:/<name>@<alias>, "
           f"models:/<logged model id> or runs:/<run id>/<path>; got {uri!r}")


def _check_control(cfg: Config) -> None:
    """The ``control`` section (the positive control ``supervised_encoder``)."""
    from fcl_ray.methods import SUPERVISED_ENCODER

    c = cfg.control
    for key in ("sites", "cases_per_site", "steps", "batch_size", "seed_offset"):
        _check(getattr(c, key) >= 1, f"control.{key}", f"must be at least 1, got {getattr(c, key)}")
    _check(math.isfinite(c.lr) and c.lr > 0, "control.lr", f"must be finite and > 0, got {c.lr}")
    _check_encoder_uri(c.encoder, "control.encoder")
    asked = SUPERVISED_ENCODER in cfg.pretrain.methods
    _check(not asked or cfg.data.kind == "synthetic" or c.encoder is not None, "control.encoder",
           f"pretrain.methods asks for {SUPERVISED_ENCODER} on data.kind={cfg.data.kind}, which "
           f"has no patients outside its sites to train it on; set control.encoder to an "
           f"MLflow model URI of an encoder trained with labels elsewhere")


RANDOM_INIT = "random"   # the no-pre-training baseline: its encoder is drawn from the seed


def probeable_methods(cfg: Config) -> list[str]:
    """The encoders ``probes.methods`` may name: random init (always there, drawn from the
    seed) and every method of ``pretrain.methods``."""
    return list(dict.fromkeys([RANDOM_INIT, *cfg.pretrain.methods]))


def probe_methods(cfg: Config) -> list[str]:
    """The encoders a run probes: ``probes.methods``, or ([]) every probeable one."""
    return list(cfg.probes.methods) or probeable_methods(cfg)


def _training_cases(d: DataConfig) -> int:
    """Synthetic data: the training cases of a client (its cases minus the largest test fold)."""
    return d.cases_per_client - -(-d.cases_per_client // d.folds)


def _check_probes(cfg: Config) -> None:
    """probes.*: encoders the run has, a positive step count, N within the training cases."""
    pr, d = cfg.probes, cfg.data
    allowed = probeable_methods(cfg)
    for name in pr.methods:
        _check(name in allowed, "probes.methods",
               f"'{name}' is not an encoder of this run; allowed: {', '.join(allowed)} "
               f"(random init and pretrain.methods)")
    _check(pr.steps >= 1, "probes.steps", f"must be at least 1, got {pr.steps}")
    _check(pr.n_labeled >= 1, "probes.n_labeled", f"must be at least 1, got {pr.n_labeled}")
    train_cases = _training_cases(d)
    _check(d.kind != "synthetic" or pr.n_labeled <= train_cases, "probes.n_labeled",
           f"{pr.n_labeled} labeled patients asked, but a client has only {train_cases} "
           f"training cases ({d.cases_per_client} cases minus a test fold of "
           f"data.folds={d.folds})")
    _check(not pr.enabled or d.clients >= 2, "probes.enabled",
           f"the cross-site probes need data.clients >= 2, got {d.clients}")


def validate(cfg: Config) -> Config:
    """Cross-field checks that types alone cannot express."""
    from fcl_ray.methods import registered_methods  # late: methods import models/torch

    d, p, f = cfg.data, cfg.pretrain, cfg.finetune
    _check(d.clients >= 1, "data.clients", f"must be at least 1, got {d.clients}")
    _check(d.image_size >= 16 and d.image_size % 16 == 0, "data.image_size",
           f"must be a multiple of 16 (four 2x poolings), got {d.image_size}")
    _check(d.partitions >= 1, "data.partitions", f"must be at least 1, got {d.partitions}")
    _check(1 <= d.slices_min <= d.slices_max, "data.slices_min",
           f"must be in [1, data.slices_max={d.slices_max}], got {d.slices_min}")
    synthetic = d.kind == "synthetic"
    # Real datasets: slice and case counts come from the files; the loader checks them.
    _check(not synthetic or d.partitions <= d.slices_min, "data.partitions",
           f"{d.partitions} partitions need at least that many slices per volume, "
           f"but volumes can have as few as data.slices_min={d.slices_min}")
    _check(d.folds >= 2, "data.folds", f"must be at least 2, got {d.folds}")
    _check(not synthetic or d.cases_per_client >= d.folds, "data.cases_per_client",
           f"{d.cases_per_client} cases cannot fill data.folds={d.folds} test folds")
    _check(d.noise >= 0, "data.noise", f"must be >= 0, got {d.noise}")
    _check(d.extra_frames >= 0, "data.extra_frames", f"must be >= 0, got {d.extra_frames}")
    _check(d.site_skew is None or (math.isfinite(d.site_skew) and d.site_skew > 0),
           "data.site_skew", f"must be null or a finite number > 0 (a Dirichlet "
           f"concentration), got {d.site_skew}")
    _check(d.site_skew is None or synthetic or d.split == "by_group", "data.site_skew",
           f"with data on disk it mixes pathology groups, so it needs data.split=by_group "
           f"(got data.split={d.split}); leave it null otherwise")
    _check(synthetic or d.phantom == "v2", "data.phantom",
           f"only for data.kind=synthetic, not data.kind={d.kind}")
    if d.phenotypes:
        from fcl_ray.data.phantom_v2 import PHENOTYPES  # numpy only

        for name in d.phenotypes:
            _check(name in PHENOTYPES, "data.phenotypes",
                   f"unknown phenotype {name!r}; allowed: {', '.join(PHENOTYPES)}")
        _check(synthetic and d.phantom == "v2", "data.phenotypes",
               "only for data.kind=synthetic with data.phantom=v2")
    _check(d.site_skew is None or not synthetic or d.phantom == "v2", "data.site_skew",
           "the v1 phantom has no phenotypes to mix; use data.phantom=v2 or leave it null")
    _check(d.cine_frames is None or synthetic, "data.cine_frames",
           f"only for data.kind=synthetic (the phantom's cycle length), not data.kind={d.kind} "
           f"(acdc and mnms cines have their own frame count, decathlon has no frames)")
    if synthetic:
        from fcl_ray.data.synthetic import CINE_FRAMES  # numpy/scipy only

        cycle = CINE_FRAMES if d.cine_frames is None else d.cine_frames
        _check(cycle >= 2, "data.cine_frames", f"must be at least 2 (ED and ES), got {cycle}")
        _check(d.extra_frames <= cycle - 2, "data.extra_frames",
               f"{d.extra_frames} unlabeled frames asked, but a {cycle}-frame cycle "
               f"(data.cine_frames) has only {cycle - 2} besides ED and ES")
    if d.kind == "decathlon":   # one 3D volume per case: no cine
        _check(d.extra_frames == 0, "data.extra_frames",
               f"data.kind=decathlon has no cine frames; must be 0, got {d.extra_frames}")
        _check(d.phases == "ed", "data.phases",
               f"data.kind=decathlon has one frame per case, no ED/ES; leave it at 'ed', "
               f"got '{d.phases}'")
    if not synthetic:
        _check(bool(d.root) != bool(d.client_roots), "data.root",
               f"data.kind={d.kind} needs exactly one of data.root (one shared folder) or "
               f"data.client_roots (one folder per client)")
        _check(not d.client_roots or len(d.client_roots) == d.clients, "data.client_roots",
               f"{len(d.client_roots)} folders given for data.clients={d.clients} clients")
        _check(d.split != "explicit" or len(d.split_lists) == d.clients, "data.split_lists",
               f"split=explicit needs one list of case ids per client ({d.clients}), "
               f"got {len(d.split_lists)}")
        _check(d.spacing > 0, "data.spacing", f"must be > 0 (mm), got {d.spacing}")
        axes = [set("LR"), set("PA"), set("IS")]
        _check(len(d.orientation) == 3 and all(
            sum(c in ax for c in d.orientation) == 1 for ax in axes), "data.orientation",
            f"must be 3 letters, one of each pair L/R, P/A, I/S (e.g. RAS), got {d.orientation!r}")
    _check(len(cfg.model.features) == 6, "model.features",
           f"needs 6 widths (5 encoder levels + last decoder level), got {cfg.model.features}")
    known = registered_methods()
    for name in p.methods:
        _check(name in known, "pretrain.methods",
               f"unknown method '{name}'; registered methods: {', '.join(known)}")
    _check(len(p.methods) > 0, "pretrain.methods", "must name at least one method")
    _check(p.bank_size == "auto" or p.bank_size >= 1, "pretrain.bank_size",
           f"must be 'auto' or at least 1, got {p.bank_size}")
    _check(0 < p.collapse_cosine <= 1, "pretrain.collapse_cosine",
           f"must be in (0, 1], got {p.collapse_cosine}")
    _check(p.collapse_rank >= 1, "pretrain.collapse_rank",
           f"must be >= 1 (effective rank of the embeddings), got {p.collapse_rank}")
    for key in ("rounds", "local_steps", "volumes_per_batch", "sample_size", "exchange_size",
                "health_every"):
        _check(getattr(p, key) >= 1, f"pretrain.{key}", f"must be at least 1, got {getattr(p, key)}")
    _check(p.temperature > 0, "pretrain.temperature", f"must be > 0, got {p.temperature}")
    _check(0 <= p.momentum < 1, "pretrain.momentum", f"must be in [0, 1), got {p.momentum}")
    _check(math.isfinite(p.momentum_end) and 0 < p.momentum_end < 1, "pretrain.momentum_end",
           f"must be in (0, 1), got {p.momentum_end}")
    _check(p.momentum_schedule != "cosine" or p.momentum_end >= p.momentum, "pretrain.momentum_end",
           f"momentum_schedule=cosine rises from pretrain.momentum={p.momentum}, so it must be "
           f">= that, got {p.momentum_end}")
    _check(p.remote_weight >= 0, "pretrain.remote_weight", f"must be >= 0, got {p.remote_weight}")
    _check(p.lr > 0, "pretrain.lr", f"must be > 0, got {p.lr}")
    for name, lr in p.lr_per_method.items():
        _check(name in registered_methods() and lr > 0, "pretrain.lr_per_method",
               f"'{name}: {lr}' needs a registered method and lr > 0")
    _check(p.probe_every >= 0, "pretrain.probe_every", f"must be >= 0, got {p.probe_every}")
    _check(p.probe_steps >= 1, "pretrain.probe_steps", f"must be at least 1, got {p.probe_steps}")
    for mode in f.modes:
        _check(mode in FINETUNE_MODES, "finetune.modes",
               f"unknown mode '{mode}'; allowed: {', '.join(FINETUNE_MODES)}")
    train_cases = _training_cases(d)
    for n in f.n_labeled:
        _check(n >= 1, "finetune.n_labeled", f"must be at least 1, got {n}")
        # N counts labeled patients (a patient's ED and ES frames are one budget unit).
        _check(not synthetic or n <= train_cases, "finetune.n_labeled",
               f"{n} labeled volumes asked, but a client has only {train_cases} training cases "
               f"({d.cases_per_client} cases minus a test fold of data.folds={d.folds})")
    for fold in f.folds:
        _check(0 <= fold < d.folds, "finetune.folds", f"fold {fold} not in [0, {d.folds - 1}]")
    for key in ("steps", "rounds", "local_steps", "batch_size", "concurrency", "patience",
                "max_steps", "eval_every", "validation_patients"):
        _check(getattr(f, key) >= 1, f"finetune.{key}", f"must be at least 1, got {getattr(f, key)}")
    _check(math.isfinite(f.encoder_lr_scale) and f.encoder_lr_scale >= 0,
           "finetune.encoder_lr_scale", f"must be a finite number >= 0, got {f.encoder_lr_scale}")
    _check(f.encoder_warmup_steps >= 0, "finetune.encoder_warmup_steps",
           f"must be >= 0 (optimiser steps), got {f.encoder_warmup_steps}")
    if f.budget == "converge" and synthetic:
        # The validation patients come out of the training pool, beside the N labeled ones.
        left = train_cases - max(f.n_labeled)
        _check(left >= 1, "finetune.budget",
               f"converge needs a training patient to validate on, but N={max(f.n_labeled)} "
               f"takes all {train_cases} training patients of a client; lower "
               f"finetune.n_labeled or use finetune.budget=steps")
        _check(f.validation_patients <= left, "finetune.validation_patients",
               f"must be at most {left} (the {train_cases} training patients of a client minus "
               f"N={max(f.n_labeled)}), got {f.validation_patients}")
    _check_encoder_uri(f.encoder, "finetune.encoder")
    _check_control(cfg)
    t = cfg.tracking
    if t.register_as is not None:
        _check(bool(MODEL_NAME.match(t.register_as)), "tracking.register_as",
               f"a registered model name: letters, digits, '.', '_', '-' (starting with a letter "
               f"or digit), got {t.register_as!r}")
        _check(t.enabled, "tracking.register_as", "needs tracking.enabled=true")
    cpus = cfg.federation.num_cpus_per_client
    _check(cpus == "auto" or cpus > 0, "federation.num_cpus_per_client",
           f"must be 'auto' or > 0, got {cpus}")
    _check(not cfg.federation.client_resources
           or len(cfg.federation.client_resources) == d.clients, "federation.client_resources",
           f"needs one entry per client ({d.clients}), got {len(cfg.federation.client_resources)}")
    _check(not cfg.federation.client_labels
           or len(cfg.federation.client_labels) == d.clients, "federation.client_labels",
           f"needs one entry per client ({d.clients}), got {len(cfg.federation.client_labels)}")
    fed = cfg.federation
    _check(1 <= fed.min_clients <= d.clients, "federation.min_clients",
           f"must be in [1, data.clients={d.clients}], got {fed.min_clients}")
    _check_clients_per_round(fed.clients_per_round, d.clients, fed.min_clients)
    _check(fed.round_timeout_s is None or fed.round_timeout_s > 0, "federation.round_timeout_s",
           f"must be > 0 or null, got {fed.round_timeout_s}")
    _check(1 <= fed.clients_per_actor <= d.clients, "federation.clients_per_actor",
           f"must be in [1, data.clients={d.clients}], got {fed.clients_per_actor}")
    _check(fed.clients_per_actor == 1 or not (fed.client_resources or fed.client_labels),
           "federation.clients_per_actor", "must be 1 when clients are pinned to sites "
           "(federation.client_resources / client_labels): a site's clients run on its own node")
    _check(fed.placement_timeout_s > 0, "federation.placement_timeout_s",
           f"must be > 0 seconds, got {fed.placement_timeout_s}")
    _check_strategy(fed)
    for key in ("round_retries", "max_restarts", "checkpoint_every"):
        _check(getattr(fed, key) >= 0, f"federation.{key}", f"must be >= 0, got {getattr(fed, key)}")
    _check(p.feature_noise >= 0, "pretrain.feature_noise", f"must be >= 0, got {p.feature_noise}")
    _check(p.remote_sample is None or p.remote_sample >= 1, "pretrain.remote_sample",
           f"must be null (all remote features) or an integer >= 1, got {p.remote_sample}")
    for client, delay in cfg.faults.delay_seconds.items():
        _check(0 <= client < d.clients and delay >= 0, "faults.delay_seconds",
               f"client {client} / delay {delay}: needs a client id < {d.clients} and delay >= 0")
    _check(cfg.federation.num_gpus_per_client >= 0, "federation.num_gpus_per_client",
           f"must be >= 0, got {cfg.federation.num_gpus_per_client}")
    _check_probes(cfg)
    return cfg
