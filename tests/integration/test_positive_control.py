"""The positive control in a tiny federation: trained once in a client actor, fine-tuned like
every encoder in both modes, cached and reused on --resume."""
import pandas as pd
import pytest

from fcl_ray.config_io import load_config
from fcl_ray.federation.driver import run_experiment

pytestmark = pytest.mark.integration

TRAINING = "[supervised_encoder] training the positive control's U-Net"
REUSING = "[supervised_encoder] reusing the encoder cached in"


def test_supervised_encoder_rows_and_a_cached_encoder_reused_on_resume(ray_session,
                                                                       tiny_overrides, tmp_path):
    import mlflow

    cfg = load_config(None, tiny_overrides + [
        "pretrain.methods=[random,supervised_encoder]", "finetune.modes=[local,federated]",
        "finetune.folds=[0,1]", "experiment.name=tiny-control", "control.steps=3",
        "control.sites=2", "control.cases_per_site=2", "control.batch_size=4"])
    lines: list[str] = []
    results = run_experiment(cfg, log=lines.append)

    # Rows for every client, mode and fold, fine-tuned from an encoder other than random init
    control = results[results.method == "supervised_encoder"]
    assert len(control) == 2 * 2 * 2                               # clients x modes x folds
    assert set(control.client) == {0, 1} and set(control.fold) == {0, 1}
    assert set(control.finetune_mode) == {"local", "federated"}
    assert control["dice_mean"].between(0, 1).all()
    key = ["finetune_mode", "fold", "client"]
    random = results[results.method == "random"].set_index(key)["dice_mean"]
    assert not control.set_index(key)["dice_mean"].reindex(random.index).equals(random)

    # Trained once for both folds, with progress lines and the loss in MLflow
    assert sum(line.startswith(TRAINING) for line in lines) == 1
    assert any(line.strip().startswith("step 3/3 loss") for line in lines)
    assert any(line.startswith("[supervised_encoder] trained in") for line in lines)
    cached = tmp_path / "out" / "encoders" / "supervised_encoder.pt"
    assert cached.is_file() and cached.with_suffix(".json").is_file()
    mlflow.set_tracking_uri(cfg.tracking.uri)
    run = mlflow.search_runs(experiment_names=["tiny-control"], output_format="list")[0]
    assert "supervised_encoder/train_loss" in run.data.metrics

    # --resume with the control's rows missing: the cached encoder is reused, not retrained,
    # and gives the same rows
    results_csv = tmp_path / "out" / "results.csv"
    written = pd.read_csv(results_csv)
    written[written.method == "random"].to_csv(results_csv, index=False)
    mtime = cached.stat().st_mtime_ns
    again: list[str] = []
    resumed = run_experiment(cfg, log=again.append, resume=True)
    assert not any(line.startswith(TRAINING) for line in again)
    assert any(line.startswith(REUSING) for line in again)
    assert cached.stat().st_mtime_ns == mtime
    redone = resumed[resumed.method == "supervised_encoder"].set_index(key)["dice_mean"]
    assert redone.sort_index().round(6).equals(control.set_index(key)["dice_mean"]
                                               .sort_index().round(6))


def test_the_control_encoder_can_come_from_an_mlflow_model(ray_session, tiny_overrides, tmp_path):
    """control.encoder (what data on disk needs): the registered encoder is fine-tuned as the
    control's rows, nothing is trained; a missing model is one ConfigError naming the key."""
    import torch

    from fcl_ray.config import ConfigError
    from fcl_ray.encoders import log_encoders
    from fcl_ray.methods.models import Encoder
    from fcl_ray.tracking import make_tracker

    registered = load_config(None, tiny_overrides + [
        "pretrain.methods=[fcl]", "tracking.register_as=elsewhere",
        f"experiment.output_dir={tmp_path / 'registered'}"])
    (tmp_path / "registered" / "encoders").mkdir(parents=True)
    torch.manual_seed(3)
    torch.save(Encoder(registered.model.features).state_dict(),
               tmp_path / "registered" / "encoders" / "fcl-fold0.pt")
    tracker = make_tracker(registered)
    (entry,) = log_encoders(registered, tmp_path / "registered", tracker.run_id, log=lambda _: None)
    tracker.end()

    common = tiny_overrides + ["pretrain.methods=[random,supervised_encoder]"]
    lines: list[str] = []
    results = run_experiment(load_config(None, common + [
        f"control.encoder=models:/{entry['registered_model']}/{entry['version']}"]),
        log=lines.append)
    control = results[results.method == "supervised_encoder"]["dice_mean"].to_numpy()
    assert len(control) == 2                                                 # both clients
    assert not (control == results[results.method == "random"]["dice_mean"].to_numpy()).all()
    assert any(line.startswith("[supervised_encoder] the positive control's encoder from "
                               "models:/elsewhere-fcl/1") for line in lines)
    assert not any(line.startswith(TRAINING) for line in lines)
    assert not (tmp_path / "out" / "encoders" / "supervised_encoder.pt").exists()

    with pytest.raises(ConfigError, match=r"^control.encoder 'models:/no-such-encoder/1': "
                                          r"cannot load it"):
        run_experiment(load_config(None, common + ["control.encoder=models:/no-such-encoder/1"]))
