#!/usr/bin/env python3
"""Leak check of the synthetic cohort: how well do *observation-policy* features alone predict the labels?

    .venv/bin/python -m models.cohort.leakcheck --n 600 [--seed 1]

For each outcome (sepsis within 12 h, AKI within 48 h, deterioration within 12 h) every patient is sampled
every 2 h from admit + 2 h until the earlier of discharge and the onset (as `models/dataset.py` does); the
label is onset in (t, t + horizon]. Two "content-free" scores are evaluated with `models.evaluation.auroc`:

* the number of Observations (any code, any status) with effective time in [t - 24 h, t);
* the hours since admission.

A cohort whose measurement schedule follows its hidden severity lets the first score alone predict the
label; the cohort README reports these numbers. Some signal is legitimate (a ward measures more often when
recorded values are abnormal, which follows sickness), so the target is "clearly lower", not 0.5.
Also prints label prevalences and the fraction of onsets in the first 24 h of the stay.
"""
from __future__ import annotations

import argparse
import bisect
import sys
import os
import time

import numpy as np

if not __package__:  # run as a file: make `models` importable (PYTHONPATH, if set, wins)
    sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from models.cohort.generate import generate  # noqa: E402
from models.evaluation import auroc  # noqa: E402
from models.fhir_time import instant_seconds  # noqa: E402

HORIZONS = {"sepsis": 12.0, "aki": 48.0, "deterioration": 12.0}
EVERY_H = 2.0


def obs_times(bundle) -> list:
    out = []
    for e in bundle["entry"]:
        r = e["resource"]
        if r.get("resourceType") == "Observation":
            s = instant_seconds(r.get("effectiveDateTime"))
            if s is not None:
                out.append(s)
    out.sort()
    return out


def leak_table(patients) -> dict:
    times = [obs_times(p["bundle"]) for p in patients]
    res = {}
    for outcome, horizon in HORIZONS.items():
        y, count, hours = [], [], []
        for p, ts in zip(patients, times):
            admit, disc = p["admit"].timestamp(), p["discharge"].timestamp()
            on = p["onsets"][outcome]
            on = None if on is None else on.timestamp()
            end = disc if on is None else min(disc, on)
            t = admit + EVERY_H * 3600
            while t < end:
                y.append(on is not None and t < on <= t + horizon * 3600)
                count.append(bisect.bisect_left(ts, t) - bisect.bisect_left(ts, t - 86400))
                hours.append((t - admit) / 3600)
                t += EVERY_H * 3600
        y = np.array(y, bool)
        res[outcome] = {"samples": len(y), "positives": int(y.sum()),
                        "auroc_count_24h": auroc(y, np.array(count, float)),
                        "auroc_hours_since_admit": auroc(y, np.array(hours, float))}
    return res


def report(patients) -> str:
    n = max(1, len(patients))
    lines = []
    for outcome, r in leak_table(patients).items():
        lines.append(f"  {outcome:<13} within {HORIZONS[outcome]:>4.0f} h: samples {r['samples']}, positive "
                     f"{r['positives']}; AUROC measurement count (24 h) {r['auroc_count_24h']:.3f}, "
                     f"hours since admission {r['auroc_hours_since_admit']:.3f}")
    for outcome in HORIZONS:
        on = [p for p in patients if p["onsets"][outcome] is not None]
        early = sum(1 for p in on if (p["onsets"][outcome] - p["admit"]).total_seconds() < 86400)
        lines.append(f"  {outcome:<13} prevalence {len(on) / n:.1%} ({len(on)}/{len(patients)}); onsets in the "
                     f"first 24 h: {early / max(1, len(on)):.0%}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    patients = generate(args.n, args.seed)
    print(f"leak check: n={args.n} seed={args.seed} (generated in {time.perf_counter() - t0:.1f} s)")
    print(report(patients))
    return 0


if __name__ == "__main__":
    sys.exit(main())
