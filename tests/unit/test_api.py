"""The Python API (fcl_ray.run / report / sweep, __version__): the command line's work and
its one-line errors, as objects and one exception type; no Ray here (bad input stops first)."""
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import fcl_ray
from fcl_ray.cli import main
from fcl_ray.config import ConfigError
from fcl_ray.data import DataError

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "experiments" / "quickstart.yaml")


def _cli_error(argv: list[str], capsys) -> str:
    """The one line ``fcl-ray`` prints for bad input, without its ``fcl-ray: error:``."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("fcl-ray: error: "), err
    return err.removeprefix("fcl-ray: error: ").rstrip("\n")


def test_importing_the_package_loads_no_ray_torch_or_mlflow_and_writes_no_environment():
    code = ("import os, sys; before = dict(os.environ); import fcl_ray; "
            "fcl_ray.__version__; fcl_ray.run, fcl_ray.report, fcl_ray.sweep; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'ray', 'torch', 'mlflow', 'monai', 'matplotlib', 'pandas'}), "
            "dict(os.environ) == before)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.strip()
    assert out == "[] True", out


def test_version_from_the_package_metadata(capsys):
    assert fcl_ray.__version__ == importlib.metadata.version("fcl-ray")
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"fcl-ray {fcl_ray.__version__}\n"


def test_one_exception_type_for_bad_input():
    assert issubclass(ConfigError, fcl_ray.FclRayError)
    assert issubclass(DataError, fcl_ray.FclRayError)
    assert issubclass(fcl_ray.FclRayError, ValueError)
    assert str(fcl_ray.FclRayError("a\nb")) == "a\\nb"   # always one line


@pytest.mark.parametrize("overrides", [["pretrain.bogus=1"], ["pretrain.rounds=many"],
                                       ["data.clients=0"], ["no-equals-sign"]])
def test_run_with_a_bad_key_or_value_raises_the_clis_line(overrides, capsys):
    expected = _cli_error(["run", QUICKSTART] + [a for o in overrides for a in ("--set", o)],
                          capsys)
    with pytest.raises(fcl_ray.FclRayError) as err:   # not SystemExit: fine in a notebook
        fcl_ray.run(QUICKSTART, overrides)
    assert str(err.value) == expected


def test_run_takes_one_override_as_text_and_a_config_or_dict(capsys):
    with pytest.raises(fcl_ray.FclRayError, match="unknown config key 'pretrain.bogus'"):
        fcl_ray.run(QUICKSTART, "pretrain.bogus=1")
    with pytest.raises(fcl_ray.FclRayError, match="config key 'pretrain.rounds'"):
        fcl_ray.run({"pretrain": {"rounds": "many"}})
    from fcl_ray.config import Config

    with pytest.raises(fcl_ray.FclRayError, match="unknown config key 'data.bogus'"):
        fcl_ray.run(Config(), ["data.bogus=1"])
    with pytest.raises(fcl_ray.FclRayError, match="expected a YAML file's path"):
        fcl_ray.run(42)
    with pytest.raises(fcl_ray.FclRayError, match="override 3: expected key=value"):
        fcl_ray.run(None, [3])


def test_run_checks_the_output_folder_as_the_cli_does(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.csv").write_text("method,dice_mean\nfcl,0.5\n")
    argv = ["run", QUICKSTART, "--set", f"experiment.output_dir={out}"]
    expected = _cli_error(argv, capsys)
    with pytest.raises(fcl_ray.FclRayError) as err:
        fcl_ray.run(QUICKSTART, [f"experiment.output_dir={out}"])
    assert str(err.value) == expected and "already holds results" in expected
    expected = _cli_error(argv + ["--resume", "--overwrite"], capsys)
    with pytest.raises(fcl_ray.FclRayError) as err:
        fcl_ray.run(QUICKSTART, [f"experiment.output_dir={out}"], resume=True, overwrite=True)
    assert str(err.value) == expected
    assert (out / "results.csv").is_file()   # nothing was moved or started


def _results_csv(path: Path, methods=("fcl", "random")) -> Path:
    rows = [{"method": m, "finetune_mode": mode, "n_labeled": n, "fold": f, "client": c,
             "dice_mean": 0.4 + (0.1 + 0.01 * c * (f + 1)) * (m == "fcl") + 0.05 * n
             + 0.01 * c + 0.02 * f}
            for m in methods for mode in ("local", "federated") for n in (1, 2)
            for f in (0, 1) for c in (0, 1, 2)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_report_returns_what_the_cli_prints(tmp_path, capsys):
    path = _results_csv(tmp_path / "results.csv")
    assert main(["report", str(path)]) == 0
    printed = capsys.readouterr().out
    rep = fcl_ray.report(path)
    assert rep.text == printed
    assert "### local fine-tuning" in rep.tables and rep.paired_text in rep.text
    assert list(rep.paired["method"].unique()) == ["random"]
    assert rep.notes == [] and rep.control.empty and rep.probes is None
    # the same from a DataFrame, and from a list of sources
    assert fcl_ray.report(pd.read_csv(path)).text == printed
    assert fcl_ray.report([path]).text == printed
    # the Dice-vs-N plot as a Figure, without pyplot
    figure = rep.figure()
    assert type(figure).__name__ == "Figure" and len(figure.axes) == 2
    written = fcl_ray.report(path, out=tmp_path / "rep").write(tmp_path / "rep2")
    assert {p.name for p in written} == {p.name for p in (tmp_path / "rep").iterdir()}


def test_report_notes_and_bad_input(tmp_path, capsys):
    path = _results_csv(tmp_path / "results.csv", methods=("random", "fedswav"))
    assert main(["report", str(path)]) == 0
    err = capsys.readouterr().err
    rep = fcl_ray.report(str(path))
    assert rep.paired is None and rep.notes == err.splitlines() and "no 'fcl' rows" in err
    for argv, kwargs in [(["--reference", "fcl"], {"reference": "fcl"}),
                         (["--metric", "dice_la"], {"metric": "dice_la"})]:
        expected = _cli_error(["report", str(path)] + argv, capsys)
        with pytest.raises(fcl_ray.FclRayError) as raised:
            fcl_ray.report(path, **kwargs)
        assert str(raised.value) == expected
    with pytest.raises(fcl_ray.FclRayError, match="pairs must be 'all' or 'common'"):
        fcl_ray.report(path, pairs="some")
    with pytest.raises(fcl_ray.FclRayError, match="expected results.csv files"):
        fcl_ray.report(42)


def test_sweep_with_a_bad_file_raises_the_clis_line(tmp_path, capsys):
    spec = tmp_path / "sweep.yaml"
    spec.write_text("sweep:\n  name: s\n  num_samples: 0\n")
    for source in (spec, tmp_path / "missing.yaml"):
        expected = _cli_error(["sweep", str(source)], capsys)
        with pytest.raises(fcl_ray.FclRayError) as err:
            fcl_ray.sweep(source)
        assert str(err.value) == expected


def test_the_api_names_stay_functions_beside_the_modules_of_the_same_name():
    """fcl_ray/report.py and fcl_ray/sweep/ exist too: importing them must not replace the
    API's functions (the import system sets the package's attribute to the module)."""
    import fcl_ray.report
    import fcl_ray.sweep.run  # noqa: F401
    from fcl_ray.report import render_report

    assert callable(fcl_ray.report) and fcl_ray.report is fcl_ray.api.report
    assert fcl_ray.sweep is fcl_ray.api.sweep
    assert render_report.__module__ == "fcl_ray.report"


def _readme_python() -> list[str]:
    """The ```python blocks of the README and of the docs site's pages (a block inside a list
    item is indented; it is dedented here)."""
    import textwrap

    blocks = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        blocks += [textwrap.dedent(block.split("```", 1)[0].rsplit("\n", 1)[0] + "\n")
                   for block in text.split("```python\n")[1:]]
    return blocks


def test_the_readmes_python_uses_the_api_as_it_is():
    """The README's and the docs' ```python blocks are not run (a real-size run); checked
    instead: every ``fcl_ray.<name>(...)`` exists and takes its arguments, the files and
    overrides it names load, and the attributes read from what it returns exist."""
    import ast
    import dataclasses
    import inspect

    from fcl_ray.config_io import load_config
    from fcl_ray.sweep.run import SweepOutcome
    from fcl_ray.sweep.spec import load_sweep

    returns = {"run": fcl_ray.RunResults, "report": fcl_ray.Report, "sweep": SweepOutcome}
    blocks = _readme_python()
    assert blocks, "the README has no python block"
    for block in blocks:
        tree = ast.parse(block)
        made = {}   # variable -> what it holds
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) \
                    and isinstance(node.value.func, ast.Attribute) \
                    and getattr(node.value.func.value, "id", "") == "fcl_ray":
                made[node.targets[0].id] = returns[node.value.func.attr]
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and getattr(node.func.value, "id", "") == "fcl_ray":
                name = node.func.attr
                assert name in fcl_ray.__all__, name
                args = [ast.literal_eval(a) if isinstance(a, ast.Constant | ast.List) else None
                        for a in node.args]
                inspect.signature(getattr(fcl_ray, name)).bind(
                    *args, **{k.arg: None for k in node.keywords})
                if name == "run":
                    load_config(ROOT / args[0], args[1])
                if name == "sweep":
                    load_sweep(ROOT / args[0], args[1])
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and getattr(node.value, "id", "") in made:
                kind = made[node.value.id]
                names = {f.name for f in dataclasses.fields(kind)} | set(dir(kind))
                assert node.attr in names, f"{node.value.id}.{node.attr}"
