"""The ``fcl-ray`` command line.

Exit codes: 0 success, 2 bad usage/config/data (one clear line, no traceback), 1 otherwise.
"""
from __future__ import annotations

import argparse
import sys

from fcl_ray.config import ConfigError


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fcl-ray", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a whole experiment from a YAML config")
    run.add_argument("config", help="experiment YAML, e.g. experiments/quickstart.yaml")
    run.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="KEY=VALUE", help="override a config key, e.g. federation.rounds=3")

    show = sub.add_parser("config", help="print the resolved config (after --set) and exit")
    show.add_argument("config", nargs="?")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    report = sub.add_parser("report", help="tables from a results.csv")
    report.add_argument("results", help="a results.csv written by 'fcl-ray run'")
    return parser


def _run(args) -> int:
    from fcl_ray.config import load_config
    from fcl_ray.federation.experiment import run_experiment

    cfg = load_config(args.config, args.overrides)
    run_experiment(cfg)
    return 0


def _show_config(args) -> int:
    from fcl_ray.config import dump_yaml, load_config

    print(dump_yaml(load_config(args.config, args.overrides)), end="")
    return 0


def _report(args) -> int:
    from pathlib import Path

    import pandas as pd

    from fcl_ray.report import RESULT_COLUMNS, format_table

    path = Path(args.results)
    if not path.is_file():
        raise ConfigError(f"results file '{path}': not found")
    results = pd.read_csv(path)
    missing = [c for c in RESULT_COLUMNS if c not in results.columns]
    if results.empty or missing:
        raise ConfigError(f"results file '{path}': " + ("is empty" if results.empty
                          else f"missing columns {', '.join(missing)}"))
    print(format_table(results))
    return 0


COMMANDS = {"run": _run, "config": _show_config, "report": _report}


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    from fcl_ray.data import DataError

    try:
        return COMMANDS[args.command](args)
    except (ConfigError, DataError) as err:
        print(f"fcl-ray: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
