"""Chaos drill (issue 21): a 20-round FCL run hit by a seeded schedule of faults, against
the fault-free run with the same config and seeds.

Both runs are ``fcl-ray run`` driver processes on one local Ray cluster this script starts
(2 CPUs); the chaos monkey (fcl_ray/chaos_drill.py) follows the chaos run's rounds.jsonl
and SIGKILLs client actor processes (about one every three rounds), freezes clients with
SIGSTOP past ``federation.round_timeout_s`` (stragglers), and SIGKILLs the driver once,
restarting it with ``--resume``. ``federation.max_restarts`` is raised to 20 so that the
repeated kills never exhaust Ray's restarts of one client (the default, 3, could be spent by
a seed that hits one client four times).

    PYTHONPATH=. python benchmarks/chaos.py --out benchmarks/chaos_cpu

Writes ``<out>.json`` (every figure) and ``<out>.md`` (the summary); the runs' folders
(rounds.jsonl, results.csv, driver.log, mlflow.db) stay under ``--work-dir``.
Goals: rounds completed >= 95 %, mean |Dice difference| <= 0.01 (and within the floor),
every results row and MLflow metric present, the MLflow run FINISHED. ``--floor`` adds a second fault-free run that
differs only in ``pretrain.sampler_seed``: the Dice difference chance alone makes, which the
chaos run's is set against; each restarted client's rejoin (rounds missed, state restored) is
read from rounds.jsonl.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # run from anywhere: this checkout's fcl_ray

from fcl_ray.chaos import chaos_schedule                              # noqa: E402
from fcl_ray.chaos_drill import ChaosMonkey, DrillError, compare, run_figures  # noqa: E402

CONFIG = ROOT / "experiments" / "quickstart.yaml"   # overridden below to a small drill


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr and exit 2 (argparse alone prints the usage too)."""

    def error(self, message: str):
        print(f"chaos.py: error: {message}", file=sys.stderr)
        sys.exit(2)


def positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: '{text}'") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def parse_args(argv=None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=positive(int), default=20)
    parser.add_argument("--clients", type=positive(int), default=3)
    parser.add_argument("--seed", type=int, default=0, help="experiment and schedule seed")
    parser.add_argument("--kill-every", type=positive(int), default=3)
    parser.add_argument("--stragglers", type=int, default=None,
                        help="straggler events (default: one per 10 rounds)")
    parser.add_argument("--finetune-steps", type=positive(int), default=200,
                        help="local fine-tuning steps per client after pre-training (enough "
                        "for Dice well above chance, so the Dice comparison means something)")
    parser.add_argument("--round-timeout", type=positive(float), default=12.0,
                        help="federation.round_timeout_s of both runs")
    parser.add_argument("--timeout", type=positive(float), default=1800.0,
                        help="seconds a run may take before the drill gives up")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="change the drill's config for both runs, e.g. data.image_size=48")
    parser.add_argument("--floor", action="store_true",
                        help="also a second fault-free run differing only in "
                        "pretrain.sampler_seed (--floor-seed): the Dice difference chance alone "
                        "makes, the yardstick for the chaos run's")
    parser.add_argument("--floor-seed", type=positive(int), default=1,
                        help="pretrain.sampler_seed of the floor run (the others use 0)")
    parser.add_argument("--work-dir", default=str(ROOT / "runs" / "chaos"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "chaos_cpu"),
                        help="figures: <out>.json and <out>.md")
    args = parser.parse_args(argv)
    if args.clients < 2:
        parser.error("--clients must be at least 2 (a kill must leave a client to answer)")
    try:
        args.schedule = chaos_schedule(args.rounds, args.seed, args.kill_every, args.stragglers)
    except ValueError as err:
        parser.error(str(err))
    return args


def overrides(args, out_dir: Path) -> list[str]:
    """The drill's config: small volumes and networks, FCL only, local fine-tuning with a
    fixed step budget; rounds of ~1-2 s (a 1 s injected delay per client and round keeps a
    kill 0.3 s into a round inside it, as in real rounds of minutes)."""
    delays = "{" + ", ".join(f"{i}: 1.0" for i in range(args.clients)) + "}"
    return [
        "experiment.name=chaos", f"experiment.seed={args.seed}",
        f"experiment.output_dir={out_dir}", f"tracking.uri=sqlite:///{out_dir / 'mlflow.db'}",
        f"data.clients={args.clients}", "data.cases_per_client=6", "data.folds=3",
        "data.image_size=32", "data.slices_min=4", "data.slices_max=5", "data.partitions=2",
        "model.features=[8,8,16,16,16,8]", "model.projection_hidden=32",
        "model.projection_dim=16",
        "pretrain.methods=[fcl]", f"pretrain.rounds={args.rounds}", "pretrain.local_steps=2",
        "pretrain.volumes_per_batch=2", "pretrain.bank_size=16", "pretrain.sample_size=24",
        "pretrain.exchange_size=8",
        "finetune.modes=[local]", "finetune.budget=steps",
        f"finetune.steps={args.finetune_steps}",
        "finetune.batch_size=4",
        f"federation.round_timeout_s={args.round_timeout}", "federation.max_restarts=20",
        f"faults.delay_seconds={delays}",
        *args.extra,
    ]


def one_run(args, name: str, schedule, address: str, extra: tuple[str, ...] = ()) -> dict:
    out_dir = Path(args.work_dir) / name
    shutil.rmtree(out_dir, ignore_errors=True)   # a fresh run, not a resume of an old one
    monkey = ChaosMonkey(str(CONFIG), [*overrides(args, out_dir), *extra], out_dir, schedule,
                         address,
                         straggle_s=args.round_timeout + 2, timeout_s=args.timeout,
                         log=lambda line: print(f"[{name}] {line}", flush=True))
    record = monkey.run()
    return run_figures(record, args.rounds, args.clients,
                       f"sqlite:///{out_dir / 'mlflow.db'}", "chaos")


def markdown(summary: dict) -> str:
    a, ref, chaos = summary["args"], summary["fault_free"], summary["chaos"]
    cmp, floor = summary["comparison"], summary.get("floor_comparison")
    goal = lambda ok: "met" if ok else "**missed**"   # noqa: E731
    kinds = {}
    for e in chaos["events"]:
        kinds[e["kind"]] = kinds.get(e["kind"], 0) + int(bool(e["done"]))
    lines = [
        "# Chaos drill (CPU, 2 cores)", "",
        f"Command: `{summary['command']}` (load average {summary['load_before']} before, "
        f"{summary['load_after']} after; the machine was shared with another benchmark).", "",
        f"{a['rounds']} FCL pre-training rounds, {a['clients']} clients, seed {a['seed']}, "
        f"`federation.round_timeout_s={a['round_timeout']}`, `federation.max_restarts=20`, "
        f"local fine-tuning with `finetune.budget=steps` ({a['finetune_steps']} steps), MLflow "
        f"in a sqlite store." + (f" Changed for both runs: `{' '.join(a['extra'])}`."
                                 if a.get("extra") else ""),
        "", "Faults carried out: " + ", ".join(f"{n} x {k}" for k, n in sorted(kinds.items()))
        + " (rounds: " + ", ".join(f"{e['round']} {e['kind']}" for e in chaos["events"]) + ").",
        "", "| figure | fault-free | chaos | goal |", "|---|---|---|---|",
        f"| rounds completed | {ref['rounds_completed']}/{a['rounds']} | "
        f"{chaos['rounds_completed']}/{a['rounds']} | >= 95 %: "
        f"{goal(cmp['rounds_completed_fraction'] >= 0.95)} |",
        f"| client-rounds participated | {ref['client_rounds_participated']}/"
        f"{ref['client_rounds_possible']} | {chaos['client_rounds_participated']}/"
        f"{chaos['client_rounds_possible']} | |",
        f"| drops by kind | {ref['drops'] or '-'} | {chaos['drops']} | |",
        f"| mean abs Dice difference | | {cmp['mean_abs_dice_diff']:.4f} | <= 0.01: "
        f"{goal(cmp['mean_abs_dice_diff'] <= 0.01)} |",
        *([f"| floor: mean abs Dice difference of a fault-free run with "
           f"`pretrain.sampler_seed={a['floor_seed']}` | | {floor['mean_abs_dice_diff']:.4f} | "
           f"chaos within it: {goal(cmp['mean_abs_dice_diff'] <= floor['mean_abs_dice_diff'])} |"]
          if floor else []),
        *[f"| mean abs difference of probe {probe} | | {diff:.4f} | "
          + (f"floor {floor['mean_abs_probe_diff'].get(probe, float('nan')):.4f} |" if floor
             else "|")
          for probe, diff in cmp.get("mean_abs_probe_diff", {}).items()],
        f"| rejoins: rounds missed (restored own state) | | "
        + (", ".join(f"{r['rounds_missed']}"
                     + (f" (round {r['restored_round']})" if r["restored_round"] is not None
                        else f" (fresh: {r.get('fresh_start', '?')})")
                     for r in chaos.get("rejoins", [])) or "-") + " | 1 each |",
        f"| results rows | {ref['results_rows']} | {chaos['results_rows']} (missing "
        f"{len(cmp['rows_missing'])}) | all: {goal(not cmp['rows_missing'])} |",
        f"| MLflow runs, status | {[r['status'] for r in ref['mlflow']]} | "
        f"{cmp['mlflow_statuses']} | FINISHED: {goal(cmp['mlflow_all_finished'])} |",
        f"| MLflow metric keys missing / steps missing | | {len(cmp['metric_keys_missing'])}"
        f" / {len(cmp['metric_steps_missing'])} | none: "
        f"{goal(not cmp['metric_keys_missing'] and not cmp['metric_steps_missing'])} |",
        f"| wall s | {ref['wall_s']} | {chaos['wall_s']} | |", "",
        "| row | Dice fault-free | Dice chaos | difference |", "|---|---|---|---|"]
    for row, diff in cmp["dice_diff"].items():
        lines.append(f"| {row} | {ref['dice'][row]:.4f} | {chaos['dice'][row]:.4f} | "
                     f"{diff:+.4f} |")
    lines += ["", "Drops per round (chaos run): " + "; ".join(
        f"{r}: {d}" for r, d in chaos["dropped_per_round"].items()),
        "", "Drops of retried attempts (chaos run): " + ("; ".join(
            f"{r}: {d}" for r, d in chaos["dropped_retried_per_round"].items()) or "none"), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    from fcl_ray.config import ConfigError
    from fcl_ray.config_io import load_config
    try:   # a bad --set stops here, in one line, before any cluster or run starts
        load_config(CONFIG, overrides(args, Path(args.work_dir) / "check"))
    except ConfigError as err:
        print(f"chaos.py: error: {err}", file=sys.stderr)
        return 2
    import ray   # the drill's own cluster; both drivers join it (RAY_ADDRESS)

    load_before = open("/proc/loadavg").read().split()[:3]
    # address="local": always a new cluster, never another session's cluster on this host.
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)
    address = ray.get_runtime_context().gcs_address
    try:
        ref = one_run(args, "fault_free", [], address)
        floor = (one_run(args, "floor", [], address, (f"pretrain.sampler_seed={args.floor_seed}",))
                 if args.floor else None)
        chaos = one_run(args, "chaos", args.schedule, address)
    except DrillError as err:
        print(f"chaos.py: error: {err}", file=sys.stderr)
        return 1
    finally:
        ray.shutdown()
    summary = {"command": "PYTHONPATH=. python benchmarks/chaos.py " + " ".join(
                   sys.argv[1:] if argv is None else argv),
               "args": {k: v for k, v in vars(args).items() if k != "schedule"},
               "schedule": [e.to_dict() for e in args.schedule],
               "load_before": " ".join(load_before),
               "load_after": " ".join(open("/proc/loadavg").read().split()[:3]),
               "when": time.strftime("%Y-%m-%d %H:%M:%S"),
               "fault_free": ref, "chaos": chaos, "comparison": compare(ref, chaos),
               **({"floor": floor, "floor_comparison": compare(ref, floor)} if floor else {})}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    out.with_suffix(".md").write_text(markdown(summary))
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
