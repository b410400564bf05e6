"""FHIR Observations -> model input tensors, by the same `features.toml` the Rust gateway reads.

This is the Python half of one contract (Rust: `src/features/{extract,grid,units}.rs`); training,
evaluation and the parity test all go through it, so what a model learned from is what the gateway
feeds it. `tests/models/feature_parity.rs` runs both over the same cohort Bundles and compares to 1e-6.

    extract(spec, resources)            -> measurements, rejections   (one patient, any order)
    grids(spec, mean, std, meas, nows)  -> float32 [len(nows), steps, 2 * features]

CLI (used by the parity test):
    featurize.py --spec models/sepsis/features.toml --manifest models/sepsis/1.0.0/manifest.toml \
                 --now 2026-02-01T12:00:00Z bundle.json [...]     -> JSON {file: tensor} on stdout
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tomllib

import numpy as np

if not __package__:  # run as a file (`python models/featurize.py`, as the parity test does): find `models`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from models.fhir_time import instant_seconds  # noqa: E402

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
USABLE_STATUS = {"final", "amended", "corrected"}

# ---------------------------------------------------------------------------------------- units
# Same table as src/features/units.rs: (UCUM code) -> (kind, factor to the kind's base unit).
LINEAR = {
    "/min": ("rate", 1.0), "{beats}/min": ("rate", 1.0), "{breaths}/min": ("rate", 1.0),
    "{counts}/min": ("rate", 1.0), "1/min": ("rate", 1.0),
    "%": ("percent", 1.0),
    "mm[Hg]": ("pressure", 1.0), "kPa": ("pressure", 7.50061575),
    "1": ("dimensionless", 1.0), "": ("dimensionless", 1.0),
    "mg/dL": ("mass", 1.0), "mg/L": ("mass", 0.1), "g/L": ("mass", 100.0), "g/dL": ("mass", 1000.0),
    "mmol/L": ("substance", 1.0), "umol/L": ("substance", 0.001),
    "10*9/L": ("cells", 1.0), "10*3/uL": ("cells", 1.0), "10*3/mm3": ("cells", 1.0), "/nL": ("cells", 1.0),
    "L/min": ("flow", 1.0), "mL/min": ("flow", 0.001),
}
TEMPERATURES = ("Cel", "[degF]", "K")
HUMAN = {
    "°C": "Cel", "C": "Cel", "degC": "Cel",
    "°F": "[degF]", "F": "[degF]", "degF": "[degF]",
    "mmHg": "mm[Hg]", "mm Hg": "mm[Hg]",
    "bpm": "/min", "beats/min": "/min", "beats/minute": "/min", "breaths/min": "/min", "breaths/minute": "/min",
    "µmol/L": "umol/L", "μmol/L": "umol/L", "umol/l": "umol/L",
    "mmol/l": "mmol/L", "mg/dl": "mg/dL",
    "x10^9/L": "10*9/L", "x10E9/L": "10*9/L", "10^9/L": "10*9/L", "x10*9/L": "10*9/L",
    "K/uL": "10*3/uL", "x10^3/uL": "10*3/uL", "x10E3/uL": "10*3/uL", "10^3/uL": "10*3/uL",
    "x10*3/uL": "10*3/uL", "10^3/µL": "10*3/uL", "K/µL": "10*3/uL",
    "l/min": "L/min",
}


def is_canonical(unit: str) -> bool:
    return unit in TEMPERATURES or (unit in LINEAR and unit != "")


def _to_celsius(v, u):
    return {"Cel": lambda: v, "[degF]": lambda: (v - 32.0) * 5.0 / 9.0, "K": lambda: v - 273.15}.get(u, lambda: None)()


def _from_celsius(v, u):
    return {"Cel": lambda: v, "[degF]": lambda: v * 9.0 / 5.0 + 32.0, "K": lambda: v + 273.15}.get(u, lambda: None)()


def convert(value: float, unit: str, to: str, molar_mass: float | None = None) -> float | None:
    """`value` in `unit` -> canonical `to`, or None when the conversion is not known (never guessed)."""
    frm = HUMAN.get(unit.strip(), unit.strip())
    if frm == to:
        out = value
    elif to in TEMPERATURES:
        c = _to_celsius(value, frm)
        out = None if c is None else _from_celsius(c, to)
    else:
        if frm not in LINEAR or to not in LINEAR:
            return None
        (fk, ff), (tk, tf) = LINEAR[frm], LINEAR[to]
        base = value * ff
        if fk == tk:
            pass
        elif fk == "substance" and tk == "mass" and molar_mass:
            base = base * molar_mass / 10.0
        elif fk == "mass" and tk == "substance" and molar_mass:
            base = base * 10.0 / molar_mass
        else:
            return None
        out = base / tf
    if out is None or not math.isfinite(out):
        return None
    return out


# ----------------------------------------------------------------------------------------- spec
def load_spec(path: str) -> dict:
    """Reads a features.toml with the defaults the Rust loader applies."""
    with open(path, "rb") as f:
        spec = tomllib.load(f)
    for feat in spec["feature"]:
        feat.setdefault("display", feat["name"].replace("_", " "))
        feat.setdefault("coded_values", {})
        feat.setdefault("molar_mass", None)
        feat.setdefault("aggregate", "last")
        feat.setdefault("max_age_hours", None)
        feat.setdefault("transform", "none")
        if feat["transform"] not in ("none", "log"):
            raise ValueError(f"feature {feat['name']}: transform {feat['transform']!r}")
        if not is_canonical(feat["unit"]):
            raise ValueError(f"feature {feat['name']}: unit {feat['unit']!r} is not one bedside converts to")
        if feat["aggregate"] not in ("last", "mean", "min", "max"):
            raise ValueError(f"feature {feat['name']}: aggregate {feat['aggregate']!r}")
    spec["steps"] = spec["window_hours"] * 60 // spec["step_minutes"]
    return spec


def model_value(feat, v: float) -> float | None:
    """A raw value in model space (the feature's transform), None when it has none."""
    if feat["transform"] == "log":
        return math.log(v) if v > 0 else None
    return v


def load_normalisation(manifest_path: str) -> tuple[np.ndarray, np.ndarray]:
    with open(manifest_path, "rb") as f:
        m = tomllib.load(f)
    return np.array(m["input"]["mean"], dtype=np.float64), np.array(m["input"]["std"], dtype=np.float64)


# ------------------------------------------------------------------------------------- extract
def _has_code(concept, codes) -> bool:
    return any(c.get("system") == LOINC and c.get("code") in codes for c in (concept or {}).get("coding", []))


def _value_of(feat, quantity, concept):
    if quantity is not None:
        value = quantity.get("value")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None, "quantity without a value"
        system = quantity.get("system")
        if system in (UCUM, None):
            unit = quantity.get("code") or quantity.get("unit") or ""
        else:
            unit = quantity.get("unit") or ""
        v = convert(float(value), unit, feat["unit"], feat["molar_mass"])
        return (v, None) if v is not None else (None, "unit not convertible to the feature's unit")
    if concept is not None:
        for c in concept.get("coding", []):
            if c.get("code") in feat["coded_values"]:
                return float(feat["coded_values"][c["code"]]), None
        return None, "coded value not in the feature's coded_values"
    return None, "no value"


def observations_of(resources):
    """Observations from a Bundle, a list of resources or entries."""
    if isinstance(resources, dict) and resources.get("resourceType") == "Bundle":
        resources = [e.get("resource") for e in resources.get("entry", [])]
    elif isinstance(resources, dict):
        resources = [resources]
    return [r for r in resources if isinstance(r, dict) and r.get("resourceType") == "Observation"]


def extract(spec, resources):
    """Measurements (feature, time, value, resource id), sorted by time (stable), and rejections.

    Order and rules as src/features/extract.rs: per Observation, per feature in spec order,
    component values first, then the top-level value."""
    found, rejected = [], []
    feats = spec["feature"]
    by_code = {}
    for f, feat in enumerate(feats):
        for code in feat["loinc"]:
            by_code.setdefault(code, set()).add(f)
    for obs in observations_of(resources):
        rid = obs.get("id") or ""
        # Only features whose codes occur in this Observation (same result, far fewer checks).
        candidates = set()
        for concept in [obs.get("code")] + [c.get("code") for c in obs.get("component", []) or []]:
            for c in (concept or {}).get("coding", []):
                if c.get("system") == LOINC and c.get("code") in by_code:
                    candidates |= by_code[c["code"]]
        for f in sorted(candidates):
            feat = feats[f]
            codes = feat["loinc"]
            values = [
                _value_of(feat, c.get("valueQuantity"), c.get("valueCodeableConcept"))
                for c in obs.get("component", []) or []
                if _has_code(c.get("code"), codes)
            ]
            if _has_code(obs.get("code"), codes):
                values.append(_value_of(feat, obs.get("valueQuantity"), obs.get("valueCodeableConcept")))
            if not values:
                continue
            if obs.get("status") not in USABLE_STATUS:
                rejected.append((rid, "status is not final, amended or corrected"))
                continue
            eff = obs.get("effectiveDateTime") or obs.get("effectiveInstant")
            if eff is None and isinstance(obs.get("effectivePeriod"), dict):
                eff = obs["effectivePeriod"].get("end") or obs["effectivePeriod"].get("start")
            t = instant_seconds(eff)
            if t is None:
                rejected.append((rid, "no effective date-time with a time zone"))
                continue
            for v, why in values:
                if why is None:
                    found.append((f, t, v, rid))
                else:
                    rejected.append((rid, why))
    found.sort(key=lambda m: m[1])
    return found, rejected


# ---------------------------------------------------------------------------------------- grids
def grids(spec, mean, std, measurements, nows) -> np.ndarray:
    """float32 [len(nows), steps, 2F]: normalised values then observed masks (see grid.rs)."""
    nows = np.asarray(nows, dtype=np.float64)
    feats = spec["feature"]
    nf, steps = len(feats), spec["steps"]
    step = spec["step_minutes"] * 60.0
    window = spec["window_hours"] * 3600.0
    out = np.zeros((len(nows), steps, 2 * nf), dtype=np.float32)
    # edges[i, j] = window_start_i + j * step, j = 0..steps (edges[:, steps] = now)
    starts = nows - window
    edges = starts[:, None] + np.arange(steps + 1, dtype=np.float64)[None, :] * step
    by_feature = [[] for _ in range(nf)]
    for f, t, v, _ in measurements:
        by_feature[f].append((t, v))
    for f, feat in enumerate(feats):
        if not by_feature[f]:
            continue
        times = np.array([m[0] for m in by_feature[f]], dtype=np.float64)
        vals = np.array([m[1] for m in by_feature[f]], dtype=np.float64)
        lo = np.searchsorted(times, edges[:, :-1], side="left")
        hi = np.searchsorted(times, edges[:, 1:], side="left")
        observed = hi > lo
        agg = feat["aggregate"]
        cell_val = np.zeros(lo.shape, dtype=np.float64)
        src = np.where(observed, hi - 1, -1)
        if agg == "last":
            cell_val[observed] = vals[(hi - 1)[observed]]
        elif agg == "mean":
            # Sequential sums in time order, as the Rust side adds (a cumsum difference could
            # differ in the last bits).
            for i, j in zip(*np.nonzero(observed)):
                cell_val[i, j] = _seq_sum(vals[lo[i, j]:hi[i, j]]) / (hi[i, j] - lo[i, j])
        else:
            pick = np.argmin if agg == "min" else np.argmax
            for i, j in zip(*np.nonzero(observed)):
                k = lo[i, j] + int(pick(vals[lo[i, j]:hi[i, j]]))
                cell_val[i, j] = vals[k]
                src[i, j] = k
        # Forward fill: the last observed step at or before j carries, while within max age.
        idx = np.where(observed, np.arange(steps)[None, :], -1)
        last_obs = np.maximum.accumulate(idx, axis=1)
        has = last_obs >= 0
        rows = np.arange(len(nows))[:, None].repeat(steps, axis=1)
        carried_val = np.where(has, cell_val[rows, np.maximum(last_obs, 0)], 0.0)
        carried_src = np.where(has, src[rows, np.maximum(last_obs, 0)], -1)
        if feat["max_age_hours"] is not None:
            age = edges[:, 1:] - np.where(carried_src >= 0, times[np.maximum(carried_src, 0)], -np.inf)
            has &= observed | (age <= feat["max_age_hours"] * 3600.0)
        if feat["transform"] == "log":
            positive = carried_val > 0
            has &= positive
            carried_val = np.log(np.where(positive, carried_val, 1.0))
        s = std[f]
        norm = ((carried_val - mean[f]) / s) if s > 0 else np.zeros_like(carried_val)
        out[:, :, f] = np.where(has, norm, 0.0).astype(np.float32)
        out[:, :, nf + f] = observed.astype(np.float32)
    return out


def _seq_sum(xs) -> float:
    total = 0.0
    for x in xs:
        total += float(x)
    return total


def grid_sources(spec, measurements, now):
    """For one reference time: [steps][features] -> resource id of each value cell (or None).
    Slow and simple; used to explain and to test, not to train."""
    feats = spec["feature"]
    nf, steps = len(feats), spec["steps"]
    step = spec["step_minutes"] * 60.0
    start = now - spec["window_hours"] * 3600.0
    out = [[None] * nf for _ in range(steps)]
    inside = [m for m in measurements if start <= m[1] < now]
    for f, feat in enumerate(feats):
        carried = None
        for j in range(steps):
            lo, hi = start + j * step, start + (j + 1) * step
            here = [m for m in inside if m[0] == f and lo <= m[1] < hi]
            if here:
                if feat["aggregate"] == "min":
                    carried = min(here, key=lambda m: m[2])
                elif feat["aggregate"] == "max":
                    carried = max(here, key=lambda m: m[2])
                else:
                    carried = here[-1]
            elif carried is not None and feat["max_age_hours"] is not None and hi - carried[1] > feat["max_age_hours"] * 3600.0:
                carried = None
            out[j][f] = carried[3] if carried else None
    return out


# ------------------------------------------------------------------------------------------ CLI
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--now", help="reference time for every bundle, e.g. 2026-02-01T12:00:00Z")
    ap.add_argument("--pairs", help="JSON file [[bundle path, reference time], ...] instead of --now + bundles")
    ap.add_argument("bundles", nargs="*")
    args = ap.parse_args(argv)
    spec = load_spec(args.spec)
    mean, std = load_normalisation(args.manifest)
    if args.pairs:
        with open(args.pairs) as f:
            pairs = json.load(f)
    else:
        pairs = [(path, args.now) for path in args.bundles]
    result = []
    for path, when in pairs:
        now = instant_seconds(when)
        if now is None:
            print(f"reference time {when!r} is not a date-time with a zone", file=sys.stderr)
            return 2
        with open(path) as f:
            bundle = json.load(f)
        meas, rejected = extract(spec, bundle)
        x = grids(spec, mean, std, meas, [now])[0]
        result.append({"bundle": path, "now": when, "tensor": x.tolist(),
                       "measurements": len(meas), "rejected": len(rejected)})
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
