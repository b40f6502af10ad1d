"""Can a slice's base-to-apex partition be read without anatomy? (issue 28's shortcut probe)

A multinomial logistic regression predicts a slice's partition from a few features, trained
on some patients and scored on unseen ones (split by patient, never by slice). With three
*global intensity statistics* (mean, fraction above 0.6, fraction above 0.8 of the normalised
slice) as features it measures the shortcut a contrastive method can take instead of learning
anatomy; with the true LV/RV/myocardium areas it shows how much position the anatomy holds.
Pure NumPy/PyTorch, no Ray: :mod:`experiments.phantom_checks` prints the figures.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def global_statistics(images: np.ndarray) -> np.ndarray:
    """(N, 3): mean, fraction above 0.6 and fraction above 0.8 of each normalised slice."""
    flat = images.reshape(len(images), -1)
    return np.stack([flat.mean(1), (flat > 0.6).mean(1), (flat > 0.8).mean(1)], axis=1)


def structure_areas(labels: np.ndarray, classes: Sequence[int] = (1, 2, 3)) -> np.ndarray:
    """(N, len(classes)): the area (fraction of the slice) of each labelled structure."""
    flat = labels.reshape(len(labels), -1)
    return np.stack([(flat == c).mean(1) for c in classes], axis=1)


def fit_logistic(x: np.ndarray, y: np.ndarray, classes: int, l2: float = 1e-3,
                 iterations: int = 200) -> torch.nn.Linear:
    """A multinomial logistic regression on standardised ``x`` (full-batch L-BFGS)."""
    torch.manual_seed(0)
    xt, yt = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.long)
    model = torch.nn.Linear(x.shape[1], classes).double()
    opt = torch.optim.LBFGS(model.parameters(), max_iter=iterations, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xt), yt) + l2 * model.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return model


def probe_accuracy(features: np.ndarray, partition: np.ndarray, patient: np.ndarray,
                   classes: int, folds: int = 2) -> float:
    """Accuracy of predicting ``partition`` from ``features`` for unseen patients: patients are
    dealt into ``folds`` groups; each is scored by a model fitted on the others."""
    patients = np.unique(patient)
    order = np.random.default_rng(0).permutation(len(patients))
    correct = 0
    for k in range(folds):
        test = np.isin(patient, patients[order[k::folds]])
        mu, sd = features[~test].mean(0), features[~test].std(0) + 1e-8
        model = fit_logistic((features[~test] - mu) / sd, partition[~test], classes)
        with torch.no_grad():
            pred = model(torch.as_tensor((features[test] - mu) / sd, dtype=torch.float64)).argmax(1).numpy()
        correct += int((pred == partition[test]).sum())
    return correct / len(partition)
