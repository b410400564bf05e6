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

__all__ = ["nll", "fit_temperature"]


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
