"""The README is executed: every command in README.md, cluster/README.md and the docs site's
pages (docs/*.md) is run with tiny settings, checked, or mapped to the test that runs it, so a
stale example fails here. A command that appears on several pages is checked once.

The ```bash blocks are cut into commands (continuation lines joined, comments and a trailing
``&`` dropped, ``;`` separating two commands). Each command must match exactly one entry of
CHECKS (a regular expression searched in the command), which says how it is checked:

  run     an fcl-ray command, run in-process with TINY appended and outputs under tmp_path
  config  an fcl-ray run, sweep or bench too long for here: parsed by the real argument
          parser, its config (or sweep file) resolved with every --set it gives; the entry
          says why it is not run (``not_run``) or names the test that runs it
  help    another tool's command (ray, mlflow, a Python script): the tool itself parses the
          command and its options, with --help appended (an unknown command or option fails)
  make    ``make -n TARGET``: the target exists and its recipe expands
  shell   ``bash -n``: syntax only (export, eval)
  script  ``bash -n`` on the script, and every ``from fcl_ray... import`` in it resolves

``covered_by`` names the test that runs the command for real (a cluster, a server, kubectl);
it must exist. Every repository path a command names must exist. A command that no entry or
two entries match fails, and so does an entry that matches no command (a stale entry).
"""
from __future__ import annotations

import ast
import importlib
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import TINY

# Ray's CLI (ray.scripts.scripts, parsed here for `ray ...` commands) imports Ray Serve's
# pydantic models, which warn about their own deprecated use of pydantic.
pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

ROOT = Path(__file__).resolve().parents[2]
READMES = [ROOT / "README.md", ROOT / "cluster" / "README.md",
           *sorted((ROOT / "docs").glob("*.md"))]   # the docs site's pages


@dataclass(frozen=True)
class Check:
    pattern: str            # searched (re.search) in the command
    how: str                # run, config, help, make, shell, script
    covered_by: str = ""    # tests/<file>.py::<test function> that runs it for real
    not_run: str = ""       # config: why it is only resolved here (when no test runs it)


JOBS = "tests/cluster/test_jobs_api.py::test_jobs_api_runs_the_quickstart_on_a_local_cluster"
SERVER = "tests/integration/test_tracking.py::test_parent_and_child_runs_on_a_real_server"
SWEEP = "tests/integration/test_sweep.py::test_asha_sweep_of_federations_into_mlflow_server"
REGISTERED = ("tests/integration/test_dashboard_run.py::"
            "test_run_publishes_results_and_fine_tunes_from_registered_encoder")
FILES = "tests/cluster/test_cluster_files.py::"
KUBE = FILES + "test_kuberay_manifests_match_the_crd_strictly"

CHECKS = [
    # README.md and the docs pages
    Check(r"^make (run|test)$", "make", "the whole suite (make test is what CI runs)"),
    Check(r"^make docs$", "make", "tests/unit/test_docs.py::test_the_site_builds_in_strict_mode"),
    Check(r"^\.venv/bin/mlflow ui ", "help"),
    Check(r"fcl-ray run experiments/quickstart\.yaml --set pretrain\.rounds=3", "run"),
    Check(r"fcl-ray run experiments/quickstart\.yaml --set 'finetune\.n_labeled=\[1,2\]' --resume$",
          "config", "tests/integration/test_output_dir_run.py::"
          "test_resume_refuses_another_budget_extends_a_grown_one_and_a_second_run_is_refused"),
    Check(r"fcl-ray config ", "run"),
    Check(r"fcl-ray report runs/quickstart/", "run"),
    Check(r"^python -m fcl_ray run experiments/quickstart\.yaml -q$", "config",
          not_run="the quickstart again, as the fcl-ray run commands above run it"),
    Check(r"fcl-ray run experiments/synthetic_benchmark\.yaml$", "config",
          not_run="the v1 benchmark: 31-92 minutes a fold on 2 cores"),
    Check(r"fcl-ray run experiments/benchmark_v2\.yaml$", "config",
          not_run="the v2 benchmark (6 sites, control, probes, converged): hours on 2 cores"),
    Check(r"fcl-ray run experiments/benchmark_v2_paper_scale\.yaml$", "config",
          not_run="the v2 benchmark at paper scale: a GPU recipe"),
    Check(r"^\.venv/bin/python experiments/phantom_checks\.py ", "help",
          "tests/unit/test_phantom_checks.py::test_checks_print_shortcut_calibration_and_gate"),
    Check(r"fcl-ray report runs/synthetic_benchmark/results\.csv --out ", "run"),
    Check(r"^\.venv/bin/fcl-ray sweep ", "config", SWEEP),
    Check(r"^bash experiments/gpu/(run_benchmarks|paper_scale_converged)\.sh$", "script"),
    Check(r"tracking\.register_as=cardiac$", "config", REGISTERED),
    Check(r"finetune\.encoder=models:/cardiac-fcl/1 ", "config", REGISTERED),
    Check(r"fcl-ray data check ", "run"),
    Check(r"fcl-ray (choose|report) runs/benchmark_v2(_chosen)?( |$)", "config",
          "tests/unit/test_validation_choice.py::"
          "test_folders_are_labelled_by_the_fine_tuning_key_they_differ_in"),
    Check(r"fcl-ray run experiments/acdc_quick\.yaml ", "config",
          "tests/integration/test_readers_federation.py::test_run_completes_on_each_real_layout"),
    Check(r"^\.venv/bin/fcl-ray bench$", "config",
          "tests/integration/test_bench.py::test_bench_reports_every_figure"),
    Check(r"^\.venv/bin/fcl-ray bench --scale ", "config",
          "tests/integration/test_bench.py::test_scale_bench_splits_rounds_and_samples_clients"),
    Check(r"^python benchmarks/gpu_bench\.py ", "help"),
    Check(r"^pip install 'fcl-ray\[flower\]'$", "shell"),
    Check(r"^fcl-ray deploy experiments/flower_study\.yaml ", "config",
          "tests/unit/test_flower.py::test_deploy_writes_what_each_party_runs"),
    Check(r"^fcl-ray privacy-audit experiments/quickstart\.yaml +--encoder ", "config",
          not_run="the audit of a finished run's encoder: minutes on 2 cores "
                  "(tests/unit/test_privacy_audit.py runs its parts)"),
    Check(r"^python experiments/privacy_curve\.py experiments/benchmark_v2\.yaml ", "help"),
    Check(r"^python experiments/privacy_epsilon_plan\.py experiments/benchmark_v2\.yaml ", "help"),
    Check(r'^TINY="', "shell"),
    Check(r"\$TINY", "shell"),   # the tiny privacy commands: $TINY is the shell's
    Check(r"^python benchmarks/finetune_speed\.py ", "help"),
    Check(r"^cluster/mlflow-server\.sh (up|down)$", "script", SERVER),
    # cluster/README.md
    Check(r"^make setup$", "make"),
    Check(r"^cluster/local\.sh (up|down)$", "script", JOBS),
    Check(r'^eval "\$\(cluster/local\.sh env\)"$', "shell", JOBS),
    Check(r"^export ", "shell"),
    Check(r"^(RAY_\w+=\S+ )*ray job submit ", "help", JOBS),   # + its fcl-ray entrypoint
    Check(r"^ray job (list|logs)\b", "help", JOBS),
    Check(r"^cluster/image\.sh use ", "script",
          FILES + "test_image_script_sets_the_registry_once_in_every_file"),
    Check(r"^cluster/image\.sh (build|push)$", "script",
          FILES + "test_image_script_refuses_to_build_the_placeholder"),
    Check(r"^ray get-auth-token --generate$", "help"),
    Check(r"^ray (up|exec|dashboard|down) cluster/gpu-cluster\.yaml", "help",
          FILES + "test_launcher_yaml_passes_rays_own_validation"),
    Check(r"^kubectl ", "shell", KUBE),
]

DATA_TINY = ["data.folds=2", "data.image_size=32", "data.partitions=2"]


def _cut(line: str) -> list[str]:
    """A shell line without its comment (an unquoted ``#`` after a space), split at unquoted
    ``;``, each part without a trailing ``&``."""
    parts, current, quote = [], "", None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            break
        elif ch == ";":
            parts.append(current)
            current = ""
            continue
        current += ch
    parts.append(current)
    return [p.strip().removesuffix("&").strip() for p in parts if p.strip()]


def readme_commands() -> list[tuple[str, str]]:
    """(README name, command) for every command of every ```bash block, in order."""
    commands = []
    for readme in READMES:
        for block in re.findall(r"^```bash\n(.*?)^```", readme.read_text(), re.S | re.M):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                commands += [(readme.relative_to(ROOT).as_posix(), c) for c in _cut(line)]
    return commands


COMMANDS = readme_commands()


def _matches(command: str) -> list[Check]:
    return [c for c in CHECKS if re.search(c.pattern, command)]


def test_every_command_is_checked_once_and_every_check_is_used():
    assert len(COMMANDS) > 40, COMMANDS            # the parser found the blocks
    unchecked = [c for _, c in COMMANDS if not _matches(c)]
    twice = [c for _, c in COMMANDS if len(_matches(c)) > 1]
    unused = [c.pattern for c in CHECKS if not any(re.search(c.pattern, x) for _, x in COMMANDS)]
    assert not unchecked, f"README commands no entry of CHECKS covers: {unchecked}"
    assert not twice, f"README commands two entries of CHECKS match: {twice}"
    assert not unused, f"entries of CHECKS that match no README command (stale): {unused}"


def test_every_command_only_resolved_says_why_it_is_not_run():
    """A ``config`` entry names the test that runs the command, or why nothing here does."""
    unexplained = [c.pattern for c in CHECKS
                   if c.how == "config" and "::" not in c.covered_by and not c.not_run]
    assert not unexplained, unexplained


def test_the_tests_that_cover_commands_exist():
    for check in CHECKS:
        if "::" not in check.covered_by:
            continue
        path, name = check.covered_by.split("::")
        tree = ast.parse((ROOT / path).read_text())
        functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert name in functions, f"{check.pattern}: {check.covered_by} does not exist"


def test_every_repository_path_a_command_names_exists():
    tops = ("cluster/", "experiments/", "benchmarks/", "docs/", "tests/")
    for readme, command in COMMANDS:
        for token in re.split(r"[\s'\"=]+", command.replace("/home/ray/fcl-ray/", "")):
            if token.startswith(tops) and not token.startswith("experiments/results"):
                assert (ROOT / token).exists(), f"{readme}: `{command}` names missing {token}"


# ----------------------------------------------------------------------------- the checks
class Workspace:
    """Where the commands run: outputs, MLflow store and datasets under tmp_path."""

    def __init__(self, tmp: Path):
        from nifti_factories import write_acdc, write_decathlon, write_mnms

        self.tmp = tmp
        self.uri = f"sqlite:///{tmp / 'mlflow.db'}"
        self.paths = {   # README path -> stand-in (whole tokens, or the value of key=value)
            "/data/ACDC": write_acdc(tmp / "ACDC", n_cases=20,                  # 10 clients x 2
                                     groups=("DCM", "HCM", "MINF", "NOR", "RV")),  # or 5 x 4
            "/data/MnM": write_mnms(tmp / "MnM", vendors=tuple("AABBCCDD")),    # 4 vendors x 2
            "/data/Task02_Heart": write_decathlon(tmp / "Task02_Heart", n_cases=8),
            "runs/synthetic_benchmark/results.csv": ROOT / "experiments/results/results.csv",
            "experiments/results": tmp / "report",
            "runs": tmp / "runs",
            "/home/ray/fcl-ray": ROOT,
            "/mnt/runs": tmp / "mnt-runs",
        }

    def local(self, token: str) -> str:
        for path, stand_in in self.paths.items():
            if token == path or token.startswith(path + "/"):
                return str(stand_in) + token[len(path):]
        key, eq, value = token.partition("=")
        return key + eq + self.local(value) if eq and value != token else token


def _program_args(command: str) -> tuple[str, list[str]]:
    """('fcl-ray', args) for the project's command (also the entrypoint of a `ray job
    submit`), else (the program, args); leading NAME=value assignments dropped."""
    tokens = shlex.split(command)
    while tokens and re.match(r"^\w+=", tokens[0]):
        tokens = tokens[1:]
    if "--" in tokens and tokens[0] == "ray":
        tokens = tokens[tokens.index("--") + 1:]
    if tokens[:3] == ["python", "-m", "fcl_ray"]:
        return "fcl-ray", tokens[3:]
    if tokens[0] in ("fcl-ray", ".venv/bin/fcl-ray"):
        return "fcl-ray", tokens[1:]
    return tokens[0].removeprefix(".venv/bin/"), tokens[1:]


def _sets(args: list[str]) -> list[str]:
    return [x for o in args for x in ("--set", o)]


def _run(args: list[str], ws: Workspace) -> None:
    from fcl_ray.cli import _build_parser, main
    from fcl_ray.config_io import load_config

    args = [ws.local(a) for a in args]
    parsed = _build_parser().parse_args(args)
    if parsed.command == "run":
        out = ws.local(load_config(parsed.config, parsed.overrides).experiment.output_dir)
        args += _sets(TINY + [f"experiment.output_dir={Path(out).resolve()}",
                              f"tracking.uri={ws.uri}"])
    elif parsed.command == "data":
        args += _sets(DATA_TINY + [f"data.cache_dir={ws.tmp / 'cache'}"])
    assert main(args) == 0, args


def _resolve(args: list[str], ws: Workspace) -> None:
    from fcl_ray.cli import _build_parser
    from fcl_ray.config_io import load_config
    from fcl_ray.sweep.spec import load_sweep

    parsed = _build_parser().parse_args([ws.local(a) for a in args])   # bad flags: exit 2
    if parsed.command == "run":
        load_config(parsed.config, parsed.overrides)
    elif parsed.command == "sweep":
        load_sweep(parsed.sweep_config, parsed.overrides)
    elif parsed.command in ("deploy", "privacy-audit"):
        load_config(parsed.config, parsed.overrides)
    elif parsed.command in ("choose", "report"):   # a finished run's folders: parsed only
        pass
    else:
        assert parsed.command == "bench", parsed


def _help(command: str, ws: Workspace) -> None:
    program, args = _program_args(command)
    if program == "fcl-ray":                    # `ray job submit -- fcl-ray ...`: both
        _resolve(args, ws)
        program, args = _program_args(command.split(" -- ")[0])
    if program in ("ray", "mlflow"):
        cli = (importlib.import_module("ray.scripts.scripts") if program == "ray"
               else importlib.import_module("mlflow.cli")).cli
        assert cli.main(args=args + ["--help"], prog_name=program, standalone_mode=False) == 0
    else:
        assert program == "python", command
        done = subprocess.run([sys.executable, *args, "--help"], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]


def _script(command: str) -> None:
    program, args = _program_args(command)
    script = ROOT / (args[0] if program == "bash" else program)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, script
    for module, names in re.findall(r"^from (fcl_ray[\w.]*) import ([\w, ]+)$",
                                    script.read_text(), re.M):
        imported = importlib.import_module(module)
        missing = [n.strip() for n in names.split(",") if not hasattr(imported, n.strip())]
        assert not missing, f"{script}: {module} has no {missing}"


def check_command(command: str, ws: Workspace) -> None:
    (check,) = _matches(command)
    if check.how != "shell":   # what the shell does, in the checkout (cluster/README.md: $PWD)
        command = command.replace("$PWD", str(ROOT))
    if check.how == "run":
        _run(_program_args(command)[1], ws)
    elif check.how == "config":
        _resolve(_program_args(command)[1], ws)
    elif check.how == "help":
        _help(command, ws)
    elif check.how == "make":
        done = subprocess.run(["make", "-n", *shlex.split(command)[1:]], cwd=ROOT,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    elif check.how == "shell":
        assert subprocess.run(["bash", "-n", "-c", command]).returncode == 0, command
    else:
        assert check.how == "script", check
        _script(command)


def test_readme_commands(ray_session, tmp_path, monkeypatch, capsys):
    """Every command, in README order (the fine-tuning run uses the encoder registered by the
    one before it), each distinct command once; the failures are listed together."""
    monkeypatch.chdir(ROOT)
    ws = Workspace(tmp_path)
    failed, done = [], set()
    for readme, command in COMMANDS:
        if command in done:   # the same command on another page: checked already
            continue
        done.add(command)
        try:
            check_command(command, ws)
        except (Exception, SystemExit) as err:   # noqa: BLE001  (listed below, all at once)
            failed.append(f"{readme}: `{command}`: {type(err).__name__}: {err}")
    capsys.readouterr()
    assert not failed, "\n".join(failed)
