#!/usr/bin/env python3
"""Quick self-test of the synthetic cohort generator (SYNTHETIC data, not for clinical use).

    .venv/bin/python models/cohort/selftest.py        # ~5 s; exits non-zero on the first failed check

Generates 300 patients and checks: the patient-dict contract, prevalences (wide bounds for n = 300),
determinism (same (n, seed) -> identical JSON; patient i independent of n; other seed differs), FHIR shapes
(ids, references, dateTimes, codes/units, BP panel, ACVPU), physiological ranges, onset constraints, an
independent re-computation of the KDIGO AKI label from the bundle, and that precursors exist (vitals drift
before sepsis/deterioration onset). Prints a one-screen summary.
"""
from __future__ import annotations

import collections
import datetime as dt
import json
import os
import re
import statistics
import sys
import time
import uuid

import numpy as np

if not __package__:  # run as a file (`python models/cohort/selftest.py`, as CI does): find `models`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from models.cohort import generate as g  # noqa: E402
from models.cohort.generate import generate  # noqa: E402
from models.cohort import leakcheck  # noqa: E402
from models.labels import derive_onsets  # noqa: E402

N, SEED = 300, 20260501
ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
DT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
KEYS = {"id", "bundle", "admit", "discharge", "age", "sex", "ckd", "copd", "hypercapnic", "beta_blocker", "unit",
        "onsets", "hidden_onsets", "split"}
VITAL_UNITS = {"8867-4": {"/min"}, "9279-1": {"/min"}, "59408-5": {"%"}, "8310-5": {"Cel", "[degF]"},
               "3151-8": {"L/min"}}
LAB_UNITS = {"2160-0": {"mg/dL"}, "14682-9": {"umol/L"}, "2524-7": {"mmol/L", "mg/dL"}, "6690-2": {"10*3/uL"},
             "777-3": {"10*3/uL"}, "1975-2": {"mg/dL"}}
LOC_CODES = {c for c, _ in g.LOC_LEVELS}
RX = {c for c, _ in g.MEDS.values()}
RANGES = {"hr": (35, 180), "rr": (6, 45), "spo2": (70, 100), "temp": (34.0, 41.5), "sbp": (60, 220)}
FAILS = []


def check(cond, msg):
    if not cond:
        FAILS.append(msg)
        if len(FAILS) <= 20:
            print("FAIL:", msg)


def parse(s):
    return dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)


def ref_ok(r, kind, rid):
    return isinstance(r, dict) and r == {"reference": f"{kind}/{rid}"}


def kdigo_float(series):
    """Independent KDIGO check in float mg/dL (series: [(datetime, mg/dL)] ascending, final status only)."""
    for j, (tj, vj) in enumerate(series):
        if j == 0:
            continue
        p48 = [v for t, v in series[:j] if t >= tj - dt.timedelta(hours=48)]
        p7 = [v for t, v in series[:j] if t >= tj - dt.timedelta(days=7)]
        yield tj, bool((p48 and vj - min(p48) >= 0.3 - 1e-9) or (p7 and vj >= 1.5 * min(p7) - 1e-9))


def check_patient(p, seen_ids, stats):
    pid = p["id"]
    check(set(p) == KEYS, f"{pid}: keys {sorted(set(p) ^ KEYS)}")
    check(re.fullmatch(rf"cohort-{SEED}-\d+", pid) is not None, f"{pid}: id format")
    for k in ("admit", "discharge"):
        check(isinstance(p[k], dt.datetime) and p[k].utcoffset() == dt.timedelta(0), f"{pid}: {k} not UTC")
    admit, disc = p["admit"], p["discharge"]
    check(dt.datetime(2026, 1, 5, tzinfo=dt.timezone.utc) <= admit < dt.datetime(2026, 4, 1, tzinfo=dt.timezone.utc),
          f"{pid}: admit {admit}")
    los_h = (disc - admit).total_seconds() / 3600
    check(0 < los_h <= 168, f"{pid}: LOS {los_h:.1f} h")
    check(18 <= p["age"] <= 95 and p["sex"] in ("female", "male") and p["unit"] in g.UNITS, f"{pid}: demographics")
    check(not p["hypercapnic"] or p["copd"], f"{pid}: hypercapnic without COPD")
    check(p["split"] in ("train", "valid", "test"), f"{pid}: split")
    check(set(p["onsets"]) == {"deterioration", "sepsis", "aki"}, f"{pid}: onset keys")
    for k, v in p["onsets"].items():
        if v is not None:
            check(admit <= v <= disc, f"{pid}: {k} onset {v} outside [admit, discharge]")
    check(p["onsets"] == derive_onsets(p["bundle"]), f"{pid}: onsets are not models.labels.derive_onsets(bundle)")

    b = p["bundle"]
    check(b.get("resourceType") == "Bundle" and b.get("type") == "collection", f"{pid}: bundle type")
    enc_id = None
    by_type = collections.defaultdict(list)
    for e in b["entry"]:
        r = e["resource"]
        rid, rt = r["id"], r["resourceType"]
        check(ID_RE.match(rid) is not None, f"{pid}: bad id {rid}")
        check(rid not in seen_ids, f"{pid}: duplicate id {rid}")
        seen_ids.add(rid)
        check(e["fullUrl"] == f"urn:uuid:{uuid.uuid5(g.COHORT_NS, f'{rt}/{rid}')}", f"{pid}: fullUrl {rid}")
        by_type[rt].append(r)
        if rt == "Encounter":
            enc_id = rid
    check(len(by_type["Patient"]) == 1 and len(by_type["Encounter"]) == 1, f"{pid}: Patient/Encounter count")
    loc_types = {r["id"]: r["type"][0]["coding"][0]["code"] for r in by_type["Location"]}
    check(set(loc_types.values()) <= {"HU", "ICU"} and "HU" in loc_types.values(), f"{pid}: Location types")
    pat, enc = by_type["Patient"][0], by_type["Encounter"][0]
    check(pat["id"] == pid and pat["gender"] == p["sex"], f"{pid}: Patient id/gender")
    check(pat["identifier"][0]["system"] == g.MRN_SYSTEM and re.fullmatch(r"MRN\d+", pat["identifier"][0]["value"]),
          f"{pid}: MRN")
    check(pat["name"][0]["family"] and pat["name"][0]["given"], f"{pid}: name")
    bd = dt.date.fromisoformat(pat["birthDate"])
    ad = admit.date()
    age = ad.year - bd.year - ((ad.month, ad.day) < (bd.month, bd.day))
    check(age == p["age"], f"{pid}: birthDate {bd} gives age {age} != {p['age']}")
    check(enc["class"]["code"] == "IMP" and enc["status"] in ("finished", "in-progress"), f"{pid}: Encounter class")
    check(enc["period"] == {"start": g.iso_z(admit), "end": g.iso_z(disc)}, f"{pid}: Encounter period")
    check(enc["location"][0]["location"]["display"] == p["unit"], f"{pid}: Encounter location[0]")
    icu = [x for x in enc["location"] if loc_types.get(x["location"]["reference"].split("/")[1]) == "ICU"]
    died = "deceasedDateTime" in pat
    check(not (icu and died), f"{pid}: both ICU and death")
    if icu:
        check(icu[0]["period"]["start"] == g.iso_z(disc), f"{pid}: ICU transfer is not the end of ward data")
        stats["icu"] += 1
    if died:
        check(pat["deceasedDateTime"] == g.iso_z(disc)
              and enc["hospitalization"]["dischargeDisposition"]["coding"][0]["code"] == "exp", f"{pid}: death")
        stats["died"] += 1
    check((p["onsets"]["deterioration"] is not None) == bool(icu or died), f"{pid}: deterioration vs ICU/death")
    check(ref_ok(enc["subject"], "Patient", pid), f"{pid}: Encounter subject")

    icd = {c["code"] for r in by_type["Condition"] for c in r["code"]["coding"] if c["system"] == g.ICD10CM}
    check(("N18.3" in icd) == p["ckd"] and ("J44.9" in icd) == p["copd"] and ("J96.12" in icd) == p["hypercapnic"],
          f"{pid}: Conditions {icd}")
    for r in by_type["Condition"]:
        check(r["clinicalStatus"]["coding"][0]["code"] == "active"
              and r["verificationStatus"]["coding"][0]["code"] == "confirmed"
              and r["category"][0]["coding"][0]["code"] == "problem-list-item", f"{pid}: Condition statuses")
        check(parse(r["onsetDateTime"]) < admit and ref_ok(r["subject"], "Patient", pid), f"{pid}: Condition onset")
    meds = collections.Counter()
    for r in by_type["MedicationRequest"]:
        c = r["medicationCodeableConcept"]["coding"][0]
        check(c["system"] == g.RXNORM and c["code"] in RX, f"{pid}: med code")
        check(r["status"] in ("active", "completed") and r["intent"] == "order", f"{pid}: med status")
        check(admit <= parse(r["authoredOn"]) <= disc, f"{pid}: med authoredOn")
        check(ref_ok(r["subject"], "Patient", pid) and ref_ok(r["encounter"], "Encounter", enc_id), f"{pid}: med refs")
        meds[c["display"]] += 1
    check((meds["metoprolol"] > 0) == p["beta_blocker"], f"{pid}: metoprolol vs beta_blocker")
    for r in by_type["ServiceRequest"]:
        check(r["code"]["coding"][0]["code"] == "600-7" and r["status"] == "completed" and r["intent"] == "order",
              f"{pid}: ServiceRequest")
        check(admit <= parse(r["authoredOn"]) <= disc, f"{pid}: culture time")
    stats["cultures"] += bool(by_type["ServiceRequest"])
    stats["antibiotics"] += any(g.MEDS[a][1] in meds for a in g.ANTIBIOTICS)
    for r in by_type["MedicationAdministration"]:
        c = r["medicationCodeableConcept"]["coding"][0]
        check(c["system"] == g.RXNORM and c["code"] in RX and admit <= parse(r["effectiveDateTime"]) <= disc,
              f"{pid}: MedicationAdministration")

    obs = by_type["Observation"]
    stats["n_obs"].append(len(obs))
    crea, last_t, temp_units, crea_codes = [], None, set(), set()
    vit = collections.defaultdict(list)  # name -> [(t, value)]
    for r in obs:
        t = r["effectiveDateTime"]
        check(DT_RE.match(t) is not None, f"{pid}: dateTime {t}")
        check(last_t is None or t >= last_t, f"{pid}: observations not in time order")
        last_t = t
        tt = parse(t)
        check(admit <= tt <= disc, f"{pid}: observation outside the stay")
        check(ref_ok(r["subject"], "Patient", pid) and ref_ok(r["encounter"], "Encounter", enc_id), f"{pid}: obs refs")
        stats["status"][r["status"]] += 1
        coding = r["code"]["coding"]
        check(len(coding) == 1 and coding[0]["system"] == g.LOINC, f"{pid}: obs code system")
        code = coding[0]["code"]
        cat = r["category"][0]["coding"][0]
        check(cat["system"] == g.OBS_CAT, f"{pid}: category system")
        final = r["status"] == "final"
        if code == "85354-9":
            check("valueQuantity" not in r and len(r["component"]) == 2, f"{pid}: BP panel shape")
            sy, di = r["component"]
            check(sy["code"]["coding"][0]["code"] == "8480-6" and di["code"]["coding"][0]["code"] == "8462-4",
                  f"{pid}: BP component codes")
            sq = sy["valueQuantity"]
            check(sq["code"] == "mm[Hg]" and sq["system"] == g.UCUM, f"{pid}: BP unit")
            vit["sbp"].append((tt, sy["valueQuantity"]["value"]))
            check(di["valueQuantity"]["value"] < sy["valueQuantity"]["value"], f"{pid}: DBP >= SBP")
            continue
        if code == "67775-7":
            c = r["valueCodeableConcept"]["coding"][0]
            check(c["system"] == g.SNOMED and c["code"] in LOC_CODES and "valueQuantity" not in r, f"{pid}: ACVPU")
            vit["not_alert"].append((tt, c["code"] != "248234008"))
            continue
        q = r["valueQuantity"]
        check(set(q) == {"value", "unit", "system", "code"} and q["system"] == g.UCUM, f"{pid}: valueQuantity shape")
        check(isinstance(q["value"], (int, float)) and not isinstance(q["value"], bool), f"{pid}: value type")
        if code in VITAL_UNITS:
            check(cat["code"] == "vital-signs" and q["code"] in VITAL_UNITS[code], f"{pid}: vital {code} {q['code']}")
        else:
            check(cat["code"] == "laboratory" and q["code"] in LAB_UNITS.get(code, ()),
                  f"{pid}: lab {code} {q['code']}")
        v = q["value"]
        if code == "8867-4":
            vit["hr"].append((tt, v))
        elif code == "9279-1":
            vit["rr"].append((tt, v))
        elif code == "59408-5":
            vit["spo2"].append((tt, v))
        elif code == "8310-5":
            temp_units.add(q["code"])
            check(q["unit"] == ("degF" if q["code"] == "[degF]" else "Cel"), f"{pid}: temp unit string")
            vit["temp"].append((tt, (v - 32) * 5 / 9 if q["code"] == "[degF]" else v))
        elif code in ("2160-0", "14682-9"):
            crea_codes.add(code)
            check(q["unit"] == ("µmol/L" if code == "14682-9" else "mg/dL"), f"{pid}: creatinine unit string")
            check(round(v, 2) == v and (code == "2160-0" or v == int(v)), f"{pid}: creatinine rounding {v}")
            if final:
                crea.append((tt, v / g.CREATININE_UMOL_PER_MGDL if code == "14682-9" else v))
        elif code == "2524-7":
            stats["lact_units"][q["code"]] += 1
        elif code == "3151-8":
            check(0 <= v <= 15, f"{pid}: O2 flow {v}")
    for name, (lo, hi) in RANGES.items():
        for _, v in vit[name]:
            check(lo - 0.06 <= v <= hi + 0.06, f"{pid}: {name} {v} outside [{lo}, {hi}]")
    check(len(temp_units) <= 1 and len(crea_codes) <= 1, f"{pid}: mixed units within a patient")
    stats["temp_f"] += temp_units == {"[degF]"}
    stats["crea_umol"] += crea_codes == {"14682-9"}
    check(len(crea) >= 1 or los_h < 2, f"{pid}: no creatinine value")

    # KDIGO label re-computed independently from the bundle (final creatinine, exact in mg/dL patients)
    if crea_codes == {"2160-0"}:
        expected = next((t for t, hit in kdigo_float(crea) if hit), None)
        check(expected == p["onsets"]["aki"], f"{pid}: AKI label {p['onsets']['aki']} != KDIGO from bundle {expected}")

    # precursors: mean of (HR z + RR z) in the 6 h before onset vs 24-36 h before (if present)
    for ev in ("sepsis", "deterioration"):
        on = p["onsets"][ev]
        if on is None:
            continue
        late = [v for t, v in vit["hr"] if on - dt.timedelta(hours=6) <= t <= on]
        early = [v for t, v in vit["hr"] if on - dt.timedelta(hours=36) <= t < on - dt.timedelta(hours=24)]
        rl = [v for t, v in vit["rr"] if on - dt.timedelta(hours=6) <= t <= on]
        re_ = [v for t, v in vit["rr"] if on - dt.timedelta(hours=36) <= t < on - dt.timedelta(hours=24)]
        if late and early and rl and re_:
            stats[f"drift_{ev}"].append((statistics.mean(late) - statistics.mean(early)) / 10
                                        + (statistics.mean(rl) - statistics.mean(re_)) / 3)
    stats["not_alert_pts"] += any(v for _, v in vit["not_alert"])


def bounds(name, x, lo, hi):
    check(lo <= x <= hi, f"prevalence {name} = {x:.3f} outside [{lo}, {hi}]")
    return f"{name} {x:.1%}"


def main():
    t0 = time.perf_counter()
    patients = generate(N, SEED)
    t_gen = time.perf_counter() - t0
    check(len(patients) == N, "count")
    check([p["id"] for p in patients] == [f"cohort-{SEED}-{i}" for i in range(N)], "ids in order")

    # determinism: same (n, seed) -> byte-identical bundles; patient i independent of n; child rng = spawn(n)[i]
    dumps = [json.dumps(p["bundle"], sort_keys=True) for p in patients]
    again = generate(N, SEED)
    check(all(json.dumps(p["bundle"], sort_keys=True) == d for p, d in zip(again, dumps)), "not deterministic")
    check(all(g.index_row(a) == g.index_row(b) for a, b in zip(again, patients)), "patient fields not deterministic")
    prefix = generate(25, SEED)
    check([json.dumps(p["bundle"], sort_keys=True) for p in prefix] == dumps[:25], "patient i depends on n")
    other = generate(5, SEED + 1)
    check(all(json.dumps(o["bundle"], sort_keys=True) != d for o, d in zip(other, dumps)), "other seed not different")
    spawned = np.random.default_rng(SEED).spawn(3)[2].random(4)
    check(np.array_equal(spawned, g.patient_rng(SEED, 2).random(4)), "patient_rng != default_rng(seed).spawn(n)[i]")
    check(json.loads(json.dumps(g.index_row(patients[0]))) == g.index_row(patients[0]), "index row not JSON")

    stats = collections.defaultdict(int)
    stats.update(n_obs=[], status=collections.Counter(), lact_units=collections.Counter(),
                 drift_sepsis=[], drift_deterioration=[])
    seen = set()
    for p in patients:
        check_patient(p, seen, stats)

    frac = lambda f: sum(1 for p in patients if f(p)) / N  # noqa: E731
    lines = [
        bounds("sepsis", frac(lambda p: p["onsets"]["sepsis"]), 0.04, 0.35),
        bounds("aki", frac(lambda p: p["onsets"]["aki"]), 0.04, 0.30),
        bounds("deterioration", frac(lambda p: p["onsets"]["deterioration"]), 0.02, 0.20),
        bounds("ckd", frac(lambda p: p["ckd"]), 0.04, 0.40),
        bounds("copd", frac(lambda p: p["copd"]), 0.03, 0.35),
        bounds("hypercapnic", frac(lambda p: p["hypercapnic"]), 0.005, 0.20),
        bounds("beta_blocker", frac(lambda p: p["beta_blocker"]), 0.13, 0.28),
        bounds("female", frac(lambda p: p["sex"] == "female"), 0.40, 0.60),
        bounds("train", frac(lambda p: p["split"] == "train"), 0.52, 0.68),
        bounds("valid", frac(lambda p: p["split"] == "valid"), 0.13, 0.27),
        bounds("temp_degF", stats["temp_f"] / N, 0.0, 0.30),
        bounds("creatinine_umol", stats["crea_umol"] / N, 0.0, 0.95),
    ]
    sep = [p for p in patients if p["onsets"]["sepsis"]]
    aki_sep = sum(1 for p in sep if p["onsets"]["aki"]) / max(1, len(sep))
    aki_nonsep = sum(1 for p in patients if p["onsets"]["aki"] and not p["onsets"]["sepsis"]) / max(1, N - len(sep))
    check(aki_sep > aki_nonsep, "AKI not more likely with sepsis")
    det_sep = sum(1 for p in sep if p["onsets"]["deterioration"]) / max(1, len(sep))
    check(det_sep > frac(lambda p: p["onsets"]["deterioration"]), "deterioration not more likely after sepsis")
    n_status = sum(stats["status"].values())
    nonfinal = 1 - stats["status"]["final"] / n_status
    check(0.004 <= nonfinal <= 0.02, f"non-final status fraction {nonfinal:.4f}")
    med_obs = statistics.median(stats["n_obs"])
    check(40 <= med_obs <= 900, f"median observations/patient {med_obs}")
    lact_mg = stats["lact_units"]["mg/dL"] / max(1, sum(stats["lact_units"].values()))
    check(0.0 <= lact_mg <= 0.3, f"lactate mg/dL fraction {lact_mg:.3f}")
    for ev in ("sepsis", "deterioration"):
        d = stats[f"drift_{ev}"]
        check(len(d) >= 3 and statistics.mean(d) > 0.2, f"no precursor drift before {ev}: {d[:5]}")
    # leak check: measurement count alone must not predict the labels as it did (AUROC 0.75-0.76 before)
    table = leakcheck.leak_table(patients)
    for outcome, r in table.items():
        x = r["auroc_count_24h"]
        check(x != x or x < 0.75, f"leak: measurement count predicts {outcome} (AUROC {x:.3f})")
    t_all = time.perf_counter() - t0

    q = sorted(stats["n_obs"])
    print(f"cohort selftest: n={N} seed={SEED}; generate {t_gen:.1f} s, total {t_all:.1f} s")
    print("  prevalences: " + ", ".join(lines))
    print(f"  P(aki|sepsis) {aki_sep:.0%} vs P(aki|no sepsis) {aki_nonsep:.0%}; P(deterioration|sepsis) {det_sep:.0%}; "
          f"any not-alert ACVPU {stats['not_alert_pts'] / N:.0%}; blood cultures {stats['cultures'] / N:.0%}; "
          f"antibiotics {stats['antibiotics'] / N:.0%}")
    print(f"  observations/patient: p10 {q[len(q) // 10]}, median {med_obs}, p90 {q[9 * len(q) // 10]}; "
          f"status {dict(stats['status'])}; lactate in mg/dL {lact_mg:.0%} of results")
    print(f"  precursor drift (HR/10 + RR/3, last 6 h vs 24-36 h before onset): sepsis "
          f"{statistics.mean(stats['drift_sepsis'] or [0]):.2f}, deterioration "
          f"{statistics.mean(stats['drift_deterioration'] or [0]):.2f}")
    print(f"  ICU transfers {stats['icu'] / N:.0%}, deaths {stats['died'] / N:.0%}; leak check (AUROC of the 24-h "
          "measurement count): " + ", ".join(f"{k} {r['auroc_count_24h']:.2f}" for k, r in table.items()))
    if FAILS:
        print(f"FAILED: {len(FAILS)} check(s)")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
