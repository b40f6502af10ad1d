"""A resumed `fcl-ray run` continues the MLflow run its output folder recorded (the one a
SIGKILLed driver left RUNNING), in the same store and experiment only."""
from fcl_ray.config_io import load_config
from fcl_ray.tracking import (RUN_RECORD, TrackingContext, make_tracker, remember_run,
                              run_to_continue)


def _cfg(tmp_path, *extra):
    return load_config(None, [f"experiment.output_dir={tmp_path / 'out'}",
                              f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", *extra])


def test_the_recorded_run_is_continued_only_where_it_belongs(tmp_path):
    from mlflow import MlflowClient

    cfg = _cfg(tmp_path)
    assert run_to_continue(cfg) is None                       # nothing recorded yet
    (tmp_path / "out").mkdir()
    tracker = make_tracker(cfg)
    remember_run(cfg.experiment.output_dir, tracker)
    assert (tmp_path / "out" / RUN_RECORD).is_file()
    # The driver was SIGKILLed here: the run is never ended and stays RUNNING.
    assert run_to_continue(cfg) == tracker.run_id
    assert run_to_continue(_cfg(tmp_path, "tracking.experiment=other")) is None
    assert run_to_continue(_cfg(tmp_path, "tracking.enabled=false")) is None
    elsewhere = load_config(None, [f"experiment.output_dir={tmp_path / 'out'}",
                                   f"tracking.uri=sqlite:///{tmp_path / 'other.db'}"])
    assert run_to_continue(elsewhere) is None
    tracker.end()
    MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").delete_run(tracker.run_id)
    assert run_to_continue(cfg) is None                       # deleted: a new run
    (tmp_path / "out" / RUN_RECORD).write_text("not json")
    assert run_to_continue(cfg) is None


def test_a_continued_run_loses_the_earlier_stops_ended_by(tmp_path):
    from mlflow import MlflowClient

    cfg = _cfg(tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    first = make_tracker(cfg, tags={"resumed": False})
    client.set_tag(first.run_id, "ended_by", "signal 15")      # as `fcl-ray run` after SIGTERM
    first.end("KILLED")
    again = make_tracker(cfg, tags={"resumed": True}, context=TrackingContext(run_id=first.run_id))
    tags = client.get_run(first.run_id).data.tags
    assert again.run_id == first.run_id and "ended_by" not in tags
    assert tags["resumed_after"] == "signal 15" and tags["resumed"] == "True"
    again.end()
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED" and "ended_by" not in run.data.tags
    # A driver SIGKILLed left its run RUNNING, without a tag: that status is what is kept.
    lost = client.create_run(run.info.experiment_id).info.run_id
    continued = make_tracker(cfg, context=TrackingContext(run_id=lost))
    assert client.get_run(lost).data.tags["resumed_after"] == "RUNNING"
    continued.end()
