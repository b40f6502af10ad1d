"""The Flower runtime's pure parts: a site's node config, the records and the contract
checked at the site, and the files `fcl-ray deploy` writes (no network, no processes)."""
import json
import stat
import sys
import tomllib

import numpy as np
import pytest

from fcl_ray.cli import main
from fcl_ray.config import ConfigError
from fcl_ray.config_io import from_dict, load_config
from fcl_ray.flower.deploy import (check_flower_study, parse_site_roots,
                                   study_from_run_config, write_deployment)
from fcl_ray.flower.nodes import SiteConfigError, site_config, site_settings
from fcl_ray.protocol.messages import ClientUpdate, Contract, MessageError

from conftest import TINY

STUDY = TINY + ["pretrain.methods=[fcl]", "finetune.modes=[federated]"]


# ----------------------------------------------------------------------------- node config
def test_a_site_reads_its_node_config(tmp_path):
    settings = site_settings({"site": 1, "data-root": str(tmp_path), "threads": 2}, clients=2)
    assert (settings.site, settings.data_root, settings.threads) == (1, tmp_path, 2)
    assert settings.state_dir == tmp_path / "fcl-ray-state"   # on the site's own disk


@pytest.mark.parametrize("node_config,message", [
    ({"site": 2}, "site=2 is not a site of this study (an integer in [0, 2))"),
    ({"site": "0"}, "site='0' is not a site"),
    ({"site": 0, "data-root": "/no/such/folder"}, "data-root '/no/such/folder' does not exist"),
    ({"site": 0}, "needs data-root"),
    ({"site": 0, "data_root": "x"}, "unknown key(s) ['data_root']"),
    ({"site": 0, "DATA": 1, "threads": 0}, "unknown key(s)"),
])
def test_a_node_config_that_does_not_fit_is_refused_in_one_line(node_config, message):
    with pytest.raises(SiteConfigError, match=None) as err:
        site_settings(node_config, clients=2)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_real_dataset_is_read_from_the_sites_own_root(tmp_path):
    cfg = {"data": {"kind": "acdc", "client_roots": ["/a", "/b"]}}
    settings = site_settings({"site": 1, "data-root": str(tmp_path)}, clients=2)
    assert site_config(cfg, settings)["data"]["client_roots"] == ["/a", str(tmp_path)]
    assert cfg["data"]["client_roots"] == ["/a", "/b"]   # the study's config is untouched
    phantom = {"data": {"kind": "synthetic"}}
    assert site_config(phantom, settings) == phantom


# ----------------------------------------------------------------------------- records
def _update(**changes):
    base = dict(client=0, weights=np.arange(10, dtype=np.float32), n_samples=3,
                features=np.ones((4, 16), np.float32), partitions=np.array([0, 1, 1, 0]),
                metrics={"loss": 0.5})
    return ClientUpdate(**{**base, **changes})


CONTRACT = Contract(n_weights=10, feature_dim=16, partitions=2, max_features=8)


def test_an_image_sized_array_is_refused_at_the_site():
    from fcl_ray.flower.site_runner import checked_update   # no flwr needed: runs in CI

    for bad in (np.zeros((4, 32 * 32), np.float32),     # a 32x32 slice per row
                np.zeros((4, 1, 32, 32), np.float32)):  # or the slices themselves
        with pytest.raises(MessageError, match="refused at the site before sending: "
                                               "client 0: features must be float32"):
            checked_update(_update(features=bad), CONTRACT)
    records = pytest.importorskip("fcl_ray.flower.records")
    with pytest.raises(MessageError, match="refused at the site"):
        records.scalars_record({"dice_mean": 0.5, "mask": np.zeros((32, 32))})


def test_records_carry_an_update_and_the_pool_unchanged():
    records = pytest.importorskip("fcl_ray.flower.records")
    from fcl_ray.flower.site_runner import checked_update

    update = checked_update(_update(), CONTRACT)
    back = records.update_from(records.update_records(update))
    assert back.client == 0 and back.n_samples == 3 and back.metrics == {"loss": 0.5}
    for name in ("weights", "features", "partitions"):
        sent, got = getattr(update, name), getattr(back, name)
        assert got.dtype == sent.dtype and np.array_equal(got, sent)
    from flwr.app import RecordDict

    pool = {0: (update.features, update.partitions), 1: (update.features[:2], update.partitions[:2])}
    got = records.pool_from(RecordDict({records.POOL: records.pool_record(pool)}))
    assert sorted(got) == [0, 1] and all(np.array_equal(got[s][i], pool[s][i])
                                         for s in pool for i in (0, 1))
    assert records.pool_from(RecordDict({})) is None


def test_a_rounds_config_travels_as_a_record_and_fedavg_sends_none():
    records = pytest.importorskip("fcl_ray.flower.records")
    from flwr.app import ConfigRecord, RecordDict

    from fcl_ray.core.strategy import FedProx, Strategy

    plan = FedProx(CONTRACT, proximal_mu=0.25).configure_round(1, 2)
    sent = RecordDict({records.CONFIG: ConfigRecord(plan.config)})
    assert records.round_config_from(sent) == {"proximal_mu": 0.25}
    assert Strategy(CONTRACT).configure_round(1, 2).config == {}
    assert records.round_config_from(RecordDict({})) == {}


def test_a_sites_privacy_release_reaches_the_coordinators_accountant_as_on_ray():
    """A set-up's release travels as scalars (``privacy.<field>``) and the coordinator hands
    the driver's accountant what the Ray coordinator hands it: sites that release nothing
    are left out, a resumed phase counts the rounds before its checkpoint."""
    records = pytest.importorskip("fcl_ray.flower.records")
    server = pytest.importorskip("fcl_ray.flower.server_app")
    from fcl_ray.privacy.accountant import RoundRelease
    from fcl_ray.privacy.budget import PhaseBudget

    release = RoundRelease(population=40, sampled=8, noise_multiplier=1.5).as_dict()
    infos = [{"slices": 40, "n_weights": 10, "privacy": release},
             {"slices": 30, "n_weights": 10, "privacy": None}]
    sent = [dict(records.scalars_record(records.release_scalars(i))) for i in infos]
    assert sent[0] == {"slices": 40, "n_weights": 10, "privacy.population": 40,
                       "privacy.sampled": 8, "privacy.noise_multiplier": 1.5}
    assert records.release_of(sent[0]) == release and records.release_of(sent[1]) is None
    phase = server.phase_privacy(sent, start_round=2)
    assert phase == {"privacy": {0: release}, "start_round": 2}
    cfg = load_config(None, STUDY + ["privacy.feature_noise_multiplier=1.5"])
    flower = PhaseBudget.for_phase(cfg, phase, "fcl")
    ray = PhaseBudget.for_phase(cfg, {"privacy": {0: release}, "start_round": 2}, "fcl")
    assert flower.summary() == ray.summary() and flower.summary()["clients"]["0"]["releases"] == 2
    assert server.phase_privacy(sent[1:], 0) == {"privacy": {}, "start_round": 0}
    assert PhaseBudget.for_phase(cfg, server.phase_privacy(sent[1:], 0), "fcl") is None


# ----------------------------------------------------------------------------- deploy
def test_deploy_writes_what_each_party_runs(tmp_path):
    cfg = load_config(None, STUDY)
    out = tmp_path / "deploy"
    written = write_deployment(cfg, out, "coord.example.org", 9092, {1: "/data/site one"})
    assert written[0] == out / "README.md" and all(p.is_file() for p in written)
    link = (out / "coordinator" / "superlink.sh").read_text()
    assert "--ssl-certfile certificates/server.pem" in link and "--enable-supernode-auth" in link
    register = (out / "coordinator" / "register.sh").read_text()
    assert register.count("flwr supernode register site-keys/site-") == 2
    node = (out / "sites" / "site-1" / "supernode.sh").read_text()
    assert "--superlink coord.example.org:9092" in node and "--root-certificates ca.crt" in node
    assert "--node-config 'site=1 data-root=\"/data/site one\"'" in node
    key = out / "sites" / "site-1" / "site-1.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # The site's private key exists only in its bundle; the coordinator gets public keys.
    assert not list((out / "issuer").rglob("site-1"))
    assert [p.name for p in (out / "coordinator").rglob("*.key")] == ["server.key"]
    assert (out / "coordinator" / "site-keys" / "site-1.pub").read_text().startswith("ecdsa-sha2")
    # The app carries the study; a relative output_dir lands under the coordinator's folder.
    app = tomllib.loads((out / "coordinator" / "app" / "pyproject.toml").read_text())
    study = from_dict(json.loads(app["tool"]["flwr"]["app"]["config"]["study"]))
    assert study.pretrain == cfg.pretrain and study.data == cfg.data
    assert study.experiment.output_dir == str((out / "coordinator" / cfg.experiment.output_dir).resolve())
    assert app["tool"]["flwr"]["app"]["components"]["clientapp"] == "fcl_ray.flower.client_app:app"


def test_deploy_refuses_bad_input_in_one_line(tmp_path):
    cfg = load_config(None, STUDY)
    with pytest.raises(ConfigError, match=r"--data-root: site\(s\) \[5\] are not sites"):
        write_deployment(cfg, tmp_path / "a", "localhost", site_roots={5: "/x"})
    with pytest.raises(ConfigError, match="--certs .*: missing ca.crt, server.pem, server.key"):
        write_deployment(cfg, tmp_path / "b", "localhost", certs=tmp_path / "nocerts")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "old").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        write_deployment(cfg, tmp_path / "c", "localhost")
    with pytest.raises(ConfigError, match="expected SITE=PATH"):
        parse_site_roots(["site0=/x"])
    with pytest.raises(ConfigError, match="probes.enabled: the Flower runtime supports only"):
        check_flower_study(load_config(None, STUDY + ["probes.enabled=true"]))


@pytest.mark.parametrize("overrides,key", [
    (["finetune.upper_bound=true"], "finetune.upper_bound"),
    (["pretrain.probe_every=1"], "pretrain.probe_every"),
    (["pretrain.methods=[fcl,supervised_encoder]"], "pretrain.methods"),
])
def test_flower_refuses_what_it_does_not_run_yet_in_one_line(overrides, key):
    with pytest.raises(ConfigError) as err:
        check_flower_study(load_config(None, STUDY + overrides))
    assert str(err.value).startswith(f"{key}: the Flower runtime supports only") \
        and "\n" not in str(err.value)


def test_flower_runs_fedprox_privacy_and_fine_tuning_to_convergence():
    """What the Flower runtime now runs as Ray does: a round's config (FedProx's mu) reaches
    the sites, the accountant runs at the coordinator, early stopping in both fine-tunings."""
    check_flower_study(load_config(None, STUDY + [
        "federation.strategy=fedprox", "federation.proximal_mu=0.01",
        "privacy.feature_noise_multiplier=1.0", "privacy.max_epsilon=1000",
        "finetune.budget=converge", "finetune.modes=[federated,local]"]))


def test_cli_deploy_without_the_extra_or_certs_exits_2(tmp_path, monkeypatch, capsys):
    pytest.importorskip("flwr")
    args = ["deploy", "experiments/quickstart.yaml", "--out", str(tmp_path / "d"),
            "--set", "finetune.budget=steps", "--set", "pretrain.probe_every=0",
            "--certs", str(tmp_path / "missing")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--certs" in err[0] and "missing ca.crt" in err[0]
    monkeypatch.setitem(sys.modules, "flwr", None)   # as if the extra were not installed
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["fcl-ray: error: fcl-ray deploy needs Flower, which is not installed: "
                   "pip install 'fcl-ray[flower]'"]


def test_the_coordinator_drops_refused_late_and_impostor_sites(monkeypatch):
    """A site's refusal (an Error reply), its silence and an update claiming another site
    leave it out of the round, each with its reason; the rest count, in site order."""
    server = pytest.importorskip("fcl_ray.flower.server_app")
    from flwr.app import Error, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    # Messages are made inside a run: the ids Flower's process sets for a ServerApp.
    for name, value in (("_run_id", 7), ("_node_id", 1), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value, raising=False)

    from fcl_ray.core.strategy import Strategy
    from fcl_ray.flower import records

    def reply(content):
        asked = Message(RecordDict(), dst_node_id=1, message_type="query")
        return Message(content, reply_to=asked)

    replies = {2: reply(records.update_records(_update(client=2))),
               0: reply(records.update_records(_update(client=0))),
               1: reply(Error(code=records.REFUSED, reason="refused at the site before sending: x")),
               4: reply(records.update_records(_update(client=0)))}   # site 4 posing as 0
    updates, dropped = server.collect_updates(replies, [0, 1, 2, 3, 4], Strategy(CONTRACT))
    assert [u.client for u in updates] == [0, 2]
    assert dropped[1] == "failed: refused at the site before sending: x"
    assert dropped[3].startswith("late") and "sent an update as client 0" in dropped[4]


def test_a_round_starts_from_the_sites_newest_earlier_state_and_old_ones_go():
    """A site keeps its pre-training state per round: round r starts from its newest state
    before r (a site that sat rounds out goes on from its last); what a resume from the
    coordinator's last checkpoint (``keep_from``) can still need is kept."""
    from fcl_ray.flower.site_runner import newest_round, rounds_to_drop

    assert newest_round([0, 1, 2, 3], 2) == 2
    assert newest_round([0, 1, 4], 3) == 1          # sat rounds 2 and 3 out
    assert newest_round([2, 3], 1) is None
    assert rounds_to_drop([0, 1, 2, 3], 2) == [0, 1]   # round 3 ran, its checkpoint did not
    assert rounds_to_drop([0, 1, 4], 3) == [0]         # 1 is the newest a resume from 3 needs
    assert rounds_to_drop([3], 0) == [] and rounds_to_drop([], 5) == []


def test_run_sh_takes_fcl_ray_runs_resume_and_overwrite_flags(tmp_path):
    """``coordinator/run.sh --resume`` / ``--overwrite`` become the app's run config (whose
    defaults are false); other arguments go to ``flwr run`` as they are."""
    write_deployment(load_config(None, STUDY), tmp_path / "d", "localhost")
    run = (tmp_path / "d" / "coordinator" / "run.sh").read_text()
    assert "--resume) args+=(--run-config resume=true)" in run
    assert "--overwrite) args+=(--run-config overwrite=true)" in run
    assert '*) args+=("$1")' in run
    app = tomllib.loads((tmp_path / "d" / "coordinator" / "app" / "pyproject.toml").read_text())
    config = app["tool"]["flwr"]["app"]["config"]
    assert config["resume"] is False and config["overwrite"] is False and config["set"] == ""


def test_the_apps_read_the_study_with_run_sh_set_overrides(tmp_path):
    """``run.sh --set KEY=VALUE`` reaches the ServerApp and the ClientApps as the run
    config's ``set`` string; both read the study through study_from_run_config: the deployed
    config with the overrides applied, validated; a bad one is one line."""
    write_deployment(load_config(None, STUDY), tmp_path / "d", "localhost")
    app = tomllib.loads((tmp_path / "d" / "coordinator" / "app" / "pyproject.toml").read_text())
    run_config = app["tool"]["flwr"]["app"]["config"]
    deployed = study_from_run_config(run_config)
    assert deployed == json.loads(run_config["study"])
    grown = study_from_run_config({**run_config, "set": "finetune.modes=[federated, local];"
                                                         "finetune.n_labeled=[1,2]"})
    assert grown["finetune"]["modes"] == ["federated", "local"]
    assert grown["finetune"]["n_labeled"] == [1, 2]
    assert {k: v for k, v in grown.items() if k != "finetune"} == \
        {k: v for k, v in deployed.items() if k != "finetune"}
    with pytest.raises(ConfigError, match="finetune.modes") as err:
        study_from_run_config({**run_config, "set": "finetune.modes=[central]"})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("value,said", [
    ("finetune.n_labeled=[1,2];pretrain.rounds=3", "one KEY=VALUE without ';' or quotes"),
    ("experiment.name='x'", "one KEY=VALUE without ';' or quotes"),
    ("finetune.n_labeled", "expected KEY=VALUE"),
    ("=3", "expected KEY=VALUE"),
    ("", "expected KEY=VALUE"),
])
def test_run_sh_refuses_a_set_it_cannot_carry_in_one_line(tmp_path, value, said):
    """coordinator/run.sh (real bash) refuses, before it reaches Flower, a --set that the
    run config's ``set`` string cannot carry: one line, exit 2."""
    import subprocess

    write_deployment(load_config(None, STUDY), tmp_path / "d", "localhost")
    coordinator = tmp_path / "d" / "coordinator"
    run = subprocess.run(["bash", "run.sh", "--resume", "--set", value], cwd=coordinator,
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and run.stderr == ""
    lines = run.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fcl-ray: error: --set '{value}': ") \
        and said in lines[0]
    assert not (coordinator / "run.log").exists()   # flwr was never called


def test_the_coordinator_records_where_the_sites_compute(tmp_path):
    """The machines the sites sent with their hello go to machine.json as `fcl-ray run`
    records its clients: one line, the starts appended, a warning when a resume moved."""
    server = pytest.importorskip("fcl_ray.flower.server_app")
    from fcl_ray.machine import read_starts

    cfg = load_config(None, STUDY + [f"experiment.output_dir={tmp_path / 'new'}"])
    here = {"cpu": "CPU A", "cpu_capability": "AVX2", "torch": "2.13.0+cpu", "cuda": None,
            "gpu": None, "torch_threads": 1}
    lines = []
    server.record_machines(cfg, {0: here, 1: here}, False, lines.append)
    assert lines == ["clients on 1 machine setup(s): CPU A (AVX2), torch 2.13.0+cpu, "
                     "1 thread(s): clients 0, 1"]
    server.record_machines(cfg, {0: here, 1: {**here, "cpu_capability": "AVX512"}}, True,
                           lines.append)
    assert lines[-1].startswith("warning: this resume runs on another machine setup")
    assert [s["resumed"] for s in read_starts(tmp_path / "new")] == [False, True]
    server.record_machines(cfg, {}, True, lines.append)   # sites that do not say: nothing
    assert len(read_starts(tmp_path / "new")) == 2 and len(lines) == 3
