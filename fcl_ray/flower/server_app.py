"""The ServerApp the SuperLink runs: the study's round policy over Flower messages.

The decisions are the Ray runtime's, from the same Ray-free module
(:mod:`fcl_ray.core.strategy`): who takes part in a round and the config it sends them
(FedProx's ``proximal_mu``), which updates count, FedAvg in site order, the feature pool
broadcast to the next round, the bytes moved, when federated fine-tuning stops
(``finetune.budget=converge``); and, with ``privacy.*``, the Ray driver's accountant
(:class:`~fcl_ray.privacy.budget.PhaseBudget`: epsilon per site, the budget). Only
the transport differs: each task is a ``query`` message to the SuperNodes of the sites
(:class:`Sites`), and a site's refusal, failure or silence is a dropped site, as a dead or
late actor is on Ray.

The coordinator keeps global state only: the global weights and the feature pool per round
(``<output_dir>/checkpoints``), results.csv, rounds.jsonl and privacy.json. Each site's
bank, optimiser, networks and encoders stay on the site's disk.

``coordinator/run.sh --resume`` (the run config's ``resume``) continues a study the way
``fcl-ray run --resume`` does: finished (fold, method, mode) rows are kept and skipped, an
interrupted pre-training goes on after its last complete round checkpoint (each site from
its own state of that round), with the same checks of the output folder first.
``run.sh --resume --set KEY=VALUE`` grows the grid as ``fcl-ray run --resume --set`` does
(more methods, label budgets, folds or modes at the end of their lists): the new settings
run, the finished ones are kept.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fcl_ray.config import Config, ConfigError
from fcl_ray.config_io import dump_yaml, from_dict
from fcl_ray.federation.checkpoint import (COORDINATOR_FILE, CheckpointStore,
                                           coordinator_arrays, phase_name, restore_coordinator)
from fcl_ray.core.participation import generator_state, participant_generator
from fcl_ray.core.strategy import RoundPlan, Strategy, make_strategy
from fcl_ray.flower import records as R
from fcl_ray.flower.deploy import study_from_run_config
from fcl_ray.machine import record_start, summary
from fcl_ray.privacy.budget import SUMMARY_FILE as PRIVACY_SUMMARY, PhaseBudget
from fcl_ray.protocol.messages import ClientUpdate, MessageError, phase_contract
from fcl_ray.results import RESULT_COLUMNS

app = ServerApp()


class FlowerFederationError(RuntimeError):
    """The federation cannot go on (a site refused to join, too few sites answered)."""


class SiteRefused(FlowerFederationError):
    """A SuperNode refused to join: its node config does not fit the study (bad input)."""


class Sites:
    """The study's sites as Flower nodes: which node plays which site, and one task sent to
    several sites at once."""

    def __init__(self, grid: Grid, clients: int, timeout_s: float,
                 log: Callable[[str], None] = print):
        self.grid, self.clients, self.timeout_s, self.log = grid, clients, timeout_s, log
        self.nodes: dict[int, int] = {}   # site -> node id
        self.machines: dict[int, dict] = {}   # site -> its machine (fcl_ray.machine)

    def connect(self, wait_s: float) -> None:
        """Wait until a SuperNode has joined for every site; ask each which site it is (its
        node config is checked at the site; a refusal stops the study, one line)."""
        deadline = time.monotonic() + wait_s
        while len(list(self.grid.get_node_ids())) < self.clients:
            if time.monotonic() > deadline:
                raise FlowerFederationError(
                    f"only {len(list(self.grid.get_node_ids()))} of {self.clients} SuperNodes "
                    f"connected within {wait_s:.0f}s")
            time.sleep(1.0)
        nodes = sorted(self.grid.get_node_ids())
        replies = self._send([(node, RecordDict({R.TASK: ConfigRecord({"kind": "hello"})}))
                              for node in nodes])
        for node in nodes:
            reply = replies.get(node)
            if reply is None:
                raise FlowerFederationError(f"SuperNode {node} did not answer who it is")
            if reply.has_error():
                bad_input = reply.error.code == R.REFUSED   # else its ClientApp crashed
                raise (SiteRefused if bad_input else FlowerFederationError)(
                    f"SuperNode {node} refused: {reply.error.reason}")
            said = reply.content.config_records[R.RESULT]
            site = int(said["site"])
            if site in self.nodes:
                raise SiteRefused(f"SuperNodes {self.nodes[site]} and {node} both say they "
                                  f"are site {site}")
            self.nodes[site] = node
            if "machine" in said:   # (a site of an older fcl-ray does not say)
                self.machines[site] = json.loads(str(said["machine"]))
        missing = sorted(set(range(self.clients)) - set(self.nodes))
        if missing:
            raise FlowerFederationError(f"no SuperNode for site(s) {missing}")
        self.log(f"sites joined: {', '.join(f'site {s} = node {n}' for s, n in sorted(self.nodes.items()))}")

    def _send(self, messages: list[tuple[int, RecordDict]]) -> dict[int, Message]:
        """The replies by the node each message went to. By the message replied to, not by
        the reply's sender: for a node that went offline (missed heartbeats) the SuperLink
        itself replies, with an error, and that must count as the site's failure."""
        out = [Message(content, dst_node_id=node, message_type="query")
               for node, content in messages]
        replies = self.grid.send_and_receive(out, timeout=self.timeout_s)
        node_of = {message.metadata.message_id: node for message, (node, _) in zip(out, messages)}
        return {node_of.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id): reply
                for reply in replies}

    def ask(self, sites: list[int], task: dict, weights: Optional[np.ndarray] = None,
            pool: Optional[dict] = None, config: Optional[dict] = None) -> dict[int, Message]:
        """Send ``task`` (with the global weights, the feature pool and the round's config,
        if any) to ``sites``; their replies by site (a site missing from the answer did not
        reply in time)."""
        def content() -> RecordDict:   # one RecordDict per message (Flower owns it once sent)
            records = RecordDict({R.TASK: ConfigRecord(task)})
            if config:
                records[R.CONFIG] = ConfigRecord(config)
            if weights is not None:
                records[R.WEIGHTS] = R.weights_record(weights)
            if pool:
                records[R.POOL] = R.pool_record(pool)
            return records

        replies = self._send([(self.nodes[s], content()) for s in sites])
        site_of = {node: site for site, node in self.nodes.items()}
        return {site_of[node]: reply for node, reply in replies.items() if node in site_of}

    def mean_dice(self, task: dict, weights: np.ndarray) -> float:
        """Mean over the sites that answer ``task`` of their ``dice_mean`` (NaN: none did),
        leaving out sites that fail or are late, as the Ray coordinator's validation does."""
        scores = [float(reply.content.config_records[R.RESULT]["dice_mean"])
                  for reply in self.ask(list(range(self.clients)), task, weights).values()
                  if not reply.has_error()]
        return float(np.nanmean(scores)) if scores else float("nan")

    def ask_all(self, task: dict, weights: Optional[np.ndarray] = None) -> list[dict]:
        """A task every site must answer (a phase's set-up, an evaluation): the results in
        site order; any site missing stops the study."""
        replies = self.ask(list(range(self.clients)), task, weights)
        results = []
        for site in range(self.clients):
            reply = replies.get(site)
            if reply is None:
                raise FlowerFederationError(f"{task['kind']}: site {site} did not answer "
                                            f"within {self.timeout_s:.0f}s")
            if reply.has_error():
                raise FlowerFederationError(f"{task['kind']}: site {site}: {reply.error.reason}")
            results.append(dict(reply.content.config_records[R.RESULT]))
        return results


def phase_privacy(infos: list[dict], start_round: int) -> dict:
    """The sites' pre-training set-up results as the Ray coordinator reports a phase to its
    driver's accountant (:meth:`~fcl_ray.privacy.budget.PhaseBudget.for_phase`): each site's
    round release (sites releasing nothing left out) and the round it starts after."""
    releases = {site: R.release_of(info) for site, info in enumerate(infos)}
    return {"privacy": {site: r for site, r in releases.items() if r is not None},
            "start_round": start_round}


def collect_updates(replies: dict[int, Message], sampled: list[int],
                    strategy: Strategy) -> tuple[list[ClientUpdate], dict[int, str]]:
    """The updates that count (checked again here) and why each other sampled site has none."""
    answers, dropped = {}, {}
    for site in sampled:
        reply = replies.get(site)
        if reply is None:
            dropped[site] = "late (no reply before the deadline)"
        elif reply.has_error():
            dropped[site] = f"failed: {reply.error.reason[:200]}"
        else:
            try:
                answers[site] = R.update_from(reply.content)
            except (KeyError, TypeError, ValueError) as err:
                dropped[site] = f"rejected: unreadable update ({err})"
    updates, rejected = strategy.select(answers)
    return updates, {**dropped, **rejected}


class FlowerStudy:
    """The study of ``cfg`` over ``sites``: pre-training rounds, then fine-tuning, with the
    rows and round records the Ray runtime writes; ``resume`` continues an interrupted one."""

    def __init__(self, cfg: Config, sites: Sites, log: Callable[[str], None] = print,
                 resume: bool = False):
        self.cfg, self.sites, self.log, self.resume = cfg, sites, log, resume
        self.out = Path(cfg.experiment.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        fed = cfg.federation
        root = fed.checkpoint_dir or str(self.out / "checkpoints")
        self.store = CheckpointStore(root) if fed.checkpoint_every else None
        self.rows: list[dict] = []

    def _strategy(self, infos: list[dict], federated: bool = True) -> Strategy:
        info = {"n_weights": int(infos[0]["n_weights"]), "feature_dim": infos[0].get("feature_dim")}
        contract = phase_contract(info, self.cfg.data.partitions,
                                  self.cfg.pretrain.exchange_size)
        return make_strategy(self.cfg.federation, contract, federated)

    def _round(self, strategy: Strategy, plan: RoundPlan, task: dict,
               weights: Optional[np.ndarray], pool: Optional[dict] = None
               ) -> tuple[list[ClientUpdate], dict]:
        """One round as the strategy planned it (its sites, its config), retried over the
        same sites while fewer than ``min_clients`` count."""
        fed, sampled = self.cfg.federation, plan.clients
        attempts = []
        for _ in range(fed.round_retries + 1):
            updates, dropped = collect_updates(
                self.sites.ask(sampled, task, weights, pool, plan.config), sampled, strategy)
            attempts.append(dropped)
            if strategy.enough(updates):
                break
        else:
            raise FlowerFederationError(
                f"{task['kind']} {task.get('round', '')}: only {len(updates)} of {len(sampled)} "
                f"sites answered (federation.min_clients={fed.min_clients}); dropped: {dropped}")
        return updates, {"sampled": sampled, "participants": [u.client for u in updates],
                         "dropped": {str(k): v for k, v in dropped.items()},
                         "retries": len(attempts) - 1}

    def _record(self, record: dict) -> None:
        with (self.out / "rounds.jsonl").open("a") as handle:
            handle.write(json.dumps(record, default=float) + "\n")

    # ------------------------------------------------------------------ pre-training
    def pretrain(self, method: str, fold: int) -> Optional[np.ndarray]:
        """``pretrain.rounds`` rounds of ``method``; the final global weights (None for a
        method whose weights stay at each site)."""
        p, fed = self.cfg.pretrain, self.cfg.federation
        base = {"method": method, "fold": fold}
        rng = participant_generator(self.cfg.experiment.seed, fold)
        first, global_weights, pool = 0, None, {}
        if self.resume and self.store is not None:
            restored = restore_coordinator(self.store, phase_name(method, fold), rng)
            if restored is not None:
                first, global_weights, pool, _ = restored
                self.log(f"[{method}] fold {fold}: resumed after round {first}")
        # Resumed, each site goes on from its own state of round `first` (kept on its disk).
        infos = self.sites.ask_all({"kind": "start_pretraining", **base, "resume": first > 0})
        strategy = self._strategy(infos, bool(infos[0]["federated"]))
        # privacy.*: each site's epsilon, by the Ray driver's accountant and budget rules.
        budget = PhaseBudget.for_phase(self.cfg, phase_privacy(infos, first), method)
        saved = first   # the last complete checkpoint: what a resume would go on from
        last = first    # the last round run (privacy.on_budget=stop may end the phase early)
        for r in range(first + 1, p.rounds + 1):
            if budget is not None and not budget.may_run_round(r, self.log):
                break
            start = time.perf_counter()
            plan = strategy.configure_round(r, self.cfg.data.clients, fed.clients_per_round, rng)
            # The sites keep their states from the last checkpoint's round on (without
            # checkpoints, from the last round: a site that sat out goes on from its newest).
            keep_from = saved if self.store is not None else r - 1
            updates, stats = self._round(strategy, plan,
                                         {"kind": "pretrain_round", "round": r,
                                          "keep_from": keep_from, **base},
                                         global_weights, pool)
            global_weights = strategy.aggregate_updates(updates, global_weights)
            stats |= asdict(strategy.traffic(updates, global_weights, pool, p.remote_sample))
            pool = strategy.aggregate_feature_pool(updates)
            if self._checkpoint(phase_name(method, fold), r, global_weights, pool,
                                generator_state(rng)):
                saved = r
            stats["round_seconds"] = time.perf_counter() - start
            if budget is not None:   # every site called counts, once per attempt
                stats["privacy"] = budget.record(
                    budget.after_round(r, plan.clients, stats["retries"]))
            self._record({**base, "phase": "pretrain", "round": r, **stats,
                          "clients": [{"client": u.client, **u.metrics} for u in updates]})
            losses = " ".join(f"site {u.client} loss {u.metrics['loss']:.4f}" for u in updates)
            self.log(f"[{method}] fold {fold} round {r}/{p.rounds}: {losses}; "
                     f"{len(updates)}/{len(plan.clients)} sites, {stats['round_seconds']:.1f}s"
                     + "".join(f"; site {s} left out: {why}" for s, why in stats["dropped"].items()))
            last = r
        if budget is not None:
            self.log(budget.line())
            budget.write_summary(self.out, f"{method}/fold{fold}")
        final = global_weights if strategy.federated else None
        self.sites.ask_all({"kind": "finish_pretraining", "round": last, **base}, final)
        return final

    def _checkpoint(self, phase: str, round_index: int, global_weights, pool, rng_state) -> bool:
        """The coordinator's global state only (the sites keep theirs on their disks);
        False when this round is not checkpointed."""
        every = self.cfg.federation.checkpoint_every
        if self.store is None or round_index % every:
            return False
        path = self.store.round_dir(phase, round_index)
        self.store.save_arrays(f"{path}/{COORDINATOR_FILE}",
                               coordinator_arrays(round_index, global_weights, pool, rng_state))
        self.store.mark_complete(phase, round_index)
        return True

    # ------------------------------------------------------------------ fine-tuning
    def _rows(self, method: str, mode: str, fold: int, n: int, results: list[dict]) -> None:
        rows = [{"method": method, "finetune_mode": mode, "n_labeled": n, "fold": fold,
                 "seed": self.cfg.experiment.seed, **r} for r in results]
        dice = np.mean([r["dice_mean"] for r in results])
        self.log(f"[{method}] {mode} fine-tuning, N={n}, fold {fold}: mean Dice {dice:.3f}")
        self.rows += rows

    def finetune_federated(self, method: str, fold: int, n: int) -> None:
        """One federated fine-tuning setting, its rounds run by the strategy
        (:meth:`~fcl_ray.core.strategy.Strategy.run_finetune`, as on Ray): ``finetune.rounds``
        rounds, or (``budget=converge``) until the global U-Net's mean validation Dice stops
        improving, its best weights then scored on the test folds."""
        ft = self.cfg.finetune
        base = {"method": method, "fold": fold, "n_labeled": n}
        strategy = self._strategy(self.sites.ask_all({"kind": "start_finetune", **base}))
        global_weights, done = None, 0

        def run_round() -> None:
            nonlocal global_weights, done
            done += 1
            start = time.perf_counter()
            updates, stats = self._round(strategy,
                                         strategy.configure_round(done, self.cfg.data.clients),
                                         {"kind": "finetune_round", "round": done, **base},
                                         global_weights)
            global_weights = strategy.aggregate_updates(updates, global_weights)
            stats |= asdict(strategy.traffic(updates, global_weights))
            stats["round_seconds"] = time.perf_counter() - start
            self._record({**base, "phase": "finetune", "round": done, **stats})

        def validate() -> float:
            return self.sites.mean_dice({"kind": "validate_global", **base}, global_weights)

        best, outcome = strategy.run_finetune(ft, ft.rounds, run_round, validate,
                                              lambda: global_weights)
        if best is not None:
            global_weights = best
        results = self.sites.ask_all({"kind": "finish_finetune", **base}, global_weights)
        np.save(self.out / f"global-{method}-fold{fold}-n{n}.npy", global_weights)
        self._rows(method, "federated", fold, n, [{**r, **outcome} for r in results])

    def finetune_local(self, method: str, fold: int, n: int) -> None:
        self._rows(method, "local", fold, n, self.sites.ask_all(
            {"kind": "finetune_local", "method": method, "fold": fold, "n_labeled": n}))

    # ------------------------------------------------------------------ the study
    def run(self) -> list[dict]:
        """Every fold: each method pre-trained (if it has pre-training), then fine-tuned in
        each mode and label budget; results.csv is rewritten after each method. Resumed,
        the settings (fold, method, mode, N) with rows in results.csv are kept and not run
        again."""
        from fcl_ray.federation.driver import finished_settings, previous_rows, settings_to_run
        from fcl_ray.methods import has_pretraining
        from fcl_ray.tracking import method_rows

        results = self.out / "results.csv"
        (self.out / "config.yaml").write_text(dump_yaml(self.cfg))
        if self.resume:
            self.rows = previous_rows(results)
        else:   # a fresh run: no round records or privacy figures of an earlier one
            (self.out / "rounds.jsonl").unlink(missing_ok=True)
            (self.out / PRIVACY_SUMMARY).unlink(missing_ok=True)
        done = finished_settings(self.rows)
        methods, modes = method_rows(self.cfg), self.cfg.finetune.modes
        for fold in self.cfg.finetune.folds:
            for method in methods:
                todo = settings_to_run(self.cfg, done, fold, method)   # {mode: [N, ...]}
                if not any(todo.values()):
                    self.log(f"[{method}] fold {fold}: results already in {results}, skipped")
                    continue
                if has_pretraining(method):
                    self.pretrain(method, fold)
                for n in self.cfg.finetune.n_labeled:
                    if n in todo.get("federated", []):
                        self.finetune_federated(method, fold, n)
                    if n in todo.get("local", []):
                        self.finetune_local(method, fold, n)
                write_results(self.rows, methods, modes, results)
        self.log(f"results written to {self.out / 'results.csv'}")
        return self.rows


def write_results(rows: list[dict], methods: list[str], modes: list[str], path: Path) -> None:
    """results.csv as the Ray driver writes it: grid order, the result columns first, atomic."""
    import pandas as pd

    from fcl_ray.federation.driver import _in_grid_order, write_csv_atomic

    table = _in_grid_order(pd.DataFrame(rows), methods, modes)
    table = table[[c for c in RESULT_COLUMNS if c in table.columns]
                  + [c for c in table.columns if c not in RESULT_COLUMNS]]
    write_csv_atomic(table, path)


def record_machines(cfg: Config, machines: dict[int, dict], resume: bool,
                    log: Callable[[str], None]) -> None:
    """Where the sites compute, as ``fcl-ray run`` records its clients: machine.json in the
    output folder (every start appended), one line, and a warning when a resume moved."""
    if not machines:
        return
    groups, warning = record_start(cfg.experiment.output_dir, machines, resume)
    log(summary(groups))
    if warning:
        log(f"warning: {warning}")


@app.main()
def main(grid: Grid, context: Context) -> None:
    from fcl_ray.output_dir import prepare_output_dir

    log = lambda line: print(f"fcl-ray: {line}", flush=True)   # noqa: E731  (the run's log)
    # run.sh --resume / --overwrite: the run config's booleans (default false, in the app).
    resume, overwrite = (bool(context.run_config.get(k, False)) for k in ("resume", "overwrite"))
    # One line first (coordinator/run.sh turns it into its exit code: 2 for bad input, at
    # the coordinator or at a site, 1 for a federation that could not go on), then Flower
    # marks the run failed.
    try:
        # The study, with run.sh's --set overrides (a grid grown for a --resume, say).
        cfg = from_dict(study_from_run_config(context.run_config))
        sites = Sites(grid, cfg.data.clients, float(cfg.federation.round_timeout_s or 600), log)
        # As `fcl-ray run`, before any site is asked: no resume with another config, no
        # silent replacing of finished results.
        prepare_output_dir(cfg, resume, overwrite, log)
        sites.connect(float(context.run_config.get("wait-s", 300)))
        record_machines(cfg, sites.machines, resume, log)
        FlowerStudy(cfg, sites, log, resume).run()
    except (SiteRefused, ConfigError) as err:
        log(f"error: {err}")
        raise
    except (FlowerFederationError, MessageError) as err:
        log(f"federation stopped: {err}")
        raise
