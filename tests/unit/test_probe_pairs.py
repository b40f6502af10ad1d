"""experiments/probe_pairs.py: paired probe differences over sites, pooled across seeds."""
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("probe_pairs", ROOT / "experiments" / "probe_pairs.py")
probe_pairs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe_pairs)


def _probes(path: Path, seed: int) -> str:
    """A probes.csv of 3 clients, 2 folds: fcl beats random init by 0.1 on the segmentation
    probe at every client, and by 0 +- noise on the partition probe."""
    rng = np.random.default_rng(seed)
    rows = []
    for client in range(3):
        for fold in (0, 1):
            for method, seg, part in (("random", 0.25, 0.40), ("fcl", 0.35, 0.40)):
                rows += [{"method": method, "fold": fold, "client": client,
                          "probe": "segmentation_dice", "value": seg + rng.normal(0, 0.005)},
                         {"method": method, "fold": fold, "client": client,
                          "probe": "partition_accuracy", "value": part + rng.normal(0, 0.05)}]
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def test_seeds_pool_into_more_sites_and_each_probe_gets_its_table(tmp_path, capsys):
    files = [f"{seed}={_probes(tmp_path / f'p{seed}.csv', seed)}" for seed in (0, 1)]
    probes = probe_pairs.read_probes(files, folds=[0])
    assert sorted(probes["seed"].unique()) == [0, 1] and set(probes["fold"]) == {0}
    by_site = probe_pairs.probe_pairs(probes, "fcl", sites="seed_client")
    seg = by_site["segmentation_dice"].set_index("method").loc["random"]
    assert seg["n_pairs"] == 6 and seg["n_clients"] == 6          # 2 seeds x 3 clients
    assert abs(seg["mean_diff"] - 0.10) < 0.01 and seg["client_ci_low"] > 0.08
    assert seg["sign_flip_p"] == 2 / 2 ** 6                       # every site agrees: the floor
    by_client = probe_pairs.probe_pairs(probes, "fcl", sites="client")
    assert by_client["segmentation_dice"].set_index("method").loc["random", "n_clients"] == 3
    part = by_site["partition_accuracy"].set_index("method").loc["random"]
    assert part["client_ci_low"] < 0 < part["client_ci_high"]      # no difference built in

    assert probe_pairs.main([*files, "--sites", "seed_client"]) == 0
    out = capsys.readouterr().out
    assert "### segmentation_dice: fcl minus each method" in out and "| random | 12 |" in out


def test_bad_arguments_are_one_line_and_exit_2(tmp_path, capsys):
    not_probes = tmp_path / "results.csv"
    pd.DataFrame({"method": ["fcl"], "dice_mean": [0.5]}).to_csv(not_probes, index=False)
    for args, said in ((["runs/probes.csv"], "expected SEED=PATH"),
                       ([f"0={tmp_path / 'none.csv'}"], "no such probes.csv"),
                       ([f"0={not_probes}"], "missing columns fold, client, probe, value")):
        assert probe_pairs.main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("probe_pairs: error: ") and said in err[0]
