"""Sweep files, Tune objects, and a real ASHA sweep of whole federations into a real MLflow
server (on the session's local Ray)."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import TINY
from fcl_ray.cli import main
from fcl_ray.config import ConfigError
from fcl_ray.sweep.run import max_overlap, run_sweep
from fcl_ray.sweep.spec import load_sweep, parse_sweep
from fcl_ray.sweep.trial import param_space, trial_bundles, trial_resources

REPO = Path(__file__).resolve().parents[2]
GOOD = {"name": "t", "overrides": ["pretrain.probe_every=1"],
        "search_space": {"pretrain.temperature": {"choice": [0.05, 0.1]}}}


def sweep(**changes) -> dict:
    raw = {k: v for k, v in GOOD.items()}
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


@pytest.mark.parametrize("changes, key", [
    ({"serach_space": {}}, "serach_space"),
    ({"name": None}, "name"),
    ({"search_space": {}}, "search_space"),
    ({"search_space": {"pretrain.temprature": {"choice": [1]}}}, "search_space.pretrain.temprature"),
    ({"search_space": {"temperature": {"choice": [1]}}}, "search_space.temperature"),
    ({"search_space": {"pretrain.temperature": {"choice": [-1.0]}}}, "pretrain.temperature"),
    ({"search_space": {"pretrain.temperature": {"uniform": [0.5]}}}, "search_space.pretrain.temperature.uniform"),
    ({"search_space": {"pretrain.lr": {"loguniform": [0, 1]}}}, "search_space.pretrain.lr.loguniform"),
    ({"search_space": {"pretrain.lr": {"normal": [0, 1]}}}, "search_space.pretrain.lr"),
    ({"search_space": {"experiment.output_dir": {"choice": ["a"]}}}, "search_space.experiment.output_dir"),
    ({"search": {"algorithm": "bayes"}}, "search.algorithm"),
    ({"search": {"algorithm": "grid"},
      "search_space": {"pretrain.lr": {"uniform": [0.001, 0.01]}}}, "search_space.pretrain.lr"),
    ({"scheduler": {"type": "hyperband"}}, "scheduler.type"),
    ({"scheduler": {"type": "asha", "grace": 1}}, "scheduler.grace"),
    ({"scheduler": {"type": "asha", "reduction_factor": 1}}, "scheduler.reduction_factor"),
    ({"mode": "maximise"}, "mode"),
    ({"num_samples": 0}, "num_samples"),
    ({"max_concurrent_trials": "two"}, "max_concurrent_trials"),
    ({"resources": {"cpus_per_client": 0}}, "resources.cpus_per_client"),
    ({"resources": {"gpu": 1}}, "resources.gpu"),
    ({"overrides": ["pretrain.probe_every=0"]}, "metric"),
    ({"metric": "val_dice"}, "metric"),   # the defaults' finetune.budget=steps validates nothing
    ({"metric": "dice_mean", "overrides": ["pretrain.probe_every=1", "probes.enabled=true",
                                           "probes.only=true"]}, "metric"),
    ({"overrides": ["pretrain.probe_every=1", "pretrain.rounds=0"]}, "pretrain.rounds"),
    ({"base": "nope.yaml"}, "base"),
    ({"storage_path": "nofs://bucket/sweeps"}, "storage_path"),   # no such filesystem
    ({"storage_path": "abfs://container/sweeps"}, "storage_path"),   # adlfs not installed
    # The benchmark's base carries its chosen rates in lr_per_method, which would mask the
    # searched lr (every trial of a method at one rate): refused, naming the way out.
    ({"base": "../synthetic_benchmark.yaml",
      "search_space": {"pretrain.methods": {"grid": [["fcl"], ["fedca"]]},
                       "pretrain.lr": {"grid": [0.003, 0.001]}}}, "search_space.pretrain.lr"),
])
def test_bad_sweep_files_name_the_key(changes, key):
    with pytest.raises(ConfigError) as err:
        parse_sweep(sweep(**changes), base_dir=REPO / "experiments" / "sweeps")
    message = str(err.value)
    assert f"'{key}'" in message or key in message, message
    assert "\n" not in message


def test_cli_bad_sweep_file_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(sweep(search_space={"pretrain.temprature": {"choice": [1]}})))
    run = subprocess.run([sys.executable, "-m", "fcl_ray", "sweep", str(path)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0
    assert "search_space.pretrain.temprature" in run.stderr


def test_a_sweep_on_test_dice_is_warned_about(caplog):
    with caplog.at_level("WARNING", logger="fcl_ray"):
        parse_sweep(sweep(metric="dice_mean"))
    assert "chosen on the test folds" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="fcl_ray"):
        parse_sweep(sweep(metric="val_dice", overrides=["finetune.budget=converge"]))
    assert caplog.text == ""


def test_storage_uris_are_kept_as_given():
    assert parse_sweep(sweep(storage_path="s3://bucket/sweeps/")).experiment_path == \
        "s3://bucket/sweeps/t"
    assert parse_sweep(sweep(storage_path="gs://b/x")).experiment_path == "gs://b/x/t"
    assert parse_sweep(sweep(storage_path="rel")).experiment_path == str(Path("rel").resolve() / "t")


def test_shipped_sweep_files_are_valid():
    for path in sorted((REPO / "experiments" / "sweeps").glob("*.yaml")):
        spec = load_sweep(path)
        assert spec.search_space and spec.num_samples >= 1, path


def test_searched_lr_reaches_methods_once_lr_per_method_is_cleared():
    raw = sweep(base="../synthetic_benchmark.yaml",
                search_space={"pretrain.methods": {"grid": [["fcl"], ["fedca"]]},
                              "pretrain.lr": {"grid": [0.003, 0.001]}},
                overrides=["pretrain.probe_every=1", "pretrain.lr_per_method={}"])
    spec = parse_sweep(raw, base_dir=REPO / "experiments" / "sweeps")
    assert spec.base_config.pretrain.lr_per_method == {}
    # A method the base leaves on pretrain.lr (fedca) is not masked: no refusal either.
    raw["search_space"]["pretrain.methods"] = {"grid": [["fedca"], ["fedsimclr"]]}
    raw["overrides"] = ["pretrain.probe_every=1"]
    assert parse_sweep(raw, base_dir=REPO / "experiments" / "sweeps").search_space


def test_spaces_bundles_and_overrides():
    spec = load_sweep(REPO / "experiments" / "sweeps" / "fcl_quick.yaml",
                      ["sweep.num_samples=2", "sweep.resources.cpus_per_client=0.5",
                       "data.clients=3", "sweep.resources.gpus_per_client=0.25",
                       "federation.client_resources=[{site_a: 1}, {site_b: 1}, {site_c: 1}]"])
    assert spec.num_samples == 2 and spec.base_config.data.clients == 3
    space = param_space(spec)
    assert set(space) == set(spec.search_space)
    # bundle 0: trainable + coordinator; one bundle per client with its site resource + GPU
    assert trial_bundles(spec) == [{"CPU": 0.1},
                                   {"CPU": 0.5, "GPU": 0.25, "site_a": 1.0},
                                   {"CPU": 0.5, "GPU": 0.25, "site_b": 1.0},
                                   {"CPU": 0.5, "GPU": 0.25, "site_c": 1.0}]
    assert trial_resources(spec).bundles == trial_bundles(spec)
    grid = parse_sweep(sweep(search={"algorithm": "grid"},
                             search_space={"data.clients": {"choice": [2, 3]}}))
    assert grid.search_space == {"data.clients": {"grid": [2, 3]}}
    sized = trial_resources(grid)   # clients searched: the group is sized per trial
    assert len(sized({"data.clients": 3}).bundles) == 4


def test_optuna_search_alg():
    pytest.importorskip("optuna")
    from fcl_ray.sweep.trial import make_search_alg

    spec = parse_sweep(sweep(search={"algorithm": "optuna", "seed": 1},
                             search_space={"pretrain.lr": {"loguniform": [1e-4, 1e-2]}}))
    assert type(make_search_alg(spec)).__name__ == "OptunaSearch"
    with pytest.raises(ConfigError, match="search_space.pretrain.lr"):
        parse_sweep(sweep(search={"algorithm": "optuna"},
                          search_space={"pretrain.lr": {"grid": [1e-3]}}))


def test_max_overlap():
    assert max_overlap([]) == 0
    assert max_overlap([(0, 10), (5, 15), (12, 20)]) == 2
    assert max_overlap([(0, 1), (1, 2)]) == 1   # one ends as the next starts


@pytest.mark.integration
def test_asha_sweep_of_federations_into_mlflow_server(ray_session, mlflow_server, tmp_path,
                                                       capsys):
    """4 trials x 2 clients, ASHA, 2 at once; one trial's config is invalid and fails alone."""
    from mlflow import MlflowClient

    raw = {
        "name": "tiny-sweep", "storage_path": str(tmp_path / "sweeps"),
        "overrides": TINY + ["pretrain.methods=[fcl]", "pretrain.probe_every=1",
                             "pretrain.probe_steps=2", f"experiment.output_dir={tmp_path}/x"],
        # a 2 x 2 grid; (partitions=4, slices_min=2) is invalid together -> that trial fails
        "search_space": {"data.partitions": {"grid": [2, 4]},
                         "data.slices_min": {"grid": [4, 2]}},
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        "metric": "probe_dice", "mode": "max", "num_samples": 1, "max_concurrent_trials": 2,
        "resources": {"cpus_per_client": 0.45, "coordinator_cpus": 0.1},
        "tracking": {"uri": mlflow_server["uri"], "experiment": "tiny-sweep"},
    }
    spec = parse_sweep(raw)
    out = run_sweep(spec, log=lambda line: None)

    trials = out.trials.set_index(["data.partitions", "data.slices_min"])
    assert len(trials) == 4 and out.errors == 1
    assert trials.loc[(4, 2), "status"] == "ERROR"
    assert "data.partitions" in trials.loc[(4, 2), "error"]
    ok = trials[trials.status == "OK"]
    assert (ok["iterations"] >= 1).all() and ok["probe_dice"].between(0, 1).all()
    # Every federation's 2 client actors were inside its trial's placement group.
    assert (ok["clients_in_pg"] == 2).all()
    assert 1 <= out.max_concurrent <= 2

    client = MlflowClient(mlflow_server["uri"])
    parent = client.get_run(out.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["kind"] == "sweep"
    assert parent.data.metrics["trials"] == 4 and parent.data.metrics["trials_errored"] == 1
    assert {"trials.csv", "sweep.yaml", "base_config.yaml", "probe_dice_per_trial.png",
            "probe_dice_vs_hyperparameters.png"} <= \
        {a.path for a in client.list_artifacts(out.parent_run_id)}
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{out.parent_run_id}'")
    # the invalid trial failed before its federation (and run) started
    assert len(children) == 3
    for child in children:
        assert child.info.status in ("FINISHED", "KILLED")
        assert child.data.tags["ended_by"] in ("completed", "early_stop")
        assert child.data.tags["method"] == "fcl" and child.data.tags["seed"] == "0"
        assert child.data.tags["clients_in_pg"] == "2"
        assert child.data.tags["coordinator_in_pg"] == "1"
        assert child.data.params["data.partitions"] in ("2", "4")
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "fcl/probe_dice")]
        assert steps[:1] == [0]
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert finished, "ASHA keeps at least the best trial to the end"
    assert {"results.csv", "config.yaml", "rounds.png"} <= \
        {a.path for a in client.list_artifacts(finished[0].info.run_id)}

    # The same name again without --resume is refused; with resume, nothing is left to run
    # and the parent run is reused.
    with pytest.raises(ConfigError, match="--resume"):
        run_sweep(spec, log=lambda line: None)
    again = run_sweep(spec, resume=True, log=lambda line: None)
    assert again.parent_run_id == out.parent_run_id and len(again.trials) == 4

    # The CLI fails when any trial errored (a RayJob must not report success), count last.
    sweep_file = tmp_path / "tiny-sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(raw))
    capsys.readouterr()
    assert main(["sweep", str(sweep_file), "--resume"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "fcl-ray: 1 of 4 trials errored")


@pytest.mark.integration
def test_collapsed_trial_is_stopped_early(ray_session, tmp_path):
    """A trial whose health check says 'collapsed' ends after its first round; the other runs
    all its rounds. (collapse_cosine 0.5 makes any current embedding count as collapsed.)"""
    raw = {
        "name": "collapse-sweep", "storage_path": str(tmp_path / "sweeps"),
        "overrides": TINY + ["pretrain.methods=[fcl]", "pretrain.rounds=3",
                             "pretrain.probe_every=1", "pretrain.probe_steps=2",
                             "finetune.steps=2", f"experiment.output_dir={tmp_path}/x"],
        "search_space": {"pretrain.collapse_cosine": {"grid": [0.5, 1.0]}},
        "scheduler": "none", "metric": "probe_dice", "mode": "max", "num_samples": 1,
        "max_concurrent_trials": 2, "resources": {"cpus_per_client": 0.45, "coordinator_cpus": 0.1},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "collapse-sweep"},
    }
    out = run_sweep(parse_sweep(raw), log=lambda line: None)
    trials = out.trials.set_index("pretrain.collapse_cosine")
    assert trials.loc[0.5, "iterations"] == 1 and trials.loc[0.5, "collapsed"] == 1.0
    assert trials.loc[1.0, "iterations"] >= 3 and trials.loc[1.0, "probe_dice"] >= 0


@pytest.mark.integration
def test_a_sweep_chooses_on_the_validating_patients_dice(ray_session, tmp_path):
    """metric val_dice: each trial reports the mean validation Dice of its fine-tuning
    (finetune.budget=converge), and the best trial is the one with the highest of it."""
    raw = {
        "name": "val-sweep", "storage_path": str(tmp_path / "sweeps"),
        "overrides": TINY + ["pretrain.methods=[local_cl]", "finetune.modes=[local]",
                             "finetune.budget=converge", "finetune.eval_every=2",
                             "finetune.patience=1", "finetune.max_steps=4",
                             f"experiment.output_dir={tmp_path}/x"],
        "search_space": {"finetune.lr": {"grid": [0.001, 0.01]}},
        "search": {"algorithm": "grid"}, "scheduler": "none", "metric": "val_dice",
        "mode": "max", "num_samples": 1, "max_concurrent_trials": 2,
        "resources": {"cpus_per_client": 0.45, "coordinator_cpus": 0.1},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "val-sweep"},
    }
    out = run_sweep(parse_sweep(raw), log=lambda line: None)
    assert out.errors == 0 and out.trials["val_dice"].between(0, 1).all()
    best = out.trials.loc[out.trials["val_dice"].idxmax()]
    assert out.best["trial_id"] == best["trial_id"]
    assert out.best["config"] == {"finetune.lr": best["finetune.lr"]}


@pytest.mark.integration
def test_interrupted_sweep_resumes_trials_from_their_last_round(ray_session, tmp_path, capsys):
    """Ctrl+C after round 2 of 4; `fcl-ray sweep --resume` continues the trial at round 3 from
    its Tune checkpoint, in the same MLflow run. storage_path is a file:// URI, kept as given."""
    from mlflow import MlflowClient
    from ray.tune import Callback

    class Interrupt(Callback):
        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            if trial.last_result.get("round") == 2:   # Tune's own Ctrl+C: state is saved
                os.kill(os.getpid(), signal.SIGINT)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    raw = {
        "name": "resume-sweep", "storage_path": f"file://{tmp_path}/sweeps",
        "overrides": TINY + ["pretrain.methods=[fcl]", "pretrain.rounds=4",
                             "pretrain.probe_every=1", "pretrain.probe_steps=2",
                             "finetune.steps=2", "finetune.modes=[local]",
                             "finetune.n_labeled=[1]", f"experiment.output_dir={tmp_path}/x"],
        "search_space": {"pretrain.temperature": {"grid": [0.1]}},
        "scheduler": "none", "metric": "probe_dice", "mode": "max", "num_samples": 1,
        "resources": {"cpus_per_client": 0.45, "coordinator_cpus": 0.1},
        "tracking": {"uri": uri, "experiment": "resume-sweep"},
    }
    spec = parse_sweep(raw)
    first = run_sweep(spec, log=lambda line: None, callbacks=(Interrupt(),))
    assert (tmp_path / "sweeps" / "resume-sweep").is_dir()   # the URI's folder, no 'file:' dir
    client = MlflowClient(uri)
    children_of = f"tags.mlflow.parentRunId = '{first.parent_run_id}'"
    (child,) = client.search_runs([client.get_run(first.parent_run_id).info.experiment_id],
                                  filter_string=children_of)
    # Closed by CloseChildRuns, and by the stopped trial itself, both as KILLED.
    assert child.data.tags.get("ended_by") == "interrupted"
    assert child.info.status == "KILLED"
    before = client.get_metric_history(child.info.run_id, "fcl/loss")
    # rounds 1, 2 (and perhaps 3: the trial ran on while the driver stopped), step = round - 1
    assert [m.step for m in before][:2] == [0, 1] and len(before) <= 3

    sweep_file = tmp_path / "resume-sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(raw))
    assert main(["sweep", str(sweep_file), "--resume"]) == 0
    children = client.search_runs([child.info.experiment_id], filter_string=children_of)
    assert [c.info.run_id for c in children] == [child.info.run_id]   # the same run, continued
    run = client.get_run(child.info.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["ended_by"] == "completed"
    assert run.data.tags["resumed"] == "True"
    # After the resume: from the last checkpointed round (the one Tune had, or the trial's own
    # newer one) to round 4; not from round 1 (step = round - 1).
    reported = int(first.trials.iloc[0]["rounds_done"])
    history = client.get_metric_history(run.info.run_id, "fcl/loss")
    stopped_at = max(m.timestamp for m in before)
    resumed = sorted(m.step for m in history if m.timestamp > stopped_at)
    assert resumed and resumed == list(range(resumed[0], 4))
    assert 2 <= reported <= resumed[0] <= len(before)
    assert "results.csv" in {a.path for a in client.list_artifacts(run.info.run_id)}


@pytest.mark.integration
def test_an_interrupted_sweep_ends_every_child_run_killed(ray_session, tmp_path):
    """Ctrl+C while a trial runs, 5 times over: each time the trial's MLflow run ends KILLED
    (ended_by=interrupted), never FAILED by the trial's own clean-up racing the callback."""
    from mlflow import MlflowClient
    from ray.tune import Callback

    class Interrupt(Callback):
        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            if trial.last_result.get("round") == 1:   # mid-run: 2 more rounds to go
                os.kill(os.getpid(), signal.SIGINT)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    for attempt in range(5):
        raw = {
            "name": f"stop-{attempt}", "storage_path": str(tmp_path / "sweeps"),
            "overrides": TINY + ["pretrain.methods=[fcl]", "pretrain.rounds=3",
                                 "pretrain.probe_every=1", "pretrain.probe_steps=1",
                                 "finetune.modes=[local]", "finetune.steps=1",
                                 f"experiment.output_dir={tmp_path}/x"],
            "search_space": {"pretrain.temperature": {"grid": [0.1]}},
            "scheduler": "none", "metric": "probe_dice", "mode": "max", "num_samples": 1,
            "resources": {"cpus_per_client": 0.45, "coordinator_cpus": 0.1},
            "tracking": {"uri": uri, "experiment": "stop-sweeps"},
        }
        out = run_sweep(parse_sweep(raw), log=lambda line: None, callbacks=(Interrupt(),))
        children = client.search_runs(
            [client.get_run(out.parent_run_id).info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{out.parent_run_id}'")
        assert len(children) == 1, attempt
        (child,) = children
        assert (child.info.status, child.data.tags.get("ended_by")) == ("KILLED", "interrupted"), \
            f"interrupt {attempt + 1} of 5"
