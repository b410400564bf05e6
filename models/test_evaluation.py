#!/usr/bin/env python3
"""Plain-assert checks for models/evaluation.py (no pytest needed).

    .venv/bin/python models/test_evaluation.py [--write-svg DIR]     # or: python -m models.test_evaluation

Prints "ok: N checks" and exits 0, or lists the failed checks and exits 1. Expected values are
computed by hand in the comments (or by an independent brute-force implementation for random cases).
--write-svg DIR also writes example SVGs there for a visual check.
"""
from __future__ import annotations

import math
import os
import re
import sys
import traceback
import warnings
import xml.etree.ElementTree as ET

import numpy as np

if not __package__:  # run as a file (`python models/test_evaluation.py`, as CI does): find `models`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from models import evaluation as ev  # noqa: E402

CHECKS = 0
FAILURES: list[str] = []
SVG_NS = "{http://www.w3.org/2000/svg}"


def check(cond, what: str) -> None:
    global CHECKS
    CHECKS += 1
    if not cond:
        FAILURES.append(what)


def close(a, b, what: str, tol: float = 1e-9) -> None:
    ok = (math.isnan(a) and math.isnan(b)) if (isinstance(a, float) and math.isnan(a)) or \
        (isinstance(b, float) and math.isnan(b)) else abs(a - b) <= tol
    check(ok, f"{what}: got {a!r}, expected {b!r}")


def raises(exc, fn, what: str, match: str | None = None) -> None:
    try:
        fn()
    except exc as e:
        check(match is None or re.search(match, str(e)), f"{what}: message {str(e)!r} lacks {match!r}")
        return
    except Exception as e:  # wrong exception type
        check(False, f"{what}: raised {type(e).__name__}: {e}")
        return
    check(False, f"{what}: did not raise {exc.__name__}")


def section(fn):
    """Run one group of checks; an unexpected exception counts as a failed check, not a crash."""
    try:
        fn()
    except Exception:
        check(False, f"{fn.__name__} crashed:\n{traceback.format_exc()}")
    return fn


# ---------------------------------------------------------------- brute-force references
def auroc_pairs(y, s):
    y, s = np.asarray(y), np.asarray(s, dtype=float)
    p, n = s[y == 1], s[y == 0]
    d = p[:, None] - n[None, :]
    return float(((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size)


def ap_loop(y, s):
    """Average precision by looping over distinct thresholds, high to low."""
    y, s = np.asarray(y), np.asarray(s, dtype=float)
    total, prev_recall = 0.0, 0.0
    for t in sorted(set(s.tolist()), reverse=True):
        alert = s >= t
        tp = int((alert & (y == 1)).sum())
        recall = tp / (y == 1).sum()
        total += (recall - prev_recall) * tp / alert.sum()
        prev_recall = recall
    return total


# ---------------------------------------------------------------- checks
@section
def test_auroc():
    close(ev.auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 0.75, "AUROC worked example")
    # pairs (pos, neg): (.35,.1)+ (.35,.4)- (.8,.1)+ (.8,.4)+  -> 3/4
    close(ev.auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]), 1.0, "AUROC perfect")
    close(ev.auroc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]), 0.0, "AUROC reversed")
    close(ev.auroc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]), 0.5, "AUROC all tied")
    # one tie across classes: pos {0.5, 0.9} vs neg {0.5, 0.1}: (0.5,0.5)=1/2, (0.5,0.1)=1, (0.9,*)=2 -> 3.5/4
    close(ev.auroc([1, 0, 1, 0], [0.5, 0.5, 0.9, 0.1]), 0.875, "AUROC partial tie")
    close(ev.auroc(np.array([True, False]), np.array([2, 1])), 1.0, "AUROC bool labels, int scores")
    close(ev.auroc([0, 1, 1], [-np.inf, 3.0, np.inf]), 1.0, "AUROC infinite scores")
    close(ev.auroc([0, 1, 1], [np.inf, 3.0, np.inf]), 0.25, "AUROC tied +inf")
    check(math.isnan(ev.auroc([1, 1, 1], [0.1, 0.2, 0.3])), "AUROC nan without negatives")
    check(math.isnan(ev.auroc([0, 0], [0.1, 0.2])), "AUROC nan without positives")
    rng = np.random.default_rng(1)
    for trial in range(5):
        y = rng.integers(0, 2, 60)
        s = rng.integers(0, 8, 60) / 7  # many ties
        close(ev.auroc(y, s), auroc_pairs(y, s), f"AUROC vs pairwise count (trial {trial})", 1e-12)
    y = rng.integers(0, 2, 20_000)
    a = ev.auroc(y, rng.random(20_000))
    check(abs(a - 0.5) < 0.02, f"random scorer AUROC {a} not within 0.5 +- 0.02")


@section
def test_auprc():
    # thresholds .8: P=1 R=.5 | .4: P=.5 R=.5 | .35: P=2/3 R=1 | .1: P=.5 R=1
    # AP = .5*1 + 0*.5 + .5*(2/3) + 0 = 0.8333...
    close(ev.auprc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 0.5 + 1 / 3, "AUPRC worked example")
    close(ev.auprc([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8]), 1.0, "AUPRC perfect")
    # all tied: one threshold, P = prevalence = 1/4, R = 1
    close(ev.auprc([0, 0, 0, 1], [0.3, 0.3, 0.3, 0.3]), 0.25, "AUPRC all tied = prevalence")
    # ranked 1,0,1,0,0 (scores .9 .8 .7 .6 .5): R .5 at P 1, R 1 at P 2/3 -> .5 + .5*2/3
    close(ev.auprc([1, 0, 1, 0, 0], [0.9, 0.8, 0.7, 0.6, 0.5]), 0.5 + 1 / 3, "AUPRC ranked example")
    # tie group {.7: pos, neg} after a positive at .9: R .5 P 1; then R 1 at P 2/3 (tied pair enters together)
    close(ev.auprc([1, 1, 0, 0], [0.9, 0.7, 0.7, 0.1]), 0.5 + 0.5 * 2 / 3, "AUPRC tie group")
    check(math.isnan(ev.auprc([0, 0, 0], [0.1, 0.2, 0.3])), "AUPRC nan without positives")
    close(ev.auprc([1, 1], [0.1, 0.2]), 1.0, "AUPRC all positive")
    rng = np.random.default_rng(2)
    for trial in range(5):
        y = rng.integers(0, 2, 50)
        s = rng.integers(0, 6, 50) / 5
        close(ev.auprc(y, s), ap_loop(y, s), f"AUPRC vs threshold loop (trial {trial})", 1e-12)
    y = (rng.random(20_000) < 0.1).astype(int)
    a = ev.auprc(y, rng.random(20_000))
    check(abs(a - y.mean()) < 0.02, f"random scorer AUPRC {a} should be near prevalence {y.mean()}")


@section
def test_calibration():
    # exactly calibrated: bin [.2,.3) holds four 0.25s with one positive, bin [.7,.8) four 0.75s with 3
    y = [1, 0, 0, 0, 1, 1, 1, 0]
    p = [0.25] * 4 + [0.75] * 4
    close(ev.ece(y, p), 0.0, "ECE exactly calibrated", 1e-12)
    # p = .05 x2 (one positive): |.05 - .5| * 2/4 ; p = .95 x2 (both positive): |.95 - 1| * 2/4
    close(ev.ece([0, 1, 1, 1], [0.05, 0.05, 0.95, 0.95]), 0.225 + 0.025, "ECE worked example")
    rng = np.random.default_rng(3)
    p = rng.random(20_000)
    y = (rng.random(20_000) < p).astype(int)
    e = ev.ece(y, p)
    check(e < 0.02, f"ECE of a calibrated synthetic set should be ~0, got {e}")
    # overconfident: true risk 0.6 / 0.4, model says 0.95 / 0.05
    hi = rng.random(20_000) < 0.5
    y = np.where(hi, rng.random(20_000) < 0.6, rng.random(20_000) < 0.4).astype(int)
    p = np.where(hi, 0.95, 0.05)
    e = ev.ece(y, p)
    check(e > 0.1, f"ECE of an overconfident set should be > 0.1, got {e}")
    close(e, 0.35, "ECE overconfident ~ 0.35", 0.02)

    rows = ev.reliability([0, 1, 1, 0, 1], [0.0, 0.05, 1.0, 0.55, 0.95], bins=4)
    check(len(rows) == 4, "reliability returns one row per bin")
    check([r["n"] for r in rows] == [2, 0, 1, 2], f"reliability counts {[r['n'] for r in rows]}")
    close(rows[0]["lo"], 0.0, "bin 0 lo")
    close(rows[0]["hi"], 0.25, "bin 0 hi")
    close(rows[3]["hi"], 1.0, "last bin hi")
    close(rows[0]["mean_pred"], 0.025, "bin 0 mean_pred")
    close(rows[0]["frac_pos"], 0.5, "bin 0 frac_pos")
    check(math.isnan(rows[1]["mean_pred"]) and math.isnan(rows[1]["frac_pos"]), "empty bin is nan")
    close(rows[3]["mean_pred"], 0.975, "p = 1.0 lands in the last bin")
    close(rows[3]["frac_pos"], 1.0, "last bin frac_pos")
    check(set(rows[0]) == {"lo", "hi", "n", "mean_pred", "frac_pos"}, "reliability keys")
    raises(ValueError, lambda: ev.ece([0, 1], [0.5, 1.2]), "ECE p > 1", r"\[0, 1\]")
    raises(ValueError, lambda: ev.reliability([0, 1], [-0.1, 0.5]), "reliability p < 0", r"\[0, 1\]")
    raises(ValueError, lambda: ev.ece([0, 1], [0.5, 0.5], bins=0), "ECE bins = 0", "bins")
    # Brier: (.25^2 + .75^2 + .25^2 + .25^2) / 4 = .1875; prevalence .25 for everyone: .25 * .75
    close(ev.brier([0, 1, 0, 0], [0.25, 0.25, 0.25, 0.25]), 0.1875, "Brier worked example")
    close(ev.brier([0, 1], [0.0, 1.0]), 0.0, "Brier perfect", 1e-15)
    raises(ValueError, lambda: ev.brier([0, 1], [0.5, 1.5]), "Brier p > 1", r"\[0, 1\]")


@section
def test_threshold_metrics():
    y = [1, 1, 1, 0, 0, 0, 0, 0]
    s = [0.9, 0.6, 0.2, 0.7, 0.5, 0.3, 0.1, 0.6]
    m = ev.threshold_metrics(y, s, 0.5)
    # alerts: .9(TP) .6(TP) .7(FP) .5(FP) .6(FP) -> TP 2, FP 3, FN 1, TN 2
    check((m["alerts"], m["true_positives"], m["false_positives"], m["false_negatives"], m["true_negatives"])
          == (5, 2, 3, 1, 2), f"confusion counts {m}")
    close(m["sensitivity"], 2 / 3, "sensitivity")
    close(m["specificity"], 2 / 5, "specificity")
    close(m["ppv"], 2 / 5, "ppv")
    close(m["npv"], 2 / 3, "npv")
    close(m["alerts_per_true_positive"], 2.5, "alerts per TP")
    check("alerts_per_patient_day" not in m, "no per-day burden without patient_days")
    ids = ["a", "a", "b", "b", "c", "c", "d", "d"]
    m = ev.threshold_metrics(y, s, 0.5, patient_ids=ids, patient_days=2.5)
    close(m["alerts_per_patient_day"], 2.0, "alerts per patient-day (scalar total)")
    check(m["patients"] == 4 and m["patients_alerted"] == 4, f"patients / alerted {m}")  # a .9, b .7, c .5, d .6
    m = ev.threshold_metrics(y, s, 0.65, patient_ids=ids)
    check(m["patients_alerted"] == 2 and "alerts_per_patient_day" not in m, f"alerted at 0.65: a, b {m}")
    days = {"a": 1.0, "b": 0.5, "c": 2.0, "d": 1.5}
    m = ev.threshold_metrics(y, s, 0.5, patient_ids=ids, patient_days=days)
    close(m["alerts_per_patient_day"], 5 / 5.0, "alerts per patient-day (dict)")
    per_sample = [days[i] for i in ids]
    m = ev.threshold_metrics(y, s, 0.5, patient_ids=ids, patient_days=per_sample)
    close(m["alerts_per_patient_day"], 1.0, "alerts per patient-day (per-sample, counted once per patient)")
    raises(ValueError, lambda: ev.threshold_metrics(y, s, 0.5, patient_ids=ids, patient_days=[1] * 7 + [2]),
           "per-sample days not constant in patient", "constant")
    raises(ValueError, lambda: ev.threshold_metrics(y, s, 0.5, patient_days=per_sample),
           "per-sample days without ids", "patient_ids")
    raises(ValueError, lambda: ev.threshold_metrics(y, s, 0.5, patient_ids=ids, patient_days={"a": 1}),
           "dict days missing patient", "no entry")
    raises(ValueError, lambda: ev.threshold_metrics(y, s, 0.5, patient_ids=ids[:-1]), "ids length", "length")
    m = ev.threshold_metrics(y, s, 0.95)
    check(m["alerts"] == 0 and math.isinf(m["alerts_per_true_positive"]) and math.isnan(m["ppv"]),
          f"no alerts: ppv nan, alerts/TP inf {m}")
    m = ev.threshold_metrics([0, 0, 1], [0.8, 0.2, 0.1], 0.5)
    check(math.isinf(m["alerts_per_true_positive"]) and m["sensitivity"] == 0.0, "TP = 0 -> alerts/TP inf")
    check(ev.threshold_metrics([0, 1], [0.5, 0.5], 0.5)["alerts"] == 2, "score == threshold alerts")
    raises(ValueError, lambda: ev.threshold_metrics(y, s, float("nan")), "NaN threshold", "NaN")


@section
def test_threshold_for_sensitivity():
    y = [1, 1, 1, 1, 1, 0, 0, 0]
    s = [0.9, 0.8, 0.7, 0.6, 0.5, 0.85, 0.55, 0.1]
    close(ev.threshold_for_sensitivity(y, s, 0.8), 0.6, "sens 0.8 -> 4 of 5 positives -> 0.6")
    close(ev.threshold_for_sensitivity(y, s, 0.81), 0.5, "sens 0.81 -> all 5 -> 0.5")
    close(ev.threshold_for_sensitivity(y, s, 1.0), 0.5, "sens 1.0")
    close(ev.threshold_for_sensitivity(y, s, 0.2), 0.9, "sens 0.2 -> 1 positive")
    close(ev.threshold_for_sensitivity(y, s, 0.01), 0.9, "tiny target")
    # tie among positives: 2 of 3 needed, top two tied -> threshold 0.7 catches 2
    close(ev.threshold_for_sensitivity([1, 1, 1, 0], [0.7, 0.7, 0.2, 0.9], 0.6), 0.7, "tied positives")
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.random(500), 2)
    for target in (0.5, 0.75, 0.9, 0.95):
        t = ev.threshold_for_sensitivity(y, s, target)
        check(ev.threshold_metrics(y, s, t)["sensitivity"] >= target, f"target {target} reached at {t}")
        above = np.nextafter(t, np.inf)
        check(ev.threshold_metrics(y, s, above)["sensitivity"] < target, f"{t} is the highest for {target}")
    raises(ValueError, lambda: ev.threshold_for_sensitivity([0, 0], [0.1, 0.2], 0.5), "no positives", "positive")
    raises(ValueError, lambda: ev.threshold_for_sensitivity([0, 1], [0.1, 0.2], 0), "target 0", "target")
    raises(ValueError, lambda: ev.threshold_for_sensitivity([0, 1], [0.1, 0.2], 1.5), "target > 1", "target")


@section
def test_lead_times():
    # patient A (onset 10 h): alerts at 1 (outside 6 h window), 5, 7; 12 is after onset -> lead 10-5 = 5
    # patient B (onset 20 h): alerts at 18 only -> lead 2
    # patient C (onset 8 h): only alert at 9 (after onset) and low scores before -> missed
    # patient D: no onset, alerts ignored
    # patient E (onset 30 h): alert exactly 6 h before (window edge, included) -> lead 6
    # patient F (onset 40 h): alert at 40 (t == onset, not before) -> missed
    rows = [  # id, time, score, onset
        ("A", 1, 0.9, 10), ("A", 5, 0.8, 10), ("A", 7, 0.3, 10), ("A", 8, 0.7, 10), ("A", 12, 0.9, 10),
        ("B", 15, 0.2, 20), ("B", 18, 0.6, 20),
        ("C", 4, 0.1, 8), ("C", 9, 0.9, 8),
        ("D", 3, 0.9, None), ("D", 4, 0.9, None),
        ("E", 24, 0.5, 30), ("E", 26, 0.9, 30),
        ("F", 40, 0.9, 40),
    ]
    ids = [r[0] for r in rows]
    times = [float(r[1]) for r in rows]
    scores = [r[2] for r in rows]
    onsets = [np.nan if r[3] is None else float(r[3]) for r in rows]
    r = ev.lead_times(times, ids, scores, onsets, threshold=0.5, max_lead_hours=6)
    check(r["patients_with_onset"] == 5, f"patients with onset {r}")
    check(r["detected"] == 3 and r["missed"] == 2, f"detected / missed {r}")
    check(r["lead_hours"] == [2.0, 5.0, 6.0], f"lead hours {r['lead_hours']}")
    close(r["median_lead_hours"], 5.0, "median lead")
    close(r["iqr_lead_hours"][0], 3.5, "lead q1")
    close(r["iqr_lead_hours"][1], 5.5, "lead q3")
    # same with datetime64 (hours after a base time)
    base = np.datetime64("2026-01-01T00:00")
    t64 = np.array([base + np.timedelta64(int(h * 60), "m") for h in times])
    o64 = np.array([np.datetime64("NaT") if r_[3] is None else base + np.timedelta64(r_[3], "h") for r_ in rows],
                   dtype="datetime64[m]")
    r2 = ev.lead_times(t64, ids, scores, o64, threshold=0.5, max_lead_hours=6)
    check(r2 == r, f"datetime64 result equals float-hours result: {r2}")
    # four detections 2, 4, 6, 10 h -> median 5, IQR [3.5, 7] (linear percentiles)
    r3 = ev.lead_times([0, 0, 0, 0], ["p", "q", "r", "s"], [1, 1, 1, 1], [2, 4, 6, 10], 0.5, 12)
    check(r3["lead_hours"] == [2.0, 4.0, 6.0, 10.0], f"lead hours {r3}")
    close(r3["median_lead_hours"], 5.0, "median of 2,4,6,10")
    check(r3["iqr_lead_hours"] == [3.5, 7.0], f"IQR of 2,4,6,10 {r3['iqr_lead_hours']}")
    r4 = ev.lead_times([1, 2], ["x", "x"], [0.1, 0.2], [5, 5], 0.5, 6)
    check(r4["detected"] == 0 and math.isnan(r4["median_lead_hours"]) and r4["lead_hours"] == [],
          f"no detections -> nan median {r4}")
    r5 = ev.lead_times([1, 2], ["x", "y"], [0.9, 0.9], [np.nan, np.nan], 0.5, 6)
    check(r5["patients_with_onset"] == 0, "no onsets at all")
    raises(ValueError, lambda: ev.lead_times([1, 2], ["x", "x"], [0.9, 0.9], [5, 6], 0.5, 6),
           "inconsistent onset per patient", "differ")
    raises(ValueError, lambda: ev.lead_times([1, 2], ["x", "x"], [0.9, 0.9], [5, np.nan], 0.5, 6),
           "onset and nan in one patient", "mix")
    raises(ValueError, lambda: ev.lead_times([1, np.nan], ["x", "x"], [0.9, 0.9], [5, 5], 0.5, 6),
           "NaN time", "NaN")
    raises(ValueError, lambda: ev.lead_times([1, 2], ["x", "x"], [0.9], [5, 5], 0.5, 6), "lengths", "length")
    raises(ValueError, lambda: ev.lead_times(t64[:2], ["x", "x"], [0.9, 0.9], [5.0, 5.0], 0.5, 6),
           "datetime times, float onsets", "datetime64")


@section
def test_subgroups():
    y = [1, 0, 1, 0, 1, 0, 0, 0]
    s = [0.9, 0.2, 0.4, 0.6, 0.8, 0.7, 0.1, 0.3]
    sex = ["F", "F", "F", "F", "M", "M", "M", "M"]
    ckd = [True, False, True, False, False, False, False, False]
    rows = ev.subgroups(y, s, {"sex": sex, "CKD": ckd}, threshold=0.5)
    check([(r["group"], r["level"]) for r in rows] == [("sex", "F"), ("sex", "M"), ("CKD", False), ("CKD", True)],
          f"subgroup order {[(r['group'], r['level']) for r in rows]}")
    f, m_, no, yes = rows
    # F: y 1 0 1 0, s .9 .2 .4 .6: pairs (.9>.2, .9>.6, .4>.2, .4<.6) -> 3/4; alerts .9 .6 -> TP 1
    check((f["n"], f["positives"], f["alerts"]) == (4, 2, 2), f"F counts {f}")
    close(f["auroc"], 0.75, "F auroc")
    close(f["sensitivity"], 0.5, "F sensitivity")
    close(f["ppv"], 0.5, "F ppv")
    # M: y 1 0 0 0, s .8 .7 .1 .3 -> AUROC 1; alerts .8 .7 -> sens 1, ppv .5
    close(m_["auroc"], 1.0, "M auroc")
    close(m_["sensitivity"], 1.0, "M sensitivity")
    close(m_["ppv"], 0.5, "M ppv")
    # CKD True: both positive -> AUROC nan; alerts .9 only -> sens .5, ppv 1
    check(yes["n"] == 2 and yes["positives"] == 2 and math.isnan(yes["auroc"]), f"CKD True {yes}")
    close(yes["sensitivity"], 0.5, "CKD sensitivity")
    close(yes["ppv"], 1.0, "CKD ppv")
    # CKD False: y 0 0 0 1 0 0 (s .2 .6 .8 .7 .1 .3); alerts .6 .8 .7 -> sens 1, ppv 1/3
    close(no["sensitivity"], 1.0, "no-CKD sensitivity")
    close(no["ppv"], 1 / 3, "no-CKD ppv")
    rows = ev.subgroups([0, 1], [0.1, 0.2], {"g": ["a", "b"]}, threshold=0.9)
    check(all(math.isnan(r["ppv"]) for r in rows), "no alerts -> ppv nan")
    check(math.isnan(rows[0]["sensitivity"]), "no positives -> sensitivity nan")
    raises(ValueError, lambda: ev.subgroups(y, s, {"sex": sex[:-1]}, 0.5), "group length", "length")
    raises(ValueError, lambda: ev.subgroups(y, s, {"age": [1, 2, 3, np.nan, 1, 2, 3, 1]}, 0.5),
           "NaN group label", "missing")
    raises(ValueError, lambda: ev.subgroups(y, s, {"sex": sex[:-1] + [None]}, 0.5), "None group label", "missing")


@section
def test_bootstrap():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 2000)
    s = y * 0.5 + rng.random(2000)
    point = ev.auroc(y, s)
    lo, hi = ev.bootstrap_ci(ev.auroc, y, s, n=200, seed=0)
    check(lo < point < hi, f"CI ({lo}, {hi}) contains the estimate {point}")
    check(0.005 < hi - lo < 0.1, f"CI width {hi - lo} plausible for n=2000")
    check(ev.bootstrap_ci(ev.auroc, y, s, n=200, seed=0) == (lo, hi), "seeded bootstrap is reproducible")
    check(ev.bootstrap_ci(ev.auroc, y, s, n=200, seed=1) != (lo, hi), "different seed, different CI")
    # 300 patients x 10 identical samples each: naive resampling pretends there are 3000 independent
    # samples; cluster resampling should be about sqrt(10) ~ 3.2 times wider
    yp = rng.integers(0, 2, 300)
    sp = yp * 0.3 + rng.random(300)
    y10, s10, pid = np.repeat(yp, 10), np.repeat(sp, 10), np.repeat(np.arange(300), 10)
    naive = ev.bootstrap_ci(ev.auroc, y10, s10, n=300, seed=0)
    clus = ev.bootstrap_ci(ev.auroc, y10, s10, n=300, seed=0, cluster=pid)
    ratio = (clus[1] - clus[0]) / (naive[1] - naive[0])
    check(2.0 < ratio < 5.0, f"cluster CI / naive CI width ratio {ratio} should be ~3")
    ref = ev.bootstrap_ci(ev.auroc, yp, sp, n=300, seed=0, cluster=np.arange(300))
    check(abs((clus[1] - clus[0]) - (ref[1] - ref[0])) < 0.03, f"cluster CI {clus} ~ per-patient CI {ref}")
    # every resample of an identical constant metric gives the same value
    check(ev.bootstrap_ci(lambda a, b: 0.25, [0, 1], [0.1, 0.2], n=20) == (0.25, 0.25), "constant metric")
    # metric sees int labels and float scores of the resampled size
    seen = []
    ev.bootstrap_ci(lambda a, b: seen.append((a.dtype.kind, b.dtype.kind, len(a))) or 0.0, [0, 1, 1], [1, 2, 3], n=3)
    check(seen == [("i", "f", 3)] * 3, f"metric_fn arguments {seen}")
    # few positives: some resamples have none -> discarded with a warning, not silently
    yr = np.zeros(40, dtype=int)
    yr[:3] = 1
    sr = np.linspace(0, 1, 40)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ev.bootstrap_ci(ev.auroc, yr, sr, n=200, seed=0)
    check(any("discarded" in str(x.message) for x in w), "nan resamples are reported")
    # one positive in 200: it is drawn < 2 times in ~74 % of resamples -> metric nan -> refuse
    yr1 = np.zeros(200, dtype=int)
    yr1[0] = 1
    needs_two = lambda a, b: float("nan") if a.sum() < 2 else 0.0  # noqa: E731
    raises(ValueError, lambda: ev.bootstrap_ci(needs_two, yr1, np.linspace(0, 1, 200), n=100), "mostly nan", "nan")
    raises(ValueError, lambda: ev.bootstrap_ci(ev.auroc, y, s, n=0), "n = 0", "positive integer")
    raises(ValueError, lambda: ev.bootstrap_ci(ev.auroc, y, s, cluster=pid), "cluster length", "length")


@section
def test_markdown():
    rows = [
        {"name": "model", "auroc": 0.81234, "alerts": 12, "burden": 3.0, "iqr": [2.0, 6.5]},
        {"name": "NEWS2 | 5", "auroc": float("nan"), "alerts": 3, "burden": float("inf"), "iqr": [float("nan")] * 2},
    ]
    cols = [("name", "Scorer", ""), ("auroc", "AUROC", ".3f"), ("alerts", "Alerts", "d"),
            ("burden", "Alerts / TP", ".1f"), ("iqr", "Lead IQR (h)", "{:.1f}")]
    got = ev.markdown_table(rows, cols)
    want = ("| Scorer | AUROC | Alerts | Alerts / TP | Lead IQR (h) |\n"
            "|---|---:|---:|---:|---|\n"
            "| model | 0.812 | 12 | 3.0 | 2.0–6.5 |\n"
            "| NEWS2 \\| 5 | n/a | 3 | ∞ | n/a–n/a |\n")
    check(got == want, f"markdown table:\n{got}\n!=\n{want}")
    got = ev.markdown_table([{"a": None, "b": True, "c": 0.5}], [("a", "A", ".2f"), ("b", "B", ""),
                                                                  ("c", "C", lambda v: f"{100 * v:.0f} %")])
    check(got.splitlines()[2] == "| n/a | yes | 50 % |", f"None / bool / callable: {got!r}")
    check(ev.markdown_table([], [("a", "A", "")]) == "| A |\n|---|\n", "empty table")
    raises(ValueError, lambda: ev.markdown_table([{"a": 1}], [("b", "B", "")]), "missing key", "'b'")


@section
def test_validation():
    raises(ValueError, lambda: ev.auroc([0, 1, 1], [0.1, 0.2]), "length mismatch", r"y=3, score=2")
    raises(ValueError, lambda: ev.auroc([0, 1, 2], [0.1, 0.2, 0.3]), "non-binary labels", "0/1")
    raises(ValueError, lambda: ev.auroc([0, 1, np.nan], [0.1, 0.2, 0.3]), "NaN label", "NaN")
    raises(ValueError, lambda: ev.auroc([0, 1, None], [0.1, 0.2, 0.3]), "None label", "NaN")
    raises(ValueError, lambda: ev.auroc([0, 1, 1], [0.1, np.nan, 0.3]), "NaN score", "index 1")
    raises(ValueError, lambda: ev.auprc([0, 1], [0.1, np.nan]), "NaN score (AUPRC)", "NaN")
    raises(ValueError, lambda: ev.ece([0, 1], [0.1, np.nan]), "NaN probability", "NaN")
    raises(ValueError, lambda: ev.auroc([[0, 1]], [[0.1, 0.2]]), "2-D input", "1-D")
    raises(ValueError, lambda: ev.auroc([], []), "empty input", "empty")
    raises(ValueError, lambda: ev.auroc(["a", "b"], [0.1, 0.2]), "string labels", "numeric")
    raises(ValueError, lambda: ev.roc_svg([("m", [0, 0], [0.1, 0.2])], "t"), "ROC with one class", "both")
    raises(ValueError, lambda: ev.roc_svg([], "t"), "ROC without curves", "at least one")
    raises(ValueError, lambda: ev.reliability_svg([0, 1], [0.2, 1.5], "t"), "reliability_svg p > 1", r"\[0, 1\]")


def _parse_svg(text: str, what: str):
    try:
        return ET.fromstring(text)
    except ET.ParseError as e:
        check(False, f"{what} is not well-formed XML: {e}")
        return None


def _svg_common(text: str, title: str, what: str):
    root = _parse_svg(text, what)
    check(root is not None, f"{what} parses")
    if root is None:
        return None
    check(root.tag == f"{SVG_NS}svg", f"{what} root is <svg>")
    check(root.get("role") == "img", f"{what} role=img")
    check(title in (root.get("aria-label") or ""), f"{what} aria-label mentions the title")
    t = root.find(f"{SVG_NS}title")
    check(t is not None and t.text == title, f"{what} <title> = {title!r}")
    check(root.find(f"{SVG_NS}desc") is not None, f"{what} has <desc>")
    check(400 <= float(root.get("width")) <= 560 and 320 <= float(root.get("height")) <= 480, f"{what} size")
    texts = [el.text or "" for el in root.iter(f"{SVG_NS}text")]
    check(title in texts, f"{what} shows the title")
    check(all(l in texts for l in ("0.0", "0.2", "0.4", "0.6", "0.8", "1.0")), f"{what} tick labels 0-1")
    low = text.lower()
    check("<script" not in low and "@import" not in low and "href" not in low and "url(" not in low,
          f"{what} is standalone (no scripts / links / external fonts)")
    coords = re.findall(r'\b(?:x|y|x1|y1|x2|y2|cx|cy|r|width|height)="([^"]*)"', text)
    coords += [c for pts in re.findall(r'points="([^"]*)"', text) for pair in pts.split() for c in pair.split(",")]
    check(coords and all(re.fullmatch(r"-?\d+(\.\d)?", c) for c in coords),
          f"{what} coordinates rounded to 1 decimal: {[c for c in coords if not re.fullmatch(r'-?[0-9]+([.][0-9])?', c)][:5]}")
    return root


SVG_OUT: dict[str, str] = {}


@section
def test_reliability_svg():
    rng = np.random.default_rng(6)
    p = rng.beta(1.2, 5, 5000)
    y = (rng.random(5000) < np.clip(p * 1.3, 0, 1)).astype(int)
    title = "Deterioration v1.0.0 <test> & calibration"
    svg = ev.reliability_svg(y, p, title)
    SVG_OUT["reliability.svg"] = svg
    root = _svg_common(svg, title, "reliability_svg")
    if root is not None:
        check(any(el.get("stroke-dasharray") for el in root.iter(f"{SVG_NS}line")), "dashed diagonal")
        texts = " ".join(el.text or "" for el in root.iter(f"{SVG_NS}text"))
        check("perfect calibration" in texts, "legend names the diagonal")
        check(f"ECE = {ev.ece(y, p):.3f}" in texts, "legend shows ECE")
        n_points = len(root.findall(f".//{SVG_NS}circle"))
        check(n_points == sum(1 for r in ev.reliability(y, p) if r["n"]) + 1, f"one marker per non-empty bin ({n_points})")
        check(len([r for r in root.iter(f"{SVG_NS}rect") if r.get("fill") == "#666666"]) >= 5, "histogram strip")
    check(ev.reliability_svg(y, p, title) == svg, "reliability_svg deterministic")
    # degenerate input still renders: one bin, all negative
    svg1 = ev.reliability_svg([0, 0, 0], [0.1, 0.1, 0.1], "one bin", bins=5)
    check(_parse_svg(svg1, "one-bin reliability_svg") is not None, "one-bin SVG parses")


@section
def test_roc_svg():
    rng = np.random.default_rng(7)
    y = (rng.random(20_000) < 0.08).astype(int)
    model = y * 1.2 + rng.normal(0, 1, 20_000)
    news2 = np.clip(np.round(y * 1.5 + rng.poisson(2, 20_000)), 0, 20)
    title = "Deterioration: model vs NEWS2"
    svg = ev.roc_svg([("GRU model", y, model), ("NEWS2", y, news2)], title)
    SVG_OUT["roc.svg"] = svg
    root = _svg_common(svg, title, "roc_svg")
    if root is not None:
        texts = [el.text or "" for el in root.iter(f"{SVG_NS}text")]
        check(f"GRU model (AUROC {ev.auroc(y, model):.3f})" in texts, "legend: model AUROC")
        check(f"NEWS2 (AUROC {ev.auroc(y, news2):.3f})" in texts, "legend: NEWS2 AUROC")
        lines = root.findall(f".//{SVG_NS}polyline")
        check(len(lines) == 2, "one polyline per curve")
        check(lines[0].get("stroke") != lines[1].get("stroke")
              and lines[0].get("stroke-dasharray") != lines[1].get("stroke-dasharray"),
              "curves differ in colour and dash")
        first = lines[0].get("points").split()
        check(first[0] == "90.0,336.0" and first[-1] == "390.0,36.0", f"curve runs (0,0)->(1,1): {first[0]} {first[-1]}")
    check(len(svg) < 200_000, f"ROC SVG of 20 000 samples stays small ({len(svg)} bytes)")
    check(ev.roc_svg([("GRU model", y, model), ("NEWS2", y, news2)], title) == svg, "roc_svg deterministic")
    svg2 = ev.roc_svg([("perfect", [0, 1], [0.0, 1.0])], "tiny")
    r2 = _parse_svg(svg2, "tiny roc")
    if r2 is not None:
        pts = r2.find(f".//{SVG_NS}polyline").get("points")
        check(pts == "90.0,336.0 90.0,36.0 390.0,36.0", f"perfect ROC path {pts}")


@section
def test_abstain_lowest():
    s = ev.abstain_lowest([-2.0, 0.5, np.nan, 3.0], [False, False, True, False])
    check(s[2] < -2.0 and s[2] == -3.0, f"abstention below every real score {s}")
    # abstentions tie at the bottom: positive abstained + negative abstained -> 1/2 each
    y = [1, 0, 1, 0]
    a = ev.auroc(y, ev.abstain_lowest([0.9, 0.1, 0.0, 0.0], [False, False, True, True]))
    # pairs: (0.9 > 0.1), (0.9 > ab), (ab < 0.1), (ab = ab) -> (1 + 1 + 0 + 0.5) / 4
    close(a, 2.5 / 4, "AUROC with tied abstentions")
    raises(ValueError, lambda: ev.abstain_lowest([np.nan, 1.0], [False, False]), "NaN not abstained", "NaN")
    check(list(ev.abstain_lowest([1.0], [True])) == [0.0], "all abstained")


@section
def test_cluster_bootstrap():
    rng = np.random.default_rng(11)
    pid = np.repeat(np.arange(60), rng.integers(1, 6, 60))
    n = len(pid)
    y = (rng.random(n) < 0.3).astype(int)
    a = np.round(y * 0.6 + rng.random(n), 1)   # rounded: ties
    b = np.round(y * 0.2 + rng.random(n), 1)
    boot = ev.cluster_bootstrap(y, {"a": a, "b": b}, pid, n=30, seed=3)
    close(boot["point"]["a"]["auroc"], ev.auroc(y, a), "point AUROC = auroc", 1e-12)
    close(boot["point"]["b"]["auprc"], ev.auprc(y, b), "point AUPRC = auprc", 1e-12)
    # replay the same draws by expansion: weighted metric == metric on the expanded resample
    r = np.random.default_rng(3)
    codes = np.unique(pid, return_inverse=True)[1]
    ok_auc = ok_ap = True
    for k in range(30):
        wc = np.bincount(r.integers(0, 60, 60), minlength=60)
        idx = np.repeat(np.arange(n), wc[codes])
        ok_auc &= abs(boot["reps"]["a"]["auroc"][k] - ev.auroc(y[idx], a[idx])) < 1e-12
        ok_ap &= abs(boot["reps"]["b"]["auprc"][k] - ev.auprc(y[idx], b[idx])) < 1e-12
    check(ok_auc, "resampled AUROC equals auroc of the expanded resample")
    check(ok_ap, "resampled AUPRC equals auprc of the expanded resample")
    summ = ev.summarize_bootstrap(boot, "a")
    d = summ["differences"]["b"]
    close(d["auroc"], ev.auroc(y, a) - ev.auroc(y, b), "paired difference point")
    check(d["auroc_ci"][0] < d["auroc"] < d["auroc_ci"][1], f"difference CI holds the point {d}")
    check(summ["scorers"]["a"]["auroc_ci"][0] <= boot["point"]["a"]["auroc"] <= summ["scorers"]["a"]["auroc_ci"][1],
          "scorer CI holds the point")
    # paired: a scorer against a copy of itself differs by exactly 0 in every resample
    boot2 = ev.cluster_bootstrap(y, {"a": a, "a2": a.copy()}, pid, n=20, seed=1)
    check(ev.summarize_bootstrap(boot2, "a")["differences"]["a2"]["auroc_ci"] == [0.0, 0.0], "self-difference CI 0")
    # pairing narrows the CI of a difference between correlated scorers
    big = np.repeat(np.arange(400), 5)
    yy = (rng.random(2000) < 0.2).astype(int)
    base = yy * 0.8 + rng.normal(0, 1, 2000)
    s1, s2 = base + rng.normal(0, 0.1, 2000), base + rng.normal(0, 0.1, 2000)
    bb = ev.cluster_bootstrap(yy, {"s1": s1, "s2": s2}, big, n=100, seed=0)
    dci = ev.summarize_bootstrap(bb, "s1")["differences"]["s2"]["auroc_ci"]
    sci = ev.summarize_bootstrap(bb, "s1")["scorers"]["s1"]["auroc_ci"]
    check((dci[1] - dci[0]) < 0.5 * (sci[1] - sci[0]), f"paired difference CI {dci} narrower than a scorer's {sci}")
    raises(ValueError, lambda: ev.cluster_bootstrap(y, {"a": a}, pid[:-1]), "cluster length", "length")


@section
def test_calibration_slope():
    rng = np.random.default_rng(12)
    z = rng.normal(-1.5, 1.2, 40_000)
    p = 1 / (1 + np.exp(-z))
    y = (rng.random(len(p)) < p).astype(int)
    c = ev.calibration_slope_intercept(y, p)
    check(abs(c["slope"] - 1) < 0.05 and abs(c["intercept"]) < 0.08 and abs(c["citl"]) < 0.05,
          f"calibrated: slope ~1, intercept ~0 {c}")
    # predictions twice as extreme as the truth (overfit): slope ~0.5
    p2 = 1 / (1 + np.exp(-2 * z))
    c2 = ev.calibration_slope_intercept(y, p2)
    check(abs(c2["slope"] - 0.5) < 0.03, f"overconfident -> slope 0.5 {c2}")
    # risks shifted up by 1 logit: citl ~ -1 and the joint fit gives slope 1, intercept -1
    p3 = 1 / (1 + np.exp(-(z + 1)))
    c3 = ev.calibration_slope_intercept(y, p3)
    check(abs(c3["citl"] + 1) < 0.06 and abs(c3["slope"] - 1) < 0.05 and abs(c3["intercept"] + 1) < 0.1,
          f"over-predicting -> intercept -1 {c3}")
    # Newton optimum: score equations hold (gradient 0)
    x = np.log(p2 / (1 - p2))
    mu = 1 / (1 + np.exp(-(c2["intercept"] + c2["slope"] * x)))
    check(abs(np.sum(y - mu)) < 1e-6 and abs(np.sum((y - mu) * x)) < 1e-5, "score equations at the fit")
    check(math.isnan(ev.calibration_slope_intercept([0, 0], [0.1, 0.2])["slope"]), "one class -> nan")
    o = ev.observed_expected([1, 0, 0, 1], [0.5, 0.5, 0.1, 0.9])
    close(o["o_e"], 2 / 2.0, "O/E overall")
    o2 = ev.observed_expected([1, 0, 0, 1], [0.5, 0.5, 0.1, 0.9], mask=[True, True, False, False])
    check(o2["n"] == 2 and o2["observed"] == 1 and abs(o2["o_e"] - 1.0) < 1e-12, f"O/E in band {o2}")
    check(math.isnan(ev.observed_expected([1], [0.2], mask=[False])["o_e"]), "empty band -> nan")


@section
def test_cards():
    # one patient, 2-hourly, 12 h suppression
    t = [0, 2, 4, 6, 14, 16, 18]
    s = [0.2, 0.5, 0.5, 0.7, 0.5, 0.1, 0.5]
    ids = ["p"] * 7
    c = ev.simulate_cards(t, ids, s, 0.3, 12, critical=0.6)
    # 2h: first card (warning); 4h suppressed; 6h escalates -> shown (critical); 14h: 14-6=8 < 12 -> suppressed;
    # 18h: 18-6 = 12 -> not < 12 -> shown
    check(list(c) == [False, True, False, True, False, False, True], f"suppression + escalation {list(c)}")
    c0 = ev.simulate_cards(t, ids, s, 0.3, 0)
    check(list(c0) == [x >= 0.3 for x in s], "no window: every request above threshold")
    ca = ev.simulate_cards(t, ids, s, 0.3, 12, abstained=[False, True, False, False, False, False, False])
    # 2 h abstained: no card, and no suppression from it -> 4 h is the first card, 18 h the next (no critical band here)
    check(list(ca) == [False, False, True, False, False, False, True], f"abstained request shows nothing {list(ca)}")
    # two patients are independent, input order does not matter
    c2 = ev.simulate_cards([2, 0, 2, 0], ["b", "a", "a", "b"], [0.5, 0.5, 0.5, 0.5], 0.3, 12)
    check(list(c2) == [False, True, False, True], f"per patient {list(c2)}")
    # card metrics: patient a onset at 10 h (horizon 12): cards at 2 (y=1) and 8 (y=1) -> caught, lead 8
    # patient b no onset: 1 card (false). patient c onset at 30, card at 5 (outside 12 h) -> missed
    tt = [2, 8, 4, 5]
    pid = ["a", "a", "b", "c"]
    cards = [True, True, True, True]
    y = [1, 1, 0, 0]
    on = [10, 10, np.nan, 30]
    m = ev.card_metrics(tt, pid, cards, y, on, 12, patient_days=2.0)
    check(m["cards"] == 4 and m["cards_true"] == 2, f"cards {m}")
    close(m["ppv_per_card"], 0.5, "PPV per card")
    close(m["cards_per_patient_day"], 2.0, "cards per patient-day")
    check(m["events"] == 2 and m["events_caught"] == 1, f"events {m}")
    close(m["sensitivity_per_event"], 0.5, "per-event sensitivity")
    close(m["cards_per_tp"], 4.0, "cards per caught event")
    close(m["median_lead_hours"], 8.0, "lead = onset - first card in window")
    m0 = ev.card_metrics(tt, pid, [False] * 4, y, on, 12, 2.0)
    check(m0["cards_per_tp"] == float("inf") and math.isnan(m0["ppv_per_card"]), "no cards")


@section
def test_net_benefit():
    y = [1, 0, 0, 0, 1]
    p = [0.8, 0.6, 0.3, 0.1, 0.2]
    r = ev.net_benefit(y, p, [0.25, 0.5])
    # pt .25 (odds 1/3): act on .8 .6 .3 -> TP 1, FP 2 -> 1/5 - 2/5 / 3 = 0.0667
    close(r[0]["net_benefit"], 1 / 5 - 2 / 5 / 3, "NB at 0.25")
    # treat all at .25: 2/5 - 3/5 / 3 = 0.2
    close(r[0]["treat_all"], 0.2, "treat all at 0.25")
    # pt .5 (odds 1): TP 1, FP 1 -> 0
    close(r[1]["net_benefit"], 0.0, "NB at 0.5")
    raises(ValueError, lambda: ev.net_benefit(y, p, [1.0]), "threshold 1", r"\(0, 1\)")
    svg = ev.decision_curve_svg([("model", y, p)], [0.05, 0.1, 0.2, 0.3], "Decision curve <x>")
    root = _parse_svg(svg, "decision_curve_svg")
    check(root is not None and len(root.findall(f".//{SVG_NS}polyline")) == 2, "model + treat-all curves")
    check(ev.decision_curve_svg([("model", y, p)], [0.05, 0.1, 0.2, 0.3], "Decision curve <x>") == svg,
          "decision curve deterministic")


@section
def test_simple_baselines():
    from models import comparators as cmp
    rng = np.random.default_rng(13)
    X = rng.normal(0, 1, (20_000, 3))
    z = -1.0 + 1.5 * X[:, 0] - 0.8 * X[:, 1]
    y = (rng.random(20_000) < 1 / (1 + np.exp(-z))).astype(int)
    m = cmp.fit_logistic(X, y, l2=1e-6)
    b = m["beta"][1:] / m["std"]
    a = m["beta"][0] - np.sum(m["beta"][1:] * m["mean"] / m["std"])
    check(abs(b[0] - 1.5) < 0.08 and abs(b[1] + 0.8) < 0.06 and abs(b[2]) < 0.05 and abs(a + 1) < 0.06,
          f"logistic recovers coefficients {a} {b}")
    strong = cmp.fit_logistic(X, y, l2=1e5)
    check(np.abs(strong["beta"][1:]).max() < 0.1 * np.abs(m["beta"][1:]).max(), "L2 shrinks")
    # stumps: a step in feature 2 only
    ys = (rng.random(20_000) < np.where(X[:, 2] > 0.5, 0.6, 0.05)).astype(int)
    st = cmp.fit_stumps(X, ys, rounds=40)
    check(all(t[0] == 2 for t in st["trees"][:5]), f"stumps split on the informative feature {st['trees'][:3]}")
    check(ev.auroc(ys, cmp.predict_stumps(st, X)) > 0.75, "stumps discriminate")
    check(abs(cmp.predict_stumps(st, X).mean() - ys.mean()) < 0.02, "stumps calibrated in the large")
    # summary features of a hand-made grid: 1 channel, 12 hourly steps, observed at steps 2 and 9
    spec = {"step_minutes": 60, "feature": [{"name": "hr"}]}
    x = np.zeros((1, 12, 2), np.float32)
    x[0, 2:, 0] = 1.0
    x[0, 9:, 0] = 3.0
    x[0, [2, 9], 1] = 1.0
    s = cmp.summary_features(x, spec)[0]
    # last 3, min 1, max 3, mean 2, slope (x[11] - x[5]) / 6 = (3 - 1) / 6, since (11 - 9 + .5) h
    check(np.allclose(s, [3, 1, 3, 2, 2 / 6, 2.5]), f"summary features {s}")
    check(cmp.summary_names(spec)[4] == "hr.slope_6h", "summary names")
    # abstention: window 10 h, needs 3 measurements, creatinine required, stale after 4 h; a value
    # outside the training range (hr 250) is clamped, not a reason to abstain
    spec2 = {"window_hours": 10, "feature": [{"name": "hr"}, {"name": "creatinine"}]}
    H = 3600.0
    ms = [(0, 1 * H, 80.0, "a"), (0, 2 * H, 85.0, "b"), (1, 3 * H, 1.0, "c"), (0, 5 * H, 250.0, "d"),
          (0, 20 * H, 90.0, "e")]
    val = {"min_measurements": 3, "required": ["creatinine"], "max_staleness_hours": 12, "range": {"hr": [30, 200]}}
    r = cmp.abstain_reasons(val, {"min_observations": 2, "max_staleness_hours": 4}, spec2, ms,
                            [2.5 * H, 4 * H, 8 * H, 10 * H, 21 * H])
    # 2.5 h: 2 in window; 4 h: fine; 8 h: fine (250 is clamped); 10 h: newest 5 h old; 21 h: 1
    check(r == ["too few measurements", "", "", "newest measurement too old",
                "too few measurements"], f"abstain reasons {r}")
    r2 = cmp.abstain_reasons({**val, "min_measurements": 1}, None, spec2, ms, [5.5 * H, 21 * H])
    check(r2 == ["", "no creatinine"], f"range / required {r2}")
    # the complete set of core observations ([require_recent]): hr within 2 h
    spec3 = dict(spec2, require_recent={"hours": 2, "features": ["hr"]})
    r3 = cmp.abstain_reasons({}, None, spec3, ms, [4.5 * H, 5.5 * H, 8 * H])
    check(r3 == ["no complete set of core observations", "", "no complete set of core observations"],
          f"complete set {r3}")

def main() -> int:
    if "--write-svg" in sys.argv:
        out = sys.argv[sys.argv.index("--write-svg") + 1]
        os.makedirs(out, exist_ok=True)
        for name, text in SVG_OUT.items():
            with open(os.path.join(out, name), "w", encoding="utf-8") as f:
                f.write(text)
        print(f"wrote {', '.join(SVG_OUT)} to {out}")
    if FAILURES:
        for f in FAILURES:
            print(f"FAIL: {f}")
        print(f"{len(FAILURES)} of {CHECKS} checks failed")
        return 1
    print(f"ok: {CHECKS} checks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
