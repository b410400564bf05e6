#!/usr/bin/env python3
"""Evaluate a trained model on the held-out test split and write its model card.

    .venv/bin/python -m models.evaluate sepsis                    # models/sepsis/<version>/
    .venv/bin/python -m models.evaluate sepsis --model-dir /tmp/x --n 300

Per model vs its bedside baseline (sepsis: qSOFA, also SIRS; AKI: KDIGO stage; deterioration:
NEWS2): AUROC (patient-bootstrap 95% CI), AUPRC, calibration (ECE + reliability diagram SVG),
sensitivity / PPV / alerts per true positive / alerts per patient-day at the service thresholds and
at the baseline's conventional cut-off, median lead time before onset, and subgroups (age band, sex,
CKD). Writes evaluation.json, reliability.svg, roc.svg and MODEL_CARD.md next to model.pt, and prints
whether each target (AUROC +0.08 over the baseline, ECE <= 0.05, median lead >= 6 h) was met.
The test split is sampled hourly: each hour a clinician could have seen a score.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tomllib

import numpy as np
import torch

from models import dataset
from models import evaluation as ev

HERE = os.path.dirname(os.path.abspath(__file__))

# Conventional positive cut-offs of the bedside scores.
BASELINE_CUT = {"news2": 5, "qsofa": 2, "sirs": 2, "kdigo": 1, "kdigo_ratio": 1.5}
BASELINE_NAME = {"news2": "NEWS2", "qsofa": "qSOFA", "sirs": "SIRS", "kdigo": "KDIGO stage",
                 "kdigo_ratio": "creatinine / 7-day baseline"}
# Reported beside the primary baseline (a stage is 0 before onset by construction, so the
# continuous ratio is the fairer comparator for AKI).
SECONDARY = {"qsofa": ["sirs"], "kdigo": ["kdigo_ratio"]}
TARGET_AUROC_GAIN, TARGET_ECE, TARGET_LEAD_H = 0.08, 0.05, 6.0


def score_model(model_path: str, x: np.ndarray) -> np.ndarray:
    torch.set_num_threads(1)
    module = torch.jit.load(model_path)
    out = []
    with torch.no_grad():
        for i in range(0, len(x), 4096):
            out.append(module(torch.from_numpy(x[i:i + 4096])).squeeze(1).numpy())
    return np.concatenate(out).astype(np.float64)


def run(cfg: dict, out: str, *, patients=None, n: int, seed: int, shuffled: bool = False,
        train_seconds: float | None = None) -> dict:
    t0 = time.time()
    if patients is None:
        patients = dataset.load_patients(cfg, n, seed)
    with open(os.path.join(out, "manifest.toml"), "rb") as f:
        manifest = tomllib.load(f)
    mean, std = np.array(manifest["input"]["mean"]), np.array(manifest["input"]["std"])
    test = dataset.samples(cfg, patients, "test", mean, std, every_hours=1)
    p = score_model(os.path.join(out, "model.pt"), test.x)
    base = dataset.baseline_scores(cfg, patients, test)
    y = test.y.astype(np.int64)
    hours = test.t / 3600.0
    onset_h = test.onset / 3600.0
    horizon = cfg["horizon_hours"]
    lead_window = 2 * horizon
    warning, critical = cfg["thresholds"]
    recs = patients.records
    pid = test.patient
    days_per_patient = {int(k): c / 24.0 for k, c in zip(*np.unique(pid, return_counts=True))}

    primary = cfg["baseline"]
    compared = [primary] + SECONDARY.get(primary, [])
    result = {
        "model": cfg["name"], "version": cfg["version"], "shuffled_labels": shuffled,
        "cohort": {"n": n, "seed": seed, "test_patients": int(len(np.unique(pid))),
                   "test_samples": int(len(y)), "prevalence": float(y.mean()),
                   "patients_with_onset": int(len({int(i) for i, o in zip(pid, onset_h) if not np.isnan(o)}))},
        "auroc": ev.auroc(y, p), "auroc_ci": list(ev.bootstrap_ci(ev.auroc, y, p, n=200, seed=seed, cluster=pid)),
        "auprc": ev.auprc(y, p), "ece": ev.ece(y, p), "brier": ev.brier(y, p),
        "baselines": {}, "operating_points": [], "subgroups": [],
    }
    for b in compared:
        result["baselines"][b] = {"auroc": ev.auroc(y, base[b]), "auprc": ev.auprc(y, base[b])}

    def point(name, scores, thr, kind):
        m = ev.threshold_metrics(y, scores, thr, patient_ids=pid, patient_days=days_per_patient)
        lt = ev.lead_times(hours, pid, scores, onset_h, thr, lead_window)
        return {"scorer": name, "threshold": thr, "kind": kind, "sensitivity": m["sensitivity"],
                "ppv": m["ppv"], "alerts_per_true_positive": m["alerts_per_true_positive"],
                "alerts_per_patient_day": m.get("alerts_per_patient_day"),
                "detected": f"{lt['detected']}/{lt['patients_with_onset']}",
                "median_lead_hours": lt["median_lead_hours"], "iqr_lead_hours": lt["iqr_lead_hours"]}

    ops = result["operating_points"]
    ops.append(point(f"{cfg['name']} model", p, warning, "warning threshold"))
    ops.append(point(f"{cfg['name']} model", p, critical, "critical threshold"))
    for b in compared:
        cut = BASELINE_CUT[b]
        ops.append(point(BASELINE_NAME[b], base[b], cut, f"conventional cut-off ≥ {cut}"))
        sens = ev.threshold_metrics(y, base[b], cut)["sensitivity"]
        if np.isfinite(sens) and sens > 0:
            thr = ev.threshold_for_sensitivity(y, p, sens)
            ops.append(point(f"{cfg['name']} model", p, round(float(thr), 4),
                             f"same sensitivity as {BASELINE_NAME[b]} ≥ {cut}"))
    age = np.array([recs[i]["age"] for i in pid])
    groups = {
        "age band": np.where(age < 50, "18-49", np.where(age < 70, "50-69", "70+")),
        "sex": np.array([recs[i]["sex"] for i in pid]),
        "CKD": np.array(["CKD" if recs[i]["ckd"] else "no CKD" for i in pid]),
        "COPD": np.array(["COPD" if recs[i]["copd"] else "no COPD" for i in pid]),
        "beta-blocker": np.array(["beta-blocker" if recs[i]["beta_blocker"] else "none" for i in pid]),
    }
    result["subgroups"] = ev.subgroups(y, p, groups, warning)
    for row in result["subgroups"]:
        mask = groups[row["group"]] == row["level"]
        row["baseline_auroc"] = ev.auroc(y[mask], base[primary][mask])
    gain = result["auroc"] - result["baselines"][primary]["auroc"]
    strongest = max(compared, key=lambda b: result["baselines"][b]["auroc"])
    gain_strongest = result["auroc"] - result["baselines"][strongest]["auroc"]
    lead = ops[0]["median_lead_hours"]
    result["targets"] = {
        f"AUROC ≥ {BASELINE_NAME[primary]} + {TARGET_AUROC_GAIN} (gain {gain:+.3f})": bool(gain >= TARGET_AUROC_GAIN),
        f"ECE ≤ {TARGET_ECE}": bool(result["ece"] <= TARGET_ECE),
        f"median lead ≥ {TARGET_LEAD_H:.0f} h (at the warning threshold)": bool(np.isfinite(lead) and lead >= TARGET_LEAD_H),
    }
    if strongest != primary:
        result["targets"][f"AUROC ≥ the strongest comparator ({BASELINE_NAME[strongest]}) + {TARGET_AUROC_GAIN} "
                          f"(gain {gain_strongest:+.3f})"] = bool(gain_strongest >= TARGET_AUROC_GAIN)
    result["seconds"] = round(time.time() - t0, 1)
    if train_seconds is not None:
        result["train_seconds"] = round(train_seconds, 1)

    with open(os.path.join(out, "evaluation.json"), "w") as f:
        json.dump(_finite(result), f, indent=1, default=_json_default, allow_nan=False)
        f.write("\n")
    with open(os.path.join(out, "reliability.svg"), "w") as f:
        f.write(ev.reliability_svg(y, p, f"{cfg['name']} v{cfg['version']}: calibration on the synthetic test split"))
    with open(os.path.join(out, "roc.svg"), "w") as f:
        curves = [(f"{cfg['name']} model", y, p)] + [(BASELINE_NAME[b], y, base[b]) for b in compared]
        f.write(ev.roc_svg(curves, f"{cfg['name']} v{cfg['version']}: ROC on the synthetic test split"))
    write_model_card(os.path.join(out, "MODEL_CARD.md"), cfg, manifest, result)
    print(f"TEST {cfg['name']} (n={len(y)} hourly samples, {result['cohort']['test_patients']} patients, "
          f"prevalence {result['cohort']['prevalence']:.3f}): AUROC {result['auroc']:.3f} "
          f"[{result['auroc_ci'][0]:.3f}, {result['auroc_ci'][1]:.3f}]  AUPRC {result['auprc']:.3f}  "
          f"ECE {result['ece']:.3f}")
    for b in compared:
        print(f"  {BASELINE_NAME[b]:<12} AUROC {result['baselines'][b]['auroc']:.3f}  AUPRC {result['baselines'][b]['auprc']:.3f}")
    for k, ok in result["targets"].items():
        print(f"  {'MET ' if ok else 'MISS'} {k}")
    return result


def _finite(o):
    """JSON has no NaN or infinity: undefined metrics (no positives in a subgroup, no true
    positives) are written as null."""
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, (float, np.floating)) and not np.isfinite(o):
        return None
    return o


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def _f(v, spec=".3f"):
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def write_model_card(path, cfg, manifest, r):
    spec = cfg["spec"]
    primary = cfg["baseline"]
    inputs = "\n".join(
        f"| {f['display']} | {', '.join(f['loinc'])} | {f['unit']} | {f['aggregate']} | "
        f"{'—' if f['max_age_hours'] is None else str(f['max_age_hours']) + ' h'} | "
        f"{' – '.join(str(x) for x in manifest.get('validity', {}).get('range', {}).get(f['name'], [])) or '—'} |"
        for f in spec["feature"])
    metric_rows = [{"scorer": f"{cfg['name']} v{cfg['version']}", "auroc": r["auroc"], "ci": r["auroc_ci"],
                    "auprc": r["auprc"], "ece": r["ece"]}]
    for b, m in r["baselines"].items():
        metric_rows.append({"scorer": BASELINE_NAME[b], "auroc": m["auroc"], "ci": None, "auprc": m["auprc"], "ece": None})
    metrics = ev.markdown_table(metric_rows, [("scorer", "Scorer", ""), ("auroc", "AUROC", ".3f"),
                                              ("ci", "95% CI (patient bootstrap)", ".3f"),
                                              ("auprc", "AUPRC", ".3f"), ("ece", "ECE", ".3f")])
    ops = ev.markdown_table(r["operating_points"], [
        ("scorer", "Scorer", ""), ("kind", "Operating point", ""), ("threshold", "Threshold", ".3g"),
        ("sensitivity", "Sensitivity", ".2f"), ("ppv", "PPV", ".2f"),
        ("alerts_per_true_positive", "Alerts per true positive", ".1f"),
        ("alerts_per_patient_day", "Alerts per patient-day", ".2f"), ("detected", "Patients detected", ""),
        ("median_lead_hours", "Median lead (h)", ".1f"), ("iqr_lead_hours", "Lead IQR (h)", ".1f")])
    subs = ev.markdown_table(r["subgroups"], [
        ("group", "Group", ""), ("level", "Level", ""), ("n", "Samples", "d"), ("positives", "Positive", "d"),
        ("auroc", "AUROC", ".3f"), ("baseline_auroc", f"{BASELINE_NAME[primary]} AUROC", ".3f"),
        ("sensitivity", "Sensitivity", ".2f"), ("ppv", "PPV", ".2f")])
    targets = "\n".join(f"- {'**met**' if ok else '**missed**'}: {k}" for k, ok in r["targets"].items())
    c = r["cohort"]
    explanations = ("Explanations are the model's own `attribute` method: an exact decomposition of the calibrated logit "
                    "onto the input cells, summed per measurement by the gateway (contribution against the training mean)"
                    if manifest.get("explanation") == "attribute" else
                    "Explanations are occlusion-based (risk recomputed with one observation left out)")
    text = f"""# Model card: `{cfg['name']}` v{cfg['version']}

> **Trained and evaluated on synthetic data only. Not for clinical use.** Every number below was
> measured by `models/evaluate.py` on the held-out split of a simulated cohort; none describes real
> patients. Generated by `models/train.py` — do not edit by hand.

## Intended use
{cfg['description']}

Decision support inside the EHR (CDS Hooks card + SMART app) for adult inpatients on general wards.
The clinician decides; a card can be overridden with a reason, which is recorded. Not intended for
ICU patients, children, pregnancy, or as a diagnostic test.

## Output
{manifest['output']['meaning']} — {manifest['output']['calibration']}. Horizon {cfg['horizon_hours']} h.
Shown beside the bedside score clinicians already use ({BASELINE_NAME[primary]}).

## Inputs (`{os.path.relpath(cfg['spec_path'], os.path.dirname(HERE))}`, read by the gateway and by training)
Window {spec['window_hours']} h in {spec['steps']} steps of {spec['step_minutes']} min; value + observed-mask
channel per signal; shape `{manifest['input']['shape']}`.

| Signal | LOINC | Unit (converted to) | Per-step aggregate | Carried forward at most | Range seen in training |
|---|---|---|---|---|---|
{inputs}

**Abstains** (no score, and says why) when fewer than {manifest['validity']['min_measurements']} measurements
are in the window{', when ' + ', '.join(manifest['validity']['required']) + ' is missing' if manifest['validity']['required'] else ''},
when the newest measurement is older than {manifest['validity']['max_staleness_hours']} h, or when a value
falls outside the range seen in training.

## Training data
{manifest['training_data']}. Generative assumptions (physiology, onset definitions, confounders such as
CKD, COPD with low baseline SpO2, beta-blockers, missing and irregular measurements, °F and µmol/L
unit mix-ups): `models/cohort/README.md`. Split by patient 60/20/20 (train / calibration / test).

## Evaluation (held-out synthetic test split)
{c['test_patients']} patients, {c['test_samples']} hourly samples, {c['patients_with_onset']} patients with an
onset, sample prevalence {c['prevalence']:.3f}. Label: onset within the next {cfg['horizon_hours']} h;
samples stop at onset.

{metrics}

![ROC curves](roc.svg) ![Reliability diagram](reliability.svg)

### Operating points
Alerts are counted per hourly sample (no suppression); lead time = onset − first alert within
{2 * cfg['horizon_hours']} h before onset, over detected patients.

{ops}

### Subgroups (model at the warning threshold {cfg['thresholds'][0]})
{subs}

### Targets
{targets}

## Limitations
- Synthetic training and test data: the model learned the simulator's physiology. Real performance is
  unknown until a local retrospective and silent (shadow-mode) evaluation.
- Inputs are Observations only: medications (nephrotoxins, antibiotics, vasopressors), fluid balance,
  urine output, comorbidities and notes are not model inputs.
- Calibration was fitted on the simulator's prevalence; a hospital with a different case mix needs
  recalibration.
- {explanations}: they show what moved
  this model, not what causes the disease.

## Reproduce
`.venv/bin/python models/train.py {cfg['name']} --n {c['n']} --seed {c['seed']}` ({cfg.get('epochs', 10)} epochs; single-threaded, seeded:
same torch/numpy versions give the same `model.pt`, sha256 `{manifest['sha256']}`).
"""
    with open(path, "w") as f:
        f.write(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--model-dir", help="folder with model.pt + manifest.toml (default models/<model>/<version>)")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=20260201)
    args = ap.parse_args(argv)
    cfg = dataset.load_config(args.model)
    out = args.model_dir or os.path.join(HERE, args.model, cfg["version"])
    run(cfg, out, n=args.n, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
