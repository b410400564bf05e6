#!/usr/bin/env python3
"""End-to-end smoke test of models/evaluate.py --small on the committed sepsis model, the cohort as
both training and test generator (until models/ward/ lands): runs in about a minute on one core and
checks evaluation.json has every section.

    .venv/bin/python models/test_evaluate_small.py        # or: python -m models.test_evaluate_small
"""
from __future__ import annotations

import json
import os
import sys
import tempfile

if not __package__:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from models import evaluate  # noqa: E402

SECTIONS = ["model", "version", "generators", "cohort", "training", "abstention", "auroc", "auroc_ci", "auprc",
            "all_requests", "scored_requests", "comparators", "calibration", "cards", "net_benefit", "subgroups",
            "services", "bootstrap", "targets", "values_only_control", "simple_baselines"]
COMPARATORS = ["news2", "qsofa", "sirs", "kdigo", "creatinine_last", "ctl_count", "ctl_time", "ctl_values_only",
               "logistic", "stumps"]


def main() -> int:
    failures = []
    with tempfile.TemporaryDirectory() as out:
        evaluate.main(["sepsis", "--small", "--train-gen", "cohort", "--test-gen", "cohort", "--out", out])
        with open(os.path.join(out, "evaluation.json")) as f:
            r = json.load(f)
        for k in SECTIONS:
            if k not in r:
                failures.append(f"evaluation.json lacks {k!r}")
        for c in COMPARATORS:
            if c not in r.get("comparators", {}):
                failures.append(f"comparator {c!r} missing")
            d = r.get("all_requests", {}).get("differences", {}).get(c)
            if not d or d.get("auroc_ci") is None or len(d["auroc_ci"]) != 2:
                failures.append(f"no paired AUROC difference CI for {c!r}")
        cal = r.get("calibration", {}).get("model", {})
        for k in ("slope", "intercept", "citl", "oe_overall", "oe_alerting_band"):
            if k not in cal:
                failures.append(f"calibration lacks {k}")
        if not any(c.get("service") == "sepsis-screen" and c.get("suppress_hours") == 12 for c in r.get("cards", [])):
            failures.append("no card simulation under sepsis-screen's 12 h suppression")
        for k in ("rate", "reasons"):
            if k not in r.get("abstention", {}):
                failures.append(f"abstention lacks {k}")
        if not all(isinstance(t.get("met"), bool) for t in r.get("targets", [])) or len(r.get("targets", [])) < 5:
            failures.append("targets table incomplete")
        for f in ("MODEL_CARD.md", "roc.svg", "reliability.svg", "decision_curve.svg"):
            if not os.path.exists(os.path.join(out, f)):
                failures.append(f"{f} not written")
        card = open(os.path.join(out, "MODEL_CARD.md")).read()
        for h in ("## Operational label definitions", "## Abstention", "## Calibration", "## Targets",
                  "## Recalibration plan", "## Input requirements", "synthetic data only"):
            if h not in card:
                failures.append(f"model card lacks {h!r}")
        if r.get("bootstrap", {}).get("reps") != 50 or r.get("cohort", {}).get("n") != 200:
            failures.append("--small is not n 200 / 50 resamples")
    for f in failures:
        print(f"FAIL: {f}")
    print("ok: evaluate --small end to end" if not failures else f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
