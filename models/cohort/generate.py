#!/usr/bin/env python3
"""Seeded, reproducible SYNTHETIC longitudinal inpatient cohort emitted as FHIR R4 Bundles.

    .venv/bin/python models/cohort/generate.py --n 200 --seed 7 --out /tmp/cohort

Library use (other code imports exactly this; the repository root on the path, e.g. `python -m`)::

    from models.cohort.generate import generate
    patients = generate(n, seed)        # list[dict], see `generate` for the fields

Every person, identifier, value and time is invented; the data are NOT for clinical use. The generative
assumptions (distributions, prevalences, onset definitions, confounders, missingness, unit mix-ups and what is
not modelled) are documented in README.md next to this file; keep the two in step.

Design in one paragraph: each patient gets a child random generator (`np.random.SeedSequence(seed,
spawn_key=(i,))`, the same as `np.random.default_rng(seed).spawn(n)[i]`), so patient i is identical whatever n
is. A patient is drawn in stages: baseline (demographics, comorbidities, personal vital-sign/lab baselines),
stay (admit, planned discharge), events (sepsis and deterioration onsets with precursor ramps, ICU/HDU
transfer), transient non-event episodes, orders (medications, blood cultures), a latent AKI creatinine course,
then measurement schedules. Physiology is a sum of baseline + diurnal rhythm + smooth wander + episode bumps +
event effects + device noise, evaluated at the (irregular) measurement times, clipped to plausible ranges and
rounded like devices report. The AKI label is computed afterwards from the reported creatinine values with the
KDIGO creatinine criteria, so label and data agree by construction. Internally time is hours since admission
(physiology) or integer minutes since 2026-01-01T00:00Z (output); all output dateTimes are whole minutes, UTC.

Performance note: resources share immutable sub-objects (code/category codings, subject/encounter references)
to keep 3000 patients fast and small in memory. Treat bundles as read-only, or `copy.deepcopy` before mutating.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import time
import uuid

import numpy as np

UTC = dt.timezone.utc
EPOCH = dt.datetime(2026, 1, 1, tzinfo=UTC)  # output clock: integer minutes since this instant
FIRST_ADMIT_DAY = 4                           # 2026-01-05 (days since EPOCH)
LAST_ADMIT_DAY = 89                           # 2026-03-31
MIN_ONSET_H = 24.0                            # no labelled onset in the first 24 h: there is always pre-onset data

UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
MRN_SYSTEM = "urn:oid:2.16.840.1.113883.3.9999.1"
# fullUrl = urn:uuid:uuid5(COHORT_NS, "<resourceType>/<id>"): deterministic, unique because ids are unique
COHORT_NS = uuid.uuid5(uuid.NAMESPACE_URL, "https://bedside.example.org/models/cohort")

CREATININE_UMOL_PER_MGDL = 88.4   # 1 mg/dL creatinine = 88.4 umol/L (molar mass 113.12 g/mol)
LACTATE_MGDL_PER_MMOL = 9.008     # 1 mmol/L lactate = 9.008 mg/dL (molar mass 90.08 g/mol)
KDIGO_ABS_RISE_MGDL = 0.3         # >= 0.3 mg/dL within 48 h ...
KDIGO_REL_RISE = 1.5              # ... or >= 1.5 x the lowest value within 7 days

UNITS = ("Ward 4B", "Ward 5A", "Ward 6C", "Acute Medical Unit")
UNIT_P = (0.25, 0.25, 0.20, 0.30)

FEMALE_NAMES = ("Alice", "Beatrice", "Carla", "Dana", "Elena", "Fiona", "Grace", "Hanna", "Ines", "Julia",
                "Karen", "Lena", "Maria", "Nora", "Olivia", "Paula", "Rosa", "Sara", "Tessa", "Vera")
MALE_NAMES = ("Adam", "Bruno", "Carl", "David", "Emil", "Felix", "George", "Henry", "Ivan", "Jonas",
              "Karl", "Leon", "Martin", "Noah", "Oscar", "Peter", "Robert", "Samuel", "Tom", "Victor")
FAMILY_NAMES = ("Abbott", "Baker", "Carter", "Dalton", "Ellis", "Fisher", "Grant", "Hughes", "Irving", "Jensen",
                "Keller", "Lambert", "Morgan", "Novak", "Olsen", "Parker", "Quinn", "Reed", "Stone", "Turner",
                "Upton", "Vance", "Walsh", "Young", "Zeller")


# ============================================================================ FHIR constants (shared objects)
def _coding(system, code, display):
    return {"system": system, "code": code, "display": display}


_CAT = {c: [{"coding": [_coding(OBS_CAT, c, d)]}] for c, d in (("vital-signs", "Vital Signs"),
                                                               ("laboratory", "Laboratory"))}

# kind -> (LOINC code, LOINC display, category, Quantity.unit, Quantity.code, sort order within a timestamp)
OBS_KINDS = {
    "hr": ("8867-4", "Heart rate", "vital-signs", "/min", "/min", 0),
    "rr": ("9279-1", "Respiratory rate", "vital-signs", "/min", "/min", 1),
    "spo2": ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "vital-signs", "%", "%", 2),
    "o2": ("3151-8", "Inhaled oxygen flow rate", "vital-signs", "L/min", "L/min", 3),
    "temp_c": ("8310-5", "Body temperature", "vital-signs", "Cel", "Cel", 4),
    "temp_f": ("8310-5", "Body temperature", "vital-signs", "degF", "[degF]", 4),
    "bp": ("85354-9", "Blood pressure panel with all children optional", "vital-signs", None, None, 5),
    "loc": ("67775-7", "Level of responsiveness", "vital-signs", None, None, 6),
    "crea_mg": ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "laboratory", "mg/dL", "mg/dL", 10),
    "crea_um": ("14682-9", "Creatinine [Moles/volume] in Serum or Plasma", "laboratory", "µmol/L", "umol/L", 10),
    "lact_mmol": ("2524-7", "Lactate [Moles/volume] in Serum or Plasma", "laboratory", "mmol/L", "mmol/L", 11),
    "lact_mg": ("2524-7", "Lactate [Moles/volume] in Serum or Plasma", "laboratory", "mg/dL", "mg/dL", 11),
    "wbc": ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "laboratory", "10*3/uL", "10*3/uL", 12),
    "plt": ("777-3", "Platelets [#/volume] in Blood by Automated count", "laboratory", "10*3/uL", "10*3/uL", 13),
    "bili": ("1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma", "laboratory", "mg/dL", "mg/dL", 14),
}
_OBS_CODE = {k: {"coding": [_coding(LOINC, v[0], v[1])]} for k, v in OBS_KINDS.items()}
_OBS_CATEGORY = {k: _CAT[v[2]] for k, v in OBS_KINDS.items()}
_BP_SYS_CODE = {"coding": [_coding(LOINC, "8480-6", "Systolic blood pressure")]}
_BP_DIA_CODE = {"coding": [_coding(LOINC, "8462-4", "Diastolic blood pressure")]}

# ACVPU levels, index = severity. Display strings follow the SNOMED CT preferred terms.
LOC_LEVELS = (("248234008", "Mentally alert"), ("300202002", "New confusion"), ("450847001", "Responds to voice"),
              ("450848006", "Responds to pain"), ("422768004", "Unresponsive"))
_LOC_VALUE = [{"coding": [_coding(SNOMED, c, d)]} for c, d in LOC_LEVELS]

MEDS = {  # RxNorm ingredient codes
    "metoprolol": ("6918", "metoprolol"),
    "ceftriaxone": ("2193", "ceftriaxone"),
    "piperacillin": ("8339", "piperacillin"),
    "vancomycin": ("11124", "vancomycin"),
    "ibuprofen": ("5640", "ibuprofen"),
    "gentamicin": ("4413", "gentamicin"),
    "furosemide": ("4603", "furosemide"),
}
NEPHROTOXIC = ("ibuprofen", "gentamicin", "vancomycin")

CONDITIONS = {
    "ckd": [_coding(SNOMED, "709044004", "Chronic kidney disease"),
            _coding(ICD10CM, "N18.3", "Chronic kidney disease, stage 3 (moderate)")],
    "copd": [_coding(SNOMED, "13645005", "Chronic obstructive lung disease"),
             _coding(ICD10CM, "J44.9", "Chronic obstructive pulmonary disease, unspecified")],
    # ICD-10-CM only: we could not verify a SNOMED CT concept id for chronic hypercapnic failure offline.
    "hypercapnic": [_coding(ICD10CM, "J96.12", "Chronic respiratory failure with hypercapnia")],
}
_COND_CLINICAL = {"coding": [_coding("http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active")]}
_COND_VERIF = {"coding": [_coding("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed",
                                  "Confirmed")]}
_COND_CAT = [{"coding": [_coding("http://terminology.hl7.org/CodeSystem/condition-category", "problem-list-item",
                                 "Problem List Item")]}]
_ENC_CLASS = _coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", "IMP", "inpatient encounter")
_CULTURE_CODE = {"coding": [_coding(LOINC, "600-7", "Bacteria identified in Blood by Culture")]}
_SYNTHETIC_TAG = {"tag": [_coding("http://terminology.hl7.org/CodeSystem/v3-ActReason", "HTEST",
                                  "test health data")]}

_ISO_CACHE: dict[int, str] = {}


def iso_min(m: int) -> str:
    """Minutes since EPOCH -> 'YYYY-MM-DDTHH:MM:SSZ' (cached: the cohort reuses ~10^5 distinct minutes)."""
    s = _ISO_CACHE.get(m)
    if s is None:
        s = (EPOCH + dt.timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%SZ")
        _ISO_CACHE[m] = s
    return s


def to_datetime(m: int) -> dt.datetime:
    return EPOCH + dt.timedelta(minutes=int(m))


def iso_z(t: dt.datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ============================================================================ trajectory shapes
def logistic_ramp(t, onset: float, lead: float):
    """Precursor drift: 0 until `lead` hours before `onset`, an S-shaped (rescaled logistic) rise, exactly 1 at
    onset and after. Why logistic: clinical drift starts slowly, accelerates, then saturates; rescaling makes the
    ramp continuous at both ends so there is no step a model could key on."""
    k = 10.0 / lead
    lo = 1.0 / (1.0 + math.exp(5.0))
    hi = 1.0 / (1.0 + math.exp(-5.0))
    s = 1.0 / (1.0 + np.exp(-k * (t - (onset - lead / 2.0))))
    return np.clip((s - lo) / (hi - lo), 0.0, 1.0)


def event_course(t, onset: float, lead: float, recover_at: float | None, tau: float | None):
    """Severity 0..1 of an event: logistic precursor ramp up to onset, plateau, then (if the patient stays on
    the ward and is treated) exponential recovery with time constant `tau` hours from `recover_at`."""
    r = logistic_ramp(t, onset, lead)
    if recover_at is not None:
        r = r * np.exp(-np.clip(t - recover_at, 0.0, None) / tau)
    return r


def bump(t, start: float, dur: float):
    """Transient episode shape: sin^2 rise and fall over [start, start + dur] hours, 0 elsewhere (smooth)."""
    x = (t - start) / dur
    return np.where((x > 0.0) & (x < 1.0), np.sin(np.pi * np.clip(x, 0.0, 1.0)) ** 2, 0.0)


def smoothstep(t, start: float, dur: float):
    """0 before `start`, cubic S-curve to 1 at `start + dur` (gradual drug and AKI effects, no kinks)."""
    x = np.clip((t - start) / dur, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def aki_creatinine_excess(t, a: dict):
    """Latent AKI: creatinine excess (mg/dL) rising smoothly over `dur` (24-48 h) from `start`, a plateau,
    then partial recovery (to 35% of the excess, time constant `tau`). The AKI *label* is not this curve but
    the first measured value meeting KDIGO (see kdigo_aki_onset)."""
    rise = smoothstep(t, a["start"], a["dur"])
    end = a["start"] + a["dur"] + a["plateau"]
    rec = 0.35 + 0.65 * np.exp(-np.clip(t - end, 0.0, None) / a["tau"])
    return a["amp"] * rise * rec


def smooth_wander(rng, sds, n_comp: int = 4):
    """Per-patient slow physiological wander (one column per parameter): sum of random sinusoids with
    periods 3-36 h; returns a function of t (hours). Stationary SD per column = sds."""
    sds = np.asarray(sds, float)
    p = len(sds)
    periods = np.exp(rng.uniform(math.log(3.0), math.log(36.0), (p, n_comp)))
    phases = rng.uniform(0.0, 2 * math.pi, (p, n_comp))
    amps = sds[:, None] * math.sqrt(2.0 / n_comp) * rng.uniform(0.6, 1.3, (p, n_comp))

    def at(t):
        arg = 2 * math.pi * t[:, None, None] / periods[None] + phases[None]
        return (amps[None] * np.sin(arg)).sum(axis=2)
    return at


# ============================================================================ patient drawing
def draw_baseline(rng, seed: int, i: int) -> dict:
    """Demographics, comorbidity confounders and personal baselines. Prevalences rise with age."""
    b = {}
    u = rng.random()
    b["split"] = "train" if u < 0.6 else ("valid" if u < 0.8 else "test")
    b["age"] = int(min(95, max(18, round(18 + 77 * rng.beta(3.0, 1.6)))))
    b["sex"] = "female" if rng.random() < 0.5 else "male"
    af = (b["age"] - 18) / 77.0
    b["ckd"] = bool(rng.random() < 0.15 * (0.35 + 1.0 * af))
    b["copd"] = bool(rng.random() < 0.12 * (0.25 + 1.15 * af))
    b["hypercapnic"] = bool(b["copd"] and rng.random() < 0.5)
    b["beta_blocker"] = bool(rng.random() < 0.20 * (0.45 + 0.85 * af))
    b["unit"] = UNITS[int(rng.choice(len(UNITS), p=UNIT_P))]
    # names / identifiers
    names = FEMALE_NAMES if b["sex"] == "female" else MALE_NAMES
    given = [names[int(rng.integers(len(names)))]]
    if rng.random() < 0.3:
        given.append(names[int(rng.integers(len(names)))])
    b["given"] = given
    b["family"] = FAMILY_NAMES[int(rng.integers(len(FAMILY_NAMES)))]
    b["mrn"] = f"MRN{seed % 10000:04d}{i:06d}"
    # personal baselines (why: models must learn deviation from *this* patient's normal, not population norms)
    if b["beta_blocker"]:
        b["hr0"] = rng.uniform(59.0, 66.0)
    else:
        b["hr0"] = float(np.clip(rng.normal(80, 9), 58, 105))
    b["rr0"] = float(np.clip(rng.normal(20, 1.8), 16, 25)) if b["copd"] else float(np.clip(rng.normal(16, 1.5), 12, 20))
    b["spo20"] = rng.uniform(88.0, 92.0) if b["copd"] else float(np.clip(rng.normal(96.8, 1.0), 94.0, 99.5))
    b["temp0"] = float(np.clip(rng.normal(36.75, 0.2), 36.2, 37.3))
    b["sbp0"] = float(np.clip(rng.normal(124 + 0.25 * (b["age"] - 60), 14), 95, 175))
    b["dbp0"] = float(np.clip(b["sbp0"] * 0.58 + rng.normal(0, 5), 50, 100))
    if b["ckd"]:
        b["crea0"] = rng.uniform(1.6, 3.5)
    else:
        b["crea0"] = rng.uniform(0.6, 1.0) if b["sex"] == "female" else rng.uniform(0.8, 1.2)
    b["wbc0"] = float(np.clip(math.exp(rng.normal(math.log(7.5), 0.25)), 3.5, 12.0))
    b["plt0"] = float(np.clip(rng.normal(250, 60), 130, 420))
    b["bili0"] = float(np.clip(math.exp(rng.normal(math.log(0.6), 0.35)), 0.2, 1.4))
    b["lact0"] = rng.uniform(0.6, 1.6)
    # O2 target and device/reporting habits
    b["spo2_target"] = 89.0 if b["hypercapnic"] else (90.0 if b["copd"] else 93.0)
    b["temp_in_f"] = bool(rng.random() < 0.05)
    b["crea_in_umol"] = bool(rng.random() < 0.20)
    b["lact_in_mgdl"] = bool(rng.random() < 0.10)
    b["rr_even_pref"] = rng.uniform(0.0, 0.6)          # terminal-digit preference when counting RR
    b["miss"] = rng.uniform(0.05, 0.20, 6)             # per-parameter missingness: hr rr spo2 temp bp o2
    b["base_interval"] = float(rng.choice([60.0, 120.0, 180.0, 240.0], p=[0.75, 0.15, 0.07, 0.03]))
    return b


def draw_stay(rng) -> tuple[int, float]:
    """Admission minute (since EPOCH; days 2026-01-05..2026-03-31, afternoon/evening peak) and planned LOS."""
    day = int(rng.integers(FIRST_ADMIT_DAY, LAST_ADMIT_DAY + 1))
    hour = rng.normal(15.5, 4.5) % 24.0
    admit = day * 1440 + int(hour * 60)
    los_h = rng.uniform(72.0, 168.0)
    return admit, los_h


def _amplitude(rng) -> float:
    """Event strength. ~25% of event patients have subtle precursors (amplitude 0.3-0.55)."""
    return rng.uniform(0.3, 0.55) if rng.random() < 0.25 else rng.uniform(0.7, 1.3)


def draw_sepsis(rng, b: dict, los_h: float) -> dict | None:
    """Sepsis ~10%: more likely when older, CKD, COPD. Onset uniform in [24 h, planned discharge - 4 h].
    Effect sizes are per-patient (each vital's gain x U(0.5,1.4)) so no single vital always leads."""
    af = (b["age"] - 18) / 77.0
    p = 0.05 + 0.06 * af + 0.04 * b["ckd"] + 0.04 * b["copd"]
    if rng.random() >= p:
        return None
    bb = rng.uniform(0.35, 0.55) if b["beta_blocker"] else 1.0
    g = lambda: rng.uniform(0.5, 1.4)  # noqa: E731
    s = {"onset": rng.uniform(MIN_ONSET_H, los_h - 4.0), "lead": rng.uniform(6.0, 36.0), "amp": _amplitude(rng)}
    s["hypothermic"] = bool(rng.random() < 0.2)
    s["leukopenic"] = bool(rng.random() < 0.2)
    s["gain"] = {
        "hr": 26.0 * g() * bb, "rr": 7.0 * g() * (1.15 if b["copd"] else 1.0), "sbp": -22.0 * g(),
        "spo2": -2.5 * g(), "temp": -rng.uniform(0.8, 1.4) if s["hypothermic"] else 1.6 * rng.uniform(0.6, 1.3),
        "wbc": -0.55 if s["leukopenic"] else 1.3 * g(), "lact": 2.8 * g(), "plt": -0.35 * g(),
        "crea": 0.15 * g(), "bili": 1.2 if rng.random() < 0.35 else 0.0,
    }
    s["altered"] = float(rng.uniform(0.8, 1.5)) if rng.random() < 0.2 + 0.2 * af else 0.0
    return s


def draw_deterioration(rng, b: dict, sepsis: dict | None, los_h: float) -> dict | None:
    """Deterioration (ICU transfer / rapid-response call) ~12%: 45% of septic patients (1-30 h after sepsis
    onset), otherwise ~9% baseline risk (higher when older or COPD) with onset uniform over the stay."""
    af = (b["age"] - 18) / 77.0
    p = 0.45 if sepsis else 0.06 + 0.05 * af + 0.04 * b["copd"]
    if rng.random() >= p:
        return None
    onset = sepsis["onset"] + rng.uniform(1.0, 30.0) if sepsis else rng.uniform(MIN_ONSET_H, los_h - 1.0)
    lead = rng.uniform(6.0, 36.0)
    amp = _amplitude(rng)
    if onset > los_h - 1.0:
        return None
    bb = rng.uniform(0.35, 0.55) if b["beta_blocker"] else 1.0
    g = lambda: rng.uniform(0.4, 1.4)  # noqa: E731
    d = {"onset": onset, "lead": lead, "amp": amp,
         "gain": {"hr": 28.0 * g() * bb, "rr": 9.0 * g(), "sbp": -28.0 * g(),
                  "spo2": -7.0 * g() * (0.8 if b["copd"] else 1.0), "temp": 0.2 * g(), "lact": 1.5 * g(),
                  "crea": 0.08 * g()}}
    d["altered"] = float(rng.uniform(0.8, 1.5)) if rng.random() < 0.3 + 0.25 * af else 0.0
    return d


def draw_transfer_and_recovery(rng, sepsis, det, los_h: float) -> float:
    """End of ward data. Deterioration: 70% transferred 0-24 h after onset (skewed early), else managed on
    the ward and recovering. Sepsis without deterioration: 15% transferred (HDU), else treated on the ward.
    Returns the discharge time in hours since admission (<= planned LOS)."""
    end = los_h
    if det is not None:
        if rng.random() < 0.7:
            end = min(end, det["onset"] + 24.0 * rng.random() ** 2)
            det["recover_at"], det["tau"] = None, None
        else:
            det["recover_at"] = det["onset"] + rng.uniform(1.0, 6.0)
            det["tau"] = rng.uniform(8.0, 30.0)
    if sepsis is not None:
        if det is None and rng.random() < 0.15:
            end = min(end, sepsis["onset"] + 24.0 * rng.random() ** 2)
        sepsis["abx_at"] = sepsis["onset"] + rng.uniform(0.0, 3.0)
        sepsis["recover_at"] = sepsis["abx_at"] + rng.uniform(6.0, 18.0)
        sepsis["tau"] = rng.uniform(18.0, 48.0)
    return end


EPISODE_TYPES = ("fever", "tachy", "desat", "hypo", "delirium", "leuko")


def draw_episodes(rng, b: dict, end_h: float, has_event: bool) -> list[dict]:
    """Transient, self-limiting abnormalities in anyone (more often in non-event patients so the task is not
    'any abnormal value = event'): fever that resolves, pain/anxiety tachycardia, desaturation (positional,
    mucus), hypotension (dehydration, post-analgesia), night-time delirium (elderly), stress leukocytosis."""
    n = int(rng.poisson(0.45 if has_event else 0.8))
    bb = 0.5 if b["beta_blocker"] else 1.0
    out = []
    for _ in range(n):
        k = EPISODE_TYPES[int(rng.choice(6, p=[0.28, 0.24, 0.18, 0.14, 0.08, 0.08]))]
        if k == "delirium" and b["age"] < 70:
            k = "tachy"
        start = rng.uniform(2.0, max(3.0, end_h - 2.0))
        if k == "fever":
            e = {"dur": rng.uniform(4, 16), "temp": rng.uniform(0.8, 1.8), "hr": rng.uniform(8, 18) * bb,
                 "rr": rng.uniform(1, 3)}
        elif k == "tachy":
            e = {"dur": rng.uniform(1, 5), "hr": rng.uniform(15, 35) * bb, "rr": rng.uniform(2, 5),
                 "sbp": rng.uniform(5, 20)}
        elif k == "desat":
            e = {"dur": rng.uniform(1, 6), "spo2": -rng.uniform(3, 7), "rr": rng.uniform(2, 6),
                 "hr": rng.uniform(3, 10) * bb}
        elif k == "hypo":
            e = {"dur": rng.uniform(2, 8), "sbp": -rng.uniform(12, 30), "hr": rng.uniform(5, 15) * bb,
                 "lact": rng.uniform(0.2, 0.8)}
        elif k == "delirium":
            day0 = math.floor(start / 24.0) * 24.0
            start = day0 + rng.uniform(20.0, 27.0)  # starts in the evening/night (hours since admission, approx.)
            e = {"dur": rng.uniform(2, 8), "loc": 1.0}
        else:  # leuko
            e = {"dur": rng.uniform(12, 36), "wbc": rng.uniform(3, 7)}
        e["kind"], e["start"] = k, start
        out.append(e)
    return out


def draw_orders(rng, b: dict, sepsis, det, episodes, end_h: float):
    """Medication orders and blood-culture workups. Returns (meds, workups) where meds are dicts
    {name, start, stop|None} (hours) and workups are times (hours) when infection was suspected."""
    meds, workups = [], []
    if b["beta_blocker"]:
        meds.append({"name": "metoprolol", "start": rng.uniform(0.5, 4.0), "stop": None})

    def infection_workup(t, sick: bool):
        t = max(0.5, t)
        if t >= end_h:
            return
        workups.append({"t": t, "sick": sick})
        abx_t = t + rng.uniform(0.25, 2.0)
        course = rng.uniform(120, 168) if sick else rng.uniform(48, 72)
        meds.append({"name": "ceftriaxone" if rng.random() < 0.55 else "piperacillin", "start": abx_t,
                     "stop": abx_t + course})
        if rng.random() < (0.35 if sick else 0.10):
            meds.append({"name": "vancomycin", "start": abx_t + rng.uniform(0, 1), "stop": abx_t + course})
        if sick and rng.random() < 0.15:
            meds.append({"name": "gentamicin", "start": abx_t + rng.uniform(0, 1), "stop": abx_t + 72})

    if sepsis is not None:
        infection_workup(sepsis["onset"] + rng.uniform(-2.0, 2.0), True)
    if det is not None and sepsis is None and rng.random() < 0.4:
        infection_workup(det["onset"] + rng.uniform(0.0, 2.0), True)
    for e in episodes:
        if e["kind"] == "fever" and rng.random() < 0.35:
            infection_workup(e["start"] + e["dur"] / 2, False)
    if rng.random() < 0.03:
        infection_workup(rng.uniform(1.0, end_h), False)
    if rng.random() < (0.015 if b["ckd"] else 0.07):
        s = rng.uniform(1.0, 48.0)
        meds.append({"name": "ibuprofen", "start": s, "stop": s + rng.uniform(24, 72)})
    if rng.random() < 0.02:
        s = rng.uniform(4.0, 48.0)
        meds.append({"name": "gentamicin", "start": s, "stop": s + rng.uniform(48, 96)})
    if rng.random() < (0.12 if (b["ckd"] or b["copd"]) else 0.06):
        meds.append({"name": "furosemide", "start": rng.uniform(1.0, 72.0), "stop": None,
                     "effect": rng.uniform(0.03, 0.10)})
    meds = [m for m in meds if m["start"] < end_h]
    workups.sort(key=lambda w: w["t"])
    return meds, workups


def draw_latent_aki(rng, b, sepsis, det, episodes, meds, end_h: float) -> dict | None:
    """Latent AKI creatinine course; probability rises with sepsis, CKD, nephrotoxic drugs, deterioration and
    hypotension. Timing follows the main driver (sepsis onset, deterioration onset, 24-60 h after the first
    nephrotoxic dose, after a hypotensive episode, else anywhere in the stay). Whether it becomes a *label*
    depends on the measured creatinine (kdigo_aki_onset)."""
    nephro = [m["start"] for m in meds if m["name"] in NEPHROTOXIC]
    hypo = [e for e in episodes if e["kind"] == "hypo" and e["sbp"] < -22]
    p = (0.045 + 0.06 * b["ckd"] + 0.35 * (sepsis is not None) + 0.12 * bool(nephro) + 0.15 * (det is not None)
         + 0.08 * bool(hypo))
    if rng.random() >= p:
        return None
    if sepsis is not None and rng.random() < 0.8:
        start = sepsis["onset"] + rng.uniform(-18.0, 6.0)
    elif det is not None and rng.random() < 0.8:
        start = det["onset"] + rng.uniform(-12.0, 6.0)
    elif nephro:
        start = min(nephro) + rng.uniform(24.0, 60.0)
    elif hypo:
        start = hypo[0]["start"] + rng.uniform(0.0, 12.0)
    else:
        start = rng.uniform(8.0, max(9.0, end_h - 30.0))
    c0 = b["crea0"]
    amp = c0 * rng.uniform(0.3, 0.45) + 0.05 if rng.random() < 0.2 else c0 * rng.uniform(0.45, 1.3) + 0.1
    return {"start": max(6.0, start), "dur": rng.uniform(24.0, 48.0), "amp": amp,
            "plateau": rng.uniform(12.0, 48.0), "tau": rng.uniform(24.0, 72.0)}


def draw_oxygen(rng, b) -> dict:
    """Chronic/background supplemental O2 (independent of acute need): 35% of COPD patients on 1-2 L/min for
    the whole stay (their baseline SpO2 is measured on it); 6% of others on 2 L/min for the first 12-60 h."""
    if b["copd"] and rng.random() < 0.35:
        return {"flow": float(rng.choice([1.0, 2.0])), "until": 1e9}
    if rng.random() < 0.06:
        return {"flow": 2.0, "until": rng.uniform(12.0, 60.0)}
    return {"flow": 0.0, "until": 0.0}


# ============================================================================ latent state at times t
def latent(sim: dict, t):
    """All hidden drivers at times t (hours since admission), vectorised. S, D: amplitude-scaled severities of
    sepsis and deterioration; ep_*: summed episode effects; crea_*: creatinine components."""
    z = np.zeros_like(t)
    L = {"S": z, "D": z}
    s, d = sim["sepsis"], sim["det"]
    if s is not None:
        L["S"] = s["amp"] * event_course(t, s["onset"], s["lead"], s["recover_at"], s["tau"])
    if d is not None:
        L["D"] = d["amp"] * event_course(t, d["onset"], d["lead"], d["recover_at"], d["tau"])
    ep = {k: z for k in ("hr", "rr", "sbp", "spo2", "temp", "lact", "wbc", "loc", "any")}
    for e in sim["episodes"]:
        w = bump(t, e["start"], e["dur"])
        for k in ("hr", "rr", "sbp", "spo2", "temp", "lact", "wbc", "loc"):
            if k in e:
                ep[k] = ep[k] + w * e[k]
        ep["any"] = np.maximum(ep["any"], w)
    L["ep"] = ep
    L["aki"] = aki_creatinine_excess(t, sim["aki"]) if sim["aki"] is not None else z
    furo = z
    for m in sim["meds"]:
        if m["name"] == "furosemide":
            furo = furo + m["effect"] * smoothstep(t, m["start"], 24.0)
    L["furo"] = furo
    return L


def concern_grid(sim: dict, end_h: float):
    """How worried the ward is, on a 15-min grid (drives observation frequency and extra labs):
    max of event severities, 40% of any transient episode, and half the relative creatinine excess."""
    t = np.arange(0.0, end_h + 0.5, 0.25)
    L = latent(sim, t)
    c = np.maximum(np.maximum(L["S"], L["D"]), 0.4 * L["ep"]["any"])
    return np.maximum(c, 0.5 * L["aki"] / sim["b"]["crea0"])


# ============================================================================ measurement schedules
def schedule_vitals(rng, sim: dict, conc, admit: int, end_min: int) -> list[int]:
    """Vital-sign rounds (minutes since admission): per-patient base interval 1-4 h with +-15 min jitter,
    night (23-06 h) gaps stretched x1.5-2.5 (max 6 h) for stable patients, hourly when concern > 0.3, every
    30-45 min when > 0.6, and more frequent in the first 12 h after arrival."""
    base = sim["b"]["base_interval"]
    u = rng.random((800, 3))
    t = 10.0 + 50.0 * u[0, 0]
    out = []
    k = 1
    while t < end_min and k < 800:
        out.append(int(t))
        c = conc[min(len(conc) - 1, int(t // 15))]
        hod = ((admit + t) / 60.0) % 24.0
        if c > 0.6:
            nominal = 30.0 + 15.0 * u[k, 0]
        elif c > 0.3:
            nominal = 60.0
        else:
            nominal = min(base, 120.0) if t < 720 else base
            if hod >= 23.0 or hod < 6.0:
                nominal = min(360.0, nominal * (1.5 + u[k, 0]))
        jitter = (u[k, 1] - 0.5) * 2.0 * min(15.0, nominal / 4.0)
        t = t + max(15.0, nominal + jitter)
        k += 1
    return out


def schedule_labs(rng, sim: dict, conc, admit: int, end_min: int) -> dict[str, list[int]]:
    """Blood draws (minutes since admission) per test. Admission bloods 15-120 min after arrival; daily
    06:00 +-1 h (an 8% chance of skipping a stable day; bilirubin only ~half the days); an extra ~17:00 draw on
    days the patient is sick; lactate only when sick, at infection workups (repeated 2-6 h later if the first was
    > 2 mmol/L by the latent value) and 3% random. Duplicate draws of a test within 30 min are merged."""
    tests = {k: [] for k in ("crea", "wbc", "plt", "bili", "lact")}
    u = rng.random((40, 6))
    row = iter(range(40))

    def c_at(m):
        return conc[min(len(conc) - 1, max(0, int(m // 15)))]

    k = next(row)
    first = 15.0 + 105.0 * u[k, 0]
    for name in ("crea", "wbc", "plt"):
        tests[name].append(first)
    if u[k, 1] < 0.85:
        tests["bili"].append(first)
    if u[k, 2] < 0.15:
        tests["lact"].append(first)
    day_start = (admit // 1440) * 1440 - admit  # minutes since admission of the admission day's midnight
    for day in range(0, 9):
        k = next(row)
        morning = day_start + day * 1440 + 360 + (u[k, 0] - 0.5) * 120.0
        if morning < first + 360 or morning >= end_min:
            continue
        sick = c_at(morning) > 0.3
        if sick or u[k, 1] >= 0.08:
            for name in ("crea", "wbc", "plt"):
                tests[name].append(morning)
        if u[k, 2] < (0.9 if sick else 0.5):
            tests["bili"].append(morning)
        if sick and u[k, 3] < 0.8:
            tests["lact"].append(morning)
        evening = day_start + day * 1440 + 1020 + (u[k, 4] - 0.5) * 120.0
        if first < evening < end_min and c_at(evening) > 0.35:
            tests["crea"].append(evening)
            tests["lact"].append(evening)
            if u[k, 5] < 0.6:
                tests["wbc"].append(evening)
                tests["plt"].append(evening)
    for w in sim["workups"]:
        k = next(row)
        m = w["t"] * 60.0 + 30.0 * u[k, 0]
        if m >= end_min:
            continue
        for name in ("lact", "wbc", "crea", "plt"):
            tests[name].append(m)
        lact_true = lactate_true(sim, np.array([m / 60.0]))[0]
        rep = m + 120.0 + 240.0 * u[k, 1]
        if lact_true > 2.0 and rep < end_min:
            tests["lact"].append(rep)
    k = next(row)
    if u[k, 0] < 0.03:
        tests["lact"].append(u[k, 1] * end_min)
    out = {}
    for name, ms in tests.items():
        kept = []
        for m in sorted(int(x) for x in ms if 0 <= x < end_min):
            if not kept or m - kept[-1] >= 30:
                kept.append(m)
        out[name] = kept
    return out


# ============================================================================ values
def lactate_true(sim, t):
    b, L = sim["b"], latent(sim, t)
    g_s = sim["sepsis"]["gain"]["lact"] if sim["sepsis"] else 0.0
    g_d = sim["det"]["gain"]["lact"] if sim["det"] else 0.0
    return b["lact0"] + g_s * L["S"] + g_d * L["D"] + L["ep"]["lact"]


O2_STEPS = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0)


def titrate_oxygen(need: list[float]) -> np.ndarray:
    """Acute O2 flow (L/min) per round from the SpO2 deficit below target (need, % points), with hysteresis
    so flow does not flicker: start when need > 1 (about 1.2 L/min per % point, stepped), once on, wean one
    step per round while need is between -1 and 1, stop when SpO2 is > 1 point above target."""
    out, idx = [], -1  # idx: current step index, -1 = off
    for nd in need:
        if nd > 1.0:
            idx = max(idx, min(len(O2_STEPS) - 1, max(0, math.ceil(nd / 1.2) - 1)))
        elif idx >= 0 and nd > -1.0:
            idx = max(0, idx - 1)
        else:
            idx = -1
        out.append(O2_STEPS[idx] if idx >= 0 else 0.0)
    return np.array(out)


def simulate_vitals(rng, sim: dict, t):
    """True vitals at round times t (hours): baseline + diurnal + wander + episodes + event effects; SpO2 is
    partly corrected by oxygen titrated to the patient's target; then device noise, clipping and rounding.
    Returns a dict of arrays (hr, rr, spo2, temp_c, sbp, dbp, o2, loc)."""
    b, s, d = sim["b"], sim["sepsis"], sim["det"]
    L = latent(sim, t)
    ep = L["ep"]
    hod = ((sim["admit"] / 60.0 + t) % 24.0)
    wander = sim["wander"](t)
    two_pi = 2 * math.pi

    def eff(key):
        out = ep.get(key, 0.0)
        if s is not None and key in s["gain"]:
            out = out + s["gain"][key] * L["S"]
        if d is not None and key in d["gain"]:
            out = out + d["gain"][key] * L["D"]
        return out

    hr = b["hr0"] + 3.0 * np.cos(two_pi * (hod - 15.0) / 24.0) + wander[:, 0] + eff("hr")
    rr = b["rr0"] + 0.5 * np.cos(two_pi * (hod - 15.0) / 24.0) + wander[:, 1] + eff("rr")
    spo2 = b["spo20"] + wander[:, 2] + eff("spo2")
    temp = b["temp0"] + 0.2 * np.cos(two_pi * (hod - 18.0) / 24.0) + wander[:, 3] + eff("temp")
    sbp_delta = 5.0 * np.cos(two_pi * (hod - 14.0) / 24.0) + wander[:, 4] + eff("sbp") - 6.0 * (L["furo"] > 0)
    sbp = b["sbp0"] + sbp_delta
    dbp = b["dbp0"] + 0.45 * sbp_delta

    # oxygen: acute need = how far the (smooth) SpO2 is below target; titrated flow corrects ~70% of it
    need = b["spo2_target"] - spo2
    flow_need = titrate_oxygen(need.tolist())
    ox = sim["oxygen"]
    o2 = np.maximum(flow_need, np.where(t < ox["until"], ox["flow"], 0.0))
    spo2 = spo2 + np.where(flow_need > 0, 0.7 * np.clip(need, 0.0, None), 0.0)

    n = len(t)
    noise = rng.normal(0.0, 1.0, (n, 6)) * np.array([3.0, 1.2, 0.8, 0.12, 5.0, 4.0])
    hr = np.rint(np.clip(hr + noise[:, 0], 35, 180))
    rr = np.clip(rr + noise[:, 1], 6, 45)
    even = rng.random(n) < b["rr_even_pref"]
    rr = np.where(even, 2.0 * np.rint(rr / 2.0), np.rint(rr))
    spo2 = np.rint(np.clip(spo2 + noise[:, 2], 70, 100))
    temp_c = np.clip(temp + noise[:, 3], 34.0, 41.5)
    sbp = np.rint(np.clip(sbp + noise[:, 4], 60, 220))
    dbp = np.rint(np.clip(np.minimum(dbp + noise[:, 5], sbp - 15), 30, 130))

    # consciousness: ACVPU level from event severity for patients flagged 'altered', night delirium episodes
    z = np.zeros(n)
    if s is not None and s["altered"]:
        z = np.maximum(z, L["S"] * s["altered"])
    if d is not None and d["altered"]:
        z = np.maximum(z, L["D"] * d["altered"])
    loc = (z >= 0.7).astype(int) + (z >= 0.95) + (z >= 1.2) + (z >= 1.45)
    loc = np.maximum(loc, (ep["loc"] > 0.25).astype(int))
    return {"hr": hr, "rr": rr, "spo2": spo2, "temp_c": temp_c, "sbp": sbp, "dbp": dbp, "o2": o2, "loc": loc}


def simulate_labs(rng, sim: dict, draws: dict) -> dict:
    """True lab values at draw times + analytic noise, rounded like the lab reports (mg/dL, mmol/L units)."""
    b, s, d = sim["b"], sim["sepsis"], sim["det"]
    out = {}
    for name, ms in draws.items():
        if not ms:
            out[name] = np.zeros(0)
            continue
        t = np.array(ms, float) / 60.0
        L = latent(sim, t)
        S, D = L["S"], L["D"]
        gs = s["gain"] if s else None
        noise = rng.normal(0.0, 1.0, len(t))
        if name == "crea":
            v = b["crea0"] * (1.0 + (gs["crea"] * S if gs else 0.0) + (d["gain"]["crea"] * D if d else 0.0)
                              + L["furo"]) + L["aki"]
            v = np.maximum(0.2, v * (1.0 + 0.03 * noise))
            out[name] = v  # unrounded: rounding depends on the reporting unit
        elif name == "wbc":
            v = b["wbc0"] * (1.0 + (gs["wbc"] * S if gs else 0.0)) + L["ep"]["wbc"]
            out[name] = np.round(np.clip(v * (1.0 + 0.06 * noise), 0.5, 60.0), 1)
        elif name == "plt":
            v = b["plt0"] * (1.0 + (gs["plt"] * S if gs else 0.0))
            out[name] = np.rint(np.clip(v * (1.0 + 0.05 * noise), 10, 900))
        elif name == "bili":
            v = b["bili0"] + (gs["bili"] * S if gs else 0.0)
            out[name] = np.round(np.clip(v * (1.0 + 0.08 * noise), 0.1, 30.0), 1)
        else:  # lact, mmol/L, unrounded (rounding depends on the reporting unit)
            out[name] = np.clip(lactate_true(sim, t) * (1.0 + 0.08 * noise), 0.3, 20.0)
    return out


# ============================================================================ AKI label
def kdigo_aki_onset(times_min, values, abs_threshold, earliest_min: int):
    """KDIGO creatinine criteria on *measured* values. times ascending (minutes), values as integers in the
    reporting unit (hundredths of mg/dL, or whole umol/L) so comparisons are exact. Returns the time of the
    first measurement at or after `earliest_min` with value - min(values in [t-48 h, t)) >= abs_threshold, or
    2 * value >= 3 * min(values in [t-7 d, t)); None if never met."""
    for j, (tj, vj) in enumerate(zip(times_min, values)):
        if tj < earliest_min:
            continue
        prev48 = [v for t, v in zip(times_min[:j], values[:j]) if t >= tj - 2880]
        prev7d = [v for t, v in zip(times_min[:j], values[:j]) if t >= tj - 10080]
        if prev48 and vj - min(prev48) >= abs_threshold:
            return tj
        if prev7d and 2 * vj >= 3 * min(prev7d):
            return tj
    return None


def creatinine_abs_threshold(in_umol: bool) -> int:
    """0.3 mg/dL in integer reporting units: 30 hundredths of mg/dL, or ceil(0.3 x 88.4 = 26.52) = 27 umol/L."""
    return 27 if in_umol else 30


# ============================================================================ FHIR assembly
def _ref(kind, rid):
    return {"reference": f"{kind}/{rid}"}


def _full_url(rtype: str, rid: str) -> str:
    return "urn:uuid:" + str(uuid.uuid5(COHORT_NS, f"{rtype}/{rid}"))


def birth_date(rng, age: int, admit_min: int) -> str:
    """A birth date such that the age at the admission date is exactly `age`."""
    admit_day = to_datetime(admit_min).date()
    last_birthday = admit_day - dt.timedelta(days=int(rng.integers(0, 365)))
    try:
        bd = last_birthday.replace(year=last_birthday.year - age)
    except ValueError:  # 29 Feb in a non-leap target year
        bd = last_birthday.replace(year=last_birthday.year - age, day=28)
    return bd.isoformat()


def build_bundle(rng, sim: dict, meas: list, meds: list, workups: list) -> dict:
    """Bundle (type collection): Patient, Encounter, Conditions, MedicationRequests, ServiceRequests, then
    Observations in time order. `meas` = sorted (abs_minute, order, kind, value, status)."""
    b, pid = sim["b"], sim["pid"]
    admit, end = sim["admit"], sim["end_min_abs"]
    subj = _ref("Patient", pid)
    enc_id = f"{pid}-enc"
    enc = _ref("Encounter", enc_id)
    entries = []
    patient = {"resourceType": "Patient", "id": pid, "meta": _SYNTHETIC_TAG,
               "identifier": [{"system": MRN_SYSTEM, "value": b["mrn"]}],
               "name": [{"family": b["family"], "given": list(b["given"])}],
               "gender": b["sex"], "birthDate": birth_date(rng, b["age"], admit)}
    entries.append(patient)
    entries.append({"resourceType": "Encounter", "id": enc_id, "status": "finished", "class": _ENC_CLASS,
                    "subject": subj, "period": {"start": iso_min(admit), "end": iso_min(end)},
                    "location": [{"location": {"display": b["unit"]}}]})
    cond_onset = {}
    for n, key in enumerate(k for k in ("ckd", "copd", "hypercapnic") if b[k]):
        years_before = rng.uniform(0.5, 3.0) if key == "hypercapnic" else rng.uniform(1.0, 15.0)
        m = admit - int(years_before * 525960) - int(rng.integers(0, 1440))
        if key == "hypercapnic":
            m = max(m, cond_onset["copd"] + 1440)
        cond_onset[key] = m
        entries.append({"resourceType": "Condition", "id": f"{pid}-cond-{n}", "clinicalStatus": _COND_CLINICAL,
                        "verificationStatus": _COND_VERIF, "category": _COND_CAT,
                        "code": {"coding": CONDITIONS[key]}, "subject": subj, "onsetDateTime": iso_min(m)})
    for n, m in enumerate(sorted(meds, key=lambda m: (m["start"], m["name"]))):
        code, disp = MEDS[m["name"]]
        stop = m["stop"]
        status = "completed" if stop is not None and admit + stop * 60 <= end else "active"
        entries.append({"resourceType": "MedicationRequest", "id": f"{pid}-med-{n}", "status": status,
                        "intent": "order",
                        "medicationCodeableConcept": {"coding": [_coding(RXNORM, code, disp)]},
                        "subject": subj, "encounter": enc, "authoredOn": iso_min(admit + int(m["start"] * 60))})
    for n, w in enumerate(workups):
        entries.append({"resourceType": "ServiceRequest", "id": f"{pid}-sr-{n}", "status": "completed",
                        "intent": "order", "code": _CULTURE_CODE, "subject": subj, "encounter": enc,
                        "authoredOn": iso_min(admit + int(w["t"] * 60))})
    out = [{"fullUrl": _full_url(r["resourceType"], r["id"]), "resource": r} for r in entries]
    for k, (m, _order, kind, val, status) in enumerate(meas):
        rid = f"{pid}-obs-{k}"
        res = {"resourceType": "Observation", "id": rid, "status": status, "category": _OBS_CATEGORY[kind],
               "code": _OBS_CODE[kind], "subject": subj, "encounter": enc, "effectiveDateTime": iso_min(m)}
        if kind == "bp":
            res["component"] = [
                {"code": _BP_SYS_CODE, "valueQuantity": {"value": val[0], "unit": "mmHg", "system": UCUM,
                                                         "code": "mm[Hg]"}},
                {"code": _BP_DIA_CODE, "valueQuantity": {"value": val[1], "unit": "mmHg", "system": UCUM,
                                                         "code": "mm[Hg]"}}]
        elif kind == "loc":
            res["valueCodeableConcept"] = _LOC_VALUE[val]
        else:
            spec = OBS_KINDS[kind]
            res["valueQuantity"] = {"value": val, "unit": spec[3], "system": UCUM, "code": spec[4]}
        out.append({"fullUrl": _full_url("Observation", rid), "resource": res})
    return {"resourceType": "Bundle", "id": f"{pid}-bundle", "type": "collection", "entry": out}


# ============================================================================ one patient
def patient_rng(seed: int, i: int) -> np.random.Generator:
    """Child generator of patient i: identical to np.random.default_rng(seed).spawn(n)[i] for any n > i."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i,)))


def simulate_patient(seed: int, i: int) -> dict:
    rng = patient_rng(seed, i)
    pid = f"cohort-{seed}-{i}"
    b = draw_baseline(rng, seed, i)
    admit, los_h = draw_stay(rng)
    sepsis = draw_sepsis(rng, b, los_h)
    det = draw_deterioration(rng, b, sepsis, los_h)
    end_h = draw_transfer_and_recovery(rng, sepsis, det, los_h)
    end_min = int(round(end_h * 60))
    episodes = draw_episodes(rng, b, end_h, sepsis is not None or det is not None)
    meds, workups = draw_orders(rng, b, sepsis, det, episodes, end_h)
    aki = draw_latent_aki(rng, b, sepsis, det, episodes, meds, end_h)
    sim = {"pid": pid, "b": b, "admit": admit, "sepsis": sepsis, "det": det, "episodes": episodes,
           "meds": meds, "workups": workups, "aki": aki, "oxygen": draw_oxygen(rng, b),
           "wander": smooth_wander(rng, [4.0, 1.0, 0.6, 0.15, 6.0]), "end_min_abs": admit + end_min}
    conc = concern_grid(sim, end_h)

    # ---- vitals
    rounds = schedule_vitals(rng, sim, conc, admit, end_min)
    tr = np.array(rounds, float) / 60.0
    v = simulate_vitals(rng, sim, tr)
    present = rng.random((len(rounds), 6)) >= b["miss"][None, :]  # hr rr spo2 temp bp o2
    loc_gap = rng.uniform(120.0, 240.0, len(rounds) + 1)
    o2_doc = rng.random(len(rounds))
    meas = []  # (minute since admission, kind, value)
    temp_kind = "temp_f" if b["temp_in_f"] else "temp_c"
    hr_l, rr_l, sp_l, o2_l = v["hr"].tolist(), v["rr"].tolist(), v["spo2"].tolist(), v["o2"].tolist()
    tc_l, sbp_l, dbp_l, loc_l = v["temp_c"].tolist(), v["sbp"].tolist(), v["dbp"].tolist(), v["loc"].tolist()
    pres = present.tolist()
    last_loc, last_loc_t, gap_k, prev_o2 = None, -1e9, 0, 0.0
    for j, m in enumerate(rounds):
        p = pres[j]
        if p[0]:
            meas.append((m, "hr", int(hr_l[j])))
        if p[1]:
            meas.append((m, "rr", int(rr_l[j])))
        if p[2]:
            meas.append((m, "spo2", int(sp_l[j])))
        flow = o2_l[j]
        if (flow > 0 and p[5]) or (flow == 0 and ((prev_o2 > 0 and o2_doc[j] < 0.8) or o2_doc[j] < 0.15)):
            meas.append((m, "o2", flow if flow != int(flow) else int(flow)))
        prev_o2 = flow
        if p[3]:
            tc = tc_l[j]
            meas.append((m, temp_kind, round(tc * 1.8 + 32.0, 1) if b["temp_in_f"] else round(tc, 1)))
        if p[4]:
            meas.append((m, "bp", (int(sbp_l[j]), int(dbp_l[j]))))
        lv = loc_l[j]
        if lv != last_loc or m - last_loc_t >= loc_gap[gap_k]:
            meas.append((m, "loc", lv))
            last_loc, last_loc_t, gap_k = lv, m, gap_k + 1

    # ---- labs
    draws = schedule_labs(rng, sim, conc, admit, end_min)
    labs = simulate_labs(rng, sim, draws)
    crea_kind = "crea_um" if b["crea_in_umol"] else "crea_mg"
    lact_kind = "lact_mg" if b["lact_in_mgdl"] else "lact_mmol"
    crea_int = []  # integer reporting units for the exact KDIGO check
    for m, x in zip(draws["crea"], labs["crea"].tolist()):
        if b["crea_in_umol"]:
            val = int(round(x * CREATININE_UMOL_PER_MGDL))
            crea_int.append(val)
        else:
            val = round(x, 2)
            crea_int.append(int(round(val * 100)))
        meas.append((m, crea_kind, val))
    for m, x in zip(draws["lact"], labs["lact"].tolist()):
        meas.append((m, lact_kind, round(x * LACTATE_MGDL_PER_MMOL, 1) if b["lact_in_mgdl"] else round(x, 1)))
    for name, cast in (("wbc", float), ("plt", int), ("bili", float)):
        for m, x in zip(draws[name], labs[name].tolist()):
            meas.append((m, name, cast(x)))

    # ---- statuses (~1% not final), then the AKI label from final creatinine values only
    u = rng.random(len(meas)).tolist()
    status = ["preliminary" if x < 0.006 else ("entered-in-error" if x < 0.01 else "final") for x in u]
    crea_status = [st for (m, kind, _), st in zip(meas, status) if kind == crea_kind]
    final_t = [m for m, st in zip(draws["crea"], crea_status) if st == "final"]
    final_v = [v_ for v_, st in zip(crea_int, crea_status) if st == "final"]
    aki_min = kdigo_aki_onset(final_t, final_v, creatinine_abs_threshold(b["crea_in_umol"]), int(MIN_ONSET_H * 60))

    rows = sorted(((admit + m, OBS_KINDS[kind][5], kind, val, st) for (m, kind, val), st in zip(meas, status)),
                  key=lambda r: (r[0], r[1]))
    bundle = build_bundle(rng, sim, rows, meds, workups)

    def onset(h):
        return None if h is None else to_datetime(admit + int(round(h * 60)))
    return {
        "id": pid, "bundle": bundle, "admit": to_datetime(admit), "discharge": to_datetime(admit + end_min),
        "age": b["age"], "sex": b["sex"], "ckd": b["ckd"], "copd": b["copd"], "hypercapnic": b["hypercapnic"],
        "beta_blocker": b["beta_blocker"], "unit": b["unit"],
        "onsets": {"deterioration": onset(det["onset"] if det else None),
                   "sepsis": onset(sepsis["onset"] if sepsis else None),
                   "aki": None if aki_min is None else to_datetime(admit + aki_min)},
        "split": b["split"],
    }


def generate(n: int, seed: int) -> list[dict]:
    """n synthetic inpatients for `seed` (a non-negative int). Same (n, seed) -> byte-identical bundles;
    patient i does not depend on n. Each dict: id, bundle (FHIR R4 Bundle, type collection), admit, discharge
    (aware UTC datetimes; discharge = end of ward data: home or transfer out), age, sex, ckd, copd, hypercapnic,
    beta_blocker, unit, onsets {deterioration, sepsis, aki: datetime | None}, split (train/valid/test)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError("seed must be a non-negative integer")
    if n < 0:
        raise ValueError("n must be >= 0")
    return [simulate_patient(int(seed), i) for i in range(int(n))]


# ============================================================================ CLI
def index_row(p: dict) -> dict:
    """Patient dict without the bundle, datetimes as ISO strings with Z (the index.jsonl line)."""
    row = {k: v for k, v in p.items() if k != "bundle"}
    row["admit"], row["discharge"] = iso_z(p["admit"]), iso_z(p["discharge"])
    row["onsets"] = {k: (None if v is None else iso_z(v)) for k, v in p["onsets"].items()}
    return row


def summary(patients: list[dict]) -> str:
    n = max(1, len(patients))
    frac = lambda f: sum(1 for p in patients if f(p)) / n  # noqa: E731
    n_obs = sorted(sum(1 for e in p["bundle"]["entry"] if e["resource"]["resourceType"] == "Observation")
                   for p in patients) or [0]
    return (f"{len(patients)} patients: sepsis {frac(lambda p: p['onsets']['sepsis']):.1%}, "
            f"aki {frac(lambda p: p['onsets']['aki']):.1%}, "
            f"deterioration {frac(lambda p: p['onsets']['deterioration']):.1%}, "
            f"any {frac(lambda p: any(p['onsets'].values())):.1%}; ckd {frac(lambda p: p['ckd']):.1%}, "
            f"copd {frac(lambda p: p['copd']):.1%}, beta-blocker {frac(lambda p: p['beta_blocker']):.1%}; "
            f"split train/valid/test {frac(lambda p: p['split'] == 'train'):.0%}/"
            f"{frac(lambda p: p['split'] == 'valid'):.0%}/{frac(lambda p: p['split'] == 'test'):.0%}; "
            f"observations/patient median {n_obs[len(n_obs) // 2]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Synthetic inpatient cohort -> FHIR R4 Bundles (not for clinical use)")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", required=True, help="output directory (created): <id>.json + index.jsonl")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    patients = generate(args.n, args.seed)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "index.jsonl"), "w", encoding="utf-8") as idx:
        for p in patients:
            with open(os.path.join(args.out, f"{p['id']}.json"), "w", encoding="utf-8") as f:
                json.dump(p["bundle"], f, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
                f.write("\n")
            idx.write(json.dumps(index_row(p), ensure_ascii=False, sort_keys=True) + "\n")
    print(f"{summary(patients)}; wrote {args.out} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
