"""Temperature scaling: the one calibration step every bedside model gets before export.

Why this module exists: both training pipelines (``models/train.py`` and the frozen
``models/legacy/deterioration_v1/train.py``) fit the temperature the same way, and the exported
model bakes ``sigmoid(logit / T)`` in, so the fit must be one piece of code that cannot drift. The
fit is a fixed log-grid search (no optimiser state, no randomness): the same logits give the same T,
which keeps ``model.pt`` bytes reproducible.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["nll", "fit_temperature", "fit_platt", "prior_shift"]


def nll(z, y, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of labels ``y`` (0/1) under ``sigmoid(z / temperature)``,
    computed stably from the logits ``z``. With the default T = 1 this is the validation loss the
    training loops select the best epoch by."""
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    q = z / temperature
    return float(np.mean(np.logaddexp(0, q) - y * q))


def fit_temperature(z, y) -> float:
    """The temperature T minimising validation NLL of ``sigmoid(z / T)`` over a log-grid
    (log T from -1.5 to 1.5 in steps of 0.002, first minimum wins), rounded to 4 decimals."""
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    best_t, best_nll = 1.0, math.inf
    for log_t in np.arange(-1.5, 1.5 + 1e-9, 0.002):
        t = math.exp(log_t)
        loss = nll(z, y, t)
        if loss < best_nll:
            best_t, best_nll = t, loss
    return float(round(best_t, 4))


def fit_platt(z, y, iters: int = 100) -> tuple[float, float]:
    """Platt scaling: intercept ``a`` and slope ``b`` minimising the NLL of ``sigmoid(a + b z)``
    (Newton's method on the two parameters from a = 0, b = 1, float64, a fixed number of steps or
    until the step is below 1e-12: deterministic). Rounded to 6 decimals."""
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    a, b = 0.0, 1.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(a + b * z)))
        w = np.maximum(p * (1 - p), 1e-12)
        g = np.array([np.sum(p - y), np.sum((p - y) * z)])
        h = np.array([[np.sum(w), np.sum(w * z)], [np.sum(w * z), np.sum(w * z * z)]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        # damped: never more than 1 logit unit per step
        scale = min(1.0, 1.0 / max(np.abs(step).max(), 1e-300))
        a, b = a - scale * step[0], b - scale * step[1]
        if np.abs(step).max() < 1e-12:
            break
    return float(round(a, 6)), float(round(b, 6))


def prior_shift(intercept: float, from_prevalence: float, to_prevalence: float) -> float:
    """The intercept that moves calibrated probabilities from a population with prevalence
    ``from_prevalence`` to one with ``to_prevalence`` (Bayes: the likelihood ratio is unchanged,
    the prior odds change): a + logit(to) - logit(from)."""
    def logit(p):
        return math.log(p / (1.0 - p))
    return intercept + logit(to_prevalence) - logit(from_prevalence)
