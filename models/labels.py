"""Outcome onsets derived from what is *recorded* in a FHIR R4 Bundle -- the only label definition used for
training and evaluation (numpy/stdlib only).

    from models.labels import derive_onsets, explain_onsets
    derive_onsets(bundle)   # {"deterioration": datetime | None, "sepsis": ..., "aki": ...}  (aware, UTC)
    python -m models.labels # self-test on hand-built bundles

Why: a generator's hidden event times are not what a chart review finds, and a model trained on them learns
the generator. Every cohort (`models/cohort/`, `models/ward/`) emits the outcome as data -- an ICU bed, a death,
cultures and antibiotics, creatinine results -- and this module reads it back with one fixed rule set.

Conventions (bundles from any generator must follow them)
--------------------------------------------------------
Common
* Resources are read from `Bundle.entry[].resource`. References resolve by `<type>/<id>` or by `fullUrl`.
* Times are FHIR instants parsed with `models.fhir_time.parse_instant` (fractions of a second and offsets
  work; partial dates / zone-less times are not instants and are skipped). Results are UTC datetimes.
* Observations count only with status `final`, `amended` or `corrected`. Any resource with status
  `entered-in-error` is skipped (also ServiceRequest `revoked`, MedicationAdministration `not-done`).
* The stay is the union span of the Encounter periods [earliest start, latest end] (an open end is open).
  Anything timed outside it is ignored: not an onset, and not an input to SOFA or KDIGO either.

Deterioration (unplanned ICU transfer or in-hospital death; the eCART / NEWS validation outcome)
  The earliest of
  (a) `period.start` of the first `Encounter.location[]` entry whose location is an ICU: its
      `location.reference` resolves to a Location with a `type` coding system
      `http://terminology.hl7.org/CodeSystem/v3-RoleCode` code `ICU`; fallback: the entry's `location.display`
      or the Location's `name` matches "ICU" as a word (also MICU/SICU/PICU/NICU/CICU) or "intensive care",
      case-insensitive;
  (b) `Patient.deceasedDateTime`;
  (c) `period.end` of an Encounter with `hospitalization.dischargeDisposition` coding system
      `http://terminology.hl7.org/CodeSystem/discharge-disposition`, code `exp` (expired).

Sepsis (Sepsis-3 as operationalised by Seymour et al., JAMA 2016;315:762 and the PhysioNet/CinC 2019 challenge,
Reyna et al., Crit Care Med 2020;48:210)
* Suspected infection: a blood culture (ServiceRequest with LOINC `600-7`; time `authoredOn`, else
  `occurrenceDateTime`) and an antibiotic (MedicationAdministration `effectiveDateTime` /
  `effectivePeriod.start`, or MedicationRequest `authoredOn`; the medication -- `medicationCodeableConcept` or a
  referenced Medication's `code` -- has an RxNorm code in `ANTIBIOTIC_RXNORM` or an ATC code starting `J01`),
  with the antibiotic at most 72 h after the culture or the culture at most 24 h after the antibiotic.
  t_suspicion = the earlier of the pair. Episodes are tried in order of t_suspicion; the first that qualifies
  gives the onset.
* SOFA at hourly points (t_suspicion + k h), each component from the last recorded value at or before the point
  and no older than 6 h (vital signs) / 24 h (labs); a missing component scores 0:
  - coagulation: platelets (777-3, 26515-7; 10^3/uL): >=150 0, <150 1, <100 2, <50 3, <20 4;
  - liver: bilirubin (1975-2, 42719-5; mg/dL, or umol/L / 17.1): <1.2 0, <2 1, <6 2, <12 3, else 4;
  - renal: creatinine (2160-0, 38483-4 mg/dL; 14682-9 or a umol/L unit / 88.4): <1.2 0, <2 1, <3.5 2, <5 3, else 4;
  - cardiovascular: MAP (8478-0, or (systolic + 2 diastolic) / 3 from 8480-6 + 8462-4 recorded at the same
    time, standalone or as components of panel 85354-9 / 55284-4): < 70 mmHg -> 1 (vasopressors not read);
  - CNS: GCS total 9269-2 (15 0, 13-14 1, 10-12 2, 6-9 3, <6 4), or ACVPU / responsiveness (67775-7, 80288-4)
    mapped to a GCS: SNOMED 248234008 alert 15, 300202002 new confusion 14, 450847001 voice 12, 450848006 pain 8,
    422768004 unresponsive 3 (LOINC LA answer codes are not read); the later of GCS and ACVPU wins;
  - respiration: SpO2 (59408-5, 2708-6, 20564-1) / FiO2, FiO2 from 3150-0 (a value > 1 or unit % is a
    percentage), else from O2 flow 3151-8 (FiO2 = 0.21 + 0.04 x L/min, at most 0.6), else room air 0.21; the
    SOFA P/F bands (< 400, < 300, < 200, < 100) carried to S/F through the linear fit of Rice et al., Chest
    2007;132:410 (S/F = 64 + 0.84 P/F), the "modified SOFA" respiratory score of Grissom et al. / Pandharipande
    et al. (Crit Care Med 2009;37:1317): S/F >= 400 0, < 400 1, < 315 2, < 235 3, < 150 4 (ventilation is not
    required for 3-4). On room air a saturation of 84 % or more scores 0 (S/F >= 400).
* Baseline SOFA = the minimum over the hourly points from the stay start to t_suspicion - 48 h at which some
  component is recorded; 0 if there is none (the usual "baseline 0 unless known").
* t_SOFA = the first hourly point in [t_suspicion - 48 h, t_suspicion + 24 h] (within the stay) with
  SOFA >= baseline + 2. Onset = min(t_suspicion, t_SOFA); no t_SOFA -> that episode is not sepsis.

AKI (KDIGO 2012, creatinine criteria only; urine output is not read)
  Final/amended/corrected creatinine results (2160-0, 38483-4 mg/dL; 14682-9 umol/L / 88.4) in time order; the
  onset is the first result that is >= 0.3 mg/dL above the lowest result in the preceding 48 h, or >= 1.5 x the
  lowest in the preceding 7 days (at least one earlier result needed). Computed with `models.baselines.kdigo`
  (the gateway's port: values read to hundredths of mg/dL, windows inclusive), evaluated at each result.
"""
from __future__ import annotations

import bisect
import datetime as dt
import re

if __package__ in (None, ""):  # pragma: no cover - run as a file
    import os
    import sys
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models.baselines import kdigo
from models.fhir_time import parse_instant

__all__ = ["derive_onsets", "explain_onsets", "ANTIBIOTIC_RXNORM", "sofa_components"]

UTC = dt.timezone.utc
H = dt.timedelta(hours=1)
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
DISCHARGE_DISPOSITION = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
OBS_OK = {"final", "amended", "corrected"}

# RxNorm ingredient (and common combination) codes of systemic antibiotics.
ANTIBIOTIC_RXNORM = {
    "2193": "ceftriaxone", "8339": "piperacillin", "74169": "piperacillin/tazobactam", "11124": "vancomycin",
    "4413": "gentamicin", "29561": "meropenem", "20481": "cefepime", "82122": "levofloxacin", "723": "amoxicillin",
    "19711": "amoxicillin/clavulanate", "2551": "ciprofloxacin", "6922": "metronidazole", "733": "ampicillin",
    "2180": "cefazolin", "18631": "azithromycin",
}
CULTURE_LOINC = "600-7"
ABX_AFTER_CULTURE = 72 * H
CULTURE_AFTER_ABX = 24 * H
VITAL_AGE, LAB_AGE = 6 * H, 24 * H

PLATELETS = {"777-3", "26515-7"}
BILIRUBIN = {"1975-2", "42719-5"}
CREA_MG = {"2160-0", "38483-4"}
CREA_UMOL = {"14682-9"}
MAP_CODE = "8478-0"
SYS, DIA = "8480-6", "8462-4"
GCS = "9269-2"
ACVPU = {"67775-7", "80288-4"}
ACVPU_GCS = {"248234008": 15, "300202002": 14, "450847001": 12, "450848006": 8, "422768004": 3}
SPO2 = {"59408-5", "2708-6", "20564-1"}
FIO2 = "3150-0"
O2_FLOW = "3151-8"
_ICU_RE = re.compile(r"(?<![a-z])[a-z]?icu(?![a-z])|intensive care", re.IGNORECASE)


# ----------------------------------------------------------------------------- reading the bundle
def _codes(cc, system=None) -> set:
    out = set()
    for c in (cc or {}).get("coding", []) or []:
        if system is None or c.get("system") == system:
            if c.get("code") is not None:
                out.add(c["code"])
    return out


def _index(bundle):
    res, by_ref = [], {}
    for e in (bundle or {}).get("entry", []) or []:
        r = e.get("resource")
        if not isinstance(r, dict):
            continue
        res.append(r)
        if r.get("id") is not None:
            by_ref[f"{r.get('resourceType')}/{r['id']}"] = r
        if e.get("fullUrl"):
            by_ref[e["fullUrl"]] = r
    return res, by_ref


def _stay(res):
    starts, ends, open_end = [], [], False
    for r in res:
        if r.get("resourceType") == "Encounter" and r.get("status") != "entered-in-error":
            p = r.get("period") or {}
            s, e = parse_instant(p.get("start")), parse_instant(p.get("end"))
            if s is not None:
                starts.append(s)
            if e is None:
                open_end = True
            else:
                ends.append(e)
    lo = min(starts) if starts else None
    hi = None if (open_end or not ends) else max(ends)
    return lo, hi


def _inside(t, stay):
    lo, hi = stay
    return t is not None and (lo is None or t >= lo) and (hi is None or t <= hi)


def _utc(t):
    return None if t is None else t.astimezone(UTC)


def _obs_time(r):
    t = parse_instant(r.get("effectiveDateTime")) or parse_instant(r.get("effectiveInstant"))
    if t is None and isinstance(r.get("effectivePeriod"), dict):
        t = parse_instant(r["effectivePeriod"].get("start"))
    return t


def _quantity(q):
    """(value, unit code or unit) of a Quantity, or None."""
    if not isinstance(q, dict) or not isinstance(q.get("value"), (int, float)) or isinstance(q.get("value"), bool):
        return None
    return float(q["value"]), str(q.get("code") or q.get("unit") or "")


def _is_umol(unit: str) -> bool:
    return "mol" in unit.lower() and "mmol" not in unit.lower()


# ----------------------------------------------------------------------------- deterioration
def _is_icu(entry, by_ref) -> bool:
    loc_ref = (entry.get("location") or {})
    loc = by_ref.get(loc_ref.get("reference") or "")
    if loc is not None:
        for t in loc.get("type", []) or []:
            if "ICU" in _codes(t, ROLE_CODE):
                return True
        if _ICU_RE.search(loc.get("name") or ""):
            return True
    return bool(_ICU_RE.search(loc_ref.get("display") or ""))


def _deterioration(res, by_ref, stay):
    cands = []
    for r in res:
        rt = r.get("resourceType")
        if r.get("status") == "entered-in-error":
            continue
        if rt == "Encounter":
            for entry in r.get("location", []) or []:
                if _is_icu(entry, by_ref):
                    t = parse_instant((entry.get("period") or {}).get("start"))
                    if _inside(t, stay):
                        cands.append((t, "icu_transfer", r.get("id")))
            disp = (r.get("hospitalization") or {}).get("dischargeDisposition")
            if "exp" in _codes(disp, DISCHARGE_DISPOSITION):
                t = parse_instant((r.get("period") or {}).get("end"))
                if _inside(t, stay):
                    cands.append((t, "discharge_expired", r.get("id")))
        elif rt == "Patient":
            t = parse_instant(r.get("deceasedDateTime"))
            if _inside(t, stay):
                cands.append((t, "deceased", r.get("id")))
    cands.sort(key=lambda c: c[0])
    return cands


# ----------------------------------------------------------------------------- sepsis
def _medication_codes(r, by_ref):
    cc = r.get("medicationCodeableConcept")
    if cc is None and isinstance(r.get("medicationReference"), dict):
        med = by_ref.get(r["medicationReference"].get("reference") or "")
        cc = (med or {}).get("code")
    return cc


def is_antibiotic(cc) -> bool:
    if _codes(cc, RXNORM) & ANTIBIOTIC_RXNORM.keys():
        return True
    return any(str(c).upper().startswith("J01") for c in _codes(cc, ATC))


def _cultures_and_antibiotics(res, by_ref, stay):
    cultures, abx = [], []
    for r in res:
        rt, st = r.get("resourceType"), r.get("status")
        if st == "entered-in-error":
            continue
        if rt == "ServiceRequest" and st != "revoked" and CULTURE_LOINC in _codes(r.get("code"), LOINC):
            t = parse_instant(r.get("authoredOn")) or parse_instant(r.get("occurrenceDateTime"))
            if _inside(t, stay):
                cultures.append(t)
        elif rt in ("MedicationAdministration", "MedicationRequest") and is_antibiotic(_medication_codes(r, by_ref)):
            if rt == "MedicationAdministration":
                if st == "not-done":
                    continue
                t = parse_instant(r.get("effectiveDateTime"))
                if t is None and isinstance(r.get("effectivePeriod"), dict):
                    t = parse_instant(r["effectivePeriod"].get("start"))
            else:
                t = parse_instant(r.get("authoredOn"))
            if _inside(t, stay):
                abx.append(t)
    return sorted(cultures), sorted(abx)


def _suspicion_times(cultures, abx):
    out = set()
    for c in cultures:
        for a in abx:
            if c <= a <= c + ABX_AFTER_CULTURE or a <= c <= a + CULTURE_AFTER_ABX:
                out.add(min(a, c))
    return sorted(out)


class _Series:
    """Per-signal sorted (time, value) with 'last value at or before t, no older than max_age'."""

    def __init__(self):
        self.data = {}

    def add(self, name, t, v):
        self.data.setdefault(name, []).append((t, v))

    def freeze(self):
        for k, v in self.data.items():
            v.sort(key=lambda p: p[0])
            self.data[k] = ([p[0] for p in v], [p[1] for p in v])

    def last(self, name, t, max_age):
        ts, vs = self.data.get(name, ((), ()))
        j = bisect.bisect_right(ts, t) - 1
        if j < 0 or ts[j] < t - max_age:
            return None
        return ts[j], vs[j]

    def any_before(self, t):
        return any(ts and ts[0] <= t for ts, _ in self.data.values())


def _sofa_series(res, stay) -> _Series:
    s = _Series()
    for r in res:
        if r.get("resourceType") != "Observation" or r.get("status") not in OBS_OK:
            continue
        t = _obs_time(r)
        if not _inside(t, stay):
            continue
        codes = _codes(r.get("code"), LOINC)
        q = _quantity(r.get("valueQuantity"))
        if q is None and isinstance(r.get("valueInteger"), int) and not isinstance(r.get("valueInteger"), bool):
            q = (float(r["valueInteger"]), "")
        if codes & PLATELETS and q:
            s.add("plt", t, q[0])
        if codes & BILIRUBIN and q:
            s.add("bili", t, q[0] / 17.1 if _is_umol(q[1]) else q[0])
        if codes & CREA_MG and q:
            s.add("crea", t, q[0] / 88.4 if _is_umol(q[1]) else q[0])
        if codes & CREA_UMOL and q:
            s.add("crea", t, q[0] if q[1].lower().replace(" ", "") in ("mg/dl",) else q[0] / 88.4)
        if MAP_CODE in codes and q:
            s.add("map", t, q[0])
        if GCS in codes and q:
            s.add("gcs", t, q[0])
        if codes & ACVPU:
            g = [ACVPU_GCS[c] for c in _codes(r.get("valueCodeableConcept"), SNOMED) if c in ACVPU_GCS]
            if g:
                s.add("gcs", t, float(min(g)))
        if codes & SPO2 and q:
            s.add("spo2", t, q[0])
        if FIO2 in codes and q:
            s.add("fio2", t, q[0] / 100.0 if (q[0] > 1.0 or q[1] == "%") else q[0])
        if O2_FLOW in codes and q:
            s.add("flow", t, q[0])
        # blood pressure: standalone systolic/diastolic or panel components, paired by time
        sy = di = None
        if SYS in codes and q:
            sy = q[0]
        if DIA in codes and q:
            di = q[0]
        for comp in r.get("component", []) or []:
            cc, cq = _codes(comp.get("code"), LOINC), _quantity(comp.get("valueQuantity"))
            if cq is None:
                continue
            if SYS in cc:
                sy = cq[0]
            elif DIA in cc:
                di = cq[0]
            elif MAP_CODE in cc:
                s.add("map", t, cq[0])
        if sy is not None:
            s.add("_sys", t, sy)
        if di is not None:
            s.add("_dia", t, di)
    # pair systolic and diastolic recorded at the same instant
    sys_by_t = {}
    for t, v in s.data.pop("_sys", []):
        sys_by_t[t] = v
    for t, d in s.data.pop("_dia", []):
        if t in sys_by_t:
            s.add("map", t, (sys_by_t[t] + 2.0 * d) / 3.0)
    s.freeze()
    return s


def _band(x, cuts):
    """Number of cut-offs `x` is below (cuts descending: the score rises as x falls)."""
    return sum(1 for c in cuts if x < c)


def _band_up(x, cuts):
    return sum(1 for c in cuts if x >= c)


def sofa_components(s: _Series, t) -> dict:
    """SOFA components at time t (None = not recorded within its max age, scored 0 by the caller)."""
    out = {}
    v = s.last("plt", t, LAB_AGE)
    out["coagulation"] = None if v is None else _band(v[1], (150, 100, 50, 20))
    v = s.last("bili", t, LAB_AGE)
    out["liver"] = None if v is None else _band_up(v[1], (1.2, 2.0, 6.0, 12.0))
    v = s.last("crea", t, LAB_AGE)
    out["renal"] = None if v is None else _band_up(v[1], (1.2, 2.0, 3.5, 5.0))
    v = s.last("map", t, VITAL_AGE)
    out["cardiovascular"] = None if v is None else int(v[1] < 70)
    v = s.last("gcs", t, VITAL_AGE)
    out["cns"] = None if v is None else _band(v[1], (15, 13, 10, 6))
    sp = s.last("spo2", t, VITAL_AGE)
    if sp is None:
        out["respiration"] = None
    else:
        f = s.last("fio2", t, VITAL_AGE)
        if f is not None:
            fio2 = f[1]
        else:
            fl = s.last("flow", t, VITAL_AGE)
            fio2 = 0.21 if fl is None else min(0.6, 0.21 + 0.04 * max(0.0, fl[1]))
        out["respiration"] = _band(sp[1] / max(fio2, 0.21), (400, 315, 235, 150))
    return out


def _sofa(s, t):
    c = sofa_components(s, t)
    return sum(v or 0 for v in c.values()), c


def _sepsis(res, by_ref, stay):
    cultures, abx = _cultures_and_antibiotics(res, by_ref, stay)
    susp = _suspicion_times(cultures, abx)
    ev = {"cultures": cultures, "antibiotics": abx, "suspicion": susp, "episodes": [], "onset": None}
    if not susp:
        return ev
    s = _sofa_series(res, stay)
    lo, hi = stay
    for ts in susp:
        cutoff = ts - 48 * H
        base, base_t = None, None
        if lo is not None and s.any_before(cutoff):
            k = 0
            while cutoff - k * H >= lo:
                t = cutoff - k * H
                total, comp = _sofa(s, t)
                if any(v is not None for v in comp.values()) and (base is None or total < base):
                    base, base_t = total, t
                k += 1
        baseline = 0 if base is None else base
        t_sofa, at = None, None
        for k in range(0, 73):
            t = cutoff + k * H
            if (lo is not None and t < lo) or (hi is not None and t > hi):
                continue
            total, comp = _sofa(s, t)
            if total >= baseline + 2:
                t_sofa, at = t, (total, comp)
                break
        epi = {"suspicion": ts, "baseline": baseline, "baseline_at": base_t, "t_sofa": t_sofa, "sofa": at}
        ev["episodes"].append(epi)
        if t_sofa is not None:
            ev["onset"] = min(ts, t_sofa)
            break
    return ev


# ----------------------------------------------------------------------------- AKI
def _creatinine(res, stay):
    out = []
    for r in res:
        if r.get("resourceType") != "Observation" or r.get("status") not in OBS_OK:
            continue
        codes = _codes(r.get("code"), LOINC)
        if not codes & (CREA_MG | CREA_UMOL):
            continue
        q = _quantity(r.get("valueQuantity"))
        t = _obs_time(r)
        if q is None or not _inside(t, stay):
            continue
        umol = _is_umol(q[1]) or (codes & CREA_UMOL and q[1].lower() != "mg/dl")
        out.append((t, q[0] / 88.4 if umol else q[0]))
    out.sort(key=lambda p: p[0])
    return out


def _aki(res, stay):
    series = _creatinine(res, stay)
    for j in range(1, len(series)):
        t = series[j][0]
        k = kdigo(series[:j + 1], t)
        if k["stage"]:
            return {"onset": t, "criteria": k["criteria"], "value": series[j][1], "baseline": k["baseline"],
                    "n_results": len(series)}
    return {"onset": None, "n_results": len(series)}


# ----------------------------------------------------------------------------- API
def explain_onsets(bundle: dict) -> dict:
    """The evidence behind `derive_onsets`: stay, deterioration candidates, suspicion episodes with baseline
    and t_SOFA (and the SOFA components there), the KDIGO criterion met."""
    res, by_ref = _index(bundle)
    stay = _stay(res)
    det = _deterioration(res, by_ref, stay)
    return {"stay": stay, "deterioration": det, "sepsis": _sepsis(res, by_ref, stay), "aki": _aki(res, stay)}


def derive_onsets(bundle: dict) -> dict:
    """{"deterioration", "sepsis", "aki"} -> aware UTC datetime or None, by the rules in the module docstring."""
    e = explain_onsets(bundle)
    return {"deterioration": _utc(e["deterioration"][0][0]) if e["deterioration"] else None,
            "sepsis": _utc(e["sepsis"]["onset"]), "aki": _utc(e["aki"]["onset"])}


# ----------------------------------------------------------------------------- self-test
def _self_test() -> None:  # noqa: C901 - a list of cases
    T0 = dt.datetime(2026, 1, 10, 8, tzinfo=UTC)

    def iso(h, frac=False):
        t = T0 + dt.timedelta(hours=h)
        return t.strftime("%Y-%m-%dT%H:%M:%S") + (".123456" if frac else "") + "Z"

    def obs(code, h, value=None, unit="", status="final", **kw):
        r = {"resourceType": "Observation", "status": status, "code": {"coding": [{"system": LOINC, "code": code}]},
             "effectiveDateTime": iso(h, kw.pop("frac", False))}
        if value is not None:
            r["valueQuantity"] = {"value": value, "code": unit}
        r.update(kw)
        return r

    def acvpu(h, snomed):
        return obs("67775-7", h, valueCodeableConcept={"coding": [{"system": SNOMED, "code": snomed}]})

    def bp_panel(h, s, d):
        return obs("85354-9", h, component=[
            {"code": {"coding": [{"system": LOINC, "code": SYS}]}, "valueQuantity": {"value": s, "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": LOINC, "code": DIA}]}, "valueQuantity": {"value": d, "code": "mm[Hg]"}}])

    def culture(h, key="authoredOn"):
        return {"resourceType": "ServiceRequest", "status": "completed", "intent": "order",
                "code": {"coding": [{"system": LOINC, "code": "600-7"}]}, key: iso(h)}

    def abx(h, code="2193", kind="MedicationAdministration", system=RXNORM):
        r = {"resourceType": kind, "status": "completed",
             "medicationCodeableConcept": {"coding": [{"system": system, "code": code}]}}
        r["effectiveDateTime" if kind == "MedicationAdministration" else "authoredOn"] = iso(h)
        return r

    def bundle(*resources, los=200, **enc):
        e = {"resourceType": "Encounter", "id": "e", "status": "finished",
             "period": {"start": iso(0), "end": iso(los)}}
        e.update(enc)
        rs = [{"resourceType": "Patient", "id": "p"}, e] + list(resources)
        return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in rs]}

    def at(h):
        return T0 + dt.timedelta(hours=h)

    icu = {"resourceType": "Location", "id": "icu", "name": "Unit 9", "type": [
        {"coding": [{"system": ROLE_CODE, "code": "ICU"}]}]}
    ward = {"resourceType": "Location", "id": "w", "name": "Ward 4B", "type": [
        {"coding": [{"system": ROLE_CODE, "code": "HU"}]}]}

    # ---- deterioration
    locs = [{"location": {"reference": "Location/w"}, "period": {"start": iso(0), "end": iso(30)}},
            {"location": {"reference": "Location/icu"}, "period": {"start": iso(30)}}]
    assert derive_onsets(bundle(icu, ward, location=locs))["deterioration"] == at(30)
    assert derive_onsets(bundle(ward, location=locs[:1]))["deterioration"] is None
    by_display = [{"location": {"display": "Medical Intensive Care Unit"}, "period": {"start": iso(12)}}]
    assert derive_onsets(bundle(location=by_display))["deterioration"] == at(12)
    by_name = [{"location": {"reference": "Location/x", "display": "bed 3"}, "period": {"start": iso(13)}}]
    assert derive_onsets(bundle({"resourceType": "Location", "id": "x", "name": "MICU"},
                                location=by_name))["deterioration"] == at(13)
    not_icu = [{"location": {"display": "Picuris ward"}, "period": {"start": iso(13)}}]
    assert derive_onsets(bundle(location=not_icu))["deterioration"] is None
    b = bundle(los=50, hospitalization={"dischargeDisposition": {"coding": [
        {"system": DISCHARGE_DISPOSITION, "code": "exp"}]}})
    assert derive_onsets(b)["deterioration"] == at(50)
    b = bundle(los=60)
    b["entry"][0]["resource"]["deceasedDateTime"] = iso(40, frac=True)
    assert derive_onsets(b)["deterioration"] == at(40) + dt.timedelta(microseconds=123456)
    b["entry"][0]["resource"]["deceasedDateTime"] = iso(80)  # after the stay: ignored
    assert derive_onsets(b)["deterioration"] is None
    locs_off = [{"location": {"reference": "Location/icu"}, "period": {"start": "2026-01-11T10:00:00+02:00"}}]
    assert derive_onsets(bundle(icu, location=locs_off))["deterioration"] == at(24)  # offset -> 08:00Z

    # ---- sepsis: suspicion windows (no SOFA data before t_susp - 48 h -> baseline 0)
    organ = [obs("777-3", 50, 90, "10*3/uL"), acvpu(50, "248234008")]  # platelets < 100 -> 2 points
    assert derive_onsets(bundle(culture(48), abx(49), *organ))["sepsis"] == at(48)
    assert derive_onsets(bundle(culture(48), abx(48 + 71), *organ))["sepsis"] == at(48)
    assert derive_onsets(bundle(culture(48), abx(48 + 73), *organ))["sepsis"] is None       # abx > 72 h later
    assert derive_onsets(bundle(abx(40), culture(40 + 23), *organ))["sepsis"] == at(40)    # culture <= 24 h later
    assert derive_onsets(bundle(abx(40), culture(40 + 25), *organ))["sepsis"] is None
    assert derive_onsets(bundle(culture(48), *organ))["sepsis"] is None                     # culture only
    assert derive_onsets(bundle(culture(48), abx(49, "5640"), *organ))["sepsis"] is None    # ibuprofen
    assert derive_onsets(bundle(culture(48), abx(49, "J01DD04", system=ATC), *organ))["sepsis"] == at(48)
    assert derive_onsets(bundle(culture(48, "occurrenceDateTime"), abx(49, "74169", "MedicationRequest"),
                                *organ))["sepsis"] == at(48)
    assert derive_onsets(bundle(culture(48), abx(49)))["sepsis"] is None                    # no organ dysfunction
    # t_SOFA before t_susp: onset = t_SOFA (hourly points from t_susp - 48 h)
    assert derive_onsets(bundle(culture(60), abx(61), obs("777-3", 40, 90, "10*3/uL")))["sepsis"] == at(40)
    # t_SOFA later than t_susp: onset = t_susp; SOFA after t_susp + 24 h does not count
    assert derive_onsets(bundle(culture(48), abx(49), obs("777-3", 70, 90, "10*3/uL")))["sepsis"] == at(48)
    assert derive_onsets(bundle(culture(48), abx(49), obs("777-3", 75, 90, "10*3/uL")))["sepsis"] is None
    # non-final and entered-in-error results are not read
    assert derive_onsets(bundle(culture(48), abx(49), obs("777-3", 50, 90, "10*3/uL", status="preliminary")))[
        "sepsis"] is None
    assert derive_onsets(bundle(culture(48), abx(49), obs("777-3", 50, 90, "10*3/uL", status="amended")))[
        "sepsis"] == at(48)
    # baseline: SOFA recorded before t_susp - 48 h -> a rise of 2 over the minimum is needed
    ckd = [obs("2160-0", h, 2.4, "mg/dL") for h in (2, 20, 40)]                           # renal 2 throughout
    assert derive_onsets(bundle(culture(48), abx(49), *ckd[1:]))["sepsis"] == at(20)        # baseline 0 (none early)
    early = [obs("2160-0", h, 2.4, "mg/dL") for h in (2, 20, 40, 60, 80, 100)]
    assert derive_onsets(bundle(culture(100), abx(101), *early))["sepsis"] is None          # baseline 2
    assert derive_onsets(bundle(culture(100), abx(101), *early, obs("777-3", 99, 90, "10*3/uL")))[
        "sepsis"] == at(99)
    # MAP: panel components only, standalone systolic + diastolic, direct MAP; MAP >= 70 scores 0
    low_map = bp_panel(50, 85, 55)                                                          # MAP 65 -> 1
    confused = acvpu(50, "300202002")                                                       # GCS 14 -> 1
    assert derive_onsets(bundle(culture(48), abx(49), low_map, confused))["sepsis"] == at(48)
    assert derive_onsets(bundle(culture(48), abx(49), bp_panel(50, 110, 60), confused))["sepsis"] is None
    assert derive_onsets(bundle(culture(48), abx(49), obs(SYS, 50, 85, "mm[Hg]"), obs(DIA, 50, 55, "mm[Hg]"),
                                confused))["sepsis"] == at(48)
    assert derive_onsets(bundle(culture(48), abx(49), obs(SYS, 50, 85, "mm[Hg]"), obs(DIA, 51, 55, "mm[Hg]"),
                                confused))["sepsis"] is None                                 # not paired
    assert derive_onsets(bundle(culture(48), abx(49), obs("8478-0", 50, 64, "mm[Hg]"), confused))["sepsis"] == at(48)
    # CNS: GCS 12 -> 2 points alone; ACVPU voice -> GCS 12 -> 2; alert -> 0; the later of GCS/ACVPU wins
    assert derive_onsets(bundle(culture(48), abx(49), obs("9269-2", 50, 12, "{score}")))["sepsis"] == at(48)
    assert derive_onsets(bundle(culture(48), abx(49), acvpu(50, "450847001")))["sepsis"] == at(48)
    assert derive_onsets(bundle(culture(48), abx(49), acvpu(50, "248234008")))["sepsis"] is None
    assert derive_onsets(bundle(culture(48), abx(49), acvpu(50, "450847001"), obs("9269-2", 51, 15, "")))[
        "sepsis"] == at(48)                                                                  # 50:00 point counted
    late_gcs = bundle(culture(48), abx(49), acvpu(49.5, "450847001"), obs("9269-2", 49.8, 15, ""))
    assert derive_onsets(late_gcs)["sepsis"] is None                                         # GCS 15 at 50:00
    # vitals older than 6 h are not read
    e = explain_onsets(bundle(culture(48), abx(49), acvpu(40, "450847001")))
    assert e["sepsis"]["onset"] == at(40) and e["sepsis"]["episodes"][0]["sofa"][1]["cns"] == 2
    # respiration: SpO2 / FiO2, FiO2 from flow (0.21 + 0.04 x 5 = 0.41: 94/0.41 = 229 -> 2)
    assert derive_onsets(bundle(culture(48), abx(49), obs("59408-5", 50, 94, "%"), obs("3151-8", 50, 5, "L/min")))[
        "sepsis"] == at(48)
    assert derive_onsets(bundle(culture(48), abx(49), obs("59408-5", 50, 94, "%")))["sepsis"] is None   # 448 -> 1
    assert derive_onsets(bundle(culture(48), abx(49), obs("59408-5", 50, 94, "%"), obs("3150-0", 50, 40, "%")))[
        "sepsis"] == at(48)
    assert derive_onsets(bundle(culture(48), abx(49), obs("59408-5", 50, 94, "%"), obs("3150-0", 50, 0.3, "1")))[
        "sepsis"] == at(48)                                                                  # 313 -> 2
    comp = explain_onsets(bundle(culture(48), abx(49), obs("59408-5", 50, 85, "%"), obs("3151-8", 50, 15, "L/min")))
    assert comp["sepsis"]["episodes"][0]["sofa"][1]["respiration"] == 4                     # 85/0.6 = 142 < 150
    # bilirubin in umol/L, creatinine in umol/L
    assert derive_onsets(bundle(culture(48), abx(49), obs("1975-2", 50, 40, "umol/L")))["sepsis"] == at(48)  # 2.3 mg/dL
    assert derive_onsets(bundle(culture(48), abx(49), obs("14682-9", 50, 200, "umol/L")))["sepsis"] == at(48)
    assert derive_onsets(bundle(culture(48), abx(49), obs("14682-9", 50, 150, "umol/L")))["sepsis"] is None
    # microsecond timestamps and offsets
    c = culture(48)
    c["authoredOn"] = "2026-01-12T09:00:00.5+01:00"                                         # = 48 h + 0.5 s
    s_on = derive_onsets(bundle(c, abx(49), obs("777-3", 50, 90, "10*3/uL", frac=True)))["sepsis"]
    assert s_on == at(48) + dt.timedelta(microseconds=500000) and s_on.tzinfo == UTC
    # outside the stay: ignored
    assert derive_onsets(bundle(culture(48), abx(49), *organ, los=40))["sepsis"] is None

    # ---- AKI
    cr = lambda h, v, **kw: obs("2160-0", h, v, "mg/dL", **kw)  # noqa: E731
    assert derive_onsets(bundle(cr(2, 1.0), cr(26, 1.2), cr(40, 1.3)))["aki"] == at(40)     # +0.3 in 48 h
    assert derive_onsets(bundle(cr(2, 1.0), cr(26, 1.2), cr(51, 1.29)))["aki"] is None
    assert derive_onsets(bundle(cr(2, 1.0), cr(60, 1.25), cr(100, 1.5)))["aki"] == at(100)  # 1.5x in 7 d
    assert derive_onsets(bundle(cr(2, 1.0), cr(60, 1.25), cr(100, 1.49)))["aki"] is None    # +0.24 in 48 h
    assert derive_onsets(bundle(cr(2, 3.0)))["aki"] is None                                 # needs an earlier value
    assert derive_onsets(bundle(cr(2, 1.0), cr(20, 2.0, status="preliminary")))["aki"] is None
    assert derive_onsets(bundle(cr(2, 1.0), cr(20, 2.0, status="entered-in-error")))["aki"] is None
    assert derive_onsets(bundle(cr(2, 1.0), cr(20, 2.0, status="corrected")))["aki"] == at(20)
    um = lambda h, v: obs("14682-9", h, v, "umol/L", frac=True)  # noqa: E731
    assert derive_onsets(bundle(um(2, 80), um(20, 107)))["aki"] == at(20) + dt.timedelta(microseconds=123456)
    assert derive_onsets(bundle(um(2, 80), um(20, 100)))["aki"] is None
    assert derive_onsets(bundle(cr(2, 1.0), um(20, 115)))["aki"] == at(20) + dt.timedelta(microseconds=123456)
    assert derive_onsets(bundle(cr(-10, 1.0), cr(20, 2.0)))["aki"] is None                  # before the stay
    assert derive_onsets(bundle())["aki"] is None and derive_onsets({}) == {
        "deterioration": None, "sepsis": None, "aki": None}


if __name__ == "__main__":
    _self_test()
    print("labels self-test: ok")
