"""fcl_ray.run on a tiny real federation: the results object (table, folder, MLflow run and
its link, config), the output-folder checks of `fcl-ray run`, and the notebook's signals."""
import signal

import pandas as pd
import pytest

import fcl_ray

pytestmark = pytest.mark.integration


def test_run_returns_results_and_guards_the_output_folder(ray_session, tiny_overrides, tmp_path):
    from mlflow import MlflowClient

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    results = fcl_ray.run(None, tiny_overrides + ["experiment.name=api-run"])
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers   # given back

    out = tmp_path / "out"
    assert results.output_dir == out and results.config.data.clients == 2
    pd.testing.assert_frame_equal(results.table, pd.read_csv(out / "results.csv"),
                                  check_dtype=False)
    assert set(results.table["method"]) == {"fcl", "random"}
    assert list(results.summary().columns) == ["dice_rv", "dice_myo", "dice_lv", "dice_mean"]
    run = MlflowClient(results.config.tracking.uri).get_run(results.run_id)
    assert run.info.status == "FINISHED"
    assert results.run_url == (f"http://127.0.0.1:5000/#/experiments/"
                               f"{run.info.experiment_id}/runs/{results.run_id}")
    assert "### local fine-tuning" in fcl_ray.report(results).text

    # The folder holds results now: refused, as `fcl-ray run` refuses, before Ray is asked.
    with pytest.raises(fcl_ray.FclRayError, match="already holds results"):
        fcl_ray.run(None, tiny_overrides)
    # overwrite=True moves them aside; without tracking there is no run and no link.
    again = fcl_ray.run(None, tiny_overrides + ["tracking.enabled=false"], overwrite=True)
    assert again.run_id is None and again.run_url is None and len(again.table) > 0
    assert len(list(out.glob("previous-*/results.csv"))) == 1
