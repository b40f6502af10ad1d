"""Exploratory (issue 28): does random init's N=1 Dice depend on the labeled patient's phenotype,
or on whether its site's test patients share it? The committed calibration rows
(patience/calpat_seed0-3: Dice-CE, standard augmentation, fold 0, local, 24 sites).

Run from the repository root:
    .venv/bin/python experiments/results/v2/ftprotocol/phenotype_match.py
"""
import numpy as np
import pandas as pd

from fcl_ray.data.phantom_v2 import patient_phenotype
from fcl_ray.data.split import kfold_split

ROWS = "experiments/results/v2/patience/calpat_seed{}/results.csv"
SITES, PATIENTS, FOLDS, FOLD, SITE_SKEW = 6, 12, 4, 0, 1.0   # benchmark_v2.yaml

rows = []
for seed in range(4):
    results = pd.read_csv(ROWS.format(seed))
    results = results[(results.method == "random") & (results.fold == FOLD)]
    for site in range(SITES):
        # The N=1 patient and the test patients, as the site actor splits them (patient i is
        # case i of the phantom site; the same seeded permutation).
        split = kfold_split(PATIENTS, FOLDS, FOLD, 1, seed, site)
        labeled = patient_phenotype(seed, site, split.labeled[0], SITE_SKEW)
        test = [patient_phenotype(seed, site, case, SITE_SKEW) for case in split.test]
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
