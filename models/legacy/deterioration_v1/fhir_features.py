#!/usr/bin/env python3
"""Reference featurizer for the deterioration model (Python side of the Rust/Python parity contract).

Given a CDS Hooks request (prefetch "vitals" = FHIR Bundle of Observations) and a `now` instant,
build the float32 [48, 12] input tensor exactly as described in features.toml:

* Only Observations with status final / amended / corrected count.
* Time = effectiveDateTime (or effectiveInstant); it must carry a time and a timezone, otherwise the
  Observation is skipped. Only measurements with now - 48 h <= time < now are used; bin
  t = floor((time - (now - 48 h)) / 60 min), so bin 47 is the last hour before now.
* Feature matching by LOINC code (system http://loinc.org) from features.toml. Systolic BP is also taken
  from a component coded 8480-6 inside an Observation coded 85354-9 (BP panel).
* Temperature: valueQuantity with code "[degF]" (or unit "°F"/"degF"/"[degF]") is converted to Cel.
* Consciousness (67775-7 / 80288-4): valueCodeableConcept; a coding SNOMED 248234008 (Alert) -> 0.0,
  any other coded value -> 1.0; no coded value -> skipped.
* Value in a bin = last measurement in the bin by time (ties: the one later in the Bundle wins).
  Empty bins are forward-filled from the latest earlier observed bin (no maximum age); bins before the
  first in-window measurement get the feature mean. Values are normalised (x - mean) / std with the
  manifest's mean/std (so mean-filled bins are exactly 0.0). Channels 6..11 are the observed masks.

Usable as a library (train.py imports the binning code) and as a CLI, from the repository root:
    .venv/bin/python -m models.legacy.deterioration_v1.fhir_features tests/fixtures/patients/stable.json \
        --now 2026-01-01T12:00:00Z [--dump tensor.json]

Frozen with deterioration 1.0.0 (see models/README.md); the pieces the live pipeline shares come from
the package: times from models.fhir_time (the gateway's acceptance rules), NEWS2 from models.baselines.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import tomllib

import numpy as np

from models import baselines
from models.fhir_time import parse_instant

HERE = os.path.dirname(os.path.abspath(__file__))
# The model this pipeline trained lives where the gateway loads it, not here.
MODEL_ROOT = os.path.join(os.path.dirname(os.path.dirname(HERE)), "deterioration")
DEFAULT_SPEC = os.path.join(MODEL_ROOT, "features.toml")
DEFAULT_MODEL_DIR = os.path.join(MODEL_ROOT, "1.0.0")

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
SNOMED_ALERT = "248234008"
BP_PANEL = "85354-9"
VALID_STATUS = {"final", "amended", "corrected"}
FAHRENHEIT_CODES = {"[degF]"}
FAHRENHEIT_UNITS = {"°F", "degF", "[degF]"}


# ----------------------------------------------------------------------------- spec / manifest
def load_spec(path: str = DEFAULT_SPEC) -> dict:
    with open(path, "rb") as f:
        spec = tomllib.load(f)
    spec["n_features"] = len(spec["feature"])
    spec["n_steps"] = int(spec["window_hours"] * 60 // spec["step_minutes"])
    spec["step_seconds"] = int(spec["step_minutes"]) * 60
    spec["names"] = [f["name"] for f in spec["feature"]]
    return spec


def load_manifest(model_dir: str = DEFAULT_MODEL_DIR) -> dict:
    with open(os.path.join(model_dir, "manifest.toml"), "rb") as f:
        return tomllib.load(f)


# ----------------------------------------------------------------------------- core binning
def bin_measurements(measurements, spec: dict):
    """measurements: iterable of (feature_idx, seconds_since_window_start, value).

    Iteration order is the tie-break for equal timestamps (later wins). Measurements outside
    [0, window) are ignored. Returns (raw [T, F] float64 with NaN where unobserved, mask [T, F] float64).
    """
    T, F, step = spec["n_steps"], spec["n_features"], spec["step_seconds"]
    raw = np.full((T, F), np.nan)
    mask = np.zeros((T, F))
    best_time = np.full((T, F), -np.inf)
    for f, s, v in measurements:
        if not (0 <= s < T * step):
            continue
        t = int(math.floor(s / step))
        if s >= best_time[t, f]:  # last by time; equal time -> later in input wins
            best_time[t, f] = s
            raw[t, f] = v
            mask[t, f] = 1.0
    return raw, mask


def build_tensor(raw: np.ndarray, mask: np.ndarray, mean, std) -> np.ndarray:
    """Forward-fill, mean-fill before first observation, normalise, append masks -> float32 [T, 2F]."""
    T, F = raw.shape
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    vals = np.empty((T, F))
    for f in range(F):
        last = mean[f]
        for t in range(T):
            if mask[t, f] > 0:
                last = raw[t, f]
            vals[t, f] = last
    norm = (vals - mean) / std
    return np.concatenate([norm, mask], axis=1).astype(np.float32)


def last_values(measurements, spec: dict) -> list:
    """Last in-window measurement per feature (None if none) -- used for NEWS2."""
    T, step = spec["n_steps"], spec["step_seconds"]
    out = [None] * spec["n_features"]
    best = [-math.inf] * spec["n_features"]
    for f, s, v in measurements:
        if 0 <= s < T * step and s >= best[f]:
            best[f], out[f] = s, v
    return out


# ----------------------------------------------------------------------------- NEWS2 (scale 1, air)
def news2_from_last(last: list) -> int:
    """NEWS2 total of the last in-window values (``last`` in features.toml order: hr, rr, spo2, temp,
    sbp, not_alert), SpO2 scale 1, patient assumed on air; missing parameters score 0."""
    hr, rr, spo2, temp, sbp, na = last
    vitals = {"heart_rate": hr, "respiratory_rate": rr, "spo2": spo2, "temperature": temp,
              "systolic_bp": sbp, "alert": None if na is None else na < 0.5}
    return baselines.news2(vitals, scale=1)["total"]


# ----------------------------------------------------------------------------- FHIR parsing
def _loinc_codes(codeable) -> list:
    if not isinstance(codeable, dict):
        return []
    return [c.get("code") for c in codeable.get("coding", []) or []
            if isinstance(c, dict) and c.get("system") == LOINC and c.get("code")]


def _quantity(q, feature_name):
    if not isinstance(q, dict):
        return None
    v = q.get("value")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    if feature_name == "temperature" and (q.get("code") in FAHRENHEIT_CODES or
                                          (q.get("unit") in FAHRENHEIT_UNITS)):
        v = (v - 32.0) * 5.0 / 9.0
    return v


def _consciousness(cc):
    if not isinstance(cc, dict):
        return None
    codings = [c for c in cc.get("coding", []) or [] if isinstance(c, dict) and c.get("code")]
    if not codings:
        return None
    if any(c.get("system") == SNOMED and c.get("code") == SNOMED_ALERT for c in codings):
        return 0.0
    return 1.0


def observations(request: dict) -> list:
    bundle = (request.get("prefetch") or {}).get("vitals") or {}
    out = []
    for e in bundle.get("entry", []) or []:
        r = (e or {}).get("resource") or {}
        if r.get("resourceType") == "Observation":
            out.append(r)
    return out


def extract_measurements(request: dict, now: dt.datetime, spec: dict) -> list:
    """-> list of (feature_idx, seconds_since_window_start, value) in Bundle order."""
    code_to_feature = {}
    for i, f in enumerate(spec["feature"]):
        for c in f["loinc"]:
            code_to_feature[c] = i
    sbp_idx = spec["names"].index("systolic_bp")
    start = now - dt.timedelta(hours=spec["window_hours"])
    out = []
    for obs in observations(request):
        if obs.get("status") not in VALID_STATUS:
            continue
        when = parse_instant(obs.get("effectiveDateTime")) or parse_instant(obs.get("effectiveInstant"))
        if when is None:
            continue
        s = (when - start).total_seconds()
        codes = _loinc_codes(obs.get("code"))
        for c in codes:
            if c in code_to_feature:
                fi = code_to_feature[c]
                name = spec["names"][fi]
                if name == "consciousness_not_alert":
                    v = _consciousness(obs.get("valueCodeableConcept"))
                else:
                    v = _quantity(obs.get("valueQuantity"), name)
                if v is not None:
                    out.append((fi, s, v))
                break
        if BP_PANEL in codes:
            for comp in obs.get("component", []) or []:
                if "8480-6" in _loinc_codes((comp or {}).get("code")):
                    v = _quantity(comp.get("valueQuantity"), "systolic_bp")
                    if v is not None:
                        out.append((sbp_idx, s, v))
    return out


def featurize(request: dict, now: dt.datetime, spec: dict | None = None, manifest: dict | None = None):
    """-> (tensor float32 [48, 12], measurements, last_values)."""
    spec = spec or load_spec()
    manifest = manifest or load_manifest()
    meas = extract_measurements(request, now, spec)
    raw, mask = bin_measurements(meas, spec)
    x = build_tensor(raw, mask, manifest["input"]["mean"], manifest["input"]["std"])
    return x, meas, last_values(meas, spec)


def predict(x: np.ndarray, model_dir: str = DEFAULT_MODEL_DIR) -> float:
    import torch
    model = torch.jit.load(os.path.join(model_dir, "model.pt"), map_location="cpu")
    model.eval()
    with torch.no_grad():
        return float(model(torch.from_numpy(x[None]))[0, 0])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("request", nargs="+", help="CDS Hooks request JSON file(s)")
    ap.add_argument("--now", default="2026-01-01T12:00:00Z")
    ap.add_argument("--model-dir", default=DEFAULT_MODEL_DIR)
    ap.add_argument("--dump", help="write {file: tensor} as JSON here")
    args = ap.parse_args(argv)
    now = parse_instant(args.now)
    if now is None:
        sys.exit("--now must be a date-time with timezone")
    spec, manifest = load_spec(), load_manifest(args.model_dir)
    dump = {}
    for path in args.request:
        with open(path) as f:
            req = json.load(f)
        x, meas, last = featurize(req, now, spec, manifest)
        risk = predict(x, args.model_dir)
        n_obs = int(x[:, spec["n_features"]:].sum())
        print(f"{os.path.basename(path)}: risk={risk:.4f} news2={news2_from_last(last)} "
              f"observed_bins={n_obs} last={[None if v is None else round(v, 2) for v in last]}")
        dump[os.path.basename(path)] = {"risk": risk, "tensor": x.tolist()}
    if args.dump:
        with open(args.dump, "w") as f:
            json.dump(dump, f)


if __name__ == "__main__":
    main()
