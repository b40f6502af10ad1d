"""The ``fcl-ray`` command line.

Exit codes: 0 success, 2 bad usage/config/data (one clear line, no traceback), 1 otherwise.
Results (tables, the resolved config) go to stdout; progress and diagnostics are log lines
on stderr (``fcl_ray/log.py``), at the level of ``-q``, ``-v`` or ``--log-level``.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fcl_ray.config import ConfigError
from fcl_ray.log import LEVELS, get_logger, progress, setup_logging


class _Parser(argparse.ArgumentParser):
    """argparse, with the project's answer to bad input: one line, exit code 2."""

    def error(self, message: str):
        self.exit(2, f"fcl-ray: error: {message} (see '{self.prog} --help')\n")


def _add_log_flags(parser: argparse.ArgumentParser, default) -> None:
    """-q/-v/--log-level, on the main parser and on every command (``fcl-ray -q run ...`` and
    ``fcl-ray run ... -q`` both work). Commands default to SUPPRESS, so that a flag given
    before the command is not overwritten by the command's default."""
    flags = parser.add_argument_group("logging (progress lines on stderr)")
    flags.add_argument("-q", "--quiet", action="store_true", default=default,
                       help="warnings and errors only")
    flags.add_argument("-v", "--verbose", action="store_true", default=default,
                       help="debug lines too")
    flags.add_argument("--log-level", type=str.lower, choices=list(LEVELS), default=default,
                       help="the level by name (default: info)")


def _log_level(args, parser: argparse.ArgumentParser) -> str:
    given = [flag for flag, value in (("-q/--quiet", args.quiet), ("-v/--verbose", args.verbose),
                                      ("--log-level", args.log_level)) if value]
    if len(given) > 1:
        parser.error(f"{' and '.join(given)} contradict each other: give one")
    if args.quiet:
        return "warning"
    if args.verbose:
        return "debug"
    return args.log_level or "info"


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fcl-ray", description=__doc__.splitlines()[0])
    _add_log_flags(parser, default=None)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a whole experiment from a YAML config")
    run.add_argument("config", help="experiment YAML, e.g. experiments/quickstart.yaml")
    run.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="KEY=VALUE", help="override a config key, e.g. pretrain.rounds=3")
    run.add_argument("--resume", action="store_true",
                     help="keep finished results in the output dir and continue an interrupted "
                          "pre-training from its last checkpoint (only with the config saved "
                          "there: README, 'Reliability')")
    run.add_argument("--overwrite", action="store_true",
                     help="run into an output dir that holds results: move the earlier run's "
                          "files into <output_dir>/previous-<timestamp>/ first")

    show = sub.add_parser("config", help="print the resolved config (after --set) and exit")
    show.add_argument("config", nargs="?")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    report = sub.add_parser("report", help="the paper's tables, a Dice-vs-N plot and paired "
                            "statistics (reference minus each method) from results.csv files "
                            "or an MLflow experiment; the frozen-encoder probe table when a "
                            "probes.csv sits beside a results.csv")
    report.add_argument("results", nargs="+", metavar="RESULTS_OR_EXPERIMENT",
                        help="results.csv files or run folders written by 'fcl-ray run', "
                             "or MLflow experiment names (their runs' results.csv artifacts)")
    report.add_argument("--out", metavar="DIR", help="write table_local.md/.csv, "
                        "table_federated.md/.csv, dice_vs_n.png and "
                        "paired_differences.md/.csv/.png here")
    report.add_argument("--metric", default="dice_mean",
                        help="column to tabulate (dice_mean, dice_rv, dice_myo, dice_lv, ...)")
    report.add_argument("--reference", default=None, metavar="METHOD",
                        help="method the others are compared with, paired over client, fold "
                             "and seed (default: fcl, skipped with a note when absent)")
    report.add_argument("--pairs", choices=["all", "common"], default="all",
                        help="all: every method must have the reference's (client, fold, seed) "
                             "units (else exit 2); common: pair each method with the reference "
                             "on the units both ran (a grid with fewer folds for some methods)")
    report.add_argument("--tracking-uri", default=None, help="MLflow store for experiment "
                        "names (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")

    data = sub.add_parser("data", help="dataset tools")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    check = data_sub.add_parser("check", help="validate a dataset; print patients per client, "
                                "slices, spacing, intensities, labels and the planned split")
    check.add_argument("config", nargs="?", help="experiment YAML (default: the defaults)")
    check.add_argument("--kind", choices=["synthetic", "acdc", "mnms", "decathlon"])
    check.add_argument("--root", help="dataset folder")
    check.add_argument("--split", choices=["random", "by_site", "by_group", "explicit"])
    check.add_argument("--clients", type=int)
    check.add_argument("--n-labeled", type=int, help="label budget N for the planned counts")
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    sweep = sub.add_parser("sweep", help="a Ray Tune sweep of whole federations (MLflow parent "
                           "run + one child run per trial)")
    sweep.add_argument("sweep_config", help="sweep YAML, e.g. experiments/sweeps/fcl_quick.yaml")
    sweep.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="KEY=VALUE", help="sweep.<key>=v sets a sweep key (e.g. "
                       "sweep.num_samples=8); any other key=v overrides the base experiment")
    sweep.add_argument("--resume", action="store_true", help="continue the sweep of the same "
                       "name after its driver died (Tune experiment restore)")
    sweep.add_argument("--tracking-uri", default=None, help="MLflow server or store (default: "
                       "the sweep file's tracking.uri, $MLFLOW_TRACKING_URI, sqlite:///mlflow.db)")

    bench = sub.add_parser("bench", help="federation overhead over plain PyTorch (round times, "
                           "overhead ratio, first round, bytes, memory) -> CSV + PNG")
    bench.add_argument("--clients", default="2,4,8,16", help="client counts, e.g. 2,4,8,16")
    bench.add_argument("--local-steps", default="10,2", help="local steps per round, e.g. 10,2")
    bench.add_argument("--rounds", type=int, default=3, help="timed rounds after a warm-up")
    bench.add_argument("--out", default="benchmarks", help="folder for the CSV, PNG and .md")
    bench.add_argument("--name", default="bench_cpu", help="file name stem of the outputs")
    bench.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="KEY=VALUE", help="change the workload, e.g. data.image_size=96")
    bench.add_argument("--scale", action="store_true", help="many logical clients instead: "
                       "pre-training round time split, bytes and memory per client, with and "
                       "without sampling (e.g. --clients 16,64,256 --local-steps 2) -> JSON + .md")
    bench.add_argument("--client-actors", type=int, default=4, help="--scale: host processes "
                       "(federation.clients_per_actor = C / this)")
    bench.add_argument("--clients-per-round", type=int, default=16,
                       help="--scale: clients sampled per round in the sampled rows")
    for command in (run, show, report, data, check, sweep, bench):
        _add_log_flags(command, default=argparse.SUPPRESS)
    return parser


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{what} '{text}': expected comma-separated integers") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{what} '{text}': expected positive integers")
    return values


def _bench(args) -> int:
    import platform
    import shlex
    import time

    import pandas as pd

    from fcl_ray.federation.bench import plot_bench, run_bench, seconds_since_process_start
    from fcl_ray.report import to_markdown

    process_start = time.perf_counter() - seconds_since_process_start()
    clients = _int_list(args.clients, "--clients")
    steps = _int_list(args.local_steps, "--local-steps")
    if args.rounds < 1:
        raise ConfigError(f"--rounds {args.rounds}: must be at least 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.scale:
        return _bench_scale(args, clients, steps, out)
    table = pd.concat([run_bench(clients, s, args.rounds, args.overrides, log=progress,
                                 process_start=process_start if i == 0 else None)
                       for i, s in enumerate(steps)], ignore_index=True)
    table.to_csv(out / f"{args.name}.csv", index=False)
    plot_bench(table, out / f"{args.name}.png")
    command = "fcl-ray " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    (out / f"{args.name}.md").write_text(
        f"# {args.name}\n\nMade by `{command}` on {platform.node()} "
        f"({os.cpu_count()} CPUs, torch {__import__('torch').__version__}).\n\n"
        + to_markdown(table.round(3).set_index("clients"), "clients"))
    print(table.round(3).to_string(index=False))
    print(f"written: {out / (args.name + '.csv')}, .png, .md")
    return 0


def _bench_scale(args, clients: list[int], steps: list[int], out: Path) -> int:
    """``fcl-ray bench --scale``: rows of :func:`fcl_ray.federation.scale.run_scale` per
    local-steps value, their ratios, JSON + markdown (+ PNG)."""
    import json
    import platform
    import shlex

    from fcl_ray.federation.scale import plot_scale, run_scale, scale_markdown, scale_summary

    for flag, value in (("--client-actors", args.client_actors),
                        ("--clients-per-round", args.clients_per_round)):
        if value < 1:
            raise ConfigError(f"{flag} {value}: must be at least 1")
    failed: list[dict] = []
    rows = [row for s in steps for row in run_scale(clients, args.client_actors,
                                                    args.clients_per_round, s, args.rounds,
                                                    args.overrides, log=progress, failed=failed)]
    summary = scale_summary(rows, args.clients_per_round)
    command = "fcl-ray " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    machine = (f"{platform.node()} ({os.cpu_count()} CPUs, "
               f"torch {__import__('torch').__version__})")
    (out / f"{args.name}.json").write_text(json.dumps(
        {"command": command, "machine": machine, "summary": summary, "rows": rows,
         "failed": failed},
        indent=1, default=float) + "\n")
    (out / f"{args.name}.md").write_text(scale_markdown(rows, summary, command, machine))
    plot_scale(rows, out / f"{args.name}.png")
    print(json.dumps(summary, indent=1))
    print(f"written: {out / (args.name + '.json')}, .md, .png")
    return 1 if failed else 0


def _sweep(args) -> int:
    from fcl_ray.sweep.run import format_outcome, run_sweep
    from fcl_ray.durable import check_durable_outputs
    from fcl_ray.sweep.spec import load_sweep

    spec = load_sweep(args.sweep_config, args.overrides)
    check_durable_outputs(spec.base_config, storage_path=spec.storage_path,
                          tracking_uri=args.tracking_uri or spec.tracking_uri)
    outcome = run_sweep(spec, resume=args.resume, tracking_uri=args.tracking_uri, log=progress)
    print(format_outcome(spec, outcome))
    if outcome.errors:   # a RayJob / CI step must not report success over failed trials
        print(f"fcl-ray: {outcome.errors} of {len(outcome.trials)} trials errored (status "
              f"ERROR above; Tune's logs in {outcome.experiment_path})", file=sys.stderr)
        return 1
    return 0


def _data(args) -> int:
    from fcl_ray.config_io import load_config
    from fcl_ray.data.check import check_dataset

    flags = {"data.kind": args.kind, "data.root": args.root, "data.split": args.split,
             "data.clients": args.clients, "finetune.n_labeled": args.n_labeled}
    extra = [f"{k}={v}" for k, v in flags.items() if v is not None]
    check_dataset(load_config(args.config, extra + args.overrides))
    return 0


def _run(args) -> int:
    from fcl_ray.config_io import load_config
    from fcl_ray.durable import check_durable_outputs
    from fcl_ray.output_dir import prepare_output_dir

    # Which code runs: in a `ray job submit --working-dir .` job, the uploaded checkout (Ray
    # puts it first on every worker's PYTHONPATH), not the copy installed on the nodes.
    get_logger(__name__).debug(f"fcl_ray code from {Path(__file__).resolve().parent}")
    if args.resume and args.overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: give one")
    cfg = load_config(args.config, args.overrides)   # first: a bad config fails in ~1 s
    check_durable_outputs(cfg)   # in a Ray job: no outputs inside its temporary working dir
    # Before Ray: no resume with another config, no silent replacing of finished results.
    prepare_output_dir(cfg, args.resume, args.overwrite, log=progress)
    get_logger(__name__).debug(f"config {args.config or '(defaults)'} with "
                               f"{len(args.overrides)} override(s), output in "
                               f"{cfg.experiment.output_dir}")
    from fcl_ray import tracking
    from fcl_ray.federation.cluster import (RunInterrupted, connect_ray, disconnect_ray,
                                            stop_on_signals)
    from fcl_ray.federation.driver import run_experiment
    from fcl_ray.report import format_table, ranking_line

    if cfg.data.kind != "synthetic" and not cfg.data.client_roots:
        # Check (and cache) the data here, so a bad file is one line and exit 2, not an error
        # inside a Ray actor. With client_roots the folders live on the sites' machines.
        from fcl_ray.data.check import preflight
        preflight(cfg)
    started_ray = connect_ray(cfg)
    stop_on_signals(cfg.experiment.output_dir)   # after ray.init, which sets its own handler
    context = tracking.TrackingContext()         # receives the MLflow run's id
    try:
        results = run_experiment(cfg, resume=args.resume, tracking_context=context)
    except RunInterrupted as stop:
        if context.run_id:   # stopped, not broken: KILLED in MLflow, as `ray job stop` is
            _mark_killed(tracking.resolve_uri(cfg), context.run_id, stop)
        print(f"fcl-ray: {stop}", file=sys.stderr)
        return stop.exit_code
    finally:
        disconnect_ray(started_ray)
    # The program's output, on stdout; the progress lines above went to stderr.
    print(f"Dice on held-out volumes (mean ± std over {cfg.data.clients} clients), "
          f"from {Path(cfg.experiment.output_dir) / 'results.csv'}:")
    print(format_table(results))
    line = ranking_line(results)
    if line:
        print("\n" + line)
    return 0


def _mark_killed(uri: str, run_id: str, stop) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    client.set_tag(run_id, "ended_by", f"signal {stop.signum}")
    client.set_terminated(run_id, status="KILLED")


def _show_config(args) -> int:
    from fcl_ray.config_io import dump_yaml, load_config

    print(dump_yaml(load_config(args.config, args.overrides)), end="")
    return 0


def _report(args) -> int:
    from fcl_ray.report import (paired_markdown, positive_control_markdown,
                                render_probe_report, render_report, write_paired_report,
                                write_positive_control, write_report)
    from fcl_ray.results import UPPER_BOUND, load_results, probes_beside
    from fcl_ray.statistics import control_gate, paired_differences, positive_control

    results = load_results(args.results, args.tracking_uri)
    text = render_report(results, args.metric)
    reference = args.reference or "fcl"
    paired = None
    if args.reference is None and reference not in set(results["method"]):
        note = f"note: no '{reference}' rows, paired statistics skipped (choose --reference)"
    else:   # an explicit reference that is missing is an error (exit 2)
        paired = paired_differences(results, reference, args.metric, args.pairs)
        note = None if not paired.empty else (
            f"note: no method shares a setting with '{reference}' ({UPPER_BOUND} aside), "
            f"paired statistics skipped")
    dropped = results.attrs.get("duplicates_dropped", 0)
    if dropped:
        print(f"note: {dropped} duplicate rows replaced by the ones read later", file=sys.stderr)
    print(text, end="")
    if paired is not None:
        if not paired.empty:
            print("\n" + paired_markdown(paired), end="")
        for setting in paired.attrs.get("not_compared", []):
            print(f"note: not compared: {setting}", file=sys.stderr)
    if note:
        print(note, file=sys.stderr)
    control = positive_control(results, pairs=args.pairs)   # on dice_mean: the gate's unit
    control_text = None
    if not control.empty:
        control_text = positive_control_markdown(control, control_gate(control))
        print("\n" + control_text, end="")
    probes = probes_beside(args.results)   # written by runs with probes.enabled
    if probes is not None:
        print("\n" + render_probe_report(probes), end="")
    if args.out:
        written = write_report(results, args.out, args.metric)
        if paired is not None:
            written += write_paired_report(paired, args.out)
        if control_text is not None:
            written.append(write_positive_control(control_text, args.out))
        for path in written:
            print(f"wrote {path}")
    return 0


COMMANDS = {"run": _run, "config": _show_config, "report": _report, "data": _data,
            "sweep": _sweep, "bench": _bench}


def _federation_error() -> type:
    """FederationError, imported only when needed (it pulls in Ray)."""
    try:
        from fcl_ray.federation.coordinator import FederationError
    except ImportError:   # pragma: no cover - Ray missing: nothing can raise it
        return ()
    return FederationError


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    setup_logging(_log_level(args, parser))
    from fcl_ray.data import DataError

    try:
        return COMMANDS[args.command](args)
    except (ConfigError, DataError) as err:
        print(f"fcl-ray: error: {err}", file=sys.stderr)
        return 2
    except _federation_error() as err:
        print(f"fcl-ray: federation stopped: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
