"""Self-test of models.ward: determinism, FHIR R4 shape, onsets derivable from recorded data, figures, leak check.

    python -m models.ward.selftest [--n 600] [--seed 3]

Exits non-zero when a check fails. The printed figures are descriptive (prevalences, early events,
vitals interval, leak-check AUROCs); only the structural checks fail the run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timedelta

import numpy as np

from models.evaluation import auroc
from models.fhir_time import parse_instant
from models.ward.generate import generate

STATUS_TYPES = {"Observation", "Encounter", "MedicationAdministration", "MedicationRequest", "ServiceRequest",
                "Location"}
VITAL_CODES = {"8867-4", "8889-8", "9279-1", "2708-6", "59408-5", "20564-1", "8310-5", "8331-1", "85354-9",
               "8480-6", "8462-4", "67775-7", "9269-2", "3150-0", "3151-8"}
ABX_CODES = {"2193", "74169", "11124", "29561", "20481", "82122", "19711", "6922", "2180"}
H = timedelta(hours=1)


def refs(x, out):
    if isinstance(x, dict):
        for k, v in x.items():
            if k == "reference" and isinstance(v, str):
                out.append(v)
            else:
                refs(v, out)
    elif isinstance(x, list):
        for v in x:
            refs(v, out)
    return out


def shape_errors(bundle) -> list[str]:
    errs = []
    if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "collection":
        errs.append("not a collection Bundle")
    seen = set()
    for e in bundle["entry"]:
        r = e["resource"]
        rt, rid = r.get("resourceType"), r.get("id")
        if not rt or not rid:
            errs.append(f"resource without type/id: {r}")
            continue
        key = f"{rt}/{rid}"
        if key in seen:
            errs.append(f"duplicate id {key}")
        seen.add(key)
        if not e.get("fullUrl", "").endswith(key):
            errs.append(f"fullUrl mismatch {key}")
        if rt in STATUS_TYPES and not r.get("status"):
            errs.append(f"{key} without status")
        if rt == "Condition" and not (r.get("clinicalStatus") and r.get("subject") and r.get("code")):
            errs.append(f"{key} incomplete")
        if rt == "Patient" and r.get("gender") not in ("male", "female"):
            errs.append(f"{key} gender")
        if rt == "Observation":
            if not (r.get("code", {}).get("coding") and r.get("category") and r.get("subject")):
                errs.append(f"{key} incomplete")
            for c in r["code"]["coding"]:
                if c.get("system") != "http://loinc.org":
                    errs.append(f"{key} code system")
            if not any(k in r for k in ("valueQuantity", "valueCodeableConcept", "component", "dataAbsentReason")):
                errs.append(f"{key} without value")
            vq = r.get("valueQuantity")
            if vq is not None and not (isinstance(vq.get("value"), (int, float)) and vq.get("code")):
                errs.append(f"{key} bad valueQuantity")
        for f in ("effectiveDateTime", "issued", "authoredOn"):
            if f in r and parse_instant(r[f]) is None:
                errs.append(f"{key}.{f} not an instant: {r[f]}")
    for ref in refs(bundle, []):
        if ref not in seen:
            errs.append(f"unresolved reference {ref}")
    return errs


# ---------------------------------------------------------------- recorded-data labels (an independent check)

def recorded(bundle):
    """(kind, time, value) from the bundle's final/amended/corrected observations, plus culture/abx times."""
    out, cultures, abx = [], [], []
    for e in bundle["entry"]:
        r = e["resource"]
        rt = r["resourceType"]
        if rt == "ServiceRequest" and r["code"]["coding"][0]["code"] == "600-7":
            cultures.append(parse_instant(r["authoredOn"]))
        elif rt == "MedicationAdministration" and r["medicationCodeableConcept"]["coding"][0]["code"] in ABX_CODES:
            abx.append(parse_instant(r["effectiveDateTime"]))
        elif rt == "Observation" and r["status"] in ("final", "amended", "corrected"):
            t = parse_instant(r["effectiveDateTime"])
            code = r["code"]["coding"][0]["code"]
            v = r.get("valueQuantity", {}).get("value")
            u = r.get("valueQuantity", {}).get("code")
            if code == "85354-9":
                comp = {c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"] for c in r.get("component", [])}
                if "8480-6" in comp and "8462-4" in comp:
                    out.append(("map", t, (comp["8480-6"] + 2 * comp["8462-4"]) / 3))
            elif code == "8480-6":
                out.append(("sbp", t, v))
            elif code == "8462-4":
                out.append(("dbp", t, v))
            elif code in ("2160-0", "14682-9") and v is not None:
                out.append(("cr", t, v / 88.42 if u == "umol/L" else v))
            elif code in ("777-3", "26515-7") and v is not None:
                out.append(("plt", t, v))
            elif code == "1975-2" and v is not None:
                out.append(("bili", t, v))
            elif code == "9269-2" and v is not None:
                out.append(("gcs", t, v))
            elif code == "67775-7":
                a = r["valueCodeableConcept"]["coding"][0]["code"]
                out.append(("gcs", t, {"248234008": 15, "300202002": 14, "450847001": 12, "450848006": 8}.get(a, 5)))
            elif code in ("2708-6", "59408-5", "20564-1") and v is not None:
                out.append(("spo2", t, v))
            elif code == "3150-0" and v is not None:
                out.append(("fio2", t, v))
            elif code == "3151-8" and v is not None:
                out.append(("fio2", t, 21 + 4 * v))
    # standalone BP pairs -> MAP
    sb = {t: v for k, t, v in out if k == "sbp"}
    for k, t, v in list(out):
        if k == "dbp" and t in sb and sb[t] is not None and v is not None:
            out.append(("map", t, (sb[t] + 2 * v) / 3))
    out.sort(key=lambda x: x[1])
    return out, sorted(cultures), sorted(abx)


def sofa_at(meas, t):
    last = {}
    for k, tt, v in meas:
        if tt > t:
            break
        if t - tt <= 24 * H and v is not None:
            last[k] = v
    s = 0
    if "plt" in last:
        p = last["plt"]
        s += 4 if p < 20 else 3 if p < 50 else 2 if p < 100 else 1 if p < 150 else 0
    if "bili" in last:
        b = last["bili"]
        s += 4 if b >= 12 else 3 if b >= 6 else 2 if b >= 2 else 1 if b >= 1.2 else 0
    if "cr" in last:
        c = last["cr"]
        s += 4 if c >= 5 else 3 if c >= 3.5 else 2 if c >= 2 else 1 if c >= 1.2 else 0
    if "map" in last and last["map"] < 70:
        s += 1
    if "gcs" in last:
        g = last["gcs"]
        s += 0 if g >= 15 else 1 if g >= 13 else 2 if g >= 10 else 3 if g >= 6 else 4
    if "spo2" in last:
        sf = last["spo2"] / (last.get("fio2", 21) / 100)
        s += 2 if sf < 235 else 1 if sf < 315 else 0
    return s


def recorded_onsets(rec):
    """Deterioration from Location/death, sepsis (suspicion + SOFA rise >= 2), AKI (KDIGO) from recorded data."""
    b = rec["bundle"]
    out = {"deterioration": None, "sepsis": None, "aki": None}
    for e in b["entry"]:
        r = e["resource"]
        if r["resourceType"] == "Encounter":
            for loc in r.get("location", []):
                if loc["location"]["reference"] == "Location/loc-icu":
                    out["deterioration"] = parse_instant(loc["period"]["start"])
        if r["resourceType"] == "Patient" and "deceasedDateTime" in r:
            out["deterioration"] = out["deterioration"] or parse_instant(r["deceasedDateTime"])
    meas, cultures, abx = recorded(b)
    crs = [(t, v) for k, t, v in meas if k == "cr"]
    for i, (t, v) in enumerate(crs):
        prior = [w for tt, w in crs[:i] if t - tt <= 168 * H]
        prior48 = [w for tt, w in crs[:i] if t - tt <= 48 * H]
        if (prior and v >= 1.5 * min(prior)) or (prior48 and v - min(prior48) >= 0.3):
            out["aki"] = t
            break
    susp = None
    for c in cultures:
        if any(c - 24 * H <= a <= c + 72 * H for a in abx):
            susp = min([c] + [a for a in abx if c - 24 * H <= a <= c])
            break
    if susp is not None:
        times = sorted({t for _, t, _ in meas if susp - 48 * H <= t <= susp + 24 * H})
        if times:
            base = None
            for t in times:
                s = sofa_at(meas, t)
                base = s if base is None else min(base, s)
                if s - base >= 2:
                    out["sepsis"] = t
                    break
    return out


# ---------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--seed", type=int, default=3)
    a = ap.parse_args(argv)
    fails = []

    # determinism and independence of n
    x1 = generate(40, a.seed)
    x2 = generate(40, a.seed)
    x3 = generate(15, a.seed)
    dump = lambda rs: [json.dumps(r["bundle"], sort_keys=True) for r in rs]  # noqa: E731
    if dump(x1) != dump(x2):
        fails.append("same (n, seed) gave different bundles")
    if dump(x1)[:15] != dump(x3):
        fails.append("patient i depends on n")
    if dump(generate(5, a.seed + 1)) == dump(x1[:5]):
        fails.append("different seeds gave the same bundles")
    print("determinism: ok" if not fails else f"determinism: FAIL {fails}")

    t0 = time.time()
    rs = generate(a.n, a.seed)
    dt = time.time() - t0
    print(f"generated {a.n} patients in {dt:.1f} s ({1000 * dt / a.n:.1f} ms/patient); "
          f"{sum(len(r['bundle']['entry']) for r in rs) / a.n:.0f} resources/patient")

    n_err = 0
    for r in rs:
        errs = shape_errors(r["bundle"])
        if errs:
            n_err += 1
            if n_err <= 3:
                print(r["id"], errs[:5])
        for k in ("admit", "discharge"):
            if r[k].utcoffset() != timedelta(0):
                fails.append(f"{r['id']} {k} not UTC")
        if not (timedelta(hours=20) <= r["discharge"] - r["admit"] <= timedelta(days=10)) and r["end"] == "home":
            fails.append(f"{r['id']} stay length {r['discharge'] - r['admit']}")
    if n_err:
        fails.append(f"{n_err} bundles fail the shape checks")
    print(f"FHIR shape: {'ok' if not n_err else 'FAIL'} ({a.n} bundles)")

    # onsets
    src = rs[0]["onsets_source"]
    print(f"onsets from: {src}" + ("" if src == "models.labels" else
                                   " (models.labels not importable yet: onsets = hidden_onsets)"))
    agree = {k: [0, 0, 0] for k in ("deterioration", "sepsis", "aki")}  # both, hidden only, recorded only
    rec_on = []
    for r in rs:
        ro = recorded_onsets(r)
        rec_on.append(ro)
        for k in agree:
            h, o = r["hidden_onsets"][k], ro[k]
            if h and o:
                agree[k][0] += 1
            elif h:
                agree[k][1] += 1
            elif o:
                agree[k][2] += 1
    print("recorded-data labels (selftest's own SOFA/KDIGO/ICU reading) vs hidden event times:")
    for k, (both, ho, ro) in agree.items():
        print(f"  {k:14s} both {both:4d}  hidden only {ho:4d}  recorded only {ro:4d}")
    if agree["deterioration"][1] or agree["deterioration"][2]:
        fails.append("deterioration not derivable from Location/death")

    # prevalences, early events
    n = len(rs)
    print("prevalence (onsets) and share of events in the first 24 h:")
    for k in ("deterioration", "sepsis", "aki"):
        ts = [r["onsets"][k] - r["admit"] for r in rs if r["onsets"][k] is not None]
        early = sum(t <= timedelta(hours=24) for t in ts)
        tr = [ro[k] - r["admit"] for r, ro in zip(rs, rec_on) if ro[k] is not None]
        print(f"  {k:14s} {len(ts) / n:6.1%}  first 24 h {early / max(len(ts), 1):5.1%}   "
              f"(recorded-data reading {len(tr) / n:6.1%})")
    ends = {e: sum(r["end"] == e for r in rs) / n for e in ("home", "icu", "death")}
    print("  ends: " + ", ".join(f"{k} {v:.1%}" for k, v in ends.items()))
    cult = [any(e["resource"]["resourceType"] == "ServiceRequest" for e in r["bundle"]["entry"]) for r in rs]
    non_inf_cult = sum(c and r["hidden_onsets"]["sepsis"] is None for c, r in zip(cult, rs))
    print(f"  patients with blood cultures {sum(cult) / n:.1%}; cultured without sepsis {non_inf_cult / n:.1%}")
    los = sorted((r["discharge"] - r["admit"]) / H for r in rs)
    print(f"  length of ward stay: median {statistics.median(los):.0f} h, range {los[0]:.0f}-{los[-1]:.0f} h")

    # vitals interval
    gaps = []
    counts = {}
    for r in rs:
        ts = sorted({parse_instant(e["resource"]["effectiveDateTime"]).replace(second=0, microsecond=0)
                     for e in r["bundle"]["entry"]
                     if e["resource"]["resourceType"] == "Observation"
                     and e["resource"]["code"]["coding"][0]["code"] in ("8867-4", "8889-8")})
        gaps += [(b - a) / H for a, b in zip(ts, ts[1:])]
        for e in r["bundle"]["entry"]:
            res = e["resource"]
            if res["resourceType"] == "Observation":
                c = res["code"]["coding"][0]["code"]
                counts[c] = counts.get(c, 0) + 1
    print(f"median interval between heart-rate recordings: {statistics.median(gaps):.2f} h "
          f"(p10 {np.percentile(gaps, 10):.2f}, p90 {np.percentile(gaps, 90):.2f})")
    print("observation codes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))

    # leak check
    print("leak check (samples every 2 h; AUROC of the raw quantity for the outcome within the horizon):")
    for k, hz in (("deterioration", 12), ("sepsis", 12), ("aki", 48)):
        y, cnt, since = [], [], []
        for r in rs:
            obs_t = np.array(sorted(parse_instant(e["resource"]["effectiveDateTime"]).timestamp()
                                    for e in r["bundle"]["entry"] if e["resource"]["resourceType"] == "Observation"))
            a0, d0 = r["admit"].timestamp(), r["discharge"].timestamp()
            on = r["onsets"][k]
            end = min(d0, on.timestamp()) if on else d0
            t = a0 + 2 * 3600
            while t < end:
                y.append(int(on is not None and t < on.timestamp() <= t + hz * 3600))
                cnt.append(int(((obs_t > t - 86400) & (obs_t <= t)).sum()))
                since.append((t - a0) / 3600)
                t += 2 * 3600
        y = np.array(y)
        print(f"  {k:14s} horizon {hz:2d} h: samples {len(y):6d} positives {int(y.sum()):5d}  "
              f"AUROC measurements-last-24h {auroc(y, cnt):.3f}  hours-since-admission {auroc(y, since):.3f}")

    if fails:
        print("FAIL:", *fails[:10], sep="\n  ")
        sys.exit(1)
    print("selftest: ok")


if __name__ == "__main__":
    main()
