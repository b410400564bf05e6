#!/usr/bin/env python3
"""Evaluate a committed model the way a clinical reviewer reads it, and write its model card.

    .venv/bin/python -m models.evaluate sepsis                         # cohort -> cohort, held-out test split
    .venv/bin/python -m models.evaluate sepsis --test-gen ward         # trained on cohort, tested on ALL ward patients
    .venv/bin/python -m models.evaluate aki --train-gen ward --test-gen cohort --n 1000 --seed 7
    .venv/bin/python -m models.evaluate sepsis --small                 # n 200 per generator, 50 bootstrap reps (CI)

Requests: every 2 h from admission + 1 h (the first hours of a stay included) to the earlier of
discharge and onset; label = onset in (t, t + horizon]. When the test generator is the training one,
its held-out test split is used; otherwise all of its patients.

Every request counts. A request the model abstains on (manifest [validity] + the service's
[guardrails]) shows no alert: for AUROC/AUPRC it ranks below every real score (ties at the bottom);
metrics on the scored subset are reported beside, with the abstention rate and reasons.

Beside every model, on the same requests and the same patient-clustered bootstrap resamples (so the
CI of each difference is paired): bedside scores (NEWS2 with oxygen and ACVPU, qSOFA, SIRS, KDIGO
stage, last creatinine), shortcut controls (in-window measurement count, time since admission, the
model re-scored with its observed-mask channels set to 1 wherever a forward-filled value exists) and
the strongest simple baselines (L2 logistic regression and boosted stumps on window summaries, fitted
on the TRAINING generator's train split). Calibration (slope / intercept, O/E overall and in the
alerting band), cards under each service's own suppression window (per-card PPV, cards per
patient-day, cards per caught event, per-event sensitivity, lead time), net benefit.

Writes evaluation.json, roc.svg, reliability.svg, decision_curve.svg and MODEL_CARD.md (next to
model.pt for cohort -> cohort; under <model dir>/external/<train>-to-<test>/ otherwise) and prints
the targets table.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
import tomllib

import numpy as np
import torch

from models import featurize, comparators as cmp
from models import dataset, generators
from models import evaluation as ev

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

EVERY_HOURS, FIRST_HOURS = 2.0, 1.0          # request cadence of the evaluation
TRAIN_EVERY_HOURS = 4.0                      # cadence of the simple baselines' training samples
NB_THRESHOLDS = [0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4]
# Targets (met / missed in every card)
TARGET_AUROC_GAIN, TARGET_ABSTAIN, TARGET_OE, TARGET_CARDS_PER_TP, TARGET_SENS, TARGET_LEAD_H = \
    0.05, 0.05, (0.67, 1.5), 3.0, 0.60, 6.0

NAMES = {
    "model": "model", "news2": "NEWS2 (O2, ACVPU)", "qsofa": "qSOFA", "sirs": "SIRS", "kdigo": "KDIGO stage",
    "kdigo_ratio": "creatinine / 7-day baseline", "creatinine_last": "last creatinine",
    "ctl_count": "control: measurement count", "ctl_time": "control: time since admission",
    "ctl_values_only": "control: values only (masks = filled)",
    "logistic": "logistic regression (summaries)", "stumps": "boosted stumps (summaries)",
}
KIND = {"news2": "bedside", "qsofa": "bedside", "sirs": "bedside", "kdigo": "bedside", "kdigo_ratio": "bedside",
        "creatinine_last": "bedside", "ctl_count": "control", "ctl_time": "control",
        "ctl_values_only": "control", "logistic": "simple baseline", "stumps": "simple baseline"}
BEDSIDE_CUT = {"news2": 5, "qsofa": 2, "kdigo": 1}


def score_model(model_path: str, x: np.ndarray) -> np.ndarray:
    torch.set_num_threads(1)
    module = torch.jit.load(model_path)
    out = []
    with torch.no_grad():
        for i in range(0, len(x), 4096):
            out.append(module(torch.from_numpy(np.ascontiguousarray(x[i:i + 4096]))).squeeze(1).numpy())
    return np.concatenate(out).astype(np.float64)


def values_only(x: np.ndarray) -> np.ndarray:
    """The values-only control's input: each observed-mask channel set to 1 wherever its value channel
    holds a value after forward fill (value != 0, or observed), else left 0. An empty cell is filled
    with exactly 0 (= the training mean); a real value normalising to exactly 0.0 in float32 does not
    occur with these means. A model that leans on WHEN things were measured rather than WHAT was
    measured loses discrimination here."""
    F = x.shape[2] // 2
    out = x.copy()
    out[:, :, F:] = ((x[:, :, :F] != 0) | (x[:, :, F:] > 0)).astype(np.float32)
    return out


# ================================================================================ services
def _hours(d) -> float | None:
    if d is None:
        return None
    if isinstance(d, (int, float)):
        return float(d)
    d = str(d).strip()
    for suffix, k in (("ms", 1 / 3.6e6), ("h", 1.0), ("m", 1 / 60), ("s", 1 / 3600), ("d", 24.0)):
        if d.endswith(suffix):
            return float(d[: -len(suffix)]) * k
    raise ValueError(f"duration {d!r}")


def load_services(model: str) -> list[dict]:
    """The CDS services that run this model (cds-services/*.toml): thresholds, suppression window,
    guardrails."""
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, "cds-services", "*.toml"))):
        with open(path, "rb") as f:
            s = tomllib.load(f)
        if s.get("model", {}).get("name") != model:
            continue
        g, a, t = s.get("guardrails", {}), s.get("alerts", {}), s.get("thresholds", {})
        out.append({"id": s["id"], "file": os.path.relpath(path, ROOT), "hook": s.get("hook"),
                    "warning": t.get("warning"), "critical": t.get("critical"),
                    "suppress_hours": _hours(a.get("suppress_for")) or 0.0,
                    "guardrails": {"min_observations": g.get("min_observations", 1),
                                   "max_staleness_hours": _hours(g.get("max_staleness"))}})
    return out


# ================================================================================ helpers
CADENCE_GROUP = "vitals cadence (median gap between heart-rate readings)"
CADENCE_4H = "≤ 4 h"


def vitals_cadence(spec: dict, measurements: list) -> str:
    """How often this patient's vitals were recorded: the median gap between distinct heart-rate
    times over the stay, in bands. Why: issue 21 bounds abstention on a ward with 4-hourly vitals;
    a ward that records vitals 8-12-hourly gives the gateway no complete set within 12 h and is
    meant to abstain, so the overall rate alone mixes the two."""
    names = [f["name"] for f in spec["feature"]]
    if "heart_rate" not in names:
        return "no heart rate"
    f = names.index("heart_rate")
    t = np.unique(np.array([m[1] for m in measurements if m[0] == f], dtype=np.float64))
    if len(t) < 2:
        return "no heart rate"
    gap = float(np.median(np.diff(t))) / 3600.0
    return CADENCE_4H if gap <= 4.0 else "4–8 h" if gap <= 8.0 else "> 8 h"


def _finite(o):
    """JSON has no NaN or infinity: undefined metrics are written as null."""
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, (float, np.floating)) and not np.isfinite(o):
        return None
    return o


def _json_default(o):
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def _f(v, spec=".3f"):
    if v is None:
        return "n/a"
    if isinstance(v, float) and np.isinf(v):
        return "∞"
    if isinstance(v, float) and np.isnan(v):
        return "n/a"
    return format(v, spec)


def _ci(v, spec=".3f"):
    return "n/a" if not v or v[0] is None or np.isnan(v[0]) else f"{v[0]:{spec}} to {v[1]:{spec}}"


def label_definitions() -> str:
    try:
        import importlib
        labels = importlib.import_module("models.labels")  # written in parallel: onsets from recorded data
        return (labels.__doc__ or "").strip() or "models/labels.py has no docstring."
    except ImportError:
        return ("models/labels.py is not in this checkout: onsets are the generator's own `onsets` "
                "(models/cohort/README.md).")


def _labels_only(cfg, patients, split, every_hours, first_hours):
    """Sample labels without grids (for the training prevalence)."""
    H, horizon = 3600.0, cfg["horizon_hours"] * 3600.0
    ys = []
    for r in patients.records:
        if split is not None and r["split"] != split:
            continue
        on = r["onsets"].get(cfg["outcome"])
        on = on.timestamp() if on is not None else np.nan
        admit, dis = r["admit"].timestamp(), r["discharge"].timestamp()
        end = min(dis, on) if not np.isnan(on) else dis
        t = np.arange(admit + first_hours * H, end, every_hours * H)
        ys.append((on > t) & (on <= t + horizon) if not np.isnan(on) else np.zeros(len(t), bool))
    y = np.concatenate(ys) if ys else np.zeros(0)
    return {"samples": int(len(y)), "prevalence": float(y.mean()) if len(y) else float("nan")}


# ================================================================================ run
def run(cfg: dict, out: str, *, patients=None, n: int, seed: int, shuffled: bool = False,
        train_seconds: float | None = None, train_gen: str = "cohort", test_gen: str = "cohort",
        test_patients=None, site=None, reps: int = 200, small: bool = False, out_dir: str | None = None,
        write_card: bool = True) -> dict:
    """Evaluate model.pt + manifest.toml in ``out``. ``patients``: the training generator's patients
    (train.py passes its own); ``test_patients``: the test generator's (loaded when None). Results go
    to ``out_dir`` (default: ``out`` when train_gen == test_gen, else out/external/<train>-to-<test>)."""
    t0 = time.time()
    for g in {train_gen, test_gen}:
        for part in (("cohort", "ward") if g == "both" else (g,)):
            generators.generate_fn(part)  # fail now, with the reason, not after featurizing the other one
    stump_rounds = 60 if small else 150
    if patients is None:
        patients = dataset.load_patients(cfg, n, seed, generator=train_gen)
    same = test_gen == train_gen and test_patients is None
    if same:
        test_patients, split = patients, "test"
    else:
        if test_patients is None:
            test_patients = dataset.load_patients(cfg, n, seed, generator=test_gen, site=site)
        split = None
    if out_dir is None:
        out_dir = out if test_gen == train_gen else os.path.join(out, "external", f"{train_gen}-to-{test_gen}")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out, "manifest.toml"), "rb") as f:
        manifest = tomllib.load(f)
    mean, std = np.array(manifest["input"]["mean"]), np.array(manifest["input"]["std"])
    validity = manifest.get("validity", {})
    spec, horizon = cfg["spec"], float(cfg["horizon_hours"])
    # As the gateway reads them: a value outside the training range is clamped into it, not refused
    # (implausible values were already dropped when the Bundles were featurized).
    if validity.get("range"):
        test_patients.measurements = [featurize.clamp(spec, ms, validity["range"])[0]
                                      for ms in test_patients.measurements]
    services = load_services(cfg["name"])
    warning, critical = cfg["thresholds"]
    # The thresholds the model's training chose for its alert budget (what the services are set
    # to); train.toml's fixed pair only for models without them.
    suggested = manifest.get("suggested_thresholds")
    if suggested:
        warning, critical = float(suggested["warning"]), float(suggested["critical"])
        cfg = dict(cfg, thresholds=[warning, critical])

    # ---- requests
    test = dataset.samples(cfg, test_patients, split, mean, std, every_hours=EVERY_HOURS, first_hours=FIRST_HOURS)
    y = test.y.astype(np.int64)
    pid = test.patient
    hours = test.t / 3600.0
    onset_h = test.onset / 3600.0
    recs = test_patients.records
    admit_h = np.array([recs[i]["admit"].timestamp() / 3600.0 for i in pid])
    patient_days = len(y) * EVERY_HOURS / 24.0

    # ---- abstention: manifest [validity] + the strictest guardrails of the services running the model
    guard = None
    if services:
        guard = {"min_observations": max(s["guardrails"]["min_observations"] for s in services),
                 "max_staleness_hours": min((s["guardrails"]["max_staleness_hours"] for s in services
                                             if s["guardrails"]["max_staleness_hours"] is not None), default=None)}

    def reasons_for(g):
        r = np.empty(len(y), dtype=object)
        for p in np.unique(pid):
            idx = np.flatnonzero(pid == p)
            r[idx] = cmp.abstain_reasons(validity, g, spec, test_patients.measurements[p], test.t[idx])
        return r
    reasons = reasons_for(guard)
    abst = reasons != ""
    reason_counts = {k: int(v) for k, v in zip(*np.unique(reasons[abst], return_counts=True))} if abst.any() else {}

    # ---- scores
    p_raw = score_model(os.path.join(out, "model.pt"), test.x)
    p_vo = score_model(os.path.join(out, "model.pt"), values_only(test.x))
    bed = cmp.bedside(test_patients, pid, test.t)
    summ_test = cmp.summary_features(test.x, spec)
    del test.x
    tr = dataset.samples(cfg, patients, "train", mean, std, every_hours=TRAIN_EVERY_HOURS, first_hours=FIRST_HOURS)
    Xtr, ytr = cmp.summary_features(tr.x, spec), tr.y.astype(np.int64)
    del tr
    lr = cmp.fit_logistic(Xtr, ytr, l2=1.0)
    gb = cmp.fit_stumps(Xtr, ytr, rounds=stump_rounds)
    p_lr, p_gb = cmp.predict_logistic(lr, summ_test), cmp.predict_stumps(gb, summ_test)

    model_all = ev.abstain_lowest(p_raw, abst)
    scores = {"model": model_all}
    for k in cmp.BEDSIDE:
        v = bed[k]
        scores[k] = ev.abstain_lowest(v, np.isnan(v)) if np.isnan(v).any() else v
    scores["ctl_count"] = test.observed.astype(np.float64)
    scores["ctl_time"] = hours - admit_h
    scores["ctl_values_only"] = ev.abstain_lowest(p_vo, abst)
    scores["logistic"], scores["stumps"] = p_lr, p_gb
    comps = [k for k in scores if k != "model"]

    boot = ev.cluster_bootstrap(y, scores, pid, n=reps, seed=seed)
    summ = ev.summarize_bootstrap(boot, "model")
    sc = ~abst
    scored = {}
    if sc.sum() and 0 < y[sc].sum() < sc.sum():
        sub = {k: (p_raw[sc] if k == "model" else p_vo[sc] if k == "ctl_values_only" else v[sc])
               for k, v in scores.items()}
        bs = ev.cluster_bootstrap(y[sc], sub, pid[sc], n=reps, seed=seed)
        scored = ev.summarize_bootstrap(bs, "model")

    # ---- calibration (scored requests: an abstention has no probability)
    def calib(p, mask):
        yy, pp = y[mask], p[mask]
        if len(yy) == 0:
            return {}
        c = ev.calibration_slope_intercept(yy, pp)
        return {**c, "ece": ev.ece(yy, pp), "brier": ev.brier(yy, pp),
                "oe_overall": ev.observed_expected(yy, pp),
                "oe_alerting_band": ev.observed_expected(yy, pp, mask=pp >= warning),
                "reliability": ev.reliability(yy, pp)}
    calibration = {"model": calib(p_raw, sc), "logistic": calib(p_lr, np.ones(len(y), bool)),
                   "stumps": calib(p_gb, np.ones(len(y), bool))}

    # ---- cards under each service's suppression
    cards = []
    service_list = services or [{"id": "(no service)", "file": None, "hook": None, "warning": warning,
                                 "critical": critical, "suppress_hours": 0.0, "guardrails": None}]
    for s in service_list:
        ab_s = reasons_for(s["guardrails"]) != "" if s["guardrails"] != guard else abst
        w, c = s["warning"] or warning, s["critical"] or critical
        shown = ev.simulate_cards(hours, pid, np.nan_to_num(p_raw), w, s["suppress_hours"], critical=c, abstained=ab_s)
        m = ev.card_metrics(hours, pid, shown, y, onset_h, horizon, patient_days)
        row = {"service": s["id"], "hook": s["hook"], "scorer": "model", "threshold": w, "critical": c,
               "suppress_hours": s["suppress_hours"], "abstention_rate": float(ab_s.mean()), **m}
        cards.append(row)
        for b, cut in BEDSIDE_CUT.items():
            shown_b = ev.simulate_cards(hours, pid, bed[b], cut, s["suppress_hours"])
            mb = ev.card_metrics(hours, pid, shown_b, y, onset_h, horizon, patient_days)
            cards.append({"service": s["id"], "hook": s["hook"], "scorer": f"{NAMES[b]} ≥ {cut}", "threshold": cut,
                          "critical": None, "suppress_hours": s["suppress_hours"], "abstention_rate": 0.0, **mb})

    # ---- decision curve (abstention = no action)
    nb_curves = [("model", y, np.where(abst, 0.0, p_raw)), (NAMES["logistic"], y, p_lr), (NAMES["stumps"], y, p_gb)]
    net = {nm: ev.net_benefit(yy, pp, NB_THRESHOLDS) for nm, yy, pp in nb_curves}

    # ---- subgroups (every request, abstentions lowest)
    age = np.array([recs[i]["age"] for i in pid])
    groups = {
        "age band": np.where(age < 50, "18-49", np.where(age < 70, "50-69", "70+")),
        "sex": np.array([recs[i]["sex"] for i in pid]),
        "CKD": np.array(["CKD" if recs[i]["ckd"] else "no CKD" for i in pid]),
        "COPD": np.array(["COPD" if recs[i]["copd"] else "no COPD" for i in pid]),
    }
    cadence = {p: vitals_cadence(spec, test_patients.measurements[p]) for p in np.unique(pid)}
    groups[CADENCE_GROUP] = np.array([cadence[p] for p in pid])
    subgroups = ev.subgroups(y, model_all, groups, warning)
    for row in subgroups:
        mask = groups[row["group"]] == row["level"]
        row["news2_auroc"] = ev.auroc(y[mask], bed["news2"][mask])
        row["abstention_rate"] = float(abst[mask].mean())

    # ---- per-request operating points (no suppression; kept for train.py's callers and the Rust test)
    def point(name, sc_, thr, kind):
        m = ev.threshold_metrics(y, sc_, thr)
        return {"scorer": name, "threshold": thr, "kind": kind, "sensitivity": m["sensitivity"], "ppv": m["ppv"],
                "alerts_per_true_positive": m["alerts_per_true_positive"], "alerts_per_patient_day": m["alerts"] / patient_days}
    operating_points = [point("model", model_all, warning, "warning threshold"),
                        point("model", model_all, critical, "critical threshold")]
    operating_points += [point(NAMES[b], bed[b], cut, f"conventional cut-off ≥ {cut}") for b, cut in BEDSIDE_CUT.items()]

    train_prev = _labels_only(cfg, patients, "train", EVERY_HOURS, FIRST_HOURS)
    result = {
        "model": cfg["name"], "version": cfg["version"], "shuffled_labels": shuffled,
        "generators": {"train": train_gen, "test": test_gen, "site": site,
                       "test_split": "test" if split else "all patients"},
        "cohort": {"n": n, "seed": seed, "test_patients": int(len(np.unique(pid))), "test_samples": int(len(y)),
                   "prevalence": float(y.mean()), "patient_days": patient_days,
                   "patients_with_onset": int(len(np.unique(pid[~np.isnan(onset_h)]))),
                   "every_hours": EVERY_HOURS, "first_hours": FIRST_HOURS},
        "training": {"generator": train_gen, "split": "train", **train_prev,
                     "simple_baselines_samples": int(len(ytr)), "simple_baselines_every_hours": TRAIN_EVERY_HOURS},
        "abstention": {"rate": float(abst.mean()), "abstained": int(abst.sum()), "reasons": reason_counts,
                       "positives_abstained": int((abst & (y == 1)).sum()),
                       "guardrails": guard, "validity": {k: v for k, v in validity.items() if k != "range"}},
        "auroc": summ["scorers"]["model"]["auroc"], "auroc_ci": summ["scorers"]["model"]["auroc_ci"],
        "auprc": summ["scorers"]["model"]["auprc"], "auprc_ci": summ["scorers"]["model"]["auprc_ci"],
        "all_requests": summ, "scored_requests": scored,
        "comparators": {k: {"name": NAMES[k], "kind": KIND[k]} for k in comps},
        "ece": calibration["model"].get("ece"), "brier": calibration["model"].get("brier"),
        "operating_points": operating_points,
        "calibration": calibration, "cards": cards, "net_benefit": net, "subgroups": subgroups,
        "services": services, "bootstrap": {"reps": reps, "clusters": boot["clusters"], "seed": seed},
        "values_only_control": values_only.__doc__.strip().split("\n\n")[0],
        "simple_baselines": {"features": cmp.summary_names(spec), "logistic_l2": 1.0,
                             "stumps": {"rounds": stump_rounds, "learning_rate": 0.2, "bins": 16}},
    }
    result["targets"] = targets(result)
    result["seconds"] = round(time.time() - t0, 1)
    if train_seconds is not None:
        result["train_seconds"] = round(train_seconds, 1)

    title = f"{cfg['name']} v{cfg['version']} ({train_gen} → {test_gen})"
    with open(os.path.join(out_dir, "evaluation.json"), "w") as f:
        json.dump(_finite(result), f, indent=1, default=_json_default, allow_nan=False)
        f.write("\n")
    with open(os.path.join(out_dir, "reliability.svg"), "w") as f:
        f.write(ev.reliability_svg(y[sc], p_raw[sc], f"{title}: calibration (scored requests)"))
    with open(os.path.join(out_dir, "roc.svg"), "w") as f:
        best = sorted(comps, key=lambda k: -summ["scorers"][k]["auroc"])[:4]
        f.write(ev.roc_svg([("model (abstain = lowest)", y, model_all)] + [(NAMES[k], y, scores[k]) for k in best],
                           f"{title}: ROC, every request"))
    with open(os.path.join(out_dir, "decision_curve.svg"), "w") as f:
        f.write(ev.decision_curve_svg(nb_curves, NB_THRESHOLDS, f"{title}: decision curve"))
    if write_card:
        write_model_card(os.path.join(out_dir, "MODEL_CARD.md"), cfg, manifest, result)
    print_summary(result)
    return result


def targets(r: dict) -> list[dict]:
    out = []
    d = r["all_requests"]
    # the values-only control is the model itself with its masks altered: it is reported (a drop from the
    # model's AUROC = reliance on when things were measured), not a competitor to beat
    best = max((k for k in r["comparators"] if k != "ctl_values_only"), key=lambda k: d["scorers"][k]["auroc"])
    diff = d["differences"][best]
    ok = (diff["auroc"] >= TARGET_AUROC_GAIN) and diff["auroc_ci"][0] is not None and diff["auroc_ci"][0] > 0
    out.append({"target": f"AUROC ≥ best comparator or control ({NAMES[best]}) + {TARGET_AUROC_GAIN}, paired 95 % CI of the difference above 0",
                "value": f"{diff['auroc']:+.3f} ({_ci(diff['auroc_ci'])})", "met": bool(ok)})
    a = r["abstention"]["rate"]
    out.append({"target": f"abstention ≤ {TARGET_ABSTAIN:.0%}", "value": f"{a:.1%}", "met": bool(a <= TARGET_ABSTAIN)})
    ward4 = [g for g in r["subgroups"] if g["group"] == CADENCE_GROUP and g["level"] == CADENCE_4H]
    if ward4:
        a4 = ward4[0]["abstention_rate"]
        out.append({"target": f"abstention ≤ {TARGET_ABSTAIN:.0%} where vitals are recorded at least 4-hourly "
                              f"(median gap ≤ 4 h; {ward4[0]['n']} requests)",
                    "value": f"{a4:.1%}", "met": bool(a4 <= TARGET_ABSTAIN)})
    oe = r["calibration"]["model"].get("oe_alerting_band", {}).get("o_e", float("nan"))
    out.append({"target": f"O/E in the alerting band (p ≥ warning) within {TARGET_OE[0]}–{TARGET_OE[1]}",
                "value": _f(oe, ".2f"), "met": bool(np.isfinite(oe) and TARGET_OE[0] <= oe <= TARGET_OE[1])})
    for c in r["cards"]:
        if c["scorer"] != "model":
            continue
        okc = c["cards_per_tp"] <= TARGET_CARDS_PER_TP and c["sensitivity_per_event"] >= TARGET_SENS
        out.append({"target": f"{c['service']} at {c['threshold']} (suppress {c['suppress_hours']:.0f} h): ≤ {TARGET_CARDS_PER_TP:.0f} cards per caught event with per-event sensitivity ≥ {TARGET_SENS:.0%}",
                    "value": f"{_f(c['cards_per_tp'], '.1f')} cards/TP, sensitivity {_f(c['sensitivity_per_event'], '.2f')}",
                    "met": bool(okc)})
    leads = [c["median_lead_hours"] for c in r["cards"] if c["scorer"] == "model"]
    lead = leads[0] if leads else float("nan")
    out.append({"target": f"median lead ≥ {TARGET_LEAD_H:.0f} h ({r['cards'][0]['service'] if r['cards'] else ''})",
                "value": f"{_f(lead, '.1f')} h", "met": bool(np.isfinite(lead) and lead >= TARGET_LEAD_H)})
    return out


def print_summary(r: dict) -> None:
    d = r["all_requests"]
    c = r["cohort"]
    print(f"TEST {r['model']} v{r['version']} {r['generators']['train']} → {r['generators']['test']} "
          f"({c['test_samples']} requests, {c['test_patients']} patients, prevalence {c['prevalence']:.3f}; "
          f"training prevalence {r['training']['prevalence']:.3f}); abstained {r['abstention']['rate']:.1%}")
    print(f"  {'scorer':<40} {'AUROC':>6} {'95% CI':>15} {'AUPRC':>6}  model − scorer (paired 95% CI)")
    for k, m in d["scorers"].items():
        diff = d["differences"].get(k)
        dd = f"{diff['auroc']:+.3f} ({_ci(diff['auroc_ci'])})" if diff else ""
        print(f"  {NAMES[k]:<40} {m['auroc']:6.3f} {_ci(m['auroc_ci']):>15} {m['auprc']:6.3f}  {dd}")
    cm = r["calibration"]["model"]
    if cm:
        print(f"  calibration (scored): slope {cm['slope']:.2f} intercept {cm['intercept']:.2f} citl {cm['citl']:.2f} "
              f"O/E {_f(cm['oe_overall']['o_e'], '.2f')} band O/E {_f(cm['oe_alerting_band']['o_e'], '.2f')}")
    for cd in r["cards"]:
        if cd["scorer"] == "model":
            print(f"  cards {cd['service']}: {cd['cards']} cards, PPV {_f(cd['ppv_per_card'], '.2f')}, "
                  f"{_f(cd['cards_per_patient_day'], '.2f')}/patient-day, {_f(cd['cards_per_tp'], '.1f')}/caught event, "
                  f"sensitivity {cd['events_caught']}/{cd['events']}, median lead {_f(cd['median_lead_hours'], '.1f')} h")
    print("  TARGETS")
    for t in r["targets"]:
        print(f"  {'met   ' if t['met'] else 'MISSED'} {t['target']}: {t['value']}")


def write_model_card(path, cfg, manifest, r):
    spec = cfg["spec"]
    val = manifest.get("validity", {})
    ranges = val.get("range", {})
    window = spec["window_hours"]
    inputs = "\n".join(
        f"| {f['display']} | {', '.join(f['loinc'])} | {f['unit']} | {f['aggregate']} | "
        f"{'—' if f['max_age_hours'] is None else str(f['max_age_hours']) + ' h'} | "
        f"{' – '.join(str(x) for x in ranges.get(f['name'], [])) or '—'} |"
        for f in spec["feature"])
    need = max(int(val.get("min_measurements", 0)), int((r["abstention"]["guardrails"] or {}).get("min_observations", 1)))
    stale = [h for h in (val.get("max_staleness_hours"), (r["abstention"]["guardrails"] or {}).get("max_staleness_hours"))
             if h is not None]
    d, s = r["all_requests"], r["scored_requests"]
    rows = []
    for k in ["model"] + list(r["comparators"]):
        m, diff = d["scorers"][k], d["differences"].get(k)
        ms = s.get("scorers", {}).get(k) if s else None
        rows.append({"scorer": NAMES[k], "kind": "this model" if k == "model" else KIND[k],
                     "auroc": m["auroc"], "ci": _ci(m["auroc_ci"]), "auprc": m["auprc"],
                     "diff": "—" if diff is None else f"{diff['auroc']:+.3f}", "diff_ci": "—" if diff is None else _ci(diff["auroc_ci"]),
                     "scored": None if ms is None else ms["auroc"]})
    disc = ev.markdown_table(rows, [("scorer", "Scorer", ""), ("kind", "Kind", ""), ("auroc", "AUROC (every request)", ".3f"),
                                    ("ci", "95 % CI", ""), ("auprc", "AUPRC", ".3f"),
                                    ("diff", "Model − scorer", ""), ("diff_ci", "paired 95 % CI", ""),
                                    ("scored", "AUROC (scored requests)", ".3f")])
    cal_rows = []
    for k, c in r["calibration"].items():
        if not c:
            continue
        cal_rows.append({"scorer": NAMES[k], "slope": c["slope"], "intercept": c["intercept"], "citl": c["citl"],
                         "oe": c["oe_overall"]["o_e"], "band": c["oe_alerting_band"]["o_e"],
                         "band_n": c["oe_alerting_band"]["n"], "ece": c["ece"]})
    cal = ev.markdown_table(cal_rows, [("scorer", "Scorer", ""), ("slope", "Slope", ".2f"), ("intercept", "Intercept", ".2f"),
                                       ("citl", "Intercept (slope 1)", ".2f"), ("oe", "O/E overall", ".2f"),
                                       ("band", f"O/E p ≥ {cfg['thresholds'][0]}", ".2f"), ("band_n", "requests in band", "d"),
                                       ("ece", "ECE", ".3f")])
    cards = ev.markdown_table(r["cards"], [
        ("service", "Service", ""), ("scorer", "Scorer", ""), ("threshold", "Threshold", ".3g"),
        ("suppress_hours", "Suppression (h)", ".0f"), ("cards", "Cards", "d"), ("ppv_per_card", "PPV per card", ".2f"),
        ("cards_per_patient_day", "Cards / patient-day", ".2f"), ("cards_per_tp", "Cards / caught event", ".1f"),
        ("events_caught", "Events caught", "d"), ("events", "Events", "d"),
        ("sensitivity_per_event", "Per-event sensitivity", ".2f"), ("median_lead_hours", "Median lead (h)", ".1f")])
    nb_rows = []
    for nm, rr in r["net_benefit"].items():
        nb_rows.append({"scorer": nm, **{f"t{x['threshold']}": x["net_benefit"] for x in rr}})
    nb_rows.append({"scorer": "treat all", **{f"t{x['threshold']}": x["treat_all"] for x in next(iter(r["net_benefit"].values()))}})
    nb = ev.markdown_table(nb_rows, [("scorer", "Net benefit at threshold probability", "")] +
                           [(f"t{t}", f"{t}", ".4f") for t in NB_THRESHOLDS])
    subs = ev.markdown_table(r["subgroups"], [
        ("group", "Group", ""), ("level", "Level", ""), ("n", "Requests", "d"), ("positives", "Positive", "d"),
        ("auroc", "AUROC", ".3f"), ("news2_auroc", "NEWS2 AUROC", ".3f"), ("abstention_rate", "Abstained", ".2f"),
        ("sensitivity", "Sensitivity", ".2f"), ("ppv", "PPV", ".2f")])
    explanations = ("Explanations are the model's own `attribute` method (one pass): each measurement is credited "
                    "with the gradient times the change it brought against the value carried before it, summed over "
                    "its cells by the gateway and told as risk points"
                    if manifest.get("explanation") == "attribute" else
                    "Explanations are occlusion-based (risk recomputed with one observation left out)")
    targets = ev.markdown_table([{"t": t["target"], "v": t["value"], "m": "met" if t["met"] else "**missed**"}
                                 for t in r["targets"]], [("t", "Target", ""), ("v", "Measured", ""), ("m", "", "")])
    reasons = ", ".join(f"{k}: {v}" for k, v in r["abstention"]["reasons"].items()) or "none"
    c, g, tr = r["cohort"], r["generators"], r["training"]
    text = f"""# Model card: `{cfg['name']}` v{cfg['version']} — {g['train']} → {g['test']}

> **Trained and evaluated on synthetic data only. Not for clinical use.** Every number below was
> measured by `models/evaluate.py` on simulated patients; none describes real patients, and a good
> number here says the model learned the simulator, not medicine. Generated — do not edit by hand.

## Intended use
{cfg['description']}

Decision support inside the EHR (CDS Hooks card + SMART app) for adult inpatients on general wards.
The clinician decides. Not for ICU patients, children, pregnancy, or as a diagnostic test.

## Output
{manifest['output']['meaning']} — {manifest['output']['calibration']}. Horizon {cfg['horizon_hours']} h.

## Operational label definitions
Label of a request at time t: the outcome's onset falls in (t, t + {cfg['horizon_hours']} h]; requests stop at the
onset (a patient is not predicted once it has happened). Onsets:

{label_definitions()}

## Input requirements (`models/{cfg['name']}/features.toml`, `manifest.toml` [validity])
Window {window} h in {spec['steps']} steps of {spec['step_minutes']} min; a value and an observed-mask channel per signal.

| Signal | LOINC | Unit (converted to) | Per-step aggregate | Carried forward at most | Range seen in training |
|---|---|---|---|---|---|
{inputs}

**Abstains** (no score, and says why) only without a complete set of core observations
({', '.join(spec.get('require_recent', {}).get('features', [])) or 'none declared'}, each within {spec.get('require_recent', {}).get('hours', '—')} h){', when ' + ', '.join(manifest['validity']['required']) + ' is missing' if manifest['validity']['required'] else ''},
or when the newest measurement is older than {manifest['validity']['max_staleness_hours']} h. A value outside
physiological limits (`models/terminology.toml`) is dropped and counted; a value outside the range seen in
training is read clamped to that range and counted.

## Data
Tested on **{g['test']}** ({g['test_split']}{'' if g['site'] is None else ', site ' + str(g['site'])}): {c['test_patients']} patients,
{c['test_samples']} requests (every {c['every_hours']:.0f} h from admission + {c['first_hours']:.0f} h), {c['patient_days']:.0f} patient-days,
{c['patients_with_onset']} patients with an onset. Trained on **{g['train']}** (train split).

| | Requests | Prevalence (label = 1) |
|---|---:|---:|
| training ({g['train']}, train split, same cadence) | {tr['samples']} | {tr['prevalence']:.3f} |
| test ({g['test']}) | {c['test_samples']} | {c['prevalence']:.3f} |

## Abstention
{r['abstention']['rate']:.1%} of requests were not scored ({r['abstention']['abstained']}; {r['abstention']['positives_abstained']} of them
positive). Reasons: {reasons}. Every metric on every request counts an abstention as "no alert": it ranks
below every real score (abstentions tie among themselves). The last column below gives the scored requests only.

## Discrimination, against every comparator and control
Patient-clustered bootstrap ({r['bootstrap']['reps']} resamples of {r['bootstrap']['clusters']} patients); every scorer
is evaluated on the same resamples, so the CI of "model − scorer" is paired. Bedside scores are computed from the
same recorded Observations at the same time (NEWS2 with oxygen = O2 flow 3151-8 > 0 or FiO2 3150-0 > 21 %, and ACVPU).
Controls that expose shortcuts: in-window measurement count; time since admission; the model re-scored with its
observed-mask channels set to 1 wherever a forward-filled value exists (values only). Simple baselines: L2 logistic
regression and boosted stumps on last / min / max / mean / 6-h slope / hours since last per signal, fitted on the
training generator's train split.

{disc}

![ROC](roc.svg)

## Calibration (scored requests)
Logistic recalibration fit logit P(y) = a + b·logit(p): slope b (1 = right spread; < 1 = too extreme), intercept a;
"intercept (slope 1)" is calibration-in-the-large. O/E = observed events / sum of predicted risks.

{cal}

![Reliability](reliability.svg)

## Cards under each service's own suppression
Each request is a hook call; a card is shown when p ≥ the service's warning threshold, not abstained, and no card was
shown for the patient within the service's suppression window (an escalation warning → critical is shown). PPV per
card = share of cards followed by the onset within {cfg['horizon_hours']} h; an event is caught when a card came in the
{cfg['horizon_hours']} h before it; cards per caught event = all cards / events caught; lead = onset − first such card.
Bedside scores at their conventional cut-offs under the same suppression, for comparison.

{cards}

## Net benefit (decision curve; abstention = no action)
{nb}

![Decision curve](decision_curve.svg)

## Subgroups (every request; model at the warning threshold {cfg['thresholds'][0]})
{subs}

## Targets
{targets}

## Recalibration plan
Risks are calibrated to the simulator's case mix. Before any use a site runs the model silently (shadow mode) on its
own patients, collects outcomes by the operational definitions above, and refits the calibration with
`python -m models.recalibrate` (logistic recalibration of intercept and slope on logit(p), checked on a held-out
period: slope within 0.8–1.2, O/E in the alerting band within 0.67–1.5). The card and the thresholds are re-derived
from the recalibrated risks; the model is not promoted if discrimination against the comparators above is not met locally.

## Limitations
- Synthetic training and test data only; real performance is unknown until a local retrospective and silent evaluation.
- Inputs are Observations only (no medications, fluid balance, urine output, notes).
- Requests are every {c['every_hours']:.0f} h; real hook calls are irregular (patient-view when the chart is opened,
  order-sign when an order is signed), so the card numbers are estimates of the suppression's effect, not of a real ward's.
- {explanations}: they show what moved this model, not what causes the disease.

## Reproduce
`.venv/bin/python -m models.evaluate {cfg['name']} --train-gen {g['train']} --test-gen {g['test']} --n {c['n']} --seed {c['seed']}`
(model sha256 `{manifest['sha256']}`).
"""
    with open(path, "w") as f:
        f.write(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--version", help="model version folder (default: train.toml's version)")
    ap.add_argument("--model-dir", help="folder with model.pt + manifest.toml (default models/<model>/<version>)")
    ap.add_argument("--train-gen", default="cohort", help="generator the model was trained on (default cohort)")
    ap.add_argument("--test-gen", default=None, help="generator to test on (default: the training one)")
    ap.add_argument("--site", default=None, help="test generator's site, where it has sites")
    ap.add_argument("--n", type=int, default=None, help="patients per generator (default 3000; --small 200)")
    ap.add_argument("--seed", type=int, default=20260201)
    ap.add_argument("--reps", type=int, default=None, help="bootstrap resamples (default 200; --small 50)")
    ap.add_argument("--small", action="store_true", help="n 200, 50 resamples, 60 boosting rounds (CI smoke run)")
    ap.add_argument("--out", help="where to write the results (default: next to model.pt, or external/<train>-to-<test>/)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = dataset.load_config(args.model)
    if args.version:
        cfg["version"] = args.version
    out = args.model_dir or os.path.join(HERE, args.model, cfg["version"])
    if not os.path.exists(os.path.join(out, "model.pt")):
        ap.error(f"no model.pt in {out}")
    n = args.n or (200 if args.small else 3000)
    reps = args.reps or (50 if args.small else 200)
    test_gen = args.test_gen or args.train_gen
    try:
        run(cfg, out, n=n, seed=args.seed, train_gen=args.train_gen, test_gen=test_gen, site=args.site,
            reps=reps, small=args.small, out_dir=args.out)
    except generators.GeneratorUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
