"""Cohort -> labelled samples for one model, through the same feature spec the gateway reads.

Shared by train.py and evaluate.py. A sample is (patient, reference time t): the input is the
model's grid at t (models/featurize.py), the label is whether the outcome's onset falls in
(t, t + horizon]; reference times run from `first_sample_hours` after admission to the earlier
of discharge and onset (a patient is not predicted once the outcome has happened). Baseline
scores are computed at the same t from the same measurements, as the gateway shows them.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field

import numpy as np

from models import baselines, featurize, generators

HERE = os.path.dirname(os.path.abspath(__file__))

HOUR = 3600.0
# Vital signs older than this are "not recorded" for the bedside scores (the services' staleness).
VITALS_MAX_AGE_H = 6.0
LABS_MAX_AGE_H = 24.0


def load_config(name: str) -> dict:
    with open(os.path.join(HERE, name, "train.toml"), "rb") as f:
        cfg = tomllib.load(f)
    cfg["name"] = name
    # A version may bring its own spec (train.toml `features = "3.0.0/features.toml"`).
    cfg["spec_path"] = os.path.join(HERE, name, cfg.get("features", "features.toml"))
    cfg["spec"] = featurize.load_spec(cfg["spec_path"])
    return cfg


class Progress:
    """A one-line progress bar on stderr (no dependencies; quiet when not a terminal)."""

    def __init__(self, total: int, label: str):
        self.total, self.label, self.start, self.last = max(total, 1), label, time.time(), -1.0
        self.tty = sys.stderr.isatty()
        self.done = False

    def update(self, done: int, extra: str = ""):
        if self.done:
            return
        self.done = done >= self.total
        now = time.time()
        if done < self.total and now - self.last < 0.2:
            return
        self.last = now
        frac = done / self.total
        bar = "#" * int(frac * 30)
        line = f"\r{self.label:<12} [{bar:<30}] {done}/{self.total} {now - self.start:5.1f}s {extra}"
        if self.tty:
            sys.stderr.write(line)
            if done >= self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()
        elif done >= self.total:
            sys.stderr.write(line.strip("\r") + "\n")


# The bedside scores' inputs, whatever the model reads (NEWS2 needs oxygen and ACVPU, KDIGO
# creatinine): extracted from every Bundle by the same rules as the model's features, each a
# concept of models/terminology.toml, so the comparators read every code, unit and answer variant
# the gateway and the models read (GCS as ACVPU, SpO2 20564-1, BP panel components, ...).
BEDSIDE_SPEC_TOML = """
window_hours = 168
step_minutes = 60
[[feature]]
name = "heart_rate"
concept = "heart_rate"
unit = "/min"
[[feature]]
name = "respiratory_rate"
concept = "respiratory_rate"
unit = "/min"
[[feature]]
name = "temperature"
concept = "temperature"
unit = "Cel"
[[feature]]
name = "systolic_bp"
concept = "systolic_bp"
unit = "mm[Hg]"
[[feature]]
name = "spo2"
concept = "spo2"
unit = "%"
[[feature]]
name = "consciousness_not_alert"
concept = "consciousness"
unit = "1"
[feature.coded_values]
"248234008" = 0.0
"300202002" = 1.0
"450847001" = 1.0
"450848006" = 1.0
"422768004" = 1.0
[[feature]]
name = "wbc"
concept = "wbc"
unit = "10*3/uL"
[[feature]]
name = "creatinine"
concept = "creatinine"
unit = "mg/dL"
molar_mass = 113.12
[[feature]]
name = "o2_flow"
concept = "o2_flow"
unit = "L/min"
[[feature]]
name = "fio2"
concept = "fio2"
unit = "%"
"""


def bedside_spec() -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(BEDSIDE_SPEC_TOML)
    try:
        return featurize.load_spec(f.name)
    finally:
        os.unlink(f.name)


@dataclass
class Patients:
    """The cohort with each patient's measurements extracted once."""
    records: list
    measurements: list  # per patient: [(feature, t, value, id)] sorted by t
    # per patient: the bedside scores' inputs [(feature of bedside_spec(), t, value, id)]; None
    # when loaded by an older caller
    bedside: list | None = None
    generator: str = "cohort"
    site: object = None
    n: int = 0
    seed: int = 0


GENERATORS = ("cohort", "ward", "both")


def generate_records(gen: str, n: int, seed: int, site=None) -> list:
    """Patients from a named generator (models/generators.py): "cohort", "ward", or "both" (half of
    each, the ward's patients after the cohort's; same record keys)."""
    if gen == "both":
        return (generators.load("cohort", n - n // 2, seed, site=site)
                + generators.load("ward", n // 2, seed, site=site))
    return generators.load(gen, n, seed, site=site)


def load_patients(cfg: dict, n: int, seed: int, generator: str = "cohort", site=None,
                  gen: str | None = None) -> Patients:
    """n patients of the named generator (models/generators.py; default the cohort, as before),
    each Bundle reduced to the model's measurements and the bedside scores' inputs. ``gen`` is an
    alias of ``generator`` (train.py's --train-gen)."""
    generator = gen or generator
    records = generate_records(generator, n, seed, site=site)
    spec, bspec = cfg["spec"], bedside_spec()
    bar = Progress(len(records), "featurize")
    meas, bed = [], []
    for i, r in enumerate(records):
        found, _rejected = featurize.extract(spec, r["bundle"])
        meas.append(found)
        bed.append(featurize.extract(bspec, r["bundle"])[0])
        r["bundle"] = None  # the measurements are all that is needed from here on; free memory
        bar.update(i + 1)
    return Patients(records, meas, bed, generator, site, n, seed)


def normalisation(cfg: dict, patients: Patients, split: str = "train"):
    """Per-feature mean/std of the training split's measurements (canonical units, after the
    feature's transform)."""
    feats = cfg["spec"]["feature"]
    vals = [[] for _ in feats]
    for r, ms in zip(patients.records, patients.measurements):
        if r["split"] == split:
            for f, _t, v, _id in ms:
                mv = featurize.model_value(feats[f], v)
                if mv is not None:
                    vals[f].append(mv)
    mean = [round(float(np.mean(v)), 6) if v else 0.0 for v in vals]
    std = [round(max(float(np.std(v)), 1e-3), 6) if v else 1.0 for v in vals]
    return np.array(mean), np.array(std)


def training_ranges(cfg: dict, patients: Patients, split: str = "train") -> dict:
    """Per feature, the range of values seen in training (0.05th-99.95th percentile, widened by 10%
    of the spread): outside it the model extrapolates, so the manifest declares it and the gateway
    abstains there."""
    out = {}
    for f, feat in enumerate(cfg["spec"]["feature"]):
        v = np.array([m[2] for r, ms in zip(patients.records, patients.measurements)
                      if r["split"] == split for m in ms if m[0] == f])
        if len(v) == 0 or feat["coded_values"]:
            continue
        lo, hi = np.percentile(v, [0.05, 99.95])
        pad = 0.1 * (hi - lo)
        lo, hi = lo - pad, hi + pad
        if v.min() >= 0:
            lo = max(lo, 0.0)  # counts and concentrations are not negative
        if feat["unit"] == "%":
            hi = min(hi, 100.0)
        out[feat["name"]] = [round(float(lo), 2), round(float(hi), 2)]
    return out


@dataclass
class Samples:
    x: np.ndarray          # float32 [N, steps, channels]
    y: np.ndarray          # int8 [N]
    patient: np.ndarray    # int [N], index into records
    t: np.ndarray          # float64 [N], Unix seconds
    onset: np.ndarray      # float64 [N], the patient's onset (nan if none)
    observed: np.ndarray   # int [N], in-window measurements


def samples(cfg: dict, patients: Patients, split: str | None, mean, std, every_hours: float | None = None,
            first_hours: float | None = None) -> Samples:
    """split None: every patient (a test generator other than the training one is all test data).
    first_hours: first reference time after admission (default the model's first_sample_hours)."""
    spec, outcome, horizon = cfg["spec"], cfg["outcome"], cfg["horizon_hours"] * HOUR
    every = (every_hours or cfg["sample_every_hours"]) * HOUR
    first = cfg["first_sample_hours"] if first_hours is None else first_hours
    window = spec["window_hours"] * HOUR
    xs, ys, ps, ts, os_, obs = [], [], [], [], [], []
    chosen = [i for i, r in enumerate(patients.records) if split is None or r["split"] == split]
    bar = Progress(len(chosen), f"{split or 'all'} set")
    for k, i in enumerate(chosen):
        r = patients.records[i]
        admit, discharge = r["admit"].timestamp(), r["discharge"].timestamp()
        onset = r["onsets"].get(outcome)
        onset = onset.timestamp() if onset is not None else np.nan
        end = min(discharge, onset) if not np.isnan(onset) else discharge
        times = np.arange(admit + first * HOUR, end, every)
        if len(times) == 0:
            continue
        ms = patients.measurements[i]
        xs.append(featurize.grids(spec, mean, std, ms, times))
        ys.append(((onset > times) & (onset <= times + horizon)).astype(np.int8) if not np.isnan(onset)
                  else np.zeros(len(times), dtype=np.int8))
        ps.append(np.full(len(times), i))
        ts.append(times)
        os_.append(np.full(len(times), onset))
        mt = np.array([m[1] for m in ms]) if ms else np.zeros(0)
        obs.append(np.array([int(((mt >= t - window) & (mt < t)).sum()) for t in times]))
        bar.update(k + 1)
    bar.update(len(chosen))
    return Samples(np.concatenate(xs), np.concatenate(ys), np.concatenate(ps), np.concatenate(ts),
                   np.concatenate(os_), np.concatenate(obs))


def _latest(ms, name_to_f, name, t, max_age_h):
    f = name_to_f.get(name)
    if f is None:
        return None
    best = None
    for ff, mt, v, _ in ms:
        if ff == f and t - max_age_h * HOUR <= mt < t:
            best = v
    return best


def baseline_scores(cfg: dict, patients: Patients, s: Samples) -> dict:
    """Each bedside score at each sample, from the model's own inputs, as the gateway shows it:
    NEWS2 (SpO2 scale 2 for patients with hypercapnic respiratory failure), qSOFA, SIRS, KDIGO stage."""
    names = {f["name"]: i for i, f in enumerate(cfg["spec"]["feature"])}
    out = {"news2": [], "qsofa": [], "sirs": [], "kdigo": [], "kdigo_ratio": []}
    by_patient = {}
    for i, (p, t) in enumerate(zip(s.patient, s.t)):
        by_patient.setdefault(p, []).append(i)
    results = [None] * len(s.t)
    for p, idx in by_patient.items():
        ms = patients.measurements[p]
        rec = patients.records[p]
        for i in idx:
            t = s.t[i]
            v = {k: _latest(ms, names, k, t, VITALS_MAX_AGE_H)
                 for k in ("respiratory_rate", "spo2", "systolic_bp", "heart_rate", "temperature")}
            c = _latest(ms, names, "consciousness_not_alert", t, VITALS_MAX_AGE_H)
            alert = None if c is None else c < 0.5
            wbc = _latest(ms, names, "wbc", t, LABS_MAX_AGE_H)
            row = {}
            row["news2"] = baselines.news2({**v, "alert": alert, "on_oxygen": None},
                                           scale=2 if rec["hypercapnic"] else 1)["total"]
            row["qsofa"] = baselines.qsofa({**v, "alert": alert})["total"]
            row["sirs"] = baselines.sirs({**v, "wbc": wbc})["total"]
            if "creatinine" in names:
                f = names["creatinine"]
                from datetime import datetime, timezone
                series = [(datetime.fromtimestamp(mt, timezone.utc), val) for ff, mt, val, _ in ms
                          if ff == f and t - 7 * 24 * HOUR <= mt < t]
                now = datetime.fromtimestamp(t, timezone.utc)
                k = baselines.kdigo(series, now)
                row["kdigo"] = k["stage"] or 0
                # KDIGO's own quantity as a continuous score: latest / 7-day baseline.
                row["kdigo_ratio"] = k["ratio"] if k["ratio"] is not None else 1.0
            else:
                row["kdigo"], row["kdigo_ratio"] = 0, 1.0
            results[i] = row
    for k in out:
        out[k] = np.array([r[k] for r in results], dtype=np.float64)
    return out
