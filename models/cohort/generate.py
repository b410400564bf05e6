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

if not __package__:  # run as a file (`python models/cohort/generate.py`, as the Rust tests do): find `models`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from models import baselines  # noqa: E402
from models.labels import derive_onsets  # noqa: E402

UTC = dt.timezone.utc
EPOCH = dt.datetime(2026, 1, 1, tzinfo=UTC)  # output clock: integer minutes since this instant
FIRST_ADMIT_DAY = 4                           # 2026-01-05 (days since EPOCH)
LAST_ADMIT_DAY = 89                           # 2026-03-31

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
    "piperacillin/tazobactam": ("74169", "piperacillin / tazobactam"),
    "amoxicillin/clavulanate": ("19711", "amoxicillin / clavulanate"),
    "levofloxacin": ("82122", "levofloxacin"),
    "meropenem": ("29561", "meropenem"),
}
ANTIBIOTICS = ("ceftriaxone", "piperacillin", "vancomycin", "gentamicin", "piperacillin/tazobactam",
               "amoxicillin/clavulanate", "levofloxacin", "meropenem")
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
    s = 1.0 / (1.0 + np.exp(np.clip(-k * (t - (onset - lead / 2.0)), -50.0, 50.0)))
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



# ============================================================================ site (domain randomisation)
SITE_KEYS = ("age_beta_a", "age_beta_b", "ckd_mult", "copd_mult", "sepsis_mult", "det_mult", "aki_mult",
             "schedule_p", "temp_f_share", "umol_share", "lact_mg_share", "noise", "miss_lo", "miss_hi",
             "missed_round", "false_culture_per_day", "culture_trigger", "death_share", "icu_share")
SCHEDULE_H = (4.0, 6.0, 8.0, 12.0)


def draw_site(seed: int) -> dict:
    """The hospital a cohort comes from, drawn from the seed (its own child generator, spawn key 2^32 - 1, so
    it never equals a patient's): case mix, event prevalence, observation habits, units, noise, missingness.
    Ranges are in README.md ("Sites")."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2 ** 32 - 1,)))
    lo = float(rng.uniform(0.02, 0.10))
    return {
        "age_beta_a": float(rng.uniform(2.2, 3.6)), "age_beta_b": float(rng.uniform(1.3, 2.0)),
        "ckd_mult": float(rng.uniform(0.6, 1.8)), "copd_mult": float(rng.uniform(0.6, 1.8)),
        "sepsis_mult": float(rng.uniform(0.7, 1.5)), "det_mult": float(rng.uniform(0.7, 1.5)),
        "aki_mult": float(rng.uniform(0.7, 1.4)),
        "schedule_p": [round(float(x), 4) for x in rng.dirichlet([4.0, 4.0, 2.0, 1.0])],
        "temp_f_share": float(rng.uniform(0.0, 0.25)), "umol_share": float(rng.uniform(0.0, 0.9)),
        "lact_mg_share": float(rng.uniform(0.0, 0.2)), "noise": float(rng.uniform(0.7, 1.4)),
        "miss_lo": lo, "miss_hi": lo + float(rng.uniform(0.05, 0.15)),
        "missed_round": float(rng.uniform(0.02, 0.12)),
        "false_culture_per_day": float(rng.uniform(0.005, 0.03)),
        "culture_trigger": float(rng.uniform(0.25, 0.6)),
        "death_share": float(rng.uniform(0.1, 0.3)), "icu_share": float(rng.uniform(0.6, 0.85)),
    }


# ============================================================================ patient drawing
def draw_baseline(rng, seed: int, i: int, site: dict) -> dict:
    """Demographics, comorbidity confounders and personal baselines. Prevalences rise with age."""
    b = {}
    u = rng.random()
    b["split"] = "train" if u < 0.6 else ("valid" if u < 0.8 else "test")
    b["age"] = int(min(95, max(18, round(18 + 77 * rng.beta(site["age_beta_a"], site["age_beta_b"])))))
    b["sex"] = "female" if rng.random() < 0.5 else "male"
    af = (b["age"] - 18) / 77.0
    b["ckd"] = bool(rng.random() < min(0.6, 0.15 * site["ckd_mult"] * (0.35 + 1.0 * af)))
    b["copd"] = bool(rng.random() < min(0.6, 0.12 * site["copd_mult"] * (0.25 + 1.15 * af)))
    b["hypercapnic"] = bool(b["copd"] and rng.random() < 0.5)
    b["beta_blocker"] = bool(rng.random() < 0.20 * (0.45 + 0.85 * af))
    b["unit"] = UNITS[int(rng.choice(len(UNITS), p=UNIT_P))]
    names = FEMALE_NAMES if b["sex"] == "female" else MALE_NAMES
    given = [names[int(rng.integers(len(names)))]]
    if rng.random() < 0.3:
        given.append(names[int(rng.integers(len(names)))])
    b["given"] = given
    b["family"] = FAMILY_NAMES[int(rng.integers(len(FAMILY_NAMES)))]
    b["mrn"] = f"MRN{seed % 10000:04d}{i:06d}"
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
    b["spo2_target"] = 89.0 if b["hypercapnic"] else (90.0 if b["copd"] else 93.0)
    b["temp_in_f"] = bool(rng.random() < site["temp_f_share"])
    b["crea_in_umol"] = bool(rng.random() < site["umol_share"])
    b["lact_in_mgdl"] = bool(rng.random() < site["lact_mg_share"])
    b["rr_even_pref"] = rng.uniform(0.0, 0.6)
    b["miss"] = rng.uniform(site["miss_lo"], site["miss_hi"], 6)  # hr rr spo2 temp bp o2
    p = np.asarray(site["schedule_p"], dtype=float)  # rounded to 4 places: renormalise
    b["base_interval"] = 60.0 * float(SCHEDULE_H[int(rng.choice(4, p=p / p.sum()))])
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


def _course_shape(rng) -> dict:
    """Precursor pattern of an event: lead 0.5-3 h (25%: abrupt, little or no precursor), 4-24 h (50%) or
    24-48 h (25%); the severity peaks at the onset (50%) or 1-8 h after it (the onset is not the peak)."""
    u = rng.random()
    lead = rng.uniform(0.5, 3.0) if u < 0.25 else (rng.uniform(4.0, 24.0) if u < 0.75 else rng.uniform(24.0, 48.0))
    post = 0.0 if rng.random() < 0.5 else rng.uniform(1.0, 8.0)
    return {"lead": lead, "post": post}


def _onset_time(rng, los_h: float, early_p: float, tail: float) -> float:
    """Onset hours after admission: `early_p` present on (or soon after) admission, U(0, 6) h, else U(2, LOS - tail)."""
    return rng.uniform(0.0, 6.0) if rng.random() < early_p else rng.uniform(2.0, los_h - tail)


def draw_sepsis(rng, b: dict, los_h: float, site: dict) -> dict | None:
    """Hidden sepsis (infection with organ dysfunction). Effects raise the recorded SOFA components:
    platelets, bilirubin, creatinine, blood pressure, consciousness, SpO2 (and so O2)."""
    af = (b["age"] - 18) / 77.0
    p = (0.05 + 0.06 * af + 0.04 * b["ckd"] + 0.04 * b["copd"]) * site["sepsis_mult"]
    if rng.random() >= p:
        return None
    bb = rng.uniform(0.35, 0.55) if b["beta_blocker"] else 1.0
    g = lambda: rng.uniform(0.5, 1.4)  # noqa: E731
    s = {"onset": _onset_time(rng, los_h, 0.2, 4.0), "amp": _amplitude(rng), **_course_shape(rng)}
    s["hypothermic"] = bool(rng.random() < 0.2)
    s["leukopenic"] = bool(rng.random() < 0.2)
    s["gain"] = {
        "hr": 26.0 * g() * bb, "rr": 7.0 * g() * (1.15 if b["copd"] else 1.0), "sbp": -30.0 * g(),
        "spo2": -4.0 * g(), "temp": -rng.uniform(0.8, 1.4) if s["hypothermic"] else 1.6 * rng.uniform(0.6, 1.3),
        "wbc": -0.55 if s["leukopenic"] else 1.3 * g(), "lact": 2.8 * g(), "plt": -0.5 * g(),
        "crea": 0.3 * g(), "bili": 1.8 * g() if rng.random() < 0.45 else 0.0,
    }
    s["altered"] = float(rng.uniform(0.8, 1.5)) if rng.random() < 0.3 + 0.25 * af else 0.0
    s["recover_at"], s["tau"] = None, rng.uniform(18.0, 48.0)
    s["treat_delay"] = rng.uniform(4.0, 14.0)  # antibiotics -> recovery starts
    return s


def draw_deterioration(rng, b: dict, sepsis: dict | None, los_h: float, site: dict) -> dict | None:
    """Hidden deterioration: 45% of septic patients (1-30 h after sepsis onset), otherwise ~9% x site."""
    af = (b["age"] - 18) / 77.0
    p = 0.45 if sepsis else (0.06 + 0.05 * af + 0.04 * b["copd"]) * site["det_mult"]
    if rng.random() >= p:
        return None
    onset = sepsis["onset"] + rng.uniform(1.0, 30.0) if sepsis else _onset_time(rng, los_h, 0.15, 1.0)
    shape = _course_shape(rng)
    amp = _amplitude(rng)
    if onset > los_h - 1.0:
        return None
    bb = rng.uniform(0.35, 0.55) if b["beta_blocker"] else 1.0
    g = lambda: rng.uniform(0.4, 1.4)  # noqa: E731
    d = {"onset": onset, "amp": amp, **shape,
         "gain": {"hr": 28.0 * g() * bb, "rr": 9.0 * g(), "sbp": -28.0 * g(),
                  "spo2": -7.0 * g() * (0.8 if b["copd"] else 1.0), "temp": 0.2 * g(), "lact": 1.5 * g(),
                  "crea": 0.08 * g()}}
    d["altered"] = float(rng.uniform(0.8, 1.5)) if rng.random() < 0.3 + 0.25 * af else 0.0
    return d


def draw_outcome(rng, det, los_h: float, site: dict) -> tuple[float, str]:
    """End of ward data and how the stay ends: deterioration -> ICU transfer at the onset (site icu_share, of
    which death_share die on the ward instead: 'died'), else managed on the ward and recovering; no
    deterioration -> discharged home at the planned LOS. Returns (end hours, 'home' | 'icu' | 'died')."""
    if det is None:
        return los_h, "home"
    if rng.random() < site["icu_share"]:
        det["recover_at"], det["tau"] = None, None
        return det["onset"], ("died" if rng.random() < site["death_share"] else "icu")
    det["recover_at"] = det["onset"] + det["post"] + rng.uniform(1.0, 6.0)
    det["tau"] = rng.uniform(8.0, 30.0)
    return los_h, "home"


def draw_background_meds(rng, b: dict, end_h: float) -> list[dict]:
    """Orders that do not depend on the course: beta-blocker, NSAID, gentamicin, furosemide."""
    meds = []
    if b["beta_blocker"]:
        meds.append({"name": "metoprolol", "start": rng.uniform(0.5, 4.0), "stop": None})
    if rng.random() < (0.015 if b["ckd"] else 0.07):
        s = rng.uniform(1.0, 48.0)
        meds.append({"name": "ibuprofen", "start": s, "stop": s + rng.uniform(24, 72)})
    if rng.random() < 0.02:
        s = rng.uniform(4.0, 48.0)
        meds.append({"name": "gentamicin", "start": s, "stop": s + rng.uniform(48, 96)})
    if rng.random() < (0.12 if (b["ckd"] or b["copd"]) else 0.06):
        meds.append({"name": "furosemide", "start": rng.uniform(1.0, 72.0), "stop": None,
                     "effect": rng.uniform(0.03, 0.10)})
    return [m for m in meds if m["start"] < end_h]


def draw_latent_aki(rng, b, sepsis, det, episodes, meds, end_h: float, site: dict) -> dict | None:
    """Latent AKI creatinine course; probability rises with sepsis, CKD, nephrotoxic drugs, deterioration and
    hypotension. Timing follows the main driver. Whether it becomes a *label* depends on the measured
    creatinine (models/labels.py)."""
    nephro = [m["start"] for m in meds if m["name"] in NEPHROTOXIC]
    hypo = [e for e in episodes if e["kind"] == "hypo" and e["sbp"] < -22]
    p = (0.045 + 0.06 * b["ckd"] + 0.35 * (sepsis is not None) + 0.12 * bool(nephro) + 0.15 * (det is not None)
         + 0.08 * bool(hypo)) * site["aki_mult"]
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
        start = rng.uniform(0.0, max(1.0, end_h - 30.0))
    c0 = b["crea0"]
    amp = c0 * rng.uniform(0.3, 0.45) + 0.05 if rng.random() < 0.2 else c0 * rng.uniform(0.45, 1.3) + 0.1
    # present on admission: the rise may have begun before arrival (start < 0)
    if rng.random() < 0.15:
        start = rng.uniform(-24.0, 2.0)
    return {"start": start, "dur": rng.uniform(24.0, 48.0), "amp": amp,
            "plateau": rng.uniform(12.0, 48.0), "tau": rng.uniform(24.0, 72.0)}


# ============================================================================ latent state at times t
def event_severity(ev: dict, t):
    """Amplitude-scaled severity of an event at t (hours; array or scalar): logistic ramp of length `lead`
    peaking `post` h after the onset, then exponential recovery from `recover_at` (if treated / managed)."""
    return ev["amp"] * event_course(np.asarray(t, float), ev["onset"] + ev["post"], ev["lead"],
                                    ev.get("recover_at"), ev.get("tau"))


def latent(sim: dict, t, with_sepsis: bool = True):
    """All hidden drivers at times t (hours since admission), vectorised. S, D: amplitude-scaled severities of
    sepsis and deterioration; ep_*: summed episode effects; aki: creatinine excess; furo: furosemide effect."""
    z = np.zeros_like(t)
    L = {"S": z, "D": z}
    s, d = sim["sepsis"], sim["det"]
    if s is not None and with_sepsis:
        L["S"] = event_severity(s, t)
    if d is not None:
        L["D"] = event_severity(d, t)
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



def draw_oxygen(rng, b) -> dict:
    """Chronic/background supplemental O2 (independent of acute need): 35% of COPD patients on 1-2 L/min for
    the whole stay (their baseline SpO2 is measured on it); 6% of others on 2 L/min for the first 12-60 h."""
    if b["copd"] and rng.random() < 0.35:
        return {"flow": float(rng.choice([1.0, 2.0])), "until": 1e9}
    if rng.random() < 0.06:
        return {"flow": 2.0, "until": rng.uniform(12.0, 60.0)}
    return {"flow": 0.0, "until": 0.0}



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



def _sev_scalar(ev: dict, t: float) -> float:
    """event_severity for one time, in plain Python (the ward loop calls it once per round)."""
    peak, lead = ev["onset"] + ev["post"], ev["lead"]
    if t <= peak - lead:
        return 0.0
    if t >= peak:
        r = 1.0
    else:
        k = 10.0 / lead
        lo, hi = 1.0 / (1.0 + math.exp(5.0)), 1.0 / (1.0 + math.exp(-5.0))
        r = min(1.0, max(0.0, (1.0 / (1.0 + math.exp(-k * (t - (peak - lead / 2.0)))) - lo) / (hi - lo)))
    if ev.get("recover_at") is not None and t > ev["recover_at"]:
        r *= math.exp(-(t - ev["recover_at"]) / ev["tau"])
    return ev["amp"] * r


def smooth_vitals(sim: dict, t):
    """Noise-free vitals at times t (hours) WITHOUT the sepsis contribution (added per round, because its
    recovery depends on when the ward gives antibiotics): baseline + diurnal + wander + episodes +
    deterioration. Also `z`, the consciousness drive from deterioration and delirium episodes."""
    b, d = sim["b"], sim["det"]
    L = latent(sim, t, with_sepsis=False)
    ep = L["ep"]
    hod = ((sim["admit"] / 60.0 + t) % 24.0)
    wander = sim["wander"](t)
    two_pi = 2 * math.pi

    def eff(key):
        out = ep.get(key, 0.0)
        if d is not None and key in d["gain"]:
            out = out + d["gain"][key] * L["D"]
        return out

    sbp_delta = 5.0 * np.cos(two_pi * (hod - 14.0) / 24.0) + wander[:, 4] + eff("sbp") - 6.0 * (L["furo"] > 0)
    z = np.zeros_like(t)
    if d is not None and d["altered"]:
        z = L["D"] * d["altered"]
    return {"hr": b["hr0"] + 3.0 * np.cos(two_pi * (hod - 15.0) / 24.0) + wander[:, 0] + eff("hr"),
            "rr": b["rr0"] + 0.5 * np.cos(two_pi * (hod - 15.0) / 24.0) + wander[:, 1] + eff("rr"),
            "spo2": b["spo20"] + wander[:, 2] + eff("spo2"),
            "temp": b["temp0"] + 0.2 * np.cos(two_pi * (hod - 18.0) / 24.0) + wander[:, 3] + eff("temp"),
            "sbp": b["sbp0"] + sbp_delta, "dbp": b["dbp0"] + 0.45 * sbp_delta, "z": z, "delirium": ep["loc"]}


ABX_CHOICES = (("ceftriaxone", 0.35), ("piperacillin/tazobactam", 0.35), ("amoxicillin/clavulanate", 0.15),
               ("levofloxacin", 0.10), ("meropenem", 0.05))
NEWS2_HIGH, NEWS2_MEDIUM = 5, 3


def run_ward(rng, sim: dict, end_min: int):
    """The ward, round by round. What is measured, and when, depends only on the schedule, chance and what was
    RECORDED (never on the hidden state):
    * vitals every `base_interval` (4/6/8/12 h) with jitter and missed rounds; NEWS2 of the last round >= 5 ->
      hourly for the next 3-6 h (and while it stays >= 5); 3-4 -> at most 4-hourly; at most 2-hourly in the
      first 4 h after arrival;
    * culture work-ups (blood culture, antibiotics, bloods) with some probability per round when the recorded
      round shows fever >= 38.3 / < 36.0 degC, SIRS >= 2 (vitals), qSOFA >= 2 or NEWS2 >= 5, plus false alarms
      at random; at most one work-up per 48 h;
    * extra bloods when NEWS2 >= 5 or temperature >= 38.3 was recorded (at most one per 12 h).
    Returns (vital rows [(minute, kind, value)], lab draws {test: [minute]}, workups, antibiotic orders)."""
    b, site, s = sim["b"], sim["site"], sim["sepsis"]
    end_h = end_min / 60.0
    grid = np.arange(0.0, end_h + 0.5, 0.25)
    G = {k: v.tolist() for k, v in smooth_vitals(sim, grid).items()}
    ox = sim["oxygen"]
    maxr = 1200
    noise = (rng.normal(0.0, 1.0, (maxr, 6)) * (site["noise"] * np.array([3.0, 1.2, 0.8, 0.12, 5.0, 4.0]))).tolist()
    u = rng.random((maxr, 16)).tolist()
    miss = b["miss"].tolist()
    temp_kind = "temp_f" if b["temp_in_f"] else "temp_c"
    scale = 2 if b["hypercapnic"] else 1
    rows, workups, abx = [], [], []
    labs = {k: [] for k in ("crea", "wbc", "plt", "bili", "lact")}
    o2_idx, prev_o2, last_loc, last_loc_t, loc_gap = -1, 0.0, None, -1e9, 180.0
    esc_until, last_workup, last_extra = -1e9, -1e9, -1e9
    last = {"temp": None, "alert": True}
    # false-alarm work-ups at random times (independent of everything), raised when the clock passes them
    false_alarms = sorted(rng.uniform(0.5, end_h, int(rng.poisson(site["false_culture_per_day"] * end_h / 24.0))))
    fa_u = rng.random((len(false_alarms), 16)).tolist()
    t = 5.0 + 25.0 * u[0][15]
    k = 0
    while t < end_min and k < maxr:
        m = int(t)
        th = m / 60.0
        while false_alarms and false_alarms[0] <= th:
            _workup(fa_u.pop(), false_alarms.pop(0), end_h, workups, abx, labs, s)
        gi = min(len(grid) - 1, int(th * 4.0 + 0.5))
        sv = _sev_scalar(s, th) if s is not None else 0.0
        gs = s["gain"] if s is not None else {}
        hr = G["hr"][gi] + gs.get("hr", 0.0) * sv
        rr = G["rr"][gi] + gs.get("rr", 0.0) * sv
        spo2 = G["spo2"][gi] + gs.get("spo2", 0.0) * sv
        temp = G["temp"][gi] + gs.get("temp", 0.0) * sv
        sbp_d = gs.get("sbp", 0.0) * sv
        sbp, dbp = G["sbp"][gi] + sbp_d, G["dbp"][gi] + 0.45 * sbp_d
        # oxygen titrated to the target from the (smooth) SpO2, with hysteresis; corrects 70% of the deficit
        need = b["spo2_target"] - spo2
        if need > 1.0:
            o2_idx = max(o2_idx, min(len(O2_STEPS) - 1, max(0, math.ceil(need / 1.2) - 1)))
        elif o2_idx >= 0 and need > -1.0:
            o2_idx = max(0, o2_idx - 1)
        else:
            o2_idx = -1
        flow = O2_STEPS[o2_idx] if o2_idx >= 0 else 0.0
        if flow > 0:
            spo2 += 0.7 * max(need, 0.0)
        flow = max(flow, ox["flow"] if th < ox["until"] else 0.0)
        n, uu = noise[k], u[k]
        hr_v = int(round(min(180.0, max(35.0, hr + n[0]))))
        rr_c = min(45.0, max(6.0, rr + n[1]))
        rr_v = int(2 * round(rr_c / 2.0)) if uu[0] < b["rr_even_pref"] else int(round(rr_c))
        sp_v = int(round(min(100.0, max(70.0, spo2 + n[2]))))
        tc = min(41.5, max(34.0, temp + n[3]))
        sbp_v = int(round(min(220.0, max(60.0, sbp + n[4]))))
        dbp_v = int(round(min(130.0, max(30.0, min(dbp + n[5], sbp_v - 15)))))
        z = max(G["z"][gi], sv * s["altered"] if s is not None and s["altered"] else 0.0)
        lv = int(z >= 0.7) + int(z >= 0.95) + int(z >= 1.2) + int(z >= 1.45)
        lv = max(lv, int(G["delirium"][gi] > 0.25))
        rec = {}
        if uu[1] >= miss[0]:
            rows.append((m, "hr", hr_v))
            rec["heart_rate"] = hr_v
        if uu[2] >= miss[1]:
            rows.append((m, "rr", rr_v))
            rec["respiratory_rate"] = rr_v
        if uu[3] >= miss[2]:
            rows.append((m, "spo2", sp_v))
            rec["spo2"] = sp_v
        flow_out = int(flow) if flow == int(flow) else flow
        if (flow > 0 and uu[4] >= miss[5]) or (flow == 0 and ((prev_o2 > 0 and uu[4] < 0.8) or uu[4] < 0.15)):
            rows.append((m, "o2", flow_out))
        prev_o2 = flow
        if uu[5] >= miss[3]:
            rows.append((m, temp_kind, round(tc * 1.8 + 32.0, 1) if b["temp_in_f"] else round(tc, 1)))
            rec["temperature"] = round(tc, 1)
        if uu[6] >= miss[4]:
            rows.append((m, "bp", (sbp_v, dbp_v)))
            rec["systolic_bp"] = sbp_v
        if lv != last_loc or m - last_loc_t >= loc_gap:
            rows.append((m, "loc", lv))
            last_loc, last_loc_t, loc_gap = lv, m, 120.0 + 120.0 * uu[7]
            last["alert"] = lv == 0
        news = baselines.news2({**rec, "alert": last["alert"], "on_oxygen": flow > 0}, scale=scale)["total"]
        tr = rec.get("temperature")
        fever = tr is not None and (tr >= 38.3 or tr < 36.0)
        sirs = ((rec.get("heart_rate", 0) > 90) + (rec.get("respiratory_rate", 0) > 20)
                + (tr is not None and (tr > 38.0 or tr < 36.0)))
        qsofa = ((rec.get("respiratory_rate", 0) >= 22) + (rec.get("systolic_bp", 999) <= 100)
                 + (not last["alert"]))
        # culture work-up from recorded findings
        p_w = max(site["culture_trigger"] if fever else 0.0, 0.3 if qsofa >= 2 else 0.0,
                  0.06 if sirs >= 2 else 0.0, 0.15 if news >= NEWS2_HIGH else 0.0)
        if p_w > 0 and th - last_workup >= 48.0 and uu[8] < p_w:
            last_workup = th
            _workup(uu, th + 0.25 + 1.75 * uu[9], end_h, workups, abx, labs, s)
        # extra bloods from recorded findings
        if (news >= NEWS2_HIGH or (tr is not None and tr >= 38.3)) and th - last_extra >= 12.0 and uu[11] < 0.6:
            last_extra = th
            tl = m + 15.0 + 75.0 * uu[12]
            for name in ("crea", "wbc", "plt"):
                labs[name].append(tl)
            if uu[13] < 0.7:
                labs["lact"].append(tl)
            if uu[14] < 0.3:
                labs["bili"].append(tl)
        # next round
        if news >= NEWS2_HIGH:
            esc_until = max(esc_until, th + 3.0 + 3.0 * uu[10])
        if th < esc_until:
            nominal = 60.0
        else:
            nominal = b["base_interval"]
            if news >= NEWS2_MEDIUM:
                nominal = min(nominal, 240.0)
            if th < 4.0:
                nominal = min(nominal, 120.0)
        if nominal > 60.0 and uu[15] < site["missed_round"]:
            nominal *= 2.0  # staffing: a round is missed
        jitter = (uu[9] - 0.5) * 2.0 * min(30.0, nominal * 0.1)
        t = t + max(20.0, nominal + jitter)
        k += 1
    workups.sort(key=lambda w: w["t"])
    abx.sort(key=lambda a: (a["start"], a["name"]))
    return rows, labs, workups, abx


def _workup(uu, tc: float, end_h: float, workups, abx, labs, sepsis):
    """Blood culture at tc (hours) with antibiotics 0.25-3 h after it (75%) or up to 1.5 h before it and the
    culture 0.5-8 h later (25%), a second antibiotic (vancomycin) in 25%, and bloods at the culture. The
    first antibiotic dose starts the sepsis recovery (if septic and not yet treated)."""
    if uu[0] < 0.25:
        t_abx = tc
        tc = tc + 0.5 + 7.5 * uu[1]
    else:
        t_abx = tc + 0.25 + 2.75 * uu[1]
    if tc >= end_h:
        return
    workups.append({"t": tc})
    acc, name = 0.0, ABX_CHOICES[-1][0]
    for nm, p in ABX_CHOICES:
        acc += p
        if uu[2] < acc:
            name = nm
            break
    if t_abx < end_h:
        course = 48.0 + 120.0 * uu[3]
        abx.append({"name": name, "start": t_abx, "stop": t_abx + course})
        if uu[4] < 0.25 and t_abx + 0.5 < end_h:
            abx.append({"name": "vancomycin", "start": t_abx + 0.5, "stop": t_abx + course})
        if sepsis is not None and sepsis["recover_at"] is None and t_abx > sepsis["onset"] - sepsis["lead"]:
            sepsis["recover_at"] = max(t_abx, sepsis["onset"]) + sepsis["treat_delay"]
    m = tc * 60.0 + 30.0 * uu[5]
    for name in ("lact", "wbc", "plt", "crea"):
        labs[name].append(m)
    if uu[6] < 0.5:
        labs["bili"].append(m)


def schedule_routine_labs(rng, admit: int, end_min: int, labs: dict) -> dict[str, list[int]]:
    """Admission bloods 15-120 min after arrival; a morning draw each day at 06:00 +- 1 h (>= 6 h after the
    admission bloods) with a random subset of panels (renal 85%, full blood count 85%, bilirubin 40%, lactate
    5%); merged with the triggered draws; draws of one test < 30 min apart are merged."""
    u = rng.random((12, 6)).tolist()
    first = 15.0 + 105.0 * u[0][0]
    for name in ("crea", "wbc", "plt"):
        labs[name].append(first)
    if u[0][1] < 0.8:
        labs["bili"].append(first)
    if u[0][2] < 0.2:
        labs["lact"].append(first)
    day_start = (admit // 1440) * 1440 - admit
    for day in range(0, 9):
        r = u[day + 1]
        morning = day_start + day * 1440 + 360 + (r[0] - 0.5) * 120.0
        if morning < first + 360 or morning >= end_min:
            continue
        if r[1] < 0.85:
            labs["crea"].append(morning)
        if r[2] < 0.85:
            labs["wbc"].append(morning)
            labs["plt"].append(morning)
        if r[3] < 0.4:
            labs["bili"].append(morning)
        if r[4] < 0.05:
            labs["lact"].append(morning)
    out = {}
    for name, ms in labs.items():
        kept = []
        for m in sorted(int(x) for x in ms if 0 <= x < end_min):
            if not kept or m - kept[-1] >= 30:
                kept.append(m)
        out[name] = kept
    return out


def simulate_labs(rng, sim: dict, draws: dict) -> dict:
    """True lab values at draw times + analytic noise (x site noise), rounded like the lab reports."""
    b, s, d = sim["b"], sim["sepsis"], sim["det"]
    f = sim["site"]["noise"]
    out = {}
    for name, ms in draws.items():
        if not ms:
            out[name] = np.zeros(0)
            continue
        t = np.array(ms, float) / 60.0
        L = latent(sim, t)
        S, D = L["S"], L["D"]
        gs = s["gain"] if s else None
        noise = rng.normal(0.0, 1.0, len(t)) * f
        if name == "crea":
            v = b["crea0"] * (1.0 + (gs["crea"] * S if gs else 0.0) + (d["gain"]["crea"] * D if d else 0.0)
                              + L["furo"]) + L["aki"]
            out[name] = np.maximum(0.2, v * (1.0 + 0.03 * noise))
        elif name == "wbc":
            v = b["wbc0"] * (1.0 + (gs["wbc"] * S if gs else 0.0)) + L["ep"]["wbc"]
            out[name] = np.round(np.clip(v * (1.0 + 0.06 * noise), 0.5, 60.0), 1)
        elif name == "plt":
            v = b["plt0"] * np.maximum(0.08, 1.0 + (gs["plt"] * S if gs else 0.0))
            out[name] = np.rint(np.clip(v * (1.0 + 0.05 * noise), 5, 900))
        elif name == "bili":
            v = b["bili0"] + (gs["bili"] * S if gs else 0.0)
            out[name] = np.round(np.clip(v * (1.0 + 0.08 * noise), 0.1, 30.0), 1)
        else:
            out[name] = np.clip(lactate_true(sim, t) * (1.0 + 0.08 * noise), 0.3, 20.0)
    return out

# ============================================================================ FHIR assembly
ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
DISCHARGE_DISPOSITION = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
_LOC_TYPE = {"HU": [{"coding": [_coding(ROLE_CODE, "HU", "Hospital unit")]}],
             "ICU": [{"coding": [_coding(ROLE_CODE, "ICU", "Intensive care unit")]}]}
_DISPOSITION = {"home": {"coding": [_coding(DISCHARGE_DISPOSITION, "home", "Home")]},
                "exp": {"coding": [_coding(DISCHARGE_DISPOSITION, "exp", "Expired")]}}


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
    """Bundle (type collection): Patient, Locations, Encounter, Conditions, MedicationRequests,
    MedicationAdministrations (first antibiotic doses), ServiceRequests, then Observations in time order.
    `meas` = sorted (abs_minute, order, kind, value, status)."""
    b, pid = sim["b"], sim["pid"]
    admit, end, outcome = sim["admit"], sim["end_min_abs"], sim["outcome"]
    subj = _ref("Patient", pid)
    enc_id = f"{pid}-enc"
    enc = _ref("Encounter", enc_id)
    entries = []
    patient = {"resourceType": "Patient", "id": pid, "meta": _SYNTHETIC_TAG,
               "identifier": [{"system": MRN_SYSTEM, "value": b["mrn"]}],
               "name": [{"family": b["family"], "given": list(b["given"])}],
               "gender": b["sex"], "birthDate": birth_date(rng, b["age"], admit)}
    if outcome == "died":
        patient["deceasedDateTime"] = iso_min(end)
    entries.append(patient)
    ward_id, icu_id = f"{pid}-loc-0", f"{pid}-loc-1"
    entries.append({"resourceType": "Location", "id": ward_id, "status": "active", "name": b["unit"],
                    "mode": "instance", "type": _LOC_TYPE["HU"]})
    locations = [{"location": {"reference": f"Location/{ward_id}", "display": b["unit"]},
                  "status": "completed", "period": {"start": iso_min(admit), "end": iso_min(end)}}]
    if outcome == "icu":
        entries.append({"resourceType": "Location", "id": icu_id, "status": "active", "name": "Intensive Care Unit",
                        "mode": "instance", "type": _LOC_TYPE["ICU"]})
        locations.append({"location": {"reference": f"Location/{icu_id}", "display": "Intensive Care Unit"},
                          "status": "active", "period": {"start": iso_min(end)}})
    encounter = {"resourceType": "Encounter", "id": enc_id, "status": "finished", "class": _ENC_CLASS,
                 "subject": subj, "period": {"start": iso_min(admit), "end": iso_min(end)}, "location": locations}
    if outcome in ("home", "died"):
        encounter["hospitalization"] = {"dischargeDisposition": _DISPOSITION["exp" if outcome == "died" else "home"]}
    entries.append(encounter)
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
    ordered = sorted(meds, key=lambda m: (m["start"], m["name"]))
    for n, m in enumerate(ordered):
        code, disp = MEDS[m["name"]]
        stop = m["stop"]
        status = "completed" if stop is not None and admit + stop * 60 <= end else "active"
        entries.append({"resourceType": "MedicationRequest", "id": f"{pid}-med-{n}", "status": status,
                        "intent": "order",
                        "medicationCodeableConcept": {"coding": [_coding(RXNORM, code, disp)]},
                        "subject": subj, "encounter": enc, "authoredOn": iso_min(admit + int(m["start"] * 60))})
    n_ma = 0
    for m in ordered:
        if m["name"] in ANTIBIOTICS and "given" in m and admit + int(m["given"] * 60) <= end:
            code, disp = MEDS[m["name"]]
            entries.append({"resourceType": "MedicationAdministration", "id": f"{pid}-ma-{n_ma}",
                            "status": "completed",
                            "medicationCodeableConcept": {"coding": [_coding(RXNORM, code, disp)]},
                            "subject": subj, "context": enc,
                            "effectiveDateTime": iso_min(admit + int(m["given"] * 60))})
            n_ma += 1
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


def simulate_patient(seed: int, i: int, site: dict, notes: bool | dict = False) -> dict:
    rng = patient_rng(seed, i)
    pid = f"cohort-{seed}-{i}"
    b = draw_baseline(rng, seed, i, site)
    admit, los_h = draw_stay(rng)
    sepsis = draw_sepsis(rng, b, los_h, site)
    det = draw_deterioration(rng, b, sepsis, los_h, site)
    end_h, outcome = draw_outcome(rng, det, los_h, site)
    end_min = max(60, int(round(end_h * 60)))
    episodes = draw_episodes(rng, b, end_h, sepsis is not None or det is not None)
    meds = draw_background_meds(rng, b, end_h)
    aki = draw_latent_aki(rng, b, sepsis, det, episodes, meds, end_h, site)
    sim = {"pid": pid, "b": b, "site": site, "admit": admit, "sepsis": sepsis, "det": det, "episodes": episodes,
           "meds": meds, "aki": aki, "oxygen": draw_oxygen(rng, b),
           "wander": smooth_wander(rng, [4.0, 1.0, 0.6, 0.15, 6.0]), "end_min_abs": admit + end_min,
           "outcome": outcome}
    rows, lab_draws, workups, abx = run_ward(rng, sim, end_min)
    for a in abx:  # first dose given 0-45 min after the order
        a["given"] = a["start"] + 0.75 * rng.random()
    meds = meds + abx
    sim["meds"] = meds
    draws = schedule_routine_labs(rng, admit, end_min, lab_draws)
    labs = simulate_labs(rng, sim, draws)
    crea_kind = "crea_um" if b["crea_in_umol"] else "crea_mg"
    lact_kind = "lact_mg" if b["lact_in_mgdl"] else "lact_mmol"
    meas = list(rows)
    for m, x in zip(draws["crea"], labs["crea"].tolist()):
        meas.append((m, crea_kind, int(round(x * CREATININE_UMOL_PER_MGDL)) if b["crea_in_umol"] else round(x, 2)))
    for m, x in zip(draws["lact"], labs["lact"].tolist()):
        meas.append((m, lact_kind, round(x * LACTATE_MGDL_PER_MMOL, 1) if b["lact_in_mgdl"] else round(x, 1)))
    for name, cast in (("wbc", float), ("plt", int), ("bili", float)):
        for m, x in zip(draws[name], labs[name].tolist()):
            meas.append((m, name, cast(x)))
    meas = [r for r in meas if r[0] <= end_min]
    u = rng.random(len(meas)).tolist()
    status = ["preliminary" if x < 0.006 else ("entered-in-error" if x < 0.01 else "final") for x in u]
    rows_abs = sorted(((admit + m, OBS_KINDS[kind][5], kind, val, st) for (m, kind, val), st in zip(meas, status)),
                      key=lambda r: (r[0], r[1]))
    bundle = build_bundle(rng, sim, rows_abs, meds, workups)
    if notes:  # the writer's own random stream: every other resource is unchanged
        from models.notes.writer import write_notes

        def concern(h: float) -> float:
            ev = [_sev_scalar(e, h) for e in (sim["sepsis"], sim["det"]) if e is not None]
            ep = latent({**sim, "sepsis": None, "det": None}, np.array([h]))["ep"]["any"][0]
            return max(ev + [0.0]) + 0.4 * float(ep)
        write_notes(bundle, to_datetime(admit), to_datetime(admit + end_min), concern, "prose",
                    np.random.default_rng([int(seed), int(i), 0x4E07E]), full_url=_full_url,
                    **(notes if isinstance(notes, dict) else {}))

    def hidden(ev):
        return None if ev is None else to_datetime(admit + int(round(ev["onset"] * 60)))
    return {
        "id": pid, "bundle": bundle, "admit": to_datetime(admit), "discharge": to_datetime(admit + end_min),
        "age": b["age"], "sex": b["sex"], "ckd": b["ckd"], "copd": b["copd"], "hypercapnic": b["hypercapnic"],
        "beta_blocker": b["beta_blocker"], "unit": b["unit"],
        "onsets": derive_onsets(bundle),
        "hidden_onsets": {"deterioration": hidden(det), "sepsis": hidden(sepsis),
                          "aki": None if aki is None else to_datetime(admit + int(round(aki["start"] * 60)))},
        "split": b["split"],
    }


def generate(n: int, seed: int, site: dict | None = None, notes: bool | dict = False) -> list[dict]:
    """n synthetic inpatients for `seed` (a non-negative int) at `site` (a dict of SITE_KEYS overrides; the rest
    drawn from the seed by `draw_site`). Same (n, seed, site) -> byte-identical bundles; patient i does not depend
    on n. Each dict: id, bundle (FHIR R4 Bundle, type collection), admit, discharge (aware UTC datetimes;
    discharge = end of ward data: home, ICU transfer or death), age, sex, ckd, copd, hypercapnic, beta_blocker,
    unit, onsets {deterioration, sepsis, aki: datetime | None} = models.labels.derive_onsets(bundle),
    hidden_onsets (the generator's latent event times; diagnostics only, never labels), split. notes=True adds
    nursing notes (DocumentReference, models/notes/writer.py, "prose" style); nothing else changes."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError("seed must be a non-negative integer")
    if n < 0:
        raise ValueError("n must be >= 0")
    s = draw_site(int(seed))
    if site:
        unknown = set(site) - set(SITE_KEYS)
        if unknown:
            raise ValueError(f"unknown site keys {sorted(unknown)}")
        s.update(site)
    return [simulate_patient(int(seed), i, s, notes) for i in range(int(n))]


# ============================================================================ CLI
def index_row(p: dict) -> dict:
    """Patient dict without the bundle, datetimes as ISO strings with Z (the index.jsonl line)."""
    row = {k: v for k, v in p.items() if k != "bundle"}
    row["admit"], row["discharge"] = iso_z(p["admit"]), iso_z(p["discharge"])
    for key in ("onsets", "hidden_onsets"):
        if key in p:
            row[key] = {k: (None if v is None else iso_z(v)) for k, v in p[key].items()}
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
    ap.add_argument("--notes", action="store_true", help="add nursing notes (DocumentReference; models/notes/)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    patients = generate(args.n, args.seed, notes=args.notes)
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
