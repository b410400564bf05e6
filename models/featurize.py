"""FHIR Observations -> model input tensors, by the same `features.toml` the Rust gateway reads.

This is the Python half of one contract (Rust: `src/features/{extract,grid,units}.rs`); training,
evaluation and the parity test all go through it, so what a model learned from is what the gateway
feeds it. `tests/models/feature_parity.rs` runs both over the same cohort Bundles and compares to 1e-6.

    extract(spec, resources)            -> measurements, rejections   (one patient, any order)
    clamp(spec, meas, ranges)           -> measurements read within the training ranges, counts
    grids(spec, mean, std, meas, nows)  -> float32 [len(nows), steps, 2 * features]
    abstain_reason(spec, validity, meas, now)  -> why a model would not score, or None

Codes, code-system spellings, unit spellings, coded answers (GCS read as ACVPU) and plausibility limits
come from `models/terminology.toml`, which the gateway compiles in (src/features/terminology.rs).

CLI (used by the parity test):
    featurize.py --spec models/sepsis/features.toml --manifest models/sepsis/1.0.0/manifest.toml \
                 --now 2026-02-01T12:00:00Z bundle.json [...]     -> JSON {file: tensor} on stdout
    (--clamp: read values within the manifest's [validity.range], as the gateway does)
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
TERMINOLOGY_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "terminology.toml")
IMPLAUSIBLE = "implausible value (outside physiological limits), dropped"
CLAMPED = "outside training range, clamped"


def load_terminology(path: str = TERMINOLOGY_PATH) -> dict:
    """models/terminology.toml with system aliases inverted (alias -> system name)."""
    with open(path, "rb") as f:
        t = tomllib.load(f)
    t["system_of"] = {alias: name for name, aliases in t["systems"].items() for alias in aliases}
    return t


TERMINOLOGY = load_terminology()


def system_of(uri) -> str | None:
    """Which system ("loinc", "snomed", "ucum", "icd10cm", "icd10") a URI names, any spelling."""
    return TERMINOLOGY["system_of"].get(uri.strip()) if isinstance(uri, str) else None


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
# Spellings EHRs send -> UCUM code: `[units]` of models/terminology.toml.
HUMAN = TERMINOLOGY["units"]


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
    """Reads a features.toml with the defaults the Rust loader applies, its concepts resolved."""
    with open(path, "rb") as f:
        spec = tomllib.load(f)
    names = [feat["name"] for feat in spec["feature"]]
    for feat in spec["feature"]:
        feat.setdefault("display", feat["name"].replace("_", " "))
        feat.setdefault("coded_values", {})
        feat.setdefault("molar_mass", None)
        feat.setdefault("aggregate", "last")
        feat.setdefault("max_age_hours", None)
        feat.setdefault("transform", "none")
        feat.setdefault("loinc", [])
        if feat["transform"] not in ("none", "log"):
            raise ValueError(f"feature {feat['name']}: transform {feat['transform']!r}")
        if not is_canonical(feat["unit"]):
            raise ValueError(f"feature {feat['name']}: unit {feat['unit']!r} is not one bedside converts to")
        if feat["aggregate"] not in ("last", "mean", "min", "max"):
            raise ValueError(f"feature {feat['name']}: aggregate {feat['aggregate']!r}")
        _resolve_concept(feat)
    recent = spec.get("require_recent")
    if recent is not None:
        unknown = [n for n in recent["features"] if n not in names]
        if unknown or not recent["features"] or not recent["hours"] > 0:
            raise ValueError(f"require_recent: {recent!r}")
    spec["steps"] = spec["window_hours"] * 60 // spec["step_minutes"]
    return spec


def _resolve_concept(feat) -> None:
    """As src/features/spec.rs: the spec's own codes then the concept's (and its score's), the concept's
    plausibility limits in the feature's unit, its answers and its score bands."""
    feat["plausible"], feat["answers"], feat["from_score"] = None, {}, None
    name = feat.get("concept")
    if name is None:
        return
    concept = TERMINOLOGY["concept"].get(name)
    if concept is None:
        raise ValueError(f"feature {feat['name']}: concept {name!r} is not in models/terminology.toml")
    score = concept.get("from_gcs")
    for code in concept["loinc"] + (score["loinc"] if score else []):
        if code not in feat["loinc"]:
            feat["loinc"].append(code)
    if "plausible" in concept:
        lo, hi = (convert(float(x), concept["unit"], feat["unit"], feat["molar_mass"]) for x in concept["plausible"])
        if lo is None or hi is None:
            raise ValueError(f"feature {feat['name']}: unit does not convert from its concept's")
        feat["plausible"] = (min(lo, hi), max(lo, hi))
    feat["answers"] = dict(concept.get("answers", {}))
    if score:
        feat["from_score"] = {"loinc": list(score["loinc"]),
                              "bands": [(float(lo), float(hi), code) for lo, hi, code in score["bands"]]}


def _round(x: float) -> float:
    """Half away from zero, as Rust's f64::round."""
    if x < 0:
        return -_round(-x)
    f = float(math.floor(x))
    return f + 1.0 if x - f >= 0.5 else f


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
def _matched(feat, concept):
    """As extract.rs: "direct", "score" (a score read as answers, GCS -> ACVPU) or None."""
    for c in (concept or {}).get("coding", []):
        if system_of(c.get("system")) == "loinc" and c.get("code") in feat["loinc"]:
            score = feat["from_score"]
            return "score" if score and c["code"] in score["loinc"] else "direct"
    return None


def _unit_of(quantity) -> str:
    system = quantity.get("system")
    if system is None or system_of(system) == "ucum":
        return quantity.get("code") or quantity.get("unit") or ""
    return quantity.get("unit") or ""


def _value_of(feat, how, quantity, concept):
    if quantity is not None:
        value = quantity.get("value")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None, "quantity without a value"
        if how == "score":
            v = _round(float(value))
            answer = next((code for lo, hi, code in feat["from_score"]["bands"] if lo <= v <= hi), None)
            if answer is None:
                return None, "score outside the bands read as answers"
            if answer not in feat["coded_values"]:
                return None, "coded value not in the feature's coded_values"
            return float(feat["coded_values"][answer]), None
        v = convert(float(value), _unit_of(quantity), feat["unit"], feat["molar_mass"])
        if v is None:
            return None, "unit not convertible to the feature's unit"
        if feat["plausible"] is not None and not feat["plausible"][0] <= v <= feat["plausible"][1]:
            return None, IMPLAUSIBLE
        return v, None
    if concept is not None:
        v = _coded(feat, concept)
        return (v, None) if v is not None else (None, "coded value not in the feature's coded_values")
    return None, "no value"


def _coded(feat, concept):
    """The coded answer's value: its code as coded_values lists it, else the code, display or text the
    concept's answers map to a listed code (as extract.rs)."""
    codings = concept.get("coding", []) or []
    for c in codings:
        if c.get("code") in feat["coded_values"]:
            return float(feat["coded_values"][c["code"]])
    words = [w for c in codings for w in (c.get("code"), c.get("display"))] + [concept.get("text")]
    for w in words:
        if not isinstance(w, str):
            continue
        canonical = feat["answers"].get(w) or feat["answers"].get(w.strip().lower())
        if canonical is not None and canonical in feat["coded_values"]:
            return float(feat["coded_values"][canonical])
    return None


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
                if system_of(c.get("system")) == "loinc" and c.get("code") in by_code:
                    candidates |= by_code[c["code"]]
        for f in sorted(candidates):
            feat = feats[f]
            values = []
            for c in obs.get("component", []) or []:
                how = _matched(feat, c.get("code"))
                if how is not None:
                    values.append(_value_of(feat, how, c.get("valueQuantity"), c.get("valueCodeableConcept")))
            how = _matched(feat, obs.get("code"))
            if how is not None:
                values.append(_value_of(feat, how, obs.get("valueQuantity"), obs.get("valueCodeableConcept")))
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


# ------------------------------------------------------------------------------------ guardrails
def clamp(spec, measurements, ranges):
    """Measurements with each value read within its feature's training range (``ranges``: the manifest's
    [validity.range], name -> [low, high]), and per feature name how many were clamped. As the gateway
    (FeatureMatrix::clamp_to): the model never sees an extrapolated value, and the patient is still
    scored. Count only in-window measurements when comparing with the gateway's data quality."""
    names = [f["name"] for f in spec["feature"]]
    out, counts = [], {}
    for f, t, v, rid in measurements:
        r = (ranges or {}).get(names[f])
        if r is not None:
            lo, hi = float(r[0]), float(r[1])
            if v < lo or v > hi:
                counts[names[f]] = counts.get(names[f], 0) + 1
            v = min(max(v, lo), hi)
        out.append((f, t, v, rid))
    return out, counts


def _words(items) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _hours_words(h: float) -> str:
    r = _round(h * 10.0) / 10.0
    return f"{r:.0f}" if r == int(r) else f"{r:.1f}"


def abstain_reason(spec, validity, measurements, now, min_observations: int = 0,
                   max_staleness_hours: float | None = None) -> str | None:
    """Why the gateway would not score this patient at ``now`` (epoch seconds), in its words, or None
    (src/services/abstain.rs). ``validity``: the manifest's [validity] (min_measurements 0 or absent: no
    minimum); ``min_observations`` / ``max_staleness_hours``: a service's [guardrails], if any."""
    validity = validity or {}
    start = now - spec["window_hours"] * 3600.0
    inside = [m for m in measurements if start <= m[1] < now]
    n, hours = len(inside), spec["window_hours"]
    needed = max(int(validity.get("min_measurements", 0) or 0), int(min_observations or 0), 1)
    if n < needed:
        return f"only {n} usable measurements in the last {hours} h (needs {needed})"
    feats = spec["feature"]
    absent = [f["display"] for name in validity.get("required", []) for i, f in enumerate(feats)
              if f["name"] == name and not any(m[0] == i for m in inside)]
    if absent:
        return f"no {', '.join(absent).lower()} in the last {hours} h"
    limits = [h for h in (max_staleness_hours, validity.get("max_staleness_hours")) if h is not None]
    if limits:
        limit = min(max(float(h), 0.0) for h in limits) * 3600.0
        newest = max(m[1] for m in inside)
        if now - newest > limit:
            return f"newest measurement is {int((now - newest) // 3600)} h old (limit {int(limit // 3600)} h)"
    recent = spec.get("require_recent")
    if recent:
        since = now - float(recent["hours"]) * 3600.0
        index = {f["name"]: i for i, f in enumerate(feats)}
        wanted = [index[name] for name in recent["features"]]
        missing = [f for f in wanted if not any(m[0] == f and m[1] >= since for m in inside)]
        if missing:
            h = _hours_words(float(recent["hours"]))
            name = lambda f: feats[f]["display"].lower()  # noqa: E731
            return (f"no complete set of core observations in the last {h} h: no {_words(map(name, missing))} "
                    f"(a score needs {_words(map(name, wanted))} each measured within {h} h)")
    return None


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
    ap.add_argument("--clamp", action="store_true", help="read values within the manifest's [validity.range]")
    ap.add_argument("bundles", nargs="*")
    args = ap.parse_args(argv)
    spec = load_spec(args.spec)
    mean, std = load_normalisation(args.manifest)
    with open(args.manifest, "rb") as f:
        validity = tomllib.load(f).get("validity", {})
    ranges = validity.get("range", {}) if args.clamp else {}
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
        raw, rejected = extract(spec, bundle)
        inside = [m for m in raw if now - spec["window_hours"] * 3600.0 <= m[1] < now]
        _, clamped = clamp(spec, inside, ranges)
        meas, _ = clamp(spec, raw, ranges)
        x = grids(spec, mean, std, meas, [now])[0]
        reasons = {}
        for _, why in rejected:
            reasons[why] = reasons.get(why, 0) + 1
        result.append({"bundle": path, "now": when, "tensor": x.tolist(),
                       "measurements": len(meas), "rejected": len(rejected), "rejected_by_reason": reasons,
                       "clamped": clamped, "abstain": abstain_reason(spec, validity, raw, now),
                       "values": [[f, t, v] for f, t, v, _ in raw]})
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
