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

import fcl_ray
from fcl_ray.config import SITE_UNITS, ConfigError
from fcl_ray.errors import FclRayError, RunInterrupted
from fcl_ray.log import LEVELS, progress, setup_logging


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
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {fcl_ray.__version__}")
    _add_log_flags(parser, default=None)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a whole experiment from a YAML config")
    run.add_argument("config", help="experiment YAML, e.g. experiments/quickstart.yaml")
    run.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="KEY=VALUE", help="override a config key, e.g. pretrain.rounds=3")
    run.add_argument("--resume", action="store_true",
                     help="keep finished results in the output dir and continue an interrupted "
                          "pre-training from its last checkpoint (only with the config saved "
                          "there: docs/reliability.md)")
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
                        help="column to tabulate: dice_mean or dice_<class> (cardiac: dice_rv, "
                             "dice_myo, dice_lv; Decathlon: its dataset.json labels)")
    report.add_argument("--reference", default=None, metavar="METHOD",
                        help="method the others are compared with, paired over client, fold "
                             "and seed (default: fcl, skipped with a note when absent)")
    report.add_argument("--pairs", choices=["all", "common"], default="all",
                        help="all: every method must have the reference's (client, fold, seed) "
                             "units (else exit 2); common: pair each method with the reference "
                             "on the units both ran (a grid with fewer folds for some methods)")
    report.add_argument("--sites", choices=SITE_UNITS, default="client",
                        help="the independent unit of the client-level CI and sign-flip p. "
                             "client: a client id is one site in every seed (data on disk; "
                             "the default, the cautious one); seed_client: each "
                             "experiment.seed drew its own sites (the synthetic phantom draws "
                             "every site's scanner and patients from the seed), so each "
                             "(seed, client) is a site of its own")
    report.add_argument("--tracking-uri", default=None, help="MLflow store for experiment "
                        "names (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")

    choose = sub.add_parser("choose", help="choose a fine-tuning setting on validation "
                            "Dice, setting by setting, from run folders that share their "
                            "encoders and differ in a fine-tuning key (docs/benchmark.md)")
    choose.add_argument("folders", nargs="+", metavar="RUN_FOLDER",
                        help="run folders written by 'fcl-ray run', one per candidate")
    choose.add_argument("--out", metavar="DIR", help="write the chosen rows (results.csv, "
                        "which 'fcl-ray report' reads), choices.csv/.md and probes.csv here")

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
    deploy = sub.add_parser("deploy", help="write what each party of a Flower deployment runs "
                            "(SuperLink, one SuperNode per site, TLS certificates, SuperNode "
                            "keys, README) into --out (needs the 'flower' extra)")
    deploy.add_argument("config", help="experiment YAML of the study")
    deploy.add_argument("--out", required=True, metavar="DIR", help="an empty folder")
    deploy.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config key")
    deploy.add_argument("--host", default="localhost",
                        help="the SuperLink's address as the sites reach it (in its certificate)")
    deploy.add_argument("--port", type=int, default=9092, help="the SuperLink's HTTPS port")
    deploy.add_argument("--bind", default="0.0.0.0", help="the address the SuperLink listens on")
    deploy.add_argument("--data-root", dest="data_roots", action="append", default=[],
                        metavar="SITE=PATH", help="a site's data folder on its own host")
    deploy.add_argument("--supernode-port", type=int, default=9094,
                        help="site i's SuperNode serves its ClientApps on this port + i")
    deploy.add_argument("--certs", metavar="DIR", help="use this CA and server certificate "
                        "(ca.crt, server.pem, server.key) instead of making new ones")
    audit = sub.add_parser("privacy-audit", help="what the exchanged features reveal: an "
                           "honest-but-curious coordinator inverts a site's (noised) rows back "
                           "to slices and tests membership, at several noise multipliers, "
                           "against sharing nothing (docs/privacy.md)")
    audit.add_argument("config", help="experiment YAML (its data, model, pretrain.rounds, "
                       "pretrain.exchange_size and privacy.unit/delta are used)")
    audit.add_argument("--encoder", metavar="FILE", help="the encoder the coordinator holds: "
                       "a run's encoders/<method>-fold<k>.pt or a client checkpoint file "
                       "(default: random init)")
    audit.add_argument("--multipliers", default="0,0.5,1,2",
                       help="noise multipliers to audit, e.g. 0,0.5,1,2")
    audit.add_argument("--client", type=int, default=0, help="the target site")
    audit.add_argument("--fold", type=int, default=0, help="whose pool is the target's")
    audit.add_argument("--decoder-steps", type=int, default=300)
    audit.add_argument("--segmenter-steps", type=int, default=200)
    audit.add_argument("--heldout", type=int, metavar="N",
                       help="non-members for the membership test: N more patients of the "
                       "target site that no run trains on, drawn on the phantom (default 100; "
                       "data on disk: 0, its test-fold patients only)")
    audit.add_argument("--out", metavar="DIR", help="folder for privacy_audit.csv/.md "
                       "(default: <output_dir>/privacy_audit)")
    audit.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="KEY=VALUE", help="override a config key")
    for command in (run, show, report, choose, data, check, sweep, bench, deploy, audit):
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
    from fcl_ray.outputs import check_folder

    check_folder("--out", args.out)   # before any benchmark runs
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


def _deploy(args) -> int:
    from fcl_ray.flower import require_flower

    require_flower("fcl-ray deploy")
    from fcl_ray.config_io import load_config
    from fcl_ray.flower.deploy import parse_site_roots, write_deployment

    cfg = load_config(args.config, args.overrides)
    paths = write_deployment(cfg, Path(args.out), args.host, args.port,
                             parse_site_roots(args.data_roots), args.bind,
                             args.supernode_port, Path(args.certs) if args.certs else None)
    print(f"wrote {len(paths)} files under {args.out}; read {paths[0]} first")
    return 0


def _sweep(args) -> int:
    from fcl_ray.api import run_sweep_file

    spec, outcome = run_sweep_file(args.sweep_config, args.overrides, resume=args.resume,
                                   tracking_uri=args.tracking_uri)
    from fcl_ray.sweep.run import format_outcome

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
    from fcl_ray.api import run

    try:
        outcome = run(args.config, args.overrides, resume=args.resume, overwrite=args.overwrite)
    except RunInterrupted as stop:
        print(f"fcl-ray: {stop}", file=sys.stderr)
        return stop.exit_code
    from fcl_ray.report import format_table, ranking_line

    if outcome.config.probes.only:   # nothing fine-tuned: the probe table is the output
        return _print_probes(outcome)
    # The program's output, on stdout; the progress lines above went to stderr.
    print(f"Dice on held-out volumes (mean ± std over {outcome.config.data.clients} clients), "
          f"from {outcome.output_dir / 'results.csv'}:")
    print(format_table(outcome.table))
    line = ranking_line(outcome.table)
    if line:
        print("\n" + line)
    from fcl_ray.privacy.budget import summary_lines

    privacy = summary_lines(outcome.output_dir)
    if privacy:
        print(f"\nPrivacy of the feature exchange ({outcome.output_dir / 'privacy.json'}):")
        print("\n".join(privacy))
    return 0


def _print_probes(outcome) -> int:
    """A ``probes.only`` run's output: its probe table, from probes.csv."""
    from fcl_ray.report import render_probe_report

    print(f"Frozen-encoder probes of {outcome.config.data.clients} clients, from "
          f"{outcome.output_dir / 'probes.csv'} (probes.only: nothing fine-tuned):")
    print(render_probe_report(outcome.probes()))
    return 0


def _show_config(args) -> int:
    from fcl_ray.config_io import dump_yaml, load_config

    print(dump_yaml(load_config(args.config, args.overrides)), end="")
    return 0


def _report(args) -> int:
    from fcl_ray.api import report
    from fcl_ray.outputs import check_folder

    if args.out:   # before reading anything: a bad --out fails first
        check_folder("--out", args.out)
    rep = report(args.results, args.reference, args.pairs, metric=args.metric,
                 tracking_uri=args.tracking_uri, sites=args.sites)
    for note in rep.read_notes:
        print(note, file=sys.stderr)
    print(rep.tables, end="")
    if rep.paired_text:
        print("\n" + rep.paired_text, end="")
    for note in rep.notes:
        print(note, file=sys.stderr)
    for text in (rep.control_text, rep.probes_text):
        if text:
            print("\n" + text, end="")
    if args.out:
        for path in rep.write(args.out):
            print(f"wrote {path}")
    return 0


def _choose(args) -> int:
    from fcl_ray.outputs import check_folder
    from fcl_ray.machine import different_machines
    from fcl_ray.validation_choice import choose

    if args.out:   # before reading anything: a bad --out fails first
        check_folder("--out", args.out)
    choice = choose(args.folders)
    print(choice.text, end="")
    warning = different_machines(args.folders)
    if warning:
        print(f"fcl-ray: warning: choose: {warning}", file=sys.stderr)
    if args.out:
        for path in choice.write(args.out):
            print(f"wrote {path}")
    return 0


def _float_list(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{what} '{text}': expected comma-separated numbers") from None
    if not values or not all(v >= 0 and v < float("inf") for v in values):
        raise ConfigError(f"{what} '{text}': expected finite numbers >= 0")
    return values


def _privacy_audit(args) -> int:
    from fcl_ray.config_io import load_config
    from fcl_ray.privacy.audit_cli import audit_command

    cfg = load_config(args.config, args.overrides)
    multipliers = _float_list(args.multipliers, "--multipliers")
    for flag, value in (("--decoder-steps", args.decoder_steps),
                        ("--segmenter-steps", args.segmenter_steps)):
        if value < 1:
            raise ConfigError(f"{flag} {value}: must be at least 1")
    print(audit_command(cfg, multipliers, args.encoder, args.client, args.fold,
                        args.decoder_steps, args.segmenter_steps, args.out, args.heldout),
          end="")
    return 0


COMMANDS = {"run": _run, "config": _show_config, "report": _report, "data": _data,
            "sweep": _sweep, "bench": _bench, "deploy": _deploy,
            "privacy-audit": _privacy_audit, "choose": _choose}


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
    try:
        return COMMANDS[args.command](args)
    except FclRayError as err:   # bad input: ConfigError, DataError
        print(f"fcl-ray: error: {err}", file=sys.stderr)
        return 2
    except _federation_error() as err:
        print(f"fcl-ray: federation stopped: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
