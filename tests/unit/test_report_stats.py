"""Paired statistics of `fcl-ray report`: reference minus each method over (client, fold, seed)."""
import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

import fcl_ray
from fcl_ray.cli import main
from fcl_ray.config import ConfigError
from fcl_ray.results import load_results
from fcl_ray.statistics import paired_differences


def _units(clients=3, folds=2, seeds=(0,)):
    return list(itertools.product(range(clients), range(folds), seeds))


def _results(diffs, units=None, method="random", modes=("local",), n=1, seed_column=False,
             reference_dice=None):
    """Rows of 'fcl' and ``method`` whose per-unit difference (fcl minus method) is ``diffs``."""
    units = units or _units()
    diffs = np.broadcast_to(np.asarray(diffs, dtype=float), (len(units),))
    # The reference varies over units so that only the *paired* difference is constant.
    ref = reference_dice if reference_dice is not None else 0.6 + 0.01 * np.arange(len(units))
    rows = []
    for mode in modes:
        for (client, fold, seed), r, d in zip(units, ref, diffs):
            for name, dice in (("fcl", r), (method, r - d)):
                row = {"method": name, "finetune_mode": mode, "n_labeled": n, "fold": fold,
                       "client": client, "dice_mean": dice, "dice_rv": dice, "dice_myo": dice,
                       "dice_lv": dice}
                if seed_column:
                    row["seed"] = seed
                rows.append(row)
    return pd.DataFrame(rows)


def _row(table, method="random", mode="local", n=1):
    sel = table[(table.method == method) & (table.finetune_mode == mode) & (table.n_labeled == n)]
    assert len(sel) == 1
    return sel.iloc[0]


def test_a_constant_difference_gives_that_mean_and_a_zero_width_interval():
    row = _row(paired_differences(_results(0.05)))
    assert row.n_pairs == 6 and row.reference == "fcl"
    assert row.mean_diff == pytest.approx(0.05)
    assert row.ci_low == pytest.approx(0.05) and row.ci_high == pytest.approx(0.05)
    assert row.reference_mean == pytest.approx(0.625)          # 0.60 .. 0.65
    assert row.method_mean == pytest.approx(0.575)
    assert row.p_value == pytest.approx(2 / 2 ** 6)            # exact: all 6 signs positive


def test_known_differences_give_their_mean_inside_the_interval():
    diffs = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]
    row = _row(paired_differences(_results(diffs)))
    assert row.mean_diff == pytest.approx(0.035)
    assert 0.01 <= row.ci_low < 0.035 < row.ci_high <= 0.06
    again = _row(paired_differences(_results(diffs)))          # fixed bootstrap seed
    assert (again.ci_low, again.ci_high) == (row.ci_low, row.ci_high)


def test_the_interval_shrinks_as_pairs_are_added():
    units = _units(clients=10, folds=4, seeds=(0, 1, 2, 3))    # 160 pairs
    diffs = np.random.default_rng(7).normal(0.02, 0.05, len(units))
    few = _row(paired_differences(_results(diffs[:10], units[:10], seed_column=True)))
    many = _row(paired_differences(_results(diffs, units, seed_column=True)))
    assert many.n_pairs == 160 and few.n_pairs == 10
    assert many.ci_high - many.ci_low < (few.ci_high - few.ci_low) / 2


def test_ties_and_zero_differences():
    same = _row(paired_differences(_results(0.0)))
    assert (same.mean_diff, same.ci_low, same.ci_high, same.p_value) == (0, 0, 0, 1.0)
    tied = [0.0, 0.0, 0.1, 0.1, 0.1, -0.2]
    row = _row(paired_differences(_results(tied)))
    assert row.p_value == pytest.approx(wilcoxon(tied, zero_method="pratt").pvalue)
    assert 0 < row.p_value <= 1
    one = _row(paired_differences(_results(0.07, units=[(0, 0, 0)])))
    assert one.n_pairs == 1 and np.isnan(one.p_value)
    assert one.ci_low == pytest.approx(0.07) and one.ci_high == pytest.approx(0.07)


def test_noise_covers_zero_and_a_clear_shift_does_not():
    units = _units(clients=5, folds=4, seeds=(0, 1))            # 40 pairs
    rng = np.random.default_rng(3)
    noise = _row(paired_differences(_results(rng.normal(0, 0.05, 40), units, seed_column=True)))
    assert noise.ci_low < 0 < noise.ci_high and noise.p_value > 0.2
    shift = _row(paired_differences(_results(0.05 + rng.normal(0, 0.02, 40), units,
                                             seed_column=True)))
    assert shift.ci_low > 0.03 and shift.p_value < 1e-4
    worse = _row(paired_differences(_results(-0.05 + rng.normal(0, 0.02, 40), units,
                                             seed_column=True)))
    assert worse.ci_high < 0 and worse.p_value < 1e-4          # two-sided


def test_every_mode_n_and_method_gets_a_row_and_the_upper_bound_none():
    results = pd.concat([_results(0.1, modes=("local", "federated"), n=n, method=m)
                         for n in (1, 2) for m in ("random", "fedswav")], ignore_index=True)
    results = results.drop_duplicates(["method", "finetune_mode", "n_labeled", "fold", "client"])
    upper = _results(0.0, n=9).assign(method="upper_bound")
    table = paired_differences(pd.concat([results, upper], ignore_index=True))
    assert len(table) == 2 * 2 * 2 and "upper_bound" not in set(table.method)
    assert list(table.columns) == ["finetune_mode", "n_labeled", "reference", "method", "n_pairs",
                                   "reference_mean", "method_mean", "mean_diff", "ci_low",
                                   "ci_high", "p_value", "n_clients", "client_ci_low",
                                   "client_ci_high", "client_p_value", "sign_flip_p",
                                   "sign_flip_min_p"]
    assert table.attrs["not_compared"] == []
    with pytest.raises(ConfigError, match="upper_bound cannot"):
        paired_differences(results, reference="upper_bound")


def test_another_reference_and_metric():
    results = _results(0.05).assign(dice_lv=lambda f: np.where(f.method == "fcl", 0.8, 0.9))
    row = _row(paired_differences(results, reference="random", metric="dice_lv"), method="fcl")
    assert row.reference == "random" and row.mean_diff == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="metric 'dice_la'"):
        paired_differences(results, metric="dice_la")


def test_a_missing_reference_is_named():
    results = _results(0.05)
    with pytest.raises(ConfigError, match=r"reference method 'fedca' not in the results "
                                          r"\(methods: random, fcl\)"):
        paired_differences(results, reference="fedca")


def test_a_missing_pair_is_named():
    results = _results(0.05)
    lost = results[~((results.method == "random") & (results.client == 2) & (results.fold == 1))]
    with pytest.raises(ConfigError) as err:
        paired_differences(lost)
    message = str(err.value)
    assert "random vs fcl at local N=1" in message
    assert "random lacks (client 2, fold 1, seed 0)" in message and "\n" not in message
    extra = pd.concat([results, results.iloc[[1]].assign(fold=5)], ignore_index=True)
    with pytest.raises(ConfigError, match=r"fcl lacks \(client 0, fold 5, seed 0\)"):
        paired_differences(extra)
    # Many missing units: a few are named, the rest counted.
    seeds = _results(0.05, units=_units(seeds=(0, 1)), seed_column=True)
    one_seed = seeds[~((seeds.method == "random") & (seeds.seed == 1))]
    with pytest.raises(ConfigError, match=r"random lacks .*seed 1\) and 3 more"):
        paired_differences(one_seed)
    # Two rows for one unit (e.g. two seeds concatenated without a seed column).
    twice = pd.concat([results, results[results.method == "random"].iloc[[0]]])
    with pytest.raises(ConfigError, match=r"random has several rows for local N=1 "
                                          r"\(client 0, fold 0, seed 0\)$"):
        paired_differences(twice)


def test_common_pairs_use_the_units_both_methods_ran():
    """A grid that ran one method on fewer folds: pairs="common" pairs it on its folds only
    (the reference's mean over those units too); the default still refuses."""
    diffs = np.where(np.array([fold for _, fold, _ in _units()]) == 0, 0.02, 0.2)
    results = _results(diffs)
    fold0_only = results[~((results.method == "random") & (results.fold == 1))]
    with pytest.raises(ConfigError, match="unpaired results"):
        paired_differences(fold0_only)
    row = _row(paired_differences(fold0_only, pairs="common"))
    assert row.n_pairs == 3 and row.mean_diff == pytest.approx(0.02)
    fcl_fold0 = results[(results.method == "fcl") & (results.fold == 0)].dice_mean.mean()
    assert row.reference_mean == pytest.approx(fcl_fold0)
    # Nothing in common: listed as not compared, no row.
    disjoint = results[~((results.method == "random") & (results.fold == 1))
                       & ~((results.method == "fcl") & (results.fold == 0))]
    table = paired_differences(disjoint, pairs="common")
    assert table.empty and "no unit in common" in table.attrs["not_compared"][0]
    # Duplicates are refused either way.
    twice = pd.concat([fold0_only, fold0_only[fold0_only.method == "random"].iloc[[0]]])
    with pytest.raises(ConfigError, match="random has several rows"):
        paired_differences(twice, pairs="common")


def test_a_setting_one_method_was_not_run_at_is_listed_not_compared():
    results = pd.concat([_results(0.05, n=1), _results(0.05, n=2)], ignore_index=True)
    results = results[~((results.method == "random") & (results.n_labeled == 2))]
    table = paired_differences(results)
    assert list(table.n_labeled) == [1]
    assert table.attrs["not_compared"] == ["random at local N=2 (random has no rows)"]


def test_seed_column_absent_or_present(tmp_path):
    without = paired_differences(_results(0.05))
    with_zero = paired_differences(_results(0.05, seed_column=True))
    pd.testing.assert_frame_equal(without, with_zero)
    # Two seeds written as two files: kept apart (not duplicates), paired per seed.
    units = _units(seeds=(0, 1))
    both = _results([0.05] * 6 + [0.01] * 6, units, seed_column=True)
    both[both.seed == 0].to_csv(tmp_path / "seed0.csv", index=False)
    both[both.seed == 1].to_csv(tmp_path / "seed1.csv", index=False)
    loaded = load_results([str(tmp_path / "seed0.csv"), str(tmp_path / "seed1.csv")])
    assert len(loaded) == 24 and loaded.attrs["duplicates_dropped"] == 0
    row = _row(paired_differences(loaded))
    assert row.n_pairs == 12 and row.mean_diff == pytest.approx(0.03)
    # A file without seeds counts as seed 0: the seed-0 file with a seed column replaces it.
    _results(0.5).to_csv(tmp_path / "old.csv", index=False)
    loaded = load_results([str(tmp_path / "old.csv"), str(tmp_path / "seed0.csv"),
                           str(tmp_path / "seed1.csv")])
    assert loaded.attrs["duplicates_dropped"] == 12
    assert _row(paired_differences(loaded)).mean_diff == pytest.approx(0.03)


def test_cli_prints_and_writes_the_statistics(tmp_path, capsys):
    _results(0.05, modes=("local", "federated")).to_csv(tmp_path / "r.csv", index=False)
    out_dir = tmp_path / "rep"
    assert main(["report", str(tmp_path / "r.csv"), "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    paper = out.index("### local fine-tuning (dice_mean")
    stats = out.index("### local fine-tuning: fcl minus each method (dice_mean")
    assert paper < out.index("### federated fine-tuning (dice_mean") < stats
    assert "| random | 1 | 6 | 0.625 | 0.575 | +0.050 [+0.050, +0.050] | 0.031 |" in out
    for name in ("paired_differences.md", "paired_differences.csv", "paired_differences.png"):
        assert f"wrote {out_dir / name}" in out
    csv = pd.read_csv(out_dir / "paired_differences.csv")
    assert list(csv.finetune_mode) == ["local", "federated"]
    assert csv.mean_diff.tolist() == pytest.approx([0.05, 0.05])
    assert "fcl minus each method" in (out_dir / "paired_differences.md").read_text()
    assert (out_dir / "paired_differences.png").read_bytes()[:4] == b"\x89PNG"
    # --reference picks another method; the sign flips.
    assert main(["report", str(tmp_path / "r.csv"), "--reference", "random"]) == 0
    assert "| fcl | 1 | 6 | 0.575 | 0.625 | -0.050 [-0.050, -0.050] | 0.031 |" in \
        capsys.readouterr().out


def test_cli_without_fcl_skips_the_statistics_with_a_note(tmp_path, capsys):
    _results(0.05, method="random").query("method == 'random'").to_csv(tmp_path / "r.csv",
                                                                       index=False)
    assert main(["report", str(tmp_path / "r.csv"), "--out", str(tmp_path / "rep")]) == 0
    out, err = capsys.readouterr()
    assert "minus each method" not in out
    assert err.strip() == ("note: no 'fcl' rows, paired statistics skipped "
                           "(choose --reference)")
    assert not (tmp_path / "rep" / "paired_differences.md").exists()
    assert (tmp_path / "rep" / "table_local.md").is_file()


@pytest.mark.parametrize("which, message", [
    ("reference", "reference method 'fedca' not in the results (methods: random, fcl)"),
    ("seed", "column seed, row 1: '0.5' is not a whole number >= 0"),
    ("pair", "unpaired results for random vs fcl at local N=1: random lacks "
             "(client 0, fold 0, seed 0)"),
])
def test_cli_errors_exit_2_with_one_line(tmp_path, capsys, which, message):
    results = _results(0.05)
    argv = ["report", str(tmp_path / "r.csv"), "--out", str(tmp_path / "rep")]
    if which == "reference":
        argv += ["--reference", "fedca"]
    elif which == "seed":
        results = results.assign(seed=0.5)
    else:
        results = results.drop(index=1)                         # random, client 0, fold 0
    results.to_csv(tmp_path / "r.csv", index=False)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "rep").exists()                      # nothing half-written


def test_client_bootstrap_is_wider_when_clients_differ():
    """Folds of one client are not independent: a client-level shift widens the interval that
    resamples clients, not the one that treats the 12 (client, fold) units as independent."""
    from fcl_ray.statistics import bootstrap_ci, client_bootstrap

    clients = np.repeat(np.arange(4), 3)
    diffs = np.array([0.10, 0.11, 0.09, -0.02, -0.01, -0.03, 0.06, 0.05, 0.07, 0.01, 0.0, 0.02])
    low, high = bootstrap_ci(diffs)
    c_low, c_high, c_p = client_bootstrap(diffs, clients)
    assert c_high - c_low > 1.3 * (high - low)
    assert c_low < diffs.mean() < c_high and 0 < c_p <= 1
    # every client the same clear gain: tight and significant at the client level too
    steady = 0.05 + 0.001 * np.arange(12)
    s_low, s_high, s_p = client_bootstrap(steady, clients)
    assert s_low > 0.04 and s_p <= 1e-3
    assert client_bootstrap(np.zeros(12), clients) == (0.0, 0.0, 1.0)


def test_the_run_report_has_the_paired_differences_when_the_reference_was_run(tmp_path):
    """What a run publishes under report/: the tables and plots, and the paired differences of
    the reference against the other methods (none when the reference is absent)."""
    from fcl_ray.dashboard import write_run_report

    results = _results(0.05)
    names = {p.name for p in write_run_report(results, tmp_path / "with", reference="fcl")}
    assert {"table_local.md", "dice_vs_n.png", "dice_per_client.png", "paired_differences.md",
            "paired_differences.csv", "paired_differences.png"} <= names
    names = {p.name for p in write_run_report(results, tmp_path / "without", reference="fedca")}
    assert "table_local.md" in names and not any(n.startswith("paired") for n in names)


def test_ranking_line_says_whether_a_run_can_rank_fcl_and_random():
    from fcl_ray.report import ranking_line

    noisy = ranking_line(_results([0.05, -0.04, 0.02, -0.03, 0.01, 0.0]))
    assert noisy.startswith("fcl minus random (local, N=1): ")
    assert "cannot rank them: the CI contains 0" in noisy
    clear = ranking_line(_results([0.10, 0.12, 0.09, 0.11, 0.10, 0.13]))
    assert "The CI excludes 0" in clear and "+0.108" in clear
    assert ranking_line(_results([0.1], method="local_cl")) == ""   # no random rows


def test_sign_flip_test_is_exact_over_clients_and_states_its_floor():
    """All 2^C sign patterns of the clients' sums: with every client better the p is the
    floor 2/2^C (0.125 with 4 clients, 1/32 with 6), where the client bootstrap claims more."""
    from itertools import product

    from fcl_ray.statistics import client_bootstrap, sign_flip_min_p, sign_flip_p

    four = np.repeat(np.arange(4), 2)
    steady = 0.05 + 0.001 * np.arange(8)
    assert sign_flip_p(steady, four) == sign_flip_min_p(4) == 0.125
    assert client_bootstrap(steady, four)[2] < 0.125            # what it overstated
    six = np.repeat(np.arange(6), 2)
    assert sign_flip_p(0.05 + 0.001 * np.arange(12), six) == pytest.approx(1 / 32)
    mixed = np.array([0.1, -0.02, 0.03, 0.05, -0.01, 0.04, 0.0, -0.09])
    sums = np.array([mixed[four == c].sum() for c in range(4)])
    brute = np.mean([abs(np.dot(signs, sums)) >= abs(sums.sum()) - 1e-12
                     for signs in product((1, -1), repeat=4)])
    assert sign_flip_p(mixed, four) == pytest.approx(brute) and brute > 0.125
    assert sign_flip_p(np.zeros(8), four) == 1.0


def test_bca_interval_comes_from_scipy():
    from scipy.stats import bootstrap

    from fcl_ray.statistics import bootstrap_ci

    diffs = np.array([0.01, 0.02, 0.02, 0.03, 0.05, 0.09, 0.0, 0.04])
    ci = bootstrap((diffs,), np.mean, n_resamples=10_000, method="BCa",
                   rng=np.random.default_rng(0)).confidence_interval
    assert bootstrap_ci(diffs) == (pytest.approx(ci.low), pytest.approx(ci.high))
    # BCa undefined (every jackknife mean but one alike): the percentile interval instead
    low, high = bootstrap_ci(np.array([0.05] * 7 + [0.06]))
    assert 0.05 <= low <= high <= 0.06


def test_report_says_what_to_quote_and_the_smallest_p(tmp_path):
    from fcl_ray.report import paired_markdown

    text = paired_markdown(paired_differences(_results(0.05, units=_units(clients=4))))
    assert "| 0.125 (0.125) |" in text
    assert "Quote the client-level 95% CI and the sign-flip p" in text
    assert "4 clients: 2/2^4 = 0.125" in text


def test_paired_plot_with_equal_differences(tmp_path):
    """Every difference equal: the CI equals the mean up to rounding (a negative error bar
    by one ulp crashed matplotlib)."""
    from fcl_ray.report import plot_paired_differences

    table = paired_differences(_results(0.1))
    table["ci_low"] = np.nextafter(table["mean_diff"], 1)      # one ulp above, as rounding gave
    assert plot_paired_differences(table, tmp_path / "p.png").stat().st_size > 0


def test_seeds_that_drew_their_own_sites_count_as_more_sites(tmp_path, capsys):
    """--sites seed_client: each (seed, client) is an independent site, so three clients over
    two seeds give six sites and a lower sign-flip floor; the default keeps a client id one
    site across seeds (the same hospital), whatever the seed."""
    units = _units(clients=3, folds=1, seeds=(0, 1))
    results = _results(0.05 + 0.001 * np.arange(len(units)), units=units, seed_column=True)
    by_client = _row(paired_differences(results))
    by_seed_site = _row(paired_differences(results, sites="seed_client"))
    assert by_client.n_clients == 3 and by_client.sign_flip_p == pytest.approx(0.25)
    assert by_seed_site.n_clients == 6 and by_seed_site.sign_flip_p == pytest.approx(1 / 32)
    assert by_seed_site.mean_diff == pytest.approx(by_client.mean_diff)
    for refused in (lambda: paired_differences(results, sites="hospital"),
                    lambda: fcl_ray.report(results, sites="hospital")):
        with pytest.raises(ConfigError, match="sites must be one of client, seed_client, got "
                                              "'hospital'"):
            refused()
    assert "| sites (seed, client) |" in fcl_ray.report(results, sites="seed_client").paired_text

    results.to_csv(tmp_path / "r.csv", index=False)
    assert main(["report", str(tmp_path / "r.csv"), "--sites", "seed_client"]) == 0
    out = capsys.readouterr().out
    assert "| sites (seed, client) |" in out and "Read with --sites seed_client" in out
    with pytest.raises(SystemExit) as stop:                     # argparse's choices
        main(["report", str(tmp_path / "r.csv"), "--sites", "hospital"])
    assert stop.value.code == 2
    assert "invalid choice: 'hospital'" in capsys.readouterr().err
