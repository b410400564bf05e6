"""models.ward: an independent synthetic hospital ("the ward simulator") emitting FHIR R4 Bundles.

Latent physiology (infection -> inflammation -> organ dysfunction; haemorrhage / cardiac / respiratory /
neurological deterioration; prerenal, nephrotoxic and hypoperfusion AKI) evolves in continuous time as
closed-form functions of hours since admission and of the treatments given so far. A discrete-event
loop plays the ward: vitals rounds on clock schedules, escalation from the NEWS2 of *recorded* values,
morning labs with turnaround delays, doctor reviews, cultures, antibiotics, fluids and oxygen. The
observation policy only reads the chart (what has been recorded and resulted), never the latent state;
outcomes (ICU transfer at a review, death) come from the latent state. Assumptions: README.md.

    generate(n, seed, site=None) -> list[dict]
    python -m models.ward.generate --n 10 --seed 1 --out DIR
"""
from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import math
import os
from datetime import datetime, timedelta, timezone

import numpy as np

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
BASE = "https://ward.example.org/fhir"

EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
MAX_STAY_H = 240.0

WARD_NAMES = {
    "medical": ["Acute Medical Unit", "Ward 7 General Medicine", "Respiratory Ward 12", "Elderly Care Ward 3",
                "Cardiology Ward 5"],
    "surgical": ["Surgical Ward 9", "Orthopaedic Ward 2", "Colorectal Ward 14", "Vascular Surgery Ward 6"],
    "stepdown": ["Step-down Unit 4", "Medical HDU-lite 8", "Post-surgical Step-down 10"],
}

ACVPU = [("248234008", "Alert"), ("300202002", "New confusion"), ("450847001", "Responds to voice"),
         ("450848006", "Responds to pain"), ("422768004", "Unresponsive")]

ABX = {  # rxnorm, display, dosing interval h
    "ceftriaxone": ("2193", "ceftriaxone", 24.0),
    "piptazo": ("74169", "piperacillin / tazobactam", 8.0),
    "vancomycin": ("11124", "vancomycin", 12.0),
    "meropenem": ("29561", "meropenem", 8.0),
    "cefepime": ("20481", "cefepime", 12.0),
    "levofloxacin": ("82122", "levofloxacin", 24.0),
    "amoxclav": ("19711", "amoxicillin / clavulanate", 8.0),
    "metronidazole": ("6922", "metronidazole", 8.0),
    "cefazolin": ("2180", "cefazolin", 8.0),
}
BETA = {"metoprolol": ("6918", "metoprolol"), "bisoprolol": ("19484", "bisoprolol")}
OTHER_MEDS = {"ibuprofen": ("5640", "ibuprofen"), "furosemide": ("4603", "furosemide"),
              "saline": ("9863", "sodium chloride 0.9 % bolus")}


# ----------------------------------------------------------------------------------------------- site

def draw_site(seed: int) -> dict:
    """A hospital's parameters drawn from the seed (ranges documented in README.md)."""
    r = np.random.default_rng([int(seed), 0x517E])
    u = lambda a, b: round(float(r.uniform(a, b)), 4)  # noqa: E731
    kinds = ["medical", "surgical", "stepdown"]
    nw = int(r.integers(2, 5))
    wards = []
    for k in range(nw):
        kind = kinds[k] if k < 3 else kinds[int(r.integers(0, 3))]
        names = WARD_NAMES[kind]
        name = names[int(r.integers(0, len(names)))]
        if any(w["name"] == name for w in wards):
            name = f"{name} ({k})"
        wards.append({"name": name, "kind": kind, "weight": u(0.5, 2.0),
                      "schedule": [round(float(x), 4) for x in r.dirichlet([2, 3, 2, 1] if kind != "stepdown"
                                                                          else [5, 2, 1, 0.3])]})
    tz = [0.0, 0.0, 1.0, 2.0, -5.0, -8.0][int(r.integers(0, 6))]
    return {
        "name": f"ward-site-{seed}",
        "age_mean": u(58, 74), "age_sd": u(12, 18), "p_male": u(0.45, 0.56),
        "p_ckd": u(0.08, 0.25), "p_copd": u(0.06, 0.20), "p_hypercapnic": u(0.15, 0.40), "p_beta_blocker": u(0.12, 0.35),
        "p_nsaid": u(0.03, 0.12), "p_diuretic": u(0.10, 0.30), "p_ceiling": u(0.05, 0.15),
        "p_infection": u(0.12, 0.24), "p_severe_infection": u(0.35, 0.60), "p_poa_infection": u(0.10, 0.25),
        "p_deterioration": u(0.06, 0.14), "p_aki": u(0.04, 0.10), "p_nephrotoxic_aki": u(0.10, 0.30),
        "wards": wards,
        "escalation_adherence": u(0.60, 0.95), "p_missed_round": u(0.02, 0.12), "late_sd_min": u(10, 60),
        "p_partial_set": u(0.05, 0.25), "news_low_interval_h": float(r.choice([4.0, 6.0])),
        "fever_threshold": u(38.0, 38.5), "p_admission_culture": u(0.03, 0.12), "p_abx_after_culture": u(0.55, 0.90),
        "p_empiric_abx": u(0.02, 0.06), "p_lab_daily": u(0.70, 0.95), "weekend_lab_factor": u(0.6, 1.0),
        "turnaround_scale": u(0.7, 1.5),
        "noise_scale": u(0.8, 1.4), "p_spo2_dropout": u(0.005, 0.03), "p_duplicate": u(0.01, 0.05),
        "p_entry_error": u(0.002, 0.01), "p_absent": u(0.005, 0.02), "p_preliminary": u(0.0, 0.05),
        "codes": {
            "spo2": [round(float(x), 4) for x in r.dirichlet([3, 1, 1])],  # 2708-6, 59408-5, 20564-1
            "hr_8889": u(0.0, 0.35), "temp_degF": float(r.choice([0.0, 0.0, u(0.1, 0.7), 1.0])),
            "temp_oral": u(0.0, 0.5), "bp_panel": u(0.2, 1.0), "gcs": float(r.choice([0.0, u(0.2, 0.8), 1.0])),
            "creat_umol": float(r.choice([0.0, 0.05, 0.95, 1.0])), "lactate_32693": u(0.0, 0.5),
            "wbc_26464": u(0.0, 0.5), "plt_26515": u(0.0, 0.5), "fio2_on_air": u(0.0, 0.6),
        },
        "tz_offset_h": tz, "microseconds": bool(r.random() < 0.5), "utc_z": bool(r.random() < 0.5),
    }


def _site(seed: int, site: dict | None) -> dict:
    s = draw_site(seed)
    if site:
        codes = {**s["codes"], **site.get("codes", {})}
        s.update(site)
        s["codes"] = codes
    return s


# ----------------------------------------------------------------------------------------------- helpers

def smoothstep(x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    return x * x * (3.0 - 2.0 * x)


def news2(v: dict, scale2: bool) -> tuple[int, int]:
    """NEWS2 (RCP 2017) of the given values -> (total, largest single-parameter score). Missing = 0."""
    parts = []
    rr = v.get("rr")
    if rr is not None:
        parts.append(3 if rr <= 8 else 1 if rr <= 11 else 0 if rr <= 20 else 2 if rr <= 24 else 3)
    s = v.get("spo2")
    o2 = v.get("o2", False)
    if s is not None:
        s = round(s)
        if not scale2:
            parts.append(3 if s <= 91 else 2 if s <= 93 else 1 if s <= 95 else 0)
        elif s <= 83:
            parts.append(3)
        elif s <= 85:
            parts.append(2)
        elif s <= 87:
            parts.append(1)
        elif s <= 92 or not o2:
            parts.append(0)
        else:
            parts.append(1 if s <= 94 else 2 if s <= 96 else 3)
    parts.append(2 if o2 else 0)
    sbp = v.get("sbp")
    if sbp is not None:
        parts.append(3 if sbp <= 90 else 2 if sbp <= 100 else 1 if sbp <= 110 else 0 if sbp <= 219 else 3)
    hr = v.get("hr")
    if hr is not None:
        parts.append(3 if hr <= 40 else 1 if hr <= 50 else 0 if hr <= 90 else 1 if hr <= 110 else 2 if hr <= 130 else 3)
    if v.get("alert") is False:
        parts.append(3)
    t = v.get("temp")
    if t is not None:
        t = round(t, 1)
        parts.append(3 if t <= 35.0 else 1 if t <= 36.0 else 0 if t <= 38.0 else 1 if t <= 39.0 else 2)
    return sum(parts), max(parts) if parts else 0


def split_of(pid: str) -> str:
    h = int(hashlib.sha256(pid.encode()).hexdigest()[:8], 16) % 100
    return "train" if h < 70 else "valid" if h < 80 else "test"


FIRST = ["Alex", "Sam", "Jo", "Robin", "Kim", "Chris", "Pat", "Lee", "Nico", "Ira", "Dana", "Mika", "Ren", "Toni",
         "Vic", "Ari", "Eli", "Noor", "Sasha", "Jules"]
LAST = ["Testwell", "Synthby", "Mockridge", "Fauxley", "Simson", "Dummett", "Placeton", "Sampleford", "Quasimo",
        "Fictor", "Nullman", "Proxley", "Modelle", "Stubbins"]


# ----------------------------------------------------------------------------------------------- patient

class Patient:
    """One stay: latent physiology + the ward's discrete-event observation and treatment policy."""

    def __init__(self, seed: int, i: int, site: dict):
        self.site = site
        self.pid = f"ward{seed}-{i:06d}"
        self.r = np.random.default_rng([int(seed), int(i), 0xA11])     # physiology
        self.q = np.random.default_rng([int(seed), int(i), 0x0B5])     # ward / measurement noise
        self._draw_patient()

    # ---------------------------------------------------------------- latent model
    def _draw_patient(self):
        r, s = self.r, self.site
        self.sex = "male" if r.random() < s["p_male"] else "female"
        self.age = int(np.clip(r.normal(s["age_mean"], s["age_sd"]), 18, 98))
        older = (self.age - 60) / 20.0
        self.ckd = bool(r.random() < s["p_ckd"] * (1 + 0.5 * max(older, 0)))
        self.copd = bool(r.random() < s["p_copd"])
        self.hypercapnic = bool(self.copd and r.random() < s["p_hypercapnic"])
        self.beta_blocker = bool(r.random() < s["p_beta_blocker"] * (1 + 0.4 * max(older, 0)))
        self.beta_drug = "metoprolol" if r.random() < 0.5 else "bisoprolol"
        self.nsaid = bool(r.random() < s["p_nsaid"])
        self.diuretic = bool(r.random() < s["p_diuretic"] * (1 + 0.5 * self.ckd))
        self.ceiling = bool(self.age > 75 and r.random() < s["p_ceiling"] * 2.5)
        ws = s["wards"]
        w = np.array([x["weight"] for x in ws], float)
        self.ward = ws[int(r.choice(len(ws), p=w / w.sum()))]
        self.unit = self.ward["name"]
        self.kind = self.ward["kind"]
        # baselines
        self.hr0 = r.normal(80, 9) - (11 if self.beta_blocker else 0)
        self.bb = 0.5 if self.beta_blocker else 1.0
        self.sbp0 = r.normal(128, 14) + 0.25 * (self.age - 60)
        self.dbp_ratio = r.uniform(0.52, 0.66)
        self.rr0 = r.uniform(13, 18) + (2.5 if self.copd else 0)
        self.t0 = r.normal(36.75, 0.2)
        self.spo2_0 = r.uniform(88.5, 93.5) if self.copd else min(99.4, r.normal(97.0, 1.0))
        self.cr0 = (r.lognormal(math.log(0.95 if self.sex == "male" else 0.78), 0.15)
                    * (r.uniform(1.7, 3.8) if self.ckd else 1.0))
        self.plt0 = r.lognormal(math.log(240), 0.25)
        self.wbc0 = r.lognormal(math.log(7.2), 0.2)
        self.bili0 = r.lognormal(math.log(0.55), 0.35)
        self.lac0 = r.uniform(0.7, 1.5)
        self.fever_gain = -0.7 if r.random() < 0.1 else r.uniform(0.6, 1.4)
        self.wbc_gain = -0.5 if r.random() < 0.1 else r.uniform(0.5, 1.5)
        self.circ_phase = r.uniform(-2, 2)
        # planned stay
        self.planned_los = float(np.clip(r.lognormal(math.log(80), 0.55), 24, MAX_STAY_H))
        if self.kind == "surgical":
            self.postop = r.uniform(-6, 30) if r.random() < 0.7 else None
        else:
            self.postop = None
        # infection
        self.inf = None
        p_inf = s["p_infection"] * (1 + 0.3 * max(older, 0)) * (1.3 if self.copd else 1.0)
        if r.random() < p_inf:
            severe = r.random() < s["p_severe_infection"]
            poa = r.random() < s["p_poa_infection"]
            t_inf = -r.uniform(0, 36) if poa else 4 + r.uniform(0, 0.85 * self.planned_los)
            self.inf = {
                "t": t_inf, "rise": r.uniform(2, 8) if r.random() < 0.3 else r.uniform(8, 48),
                "peak": (r.uniform(1.4, 2.4) if r.random() < 0.7 else r.uniform(2.4, 3.4)) if severe else r.uniform(0.35, 1.05),
                "self_dur": r.uniform(36, 120), "tau_self": r.uniform(12, 36),
                "lag": r.uniform(4, 18), "tau_abx": r.uniform(10, 30), "abx_eff": None,
                "pulmonary": r.random() < (0.5 if self.copd else 0.3),
                "first_abx_adequate": r.random() < 0.85, "severe": severe,
            }
        # non-infectious deterioration
        self.det = None
        p_det = s["p_deterioration"] * (1 + 0.3 * max(older, 0)) * (0.6 if self.kind == "stepdown" else 1.0)
        if r.random() < p_det:
            kinds = {"medical": [0.15, 0.35, 0.3, 0.2], "surgical": [0.45, 0.25, 0.2, 0.1],
                     "stepdown": [0.2, 0.4, 0.3, 0.1]}[self.kind]
            cause = ["haemorrhage", "cardiac", "respiratory", "neuro"][int(r.choice(4, p=kinds))]
            if cause == "respiratory" and self.copd:
                pass
            early = r.random() < 0.15
            self.det = {
                "cause": cause, "t": r.uniform(0, 12) if early else r.uniform(0, 0.9 * self.planned_los),
                "rise": r.uniform(0.1, 1.0) if r.random() < 0.3 else r.uniform(2, 24),
                "mag": r.uniform(0.9, 1.8) if r.random() < 0.65 else r.uniform(0.3, 0.85),
                "transient": r.random() < 0.35, "hold": r.uniform(2, 12), "tau": r.uniform(3, 12),
                "brady": cause == "cardiac" and r.random() < 0.2,
            }
        # primary (prerenal / obstructive) AKI
        self.aki = []
        if r.random() < s["p_aki"] * (1.6 if self.ckd else 1.0) * (1.4 if self.diuretic or self.nsaid else 1.0):
            poa = r.random() < 0.15
            self.aki.append({"t": -r.uniform(0, 24) if poa else 6 + r.uniform(0, 0.85 * self.planned_los),
                             "amp": r.uniform(0.25, 2.0), "dur": r.uniform(12, 60), "rec": None,
                             "natural_rec": r.uniform(48, 160), "tau": r.uniform(24, 72), "prerenal": r.random() < 0.6})
        self.biovar = r.uniform(0.02, 0.06)
        # dynamic treatment state
        self.o2_flow = 0.0
        self.fio2 = None
        self.o2_hist = [(-1e9, 0.0, None)]
        self.fluids = []

    def infection(self, t: float) -> tuple[float, float]:
        f = self.inf
        if f is None or t <= f["t"]:
            return 0.0, 0.0
        x = t - f["t"]
        v = f["peak"] * smoothstep(x / f["rise"])
        decay = 0.0
        if f["abx_eff"] is not None and t > f["abx_eff"]:
            decay += (t - f["abx_eff"]) / f["tau_abx"]
        if f["peak"] < 1.1 and x > f["self_dur"]:
            decay += (x - f["self_dur"]) / f["tau_self"]
        v *= math.exp(-decay)
        return v, max(0.0, v - 1.0)

    def deterioration(self, t: float) -> float:
        d = self.det
        if d is None or t <= d["t"]:
            return 0.0
        g = d["mag"] * smoothstep((t - d["t"]) / d["rise"])
        end = d["t"] + d["rise"] + d["hold"]
        if (d["transient"] or d["mag"] < 0.9) and t > end:
            g *= math.exp(-(t - end) / d["tau"])
        return g

    def creat_factor(self, t: float) -> float:
        f = 0.0
        for a in self.aki:
            x = t - a["t"]
            if x <= 0:
                continue
            v = a["amp"] * smoothstep(x / a["dur"])
            rec = a["natural_rec"] if a["rec"] is None else min(a["rec"], a["natural_rec"])
            if x > rec:
                v *= math.exp(-(x - rec) / a["tau"])
            f += v
        _, d6 = self.infection(t - 8)
        shock = 0.0
        if self.det and self.det["cause"] in ("haemorrhage", "cardiac"):
            shock = max(0.0, self.deterioration(t - 8) - 0.6)
        return (1 + f) * (1 + 0.6 * d6 + 0.6 * shock)

    def o2_at(self, t: float):
        flow, fio2 = 0.0, None
        for tt, fl, fi in self.o2_hist:
            if tt <= t:
                flow, fio2 = fl, fi
        return flow, fio2

    def latent(self, t: float) -> dict:
        lh = (self.admit_local_h + t) % 24.0
        circ = math.sin(2 * math.pi * (lh - 10 + self.circ_phase) / 24.0)  # peak ~16:00
        infl, d = self.infection(t)
        _, d12 = self.infection(t - 12)
        g = self.deterioration(t)
        cause = self.det["cause"] if self.det else None
        hr = self.hr0 + 4 * circ + self.bb * (16 * infl + 10 * d)
        sbp = self.sbp0 + 5 * circ - 5 * infl - 30 * d
        rr = self.rr0 + 0.6 * circ + 3.5 * infl + 3 * d
        temp = self.t0 + 0.3 * circ + self.fever_gain * 1.1 * min(infl, 2.2)
        spo2 = self.spo2_0 - 2.5 * d - (3.5 * infl if self.inf and self.inf["pulmonary"] else 0.5 * infl)
        gcs_def = 2.0 * max(0.0, d - 0.3)
        lac = self.lac0 + 1.4 * d
        if self.postop is not None and 0 < t - self.postop < 36:
            temp += 0.9 * math.sin(math.pi * (t - self.postop) / 36)
            hr += 6 * math.sin(math.pi * (t - self.postop) / 36)
        if g > 0:
            if cause == "haemorrhage":
                hr += self.bb * 30 * g; sbp -= 38 * g; rr += 4 * g; lac += 2.2 * g; gcs_def += 2 * max(0, g - 0.9)
            elif cause == "cardiac":
                hr += (-30 * g) if self.det["brady"] else self.bb * 32 * g
                sbp -= 30 * g; rr += 7 * g; spo2 -= 5 * g; lac += 1.5 * g; gcs_def += 1.5 * max(0, g - 1.0)
            elif cause == "respiratory":
                rr += 12 * g; spo2 -= 11 * g; hr += self.bb * 16 * g; sbp -= 4 * g
                gcs_def += 2.0 * max(0, g - 1.0) * (2 if self.hypercapnic else 1)
            else:
                gcs_def += 5 * g; rr -= 3 * g; spo2 -= 3 * g; sbp += 10 * g
        for tb in self.fluids:
            if t > tb:
                sbp += 9 * math.exp(-(t - tb) / 3.0)
        flow, fio2 = self.o2_at(t)
        if fio2 is not None:
            spo2 += (fio2 - 21) * 0.28
        else:
            spo2 += 1.7 * flow
            if self.hypercapnic and flow > 4:
                gcs_def += 0.35 * (flow - 4)
        spo2 = min(spo2, 99.6 if not self.copd else 97.5)
        cr = self.cr0 * self.creat_factor(t)
        return {
            "hr": hr, "sbp": sbp, "dbp": sbp * self.dbp_ratio, "rr": max(rr, 5.0), "temp": temp,
            "spo2": max(spo2, 55.0), "gcs_def": max(gcs_def, 0.0), "cr": cr,
            "plt": self.plt0 * max(0.12, 1 - 0.45 * d12 - (0.2 * g if cause == "haemorrhage" else 0)),
            "wbc": max(0.4, self.wbc0 * (1 + 0.6 * self.wbc_gain * min(infl, 2.5)) + (2 * g if g > 0.5 else 0)),
            "bili": self.bili0 + 1.6 * d12, "lac": lac, "o2": flow > 0 or fio2 is not None,
        }

    def severity(self, t: float) -> int:
        v = self.latent(t)
        total, _ = news2({**v, "alert": v["gcs_def"] < 1.0}, self.hypercapnic)
        return total


# ----------------------------------------------------------------------------------------------- ward

class Ward:
    """Discrete-event simulation of one stay; builds the Bundle."""

    def __init__(self, p: Patient, seed: int, i: int):
        self.p, self.s, self.q = p, p.site, p.q
        s, q = self.s, self.q
        day = int(q.integers(0, 365))
        lh = float(np.clip(q.normal(15, 4.5), 0, 23.9))
        self.tz = timezone(timedelta(hours=s["tz_offset_h"]))
        local_midnight = EPOCH + timedelta(days=day) - timedelta(hours=s["tz_offset_h"])
        self.admit = (local_midnight + timedelta(seconds=round(lh * 3600))).replace(microsecond=0)
        p.admit_local_h = lh
        self.admit_weekday = (EPOCH + timedelta(days=day)).weekday()
        self.res = []
        self.n_ids = 0
        self.heap = []
        self.seq = 0
        self.ended = False
        self.end_t = None
        self.end_kind = None
        # chart: what clinicians can see (recorded / resulted values): name -> list[(t, value)]
        self.chart = {}
        self.news_hist = []
        self.last_culture = -1e9
        self.last_review = -1e9
        self.abx_on = {}
        self.abx_start = None
        self.abx_stop = None
        self.cultured = False
        self.fluid_count = 0
        self.icu_t = None
        self.death_t = None
        self.stopped_nephrotox = False
        self.pending_round = None
        # per-patient code choices
        c = s["codes"]
        self.code_spo2 = ["2708-6", "59408-5", "20564-1"][int(q.choice(3, p=np.array(c["spo2"], float) / sum(c["spo2"])))]
        self.code_hr = "8889-8" if q.random() < c["hr_8889"] else "8867-4"
        self.temp_f = q.random() < c["temp_degF"]
        self.code_temp = "8331-1" if q.random() < c["temp_oral"] else "8310-5"
        self.bp_panel = q.random() < c["bp_panel"]
        self.gcs = q.random() < c["gcs"]
        self.cr_umol = q.random() < c["creat_umol"]
        self.code_lac = "32693-4" if q.random() < c["lactate_32693"] else "2524-7"
        self.code_wbc = "26464-8" if q.random() < c["wbc_26464"] else "6690-2"
        self.code_plt = "26515-7" if q.random() < c["plt_26515"] else "777-3"
        self.fio2_on_air = q.random() < c["fio2_on_air"]
        sched = s_w = self.p.ward["schedule"]
        self.base_interval = [4.0, 6.0, 8.0, 12.0][int(q.choice(4, p=np.array(s_w) / sum(sched)))]

    # ---------------------------------------------------------------- time / ids
    def ts(self, t: float, seconds_only: bool = False) -> str:
        dt = (self.admit + timedelta(microseconds=round(t * 3.6e9))).astimezone(self.tz)
        if not self.s["microseconds"] or seconds_only:
            dt = dt.replace(microsecond=0)
            out = dt.isoformat(timespec="seconds")
        else:
            out = dt.isoformat(timespec="microseconds")
        if self.s["utc_z"] and out.endswith("+00:00"):
            out = out[:-6] + "Z"
        return out

    def dt(self, t: float) -> datetime:
        return self.admit + timedelta(microseconds=round(t * 3.6e9))

    def nid(self, kind: str) -> str:
        self.n_ids += 1
        return f"{self.p.pid}-{kind}-{self.n_ids}"

    def push(self, t: float, kind: str, payload=None):
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, payload))

    def local_hour(self, t: float) -> float:
        return (self.p.admit_local_h + t) % 24.0

    def next_local(self, t: float, hour: float) -> float:
        """The first time >= t at the given local clock hour."""
        lh = self.local_hour(t)
        return t + ((hour - lh) % 24.0)

    def chart_add(self, name, t, v):
        self.chart.setdefault(name, []).append((t, v))

    def last(self, name, t, max_age):
        xs = self.chart.get(name)
        if not xs:
            return None
        for tt, v in reversed(xs):
            if tt <= t:
                return v if t - tt <= max_age else None
        return None

    # ---------------------------------------------------------------- FHIR builders
    def ref(self, kind, rid):
        return {"reference": f"{kind}/{rid}"}

    def obs(self, t, code, display, value=None, unit=None, ucum=None, cat="vital-signs", issued=None,
            status="final", concept=None, components=None, absent=None, rid=None, note=None):
        o = {"resourceType": "Observation", "id": rid or self.nid("obs"), "status": status,
             "category": [{"coding": [{"system": OBS_CAT, "code": cat,
                                       "display": "Vital Signs" if cat == "vital-signs" else "Laboratory"}]}],
             "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
             "subject": self.ref("Patient", self.p.pid), "encounter": self.ref("Encounter", self.enc_id),
             "effectiveDateTime": self.ts(t)}
        if issued is not None:
            o["issued"] = self.ts(issued)
        if value is not None:
            o["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": ucum}
        elif concept is not None:
            o["valueCodeableConcept"] = concept
        elif absent is not None:
            o["dataAbsentReason"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                                                 "code": absent}]}
        if components:
            o["component"] = components
        if note:
            o["note"] = [{"text": note}]
        self.res.append(o)
        return o

    def med_admin(self, t, key, table, dose=None):
        code, disp = table[key][:2]
        m = {"resourceType": "MedicationAdministration", "id": self.nid("ma"), "status": "completed",
             "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code, "display": disp}], "text": disp},
             "subject": self.ref("Patient", self.p.pid), "context": self.ref("Encounter", self.enc_id),
             "effectiveDateTime": self.ts(t)}
        if dose:
            m["dosage"] = {"dose": dose}
        self.res.append(m)

    def med_request(self, t, key, table, status="active"):
        code, disp = table[key][:2]
        self.res.append({"resourceType": "MedicationRequest", "id": self.nid("mr"), "status": status,
                         "intent": "order",
                         "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code, "display": disp}],
                                                       "text": disp},
                         "subject": self.ref("Patient", self.p.pid), "encounter": self.ref("Encounter", self.enc_id),
                         "authoredOn": self.ts(t)})

    def service_request(self, t, code, display, system=LOINC):
        rid = self.nid("sr")
        self.res.append({"resourceType": "ServiceRequest", "id": rid, "status": "completed", "intent": "order",
                         "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
                         "subject": self.ref("Patient", self.p.pid), "encounter": self.ref("Encounter", self.enc_id),
                         "authoredOn": self.ts(t)})
        return rid

    # ---------------------------------------------------------------- vitals round
    def round(self, t, kind="scheduled"):
        p, s, q = self.p, self.s, self.q
        v = p.latent(t)
        ns = s["noise_scale"]
        partial = q.random() < s["p_partial_set"] and kind == "scheduled"
        rec = {}
        # measurement with noise and digit preference
        hr = v["hr"] + q.normal(0, 3 * ns)
        rr = v["rr"] + q.normal(0, 1.5 * ns)
        rr = 2 * round(rr / 2) if q.random() < 0.6 else round(rr)
        sbp = v["sbp"] + q.normal(0, 6 * ns)
        dbp = v["dbp"] + q.normal(0, 5 * ns)
        temp = v["temp"] + q.normal(0, 0.18 * ns)
        spo2 = min(100.0, round(v["spo2"] + q.normal(0, 1.0 * ns)))
        gcs = int(np.clip(15 - math.floor(v["gcs_def"] + q.uniform(0, 0.9)), 3, 15))
        items = ["hr", "rr", "bp", "temp", "spo2", "cons"]
        if partial:
            drop = {"temp": 0.5, "cons": 0.5, "rr": 0.35, "bp": 0.15, "spo2": 0.1, "hr": 0.05}
            items = [k for k in items if q.random() > drop[k]]
        vals = {"hr": round(hr), "rr": max(4, rr), "sbp": round(sbp), "dbp": round(dbp), "temp": round(temp, 1),
                "spo2": spo2, "gcs": gcs}
        tt = t
        for k in items:
            tt += q.uniform(0.0, 0.04)  # a set is entered over a few minutes
            self.vital(k, tt, vals, rec)
        flow, fio2 = p.o2_at(t)
        if fio2 is not None:
            self.obs(tt, "3150-0", "Inhaled oxygen concentration", fio2, "%", "%")
        elif flow > 0:
            self.obs(tt, "3151-8", "Inhaled oxygen flow rate", flow, q.choice(["L/min", "l/min"]), "L/min")
        elif self.fio2_on_air:
            self.obs(tt, "3150-0", "Inhaled oxygen concentration", 21, "%", "%")
        rec["o2"] = flow > 0 or fio2 is not None
        self.after_round(t, rec)

    def vital(self, k, t, vals, rec):
        s, q = self.s, self.q
        issued = t + q.uniform(0.0, 0.1)
        err = q.random() < s["p_entry_error"]
        absent = q.random() < s["p_absent"]
        if k == "hr":
            val = vals["hr"]
            self.emit_q(t, self.code_hr, "Heart rate", val, q.choice(["beats/minute", "/min", "bpm"]), "/min", err,
                        lambda x: x * 10, absent)
            rec["hr"] = val
        elif k == "rr":
            val = vals["rr"]
            self.emit_q(t, "9279-1", "Respiratory rate", val, q.choice(["breaths/minute", "/min"]), "/min", err,
                        lambda x: x * 10, absent)
            rec["rr"] = val
        elif k == "temp":
            c = vals["temp"]
            disp = "Oral temperature" if self.code_temp == "8331-1" else "Body temperature"
            if self.temp_f:
                f = round(c * 9 / 5 + 32, 1)
                self.emit_q(t, self.code_temp, disp, f, q.choice(["°F", "degF", "F"]), "[degF]", err,
                            lambda x: round(x / 10, 2), absent)
            else:
                self.emit_q(t, self.code_temp, disp, c, q.choice(["°C", "C", "degC", "Cel"]), "Cel", err,
                            lambda x: round(x / 10, 2), absent)
            rec["temp"] = c
        elif k == "spo2":
            val = vals["spo2"]
            disp = {"2708-6": "Oxygen saturation in Arterial blood", "59408-5":
                    "Oxygen saturation in Arterial blood by Pulse oximetry", "20564-1": "Oxygen saturation in Blood"}
            if q.random() < s["p_spo2_dropout"]:
                bad = int(q.integers(45, 82))
                self.obs(t, self.code_spo2, disp[self.code_spo2], bad, "%", "%",
                         note="probe displaced" if q.random() < 0.3 else None)
                t = t + q.uniform(0.05, 0.25)  # re-sited probe, re-measured
            self.emit_q(t, self.code_spo2, disp[self.code_spo2], val, "%", "%", False, None, absent)
            rec["spo2"] = val
        elif k == "bp":
            sb, db = vals["sbp"], vals["dbp"]
            unit = q.choice(["mmHg", "mm Hg", "mm[Hg]"])
            if absent:
                self.obs(t, "85354-9", "Blood pressure panel", absent="not-performed")
                return
            if self.bp_panel:
                comps = [{"code": {"coding": [{"system": LOINC, "code": "8480-6", "display": "Systolic blood pressure"}]},
                          "valueQuantity": {"value": sb, "unit": unit, "system": UCUM, "code": "mm[Hg]"}},
                         {"code": {"coding": [{"system": LOINC, "code": "8462-4", "display": "Diastolic blood pressure"}]},
                          "valueQuantity": {"value": db, "unit": unit, "system": UCUM, "code": "mm[Hg]"}}]
                o = self.obs(t, "85354-9", "Blood pressure panel with all children optional", components=comps)
                if q.random() < s["p_duplicate"]:
                    self.res.append({**o, "id": self.nid("obs")})
            else:
                self.emit_q(t, "8480-6", "Systolic blood pressure", sb, unit, "mm[Hg]", err, lambda x: x * 10, False)
                self.emit_q(t, "8462-4", "Diastolic blood pressure", db, unit, "mm[Hg]", False, None, False)
            rec["sbp"] = sb
        elif k == "cons":
            g = vals["gcs"]
            if self.gcs:
                self.emit_q(t, "9269-2", "Glasgow coma score total", g, "{score}", "{score}", False, None, absent)
            else:
                a = 0 if g == 15 else 1 if g >= 13 else 2 if g >= 9 else 3 if g >= 6 else 4
                code, disp = ACVPU[a]
                self.obs(t, "67775-7", "Level of responsiveness",
                         concept={"coding": [{"system": SNOMED, "code": code, "display": disp}], "text": disp})
            rec["alert"] = g == 15
        for key in ("hr", "rr", "temp", "spo2", "sbp", "alert"):
            if key in rec and not (key + "_charted") in rec:
                self.chart_add(key, t, rec[key])
                rec[key + "_charted"] = True

    def emit_q(self, t, code, disp, val, unit, ucum, err, errf, absent):
        s, q = self.s, self.q
        if absent:
            self.obs(t, code, disp, absent=q.choice(["not-performed", "error", "asked-declined"]))
            return
        if err and errf is not None:
            bad = errf(val)
            mode = q.random()
            if mode < 0.45:  # wrong value marked entered-in-error, re-entered
                self.obs(t, code, disp, bad, unit, ucum, status="entered-in-error")
                self.obs(t + q.uniform(0.02, 0.3), code, disp, val, unit, ucum)
            elif mode < 0.8:  # corrected in place: the snapshot holds version 2
                o = self.obs(t, code, disp, val, unit, ucum, status=q.choice(["corrected", "amended"]))
                o["meta"] = {"versionId": "2"}
                o["note"] = [{"text": f"value corrected from {bad}"}]
            else:  # never corrected
                self.obs(t, code, disp, bad, unit, ucum)
            return
        o = self.obs(t, code, disp, val, unit, ucum)
        if q.random() < s["p_duplicate"]:
            self.res.append({**o, "id": self.nid("obs")})

    # ---------------------------------------------------------------- policy after a round
    def after_round(self, t, rec):
        p, s, q = self.p, self.s, self.q
        cur = {k: self.last(k, t, 12.0) for k in ("hr", "rr", "temp", "spo2", "sbp", "alert")}
        cur["o2"] = rec["o2"]
        total, single = news2(cur, p.hypercapnic)
        self.news_hist.append((t, total))
        # nurse oxygen titration from the recorded SpO2
        spo2 = rec.get("spo2")
        lo, hi = (88, 92) if p.hypercapnic else (94, 98)
        if spo2 is not None:
            flow, fio2 = p.o2_at(t)
            if spo2 < lo:
                if fio2 is not None:
                    fio2 = min(fio2 + 10, 80)
                elif flow >= 6:
                    fio2, flow = 40, 0.0
                else:
                    flow = (2.0 if flow == 0 else flow + 2.0) if not p.hypercapnic else (1.0 if flow == 0 else flow + 1.0)
                p.o2_hist.append((t + 0.05, flow, fio2))
            elif spo2 > hi and (flow > 0 or fio2 is not None) and q.random() < 0.6:
                if fio2 is not None:
                    fio2 = fio2 - 10 if fio2 > 31 else None
                    flow = 4.0 if fio2 is None else 0.0
                else:
                    flow = max(0.0, flow - 2.0)
                p.o2_hist.append((t + 0.05, flow, fio2))
        # escalation of the observation frequency (RCP 2017 chart) from the recorded NEWS2
        base = self.base_interval
        if total >= 7:
            want = 0.5
        elif total >= 5 or single >= 3:
            want = 1.0
        elif total >= 1:
            want = min(base, s["news_low_interval_h"])
        else:
            want = base
        if want < base and q.random() > s["escalation_adherence"]:
            want = min(base, 4.0)
        # doctor review
        if total >= 5 and t - self.last_review >= (2.0 if total >= 7 else 4.0):
            self.last_review = t
            self.push(t + q.uniform(0.1, 0.5 if total >= 7 else 1.2), "review", total)
        # fever -> cultures
        temp = rec.get("temp")
        if temp is not None and (temp >= s["fever_threshold"] or temp <= 35.5) and t - self.last_culture > 48:
            if q.random() < 0.8:
                self.push(t + q.uniform(0.1, 1.0), "culture", "fever")
        self.schedule_round(t, want)

    def schedule_round(self, t, want):
        s, q = self.s, self.q
        base = self.base_interval
        if want >= base:
            # next clock slot of the ward schedule
            slots = {4.0: [2, 6, 10, 14, 18, 22], 6.0: [0, 6, 12, 18], 8.0: [6, 14, 22], 12.0: [8, 20]}[base]
            cands = [self.next_local(t + 1.5, h) for h in slots]
            nominal = min(cands)
        else:
            nominal = t + want
        while True:
            late = abs(q.normal(0, s["late_sd_min"] / 60.0)) * (0.4 if want <= 1 else 1.0)
            lh = self.local_hour(nominal)
            pmiss = s["p_missed_round"] * (1.8 if (lh >= 22 or lh < 6) else 1.0) * (0.3 if want <= 1 else 1.0)
            if q.random() < pmiss:
                nominal += max(want, 1.0) if want < base else base
                continue
            break
        self.pending_round = nominal + late
        self.push(nominal + late, "round", self.pending_round)

    # ---------------------------------------------------------------- labs
    def lab_draw(self, t, tests, why="routine"):
        p, s, q = self.p, self.s, self.q
        v = p.latent(t)
        bio = 1 + q.normal(0, p.biovar)
        sc = s["turnaround_scale"]
        for test in tests:
            pre = q.random() < s["p_preliminary"]
            if test == "cr":
                cr = v["cr"] * bio * (1 + q.normal(0, 0.035))
                issued = t + q.uniform(0.7, 3.0) * sc
                if self.cr_umol:
                    self.lab(t, issued, "14682-9", "Creatinine [Moles/volume] in Serum or Plasma", round(cr * 88.42),
                             q.choice(["µmol/L", "umol/L"]), "umol/L", pre)
                else:
                    self.lab(t, issued, "2160-0", "Creatinine [Mass/volume] in Serum or Plasma", round(cr, 2),
                             "mg/dL", "mg/dL", pre)
                self.push(issued, "result", ("cr", cr))
            elif test == "cbc":
                issued = t + q.uniform(0.5, 2.0) * sc
                w = v["wbc"] * (1 + q.normal(0, 0.05))
                pl = v["plt"] * (1 + q.normal(0, 0.06))
                self.lab(t, issued, self.code_wbc, "Leukocytes [#/volume] in Blood", round(w, 1),
                         q.choice(["10*3/uL", "x10^3/uL", "K/uL"]) if self.code_wbc == "6690-2" else "10^9/L",
                         "10*3/uL" if self.code_wbc == "6690-2" else "10*9/L", pre)
                self.lab(t, issued, self.code_plt, "Platelets [#/volume] in Blood", round(pl),
                         "10*3/uL" if self.code_plt == "777-3" else "10^9/L",
                         "10*3/uL" if self.code_plt == "777-3" else "10*9/L", pre)
                self.push(issued, "result", ("wbc", w))
            elif test == "bili":
                issued = t + q.uniform(1.5, 6.0) * sc
                b = v["bili"] * (1 + q.normal(0, 0.08))
                self.lab(t, issued, "1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma", round(b, 1),
                         "mg/dL", "mg/dL", pre)
            elif test == "lac":
                issued = t + q.uniform(0.5, 1.2) * min(sc, 1.0)
                lac = max(0.3, v["lac"] * (1 + q.normal(0, 0.08)))
                disp = "Lactate [Moles/volume] in Blood" if self.code_lac == "32693-4" else \
                    "Lactate [Moles/volume] in Serum or Plasma"
                self.lab(t, issued, self.code_lac, disp, round(lac, 1), q.choice(["mmol/L", "mmol/l"]), "mmol/L", pre)
                self.push(issued, "result", ("lac", lac))

    def lab(self, t, issued, code, disp, val, unit, ucum, pre):
        o = self.obs(t, code, disp, val, unit, ucum, cat="laboratory", issued=issued,
                     status="preliminary" if pre else "final")
        if self.q.random() < self.s["p_duplicate"] * 0.5:
            self.res.append({**o, "id": self.nid("obs")})

    def morning_labs(self, t):
        p, s, q = self.p, self.s, self.q
        day_index = int((self.admit_weekday + (self.p.admit_local_h + t) // 24) % 7)
        f = s["weekend_lab_factor"] if day_index >= 5 else 1.0
        pd = s["p_lab_daily"] * f
        tests = []
        recent_cr = self.chart.get("cr", [])
        cr_rise = len(recent_cr) >= 2 and recent_cr[-1][1] - min(v for _, v in recent_cr) >= 0.3
        if q.random() < min(1.0, pd * (1.15 if p.ckd or cr_rise else 1.0)):
            tests.append("cr")
        if q.random() < pd * 0.9:
            tests.append("cbc")
        if q.random() < (0.8 if self.abx_on else 0.25) * f:
            tests.append("bili")
        if self.abx_on and q.random() < 0.2:
            tests.append("lac")
        if tests:
            self.lab_draw(t, tests)
        self.push(self.next_local(t + 20, q.uniform(5.0, 7.0)), "morning_labs")

    # ---------------------------------------------------------------- events
    def on_result(self, t, payload):
        p, q = self.p, self.q
        name, val = payload
        self.chart_add(name, t, val)
        if name == "cr":
            xs = [v for tt, v in self.chart["cr"] if t - tt <= 168]
            if len(xs) >= 2 and (val >= 1.5 * min(xs) or val - min(xs) >= 0.3):
                if not self.stopped_nephrotox and (p.nsaid or "vancomycin" in self.abx_on):
                    self.stopped_nephrotox = True
                if q.random() < 0.7:
                    self.push(t + q.uniform(8, 16), "extra_labs", ["cr"])
                if not p.ckd and q.random() < 0.6:
                    self.give_fluids(t + q.uniform(0.2, 2.0))
        elif name == "lac" and val >= 2.0:
            if q.random() < 0.8:
                self.push(t + q.uniform(2, 6), "extra_labs", ["lac"])
            if t - self.last_review > 2:
                self.last_review = t
                self.push(t + q.uniform(0.2, 1.0), "review", None)
        elif name == "wbc" and (val > 12 or val < 4):
            temp = self.last("temp", t, 24)
            if temp is not None and temp >= 37.8 and t - self.last_culture > 48 and q.random() < 0.6:
                self.push(t + q.uniform(0.2, 2), "culture", "wbc")

    def give_fluids(self, t):
        if self.fluid_count >= 4:
            return
        self.fluid_count += 1
        self.p.fluids.append(t)
        self.med_admin(t, "saline", OTHER_MEDS, {"value": 500, "unit": "mL", "system": UCUM, "code": "mL"})
        for a in self.p.aki:
            if a["prerenal"] and a["t"] < t and a["rec"] is None:
                a["rec"] = (t - a["t"]) + self.q.uniform(6, 18)

    def culture(self, t, why):
        p, s, q = self.p, self.s, self.q
        if t - self.last_culture < 24:
            return
        self.last_culture = t
        self.cultured = True
        self.service_request(t, "600-7", "Bacteria identified in Blood by Culture")
        if why != "screen-only":
            self.lab_draw(t + q.uniform(0, 0.1), ["cbc", "cr", "lac"] + (["bili"] if q.random() < 0.6 else []))
        news = self.news_hist[-1][1] if self.news_hist else 0
        pa = s["p_abx_after_culture"] if news < 5 else 0.95
        if why == "screen-only":
            pa *= 0.3
        if not self.abx_on and q.random() < pa:
            before = q.random() < 0.15
            ta = t - q.uniform(0.1, 2.0) if before else t + (q.uniform(0.15, 1.5) if news >= 5 else q.uniform(0.3, 4.0))
            self.push(max(ta, 0.01), "start_abx", news)

    def start_abx(self, t, news, escalate=False):
        p, q = self.p, self.q
        if escalate:
            drugs = [["piptazo"], ["meropenem"], ["cefepime", "metronidazole"]][int(q.integers(0, 3))]
            if q.random() < 0.5:
                drugs.append("vancomycin")
        else:
            severe = news is not None and news >= 5
            if self.p.kind == "surgical":
                drugs = [["piptazo"], ["ceftriaxone", "metronidazole"]][int(q.integers(0, 2))]
            elif severe:
                drugs = [["piptazo"], ["meropenem"], ["cefepime"]][int(q.choice(3, p=[0.6, 0.2, 0.2]))]
                if q.random() < 0.4:
                    drugs.append("vancomycin")
            else:
                drugs = [["ceftriaxone"], ["amoxclav"], ["levofloxacin"]][int(q.choice(3, p=[0.5, 0.35, 0.15]))]
        for d in list(self.abx_on):
            if escalate:
                del self.abx_on[d]
        for d in drugs:
            self.med_request(t - 0.05, d, ABX)
            self.abx_on[d] = True
            self.push(t, "dose", d)
        if self.abx_start is None:
            self.abx_start = t
        if p.inf is not None and t > p.inf["t"] - 12:
            adequate = escalate or p.inf["first_abx_adequate"]
            if adequate and p.inf["abx_eff"] is None:
                p.inf["abx_eff"] = t + p.inf["lag"]
        infected = p.inf is not None and t > p.inf["t"] - 6
        self.abx_stop = t + (q.uniform(120, 168) if infected else q.uniform(40, 72))
        if "vancomycin" in drugs and q.random() < self.s["p_nephrotoxic_aki"]:
            p.aki.append({"t": t + q.uniform(24, 96), "amp": q.uniform(0.3, 1.5), "dur": q.uniform(24, 48),
                          "rec": None, "natural_rec": q.uniform(48, 120), "tau": q.uniform(24, 72), "prerenal": False})
        self.push(t + q.uniform(44, 56), "abx_check", None)

    def on_dose(self, t, drug):
        if drug not in self.abx_on or (self.abx_stop is not None and t > self.abx_stop):
            if self.abx_stop is not None and t > self.abx_stop:
                self.abx_on.clear()
            return
        if drug == "vancomycin" and self.stopped_nephrotox:
            del self.abx_on[drug]
            return
        self.med_admin(t, drug, ABX)
        iv = ABX[drug][2]
        self.push(t + iv + self.q.normal(0, 0.4), "dose", drug)

    def review(self, t, news):
        """A doctor at the bedside: treats from the chart; decides ICU from the examination (latent)."""
        p, s, q = self.p, self.s, self.q
        sev = p.severity(t)
        temp = self.last("temp", t, 24)
        wbc = self.last("wbc", t, 36)
        hr, rr = self.last("hr", t, 12), self.last("rr", t, 12)
        suspect = ((temp is not None and (temp >= 37.9 or temp < 36.0)) or (wbc is not None and (wbc > 12 or wbc < 4))
                   or (rr is not None and hr is not None and rr >= 21 and hr >= 91))
        if suspect and t - self.last_culture > 48 and q.random() < 0.8:
            self.culture(t + q.uniform(0.05, 0.3), "sepsis-screen")
        elif suspect and self.abx_start is not None and t - self.abx_start > 40 and q.random() < 0.5:
            self.push(t + q.uniform(0.2, 1.5), "escalate_abx", None)
        sbp = self.last("sbp", t, 6)
        if sbp is not None and sbp <= 100:
            self.give_fluids(t + q.uniform(0.1, 0.8))
        if not p.ceiling and sev >= 7:
            pr = min(0.9, 0.12 + 0.1 * (sev - 7)) * (0.6 if p.kind == "stepdown" else 1.0)
            if q.random() < pr:
                self.push(t + q.uniform(1.0, 4.0), "icu", None)
                return
        if q.random() < 0.5:
            self.push(t + q.uniform(0.1, 0.6), "extra_labs", ["cbc", "cr"] + (["lac"] if q.random() < 0.5 else []))
        # re-check ordered: an unscheduled set soon
        self.push(t + q.uniform(0.5, 1.5), "round_extra", None)

    def ward_round(self, t):
        p, q = self.p, self.q
        sev = p.severity(t)
        if not p.ceiling and sev >= 8 and q.random() < 0.5:
            self.push(t + q.uniform(1, 4), "icu", None)
        self.push(self.next_local(t + 20, q.uniform(9.0, 11.5)), "ward_round")

    def latent_check(self, t):
        """Outcomes from the hidden state: death when the physiology is unsurvivable, crash calls."""
        p, q = self.p, self.q
        sev = p.severity(t)
        v = p.latent(t)
        lethal = sev >= 12 or v["sbp"] < 70 or v["spo2"] < 75 or v["gcs_def"] > 9
        if lethal:
            hz = 0.25 if p.ceiling else 0.06
            if q.random() < hz:
                if not p.ceiling and q.random() < 0.6:
                    self.push(t + q.uniform(0.1, 0.5), "icu", "crash")
                else:
                    self.push(t + q.uniform(0.0, 0.5), "death", None)
        self.push(t + 1.0, "latent_check")

    # ---------------------------------------------------------------- main loop
    def run(self):
        p, s, q = self.p, self.s, self.q
        self.enc_id = f"{p.pid}-enc"
        self.push(q.uniform(0.05, 0.5), "round", None)
        self.push(q.uniform(0.3, 2.0), "extra_labs", ["cbc", "cr"] + (["bili"] if q.random() < 0.7 else []))
        self.push(self.next_local(6.0, q.uniform(5.0, 7.0)), "morning_labs")
        self.push(self.next_local(2.0, q.uniform(9.0, 11.5)), "ward_round")
        self.push(0.5, "latent_check")
        if q.random() < s["p_admission_culture"]:
            self.push(q.uniform(0.1, 1.5), "culture", "screen-only")
        if q.random() < s["p_empiric_abx"] or (p.postop is not None and p.postop > 0 and q.random() < 0.3):
            self.push(q.uniform(0.5, 6.0), "prophylaxis", None)
        if p.nsaid:
            self.med_request(0.02, "ibuprofen", OTHER_MEDS)
            self.push(q.uniform(0.5, 3), "nsaid", None)
        if p.diuretic:
            self.med_request(0.03, "furosemide", OTHER_MEDS)
        if p.beta_blocker:
            self.med_request(0.01, p.beta_drug, BETA)
            self.push(self.next_local(0.5, 8.0 + q.uniform(0, 1)), "beta", None)
        self.planned_end = p.planned_los
        self.push(self.planned_end, "discharge_check")
        while self.heap:
            t, _, kind, payload = heapq.heappop(self.heap)
            if t >= MAX_STAY_H:
                self.finish(MAX_STAY_H - q.uniform(0, 0.5), "home")
                break
            if kind == "round":
                if payload is not None and payload != self.pending_round:
                    continue  # superseded by an earlier (escalated) round
                self.round(t)
            elif kind == "round_extra":
                self.round(t, "extra")
            elif kind == "morning_labs":
                self.morning_labs(t)
            elif kind == "extra_labs":
                self.lab_draw(t, payload, "ordered")
            elif kind == "result":
                self.on_result(t, payload)
            elif kind == "review":
                self.review(t, payload)
            elif kind == "ward_round":
                self.ward_round(t)
            elif kind == "culture":
                self.culture(t, payload)
            elif kind == "start_abx":
                if not self.abx_on:
                    self.start_abx(t, payload)
            elif kind == "escalate_abx":
                self.start_abx(t, None, escalate=True)
            elif kind == "abx_check":
                temp = self.last("temp", t, 24)
                if self.abx_on and temp is not None and temp >= 38.0 and q.random() < 0.6:
                    self.start_abx(t, None, escalate=True)
            elif kind == "dose":
                self.on_dose(t, payload)
            elif kind == "prophylaxis":
                if not self.abx_on:
                    d = "cefazolin" if p.kind == "surgical" else "amoxclav"
                    self.med_request(t - 0.05, d, ABX, status="completed")
                    self.med_admin(t, d, ABX)
            elif kind == "nsaid":
                if not self.stopped_nephrotox:
                    self.med_admin(t, "ibuprofen", OTHER_MEDS)
                    self.push(t + 8 + q.normal(0, 0.5), "nsaid", None)
            elif kind == "beta":
                if q.random() < 0.93:
                    self.med_admin(t, p.beta_drug, BETA)
                self.push(t + 24 + q.normal(0, 0.3), "beta", None)
            elif kind == "latent_check":
                self.latent_check(t)
            elif kind == "icu":
                self.finish(t, "icu")
                break
            elif kind == "death":
                self.finish(t, "death")
                break
            elif kind == "discharge_check":
                recent = [n for tt, n in self.news_hist if t - tt <= 24]
                busy = (recent and max(recent) >= 3) or (self.abx_start is not None and t - self.abx_start < 48)
                if busy and t < MAX_STAY_H - 24:
                    self.push(t + 24, "discharge_check")
                else:
                    self.push(self.next_local(t, q.uniform(11.0, 17.0)), "discharge")
            elif kind == "discharge":
                self.finish(t, "home")
                break
        if not self.ended:
            self.finish(MAX_STAY_H - 0.1, "home")

    def finish(self, t, how):
        self.ended = True
        self.end_t = t
        self.end_kind = how
        # drop anything recorded after the end (queued sets cannot outlive the stay)
        cut = self.ts(t)
        end_dt = self.dt(t)
        keep = []
        for r in self.res:
            et = r.get("effectiveDateTime") or r.get("authoredOn")
            if et is not None and _parse(et) > end_dt:
                continue
            if r["resourceType"] == "Observation" and "issued" in r and _parse(r["issued"]) > end_dt:
                if r["status"] == "final" and self.q.random() < 0.7:
                    r["status"] = "preliminary"  # not final yet when the ward's data end
                    del r["issued"]
                else:
                    continue
            keep.append(r)
        self.res = keep
        self.cut = cut

    # ---------------------------------------------------------------- hidden event times
    def hidden_onsets(self):
        p = self.p
        out = {"deterioration": None, "sepsis": None, "aki": None}
        if self.end_kind in ("icu", "death"):
            out["deterioration"] = self.end_t
        if p.inf is not None:
            t = max(0.0, p.inf["t"])
            while t < self.end_t:
                if p.infection(t)[1] >= 0.6:
                    out["sepsis"] = t
                    break
                t += 0.25
        t = -48.0
        base = p.cr0
        while t < self.end_t:
            if p.cr0 * p.creat_factor(t) >= 1.5 * base or p.cr0 * p.creat_factor(t) - base >= 0.3:
                out["aki"] = max(t, 0.0)
                break
            t += 1.0
        return {k: (None if v is None else self.dt(v)) for k, v in out.items()}

    # ---------------------------------------------------------------- bundle
    def bundle(self):
        p, s, q = self.p, self.s, self.q
        res = []
        name = {"family": LAST[int(q.integers(0, len(LAST)))], "given": [FIRST[int(q.integers(0, len(FIRST)))]]}
        birth = (self.admit - timedelta(days=365.25 * p.age + float(q.uniform(1, 360)))).date().isoformat()
        pat = {"resourceType": "Patient", "id": p.pid,
               "meta": {"tag": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HTEST",
                                 "display": "test health data"}]},
               "identifier": [{"system": f"{BASE}/mrn", "value": p.pid.upper()}],
               "active": True, "name": [{"use": "official", **name}], "gender": p.sex, "birthDate": birth}
        if self.end_kind == "death":
            pat["deceasedDateTime"] = self.ts(self.end_t, seconds_only=True)
        res.append(pat)
        ward_loc = "loc-" + hashlib.sha1(p.unit.encode()).hexdigest()[:10]
        res.append({"resourceType": "Location", "id": ward_loc, "status": "active", "name": p.unit,
                    "mode": "instance",
                    "type": [{"coding": [{"system": ROLE, "code": "HU", "display": "Hospital unit"}]}]})
        enc = {"resourceType": "Encounter", "id": self.enc_id,
               "status": "finished" if self.end_kind != "icu" else "in-progress",
               "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP",
                         "display": "inpatient encounter"},
               "subject": self.ref("Patient", p.pid),
               "period": {"start": self.ts(0.0, seconds_only=True)},
               "location": [{"location": {"reference": f"Location/{ward_loc}", "display": p.unit},
                             "status": "completed" if self.end_kind == "icu" else "active",
                             "period": {"start": self.ts(0.0, seconds_only=True)}}]}
        if self.end_kind == "icu":
            icu_name = "Intensive Care Unit" if q.random() < 0.6 else "General ICU"
            enc["location"][0]["period"]["end"] = self.ts(self.end_t, seconds_only=True)
            enc["location"].append({"location": {"reference": "Location/loc-icu", "display": icu_name},
                                    "status": "active", "period": {"start": self.ts(self.end_t, seconds_only=True)}})
            res.append({"resourceType": "Location", "id": "loc-icu", "status": "active", "name": icu_name,
                        "mode": "instance",
                        "type": [{"coding": [{"system": ROLE, "code": "ICU", "display": "Intensive care unit"}]}]})
        else:
            enc["period"]["end"] = self.ts(self.end_t, seconds_only=True)
            enc["location"][0]["period"]["end"] = enc["period"]["end"]
            disp = ("exp", "Expired") if self.end_kind == "death" else ("home", "Home")
            enc["hospitalization"] = {"dischargeDisposition": {"coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/discharge-disposition", "code": disp[0],
                 "display": disp[1]}]}}
        res.append(enc)
        res.extend(self.conditions())
        res.extend(self.res)
        entries = [{"fullUrl": f"{BASE}/{r['resourceType']}/{r['id']}", "resource": r} for r in res]
        return {"resourceType": "Bundle", "id": f"{p.pid}-bundle", "type": "collection",
                "timestamp": self.ts(self.end_t, seconds_only=True), "entry": entries}

    def conditions(self):
        p, q = self.p, self.q
        out = []

        def cond(key, coding, onset_years):
            out.append({"resourceType": "Condition", "id": f"{p.pid}-cond-{key}",
                        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                                       "code": "active"}]},
                        "verificationStatus": {"coding": [{"system":
                                                           "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                                           "code": "confirmed"}]},
                        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                                  "code": "problem-list-item"}]}],
                        "code": {"coding": [coding], "text": coding["display"]},
                        "subject": self.ref("Patient", p.pid),
                        "onsetDateTime": (self.admit - timedelta(days=365.25 * onset_years)).date().isoformat()})

        if p.ckd:
            if q.random() < 0.5:
                cond("ckd", {"system": SNOMED, "code": "709044004", "display": "Chronic kidney disease"}, q.uniform(1, 10))
            else:
                st = ["N18.3", "N18.4", "N18.9", "N18.30"][int(q.integers(0, 4))]
                cond("ckd", {"system": ICD10CM, "code": st, "display": "Chronic kidney disease"}, q.uniform(1, 10))
        if p.copd:
            if q.random() < 0.5:
                cond("copd", {"system": SNOMED, "code": "13645005", "display": "Chronic obstructive lung disease"},
                     q.uniform(1, 15))
            else:
                cond("copd", {"system": ICD10CM, "code": "J44.9", "display": "Chronic obstructive pulmonary disease, "
                                                                            "unspecified"}, q.uniform(1, 15))
        if p.hypercapnic:
            if q.random() < 0.6:
                cond("hypercap", {"system": ICD10CM, "code": "J96.12",
                                  "display": "Chronic respiratory failure with hypercapnia"}, q.uniform(0.5, 5))
            else:
                cond("hypercap", {"system": ICD10, "code": "J96.1", "display": "Chronic respiratory failure"},
                     q.uniform(0.5, 5))
        return out


def _parse(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


# ----------------------------------------------------------------------------------------------- API

try:
    from models.labels import derive_onsets as _derive_onsets  # written in parallel; merged later
except Exception:  # noqa: BLE001 - absent until merged: fall back to the simulator's own event times
    _derive_onsets = None


def generate_one(seed: int, i: int, site: dict, notes: bool | dict = False) -> dict:
    p = Patient(seed, i, site)
    w = Ward(p, seed, i)
    w.run()
    bundle = w.bundle()
    if notes:  # the writer's own random stream: every other resource is unchanged
        from models.notes.writer import write_notes

        def concern(h: float) -> float:
            infl, _ = p.infection(h)
            return max(p.deterioration(h) / 1.4, max(0.0, infl - 0.3) / 1.8)
        write_notes(bundle, w.admit, w.dt(w.end_t), concern, "terse",
                    np.random.default_rng([int(seed), int(i), 0x4E07E]), local_admit_hour=p.admit_local_h,
                    fmt=lambda d: w.ts((d - w.admit).total_seconds() / 3600.0),
                    full_url=lambda rtype, rid: f"{BASE}/{rtype}/{rid}", **(notes if isinstance(notes, dict) else {}))
    hidden = w.hidden_onsets()
    onsets = None
    if _derive_onsets is not None:
        d = _derive_onsets(bundle)
        onsets = {k: d.get(k) for k in ("deterioration", "sepsis", "aki")}
    if onsets is None:
        onsets = dict(hidden)
    return {"id": p.pid, "bundle": bundle, "admit": w.admit, "discharge": w.dt(w.end_t), "age": p.age, "sex": p.sex,
            "ckd": p.ckd, "copd": p.copd, "hypercapnic": p.hypercapnic, "beta_blocker": p.beta_blocker,
            "unit": p.unit, "ward_kind": p.kind, "end": w.end_kind, "onsets": onsets, "split": split_of(p.pid),
            "hidden_onsets": hidden, "onsets_source": "models.labels" if _derive_onsets else "hidden",
            "site": site["name"]}


def generate(n: int, seed: int, site: dict | None = None, notes: bool | dict = False) -> list[dict]:
    """n stays at the seed's site; notes=True adds nursing notes (DocumentReference,
    models/notes/writer.py, "terse" style); nothing else changes."""
    s = _site(seed, site)
    return [generate_one(seed, i, s, notes) for i in range(n)]


def _iso(x):
    return None if x is None else x.isoformat()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True)
    ap.add_argument("--site", help="JSON file with site overrides")
    ap.add_argument("--notes", action="store_true", help="add nursing notes (DocumentReference; models/notes/)")
    a = ap.parse_args(argv)
    site = None
    if a.site:
        with open(a.site) as f:
            site = json.load(f)
    os.makedirs(a.out, exist_ok=True)
    recs = generate(a.n, a.seed, site, notes=a.notes)
    with open(os.path.join(a.out, "index.jsonl"), "w") as idx:
        for r in recs:
            with open(os.path.join(a.out, f"{r['id']}.json"), "w") as f:
                json.dump(r["bundle"], f, ensure_ascii=False, separators=(",", ":"))
            row = {k: v for k, v in r.items() if k != "bundle"}
            row["admit"], row["discharge"] = _iso(r["admit"]), _iso(r["discharge"])
            row["onsets"] = {k: _iso(v) for k, v in r["onsets"].items()}
            row["hidden_onsets"] = {k: _iso(v) for k, v in r["hidden_onsets"].items()}
            row["file"] = f"{r['id']}.json"
            idx.write(json.dumps(row, sort_keys=True) + "\n")
    print(f"wrote {len(recs)} bundles to {a.out}")


if __name__ == "__main__":
    main()
