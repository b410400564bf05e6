#!/usr/bin/env python3
"""Deterministic bedside baselines: the Python port of the gateway's Rust scores.

Same semantics, thresholds, rounding and words as the Rust modules, which hold the full rationale:

* ``news2``  -- ``src/features/news2.rs``: NEWS2 (RCP 2017), SpO2 scale 1 or 2.
* ``qsofa``  -- ``src/features/qsofa.rs``: qSOFA (Seymour et al., JAMA 2016; Sepsis-3).
* ``sirs``   -- ``src/features/sirs.rs``: SIRS (Bone et al., ACCP/SCCM consensus, Chest 1992).
* ``kdigo``  -- ``src/features/kdigo.rs``: KDIGO 2012 AKI staging, creatinine criteria only.

Values are read as charted and reported, rounding half away from zero (Rust's ``f64::round``; Python's
``round`` rounds half to even and must not be used here): whole numbers, except temperature and white
cell count (one decimal) and creatinine (0.01 mg/dL, compared in whole hundredths so that no boundary is
lost to floating point). ``tests/models/baselines_parity.rs`` runs ``--eval`` on a grid of ~2000 cases and
asserts every result equals Rust's.

    .venv/bin/python models/baselines.py                 # self-test: the published worked examples
    .venv/bin/python models/baselines.py --eval cases.json   # results JSON on stdout
    .venv/bin/python models/baselines.py --inputs cases.json # NEWS2 gathered from Bundles (news2_inputs)
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys

if not __package__:  # run as a file (`python models/baselines.py`): find `models` for the input gathering
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# ----------------------------------------------------------------------------- rounding


def _round(x: float) -> float:
    """Half away from zero, exactly as Rust's ``f64::round`` (``x - floor(x)`` is exact in binary)."""
    if not math.isfinite(x):
        return x
    if x < 0:
        return -_round(-x)
    f = float(math.floor(x))
    return f + 1.0 if x - f >= 0.5 else f


def _one_decimal(x: float) -> float:
    return _round(x * 10.0) / 10.0


# ----------------------------------------------------------------------------- NEWS2

NEWS2_PARAMETERS = ("respiratory_rate", "spo2", "on_oxygen", "systolic_bp", "heart_rate", "alert",
                    "temperature")


def _respiration(x):
    return 3 if x <= 8 else 1 if x <= 11 else 0 if x <= 20 else 2 if x <= 24 else 3


def _spo2_scale1(x):
    return 3 if x <= 91 else 2 if x <= 93 else 1 if x <= 95 else 0


def _spo2_scale2(x, on_oxygen: bool):
    if x <= 83:
        return 3
    if x <= 85:
        return 2
    if x <= 87:
        return 1
    if x <= 92:
        return 0
    if not on_oxygen:
        return 0
    return 1 if x <= 94 else 2 if x <= 96 else 3


def _systolic(x):
    return 3 if x <= 90 else 2 if x <= 100 else 1 if x <= 110 else 0 if x <= 219 else 3


def _pulse(x):
    return 3 if x <= 40 else 1 if x <= 50 else 0 if x <= 90 else 1 if x <= 110 else 2 if x <= 130 else 3


def _temperature(x):
    return 3 if x <= 35.0 else 1 if x <= 36.0 else 0 if x <= 38.0 else 1 if x <= 39.0 else 2


def news2(vitals: dict, scale: int = 1) -> dict:
    """NEWS2 of ``vitals`` (keys as ``NEWS2_PARAMETERS``; absent or None = not recorded) on SpO2
    ``scale`` 1 or 2. Missing parameters score 0 and are listed. Oxygen not recorded is read as air."""
    if scale not in (1, 2):
        raise ValueError(f"SpO2 scale must be 1 or 2, not {scale!r}")
    v = {k: vitals.get(k) for k in NEWS2_PARAMETERS}
    parts, missing = [], []

    def add(name, points):
        if points is None:
            missing.append(name)
        else:
            parts.append([name, points])

    def read(key, f, chart=_round):
        return None if v[key] is None else f(chart(float(v[key])))

    on_oxygen = bool(v["on_oxygen"]) if v["on_oxygen"] is not None else False
    add("respiratory rate", read("respiratory_rate", _respiration))
    add("SpO2", read("spo2", _spo2_scale1 if scale == 1 else lambda x: _spo2_scale2(x, on_oxygen)))
    add("air or oxygen", None if v["on_oxygen"] is None else (2 if v["on_oxygen"] else 0))
    add("systolic BP", read("systolic_bp", _systolic))
    add("pulse", read("heart_rate", _pulse))
    add("consciousness", None if v["alert"] is None else (0 if v["alert"] else 3))
    add("temperature", read("temperature", _temperature, _one_decimal))
    total = sum(p for _, p in parts)
    if total >= 7:
        band = "high"
    elif total in (5, 6):
        band = "medium"
    elif any(p == 3 for _, p in parts):
        band = "low-medium"
    else:
        band = "low"
    return {"total": total, "parts": parts, "missing": missing, "band": band, "scale": scale}


# ----------------------------------------------------------------------------- qSOFA


def qsofa(inputs: dict) -> dict:
    """qSOFA from ``respiratory_rate`` (/min), ``systolic_bp`` (mmHg) and ``alert`` (False = anything
    but Alert on ACVPU, i.e. altered mentation). Positive at 2 or more."""
    parts, missing = [], []
    for name, met in (
        ("respiratory rate", _met(inputs.get("respiratory_rate"), lambda x: _round(x) >= 22)),
        ("systolic BP", _met(inputs.get("systolic_bp"), lambda x: _round(x) <= 100)),
        ("mentation", None if inputs.get("alert") is None else not inputs["alert"]),
    ):
        if met is None:
            missing.append(name)
        else:
            parts.append([name, int(met)])
    total = sum(p for _, p in parts)
    return {"total": total, "parts": parts, "missing": missing, "positive": total >= 2}


def _met(value, test):
    return None if value is None else bool(test(float(value)))


# ----------------------------------------------------------------------------- SIRS


def _either(a, b):
    if a is None and b is None:
        return None
    return a is True or b is True


def sirs(inputs: dict) -> dict:
    """SIRS from ``temperature`` (°C), ``heart_rate``, ``respiratory_rate``, ``paco2`` (mmHg), ``wbc``
    (×10⁹/L) and ``bands`` (%). Strict thresholds; a two-input criterion is met when either input is.
    Positive at 2 or more."""
    g = inputs.get
    temperature = _met(g("temperature"), lambda x: not 36.0 <= _one_decimal(x) <= 38.0)
    heart_rate = _met(g("heart_rate"), lambda x: _round(x) > 90)
    respiratory = _either(_met(g("respiratory_rate"), lambda x: _round(x) > 20),
                          _met(g("paco2"), lambda x: _round(x) < 32))
    white_cells = _either(_met(g("wbc"), lambda x: not 4.0 <= _one_decimal(x) <= 12.0),
                          _met(g("bands"), lambda x: _round(x) > 10))
    parts, missing = [], []
    for name, met in (("temperature", temperature), ("heart rate", heart_rate),
                      ("respiratory rate or PaCO2", respiratory), ("white cells", white_cells)):
        if met is None:
            missing.append(name)
        else:
            parts.append([name, int(met)])
    total = sum(p for _, p in parts)
    return {"total": total, "parts": parts, "missing": missing, "positive": total >= 2}


# ----------------------------------------------------------------------------- KDIGO

RISE_48H = "rise ≥ 0.3 mg/dL within 48 h"
RATIO_1_5 = "≥ 1.5 × baseline"
RATIO_2_0 = "≥ 2.0 × baseline"
RATIO_3_0 = "≥ 3.0 × baseline"
ABOVE_4 = "≥ 4.0 mg/dL with an acute rise"
RRT = "renal replacement therapy"
CRITERION_STAGE = {RISE_48H: 1, RATIO_1_5: 1, RATIO_2_0: 2, RATIO_3_0: 3, ABOVE_4: 3, RRT: 3}
CRITERION_ORDER = [RISE_48H, RATIO_1_5, RATIO_2_0, RATIO_3_0, ABOVE_4, RRT]
TOO_FEW = "fewer than two creatinine measurements"
NO_BASELINE = "no creatinine within 7 days before the latest"


def _hundredths(mg_dl) -> int | None:
    c = _round(float(mg_dl) * 100.0)
    return int(c) if math.isfinite(c) and c > 0 else None


def _creatinine_criteria(latest: int, baseline: int, rise: int | None) -> list:
    rise_03 = rise is not None and rise >= 30
    ratio_15 = 2 * latest >= 3 * baseline
    met = []
    if rise_03:
        met.append(RISE_48H)
    if latest >= 3 * baseline:
        met.append(RATIO_3_0)
    elif latest >= 2 * baseline:
        met.append(RATIO_2_0)
    elif ratio_15:
        met.append(RATIO_1_5)
    if latest >= 400 and (rise_03 or ratio_15):
        met.append(ABOVE_4)
    return sorted(met, key=CRITERION_ORDER.index)


def kdigo(creatinine, now: dt.datetime, on_rrt: bool = False) -> dict:
    """KDIGO 2012 creatinine stage from ``creatinine`` = [(datetime, mg/dL), ...] (any order) as of
    ``now``. ``stage`` is 0-3, or None when unknown (``not_staged`` says why). ``latest`` and
    ``baseline`` are (datetime, mg/dL read to 0.01) or None."""
    usable = []
    for t, mg_dl in creatinine:
        c = _hundredths(mg_dl)
        if t <= now and c is not None:
            usable.append((t, c))
    usable.sort(key=lambda p: p[0])  # stable: of equal times the later in the input is the latest

    def reading(p):
        return None if p is None else (p[0], p[1] / 100.0)

    out = {"stage": None, "criteria": [], "not_staged": None,
           "latest": reading(usable[-1]) if usable else None, "baseline": None, "ratio": None,
           "rise_48h": None}
    if len(usable) >= 2:
        latest_t, latest = usable[-1]
        earlier = usable[:-1]

        def lowest_since(start):
            low = None
            for t, c in earlier:
                if t >= start and (low is None or c <= low[1]):  # equal values: the most recent
                    low = (t, c)
            return low

        base = lowest_since(latest_t - dt.timedelta(days=7))
        if base is None:
            out["not_staged"] = NO_BASELINE
        else:
            low48 = lowest_since(latest_t - dt.timedelta(hours=48))
            rise = None if low48 is None else latest - low48[1]
            out["baseline"] = reading(base)
            out["ratio"] = latest / base[1]
            out["rise_48h"] = None if rise is None else rise / 100.0
            out["criteria"] = _creatinine_criteria(latest, base[1], rise)
    else:
        out["not_staged"] = TOO_FEW
    if on_rrt:
        out["criteria"].append(RRT)
    if out["criteria"]:
        out["stage"] = max(CRITERION_STAGE[c] for c in out["criteria"])
    elif out["not_staged"] is None:
        out["stage"] = 0
    return out


# ----------------------------------------------------------------------------- inputs from FHIR
# The gateway's input gathering for NEWS2 (src/features/oxygen.rs, src/services/gather.rs,
# Vitals::latest in src/features/news2.rs), by the same models/terminology.toml.

NEWS2_FEATURES = {"respiratory_rate": "respiratory_rate", "spo2": "spo2", "systolic_bp": "systolic_bp",
                  "heart_rate": "heart_rate", "temperature": "temperature"}


def _terminology():
    from models import featurize  # noqa: PLC0415 (featurize imports numpy; the scores above do not)
    return featurize


def on_oxygen(resources, not_before: float, now: float):
    """NEWS2 "air or oxygen" (True/False) from the latest O2 flow / FiO2 reading in [not_before, now)
    (epoch seconds), or None when none was recorded. As src/features/oxygen.rs."""
    fz = _terminology()
    t = fz.TERMINOLOGY
    rules = t["oxygen"]
    flow, fio2 = t["concept"][rules["flow_concept"]], t["concept"][rules["fio2_concept"]]

    def has(code, concept):
        return any(fz.system_of(c.get("system")) == "loinc" and c.get("code") in concept["loinc"]
                   for c in (code or {}).get("coding", []))

    def plausible(concept, v):
        lo, hi = concept.get("plausible", (-math.inf, math.inf))
        return v if v is not None and lo <= v <= hi else None

    def number(q):
        v = q.get("value")
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    latest = None
    for obs in fz.observations_of(resources):
        if obs.get("status") not in fz.USABLE_STATUS:
            continue
        eff = obs.get("effectiveDateTime") or obs.get("effectiveInstant")
        if eff is None and isinstance(obs.get("effectivePeriod"), dict):
            eff = obs["effectivePeriod"].get("end") or obs["effectivePeriod"].get("start")
        when = fz.instant_seconds(eff)
        if when is None or when < not_before or when >= now:
            continue
        parts = [(obs.get("code"), obs.get("valueQuantity"))] + [
            (c.get("code"), c.get("valueQuantity")) for c in obs.get("component", []) or []]
        for code, q in parts:
            if code is None or q is None:
                continue
            value, unit = number(q), fz._unit_of(q)
            reading = None
            if value is None:
                pass
            elif has(code, flow):
                v = plausible(flow, fz.convert(value, unit, flow["unit"]))
                reading = None if v is None else v > rules["flow_above_l_min"]
            elif has(code, fio2):
                if fz.HUMAN.get(unit.strip(), unit.strip()) in ("1", "") and value <= 1.0:
                    v = value * 100.0
                else:
                    v = fz.convert(value, unit, fio2["unit"])
                v = plausible(fio2, v)
                reading = None if v is None else v > rules["fio2_above_percent"]
            if reading is not None:
                if latest is None or when > latest[0]:
                    latest = (when, reading)
                elif when == latest[0]:
                    latest = (when, latest[1] or reading)
    return None if latest is None else latest[1]


def _condition_key(code: str) -> str:
    return "".join(ch for ch in code if ch not in ". ").upper()


def spo2_scale(resources, service_codes=()) -> int:
    """2 when an active, not refuted Condition is coded with a service code (any system) or a
    `[spo2_scale2]` code of models/terminology.toml (in its system), dots and case ignored; else 1."""
    fz = _terminology()
    listed = {(system, _condition_key(c)) for system, codes in fz.TERMINOLOGY["spo2_scale2"].items() for c in codes}
    own = {_condition_key(c) for c in service_codes}
    if isinstance(resources, dict) and resources.get("resourceType") == "Bundle":
        resources = [e.get("resource") for e in resources.get("entry", [])]
    elif isinstance(resources, dict):
        resources = [resources]
    for r in resources:
        if not isinstance(r, dict) or r.get("resourceType") != "Condition":
            continue
        clinical = [c.get("code") for c in (r.get("clinicalStatus") or {}).get("coding", [])]
        verification = [c.get("code") for c in (r.get("verificationStatus") or {}).get("coding", [])]
        if clinical and not any(c in ("active", "recurrence", "relapse") for c in clinical):
            continue
        if any(c in ("refuted", "entered-in-error") for c in verification):
            continue
        for c in (r.get("code") or {}).get("coding", []):
            code = c.get("code")
            if isinstance(code, str) and (_condition_key(code) in own
                                           or (fz.system_of(c.get("system")), _condition_key(code)) in listed):
                return 2
    return 1


def news2_inputs(spec, resources, now: float, not_before: float, service_codes=()):
    """(vitals, scale) for ``news2`` as the gateway gathers them: the latest in-window value of each NEWS2
    feature of ``spec`` (featurize.load_spec) at or after ``not_before``, consciousness from ACVPU or GCS,
    oxygen from O2 flow / FiO2, scale 2 from the Conditions."""
    fz = _terminology()
    meas, _ = fz.extract(spec, resources)
    start = now - spec["window_hours"] * 3600.0
    names = [f["name"] for f in spec["feature"]]
    latest = {}
    for f, t, v, _ in meas:
        if start <= t < now:
            latest[names[f]] = (t, v)
    def value(name):
        tv = latest.get(name)
        return None if tv is None or tv[0] < not_before else tv[1]
    vitals = {key: value(name) for key, name in NEWS2_FEATURES.items()}
    alert = value("consciousness_not_alert")
    vitals["alert"] = None if alert is None else alert < 0.5
    vitals["on_oxygen"] = on_oxygen(resources, max(not_before, start), now)
    return vitals, spo2_scale(resources, service_codes)


# ----------------------------------------------------------------------------- --eval (parity test)


def _instant(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)


def _seconds(t: dt.datetime) -> int:
    return int(t.timestamp())


def evaluate(case: dict) -> dict:
    """One ``--eval`` case (see tests/models/baselines_parity.rs): each present key scored."""
    out = {}
    if "news2" in case:
        c = case["news2"]
        out["news2"] = news2(c["vitals"], c["scale"])
    if "qsofa" in case:
        out["qsofa"] = qsofa(case["qsofa"])
    if "sirs" in case:
        out["sirs"] = sirs(case["sirs"])
    if "kdigo" in case:
        c = case["kdigo"]
        k = kdigo([(_instant(t), v) for t, v in c["creatinine"]], _instant(c["now"]), c["on_rrt"])
        for key in ("latest", "baseline"):
            if k[key] is not None:
                k[key] = [_seconds(k[key][0]), k[key][1]]
        out["kdigo"] = k
    return out


# ----------------------------------------------------------------------------- self-test


def _self_test() -> None:
    """The worked examples of the Rust unit tests, with their published sources."""
    def vitals(rr, spo2, o2, sbp, hr, alert, t):
        return dict(respiratory_rate=rr, spo2=spo2, on_oxygen=o2, systolic_bp=sbp, heart_rate=hr,
                    alert=alert, temperature=t)

    # NEWS2, RCP 2017 chart.
    assert news2(vitals(16, 98, False, 125, 72, True, 36.8))["total"] == 0
    s = news2(vitals(24, 93, True, 105, 115, True, 38.5))
    assert (s["total"], s["band"]) == (10, "high")
    assert news2(vitals(16, 98, False, 125, 72, False, 36.8))["band"] == "low-medium"
    assert news2(vitals(22, 95, False, 125, 105, True, 38.3))["band"] == "medium"
    assert news2({"heart_rate": 90.4})["total"] == 0 and news2({"heart_rate": 90.6})["total"] == 1
    assert news2({"heart_rate": 90.5})["total"] == 1  # half away from zero, not to even
    assert news2({"temperature": 38.04})["total"] == 0
    # Scale 2: COPD on target (90% on air) 0 vs 3 on scale 1; 95% on oxygen 2 (+2 for oxygen).
    assert news2({"spo2": 90, "on_oxygen": False}, 2)["total"] == 0
    assert news2({"spo2": 90, "on_oxygen": False}, 1)["total"] == 3
    assert news2({"spo2": 95, "on_oxygen": True}, 2)["total"] == 4
    assert news2({"spo2": 95, "on_oxygen": True}, 1)["total"] == 3
    assert news2({"spo2": 97, "on_oxygen": True}, 2)["total"] == 5
    assert news2({"spo2": 97, "on_oxygen": True}, 1)["total"] == 2
    for x, air, oxygen in [(83, 3, 3), (84, 2, 2), (85, 2, 2), (86, 1, 1), (87, 1, 1), (88, 0, 0),
                           (92, 0, 0), (93, 0, 1), (94, 0, 1), (95, 0, 2), (96, 0, 2), (97, 0, 3)]:
        assert news2({"spo2": x, "on_oxygen": False}, 2)["parts"][0][1] == air, x
        assert news2({"spo2": x, "on_oxygen": True}, 2)["parts"][0][1] == oxygen, x
    s = vitals(24, 86, True, 118, 104, True, 37.9)
    assert (news2(s, 1)["total"], news2(s, 2)["total"], news2(s, 2)["band"]) == (8, 6, "medium")

    # qSOFA, Seymour et al. JAMA 2016.
    assert qsofa(dict(respiratory_rate=21, systolic_bp=101, alert=True))["total"] == 0
    assert qsofa(dict(respiratory_rate=22, systolic_bp=101, alert=True))["total"] == 1
    assert qsofa(dict(respiratory_rate=21, systolic_bp=100, alert=True))["total"] == 1
    q = qsofa(dict(respiratory_rate=24, systolic_bp=118, alert=False))
    assert (q["total"], q["positive"]) == (2, True)
    q = qsofa({"respiratory_rate": 25})
    assert q["missing"] == ["systolic BP", "mentation"] and not q["positive"]

    # SIRS, Bone et al. Chest 1992.
    for t, met in [(35.9, 1), (36.0, 0), (38.0, 0), (38.1, 1)]:
        assert sirs({"temperature": t})["total"] == met, t
    assert sirs({"heart_rate": 90})["total"] == 0 and sirs({"heart_rate": 91})["total"] == 1
    assert sirs({"respiratory_rate": 20})["total"] == 0 and sirs({"paco2": 31})["total"] == 1
    for w, met in [(3.9, 1), (4.0, 0), (12.0, 0), (12.1, 1), (12.04, 0), (12.06, 1)]:
        assert sirs({"wbc": w})["total"] == met, w
    assert sirs({"bands": 10})["total"] == 0 and sirs({"bands": 11})["total"] == 1
    s = sirs(dict(temperature=38.6, heart_rate=112, respiratory_rate=18, wbc=9.0))
    assert (s["total"], s["positive"]) == (2, True)
    s = sirs(dict(temperature=35.2, heart_rate=88, respiratory_rate=24, paco2=28, wbc=2.5, bands=15))
    assert s["total"] == 3

    # KDIGO 2012, creatinine criteria.
    now = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc)

    def staged(series, on_rrt=False):
        return kdigo([(now - dt.timedelta(hours=h), v) for h, v in series], now, on_rrt)

    k = staged([(24, 1.0), (0, 1.3)])
    assert (k["stage"], k["criteria"], k["rise_48h"]) == (1, [RISE_48H], 0.3)
    k = staged([(120, 1.0), (0, 2.1)])
    assert (k["stage"], k["criteria"], k["rise_48h"]) == (2, [RATIO_2_0], None)
    k = staged([(48, 1.2), (0, 4.1)])
    assert (k["stage"], k["criteria"]) == (3, [RISE_48H, RATIO_3_0, ABOVE_4])
    assert staged([(24, 0.9), (0, 1.1)])["stage"] == 0
    assert staged([(24, 3.0), (0, 3.1)])["stage"] == 0
    assert staged([(24, 3.9), (0, 4.1)])["stage"] == 0
    assert staged([(24, 3.8), (0, 4.1)])["criteria"] == [RISE_48H, ABOVE_4]
    k = staged([(240, 0.8), (120, 1.2), (0, 1.5)])
    assert (k["stage"], k["baseline"][1]) == (0, 1.2)
    k = staged([(240, 0.8), (0, 1.5)])
    assert (k["stage"], k["not_staged"]) == (None, NO_BASELINE)
    for base, latest, want in [(1.0, 1.49, 0), (1.0, 1.5, 1), (1.0, 1.99, 1), (1.0, 2.0, 2),
                               (1.0, 2.99, 2), (1.0, 3.0, 3), (0.8, 1.2, 1), (0.8, 2.4, 3),
                               (0.3, 0.6, 2)]:
        assert staged([(120, base), (0, latest)])["stage"] == want, (base, latest)
    assert staged([(24, 0.9), (0, 1.2)])["stage"] == 1 and staged([(24, 0.9), (0, 1.19)])["stage"] == 0
    assert staged([(48, 1.0), (0, 1.3)])["stage"] == 1
    second = dt.timedelta(seconds=1)
    assert kdigo([(now - dt.timedelta(hours=48) - second, 1.0), (now, 1.3)], now)["stage"] == 0
    assert staged([(168, 1.0), (0, 1.5)])["stage"] == 1
    assert kdigo([(now - dt.timedelta(days=7) - second, 1.0), (now, 1.5)], now)["stage"] is None
    k = staged([(40, 1.0), (20, 1.4), (0, 1.3)])
    assert (k["stage"], k["rise_48h"]) == (1, 0.3)
    assert staged([(24, 2.0), (0, 1.2)])["rise_48h"] == -0.8
    k = staged([(0, 5.0)])
    assert (k["stage"], k["not_staged"], k["latest"][1]) == (None, TOO_FEW, 5.0)
    assert kdigo([], now)["stage"] is None
    k = kdigo([(now - dt.timedelta(hours=24), 1.0), (now + dt.timedelta(hours=1), 2.0),
               (now - dt.timedelta(hours=10), float("nan")), (now - dt.timedelta(hours=5), 0.0)], now)
    assert k["stage"] is None
    k = kdigo([], now, on_rrt=True)
    assert (k["stage"], k["criteria"], k["not_staged"]) == (3, [RRT], TOO_FEW)
    assert staged([(24, 1.0), (0, 1.3)], on_rrt=True)["criteria"] == [RISE_48H, RRT]
    k = kdigo([(now - dt.timedelta(hours=24), 1.0), (now, 1.1), (now, 1.4)], now)
    assert (k["latest"][1], k["stage"], k["rise_48h"]) == (1.4, 1, 0.4)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval", metavar="CASES_JSON",
                    help="score {\"cases\": [...]} and print {\"results\": [...]} as JSON")
    ap.add_argument("--inputs", metavar="CASES_JSON",
                    help="[{spec, bundle, now, not_before}] -> NEWS2 gathered from each Bundle, JSON")
    args = ap.parse_args(argv)
    if args.inputs:
        fz = _terminology()
        with open(args.inputs, encoding="utf-8") as f:
            cases = json.load(f)
        out = []
        for c in cases:
            with open(c["bundle"], encoding="utf-8") as f:
                bundle = json.load(f)
            spec = fz.load_spec(c["spec"])
            vitals, scale = news2_inputs(spec, bundle, fz.instant_seconds(c["now"]),
                                         fz.instant_seconds(c["not_before"]))
            out.append({"vitals": vitals, "scale": scale, "news2": news2(vitals, scale)})
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
        return 0
    if args.eval:
        with open(args.eval, encoding="utf-8") as f:
            cases = json.load(f)["cases"]
        json.dump({"results": [evaluate(c) for c in cases]}, sys.stdout)
        sys.stdout.write("\n")
        return 0
    _self_test()
    print("baselines self-test: all worked examples pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())
