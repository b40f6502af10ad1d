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
    # synthetic: embedded phantom; acdc / mnms / decathlon: a dataset on disk (docs/data.md)
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
    # decathlon: label names/values kept, in this order ([]: all of dataset.json's). The U-Net's
    # outputs and the dice_<name> columns follow (fcl_ray/data/labels.py); other kinds: cardiac.
    classes: list[str] = field(default_factory=list)
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
    # synthetic v2: [low, high] of the per-patient field of view (> 1: anatomy drawn smaller;
    # []: [0.75, 1.3]). A wider range makes one labeled patient cover less of the population.
    field_of_view: list[float] = field(default_factory=list)
    # synthetic v2: the strongest motion ghosts a patient has (copies of the heart along the
    # phase-encode axis, each this fraction of its signal); per patient uniform in [0, this]
    # (phantom_v2.draw_ghosting).
    motion_ghosts: float = 0.0
    # synthetic v2: standard deviation of a slice's receive gain around the patient's slope
    # along the stack (separate breath-holds, coil distance); null: 0.08.
    slice_gain_jitter: Optional[float] = None
    # synthetic v2: how far a patient's ventricular outlines depart from the phenotype's
    # ellipses (irregular wall thickness, RV outline and insertion; phantom_v2.draw_shape);
    # 0: none, as every committed row.
    shape_variation: float = 0.0
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
    # Salts each client's pre-training generator (batches, views, exchanged rows) and nothing
    # else: data, splits and initial weights stay. 0: the experiment seed alone (as before).
    # Two runs differing only here measure how much the results move by chance (the
    # chaos drill's floor, docs/reliability.md).
    sampler_seed: int = 0
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
    # What the local bank holds before the first step: every slice's key from the initial
    # (random) momentum network (filled, so round 1's dictionary is never empty), or nothing
    # (empty: the bank fills with the steps' own keys; round 1's negatives are the batch's
    # fresh keys and whatever is already pushed). An issue 28 fidelity ablation.
    bank_start: Literal["filled", "empty"] = "filled"
    sample_size: int = 512          # K: features drawn from local + remote banks per step
    exchange_size: int = 256        # features each client shares per round (a random subset)
    # Remote features each client receives per round at most, drawn per partition from the
    # pool of the other clients' shared features; null: all of them (grows with the clients).
    remote_sample: Optional[int] = None
    # Gaussian noise (std) added to shared features, then re-normalised. UNACCOUNTED: no
    # sensitivity bound, no epsilon; for a guarantee use the privacy section instead.
    feature_noise: float = 0.0
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
    # The fine-tuning loss: Dice + cross-entropy (MONAI DiceCELoss), or cross-entropy alone,
    # the references' fine-tuning loss (Zeng et al.; docs/method.md). Every row gets it.
    loss: Literal["dice_ce", "ce"] = "dice_ce"
    # The fine-tuning augmentation (methods/augment.py SEGMENTATION_AUGMENTS): standard (rotation
    # +-15 degrees, zoom 0.8-1.1), strong (flips, any rotation, zoom 0.7-1.3, as the references)
    # or none. Every row gets it.
    augment: Literal["standard", "strong", "none"] = "standard"
    # Protecting a pre-trained encoder: the U-Net encoder's parameters (models.ENCODER_PREFIXES)
    # learn at lr x encoder_lr_scale (>= 0; 0 keeps them fixed) and not at all during the first
    # encoder_warmup_steps optimiser steps of a setting (federated: counted across rounds).
    # Every row gets it, random init, the upper bound and each method alike: choose it once.
    encoder_lr_scale: float = 1.0
    encoder_warmup_steps: int = 0
    upper_bound: bool = False       # also fine-tune from random init with every training label
    concurrency: int = 1            # local fine-tunes run at once inside each client actor
    # Fine-tune from this encoder instead of pre-training: an MLflow model URI,
    # models:/<name>/<version>, models:/<name>@<alias> or models:/<logged model id> (m-...);
    # runs:/<run id>/<path> is still read but MLflow 3 deprecates it for models
    # (docs/tracking.md).
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
    # Seconds a round waits for sampled clients still being rebuilt after a restart (they
    # rejoin at that round instead of a later one); 0: a round never waits for them.
    rejoin_wait_s: float = 0.0
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
    # Pre-train and probe every encoder, fine-tune nothing (probes.csv, no results.csv): the
    # cheap way to compare pre-training choices (issue 28's fidelity ablations).
    only: bool = False


@dataclass
class PrivacyConfig:
    """Differential privacy of the feature exchange (docs/privacy.md): the Gaussian mechanism
    on the rows a site shares, at the site, with an accountant. Off while neither the
    multiplier nor the epsilon is set. Needs the optional extra ``fcl-ray[privacy]``."""
    # Noise std / L2 sensitivity of one unit's rows (>= 0) ...
    feature_noise_multiplier: Optional[float] = None
    # ... or the epsilon (> 0) a site may spend over pretrain.rounds rounds, from which each
    # site calibrates its multiplier (give one of the two).
    feature_epsilon: Optional[float] = None
    delta: float = 1e-5             # in (0, 1); below 1 / (privacy units of a site)
    # What one neighbouring dataset changes: one slice, or one patient (all of its frames and
    # slices), whose rows a round then shares at most rows_per_patient of.
    unit: Literal["slice", "patient"] = "slice"
    rows_per_patient: int = 1
    # Budget per site (null: none): before a round that would take a site past it, stop
    # pre-training there (the run goes on with the encoder it has) or warn and go on.
    max_epsilon: Optional[float] = None
    on_budget: Literal["stop", "warn"] = "stop"

    @property
    def enabled(self) -> bool:
        return self.feature_noise_multiplier is not None or self.feature_epsilon is not None


@dataclass
class Config:
    """Every section; docs/configuration.md lists each key with its default
    (tests/unit/test_docs.py keeps the two in step)."""
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
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)


# ----------------------------------------------------------------------------- ranges
@dataclass(frozen=True)
class Range:
    """What one numeric key allows: ``allowed`` in words (the error message's text), the
    bounds it stands for (None: no bound; ``*_open``: the bound itself is excluded), and,
    when ``high`` is a sanity limit rather than part of the key's meaning, why it is there.
    A Range without bounds still refuses NaN and infinity; its key's other rules are
    cross-key ones in :func:`validate`. For a list or mapping key, every item is checked."""
    allowed: str
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    why: Optional[str] = None     # high is a sanity limit: the reason, shown when it is hit


def _at_least(low: int, high: Optional[int] = None, why: Optional[str] = None,
              allowed: Optional[str] = None) -> Range:
    """An integer count >= ``low`` (and a sanity limit ``high``, for ``why``)."""
    return Range(allowed or (f"at least {low}" if low else ">= 0"), low, high, why=why)


def _positive(high: Optional[float], why: Optional[str], allowed: str = "> 0") -> Range:
    return Range(allowed, 0, high, low_open=True, why=why)


SEED_MAX = 2**32 - 1
_SEED = _at_least(0, SEED_MAX, "a 32-bit seed, which every NumPy, torch and Tune generator "
                               "takes", ">= 0")
_STEPS = "optimiser steps; ten million is weeks of GPU time"
_ROUNDS = "federated rounds; the benchmark uses 10-100"
_LR = "Adam moves every weight by about lr per step; above 1 training diverges"
_PATIENTS = "patients per client; no cardiac dataset has that many"
_EPSILON = "an epsilon above 10 000 promises nothing; leave privacy off instead"
_BATCH = "a batch this large does not fit any GPU's memory"
# Every numeric key of the schema (tests/unit/test_bad_input.py checks none is missing).
# Upper limits are sanity limits: far above any sensible value, low enough that a typo or a
# generated value fails here in a second, not as an out-of-memory error or an endless run
# inside a Ray actor.
RANGES: dict[str, Range] = {
    "experiment.seed": _SEED,
    "data.split_seed": _SEED,
    "data.clients": _at_least(1, 10_000, "every client holds a U-Net and its data in memory; "
                                         "the scale benchmark's largest federation has 256"),
    "data.cases_per_client": _at_least(1, 10_000, "synthetic patients a client generates"),
    "data.image_size": _at_least(16, 1024, "cardiac MRI slices are 256-512 pixels; a batch of "
                                           "larger slices does not fit a GPU's memory",
                                 "a multiple of 16, at least 16"),
    "data.slices_min": _at_least(1, 1024, "slices per volume; a short-axis stack has 8-20"),
    "data.slices_max": _at_least(1, 1024, "slices per volume; a short-axis stack has 8-20"),
    "data.partitions": _at_least(1, 256, "every volume needs a slice in every partition"),
    "data.folds": _at_least(2, 1000, "folds of a client's patients"),
    "data.noise": Range(">= 0", 0, 100, why="it scales each site's noise level; at 100 the "
                                            "phantom is noise"),
    "data.field_of_view": Range("in [0.25, 3] (the anatomy scaled by at most 4x either way)",
                                0.25, 3.0),
    "data.slice_gain_jitter": Range("in [0, 0.5] (null: 0.08)", 0.0, 0.5,
                                    why="a slice's gain would come near 0 or below"),
    "data.motion_ghosts": Range("in [0, 1] (each ghost at most as bright as the heart)", 0.0, 1.0),
    "data.shape_variation": Range("in [0, 0.4]", 0.0, 0.4,
                                  why="outlines would fold over themselves"),
    "data.extra_frames": _at_least(0, 1000, "frames of one cardiac cycle"),
    "data.cine_frames": _at_least(2, 1000, "frames per cardiac cycle; cines have 20-50",
                                  "null or at least 2 (ED and ES)"),
    "data.site_skew": _positive(1e6, "at a concentration of 1e6 every site is already alike",
                                "null or a finite number > 0 (a Dirichlet concentration)"),
    "data.spacing": _positive(100, "mm per pixel; a heart is about 100 mm across",
                              "> 0 (mm)"),
    "model.features": _at_least(1, 4096, "channels of a U-Net level; the defaults are 16-128"),
    "model.projection_hidden": _at_least(1, 65_536, "width of a projection-head layer"),
    "model.projection_dim": _at_least(1, 65_536, "width of a projection-head layer"),
    "pretrain.rounds": _at_least(1, 100_000, _ROUNDS),
    "pretrain.sampler_seed": _SEED,
    "pretrain.local_steps": _at_least(1, 1_000_000, _STEPS),
    "pretrain.volumes_per_batch": _at_least(1, 4096, _BATCH),
    "pretrain.lr": _positive(1, _LR),
    "pretrain.lr_per_method": _positive(1, _LR),
    "pretrain.temperature": _positive(100, "cosine similarities are divided by it; above 100 "
                                           "every logit is about 0"),
    "pretrain.momentum": Range("in [0, 1)", 0, 1, high_open=True),
    "pretrain.momentum_end": Range("in (0, 1)", 0, 1, low_open=True, high_open=True),
    "pretrain.bank_size": _at_least(1, 10_000_000, "features a bank keeps in memory per "
                                                   "partition", "'auto' or at least 1"),
    "pretrain.sample_size": _at_least(1, 1_000_000, "features drawn per step, a K x d matrix"),
    "pretrain.exchange_size": _at_least(1, 1_000_000, "features a client shares per round"),
    "pretrain.remote_sample": _at_least(1, 1_000_000, "remote features a client receives per "
                                                      "round", "null (all remote features) or "
                                                               "an integer >= 1"),
    "pretrain.feature_noise": Range(">= 0", 0, 100, why="std of noise on unit-length "
                                                        "features; at 100 nothing of them is left"),
    "pretrain.remote_weight": Range(">= 0", 0, 1000, why="weight of the remote loss beside a "
                                                         "local loss of weight 1"),
    "pretrain.collapse_cosine": Range("in (0, 1]", 0, 1, low_open=True),
    "pretrain.collapse_rank": Range(">= 1 (effective rank of the embeddings)", 1, 65_536,
                                    why="an effective rank cannot exceed the embedding width"),
    "pretrain.health_every": _at_least(1, 100_000, _ROUNDS),
    "pretrain.probe_every": _at_least(0, 100_000, _ROUNDS),
    "pretrain.probe_steps": _at_least(1, 1_000_000, _STEPS),
    "finetune.n_labeled": _at_least(1, 10_000, _PATIENTS),
    "finetune.folds": _at_least(0, allowed=">= 0 (a fold index below data.folds)"),
    "finetune.validation_patients": _at_least(1, 10_000, _PATIENTS),
    "finetune.eval_every": _at_least(1, 10_000_000, _STEPS),
    "finetune.patience": _at_least(1, 1_000_000, "evaluations without improvement"),
    "finetune.max_steps": _at_least(1, 10_000_000, _STEPS),
    "finetune.steps": _at_least(1, 10_000_000, _STEPS),
    "finetune.rounds": _at_least(1, 100_000, _ROUNDS),
    "finetune.local_steps": _at_least(1, 1_000_000, _STEPS),
    "finetune.batch_size": _at_least(1, 4096, _BATCH),
    "finetune.lr": _positive(1, _LR),
    "finetune.encoder_lr_scale": Range("a finite number >= 0", 0, 1000,
                                       why="it multiplies finetune.lr for the encoder"),
    "finetune.encoder_warmup_steps": _at_least(0, 10_000_000, _STEPS,
                                               ">= 0 (optimiser steps)"),
    "finetune.concurrency": _at_least(1, 64, "fine-tunes sharing one client actor's CPUs"),
    "federation.num_cpus_per_client": _positive(1024, "more CPUs than any machine has: Ray "
                                                      "would wait for them forever",
                                                "'auto' or > 0"),
    "federation.num_gpus_per_client": Range(">= 0", 0, 16, why="GPUs of one client actor; no "
                                                               "node has more"),
    "federation.client_resources": Range(">= 0 (an amount of a custom Ray resource)", 0, 1_000_000,
                                         why="a client's share of a custom resource: a node "
                                             "advertises a few units, not millions"),
    "federation.min_clients": Range("in [1, data.clients]"),
    "federation.clients_per_round": Range("null (all clients), a count or a fraction in (0, 1]"),
    "federation.round_timeout_s": _positive(1_000_000, "seconds; use null for no deadline",
                                            "> 0 or null"),
    "federation.round_retries": _at_least(0, 1000, "retries of a round; a client that fails "
                                                   "this often will not recover"),
    "federation.max_restarts": _at_least(0, 1000, "restarts of a client actor; a client that "
                                                  "dies this often will not recover"),
    "federation.checkpoint_every": _at_least(0, 100_000, _ROUNDS),
    "federation.rejoin_wait_s": Range(">= 0 (seconds)", 0, 86_400,
                                      why="a day: a client that takes longer will not come"),
    "federation.placement_timeout_s": _positive(86_400, "a day: a reservation that takes longer "
                                                        "will not come", "> 0 seconds"),
    "federation.clients_per_actor": Range("in [1, data.clients]"),
    "faults.delay_seconds": Range(">= 0 (seconds; keys are client ids)", 0, 3600,
                                  why="an hour of delay per round"),
    "control.sites": _at_least(1, 1000, "phantom sites of the control's patients"),
    "control.cases_per_site": _at_least(1, 10_000, _PATIENTS),
    "control.steps": _at_least(1, 10_000_000, _STEPS),
    "control.lr": _positive(1, _LR, "finite and > 0"),
    "control.batch_size": _at_least(1, 4096, _BATCH),
    "control.seed_offset": _at_least(1, SEED_MAX, "a 32-bit seed, which every NumPy, torch "
                                                  "and Tune generator takes"),
    "probes.steps": _at_least(1, 1_000_000, _STEPS),
    "probes.n_labeled": _at_least(1, 10_000, _PATIENTS),
    "federation.proximal_mu": Range(">= 0 (> 0 with federation.strategy=fedprox)", 0, 1e4,
                                    why="a proximal weight this large pins every client to "
                                        "the global model"),
    "privacy.feature_noise_multiplier": Range("null or >= 0", 0, 1e6, why="noise a million "
                                              "times a row's sensitivity shares pure noise"),
    "privacy.feature_epsilon": _positive(1e4, _EPSILON, "null or > 0"),
    "privacy.delta": Range("in (0, 1)", 0, 1, low_open=True, high_open=True),
    "privacy.rows_per_patient": _at_least(1, 10_000, "rows of one patient a round shares",
                                          allowed="at least 1 (at most "
                                                     "pretrain.exchange_size)"),
    "privacy.max_epsilon": _positive(1e4, _EPSILON, "null or > 0"),
}
# Lists that must name something, and must not name a thing twice (rows would repeat).
NON_EMPTY = ("pretrain.methods", "finetune.modes", "finetune.n_labeled", "finetune.folds")


FINETUNE_MODES = ("local", "federated")
# `fcl-ray report --sites`: what one independent site of the client-level statistics is.
# "client": a client id is the same site in every seed (data on disk: seeds change
# initialisation and sampling, not the hospital). "seed_client": every seed drew its own sites
# (the synthetic phantom draws each site's scanner, phenotype mix and patients from
# experiment.seed), so (seed, client) pairs are the independent units.
SITE_UNITS = ("client", "seed_client")
ENCODER_URI = re.compile(r"^(models:/[^/@\s]+(/[^/\s]+|@[^/\s]+)?|runs:/[0-9a-zA-Z_-]+/\S+)$")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# ----------------------------------------------------------------------------- validation
def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"config key '{key}': {message}")


def shown(value) -> str:
    """A value as a message shows it: at most 40 characters (a generated 10**300 is not)."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def numbers_in(value):
    """The numbers a key holds: the value itself, a list's items, a mapping's values."""
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from numbers_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from numbers_in(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def _check_range(key: str, value: float, r: Range) -> None:
    """One number against its key's Range (NaN and infinity are never allowed)."""
    got = f"got {shown(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        natural = r.low is not None and r.high is not None and r.why is None
        _check(False, key, f"must be {r.allowed}, {got}" if "finite" in r.allowed or natural
               else f"must be finite ({r.allowed}), {got}")
    below = r.low is not None and (value <= r.low if r.low_open else value < r.low)
    above = r.high is not None and (value >= r.high if r.high_open else value > r.high)
    _check(not below and not (above and r.why is None), key, f"must be {r.allowed}, {got}")
    high = int(r.high) if above and float(r.high).is_integer() else r.high
    _check(not above, key, f"must be at most {high} ({r.why}), {got}")


def check_ranges(cfg: Config) -> None:
    """Every numeric key (:data:`RANGES`) finite and in range, and every list of
    :data:`NON_EMPTY` non-empty without repeats: the per-key half of :func:`validate`."""
    for key, allowed in RANGES.items():
        section, name = key.split(".")
        for value in numbers_in(getattr(getattr(cfg, section), name)):
            _check_range(key, value, allowed)
    for key in NON_EMPTY:
        section, name = key.split(".")
        items = getattr(getattr(cfg, section), name)
        _check(len(items) > 0, key, "must not be empty")
        twice = [item for i, item in enumerate(items) if item in items[:i]]
        _check(not twice, key, f"names {shown(twice[0]) if twice else ''} twice; every entry "
                               f"makes rows of its own, so each must be different")


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
           f"models:/<logged model id> (or the deprecated runs:/<run id>/<path>); got {uri!r}")


def _check_control(cfg: Config) -> None:
    """The ``control`` section (the positive control ``supervised_encoder``)."""
    from fcl_ray.methods import SUPERVISED_ENCODER

    c = cfg.control
    _check_encoder_uri(c.encoder, "control.encoder")
    asked = SUPERVISED_ENCODER in cfg.pretrain.methods
    _check(not asked or cfg.data.kind == "synthetic" or c.encoder is not None, "control.encoder",
           f"pretrain.methods asks for {SUPERVISED_ENCODER} on data.kind={cfg.data.kind}, which "
           f"has no patients outside its sites to train it on; set control.encoder to an "
           f"MLflow model URI of an encoder trained with labels elsewhere")


def _finite(value: Optional[float], above: float = 0.0, inclusive: bool = False) -> bool:
    return value is not None and math.isfinite(value) and (
        value >= above if inclusive else value > above)


def planned_population(cfg: Config) -> Optional[int]:
    """Synthetic data: the most privacy units a site's pre-training pool can hold (the
    largest training fold, every frame, data.slices_max slices each); None for data on disk,
    whose counts come from the files."""
    d = cfg.data
    if d.kind != "synthetic":
        return None
    patients = d.cases_per_client - d.cases_per_client // d.folds
    if cfg.privacy.unit == "patient":
        return patients
    frames = (2 if d.phases == "ed_es" else 1) + d.extra_frames
    return patients * frames * d.slices_max


def _check_privacy(cfg: Config) -> None:
    """privacy.*: one mechanism, finite positive epsilons, delta in (0, 1), a budget at
    least one round's spend (synthetic data; data on disk are checked once the sites have
    loaded their pools, before the first round)."""
    pr = cfg.privacy
    z, eps = pr.feature_noise_multiplier, pr.feature_epsilon
    _check(z is None or _finite(z, 0.0, inclusive=True), "privacy.feature_noise_multiplier",
           f"must be null or a finite number >= 0, got {z}")
    _check(eps is None or _finite(eps), "privacy.feature_epsilon",
           f"must be null or a finite number > 0, got {eps}")
    _check(z is None or eps is None, "privacy.feature_epsilon",
           "give privacy.feature_noise_multiplier or privacy.feature_epsilon, not both")
    _check(_finite(pr.delta) and pr.delta < 1, "privacy.delta",
           f"must be in (0, 1), got {pr.delta}")
    _check(pr.max_epsilon is None or _finite(pr.max_epsilon), "privacy.max_epsilon",
           f"must be null or a finite number > 0, got {pr.max_epsilon}")
    _check(1 <= pr.rows_per_patient <= cfg.pretrain.exchange_size, "privacy.rows_per_patient",
           f"must be in [1, pretrain.exchange_size={cfg.pretrain.exchange_size}], "
           f"got {pr.rows_per_patient}")
    if not pr.enabled:
        _check(pr.max_epsilon is None, "privacy.max_epsilon",
               "a budget needs a mechanism: set privacy.feature_noise_multiplier or "
               "privacy.feature_epsilon")
        return
    from fcl_ray.privacy import require_accounting

    require_accounting("privacy.feature_noise_multiplier" if z is not None
                       else "privacy.feature_epsilon")
    _check(cfg.pretrain.feature_noise == 0, "pretrain.feature_noise",
           "must be 0 with privacy.* set (it is unaccounted noise on top of the accounted "
           "mechanism; privacy.feature_noise_multiplier sets the noise)")
    population = planned_population(cfg)
    if pr.max_epsilon is None or z is None or population is None:
        return
    from fcl_ray.privacy.accountant import RoundRelease, round_epsilon

    per_unit = 1 if pr.unit == "slice" else pr.rows_per_patient
    sampled = min(population, max(1, cfg.pretrain.exchange_size // per_unit))
    least = round_epsilon(RoundRelease(population, sampled, z), pr.delta)
    _check(least <= pr.max_epsilon, "privacy.max_epsilon",
           f"{pr.max_epsilon} is smaller than one round's spend (epsilon {least:.3g} at "
           f"privacy.delta={pr.delta} with privacy.feature_noise_multiplier={z}); raise it "
           f"or the multiplier")


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
    train_cases = _training_cases(d)
    _check(d.kind != "synthetic" or pr.n_labeled <= train_cases, "probes.n_labeled",
           f"{pr.n_labeled} labeled patients asked, but a client has only {train_cases} "
           f"training cases ({d.cases_per_client} cases minus a test fold of "
           f"data.folds={d.folds})")
    _check(not pr.enabled or d.clients >= 2, "probes.enabled",
           f"the cross-site probes need data.clients >= 2, got {d.clients}")
    _check(not pr.only or pr.enabled, "probes.only",
           "probes only (no fine-tuning) needs probes.enabled: true")


def validate(cfg: Config) -> Config:
    """Cross-field checks that types alone cannot express."""
    from fcl_ray.methods import registered_methods  # late: methods import models/torch

    d, p, f = cfg.data, cfg.pretrain, cfg.finetune
    check_ranges(cfg)   # first: the cross-key rules below see finite numbers in range only
    for key in ("name", "output_dir"):
        _check(bool(getattr(cfg.experiment, key).strip()), f"experiment.{key}", "must not be empty")
    _check(d.image_size % 16 == 0, "data.image_size",
           f"must be a multiple of 16 (four 2x poolings), got {d.image_size}")
    _check(d.slices_min <= d.slices_max, "data.slices_min",
           f"must be in [1, data.slices_max={d.slices_max}], got {d.slices_min}")
    synthetic = d.kind == "synthetic"
    # Real datasets: slice and case counts come from the files; the loader checks them.
    _check(not synthetic or d.partitions <= d.slices_min, "data.partitions",
           f"{d.partitions} partitions need at least that many slices per volume, "
           f"but volumes can have as few as data.slices_min={d.slices_min}")
    _check(not synthetic or d.cases_per_client >= d.folds, "data.cases_per_client",
           f"{d.cases_per_client} cases cannot fill data.folds={d.folds} test folds")
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
    if d.field_of_view:
        fov = d.field_of_view
        _check(len(fov) == 2 and fov[0] <= fov[1], "data.field_of_view",
               f"must be [low, high] with low <= high, got {fov}")
    # keys that only the v2 phantom draws: set elsewhere, they would be silently ignored
    for key, is_set in (("phenotypes", bool(d.phenotypes)),
                        ("field_of_view", bool(d.field_of_view)),
                        ("motion_ghosts", d.motion_ghosts != 0),
                        ("shape_variation", d.shape_variation != 0),
                        ("slice_gain_jitter", d.slice_gain_jitter is not None)):
        _check(not is_set or (synthetic and d.phantom == "v2"), f"data.{key}",
               "only for data.kind=synthetic with data.phantom=v2")
    _check(d.site_skew is None or not synthetic or d.phantom == "v2", "data.site_skew",
           "the v1 phantom has no phenotypes to mix; use data.phantom=v2 or leave it null")
    _check(d.cine_frames is None or synthetic, "data.cine_frames",
           f"only for data.kind=synthetic (the phantom's cycle length), not data.kind={d.kind} "
           f"(acdc and mnms cines have their own frame count, decathlon has no frames)")
    if synthetic:
        from fcl_ray.data.synthetic import CINE_FRAMES  # numpy/scipy only

        cycle = CINE_FRAMES if d.cine_frames is None else d.cine_frames
        _check(d.extra_frames <= cycle - 2, "data.extra_frames",
               f"{d.extra_frames} unlabeled frames asked, but a {cycle}-frame cycle "
               f"(data.cine_frames) has only {cycle - 2} besides ED and ES")
    _check(not d.classes or d.kind == "decathlon", "data.classes",
           f"only for data.kind=decathlon (its dataset.json names the labels); "
           f"data.kind={d.kind} segments the cardiac labels rv, myo, lv; leave it []")
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
    _check(p.momentum_schedule != "cosine" or p.momentum_end >= p.momentum, "pretrain.momentum_end",
           f"momentum_schedule=cosine rises from pretrain.momentum={p.momentum}, so it must be "
           f">= that, got {p.momentum_end}")
    for name, lr in p.lr_per_method.items():
        _check(name in known, "pretrain.lr_per_method",
               f"'{name}: {lr}' needs a registered method; registered methods: "
               f"{', '.join(known)}")
    for mode in f.modes:
        _check(mode in FINETUNE_MODES, "finetune.modes",
               f"unknown mode '{mode}'; allowed: {', '.join(FINETUNE_MODES)}")
    train_cases = _training_cases(d)
    for n in f.n_labeled:
        # N counts labeled patients (a patient's ED and ES frames are one budget unit).
        _check(not synthetic or n <= train_cases, "finetune.n_labeled",
               f"{n} labeled volumes asked, but a client has only {train_cases} training cases "
               f"({d.cases_per_client} cases minus a test fold of data.folds={d.folds})")
    for fold in f.folds:
        _check(fold < d.folds, "finetune.folds", f"fold {fold} not in [0, {d.folds - 1}]")
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
    if t.uri is not None:   # the scheme only; the store itself is checked before a run starts
        from fcl_ray.tracking import tracking_uri_problem   # late: tracking imports this module

        problem = tracking_uri_problem(t.uri)
        _check(problem is None, "tracking.uri", f"{shown(t.uri)} {problem}")
    if t.register_as is not None:
        _check(bool(MODEL_NAME.match(t.register_as)), "tracking.register_as",
               f"a registered model name: letters, digits, '.', '_', '-' (starting with a letter "
               f"or digit), got {t.register_as!r}")
        _check(t.enabled, "tracking.register_as", "needs tracking.enabled=true")
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
    _check(1 <= fed.clients_per_actor <= d.clients, "federation.clients_per_actor",
           f"must be in [1, data.clients={d.clients}], got {fed.clients_per_actor}")
    _check(fed.clients_per_actor == 1 or not (fed.client_resources or fed.client_labels),
           "federation.clients_per_actor", "must be 1 when clients are pinned to sites "
           "(federation.client_resources / client_labels): a site's clients run on its own node")
    _check_strategy(fed)
    for client, delay in cfg.faults.delay_seconds.items():
        _check(0 <= client < d.clients, "faults.delay_seconds",
               f"client {client} / delay {delay}: needs a client id in [0, {d.clients - 1}]")
    _check_probes(cfg)
    _check_privacy(cfg)
    return cfg
