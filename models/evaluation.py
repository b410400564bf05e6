"""Evaluation library for bedside model cards (numpy only, no sklearn / matplotlib).

The training and evaluation scripts use these functions to write *honest* model cards: not just a
headline AUROC, but the numbers a clinical safety reviewer needs to judge whether an early-warning
model is worth the interruptions it causes:

* discrimination    - ``auroc``, ``auprc`` (+ ``roc_svg``)
* calibration       - ``ece``, ``brier``, ``reliability`` (+ ``reliability_svg``)
* operating point   - ``threshold_metrics``, ``threshold_for_sensitivity``
* timeliness        - ``lead_times``
* fairness / gaps   - ``subgroups``
* uncertainty       - ``bootstrap_ci`` (patient-level resampling), ``cluster_bootstrap`` +
                      ``summarize_bootstrap`` (several scorers on the SAME resamples: paired differences)
* abstention        - ``abstain_lowest`` (a request the model did not score = "no alert", lowest rank)
* calibration fit   - ``calibration_slope_intercept`` (logistic recalibration), ``observed_expected``
* cards             - ``simulate_cards`` (a service's suppression window, escalation shown),
                      ``card_metrics`` (per-card PPV, cards per patient-day, per-event sensitivity)
* clinical utility  - ``net_benefit`` (+ ``decision_curve_svg``)
* reporting         - ``markdown_table``

Conventions shared by every function:

* ``y`` holds binary outcome labels (0/1 or bool), ``score`` any real-valued risk score where higher
  means more likely positive (a probability, a logit, a NEWS2 total ...), ``p`` a probability in [0, 1].
* Inputs may be lists or numpy arrays; they must be 1-D, non-empty and of equal length, otherwise a
  ``ValueError`` says which argument is wrong.
* NaNs are never dropped silently: a NaN label, score, time or group label raises ``ValueError``.
  Missing data must be handled (and documented) by the caller, because which rows are dropped changes
  the numbers on the card.
* An alert is ``score >= threshold`` everywhere.
* Undefined metrics (e.g. AUROC of a subgroup without positives) are returned as ``nan`` and printed as
  "n/a" by ``markdown_table`` rather than being hidden.

SVG output is deterministic (coordinates rounded to 1 decimal, no random ids, no timestamps),
standalone (no scripts, no external fonts or stylesheets) and accessible (``role="img"``,
``aria-label``, ``<title>`` and a ``<desc>`` holding the plotted numbers as text).
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Iterable, Sequence

import numpy as np

__all__ = [
    "auroc", "auprc", "ece", "brier", "reliability", "reliability_svg", "roc_svg", "threshold_metrics",
    "threshold_for_sensitivity", "lead_times", "subgroups", "bootstrap_ci", "markdown_table",
    "abstain_lowest", "cluster_bootstrap", "summarize_bootstrap", "calibration_slope_intercept",
    "observed_expected", "simulate_cards", "card_metrics", "net_benefit", "decision_curve_svg",
]


# ============================================================================ input validation
def _array_1d(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    return a


def _check_lengths(**arrays) -> int:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{k}={n}" for k, n in lengths.items())
        raise ValueError(f"length mismatch: {detail}")
    return next(iter(lengths.values()))


def _float_array(x, name: str) -> np.ndarray:
    a = _array_1d(x, name)
    if a.dtype.kind in "mMUSV":
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    try:
        f = a.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None
    bad = np.isnan(f)
    if bad.any():
        raise ValueError(f"{name} contains {int(bad.sum())} NaN/None value(s) (first at index "
                         f"{int(np.flatnonzero(bad)[0])}); handle missing values explicitly before evaluating")
    return f


def _labels(y, name: str = "y") -> np.ndarray:
    """Binary labels as a bool array (True = positive)."""
    f = _float_array(y, name)
    ok = (f == 0) | (f == 1)
    if not ok.all():
        found = sorted(set(f[~ok].tolist()))[:5]
        raise ValueError(f"{name} must contain only 0/1 labels, found {found}")
    return f == 1


def _scores(score, name: str = "score") -> np.ndarray:
    return _float_array(score, name)


def _probs(p, name: str = "p") -> np.ndarray:
    f = _float_array(p, name)
    bad = (f < 0) | (f > 1)
    if bad.any():
        raise ValueError(f"{name} must be probabilities in [0, 1]; {int(bad.sum())} value(s) outside, "
                         f"e.g. {f[bad][0]!r} at index {int(np.flatnonzero(bad)[0])}")
    return f


def _scalar(x, name: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {x!r}") from None
    if math.isnan(v):
        raise ValueError(f"{name} is NaN")
    return v


def _bins(bins) -> int:
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    return int(bins)


def _ids(x, name: str, n: int) -> tuple[np.ndarray, list]:
    """Validate a per-sample label array (patient ids, group labels) and factorize it.

    Returns (codes, levels): ``levels[codes[i]]`` is the label of sample i; levels are sorted when the
    labels are mutually comparable, otherwise kept in order of first appearance."""
    a = _array_1d(x, name)
    _check_lengths(**{name: a, "y/score": range(n)})
    if a.dtype.kind in "biuUS":  # no missing values possible: let numpy factorize (fast for long arrays)
        levels_arr, codes = np.unique(a, return_inverse=True)
        return codes.reshape(-1).astype(np.int64), levels_arr.tolist()
    if a.dtype.kind == "f":
        bad = np.isnan(a)
        if bad.any():
            raise ValueError(f"{name} contains {int(bad.sum())} missing (None/NaN) label(s) (first at index "
                             f"{int(np.flatnonzero(bad)[0])}); give them an explicit level such as 'unknown'")
        levels_arr, codes = np.unique(a, return_inverse=True)
        return codes.reshape(-1).astype(np.int64), levels_arr.tolist()
    values = a.tolist()
    missing = [i for i, v in enumerate(values) if v is None or (isinstance(v, float) and math.isnan(v))]
    if missing:
        raise ValueError(f"{name} contains {len(missing)} missing (None/NaN) label(s) (first at index "
                         f"{missing[0]}); give them an explicit level such as 'unknown'")
    first: dict = {}
    for v in values:
        if v not in first:
            first[v] = len(first)
    levels = list(first)
    try:
        levels = sorted(levels)
    except TypeError:
        pass
    index = {v: i for i, v in enumerate(levels)}
    codes = np.fromiter((index[v] for v in values), dtype=np.int64, count=len(values))
    return codes, levels


def _div(a: float, b: float) -> float:
    return float(a) / float(b) if b else float("nan")


# ============================================================================ discrimination
def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with tied values sharing the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x))
    ranks[order] = np.repeat((starts + 1 + ends) / 2.0, ends - starts)
    return ranks


def auroc(y, score) -> float:
    """Area under the ROC curve = P(score of a random positive > score of a random negative), ties 1/2.

    Why: threshold-free discrimination, comparable across models and with NEWS2. It ignores prevalence
    and calibration, so it is never reported alone. Computed from average ranks (Mann-Whitney U).
    Returns nan when only one class is present.
    """
    pos = _labels(y)
    s = _scores(score)
    _check_lengths(y=pos, score=s)
    n1 = int(pos.sum())
    n0 = len(pos) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = _average_ranks(s)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def _curve_counts(pos: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (true positives, false positives) when alerting at each distinct score, high to low.

    Returns (thresholds, tps, fps); tied scores form a single step."""
    order = np.argsort(-s, kind="mergesort")
    ss, pp = s[order], pos[order]
    last = np.flatnonzero(np.r_[ss[1:] != ss[:-1], True])  # last index of each tie group
    tps = np.cumsum(pp)[last].astype(np.float64)
    fps = (last + 1) - tps
    return ss[last], tps, fps


def auprc(y, score) -> float:
    """Average precision: sum over distinct thresholds of (recall gain) x precision (step-wise, no
    interpolation; same definition as sklearn's ``average_precision_score``; ties grouped).

    Why: with rare events (deterioration prevalence of a few %) precision is what clinicians feel -
    how many alerts are real. A random scorer's AUPRC equals the prevalence, which the card should
    print next to it. Returns nan when there are no positives.
    """
    pos = _labels(y)
    s = _scores(score)
    _check_lengths(y=pos, score=s)
    n1 = int(pos.sum())
    if n1 == 0:
        return float("nan")
    _, tps, fps = _curve_counts(pos, s)
    precision = tps / (tps + fps)
    recall = tps / n1
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


# ============================================================================ calibration
def _bin_index(p: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bins on [0, 1]; bin i = [i/bins, (i+1)/bins), the last bin also holds p = 1."""
    return np.minimum((p * bins).astype(np.int64), bins - 1)


def reliability(y, p, bins=10) -> list[dict]:
    """Per-bin calibration table: for each equal-width bin of predicted probability, the number of
    predictions ``n``, their mean (``mean_pred``) and the observed fraction of positives (``frac_pos``).

    Why: a risk shown to a clinician as "23 %" should come true about 23 % of the time; this table is
    the data behind the reliability diagram. All ``bins`` bins are returned; empty bins have n = 0 and
    nan for mean_pred / frac_pos (so gaps in the data are visible, not hidden).
    """
    pos = _labels(y)
    pr = _probs(p)
    _check_lengths(y=pos, p=pr)
    bins = _bins(bins)
    idx = _bin_index(pr, bins)
    n = np.bincount(idx, minlength=bins)
    sum_p = np.bincount(idx, weights=pr, minlength=bins)
    sum_y = np.bincount(idx, weights=pos.astype(np.float64), minlength=bins)
    rows = []
    for b in range(bins):
        rows.append({
            "lo": b / bins,
            "hi": (b + 1) / bins,
            "n": int(n[b]),
            "mean_pred": float(sum_p[b] / n[b]) if n[b] else float("nan"),
            "frac_pos": float(sum_y[b] / n[b]) if n[b] else float("nan"),
        })
    return rows


def ece(y, p, bins=10) -> float:
    """Expected calibration error: sum over bins of (n_bin / N) * |mean predicted - observed fraction|.

    Why: one number for "how far are the displayed risks from the observed rates", weighted by where
    the predictions actually fall. Equal-width bins on [0, 1], empty bins contribute nothing. Note that
    with few samples per bin ECE is biased upwards by sampling noise.
    """
    rows = reliability(y, p, bins)
    total = sum(r["n"] for r in rows)
    return float(sum(r["n"] / total * abs(r["mean_pred"] - r["frac_pos"]) for r in rows if r["n"]))


def brier(y, p) -> float:
    """Brier score: mean squared difference between the predicted probability and the outcome (0/1).

    Why: one proper scoring rule that rewards discrimination and calibration together; unlike ECE it
    needs no binning. Lower is better; predicting the prevalence for everyone scores prev * (1 - prev).
    """
    pos = _labels(y)
    pr = _probs(p)
    _check_lengths(y=pos, p=pr)
    return float(np.mean((pr - pos.astype(np.float64)) ** 2))


# ============================================================================ operating point
def _patient_days_total(patient_days, codes: np.ndarray | None, levels: list | None, n: int) -> float:
    if isinstance(patient_days, dict):
        if codes is None:
            raise ValueError("patient_days given as a dict {patient_id: days} needs patient_ids")
        missing = [pid for pid in levels if pid not in patient_days]
        if missing:
            raise ValueError(f"patient_days has no entry for {len(missing)} patient(s), e.g. {missing[0]!r}")
        days = np.array([_scalar(patient_days[pid], f"patient_days[{pid!r}]") for pid in levels])
    elif np.ndim(patient_days) == 0:
        days = np.array([_scalar(patient_days, "patient_days")])
    else:
        per_sample = _float_array(patient_days, "patient_days")
        _check_lengths(patient_days=per_sample, score=range(n))
        if codes is None:
            raise ValueError("per-sample patient_days needs patient_ids (each patient's days are counted once)")
        days = np.full(len(levels), np.nan)
        days[codes] = per_sample
        if not np.array_equal(per_sample, days[codes]):
            raise ValueError("per-sample patient_days must be constant within each patient")
    if (days < 0).any() or not np.isfinite(days).all():
        raise ValueError("patient_days must be finite and >= 0")
    total = float(days.sum())
    if total <= 0:
        raise ValueError("total patient_days must be > 0")
    return total


def threshold_metrics(y, score, threshold, patient_ids=None, patient_days=None) -> dict:
    """Confusion-matrix metrics of the alert rule ``score >= threshold``.

    Why each number is on the card:

    * sensitivity - share of deteriorating patients-windows that get an alert (missed events = harm);
    * specificity / npv - how safely a "no alert" can be read as "not deteriorating";
    * ppv - share of alerts that are real;
    * ``alerts_per_true_positive`` = alerts / TP: the alert burden clinicians feel ("number needed to
      alert"; inf when no alert is a true positive, including when nothing fires at all);
    * ``alerts_per_patient_day`` (when ``patient_days`` is given) - workload per bed, the number ward
      staff can compare with their current NEWS2 escalations.

    Every sample with score >= threshold counts as one alert (raw firing count, no suppression of
    repeated alerts for the same patient).

    patient_ids: optional per-sample patient identifiers; adds ``patients`` and ``patients_alerted``.
    patient_days: total patient-days of observation covered by the samples (a number), or a dict
    {patient_id: days}, or a per-sample array of that patient's days (constant within a patient); the
    last two need ``patient_ids``.
    """
    pos = _labels(y)
    s = _scores(score)
    n = _check_lengths(y=pos, score=s)
    thr = _scalar(threshold, "threshold")
    alert = s >= thr
    tp = int((alert & pos).sum())
    fp = int((alert & ~pos).sum())
    fn = int((~alert & pos).sum())
    tn = int((~alert & ~pos).sum())
    alerts = tp + fp
    out = {
        "threshold": thr,
        "n": n,
        "positives": tp + fn,
        "alerts": alerts,
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
        "true_negatives": tn,
        "sensitivity": _div(tp, tp + fn),
        "specificity": _div(tn, tn + fp),
        "ppv": _div(tp, alerts),
        "npv": _div(tn, tn + fn),
        "alerts_per_true_positive": alerts / tp if tp else float("inf"),
    }
    codes = levels = None
    if patient_ids is not None:
        codes, levels = _ids(patient_ids, "patient_ids", n)
        out["patients"] = len(levels)
        out["patients_alerted"] = int(len(np.unique(codes[alert])))
    if patient_days is not None:
        total = _patient_days_total(patient_days, codes, levels, n)
        out["patient_days"] = total
        out["alerts_per_patient_day"] = alerts / total
    return out


def threshold_for_sensitivity(y, score, target) -> float:
    """Highest threshold t such that the rule ``score >= t`` reaches sensitivity >= ``target``.

    Why: comparing a model with NEWS2 at their own "default" thresholds mixes two things; at *equal
    sensitivity* the better scorer is simply the one with fewer alerts (higher PPV). The returned
    threshold is always one of the positives' scores, so it is exact for this data set (on new data the
    achieved sensitivity will vary).
    """
    pos = _labels(y)
    s = _scores(score)
    _check_lengths(y=pos, score=s)
    tgt = _scalar(target, "target")
    if not 0 < tgt <= 1:
        raise ValueError(f"target sensitivity must be in (0, 1], got {tgt}")
    pos_scores = np.sort(s[pos])[::-1]
    n1 = len(pos_scores)
    if n1 == 0:
        raise ValueError("threshold_for_sensitivity needs at least one positive")
    # smallest k with k / n1 >= target, using the same division as threshold_metrics' sensitivity
    k = int(np.flatnonzero(np.arange(1, n1 + 1) / n1 >= tgt)[0]) + 1
    return float(pos_scores[k - 1])


# ============================================================================ timeliness
_US_PER_HOUR = 3.6e9


def _time_kind(a: np.ndarray, name: str, allow_missing: bool) -> tuple[str, np.ndarray]:
    """-> ("datetime", int64 microseconds with NaT as int64 min) or ("hours", float array)."""
    if a.dtype == object:
        try:
            a = a.astype(np.float64)
        except (TypeError, ValueError):
            try:
                a = a.astype("datetime64[us]")
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be numpy datetime64 or float hours") from None
    if a.dtype.kind == "M":
        missing = np.isnat(a)
        if missing.any() and not allow_missing:
            raise ValueError(f"{name} contains {int(missing.sum())} NaT value(s)")
        return "datetime", a.astype("datetime64[us]")
    if allow_missing:
        try:
            f = a.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be numpy datetime64 or float hours") from None
        return "hours", f
    return "hours", _float_array(a, name)


def lead_times(times, patient_ids, scores, onsets, threshold, max_lead_hours) -> dict:
    """How long before the event the model would have alerted.

    Why: a deterioration model is only useful if it fires early enough to act on. For each patient with
    an onset, the lead time is onset - t for the EARLIEST sample time t with score >= threshold,
    t < onset and onset - t <= max_lead_hours (alerts long before the event are not credited as
    "predicting" it). Patients with an onset but no such alert are misses: counted in
    ``patients_with_onset`` but not in the lead-time distribution. Patients without onset are ignored.

    times: per-sample times, numpy datetime64 or float hours. onsets: per-sample onset time of that
    sample's patient (same kind as times), NaT / nan when the patient has no event; it must be the same
    for all samples of a patient. Returns patients_with_onset, detected, missed, median_lead_hours,
    iqr_lead_hours [q1, q3] (linear-interpolated percentiles, nan if nothing detected) and lead_hours
    (sorted).
    """
    t_arr = _array_1d(times, "times")
    o_arr = _array_1d(onsets, "onsets")
    s = _scores(scores, "scores")
    n = _check_lengths(times=t_arr, patient_ids=_array_1d(patient_ids, "patient_ids"), scores=s, onsets=o_arr)
    codes, levels = _ids(patient_ids, "patient_ids", n)
    thr = _scalar(threshold, "threshold")
    max_lead = _scalar(max_lead_hours, "max_lead_hours")
    if max_lead <= 0:
        raise ValueError(f"max_lead_hours must be > 0, got {max_lead}")

    t_kind, t_raw = _time_kind(t_arr, "times", allow_missing=False)
    o_kind, o_raw = _time_kind(o_arr, "onsets", allow_missing=True)
    if t_kind == "datetime":
        if o_kind == "hours":
            if not np.isnan(o_raw).all():
                raise ValueError("times are datetime64 but onsets are numbers; use datetime64 (NaT = no onset)")
            o_raw = np.full(n, np.datetime64("NaT"), dtype="datetime64[us]")
        # hours relative to the earliest sample, computed from exact integer microseconds
        ref = t_raw.min()
        t = (t_raw - ref).astype(np.int64) / _US_PER_HOUR
        has = ~np.isnat(o_raw)
        onset = np.full(n, np.nan)
        onset[has] = (o_raw[has] - ref).astype(np.int64) / _US_PER_HOUR
    else:
        if o_kind == "datetime":
            raise ValueError("times are numbers (hours) but onsets are datetime64; use the same kind")
        t = t_raw
        onset = o_raw
        if np.isinf(t).any():
            raise ValueError("times must be finite")
        has = ~np.isnan(onset)

    # the onset must be a property of the patient, not of the sample
    k = len(levels)
    n_has = np.bincount(codes, weights=has, minlength=k)
    n_all = np.bincount(codes, minlength=k)
    mixed = (n_has > 0) & (n_has < n_all)
    if mixed.any():
        raise ValueError(f"onsets mix a time and NaT/nan for patient {levels[int(np.flatnonzero(mixed)[0])]!r}")
    lo = np.full(k, np.inf)
    hi = np.full(k, -np.inf)
    np.minimum.at(lo, codes[has], onset[has])
    np.maximum.at(hi, codes[has], onset[has])
    with_onset = n_has > 0
    differ = with_onset & (lo != hi)
    if differ.any():
        raise ValueError(f"onsets differ between samples of patient {levels[int(np.flatnonzero(differ)[0])]!r}")

    lead = np.where(has, onset - t, np.nan)
    qualifies = has & (s >= thr) & (lead > 0) & (lead <= max_lead)
    best = np.full(k, -np.inf)  # earliest qualifying alert = largest lead
    np.maximum.at(best, codes[qualifies], lead[qualifies])
    detected = with_onset & np.isfinite(best)
    leads = np.sort(best[detected])
    if len(leads):
        q1, med, q3 = (float(v) for v in np.percentile(leads, [25, 50, 75]))
    else:
        q1 = med = q3 = float("nan")
    return {
        "patients_with_onset": int(with_onset.sum()),
        "detected": int(detected.sum()),
        "missed": int(with_onset.sum() - detected.sum()),
        "median_lead_hours": med,
        "iqr_lead_hours": [q1, q3],
        "lead_hours": [float(v) for v in leads],
    }


# ============================================================================ subgroups
def subgroups(y, score, groups: dict, threshold) -> list[dict]:
    """Discrimination and operating-point metrics per level of each grouping (e.g. age band, sex, CKD).

    Why: a model can look good overall and still miss, say, patients on beta-blockers (blunted heart
    rate) or over-alert in COPD (chronically low SpO2). Each row: group, level, n, positives, alerts,
    auroc (nan if a class is missing), sensitivity and ppv at ``threshold`` (nan when undefined).
    Small subgroups give noisy numbers: report ``n`` and ``positives`` alongside (and a CI if needed).
    """
    pos = _labels(y)
    s = _scores(score)
    n = _check_lengths(y=pos, score=s)
    thr = _scalar(threshold, "threshold")
    if not isinstance(groups, dict):
        raise ValueError("groups must be a dict {grouping name: per-sample labels}")
    alert = s >= thr
    rows = []
    for name, labels in groups.items():
        codes, levels = _ids(labels, f"groups[{name!r}]", n)
        for i, level in enumerate(levels):
            m = codes == i
            py, pa = pos[m], alert[m]
            tp = int((py & pa).sum())
            rows.append({
                "group": name,
                "level": level,
                "n": int(m.sum()),
                "positives": int(py.sum()),
                "alerts": int(pa.sum()),
                "auroc": auroc(py, s[m]),
                "sensitivity": _div(tp, py.sum()),
                "ppv": _div(tp, pa.sum()),
            })
    return rows


# ============================================================================ uncertainty
def bootstrap_ci(metric_fn: Callable, y, score, n=200, seed=0, cluster=None) -> tuple[float, float]:
    """95 % percentile bootstrap confidence interval of ``metric_fn(y, score)``.

    Why: test sets of synthetic or single-site cohorts are small; a point estimate without an interval
    overstates certainty. When ``cluster`` (e.g. patient ids) is given, whole clusters are resampled:
    samples from the same patient are correlated, and resampling them independently gives intervals
    that are too narrow.

    ``metric_fn`` receives (y as int 0/1 array, score as float array). Resamples where the metric is
    nan (e.g. no positives drawn) are discarded with a ``RuntimeWarning``; if more than half are nan a
    ``ValueError`` is raised. Seeded: the same inputs give the same interval.
    """
    pos = _labels(y)
    s = _scores(score)
    size = _check_lengths(y=pos, score=s)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n (number of resamples) must be a positive integer, got {n!r}")
    yi = pos.astype(np.int64)
    rng = np.random.default_rng(seed)
    if cluster is not None:
        codes, levels = _ids(cluster, "cluster", size)
        order = np.argsort(codes, kind="mergesort")
        counts = np.bincount(codes, minlength=len(levels))
        starts = np.r_[0, np.cumsum(counts)[:-1]]
    values = []
    for _ in range(int(n)):
        if cluster is None:
            idx = rng.integers(0, size, size)
        else:
            pick = rng.integers(0, len(levels), len(levels))
            lens = counts[pick]
            # expand each picked cluster into its sample indices
            offsets = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
            idx = order[np.repeat(starts[pick], lens) + offsets]
        values.append(float(metric_fn(yi[idx], s[idx])))
    v = np.array(values)
    bad = np.isnan(v)
    if bad.sum() * 2 > len(v):
        raise ValueError(f"metric was nan in {int(bad.sum())} of {len(v)} bootstrap resamples; "
                         "too few positives/negatives (or clusters) for a bootstrap CI")
    if bad.any():
        warnings.warn(f"bootstrap_ci: discarded {int(bad.sum())} of {len(v)} resamples where the metric "
                      "was nan", RuntimeWarning, stacklevel=2)
    lo, hi = np.percentile(v[~bad], [2.5, 97.5])
    return float(lo), float(hi)


# ============================================================================ markdown
def _fmt_value(v, fmt) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (list, tuple, np.ndarray)):
        return "–".join(_fmt_value(x, fmt) for x in v)
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return "n/a"
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
    if callable(fmt):
        return str(fmt(v))
    if not fmt:
        return str(v)
    if "{" in fmt:
        return fmt.format(v)
    return format(v, fmt)


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def markdown_table(rows: Sequence[dict], columns: Iterable[tuple]) -> str:
    """GitHub-flavoured markdown table for the model card.

    columns: (key, header, fmt) triples; fmt is a format spec (".3f", "d", ",") or a "{...}" template
    or a callable or ""/None (str). nan / None print as "n/a", +inf as "∞"; list/tuple values (an IQR,
    a CI) are joined with an en dash. Columns whose values are all numbers are right-aligned.
    A row missing a key raises ValueError.
    """
    cols = [tuple(c) for c in columns]
    if not cols:
        raise ValueError("markdown_table needs at least one column")
    for c in cols:
        if len(c) != 3:
            raise ValueError(f"each column must be (key, header, fmt), got {c!r}")
    rows = list(rows)

    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\r", " ").replace("\n", " ")

    body = []
    for i, r in enumerate(rows):
        missing = [k for k, _, _ in cols if k not in r]
        if missing:
            raise ValueError(f"row {i} has no key {missing[0]!r}")
        body.append([cell(_fmt_value(r[k], f)) for k, _, f in cols])
    align = []
    for k, _, _ in cols:
        vals = [r[k] for r in rows if r[k] is not None]
        align.append("---:" if vals and all(_is_number(v) for v in vals) else "---")
    lines = ["| " + " | ".join(cell(h) for _, h, _ in cols) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(b) + " |" for b in body]
    return "\n".join(lines) + "\n"


# ============================================================================ SVG
_W, _H = 480, 400
_FONT = "DejaVu Sans, Arial, Helvetica, sans-serif"  # system fonts only, generic fallback
_INK = "#000000"
_GRID = "#D9D9D9"
_DIAG = "#4D4D4D"
# Okabe-Ito / Tol colours with >= 3:1 contrast on white, plus distinct dash patterns so the curves do
# not rely on colour alone
_COLOURS = ["#0072B2", "#C8501A", "#117733", "#882255", "#000000", "#6F4E00"]
_DASHES = [None, "7 3", "2 2.5", "9 3 2 3", "4 2", "1 3"]


def _n(x: float) -> str:
    s = f"{x:.1f}"
    return "0.0" if s == "-0.0" else s


def _esc(text) -> str:
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def _fmt3(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.3f}"


class _Plot:
    """Maps [0, 1] x [0, 1] onto a pixel box (y up)."""

    def __init__(self, x0: float, y0: float, size: float):
        self.x0, self.y0, self.size = x0, y0, size

    def x(self, v: float) -> float:
        return self.x0 + v * self.size

    def y(self, v: float) -> float:
        return self.y0 + (1 - v) * self.size


def _svg_open(title: str, aria: str, desc: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" '
        f'role="img" aria-label="{_esc(aria)}">',
        f"<title>{_esc(title)}</title>",
        f"<desc>{_esc(desc)}</desc>",
        f'<rect x="0" y="0" width="{_W}" height="{_H}" fill="#FFFFFF"/>',
        f'<g font-family="{_FONT}" font-size="11" fill="{_INK}">',
        f'<text x="{_n(_W / 2)}" y="22.0" text-anchor="middle" font-size="15" font-weight="bold">{_esc(title)}</text>',
    ]


def _axes(pl: _Plot, xlabel: str, ylabel: str, xlabel_y: float) -> list[str]:
    """Grid, frame, ticks at 0, 0.2, ..., 1 with labels, axis titles."""
    out = ['<g aria-hidden="true">']
    x1, y1 = pl.x(1), pl.y(0)
    for i in range(6):
        v = i / 5
        if 0 < i < 5:
            out.append(f'<line x1="{_n(pl.x(v))}" y1="{_n(pl.y0)}" x2="{_n(pl.x(v))}" y2="{_n(y1)}" '
                       f'stroke="{_GRID}" stroke-width="1"/>')
            out.append(f'<line x1="{_n(pl.x0)}" y1="{_n(pl.y(v))}" x2="{_n(x1)}" y2="{_n(pl.y(v))}" '
                       f'stroke="{_GRID}" stroke-width="1"/>')
        out.append(f'<line x1="{_n(pl.x(v))}" y1="{_n(y1)}" x2="{_n(pl.x(v))}" y2="{_n(y1 + 5)}" '
                   f'stroke="{_INK}" stroke-width="1"/>')
        out.append(f'<text x="{_n(pl.x(v))}" y="{_n(y1 + 17)}" text-anchor="middle">{v:.1f}</text>')
        out.append(f'<line x1="{_n(pl.x0 - 5)}" y1="{_n(pl.y(v))}" x2="{_n(pl.x0)}" y2="{_n(pl.y(v))}" '
                   f'stroke="{_INK}" stroke-width="1"/>')
        out.append(f'<text x="{_n(pl.x0 - 8)}" y="{_n(pl.y(v) + 4)}" text-anchor="end">{v:.1f}</text>')
    out.append(f'<rect x="{_n(pl.x0)}" y="{_n(pl.y0)}" width="{_n(pl.size)}" height="{_n(pl.size)}" '
               f'fill="none" stroke="{_INK}" stroke-width="1.2"/>')
    cx, cy = pl.x(0.5), pl.y(0.5)
    out.append(f'<text x="{_n(cx)}" y="{_n(xlabel_y)}" text-anchor="middle" font-size="12">{_esc(xlabel)}</text>')
    lx = pl.x0 - 40
    out.append(f'<text x="{_n(lx)}" y="{_n(cy)}" text-anchor="middle" font-size="12" '
               f'transform="rotate(-90 {_n(lx)} {_n(cy)})">{_esc(ylabel)}</text>')
    out.append("</g>")
    return out


def _points_attr(xs: Sequence[float], ys: Sequence[float]) -> str:
    return " ".join(f"{_n(a)},{_n(b)}" for a, b in zip(xs, ys))


def reliability_svg(y, p, title: str, bins=10) -> str:
    """Reliability (calibration) diagram as a standalone, accessible SVG string (480 x 400).

    Why: ECE hides *where* a model is miscalibrated; the diagram shows whether high-risk predictions
    are over- or under-confident. Contents: dashed diagonal = perfect calibration; observed fraction of
    positives against mean predicted probability per bin (marker area proportional to n, each marker
    has a tooltip with its numbers); a histogram strip of the predictions under the x axis (how much
    data each bin rests on); N and ECE in the legend. The per-bin numbers are also in ``<desc>``.
    """
    rows = reliability(y, p, bins)
    n_total = sum(r["n"] for r in rows)
    e = ece(y, p, bins)
    pl = _Plot(x0=62, y0=40, size=250)
    desc = (f"Reliability diagram, {n_total} predictions in {len(rows)} equal-width bins, ECE {e:.3f}. "
            + "; ".join(f"bin {r['lo']:.2f}-{r['hi']:.2f}: n={r['n']}, mean predicted {_fmt3(r['mean_pred'])}, "
                        f"observed {_fmt3(r['frac_pos'])}" for r in rows) + ".")
    aria = f"{title}: reliability diagram, {n_total} predictions, expected calibration error {e:.3f}"
    out = _svg_open(title, aria, desc)
    out += _axes(pl, "Mean predicted probability", "Observed fraction positive", xlabel_y=pl.y(0) + 74)

    # perfect calibration
    out.append(f'<line x1="{_n(pl.x(0))}" y1="{_n(pl.y(0))}" x2="{_n(pl.x(1))}" y2="{_n(pl.y(1))}" '
               f'stroke="{_DIAG}" stroke-width="1.5" stroke-dasharray="6 4" aria-hidden="true"/>')

    # histogram strip of predictions, under the tick labels
    strip_top, strip_h = pl.y(0) + 24, 26.0
    max_n = max(r["n"] for r in rows)
    out.append('<g aria-hidden="true">')
    out.append(f'<line x1="{_n(pl.x0)}" y1="{_n(strip_top + strip_h)}" x2="{_n(pl.x(1))}" '
               f'y2="{_n(strip_top + strip_h)}" stroke="{_INK}" stroke-width="1"/>')
    for r in rows:
        if not r["n"]:
            continue
        h = strip_h * r["n"] / max_n
        out.append(f'<rect x="{_n(pl.x(r["lo"]) + 1)}" y="{_n(strip_top + strip_h - h)}" '
                   f'width="{_n(pl.x(r["hi"]) - pl.x(r["lo"]) - 2)}" height="{_n(h)}" fill="#666666">'
                   f'<title>{r["lo"]:.2f}-{r["hi"]:.2f}: {r["n"]} predictions</title></rect>')
    out.append(f'<text x="{_n(pl.x(1) + 4)}" y="{_n(strip_top + 9)}" font-size="9">max {max_n}</text>')
    out.append(f'<text x="{_n(pl.x0 - 8)}" y="{_n(strip_top + strip_h - 2)}" text-anchor="end" '
               f'font-size="9">count</text>')
    out.append("</g>")

    # observed fraction per bin
    full = [r for r in rows if r["n"]]
    xs = [pl.x(r["mean_pred"]) for r in full]
    ys = [pl.y(r["frac_pos"]) for r in full]
    colour = _COLOURS[0]
    if len(full) > 1:
        out.append(f'<polyline points="{_points_attr(xs, ys)}" fill="none" stroke="{colour}" '
                   f'stroke-width="2" stroke-linejoin="round" aria-hidden="true"/>')
    for r, cx, cy in zip(full, xs, ys):
        rad = 2.5 + 5.5 * math.sqrt(r["n"] / max_n)
        out.append(f'<circle cx="{_n(cx)}" cy="{_n(cy)}" r="{_n(rad)}" fill="{colour}" stroke="#FFFFFF" '
                   f'stroke-width="1"><title>{r["lo"]:.2f}-{r["hi"]:.2f}: n={r["n"]}, mean predicted '
                   f'{r["mean_pred"]:.3f}, observed {r["frac_pos"]:.3f}</title></circle>')

    # legend + summary on the right
    lx, ly = pl.x(1) + 14, pl.y0 + 10
    out.append('<g aria-hidden="true">')
    out.append(f'<line x1="{_n(lx)}" y1="{_n(ly)}" x2="{_n(lx + 22)}" y2="{_n(ly)}" stroke="{_DIAG}" '
               f'stroke-width="1.5" stroke-dasharray="6 4"/>')
    out.append(f'<text x="{_n(lx + 28)}" y="{_n(ly + 4)}">perfect calibration</text>')
    ly += 22
    out.append(f'<line x1="{_n(lx)}" y1="{_n(ly)}" x2="{_n(lx + 22)}" y2="{_n(ly)}" stroke="{colour}" stroke-width="2"/>')
    out.append(f'<circle cx="{_n(lx + 11)}" cy="{_n(ly)}" r="5.0" fill="{colour}" stroke="#FFFFFF" stroke-width="1"/>')
    out.append(f'<text x="{_n(lx + 28)}" y="{_n(ly + 4)}">observed per bin</text>')
    out.append(f'<text x="{_n(lx + 28)}" y="{_n(ly + 18)}" font-size="10">(marker area ∝ n)</text>')
    ly += 40
    out.append(f'<rect x="{_n(lx + 5)}" y="{_n(ly - 6)}" width="12.0" height="12.0" fill="#666666"/>')
    out.append(f'<text x="{_n(lx + 28)}" y="{_n(ly + 4)}">predictions</text>')
    out.append(f'<text x="{_n(lx + 28)}" y="{_n(ly + 18)}" font-size="10">per bin (strip)</text>')
    ly += 46
    out.append(f'<text x="{_n(lx)}" y="{_n(ly)}">N = {n_total}</text>')
    out.append(f'<text x="{_n(lx)}" y="{_n(ly + 18)}">ECE = {e:.3f}</text>')
    out.append(f'<text x="{_n(lx)}" y="{_n(ly + 36)}">{len(rows)} equal-width bins</text>')
    out.append("</g>")
    out += ["</g>", "</svg>"]
    return "\n".join(out) + "\n"


def _thin(xs: list[str], ys: list[str]) -> list[tuple[str, str]]:
    """Drop repeated points and the inner points of horizontal / vertical runs (after rounding)."""
    pts: list[tuple[str, str]] = []
    for pt in zip(xs, ys):
        if pts and pts[-1] == pt:
            continue
        if len(pts) >= 2:
            (ax, ay), (bx, by) = pts[-2], pts[-1]
            if (ax == bx == pt[0]) or (ay == by == pt[1]):
                pts[-1] = pt
                continue
        pts.append(pt)
    return pts


def roc_svg(curves, title: str) -> str:
    """ROC curves of several scorers (e.g. model vs NEWS2) as a standalone, accessible SVG (480 x 400).

    Why: the AUROC difference between a model and NEWS2 says little about the region that matters
    (low false-positive rates, where a ward can afford to operate); the curves show it. ``curves`` is a
    list of (name, y, score); each needs both classes. The legend gives each AUROC; curves differ in
    colour and dash pattern; the dashed diagonal is chance. AUROC, n and positives are also in ``<desc>``.
    """
    curves = list(curves)
    if not curves:
        raise ValueError("roc_svg needs at least one (name, y, score) curve")
    pl = _Plot(x0=90, y0=36, size=300)
    entries = []
    for i, c in enumerate(curves):
        if len(c) != 3:
            raise ValueError(f"curve {i} must be (name, y, score)")
        name, yc, sc = c
        pos = _labels(yc, f"y of curve {name!r}")
        s = _scores(sc, f"score of curve {name!r}")
        _check_lengths(y=pos, score=s)
        n1 = int(pos.sum())
        n0 = len(pos) - n1
        if n1 == 0 or n0 == 0:
            raise ValueError(f"curve {name!r} needs both positives and negatives for a ROC curve")
        _, tps, fps = _curve_counts(pos, s)
        fpr = np.r_[0.0, fps / n0]
        tpr = np.r_[0.0, tps / n1]
        entries.append((str(name), auroc(pos, s), n1, len(pos), fpr, tpr))

    desc = "ROC curves (true positive rate against false positive rate). " + "; ".join(
        f"{nm}: AUROC {a:.3f}, n={n}, positives={n1}" for nm, a, n1, n, _, _ in entries) + "."
    aria = f"{title}: ROC curves, " + "; ".join(f"{nm} AUROC {a:.3f}" for nm, a, _, _, _, _ in entries)
    out = _svg_open(title, aria, desc)
    out += _axes(pl, "False positive rate (1 - specificity)", "True positive rate (sensitivity)",
                 xlabel_y=pl.y(0) + 40)
    out.append(f'<line x1="{_n(pl.x(0))}" y1="{_n(pl.y(0))}" x2="{_n(pl.x(1))}" y2="{_n(pl.y(1))}" '
               f'stroke="{_DIAG}" stroke-width="1.2" stroke-dasharray="4 4" aria-hidden="true"/>')
    for i, (nm, a, _, _, fpr, tpr) in enumerate(entries):
        colour, dash = _COLOURS[i % len(_COLOURS)], _DASHES[i % len(_DASHES)]
        pts = _thin([_n(pl.x(v)) for v in fpr], [_n(pl.y(v)) for v in tpr])
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<polyline points="{" ".join(f"{px},{py}" for px, py in pts)}" fill="none" '
                   f'stroke="{colour}" stroke-width="2.2" stroke-linejoin="round"{dash_attr}>'
                   f'<title>{_esc(nm)}: AUROC {a:.3f}</title></polyline>')

    # legend, bottom-right inside the plot (ROC curves live in the top-left)
    labels = [f"{nm} (AUROC {a:.3f})" for nm, a, _, _, _, _ in entries] + ["chance (AUROC 0.500)"]
    width = 44 + 6.4 * max(len(t) for t in labels)
    height = 8 + 17 * len(labels)
    bx, by = pl.x(1) - width - 6, pl.y(0) - height - 6
    out.append('<g aria-hidden="true">')
    out.append(f'<rect x="{_n(bx)}" y="{_n(by)}" width="{_n(width)}" height="{_n(height)}" fill="#FFFFFF" '
               f'stroke="{_INK}" stroke-width="0.8"/>')
    for i, text in enumerate(labels):
        ly = by + 13 + 17 * i
        if i < len(entries):
            colour, dash = _COLOURS[i % len(_COLOURS)], _DASHES[i % len(_DASHES)]
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(f'<line x1="{_n(bx + 6)}" y1="{_n(ly)}" x2="{_n(bx + 32)}" y2="{_n(ly)}" '
                       f'stroke="{colour}" stroke-width="2.2"{dash_attr}/>')
        else:
            out.append(f'<line x1="{_n(bx + 6)}" y1="{_n(ly)}" x2="{_n(bx + 32)}" y2="{_n(ly)}" '
                       f'stroke="{_DIAG}" stroke-width="1.2" stroke-dasharray="4 4"/>')
        out.append(f'<text x="{_n(bx + 38)}" y="{_n(ly + 4)}">{_esc(text)}</text>')
    out.append("</g>")
    out += ["</g>", "</svg>"]
    return "\n".join(out) + "\n"


# ============================================================================ abstention
def abstain_lowest(score, abstained) -> np.ndarray:
    """Scores where every abstention ranks below every real score (abstentions tie among themselves).

    Why: a request the model did not score showed no alert. Setting its score to 0 would rank it
    above real scores that are negative (logits, centred scores) and, for probabilities, tie it with
    real 0s; "lowest of all" is what "no alert at any threshold" means. Abstained entries of ``score``
    may be NaN (they are ignored)."""
    a = _array_1d(abstained, "abstained").astype(bool)
    s = np.asarray(score, dtype=np.float64).reshape(-1) if np.ndim(score) == 1 else _float_array(score, "score")
    _check_lengths(score=s, abstained=a)
    real = s[~a]
    if real.size and np.isnan(real).any():
        raise ValueError(f"score is NaN at index {int(np.flatnonzero(~a & np.isnan(s))[0])} which is not abstained")
    floor = (float(real.min()) - 1.0) if real.size else 0.0
    return np.where(a, floor, s)


# ============================================================================ paired bootstrap
def _weighted_auc_auprc(pos: np.ndarray, order: np.ndarray, starts: np.ndarray, w: np.ndarray):
    """AUROC and average precision of a score whose ascending sort ``order`` and tie-group ``starts``
    are precomputed, with integer sample weights ``w`` (= how often each sample was drawn)."""
    wo = w[order]
    po = pos[order]
    pw = np.add.reduceat(wo * po, starts)
    nw = np.add.reduceat(wo * (1 - po), starts)
    P, N = pw.sum(), nw.sum()
    if P == 0 or N == 0:
        auc = float("nan")
    else:
        below = np.cumsum(nw) - nw
        auc = float(np.sum(pw * (below + 0.5 * nw)) / (P * N))
    if P == 0:
        return auc, float("nan")
    # descending thresholds: cumulative counts from the top group down
    tp = np.cumsum(pw[::-1])
    fp = np.cumsum(nw[::-1])
    keep = (tp + fp) > 0
    prec = np.where(keep, tp / np.where(keep, tp + fp, 1), 0.0)
    ap = float(np.sum(pw[::-1] / P * prec))
    return auc, ap


def cluster_bootstrap(y, scores: dict, cluster, n=200, seed=0) -> dict:
    """AUROC and AUPRC of several scorers on the same patient-clustered bootstrap resamples.

    Why: two scorers evaluated on the same patients are correlated; the CI of their DIFFERENCE must
    come from resampling both together (paired), otherwise it is far too wide or too narrow. Each
    resample draws whole patients with replacement; every scorer is evaluated on the same draw.
    Returns {"point": {name: {"auroc", "auprc"}}, "reps": {name: {"auroc": array[n], "auprc": array[n]}}}
    (a resample without positives or negatives gives nan). Equivalent to evaluating ``auroc`` /
    ``auprc`` on the expanded resample (a sample drawn k times counts k times; ties grouped)."""
    pos = _labels(y)
    size = len(pos)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n (number of resamples) must be a positive integer, got {n!r}")
    codes, levels = _ids(cluster, "cluster", size)
    prepared = {}
    for name, sc in scores.items():
        s = _scores(sc, f"score {name!r}")
        _check_lengths(y=pos, **{"score": s})
        order = np.argsort(s, kind="mergesort")
        ss = s[order]
        starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
        prepared[name] = (order, starts)
    pos_i = pos.astype(np.int64)
    ones = np.ones(size, dtype=np.int64)
    point = {}
    for name, (order, starts) in prepared.items():
        a, ap = _weighted_auc_auprc(pos_i, order, starts, ones)
        point[name] = {"auroc": a, "auprc": ap}
    rng = np.random.default_rng(seed)
    reps = {name: {"auroc": np.empty(n), "auprc": np.empty(n)} for name in prepared}
    k = len(levels)
    for r in range(int(n)):
        wc = np.bincount(rng.integers(0, k, k), minlength=k)
        w = wc[codes]
        for name, (order, starts) in prepared.items():
            a, ap = _weighted_auc_auprc(pos_i, order, starts, w)
            reps[name]["auroc"][r], reps[name]["auprc"][r] = a, ap
    return {"point": point, "reps": reps, "n": int(n), "clusters": k}


def _pct_ci(v: np.ndarray) -> list:
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return [float("nan"), float("nan")]
    lo, hi = np.percentile(v, [2.5, 97.5])
    return [float(lo), float(hi)]


def summarize_bootstrap(boot: dict, reference: str, comparators: Iterable[str] | None = None) -> dict:
    """Point estimates with 95 % percentile CIs for every scorer, and for each comparator the paired
    difference ``reference - comparator`` (AUROC and AUPRC) with its CI from the same resamples."""
    out = {"scorers": {}, "differences": {}}
    for name, pt in boot["point"].items():
        out["scorers"][name] = {m: pt[m] for m in ("auroc", "auprc")}
        for m in ("auroc", "auprc"):
            out["scorers"][name][m + "_ci"] = _pct_ci(boot["reps"][name][m])
    names = [c for c in (comparators if comparators is not None else boot["point"]) if c != reference]
    for c in names:
        d = {}
        for m in ("auroc", "auprc"):
            diff = boot["point"][reference][m] - boot["point"][c][m]
            reps = boot["reps"][reference][m] - boot["reps"][c][m]
            ci = _pct_ci(reps)
            d[m] = diff
            d[m + "_ci"] = ci
            ok = reps[~np.isnan(reps)]
            d[m + "_p_le_0"] = float(np.mean(ok <= 0)) if len(ok) else float("nan")  # bootstrap share <= 0
        out["differences"][c] = d
    return out


# ============================================================================ calibration fit
def _logit(p: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    q = np.clip(p, eps, 1 - eps)
    return np.log(q / (1 - q))


def calibration_slope_intercept(y, p, max_iter: int = 50) -> dict:
    """Logistic recalibration: fit ``logit P(y=1) = a + b * logit(p)`` by Newton's method.

    Why: ECE says "how far off", the fit says "which way": slope < 1 = predictions too extreme
    (overfitting), slope > 1 = too timid; intercept ``a`` with b fixed at 1 (``citl``,
    calibration-in-the-large) < 0 = risks too high on average. Perfect calibration: slope 1,
    intercept 0, citl 0. p is clipped to [1e-6, 1 - 1e-6] before the logit. Returns {"slope",
    "intercept" (of the joint fit), "citl", "iterations"}; nan when y has one class."""
    pos = _labels(y)
    q = _probs(p)
    _check_lengths(y=pos, p=q)
    yv = pos.astype(np.float64)
    if yv.min() == yv.max():
        return {"slope": float("nan"), "intercept": float("nan"), "citl": float("nan"), "iterations": 0}
    x = _logit(q)
    X = np.column_stack([np.ones_like(x), x])
    beta = np.zeros(2)
    it = 0
    for it in range(1, max_iter + 1):
        eta = X @ beta
        mu = 1 / (1 + np.exp(-np.clip(eta, -35, 35)))
        W = mu * (1 - mu)
        g = X.T @ (yv - mu)
        H = (X * W[:, None]).T @ X + 1e-12 * np.eye(2)
        step = np.linalg.solve(H, g)
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10:
            break
    a = 0.0  # calibration-in-the-large: offset logit(p), intercept only
    for _ in range(max_iter):
        mu = 1 / (1 + np.exp(-np.clip(a + x, -35, 35)))
        step = np.sum(yv - mu) / max(np.sum(mu * (1 - mu)), 1e-12)
        a += step
        if abs(step) < 1e-10:
            break
    return {"slope": float(beta[1]), "intercept": float(beta[0]), "citl": float(a), "iterations": it}


def observed_expected(y, p, mask=None) -> dict:
    """Observed / expected events: sum(y) / sum(p), over all samples or those where ``mask`` holds
    (e.g. the alerting band p >= warning threshold). 1 = the risks shown add up to what happens;
    < 1 = the shown risks are too high. Returns {"n", "observed", "expected", "o_e"}."""
    pos = _labels(y)
    q = _probs(p)
    _check_lengths(y=pos, p=q)
    if mask is not None:
        m = _array_1d(mask, "mask").astype(bool)
        _check_lengths(y=pos, mask=m)
        pos, q = pos[m], q[m]
    o, e = float(pos.sum()), float(q.sum())
    return {"n": int(len(pos)), "observed": o, "expected": e, "o_e": _div(o, e)}


# ============================================================================ cards under suppression
def simulate_cards(times_hours, patient_ids, score, warning, suppress_hours, critical=None,
                   abstained=None) -> np.ndarray:
    """Which requests would have shown a card: ``score >= warning`` and not abstained, unless a card
    was shown for the same patient less than ``suppress_hours`` earlier - then it is suppressed,
    except when it escalates (its band, warning < critical, is above the last shown card's), as
    src/services/guardrails.rs decides. ``suppress_hours`` 0 / None: every request above threshold
    shows a card. Returns a bool array (in input order)."""
    t = _float_array(times_hours, "times_hours")
    s = _scores(score)
    n = _check_lengths(times_hours=t, score=s)
    codes, _levels = _ids(patient_ids, "patient_ids", n)
    ab = np.zeros(n, bool) if abstained is None else _array_1d(abstained, "abstained").astype(bool)
    _check_lengths(times_hours=t, abstained=ab)
    band = np.where(s >= warning, 1, 0)
    if critical is not None:
        band = np.where(s >= critical, 2, band)
    band = np.where(ab, 0, band)
    window = float(suppress_hours or 0.0)
    shown = np.zeros(n, bool)
    order = np.lexsort((t, codes))
    last_t, last_band, last_p = -np.inf, 0, -1
    for i in order:
        if codes[i] != last_p:
            last_t, last_band, last_p = -np.inf, 0, codes[i]
        if band[i] == 0:
            continue
        if window > 0 and t[i] - last_t < window and band[i] <= last_band:
            continue
        shown[i] = True
        last_t, last_band = t[i], band[i]
    return shown


def card_metrics(times_hours, patient_ids, cards, y, onsets_hours, horizon_hours, patient_days) -> dict:
    """Operational numbers of a set of shown cards (``simulate_cards``).

    * ``ppv_per_card``: share of cards followed by the onset within the horizon (label y of the card);
    * ``cards_per_patient_day``: cards / observed patient-days (a number);
    * ``events`` / ``events_caught``: patients with an onset; caught = any card in
      [onset - horizon, onset); ``sensitivity_per_event`` = caught / events;
    * ``cards_per_tp`` = all cards / events caught (the alert burden per event found; inf if none);
    * ``median_lead_hours`` (+ IQR): onset - first card in that window, over caught events."""
    t = _float_array(times_hours, "times_hours")
    c = _array_1d(cards, "cards").astype(bool)
    pos = _labels(y)
    o = np.asarray(onsets_hours, dtype=np.float64)  # nan = no onset
    if o.ndim != 1:
        raise ValueError("onsets_hours must be 1-D")
    n = _check_lengths(times_hours=t, cards=c, y=pos, onsets_hours=o)
    codes, levels = _ids(patient_ids, "patient_ids", n)
    events = caught = 0
    leads = []
    for k in range(len(levels)):
        idx = np.flatnonzero(codes == k)
        on = o[idx]
        if np.isnan(on).all():
            continue
        onset = float(on[~np.isnan(on)][0])
        events += 1
        tt = t[idx][c[idx]]
        inside = tt[(tt >= onset - horizon_hours) & (tt < onset)]
        if len(inside):
            caught += 1
            leads.append(onset - float(inside.min()))
    ncards = int(c.sum())
    tp_cards = int((c & pos).sum())
    lead = np.array(leads)
    return {
        "cards": ncards, "cards_true": tp_cards, "ppv_per_card": _div(tp_cards, ncards),
        "patient_days": float(patient_days), "cards_per_patient_day": _div(ncards, patient_days),
        "events": events, "events_caught": caught, "sensitivity_per_event": _div(caught, events),
        "cards_per_tp": (ncards / caught) if caught else float("inf"),
        "median_lead_hours": float(np.median(lead)) if len(lead) else float("nan"),
        "iqr_lead_hours": [float(v) for v in np.percentile(lead, [25, 75])] if len(lead) else [float("nan")] * 2,
    }


# ============================================================================ decision curve
def net_benefit(y, p, thresholds) -> list[dict]:
    """Net benefit of acting when ``p >= pt`` at each threshold probability pt (decision curve):
    NB = TP/N - FP/N * pt / (1 - pt), beside "treat all" (everyone) and "treat none" (0).

    Why: a threshold probability is the clinician's exchange rate (at pt = 0.2 one true case is
    worth 4 unnecessary reviews); a model is useful at pt where its NB beats both defaults."""
    pos = _labels(y)
    q = _scores(p, "p")
    n = _check_lengths(y=pos, p=q)
    prev = pos.mean()
    rows = []
    for pt in thresholds:
        pt = _scalar(pt, "threshold")
        if not 0 < pt < 1:
            raise ValueError(f"threshold probability must be in (0, 1), got {pt}")
        act = q >= pt
        tp = int((act & pos).sum())
        fp = int((act & ~pos).sum())
        odds = pt / (1 - pt)
        rows.append({"threshold": pt, "net_benefit": tp / n - fp / n * odds,
                     "treat_all": float(prev - (1 - prev) * odds), "treat_none": 0.0})
    return rows


def decision_curve_svg(curves, thresholds, title: str) -> str:
    """Decision curve (net benefit against threshold probability) as a standalone SVG (480 x 400).
    ``curves``: list of (name, y, p); "treat all" (grey dashed) and "treat none" (0) are added.
    The y axis runs from min(0, -0.1 * max) to the largest net benefit; x over ``thresholds``."""
    th = [float(v) for v in thresholds]
    if not curves:
        raise ValueError("decision_curve_svg needs at least one (name, y, p) curve")
    rows = [(str(nm), net_benefit(yc, pc, th)) for nm, yc, pc in curves]
    all_ = net_benefit(curves[0][1], curves[0][2], th)
    top = max([r["net_benefit"] for _, rr in rows for r in rr] + [r["treat_all"] for r in all_] + [1e-6])
    bottom = -0.25 * top
    x0, x1 = min(th), max(th)
    pl = _Plot(x0=90, y0=36, size=300)

    def X(v):
        return pl.x((v - x0) / (x1 - x0) if x1 > x0 else 0.5)

    def Y(v):
        return pl.y((min(max(v, bottom), top) - bottom) / (top - bottom))

    desc = "Net benefit by threshold probability. " + "; ".join(
        f"{nm}: " + ", ".join(f"{r['threshold']:.2f}: {r['net_benefit']:.4f}" for r in rr) for nm, rr in rows
    ) + "; treat all: " + ", ".join(f"{r['threshold']:.2f}: {r['treat_all']:.4f}" for r in all_) + "."
    out = _svg_open(title, f"{title}: decision curve", desc)
    out.append('<g aria-hidden="true">')
    out.append(f'<rect x="{_n(pl.x0)}" y="{_n(pl.y0)}" width="{_n(pl.size)}" height="{_n(pl.size)}" '
               f'fill="none" stroke="{_INK}" stroke-width="1.2"/>')
    for i in range(6):
        v = x0 + (x1 - x0) * i / 5
        out.append(f'<text x="{_n(X(v))}" y="{_n(pl.y(0) + 17)}" text-anchor="middle">{v:.2f}</text>')
        nb = bottom + (top - bottom) * i / 5
        out.append(f'<text x="{_n(pl.x0 - 8)}" y="{_n(Y(nb) + 4)}" text-anchor="end">{nb:.3f}</text>')
        out.append(f'<line x1="{_n(pl.x0)}" y1="{_n(Y(nb))}" x2="{_n(pl.x(1))}" y2="{_n(Y(nb))}" '
                   f'stroke="{_GRID}" stroke-width="1"/>')
    out.append(f'<line x1="{_n(pl.x0)}" y1="{_n(Y(0))}" x2="{_n(pl.x(1))}" y2="{_n(Y(0))}" '
               f'stroke="{_INK}" stroke-width="1"/>')
    out.append(f'<text x="{_n(pl.x(0.5))}" y="{_n(pl.y(0) + 40)}" text-anchor="middle" font-size="12">'
               f'Threshold probability</text>')
    out.append("</g>")
    series = rows + [("treat all", [{"threshold": r["threshold"], "net_benefit": r["treat_all"]} for r in all_])]
    for i, (nm, rr) in enumerate(series):
        colour = _DIAG if nm == "treat all" else _COLOURS[i % len(_COLOURS)]
        dash = "4 4" if nm == "treat all" else _DASHES[i % len(_DASHES)]
        pts = " ".join(f"{_n(X(r['threshold']))},{_n(Y(r['net_benefit']))}" for r in rr)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"{dash_attr}>'
                   f'<title>{_esc(nm)}</title></polyline>')
        ly = pl.y0 + 14 + 15 * i
        out.append(f'<line x1="{_n(pl.x(1) - 150)}" y1="{_n(ly)}" x2="{_n(pl.x(1) - 126)}" y2="{_n(ly)}" '
                   f'stroke="{colour}" stroke-width="2"{dash_attr}/>')
        out.append(f'<text x="{_n(pl.x(1) - 120)}" y="{_n(ly + 4)}">{_esc(nm)}</text>')
    out += ["</g>", "</svg>"]
    return "\n".join(out) + "\n"
