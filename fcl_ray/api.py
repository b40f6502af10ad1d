"""The Python API: what ``fcl-ray run``, ``report`` and ``sweep`` do, as functions that return
their results instead of printing them. The command line (``fcl_ray/cli.py``) calls these
functions and prints what they return; a notebook calls them and looks at the objects.

Bad input raises :class:`~fcl_ray.errors.FclRayError` (``ConfigError`` and ``DataError`` are
its kinds) whose message is the command line's one line; nothing here prints or exits.
Progress goes to the ``fcl_ray`` logger (``fcl_ray/log.py`` says how to see it).

This module imports nothing heavy at the top (``import fcl_ray`` loads it): Ray, torch,
MLflow, pandas and matplotlib are loaded by the functions that need them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

if TYPE_CHECKING:   # for the annotations only
    import pandas as pd
    from matplotlib.figure import Figure

    from fcl_ray.config import Config
    from fcl_ray.sweep.run import SweepOutcome


def _overrides(overrides: Union[str, Sequence[str]]) -> list[str]:
    """``"a.b=1"`` or ``["a.b=1", ...]`` (the command line's ``--set``) as a list."""
    return [overrides] if isinstance(overrides, str) else list(overrides or ())


# ----------------------------------------------------------------------------- run
@dataclass
class RunResults:
    """What :func:`run` returns."""
    table: pd.DataFrame               # the rows of results.csv: method, mode, N, fold, client
    #                                   (empty with probes.only: nothing is fine-tuned)
    output_dir: Path                  # experiment.output_dir: results.csv, config.yaml, ...
    run_id: Optional[str]             # the MLflow run; None when tracking is off
    run_url: Optional[str]            # its page in the MLflow UI (a local store: once
    #                                   `mlflow ui --backend-store-uri <uri>` runs); or None
    config: Config                    # the resolved config the run used

    def summary(self) -> pd.DataFrame:
        """Mean ± std over clients per method, mode and N: the table ``fcl-ray run`` prints."""
        from fcl_ray.report import summary_table

        return summary_table(self.table)

    def probes(self) -> Optional[pd.DataFrame]:
        """The frozen-encoder probe rows (``<output_dir>/probes.csv``, written with
        ``probes.enabled``), or None when the run probed nothing."""
        import pandas as pd   # here: importing fcl_ray stays light

        path = self.output_dir / "probes.csv"
        return pd.read_csv(path) if path.is_file() else None


def run(config_or_path: Union[str, Path, Config, dict, None] = None,
        overrides: Union[str, Sequence[str]] = (), *, resume: bool = False,
        overwrite: bool = False) -> RunResults:
    """Run a whole experiment, as ``fcl-ray run``: pre-train, fine-tune, write
    ``<output_dir>/results.csv``, track it in MLflow (``tracking.enabled``).

    ``config_or_path``: an experiment YAML, a :class:`~fcl_ray.config.Config`, a dict of
    sections, or None (the defaults). ``overrides``: ``"key=value"`` texts, as ``--set``.
    The output folder is checked first, as on the command line: a folder that holds results
    needs ``resume=True`` (continue it, with the config saved there) or ``overwrite=True``
    (its files are moved into ``previous-<time>/``). A SIGINT (a notebook's interrupt) or
    SIGTERM stops the run with :class:`~fcl_ray.errors.RunInterrupted`; finished results
    are kept and ``resume=True`` continues them."""
    from fcl_ray.config_io import load_config
    from fcl_ray.durable import check_durable_outputs
    from fcl_ray.log import get_logger, progress
    from fcl_ray.output_dir import prepare_output_dir
    from fcl_ray.outputs import check_run_outputs

    log = get_logger(__name__)
    # Which code runs: in a `ray job submit --working-dir .` job, the uploaded checkout (Ray
    # puts it first on every worker's PYTHONPATH), not the copy installed on the nodes.
    log.debug(f"fcl_ray code from {Path(__file__).resolve().parent}")
    overrides = _overrides(overrides)
    cfg = load_config(config_or_path, overrides)   # first: a bad config fails in ~1 s
    check_durable_outputs(cfg)   # in a Ray job: no outputs inside its temporary working dir
    check_run_outputs(cfg)       # folders writable, the MLflow store's scheme known
    # Before Ray: no resume with another config (or a garbage checkpoint pointer), no
    # silent replacing of finished results.
    prepare_output_dir(cfg, resume, overwrite, log=progress)
    source = config_or_path if isinstance(config_or_path, (str, Path)) else \
        "(defaults)" if config_or_path is None else f"(a {type(config_or_path).__name__})"
    log.debug(f"config {source} with {len(overrides)} override(s), output in "
              f"{cfg.experiment.output_dir}")
    from fcl_ray import tracking
    from fcl_ray.federation.cluster import (RunInterrupted, connect_ray, disconnect_ray,
                                            restore_signals, stop_on_signals)
    from fcl_ray.federation.driver import run_experiment

    if cfg.data.kind != "synthetic" and not cfg.data.client_roots:
        # Check (and cache) the data here, so a bad file is one line and exit 2, not an error
        # inside a Ray actor. With client_roots the folders live on the sites' machines.
        from fcl_ray.data.check import preflight
        preflight(cfg)
    started_ray = connect_ray(cfg)
    previous = stop_on_signals(cfg.experiment.output_dir)   # after ray.init, which sets its own
    context = tracking.TrackingContext()                    # receives the MLflow run's id
    try:
        table = run_experiment(cfg, resume=resume, tracking_context=context)
    except RunInterrupted as stop:
        if context.run_id:   # stopped, not broken: KILLED in MLflow, as `ray job stop` is
            tracking.mark_killed(tracking.resolve_uri(cfg), context.run_id, stop.signum)
        raise
    finally:
        try:
            disconnect_ray(started_ray)
        finally:
            restore_signals(previous)
    url = tracking.run_url(tracking.resolve_uri(cfg), context.run_id) if context.run_id \
        else None
    return RunResults(table=table, output_dir=Path(cfg.experiment.output_dir),
                      run_id=context.run_id, run_url=url, config=cfg)


# ----------------------------------------------------------------------------- report
@dataclass
class Report:
    """What :func:`report` returns: the tables ``fcl-ray report`` prints, as text (Markdown)
    and as the frames they were made from."""
    results: pd.DataFrame             # the rows read (a duplicate row: the one read last)
    metric: str
    tables: str                       # the paper's tables, local and federated
    paired: Optional[pd.DataFrame]    # reference minus each method; None: no reference rows
    paired_text: Optional[str]
    control: pd.DataFrame             # the positive control (empty without its rows)
    control_text: Optional[str]
    probes: Optional[pd.DataFrame]    # probes.csv beside the results, if any
    probes_text: Optional[str]
    read_notes: list[str] = field(default_factory=list)   # about reading (duplicates)
    notes: list[str] = field(default_factory=list)        # about the comparison

    @property
    def text(self) -> str:
        """Everything ``fcl-ray report`` prints on stdout (without the files it wrote)."""
        parts = [self.tables] + ["\n" + t for t in (self.paired_text, self.control_text,
                                                    self.probes_text) if t]
        return "".join(parts)

    def figure(self) -> Figure:
        """The Dice-vs-N plot (``dice_vs_n.png`` of ``--out``), a matplotlib Figure; a
        notebook shows it inline."""
        from fcl_ray.report import dice_vs_n_figure

        return dice_vs_n_figure(self.results, self.metric)

    def write(self, out_dir: Union[str, Path]) -> list[Path]:
        """Write the tables, plots and statistics into ``out_dir`` (``fcl-ray report --out``);
        return the files."""
        from fcl_ray.report import write_paired_report, write_positive_control, write_report

        written = write_report(self.results, out_dir, self.metric)
        if self.paired is not None:
            written += write_paired_report(self.paired, out_dir)
        if self.control_text is not None:
            written.append(write_positive_control(self.control_text, out_dir))
        return written


def _report_sources(results_or_paths: Any) -> Union[list[str], pd.DataFrame]:
    """Paths / experiment names as the command line takes them, or a frame of rows."""
    from fcl_ray.config import ConfigError

    if isinstance(results_or_paths, RunResults):
        return [str(results_or_paths.output_dir)]
    if isinstance(results_or_paths, (str, Path)):
        return [str(results_or_paths)]
    if type(results_or_paths).__name__ == "DataFrame":
        return results_or_paths
    if isinstance(results_or_paths, (list, tuple)):
        sources = [str(s.output_dir) if isinstance(s, RunResults) else s
                   for s in results_or_paths]
        if all(isinstance(s, (str, Path)) for s in sources):
            return [str(s) for s in sources]
    raise ConfigError(f"report: expected results.csv files, run folders, MLflow experiment "
                      f"names, a RunResults or a DataFrame, got "
                      f"{type(results_or_paths).__name__}")


def report(results_or_paths: Any, reference: Optional[str] = None, pairs: str = "all", *,
           metric: str = "dice_mean", out: Union[str, Path, None] = None,
           tracking_uri: Optional[str] = None, sites: str = "client") -> Report:
    """The paper's tables, paired statistics (``reference`` minus each method; default fcl,
    skipped with a note when absent) and the probe table, as ``fcl-ray report``.

    ``results_or_paths``: what :func:`run` returned, results.csv files or run folders,
    MLflow experiment names (at ``tracking_uri``), or a DataFrame of results rows; a list
    of several. ``pairs``: all (every method must have the reference's units) or common.
    ``sites``: the independent unit of the client-level CI and sign-flip p: "client" (a
    client id is one site in every seed) or "seed_client" (each seed drew its own sites, as
    the synthetic phantom does). ``out``: also write the tables, plots and statistics there."""
    from fcl_ray.config import ConfigError
    from fcl_ray.report import paired_markdown, positive_control_markdown, render_probe_report
    from fcl_ray.report import render_report
    from fcl_ray.results import UPPER_BOUND, check_results, load_results, probes_beside
    from fcl_ray.statistics import check_sites, control_gate, paired_differences, positive_control

    from fcl_ray.outputs import check_folder, check_tracking_store

    if out is not None:   # before any reading: a bad --out fails first, and fast
        check_folder("report: --out", out)
    if tracking_uri is not None:
        check_tracking_store("report: --tracking-uri", tracking_uri)
    sources = _report_sources(results_or_paths)
    if isinstance(sources, list):
        results = load_results(sources, tracking_uri)
    else:
        results = check_results(sources, "DataFrame")
    tables = render_report(results, metric)   # checks the metric
    if pairs not in ("all", "common"):        # the command line's choices
        raise ConfigError(f"report: pairs must be 'all' or 'common', got {pairs!r}")
    check_sites(sites)
    chosen = reference or "fcl"
    paired, notes = None, []
    if reference is None and chosen not in set(results["method"]):
        skipped = f"note: no '{chosen}' rows, paired statistics skipped (choose --reference)"
    else:   # an explicit reference that is missing is an error (exit 2)
        paired = paired_differences(results, chosen, metric, pairs, sites)
        skipped = None if not paired.empty else (
            f"note: no method shares a setting with '{chosen}' ({UPPER_BOUND} aside), "
            f"paired statistics skipped")
        notes += [f"note: not compared: {s}" for s in paired.attrs.get("not_compared", [])]
    notes += [skipped] if skipped else []
    dropped = results.attrs.get("duplicates_dropped", 0)
    control = positive_control(results, pairs=pairs, sites=sites)   # dice_mean: the gate's unit
    # written by runs with probes.enabled
    probes = probes_beside(sources) if isinstance(sources, list) else None
    rep = Report(
        results=results, metric=metric, tables=tables, paired=paired,
        paired_text=None if paired is None or paired.empty else paired_markdown(paired),
        control=control,
        control_text=None if control.empty else positive_control_markdown(
            control, control_gate(control)),
        probes=probes, probes_text=None if probes is None else render_probe_report(probes),
        read_notes=[f"note: {dropped} duplicate rows replaced by the ones read later"]
        if dropped else [],
        notes=notes)
    if out is not None:
        rep.write(out)
    return rep


# ----------------------------------------------------------------------------- sweep
def sweep(spec_path: Union[str, Path], overrides: Union[str, Sequence[str]] = (), *,
          resume: bool = False, tracking_uri: Optional[str] = None) -> SweepOutcome:
    """A Ray Tune sweep of whole federations, as ``fcl-ray sweep``: an MLflow parent run and
    one child run per trial. ``overrides``: ``sweep.<key>=v`` sets a sweep key, any other
    ``key=v`` overrides the base experiment; ``resume``: continue the sweep of the same name.
    Returns the trial table (``.trials``), the best trial (``.best``), the parent run and
    where Tune keeps the sweep; ``.errors`` counts the trials that errored (the command
    line exits 1 on them)."""
    return run_sweep_file(spec_path, overrides, resume, tracking_uri)[1]


def run_sweep_file(spec_path: Union[str, Path], overrides: Union[str, Sequence[str]] = (),
                   resume: bool = False, tracking_uri: Optional[str] = None) -> tuple:
    """:func:`sweep`, returning the sweep's spec beside its outcome (the command line
    prints the trial table by the spec's search space)."""
    from fcl_ray.durable import check_durable_outputs
    from fcl_ray.sweep.spec import load_sweep

    from fcl_ray.outputs import check_tracking_store

    spec = load_sweep(spec_path, _overrides(overrides))   # before Ray: a bad file fails fast
    check_durable_outputs(spec.base_config, storage_path=spec.storage_path,
                          tracking_uri=tracking_uri or spec.tracking_uri)
    if tracking_uri is not None:
        check_tracking_store("--tracking-uri", tracking_uri)
    from fcl_ray.sweep.run import run_sweep

    return spec, run_sweep(spec, resume=resume, tracking_uri=tracking_uri)
