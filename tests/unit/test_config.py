"""Config loading, overrides and the errors users see."""
import subprocess
import sys
from pathlib import Path

import pytest

from fcl_ray.config import ConfigError
from fcl_ray.config_io import flatten, load_config, set_dotted, to_dict, unflatten

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"


def test_quickstart_loads_and_overrides_are_typed():
    cfg = load_config(QUICKSTART, ["pretrain.rounds=3", "data.clients=2",
                                   "pretrain.temperature=1", "finetune.n_labeled=[1,2]",
                                   "federation.num_cpus_per_client=0.5"])
    assert cfg.pretrain.rounds == 3 and cfg.data.clients == 2
    assert cfg.pretrain.temperature == 1.0 and isinstance(cfg.pretrain.temperature, float)
    assert cfg.finetune.n_labeled == [1, 2]
    assert cfg.federation.num_cpus_per_client == 0.5


def test_flatten_round_trip():
    tree = to_dict(load_config(QUICKSTART))
    assert unflatten(flatten(tree)) == tree
    assert flatten(tree)["pretrain.temperature"] == 0.1


def test_set_dotted_makes_sections_and_refuses_to_descend_into_a_value():
    tree = {"data": {"clients": 2}}
    set_dotted(tree, "data.extra.depth", 3)
    set_dotted(tree, ["pretrain", "rounds"], 5)
    assert tree == {"data": {"clients": 2, "extra": {"depth": 3}}, "pretrain": {"rounds": 5}}
    with pytest.raises(ConfigError, match=r"^override 'data.clients.x=1': 'data.clients' is "
                                          r"not a section$"):
        set_dotted(tree, "data.clients.x", 1, "override 'data.clients.x=1'")
    with pytest.raises(ConfigError, match="'data.clients' is not a section"):
        load_config(None, ["data.clients=2", "data.clients.x=1"])


@pytest.mark.parametrize("override,message", [
    ("pretrain.tempreature=0.2", "unknown config key 'pretrain.tempreature'; allowed keys here:"),
    ("pretraining.rounds=2", "unknown config key 'pretraining'"),
    ("pretrain.rounds=abc", "'pretrain.rounds': expected int, got 'abc'"),
    ("pretrain.rounds=2.5", "'pretrain.rounds': expected int"),
    ("pretrain.negatives=some", "'pretrain.negatives': expected one of 'other_partitions', 'all'"),
    ("data.clients=0", "'data.clients': must be at least 1, got 0"),
    ("pretrain.health_every=0", "'pretrain.health_every': must be at least 1, got 0"),
    ("finetune.n_labeled=7", "'finetune.n_labeled': 7 labeled volumes asked, but a client has only 6"),
    ("data.partitions=9", "'data.partitions': 9 partitions need at least that many slices"),
    ("pretrain.methods=[fcl,magic]", "unknown method 'magic'; registered methods: random, fcl"),
    ("finetune.modes=[global]", "unknown mode 'global'; allowed: local, federated"),
    ("data.image_size=50", "'data.image_size': must be a multiple of 16"),
    ("pretrain.temperature=0", "'pretrain.temperature': must be > 0"),
    ("pretrain.collapse_cosine=1.5", "'pretrain.collapse_cosine': must be in (0, 1], got 1.5"),
    ("pretrain.collapse_rank=0.5", "'pretrain.collapse_rank': must be >= 1"),
    ("pretrain.collapse_guard=loud", "'pretrain.collapse_guard': expected one of 'warn', 'stop'"),
    ("pretrain.fresh_negatives=old", "'pretrain.fresh_negatives': expected one of 'keys'"),
    ("pretrain.matching=local", "'pretrain.matching': expected one of 'remote', 'bank_and_remote'"),
    ("pretrain.views=crop", "'pretrain.views': expected one of 'shrink', 'zoom_mild', 'zoom'"),
    ("pretrain.bank_size=0", "'pretrain.bank_size': must be 'auto' or at least 1, got 0"),
    ("pretrain.lr_per_method={magic: 0.1}", "'pretrain.lr_per_method': 'magic: 0.1' needs a"),
    ("noequals", "expected key=value"),
    ("finetune.patience=0", "'finetune.patience': must be at least 1, got 0"),
    ("finetune.max_steps=0", "'finetune.max_steps': must be at least 1, got 0"),
    ("finetune.budget=forever", "'finetune.budget': expected one of 'steps', 'converge'"),
    ("data.site_skew=0", "'data.site_skew': must be null or a finite number > 0"),
    ("data.site_skew=-1", "'data.site_skew': must be null or a finite number > 0"),
    ("data.site_skew=.inf", "'data.site_skew': must be null or a finite number > 0"),
    ("data.split=by_region", "'data.split': expected one of 'random', 'by_site', 'by_group'"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(QUICKSTART, [override])
    assert message in str(err.value)


def test_site_skew_on_data_on_disk_needs_the_by_group_split():
    acdc = ["data.kind=acdc", "data.root=/data/ACDC", "data.clients=10", "data.site_skew=1"]
    with pytest.raises(ConfigError, match=r"^config key 'data.site_skew': .* needs "
                                          r"data.split=by_group \(got data.split=random\)"):
        load_config(None, acdc)
    assert load_config(None, acdc + ["data.split=by_group"]).data.site_skew == 1.0


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad)


@pytest.mark.parametrize("override", ["data.clients=0", "pretrain.rounds=x",
                                      "pretrain.collapse_cosine=2", "pretrain.negatives=x",
                                      "finetune.n_labeled=100", "data.partitions=20",
                                      "pretrain.bogus=1", "pretrain.health_source=sometimes"])
def test_cli_prints_one_line_and_exits_2(override, capsys):
    from fcl_ray.cli import main

    assert main(["run", str(QUICKSTART), "--set", override]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fcl-ray: error: ")
    assert "config key" in lines[0]


def test_the_installed_entry_point_exits_2_on_a_bad_key():
    """The same through `python -m fcl_ray`, as a shell or a Ray job runs it."""
    proc = subprocess.run([sys.executable, "-m", "fcl_ray", "run", str(QUICKSTART),
                           "--set", "pretrain.bogus=1"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fcl-ray: error: ")
    assert "Traceback" not in proc.stderr

@pytest.mark.parametrize("overrides,message", [
    # quickstart: 8 patients, 4 folds -> 6 training patients per client
    (["finetune.n_labeled=[1,4]", "finetune.validation_patients=3"],
     "'finetune.validation_patients': must be at most 2 (the 6 training patients of a client "
     "minus N=4), got 3"),
    (["finetune.n_labeled=[6]"],
     "'finetune.budget': converge needs a training patient to validate on, but N=6 takes all 6"),
])
def test_converge_needs_validation_patients_outside_the_labeled(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(QUICKSTART, ["finetune.budget=converge", *overrides])
    assert message in str(err.value)
    # the same N with a fixed step budget needs no validation patient
    load_config(QUICKSTART, ["finetune.budget=steps", "finetune.n_labeled=[6]"])


# federation.clients_per_round and pretrain.remote_sample (issue 21): quickstart has 3 clients.
PER_ROUND = ("must be null (all clients), an integer in [federation.min_clients=1, "
             "data.clients=3] or a fraction in (0, 1]")


@pytest.mark.parametrize("overrides,message", [
    (["federation.clients_per_round=0"], f"'federation.clients_per_round': {PER_ROUND}, got 0"),
    (["federation.clients_per_round=4"], f"'federation.clients_per_round': {PER_ROUND}, got 4"),
    (["federation.clients_per_round=1.5"], f"{PER_ROUND}, got 1.5"),
    (["federation.clients_per_round=0.0"], f"{PER_ROUND}, got 0.0"),
    (["federation.clients_per_round=-0.5"], f"{PER_ROUND}, got -0.5"),
    (["federation.clients_per_round=1", "federation.min_clients=2"],
     "'federation.clients_per_round': must be null (all clients), an integer in "
     "[federation.min_clients=2, data.clients=3] or a fraction in (0, 1], got 1"),
    (["federation.clients_per_round=0.5", "federation.min_clients=3"],
     "0.5 of 3 clients is 2, below federation.min_clients=3"),
    (["federation.clients_per_round=some"], "'federation.clients_per_round': expected int or "
                                            "float or null, got 'some'"),
    (["pretrain.remote_sample=0"], "'pretrain.remote_sample': must be null (all remote "
                                   "features) or an integer >= 1, got 0"),
    (["pretrain.remote_sample=2.5"], "'pretrain.remote_sample': expected int or null"),
])
def test_bad_participation_and_exchange_bounds_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(QUICKSTART, overrides)
    assert message in str(err.value)


def test_participation_and_exchange_bounds_accept_counts_fractions_and_null():
    cfg = load_config(QUICKSTART, ["federation.clients_per_round=2", "pretrain.remote_sample=64"])
    assert cfg.federation.clients_per_round == 2 and cfg.pretrain.remote_sample == 64
    assert load_config(QUICKSTART, ["federation.clients_per_round=0.5"]) \
        .federation.clients_per_round == 0.5
    assert load_config(QUICKSTART, ["federation.clients_per_round=1.0"]) \
        .federation.clients_per_round == 1.0                     # a fraction: all clients
    default = load_config(QUICKSTART)
    assert default.federation.clients_per_round is None and default.pretrain.remote_sample is None


@pytest.mark.parametrize("override", ["federation.clients_per_round=0",
                                      "federation.clients_per_round=1.5",
                                      "pretrain.remote_sample=0"])
def test_participation_keys_print_one_line_and_exit_2(override, capsys):
    from fcl_ray.cli import main

    assert main(["run", str(QUICKSTART), "--set", override]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fcl-ray: error: config key ")
    assert override.split("=")[0] in lines[0]


# Issue 28's fine-tuning and pre-training options (points 4, 5 and 9).
@pytest.mark.parametrize("overrides,message", [
    (["pretrain.momentum_end=1.0"], "'pretrain.momentum_end': must be in (0, 1), got 1.0"),
    (["pretrain.momentum_end=0"], "'pretrain.momentum_end': must be in (0, 1), got 0.0"),
    (["pretrain.momentum_end=.nan"], "'pretrain.momentum_end': must be in (0, 1), got nan"),
    (["pretrain.momentum_end=.inf"], "'pretrain.momentum_end': must be in (0, 1), got inf"),
    (["pretrain.momentum_schedule=cosine", "pretrain.momentum_end=0.9"],
     "'pretrain.momentum_end': momentum_schedule=cosine rises from pretrain.momentum=0.99, so "
     "it must be >= that, got 0.9"),
    (["pretrain.momentum_schedule=linear"],
     "'pretrain.momentum_schedule': expected one of 'constant', 'cosine'"),
    (["finetune.encoder_lr_scale=-0.1"],
     "'finetune.encoder_lr_scale': must be a finite number >= 0, got -0.1"),
    (["finetune.encoder_lr_scale=.inf"],
     "'finetune.encoder_lr_scale': must be a finite number >= 0, got inf"),
    (["finetune.encoder_lr_scale=.nan"],
     "'finetune.encoder_lr_scale': must be a finite number >= 0, got nan"),
    (["finetune.encoder_warmup_steps=-1"],
     "'finetune.encoder_warmup_steps': must be >= 0 (optimiser steps), got -1"),
    (["finetune.encoder_warmup_steps=2.5"], "'finetune.encoder_warmup_steps': expected int"),
    (["pretrain.batch_by=case"], "'pretrain.batch_by': expected one of 'volume', 'patient'"),
    (["pretrain.bank_start=random"], "'pretrain.bank_start': expected one of 'filled', 'empty'"),
    (["pretrain.health_source=sometimes"],
     "config key 'pretrain.health_source': expected one of 'steps', 'probe', got 'sometimes'"),
])
def test_bad_option_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(QUICKSTART, overrides)
    assert message in str(err.value)


def test_option_defaults_and_accepted_values():
    default = load_config(QUICKSTART)
    assert (default.pretrain.momentum_schedule, default.pretrain.momentum_end) == ("constant", 0.999)
    # a constant schedule ignores momentum_end, so one below the momentum is no error there
    load_config(QUICKSTART, ["pretrain.momentum_end=0.5"])
    cfg = load_config(QUICKSTART, ["pretrain.momentum_schedule=cosine", "pretrain.momentum_end=0.99"])
    assert cfg.pretrain.momentum_end == cfg.pretrain.momentum
    assert (default.finetune.encoder_lr_scale, default.finetune.encoder_warmup_steps) == (1.0, 0)
    cfg = load_config(QUICKSTART, ["finetune.encoder_lr_scale=0", "finetune.encoder_warmup_steps=0"])
    assert cfg.finetune.encoder_lr_scale == 0.0
    assert default.pretrain.batch_by == "volume"
    assert load_config(QUICKSTART, ["pretrain.batch_by=patient"]).pretrain.batch_by == "patient"
    assert default.pretrain.health_source == "steps"
    probe = load_config(QUICKSTART, ["pretrain.health_source=probe"])
    assert probe.pretrain.health_source == "probe"


# federation.strategy and federation.proximal_mu (issue 30).
@pytest.mark.parametrize("overrides,message", [
    (["federation.strategy=fedsgd"],
     "config key 'federation.strategy': expected one of 'fedavg', 'fedprox', got 'fedsgd'"),
    (["federation.strategy=fedprox"],
     "config key 'federation.proximal_mu': must be a number > 0 with "
     "federation.strategy=fedprox (e.g. 0.01), got 0.0"),
    (["federation.strategy=fedprox", "federation.proximal_mu=-1"], "got -1"),
    (["federation.strategy=fedprox", "federation.proximal_mu=nan"], "expected float, got 'nan'"),
    (["federation.proximal_mu=0.1"],
     "config key 'federation.proximal_mu': is only read with federation.strategy=fedprox; "
     "got 0.1 with federation.strategy=fedavg"),
])
def test_strategy_keys_are_checked_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(QUICKSTART, overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_fedprox_with_a_mu_is_accepted_and_fedavg_is_the_default():
    assert load_config(QUICKSTART).federation.strategy == "fedavg"
    fed = load_config(QUICKSTART, ["federation.strategy=fedprox",
                                   "federation.proximal_mu=0.01"]).federation
    assert (fed.strategy, fed.proximal_mu) == ("fedprox", 0.01)
