"""What every model is compared with, in numpy only: bedside scores, shortcut controls, and the
strongest simple baselines (L2 logistic regression, gradient-boosted stumps) on window summaries.

Used by models/evaluate.py; checked by models/test_evaluation.py.

* ``bedside(patients, pids, times)``: NEWS2 (with oxygen from O2 flow 3151-8 > 0 L/min or FiO2
  3150-0 > 21 %, and ACVPU from 67775-7/80288-4; SpO2 scale 2 for hypercapnic respiratory failure),
  qSOFA, SIRS, KDIGO stage, KDIGO ratio, last creatinine - from each patient's recorded
  Observations (``dataset.Patients.bedside``), as the gateway reads them at the request time.
* ``summary_features(x, spec)``: per channel of the model's own input grid: last, min, max, mean,
  slope over the last 6 h, hours since the last measurement (6 x F features).
* ``fit_logistic`` / ``predict_logistic``: Newton/IRLS with an L2 penalty on standardised features.
* ``fit_stumps`` / ``predict_stumps``: gradient boosting (logistic loss, Newton leaf values) of
  depth-1 trees on 16 quantile bins per feature.
* ``abstain_reasons``: the manifest's ``[validity]`` + the service's ``[guardrails]`` as the gateway
  applies them (src/services/abstain.rs), per request.
"""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from models import baselines

HOUR = 3600.0
VITALS_MAX_AGE_H = 6.0    # as models/dataset.py: older vital signs are "not recorded" for the bedside scores
LABS_MAX_AGE_H = 24.0
BEDSIDE = ("news2", "qsofa", "sirs", "kdigo", "kdigo_ratio", "creatinine_last")


# ================================================================================ bedside scores
def _latest_many(times: np.ndarray, vals: np.ndarray, at: np.ndarray, max_age_h: float | None):
    """Per reference time: the newest value strictly before it and not older than max_age (nan if none)."""
    out = np.full(len(at), np.nan)
    if len(times) == 0:
        return out
    k = np.searchsorted(times, at, side="left") - 1
    ok = k >= 0
    if max_age_h is not None:
        ok &= times[np.maximum(k, 0)] >= at - max_age_h * HOUR
    out[ok] = vals[k[ok]]
    return out


def bedside(patients, pids: np.ndarray, times: np.ndarray) -> dict:
    """Each bedside score per (patient, reference time), from ``patients.bedside`` measurements."""
    if patients.bedside is None:
        raise ValueError("patients were loaded without the bedside inputs (use dataset.load_patients)")
    from models.dataset import bedside_spec
    names = {f["name"]: i for i, f in enumerate(bedside_spec()["feature"])}
    out = {k: np.zeros(len(times)) for k in BEDSIDE}
    order = np.argsort(pids, kind="mergesort")
    bounds = np.flatnonzero(np.r_[True, pids[order][1:] != pids[order][:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        idx = order[a:b]
        p = int(pids[idx[0]])
        ms = patients.bedside[p]
        rec = patients.records[p]
        at = times[idx]
        per = {}
        for name, f in names.items():
            tv = [(m[1], m[2]) for m in ms if m[0] == f]
            per[name] = (np.array([x[0] for x in tv], dtype=np.float64), np.array([x[1] for x in tv], dtype=np.float64))
        last = {k: _latest_many(*per[k], at, VITALS_MAX_AGE_H)
                for k in ("respiratory_rate", "spo2", "systolic_bp", "heart_rate", "temperature",
                          "consciousness_not_alert", "o2_flow", "fio2")}
        wbc = _latest_many(*per["wbc"], at, LABS_MAX_AGE_H)
        crea_t, crea_v = per["creatinine"]
        crea_last = _latest_many(crea_t, crea_v, at, 7 * 24.0)
        scale = 2 if rec["hypercapnic"] else 1
        for j, i in enumerate(idx):
            v = {k: (None if np.isnan(last[k][j]) else float(last[k][j]))
                 for k in ("respiratory_rate", "spo2", "systolic_bp", "heart_rate", "temperature")}
            c = last["consciousness_not_alert"][j]
            alert = None if np.isnan(c) else bool(c < 0.5)
            flow, fio2 = last["o2_flow"][j], last["fio2"][j]
            if np.isnan(flow) and np.isnan(fio2):
                on_o2 = None
            else:
                on_o2 = bool((not np.isnan(flow) and flow > 0) or (not np.isnan(fio2) and fio2 > 21.0))
            out["news2"][i] = baselines.news2({**v, "alert": alert, "on_oxygen": on_o2}, scale=scale)["total"]
            out["qsofa"][i] = baselines.qsofa({**v, "alert": alert})["total"]
            out["sirs"][i] = baselines.sirs({**v, "wbc": None if np.isnan(wbc[j]) else float(wbc[j])})["total"]
            t = at[j]
            sel = (crea_t >= t - 7 * 24 * HOUR) & (crea_t < t)
            if sel.any():
                series = [(datetime.fromtimestamp(mt, timezone.utc), float(val))
                          for mt, val in zip(crea_t[sel], crea_v[sel])]
                k = baselines.kdigo(series, datetime.fromtimestamp(t, timezone.utc))
                out["kdigo"][i] = k["stage"] or 0
                out["kdigo_ratio"][i] = k["ratio"] if k["ratio"] is not None else 1.0
            else:
                out["kdigo"][i], out["kdigo_ratio"][i] = 0, 1.0
            out["creatinine_last"][i] = crea_last[j]   # nan: none in 7 days (ranked lowest by the caller)
    return out


# ================================================================================ abstention
def abstain_reasons(validity: dict, guardrails: dict | None, spec: dict, measurements: list, times) -> list[str]:
    """Per reference time: "" when the model may score, else the first reason it may not, with the
    rules and in the order of src/services/abstain.rs (and ``featurize.abstain_reason``, its
    per-request Python twin, which this vectorises for evaluation): fewer in-window measurements
    than the service's ``min_observations`` (or an old manifest's ``min_measurements``); a required
    input missing; the newest measurement older than the staleness limit; no complete set of core
    observations (``features.toml`` ``[require_recent]``: each feature measured within its hours).
    Implausible values were already dropped by ``featurize.extract``; values outside the training
    range are clamped, not refused."""
    times = np.asarray(times, dtype=np.float64)
    window = spec["window_hours"] * HOUR
    feats = spec["feature"]
    need = max(int(validity.get("min_measurements", 0) or 0),
               int((guardrails or {}).get("min_observations", 0) or 0), 1)
    stale = [h for h in (validity.get("max_staleness_hours"), (guardrails or {}).get("max_staleness_hours"))
             if h is not None]
    max_age = min(stale) * HOUR if stale else None
    mt = np.array([m[1] for m in measurements], dtype=np.float64)
    mf = np.array([m[0] for m in measurements], dtype=np.int64)
    lo = np.searchsorted(mt, times - window, side="left")
    hi = np.searchsorted(mt, times, side="left")
    count = hi - lo
    out = np.full(len(times), "", dtype=object)
    out[count < need] = "too few measurements"
    name_to_f = {f["name"]: i for i, f in enumerate(feats)}
    for name in validity.get("required", []):
        f = name_to_f.get(name)
        if f is None:
            continue
        cum = np.r_[0, np.cumsum(mf == f)]
        missing = (cum[hi] - cum[lo]) == 0
        out[(out == "") & missing] = f"no {name}"
    if max_age is not None:
        newest = np.where(hi > 0, mt[np.maximum(hi - 1, 0)], -np.inf)
        out[(out == "") & (times - newest > max_age)] = "newest measurement too old"
    recent = spec.get("require_recent")
    if recent:
        since = times - float(recent["hours"]) * HOUR
        for name in recent["features"]:
            f = name_to_f.get(name)
            if f is None:
                continue
            ft = mt[mf == f]
            k = np.searchsorted(ft, times, side="left")  # measurements of f before t
            last = (np.where(k > 0, ft[np.maximum(k - 1, 0)], -np.inf) if len(ft)
                    else np.full(len(times), -np.inf))
            out[(out == "") & (last < np.maximum(since, times - window))] = "no complete set of core observations"
    return out.tolist()


# ================================================================================ summaries
SUMMARY_STATS = ("last", "min", "max", "mean", "slope_6h", "hours_since_last")


def summary_features(x: np.ndarray, spec: dict) -> np.ndarray:
    """[N, steps, 2F] model grid (normalised values, then observed masks) -> [N, 6F] summaries per
    channel: last (forward-filled value of the last step, 0 = training mean when none), min / max /
    mean over observed steps (0 when none), slope over the last 6 h ((last - value 6 h earlier) / 6,
    forward-filled values) and hours since the last observed step (the window length when none)."""
    n, steps, c = x.shape
    F = c // 2
    v, m = x[:, :, :F].astype(np.float64), x[:, :, F:] > 0
    step_h = spec["step_minutes"] / 60.0
    k = max(1, int(round(6.0 / step_h)))
    k = min(k, steps - 1)
    any_obs = m.any(axis=1)
    big = np.where(m, v, np.inf).min(axis=1)
    small = np.where(m, v, -np.inf).max(axis=1)
    cnt = m.sum(axis=1)
    mean = np.where(cnt > 0, (v * m).sum(axis=1) / np.maximum(cnt, 1), 0.0)
    last_idx = np.where(any_obs, steps - 1 - np.argmax(m[:, ::-1, :], axis=1), -1)
    since = np.where(any_obs, (steps - 1 - last_idx + 0.5) * step_h, steps * step_h)
    feats = [v[:, -1, :], np.where(any_obs, big, 0.0), np.where(any_obs, small, 0.0), mean,
             (v[:, -1, :] - v[:, -1 - k, :]) / (k * step_h), since]
    return np.concatenate(feats, axis=1).astype(np.float64)


def summary_names(spec: dict) -> list[str]:
    return [f"{f['name']}.{s}" for s in SUMMARY_STATS for f in spec["feature"]]


# ================================================================================ logistic regression
def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -35, 35)))


def fit_logistic(X: np.ndarray, y: np.ndarray, l2: float = 1.0, max_iter: int = 50) -> dict:
    """L2-penalised logistic regression by Newton's method (IRLS) on standardised features; the
    intercept is not penalised. Deterministic."""
    X = np.asarray(X, dtype=np.float64)
    yv = np.asarray(y, dtype=np.float64)
    mu_x, sd_x = X.mean(axis=0), X.std(axis=0)
    sd_x = np.where(sd_x > 1e-6, sd_x, 1.0)
    Z = np.column_stack([np.ones(len(X)), (X - mu_x) / sd_x])
    beta = np.zeros(Z.shape[1])
    beta[0] = np.log(max(yv.mean(), 1e-6) / max(1 - yv.mean(), 1e-6))
    pen = np.full(Z.shape[1], float(l2))
    pen[0] = 0.0
    def objective(b):
        z = Z @ b
        return float(np.sum(yv * z - np.logaddexp(0.0, z)) - 0.5 * np.sum(pen * b * b))

    obj = objective(beta)
    for _ in range(max_iter):
        p = _sigmoid(Z @ beta)
        g = Z.T @ (yv - p) - pen * beta
        H = (Z * (p * (1 - p))[:, None]).T @ Z + np.diag(pen) + 1e-9 * np.eye(len(beta))
        step = np.linalg.solve(H, g)
        t = 1.0  # step halving: the penalised log-likelihood must not decrease
        while t > 1e-8:
            cand = beta + t * step
            new = objective(cand)
            if new >= obj - 1e-12:
                break
            t *= 0.5
        beta, done = cand, abs(new - obj) < 1e-10 * max(1.0, abs(obj))
        obj = new
        if done or np.max(np.abs(t * step)) < 1e-8:
            break
    return {"mean": mu_x, "std": sd_x, "beta": beta, "l2": float(l2)}


def predict_logistic(model: dict, X: np.ndarray) -> np.ndarray:
    Z = (np.asarray(X, dtype=np.float64) - model["mean"]) / model["std"]
    return _sigmoid(model["beta"][0] + Z @ model["beta"][1:])


# ================================================================================ boosted stumps
def fit_stumps(X: np.ndarray, y: np.ndarray, rounds: int = 150, learning_rate: float = 0.2,
               bins: int = 16, l2: float = 1.0) -> dict:
    """Gradient-boosted depth-1 trees (logistic loss). Each feature is cut at its training quantiles
    (``bins`` - 1 cuts); each round picks the (feature, cut) with the largest second-order gain and
    sets both leaves to -G / (H + l2) times the learning rate. Deterministic."""
    X = np.asarray(X, dtype=np.float64)
    yv = np.asarray(y, dtype=np.float64)
    n, F = X.shape
    cuts = [np.unique(np.quantile(X[:, f], np.linspace(0, 1, bins + 1)[1:-1])) for f in range(F)]
    codes = np.stack([np.searchsorted(cuts[f], X[:, f], side="right") for f in range(F)], axis=1)
    base = float(np.log(max(yv.mean(), 1e-6) / max(1 - yv.mean(), 1e-6)))
    z = np.full(n, base)
    trees = []
    for _ in range(rounds):
        p = _sigmoid(z)
        g, h = p - yv, p * (1 - p)
        G, H = g.sum(), h.sum()
        best = (0.0, None)
        for f in range(F):
            nb = len(cuts[f]) + 1
            if nb < 2:
                continue
            gl = np.cumsum(np.bincount(codes[:, f], weights=g, minlength=nb))[:-1]
            hl = np.cumsum(np.bincount(codes[:, f], weights=h, minlength=nb))[:-1]
            gain = gl ** 2 / (hl + l2) + (G - gl) ** 2 / (H - hl + l2) - G ** 2 / (H + l2)
            j = int(np.argmax(gain))
            if gain[j] > best[0] + 1e-12:
                best = (float(gain[j]), (f, j, gl[j], hl[j]))
        if best[1] is None:
            break
        f, j, gl, hl = best[1]
        left = -learning_rate * gl / (hl + l2)
        right = -learning_rate * (G - gl) / (H - hl + l2)
        thr = float(cuts[f][j])  # code <= j  <=>  x < cuts[j]
        trees.append((f, thr, float(left), float(right)))
        z += np.where(codes[:, f] <= j, left, right)
    return {"base": base, "trees": trees}


def predict_stumps(model: dict, X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    z = np.full(len(X), model["base"])
    for f, thr, left, right in model["trees"]:
        z += np.where(X[:, f] < thr, left, right)
    return _sigmoid(z)
