"""Exploratory (issue 28): does random init's N=1 Dice depend on the labeled patient's phenotype,
or on whether its site's test patients share it? The committed calibration rows
(patience/calpat_seed0-3: Dice-CE, standard augmentation, fold 0, local, 24 sites).

Run from the repository root:
    .venv/bin/python experiments/results/v2/ftprotocol/phenotype_match.py
"""
import numpy as np
import pandas as pd

from fcl_ray.config_io import load_config
from fcl_ray.data.phantom_v2 import patient_phenotype
from fcl_ray.data.split import kfold_split

RUN = "experiments/results/v2/patience/calpat_seed{}"
FOLD = 0

rows = []
for run in range(4):
    cfg = load_config(f"{RUN.format(run)}/config.yaml")   # the run's own seed, sites, folds, skew
    seed, d = cfg.experiment.seed, cfg.data
    results = pd.read_csv(f"{RUN.format(run)}/results.csv")
    results = results[(results.method == "random") & (results.fold == FOLD)]
    for site in range(d.clients):
        # The N=1 patient and the test patients, as the site actor splits them (patient i is
        # case i of the phantom site; the same seeded permutation).
        split = kfold_split(d.cases_per_client, d.folds, FOLD, 1, seed, site)
        labeled = patient_phenotype(seed, site, split.labeled[0], d.site_skew)
        test = [patient_phenotype(seed, site, case, d.site_skew) for case in split.test]
        dice = {n: results[(results.client == site) & (results.n_labeled == n)].dice_mean.item()
                for n in (1, 8)}
        rows.append(dict(seed=seed, site=site, labeled=labeled,
                         test_share=sum(t == labeled for t in test) / len(test),
                         n1=dice[1], n8=dice[8], ratio=dice[1] / dice[8]))
table = pd.DataFrame(rows)
print(table.groupby("labeled")[["n1", "n8", "ratio"]].agg(["mean", "count"]).round(3))
print(table.groupby("test_share")[["n1", "n8", "ratio"]].agg(["mean", "count"]).round(3))
print("correlation of test_share with N=1 Dice",
      round(np.corrcoef(table.test_share, table.n1)[0, 1], 3),
      "and with the ratio", round(np.corrcoef(table.test_share, table.ratio)[0, 1], 3))
