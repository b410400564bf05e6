#!/usr/bin/env python3
"""Generate the synthetic demo patients in tests/fixtures/patients/ as CDS Hooks 2.0 `patient-view` requests.

    .venv/bin/python -m models.legacy.deterioration_v1.make_fixtures   # after train (uses deterioration/1.0.0/model.pt)

Seeded and deterministic. All people, identifiers and values are invented. The newest Observation in every file
is at exactly 2026-01-01T11:50:00Z; the gateway shifts all times relative to the real current time. Also writes
tests/fixtures/patients/README.md with the risk computed by fhir_features.py + the model at
now = 2026-01-01T12:00:00Z.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import random

import numpy as np

from models.legacy.deterioration_v1 import fhir_features as ff

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(ff.MODEL_ROOT))
OUT = os.path.join(ROOT, "tests", "fixtures", "patients")
# expected featurizer output for a Rust/Python parity test (kept out of the fixtures dir so that globbing
# tests/fixtures/patients/*.json only yields hook requests)
PARITY = os.path.join(HERE, "parity_expected.json")
SEED = 20260101
FHIR = "https://ehr.example.org/fhir"
NEWEST = dt.datetime(2026, 1, 1, 11, 50, tzinfo=dt.timezone.utc)
NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
UCUM = "http://unitsofmeasure.org"
CAT_SYS = "http://terminology.hl7.org/CodeSystem/observation-category"
CONSC = {"A": ("248234008", "Mentally alert"), "C": ("300202002", "New confusion"),
         "V": ("450847001", "Responds to voice"), "P": ("450848006", "Responds to pain"),
         "U": ("422768004", "Unresponsive")}


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def ramp(ago_h: float, start_ago: float, end_ago: float = 0.17, power: float = 1.0) -> float:
    """0 before start_ago hours before now, rising to 1 at end_ago hours before now."""
    x = (start_ago - ago_h) / (start_ago - end_ago)
    return float(min(1.0, max(0.0, x)) ** power)


class Builder:
    def __init__(self, pid: str):
        self.pid = pid
        self.entries = []
        self.n = {}

    def _id(self, kind):
        self.n[kind] = self.n.get(kind, 0) + 1
        return f"{self.pid}-{kind}-{self.n[kind]:03d}"

    def _obs(self, kind, t, code, display, category="vital-signs", status="final"):
        return {
            "resourceType": "Observation",
            "id": self._id(kind),
            "status": status,
            "category": [{"coding": [{"system": CAT_SYS, "code": category,
                                      "display": "Vital Signs" if category == "vital-signs" else "Laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}], "text": display},
            "subject": {"reference": f"Patient/{self.pid}"},
            "effectiveDateTime": iso(t),
        }

    def add(self, r):
        self.entries.append(r)
        return r

    def quantity(self, kind, t, code, display, value, unit, ucum, category="vital-signs", status="final"):
        r = self._obs(kind, t, code, display, category, status)
        r["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": ucum}
        return self.add(r)

    def hr(self, t, v, status="final"):
        return self.quantity("hr", t, "8867-4", "Heart rate", int(round(v)), "beats/minute", "/min", status=status)

    def rr(self, t, v):
        return self.quantity("rr", t, "9279-1", "Respiratory rate", int(round(v)), "breaths/minute", "/min")

    def spo2(self, t, v, code="59408-5"):
        disp = {"59408-5": "Oxygen saturation in Arterial blood by Pulse oximetry",
                "2708-6": "Oxygen saturation in Arterial blood"}[code]
        return self.quantity("spo2", t, code, disp, int(round(min(100, v))), "%", "%")

    def temp_c(self, t, v):
        return self.quantity("temp", t, "8310-5", "Body temperature", round(float(v), 1), "°C", "Cel")

    def temp_f(self, t, v_c):
        return self.quantity("temp", t, "8310-5", "Body temperature", round(float(v_c) * 9 / 5 + 32, 1), "°F", "[degF]")

    def bp(self, t, sys_, dia):
        r = self._obs("bp", t, "85354-9", "Blood pressure panel with all children optional")
        r["component"] = [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6", "display": "Systolic blood pressure"}]},
             "valueQuantity": {"value": int(round(sys_)), "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4", "display": "Diastolic blood pressure"}]},
             "valueQuantity": {"value": int(round(dia)), "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
        ]
        return self.add(r)

    def avpu(self, t, level):
        code, disp = CONSC[level]
        r = self._obs("loc", t, "67775-7", "Level of responsiveness")
        r["valueCodeableConcept"] = {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": disp}],
                                     "text": disp}
        return self.add(r)

    def bundle(self, resources=None):
        resources = self.entries if resources is None else resources
        resources = sorted(resources, key=lambda r: r["effectiveDateTime"], reverse=True)  # like _sort=-date
        return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
                "entry": [{"fullUrl": f"{FHIR}/Observation/{r['id']}", "resource": r, "search": {"mode": "match"}}
                          for r in resources]}


def rounds(rng, spacing, max_ago=47.5, jitter=0.25):
    """Round times (hours before now) from the newest (exactly 10 min before now) back to max_ago.
    spacing(ago) -> nominal hours to the previous round."""
    out = [10 / 60]
    while True:
        nxt = out[-1] + spacing(out[-1]) + rng.uniform(-jitter, jitter)
        nxt = round(nxt * 60) / 60  # whole minutes
        if nxt > max_ago:
            return out
        out.append(nxt)


def at(ago_h: float) -> dt.datetime:
    return NOW - dt.timedelta(minutes=round(ago_h * 60))


def patient_resource(pid, given, gender, birth):
    return {
        "resourceType": "Patient", "id": pid,
        "meta": {"tag": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HTEST",
                          "display": "test health data"}]},
        "identifier": [{"system": "urn:example:synthetic-mrn", "value": f"SYN-{pid.upper()}"}],
        "active": True,
        "name": [{"use": "official", "family": "Synthetic-Testpatient", "given": [given],
                  "text": f"{given} Synthetic-Testpatient (SYNTHETIC TEST PATIENT)"}],
        "gender": gender, "birthDate": birth,
    }


def labs(b: Builder, items):
    res = []
    for ago, code, disp, value, unit, ucum in items:
        res.append(b._obs("lab", at(ago), code, disp, category="laboratory"))
        res[-1]["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": ucum}
    return b.bundle(res)


CREA = ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL")
LACT = ("2524-7", "Lactate [Moles/volume] in Serum or Plasma", "mmol/L", "mmol/L")
WBC = ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", "10*3/uL")


def lab_rows(rows):
    return [(ago, spec[0], spec[1], val, spec[2], spec[3]) for ago, spec, val in rows]


# ----------------------------------------------------------------------------- the four patients
def make_stable(rng):
    b = Builder("demo-stable")
    for ago in rounds(rng, lambda a: 3.0):
        b.hr(at(ago), 72 + rng.normal(0, 3))
        b.rr(at(ago), 15 + rng.normal(0, 0.8))
        b.spo2(at(ago), 97 + rng.normal(0, 0.7))
        b.bp(at(ago), 124 + rng.normal(0, 6), 76 + rng.normal(0, 4))
        if rng.random() < 0.6:
            b.temp_c(at(ago), 36.7 + rng.normal(0, 0.15))
    for ago in (30.0, 6.5):
        b.avpu(at(ago), "A")
    # edge cases the featurizer must ignore:
    b.hr(at(49.5), 140)                          # older than the 48 h window
    b.hr(at(2.5), 250, status="entered-in-error")  # not final/amended/corrected
    lab = labs(b, lab_rows([(20, CREA, 0.9), (20, WBC, 6.8)]))
    return b, lab, patient_resource("demo-stable", "Stable", "female", "1958-04-12")


def make_deteriorating(rng):
    b = Builder("demo-deteriorating")
    for ago in rounds(rng, lambda a: 1.0 if a < 14 else 3.5, jitter=0.1):
        d = ramp(ago, 13, power=1.3)
        b.hr(at(ago), 84 + 44 * d + rng.normal(0, 3))
        b.rr(at(ago), 17 + 11 * d + rng.normal(0, 0.8))
        b.spo2(at(ago), 96 - 7 * d + rng.normal(0, 0.6))
        b.bp(at(ago), 126 - 38 * d + rng.normal(0, 4), 78 - 22 * d + rng.normal(0, 3))
        if ago < 14 or rng.random() < 0.7:
            b.temp_f(at(ago), 37.0 + 2.2 * d + rng.normal(0, 0.1))  # recorded in [degF]
    b.avpu(at(20.0), "A")
    b.avpu(at(4.0), "A")
    b.avpu(at(10 / 60), "C")  # new confusion at the newest round
    lab = labs(b, lab_rows([(30, CREA, 1.0), (3, CREA, 1.9), (3, LACT, 4.2), (30, WBC, 9.1), (3, WBC, 17.8)]))
    return b, lab, patient_resource("demo-deteriorating", "Dora", "male", "1949-09-03")


def make_early_warning(rng):
    b = Builder("demo-early-warning")
    for i, ago in enumerate(rounds(rng, lambda a: 2.0 if a < 16 else 3.0)):
        d = ramp(ago, 16, power=1.0)
        b.hr(at(ago), 64 + 22 * d + rng.normal(0, 2))
        b.rr(at(ago), 13 + 5 * d + rng.normal(0, 0.5))
        b.spo2(at(ago), 98.4 - 2.5 * d + rng.normal(0, 0.4), code="2708-6" if i % 2 else "59408-5")
        b.bp(at(ago), 142 - 26 * d + rng.normal(0, 3), 84 - 12 * d + rng.normal(0, 2))
        b.temp_c(at(ago), 36.5 + 1.1 * d + rng.normal(0, 0.08))
    b.avpu(at(24.0), "A")
    b.avpu(at(10 / 60), "A")
    lab = labs(b, lab_rows([(26, CREA, 0.8), (2, CREA, 1.1), (2, LACT, 1.9), (2, WBC, 11.6)]))
    return b, lab, patient_resource("demo-early-warning", "Early", "male", "1961-02-27")


def make_sparse(rng):
    b = Builder("demo-sparse")
    for ago, v in ((10 / 60, 88), (6.0, 84), (21.5, 81)):
        b.hr(at(ago), v)
    lab = labs(b, lab_rows([(12, CREA, 1.0)]))
    return b, lab, patient_resource("demo-sparse", "Sparse", "female", "1990-07-19")


PATIENTS = [
    ("stable.json", make_stable,
     "stable vitals every ~3 h, Alert; plus one HR outside the 48 h window and one `entered-in-error` HR (250) that "
     "must both be ignored. Expect low risk, no card."),
    ("deteriorating.json", make_deteriorating,
     "clear deterioration over the last ~13 h (HR, RR up; SpO2, SBP down; fever), hourly observations late, "
     "temperature recorded in `[degF]` (unit `°F`), new confusion (SNOMED 300202002) at the newest round. "
     "Expect high risk, NEWS2 >= 7."),
    ("early-warning.json", make_early_warning,
     "subtle drift from a healthy personal baseline over the last ~16 h; every value still inside or near the "
     "NEWS2 normal bands, SpO2 alternates between LOINC 59408-5 and 2708-6. The model should flag elevated risk "
     "while NEWS2 stays low (<= 4)."),
    ("sparse.json", make_sparse,
     "only 3 heart-rate observations, nothing else: insufficient data (the gateway should not show a risk card)."),
]


def main():
    os.makedirs(OUT, exist_ok=True)
    rng_ids = random.Random(SEED)
    spec = ff.load_spec()
    manifest = None
    model_dir = ff.DEFAULT_MODEL_DIR
    if os.path.exists(os.path.join(model_dir, "manifest.toml")):
        manifest = ff.load_manifest(model_dir)
    rows = []
    parity = {"now": iso(NOW), "model_sha256": manifest["sha256"] if manifest else None, "fixtures": {}}
    for k, (fname, fn, what) in enumerate(PATIENTS):
        rng = np.random.default_rng(SEED + k)
        b, lab_bundle, patient = fn(rng)
        pid = patient["id"]
        vitals = b.bundle()
        newest = max(e["resource"]["effectiveDateTime"] for e in vitals["entry"])
        assert newest == iso(NEWEST), (fname, newest)
        req = {
            "hook": "patient-view",
            "hookInstance": str(__import__("uuid").UUID(int=rng_ids.getrandbits(128), version=4)),
            "fhirServer": FHIR,
            "context": {"userId": "Practitioner/example", "patientId": pid, "encounterId": f"enc-{pid}"},
            "prefetch": {"patient": patient, "vitals": vitals, "labs": lab_bundle},
        }
        with open(os.path.join(OUT, fname), "w") as f:
            json.dump(req, f, indent=2, ensure_ascii=False)
            f.write("\n")
        row = {"file": fname, "what": what, "n_vitals": len(vitals["entry"])}
        if manifest is not None:
            x, meas, last = ff.featurize(req, NOW, spec, manifest)
            row.update(risk=ff.predict(x, model_dir), news2=ff.news2_from_last(last),
                       bins=int(x[:, spec["n_features"]:].sum()), last=last)
            parity["fixtures"][fname] = {"risk": round(row["risk"], 6), "news2": row["news2"],
                                         "tensor": [[round(float(v), 6) for v in r] for r in x]}
        rows.append(row)
        print(fname, {k: v for k, v in row.items() if k != "what"})
    write_readme(rows, manifest)
    if manifest is not None:
        with open(PARITY, "w") as f:
            json.dump(parity, f, separators=(",", ":"))
            f.write("\n")


def write_readme(rows, manifest):
    def fmt_last(last):
        names = ["HR", "RR", "SpO2", "T", "SBP", "notAlert"]
        return ", ".join(f"{n} {('%.1f' % v) if v is not None else '–'}" for n, v in zip(names, last))

    lines = [
        "# Synthetic demo patients (CDS Hooks `patient-view` requests)",
        "",
        "Generated by `models/legacy/deterioration_v1/make_fixtures.py` (seeded; do not edit by hand). Every person,",
        "identifier and value is invented (Patient resources carry the `HTEST` meta tag). Each file is a complete CDS",
        "Hooks 2.0 request with `prefetch.patient`, `prefetch.vitals` (Bundle searchset of vital-sign Observations,",
        "newest first) and `prefetch.labs` (creatinine 2160-0, lactate 2524-7, WBC 6690-2; not used by the model).",
        "",
        "The newest Observation in every file is exactly `2026-01-01T11:50:00Z`. The gateway shifts all times so they",
        "are relative to the real current time; the numbers below use `now = 2026-01-01T12:00:00Z` (bin 47 =",
        "11:00–12:00). Blood pressure is a 85354-9 panel (systolic = component 8480-6); consciousness is 67775-7 with",
        "a SNOMED valueCodeableConcept.",
        "",
        "| file | exercises | risk (model) | NEWS2 | observed bins | last values |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "risk" in r:
            lines.append(f"| `{r['file']}` | {r['what']} | {r['risk']:.4f} | {r['news2']} | {r['bins']} | "
                         f"{fmt_last(r['last'])} |")
        else:
            lines.append(f"| `{r['file']}` | {r['what']} | (no model) | | | |")
    if manifest is not None:
        lines += [
            "",
            f"Risk = `models/deterioration/1.0.0/model.pt` (sha256 `{manifest['sha256']}`) on the tensor built by",
            "`models/legacy/deterioration_v1/fhir_features.py`; NEWS2 = scale 1, air assumed, last observed value of each",
            "parameter in the window (missing parameters score 0). Reproduce with (from the repository root):",
            "",
            "```sh",
            ".venv/bin/python -m models.legacy.deterioration_v1.fhir_features tests/fixtures/patients/*.json \\",
            "    --now 2026-01-01T12:00:00Z",
            "```",
            "",
            "Observed bins = number of 1.0 entries in the mask channels 6..11 (out of 48 × 6 = 288).",
        ]
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
