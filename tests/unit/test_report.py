"""The paper's tables and plot from results.csv files and from MLflow runs."""
import itertools

import pandas as pd
import pytest

from fcl_ray.cli import main
from fcl_ray.config import ConfigError
from fcl_ray.report import format_table, paper_stats, paper_table, render_report, write_report
from fcl_ray.results import load_results


def _results(methods=("fcl", "random"), modes=("local", "federated"), ns=(1, 2), folds=(0, 1),
             clients=(0, 1, 2)):
    """Dice = base(method) + 0.1*N + 0.01*client + 0.02*fold: every mean/std is known."""
    base = {"random": 0.3, "fcl": 0.5, "fedswav": 0.4}
    rows = []
    for m, mode, n, f, c in itertools.product(methods, modes, ns, folds, clients):
        d = base[m] + 0.1 * n + 0.01 * c + 0.02 * f + (0.05 if mode == "federated" else 0)
        rows.append({"method": m, "finetune_mode": mode, "n_labeled": n, "fold": f, "client": c,
                     "dice_mean": d, "dice_rv": d - 0.1, "dice_myo": d, "dice_lv": d + 0.1})
    return pd.DataFrame(rows)


def test_cells_are_mean_and_std_over_clients_after_averaging_folds():
    stats = paper_stats(_results(), "local")
    # client c: mean over folds = 0.5 + 0.1 + 0.01c + 0.01 -> clients 0.61, 0.62, 0.63
    assert stats.loc["fcl", (1, "mean")] == pytest.approx(0.62)
    assert stats.loc["fcl", (1, "std")] == pytest.approx((2 / 3) ** 0.5 * 0.01)
    assert stats.loc["fcl", (1, "clients")] == 3
    table = paper_table(_results(), "federated")
    assert list(table.columns) == ["N=1", "N=2"]
    assert list(table.index) == ["random", "fcl"]          # the paper's row order
    assert table.loc["random", "N=2"] == "0.570 ± 0.008"
    assert paper_table(_results(), "local", "dice_lv").loc["fcl", "N=1"] == "0.720 ± 0.008"


def test_missing_settings_show_a_dash():
    partial = _results()
    partial = partial[~((partial.method == "random") & (partial.n_labeled == 2))]
    assert paper_table(partial, "local").loc["random", "N=2"] == "—"


def test_write_report_files(tmp_path):
    paths = write_report(_results(), tmp_path / "out")
    names = sorted(p.name for p in paths)
    assert names == ["dice_vs_n.png", "table_federated.csv", "table_federated.md",
                     "table_local.csv", "table_local.md"]
    assert (tmp_path / "out" / "dice_vs_n.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "out" / "table_local.md").read_text()
    assert "| method | N=1 | N=2 |" in md and "| fcl | 0.620 ± 0.008 | 0.720 ± 0.008 |" in md
    csv = pd.read_csv(tmp_path / "out" / "table_local.csv")
    assert list(csv.columns)[:4] == ["method", "N=1 mean", "N=1 std", "N=1 clients"]
    assert csv.set_index("method").loc["fcl", "N=2 mean"] == pytest.approx(0.72)


def test_only_the_modes_present_are_rendered(tmp_path):
    local_only = _results(modes=("local",))
    text = render_report(local_only)
    assert "local fine-tuning" in text and "federated" not in text
    assert [p.name for p in write_report(local_only, tmp_path)] == [
        "table_local.md", "table_local.csv", "dice_vs_n.png"]
    assert "0.620 ± 0.008" in format_table(local_only)   # the driver's table still works


def test_cli_report_from_csv_files(tmp_path, capsys):
    first = _results()
    newer = _results(methods=("fcl",)).assign(dice_mean=0.9)   # a re-run of fcl
    first.to_csv(tmp_path / "a.csv", index=False)
    newer.to_csv(tmp_path / "b.csv", index=False)
    rc = main(["report", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"),
               "--out", str(tmp_path / "rep")])
    out, err = capsys.readouterr()
    assert rc == 0 and "| fcl | 0.900 ± 0.000 |" in out and "duplicate rows" in err
    assert (tmp_path / "rep" / "table_federated.md").is_file()


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ("method,finetune_mode,n_labeled,fold,client,dice_mean\n", "no rows"),
    ("method,n_labeled\nfcl,1\n", "missing columns"),
    ("method,finetune_mode,n_labeled,fold,client,dice_mean\nfcl,central,1,0,0,0.5\n",
     "unknown finetune_mode"),
])
def test_bad_results_exit_2_with_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "results.csv"
    path.write_text(content)
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


HEADER = "method,finetune_mode,n_labeled,fold,client,dice_mean,dice_rv\n"


@pytest.mark.parametrize("rows, where", [
    ("fcl,local,1,0,0,0.5,0.4\nfcl,local,1,0,1,high,0.4\n", "column dice_mean, row 2: 'high'"),
    ("fcl,local,1,0,0,7.5,0.4\n", "column dice_mean, row 1: 7.5"),
    ("fcl,local,1,0,0,0.5,-0.1\n", "column dice_rv, row 1: -0.1"),
    ("fcl,local,1,0,0,0.5,inf\n", "column dice_rv, row 1: inf"),
])
def test_a_dice_that_is_not_a_number_in_0_1_exits_2_naming_file_column_row(tmp_path, capsys,
                                                                          rows, where):
    path = tmp_path / "results.csv"
    path.write_text(HEADER + rows)
    assert main(["report", str(path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert str(path) in line and where in line, line


def test_empty_dice_cells_are_kept_as_nan(tmp_path, capsys):
    # The platform writes NaN (an empty cell) for a structure absent from mask and prediction.
    path = tmp_path / "results.csv"
    path.write_text(HEADER + "fcl,local,1,0,0,0.5,\nfcl,local,1,0,1,0.7,nan\n")
    results = load_results([str(path)])
    assert results["dice_rv"].isna().all() and results["dice_mean"].tolist() == [0.5, 0.7]
    assert main(["report", str(path)]) == 0
    assert "0.600 ± 0.100" in capsys.readouterr().out


def test_mismatched_sets_and_metric_are_refused(tmp_path, capsys):
    _results().to_csv(tmp_path / "acdc.csv", index=False)
    (_results().drop(columns=["dice_rv", "dice_myo", "dice_lv"]).assign(dice_la=0.5)
     .to_csv(tmp_path / "la.csv", index=False))
    with pytest.raises(ConfigError, match="do not match"):
        load_results([str(tmp_path / "acdc.csv"), str(tmp_path / "la.csv")])
    assert main(["report", str(tmp_path / "acdc.csv"), "--metric", "dice_la"]) == 2
    assert "metric 'dice_la'" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nope.csv")]) == 2
    assert main(["report", "no-such-experiment", "--tracking-uri",
                 f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    assert not (tmp_path / "none.db").exists()        # a typo does not create a store


def test_report_from_mlflow_runs(tmp_path, capsys):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)     # no global MLflow state is changed
    exp = client.create_experiment("bench")
    for i, frame in enumerate([_results(methods=("random",)), _results(methods=("fcl",))]):
        run_dir = tmp_path / f"run{i}"
        run_dir.mkdir()
        frame.to_csv(run_dir / "results.csv", index=False)
        run = client.create_run(exp)
        client.log_artifact(run.info.run_id, str(run_dir / "results.csv"))
        client.set_terminated(run.info.run_id)
    failed = client.create_run(exp)                    # a failed run without results is skipped
    client.set_terminated(failed.info.run_id, status="FAILED")
    results = load_results(["bench"], uri)
    assert set(results["method"]) == {"random", "fcl"} and len(results) == 2 * 24
    assert main(["report", "bench", "--tracking-uri", uri]) == 0
    assert "| random | 0.420 ± 0.008 | 0.520 ± 0.008 |" in capsys.readouterr().out


def test_upper_bound_gets_its_own_column_and_a_line(tmp_path):
    ub = _results(methods=("random",), ns=(3,)).assign(method="upper_bound", dice_mean=0.95)
    results = pd.concat([_results(), ub], ignore_index=True)
    table = paper_table(results, "local")
    assert list(table.columns) == ["N=1", "N=2", "all labels"]
    assert list(table.index) == ["random", "fcl", "upper_bound"]
    assert table.loc["upper_bound", "all labels"] == "0.950 ± 0.000"
    assert table.loc["upper_bound", "N=1"] == "—" and table.loc["fcl", "all labels"] == "—"
    paths = write_report(results, tmp_path)
    csv = pd.read_csv(tmp_path / "table_local.csv").set_index("method")
    assert csv.loc["upper_bound", "all labels mean"] == pytest.approx(0.95)
    assert paths[-1].stat().st_size > 1000
