"""Paired statistics of a results set (pure: pandas, NumPy, SciPy; no Ray, no plotting).

``paired_differences`` compares a reference method (FCL by default) with each other method on
the units both were run on (client, fold, seed): mean difference, a BCa bootstrap 95 % CI
(SciPy) and a Wilcoxon signed-rank p-value per fine-tuning mode and N, the client-level
(two-stage) bootstrap CI and p, and an exact client-level sign-flip permutation p (SciPy).
``client_means`` is the per-client value the paper's tables average. ``two_sample_ci``: the
bootstrap CI of any statistic of two independent samples (the privacy audit's membership AUC).
``positive_control`` and ``control_gate``: the positive control minus random init, and whether
the benchmark can detect a good encoder at all.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fcl_ray.config import FINETUNE_MODES, SITE_UNITS, ConfigError
from fcl_ray.methods import SUPERVISED_ENCODER   # a name only: imports no torch
from fcl_ray.results import SEED_COLUMN, UPPER_BOUND, _method_order, with_seed


def client_means(results: pd.DataFrame, metric: str = "dice_mean") -> pd.DataFrame:
    """One value per (method, mode, N, client): the metric averaged over folds (and seeds)."""
    if metric not in results.columns:
        have = ", ".join(c for c in results.columns if c.startswith("dice_"))
        raise ConfigError(f"report: metric '{metric}' not in the results (have {have})")
    return (results.groupby(["method", "finetune_mode", "n_labeled", "client"])[metric]
            .mean().reset_index())


# ----------------------------------------------------------------------------- paired statistics
UNIT_COLUMNS = ["client", "fold", SEED_COLUMN]
PAIRED_COLUMNS = ["finetune_mode", "n_labeled", "reference", "method", "n_pairs",
                  "reference_mean", "method_mean", "mean_diff", "ci_low", "ci_high", "p_value",
                  "n_clients", "client_ci_low", "client_ci_high", "client_p_value",
                  "sign_flip_p", "sign_flip_min_p"]
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
# Differences are rounded before the test so that float noise (1e-17) is not a "difference".
_DIFF_DECIMALS = 12


# Above this many clients the sign-flip test draws BOOTSTRAP_RESAMPLES patterns at random
# instead of enumerating all 2^C (2^16 = 65,536 patterns is still instant).
EXACT_SIGN_FLIP_CLIENTS = 16


def bootstrap_ci(diffs: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED, level: float = 0.95) -> tuple[float, float]:
    """BCa bootstrap CI of the mean of ``diffs`` (units resampled with replacement), by
    ``scipy.stats.bootstrap``: bias-corrected and accelerated, SciPy's default, which keeps
    its coverage closer to ``level`` than the percentile interval on few, skewed pairs.

    When BCa is undefined (a jackknife with no spread, e.g. one unit off a constant) the
    percentile interval of the same resamples is returned. A fresh Generator per call, so a
    row's interval does not depend on the rows before it.
    """
    diffs = np.asarray(diffs, dtype=float)
    if np.all(np.round(diffs - diffs[0], _DIFF_DECIMALS) == 0):
        return float(diffs[0]), float(diffs[0])     # every resample has the same mean
    return _scipy_bootstrap((diffs,), np.mean, resamples, seed, level, vectorized=True)


def two_sample_ci(first: np.ndarray, second: np.ndarray, statistic,
                  resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                  level: float = 0.95) -> tuple[float, float]:
    """BCa bootstrap CI of ``statistic(first, second)`` (two 1-D samples, e.g. the scores of
    members and of non-members), each sample resampled with replacement on its own, so every
    resample keeps both sizes; the percentile interval where BCa is undefined (a statistic
    constant over the jackknife, e.g. a perfect separation), as :func:`bootstrap_ci`."""
    samples = (np.asarray(first, dtype=float), np.asarray(second, dtype=float))
    return _scipy_bootstrap(samples, statistic, resamples, seed, level, vectorized=False)


def paired_ci(*samples: np.ndarray, statistic, resamples: int = BOOTSTRAP_RESAMPLES,
              seed: int = BOOTSTRAP_SEED, level: float = 0.95) -> tuple[float, float]:
    """BCa bootstrap CI of ``statistic(*samples)`` where ``samples[k][i]`` all belong to one
    unit (a site's N=1 and N=8 Dice, say, or those of two phantoms) and are resampled
    together; the percentile interval where BCa is undefined, as :func:`bootstrap_ci`."""
    arrays = tuple(np.asarray(x, dtype=float) for x in samples)
    return _scipy_bootstrap(arrays, statistic, resamples, seed, level, vectorized=False,
                            paired=True)


def _scipy_bootstrap(samples: tuple, statistic, resamples: int, seed: int, level: float,
                     vectorized: bool, paired: bool = False) -> tuple[float, float]:
    """``scipy.stats.bootstrap``'s BCa interval, else its percentile interval (NaN BCa)."""
    import warnings

    from scipy.stats import bootstrap

    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():   # a degenerate BCa warns and gives NaN: next method
            warnings.simplefilter("ignore")
            ci = bootstrap(samples, statistic, n_resamples=resamples, confidence_level=level,
                           method=method, vectorized=vectorized, paired=paired,
                           rng=np.random.default_rng(seed)).confidence_interval
        if np.isfinite(ci.low) and np.isfinite(ci.high):
            break
    return float(ci.low), float(ci.high)


def sign_flip_min_p(n_clients: int) -> float:
    """The smallest two-sided p the exact client-level sign-flip test can give with
    ``n_clients`` clients: 2 / 2^C (0.125 with 4 clients, 0.031 with 6)."""
    return min(1.0, 2.0 / 2 ** n_clients)


def sign_flip_p(diffs: np.ndarray, clients: np.ndarray, seed: int = BOOTSTRAP_SEED) -> float:
    """Two-sided p of the client-level sign-flip permutation test of the mean difference.

    Under "no difference" each client's differences are as likely to be flipped in sign as
    not (a client's folds flip together: they share its patients), so the mean difference
    is compared with its value under all 2^C sign patterns of the C clients' sums, by
    ``scipy.stats.permutation_test`` (exact enumeration up to ``EXACT_SIGN_FLIP_CLIENTS``
    clients). Honest about few clients: p cannot go below :func:`sign_flip_min_p`. All
    differences zero, or a single client (its two patterns are as extreme) -> 1.0.
    """
    from scipy.stats import permutation_test

    diffs, clients = np.round(np.asarray(diffs, dtype=float), _DIFF_DECIMALS), np.asarray(clients)
    if np.all(diffs == 0):
        return 1.0
    sums = np.array([diffs[clients == c].sum() for c in np.unique(clients)])
    if len(sums) < 2:
        return 1.0
    n_units = len(diffs)
    exact = len(sums) <= EXACT_SIGN_FLIP_CLIENTS
    result = permutation_test(
        (sums,), lambda x, axis: np.sum(x, axis=axis) / n_units, vectorized=True,
        permutation_type="samples", alternative="two-sided",
        n_resamples=np.inf if exact else BOOTSTRAP_RESAMPLES,
        rng=None if exact else np.random.default_rng(seed))
    return float(min(1.0, result.pvalue))


def client_bootstrap(diffs: np.ndarray, clients: np.ndarray,
                     resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                     level: float = 0.95) -> tuple[float, float, float]:
    """Two-stage (cluster) bootstrap of the mean difference: resample clients with
    replacement, then each drawn client's units (folds, seeds) with replacement.

    The folds of one client share its patients and its scanner, so they are not independent
    units; this interval respects that, and is wider than :func:`bootstrap_ci` when clients
    differ. Returns (low, high, p): p is the two-sided bootstrap p-value, twice the smaller
    share of resampled means on either side of 0 (at least 1/resamples). With few clients
    the resampled means take few distinct values and the p can fall far below what C
    clients can show (:func:`sign_flip_p` is the honest test); the interval is percentile.
    """
    diffs, clients = np.asarray(diffs, dtype=float), np.asarray(clients)
    if np.all(np.round(diffs - diffs[0], _DIFF_DECIMALS) == 0):
        return float(diffs[0]), float(diffs[0]), (1.0 if diffs[0] == 0 else float("nan"))
    groups = [diffs[clients == c] for c in np.unique(clients)]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(groups), size=(resamples, len(groups)))
    means = np.empty(resamples)
    for r in range(resamples):   # unequal group sizes: one resample at a time (10k: ~0.1 s)
        drawn = [groups[g] for g in picks[r]]
        means[r] = np.concatenate([g[rng.integers(0, len(g), len(g))] for g in drawn]).mean()
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    share = min(np.mean(means <= 0), np.mean(means >= 0))
    return float(low), float(high), float(min(1.0, max(2 * share, 1 / resamples)))


def wilcoxon_p(diffs: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences.

    zero_method='pratt': zero differences keep their place in the ranking (then are dropped),
    which is more conservative than discarding them first ('wilcox'). All differences zero ->
    1.0 (no evidence of any difference); a single pair -> NaN (no test is possible).
    """
    from scipy.stats import wilcoxon

    diffs = np.round(np.asarray(diffs, dtype=float), _DIFF_DECIMALS)
    if len(diffs) < 2:
        return float("nan")
    if np.all(diffs == 0):
        return 1.0
    return float(wilcoxon(diffs, zero_method="pratt").pvalue)


def _units_text(units: pd.DataFrame, limit: int = 3) -> str:
    shown = [f"(client {c}, fold {f}, seed {s})" for c, f, s in
             units[UNIT_COLUMNS].itertuples(index=False)][:limit]
    more = f" and {len(units) - limit} more" if len(units) > limit else ""
    return ", ".join(shown) + more


def check_sites(sites: str) -> None:
    """ConfigError (one line) unless ``sites`` is one of ``SITE_UNITS``."""
    if sites not in SITE_UNITS:
        raise ConfigError(f"report: sites must be one of {', '.join(SITE_UNITS)}, got {sites!r}")


def by_seed_site(table: pd.DataFrame) -> bool:
    """Whether a paired table counted each (seed, client) as a site (``sites="seed_client"``)."""
    return table.attrs.get("sites") == "seed_client"


def site_labels(units: pd.MultiIndex, sites: str = "client") -> np.ndarray:
    """The independent site of each (client, fold, seed) unit, as ``SITE_UNITS`` defines it."""
    check_sites(sites)
    clients = units.get_level_values("client").to_numpy()
    if sites == "client":
        return clients
    seeds = units.get_level_values(SEED_COLUMN).to_numpy()
    return np.array([f"seed {s} client {c}" for s, c in zip(seeds, clients)])


def paired_differences(results: pd.DataFrame, reference: str = "fcl",
                       metric: str = "dice_mean", pairs: str = "all",
                       sites: str = "client") -> pd.DataFrame:
    """Reference minus each other method, paired over (client, fold, seed), per mode and N.

    Columns: ``PAIRED_COLUMNS``. mean_diff > 0 means the reference is better. The CI is a
    BCa bootstrap (:func:`bootstrap_ci`, ``BOOTSTRAP_RESAMPLES`` resamples of the units,
    fixed seed, so the table is reproducible) that treats units as independent, although the
    folds of one client share its patients; p_value: see ``wilcoxon_p``. The ``client_*``
    columns resample clients, then their folds (:func:`client_bootstrap`): the interval to
    quote. ``sign_flip_p``: the exact client-level sign-flip test (:func:`sign_flip_p`), the
    p to quote; ``sign_flip_min_p`` the smallest it can be with that many clients. ``upper_bound`` rows are left
    out (their N is the whole training set). A (mode, N) that one of the two methods was not
    run at is not compared; those settings are listed in ``table.attrs['not_compared']``.
    ``pairs="all"``: a unit run by one method and not by the other raises ConfigError naming
    it. ``pairs="common"``: each method is paired with the reference on the units both ran
    (a grid that ran some methods on fewer folds); ``n_pairs`` says how many. ``sites``: what
    one independent unit of the client-level statistics is (``SITE_UNITS``); ``n_clients``
    counts them.
    """
    check_sites(sites)
    if pairs not in ("all", "common"):
        raise ConfigError(f"report: pairs must be 'all' or 'common', got {pairs!r}")
    client_means(results, metric)                   # validates the metric
    if reference == UPPER_BOUND:
        raise ConfigError(f"report: --reference {UPPER_BOUND} cannot be compared pairwise "
                          f"(its N is the whole training set)")
    results = with_seed(results)
    results = results[results["method"] != UPPER_BOUND]
    methods = _method_order(results["method"])
    if reference not in methods:
        raise ConfigError(f"report: reference method '{reference}' not in the results "
                          f"(methods: {', '.join(methods) or 'none'})")
    rows, not_compared = [], []
    for mode in [m for m in FINETUNE_MODES if m in set(results["finetune_mode"])]:
        in_mode = results[results["finetune_mode"] == mode]
        for n in sorted(in_mode["n_labeled"].unique()):
            setting = in_mode[in_mode["n_labeled"] == n]
            ref = setting[setting["method"] == reference].set_index(UNIT_COLUMNS)[metric]
            for method in methods:
                if method == reference:
                    continue
                other = setting[setting["method"] == method].set_index(UNIT_COLUMNS)[metric]
                if ref.empty or other.empty:
                    if not (ref.empty and other.empty):
                        absent = reference if ref.empty else method
                        not_compared.append(f"{method} at {mode} N={n} ({absent} has no rows)")
                    continue
                _check_unique(ref, reference, mode, n)
                _check_unique(other, method, mode, n)
                if pairs == "common":   # units only one of the two ran are left out
                    shared = ref.index.intersection(other.index)
                    if shared.empty:
                        not_compared.append(f"{method} at {mode} N={n} (no unit in common)")
                        continue
                    ref_units, other = ref.reindex(shared), other.reindex(shared)
                else:
                    _check_same_units(ref, other, reference, method, mode, n)
                    ref_units, other = ref, other.reindex(ref.index)
                diffs = (ref_units - other).to_numpy(float)
                low, high = bootstrap_ci(diffs)
                clients = site_labels(ref_units.index, sites)
                c_low, c_high, c_p = client_bootstrap(diffs, clients)
                n_clients = len(set(clients.tolist()))
                rows.append({"finetune_mode": mode, "n_labeled": int(n), "reference": reference,
                             "method": method, "n_pairs": len(diffs),
                             "reference_mean": float(ref_units.mean()),
                             "method_mean": float(other.mean()),
                             "mean_diff": float(diffs.mean()), "ci_low": low, "ci_high": high,
                             "p_value": wilcoxon_p(diffs),
                             "n_clients": n_clients, "client_ci_low": c_low,
                             "client_ci_high": c_high, "client_p_value": c_p,
                             "sign_flip_p": sign_flip_p(diffs, clients),
                             "sign_flip_min_p": sign_flip_min_p(n_clients)})
    table = pd.DataFrame(rows, columns=PAIRED_COLUMNS)
    table.attrs["not_compared"] = not_compared
    table.attrs["metric"] = metric
    table.attrs["sites"] = sites
    return table


def _check_unique(values: pd.Series, name: str, mode: str, n: int) -> None:
    """ConfigError if method ``name`` has several rows for one (client, fold, seed) unit."""
    twice = values.index[values.index.duplicated()]
    if len(twice):
        raise ConfigError(f"report: {name} has several rows for {mode} N={n} "
                          f"{_units_text(twice.to_frame(index=False))}")


def _check_same_units(ref: pd.Series, other: pd.Series, reference: str, method: str,
                      mode: str, n: int) -> None:
    """ConfigError unless both methods were run on the same (client, fold, seed) units
    (each already checked to have one row per unit)."""
    only_ref = ref.index.difference(other.index)
    only_other = other.index.difference(ref.index)
    if len(only_ref) or len(only_other):
        parts = []
        if len(only_ref):
            parts.append(f"{method} lacks {_units_text(only_ref.to_frame(index=False))}")
        if len(only_other):
            parts.append(f"{reference} lacks {_units_text(only_other.to_frame(index=False))}")
        raise ConfigError(f"report: unpaired results for {method} vs {reference} at {mode} "
                          f"N={n}: {'; '.join(parts)}")


# ----------------------------------------------------------------------------- positive control
CONTROL_METHOD = SUPERVISED_ENCODER
CONTROL_BASELINE = "random"
# The gate (issue 28): at local N=1 the control beats random init by at least this much Dice,
# with a client-level 95 % CI above 0; else no method comparison of the benchmark is read.
GATE_MODE, GATE_N, GATE_MIN_DIFF = "local", 1, 0.08


@dataclass(frozen=True)
class ControlGate:
    """The gate's verdict: ``holds``, ``ci_contains_zero``, ``too_small`` or ``missing``
    (no local N=1 pairs), the figures it was read from (NaN when missing) and one line."""
    verdict: str
    mean_diff: float
    client_ci_low: float
    client_ci_high: float
    client_p_value: float
    message: str


def positive_control(results: pd.DataFrame, metric: str = "dice_mean",
                     pairs: str = "all", sites: str = "client") -> pd.DataFrame:
    """``supervised_encoder`` minus random init per mode and N, paired over (client, fold,
    seed) as :func:`paired_differences` (the other methods' rows are not looked at). Empty
    when the results lack either method."""
    both = results[results["method"].isin([CONTROL_METHOD, CONTROL_BASELINE])]
    if set(both["method"]) != {CONTROL_METHOD, CONTROL_BASELINE}:
        return pd.DataFrame(columns=PAIRED_COLUMNS)
    return paired_differences(both, CONTROL_METHOD, metric, pairs, sites)


def control_gate(table: pd.DataFrame) -> ControlGate:
    """The gate on :func:`positive_control`'s table: its local N=1 row must show a mean
    difference >= ``GATE_MIN_DIFF`` with a client-level 95 % CI whose lower end is above 0."""
    row = table[(table["finetune_mode"] == GATE_MODE) & (table["n_labeled"] == GATE_N)]
    if row.empty:
        nan = float("nan")
        return ControlGate("missing", nan, nan, nan, nan,
                           f"gate not evaluated: no {GATE_MODE} N={GATE_N} pairs of "
                           f"{CONTROL_METHOD} and {CONTROL_BASELINE} rows")
    r = row.iloc[0]
    diff, low, high = float(r["mean_diff"]), float(r["client_ci_low"]), float(r["client_ci_high"])
    figures = (f"{CONTROL_METHOD} minus random init at {GATE_MODE} N={GATE_N}: {diff:+.3f}, "
               f"client-level 95% CI [{low:+.3f}, {high:+.3f}], {int(r['n_clients'])} "
               f"{'sites' if by_seed_site(table) else 'clients'}")
    if not low > 0 and not high < 0:   # the CI contains 0 (or is undefined)
        verdict, message = "ci_contains_zero", (
            f"WARNING: this benchmark cannot detect a good encoder (positive control's CI "
            f"contains 0); read no method comparison ({figures})")
    elif diff >= GATE_MIN_DIFF and low > 0:
        verdict, message = "holds", f"gate holds: this benchmark can detect a good encoder ({figures})"
    else:
        verdict, message = "too_small", (
            f"gate not met: the CI excludes 0, but the difference is below the gate's "
            f"+{GATE_MIN_DIFF:.2f} ({figures}); read no method comparison")
    return ControlGate(verdict, diff, low, high, float(r["client_p_value"]), message)
