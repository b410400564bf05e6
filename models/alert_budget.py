"""Warning / critical thresholds from an alert budget, under the service's suppression window.

train.toml:

    [alert_budget]
    service = "sepsis-screen"             # cds-services/<service>.toml: its [alerts] suppress_for
    cards_per_patient_day = 0.3           # warning-or-critical cards shown per patient-day, at most
    critical_cards_per_patient_day = 0.1  # optional (default: a quarter of the budget)
    min_ppv = 0.2                         # optional: cards whose onset follows within the horizon

Simulation on the validation split: the service is called at each sample time of a patient (every
`sample_every_hours`); a card is shown when risk >= warning and no card was shown for the patient
within `suppress_for`, or when it escalates (risk >= critical and the card shown in the window was a
warning) -- the gateway's suppression rule. Cards per patient-day = cards / the patients' observed
days. The critical threshold is the lowest candidate whose critical cards keep the critical budget;
the warning threshold the LOWEST candidate (most sensitive) at or below it whose cards, escalations
to critical included, keep the whole budget (and min_ppv).
"""
from __future__ import annotations

import os
import re
import tomllib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SERVICES = os.path.join(os.path.dirname(HERE), "cds-services")


def duration_hours(text: str | None) -> float:
    """humantime-style "12h", "30m", "1d", "1h 30m" -> hours (None / "" -> 0)."""
    if not text:
        return 0.0
    unit = {"s": 1 / 3600, "m": 1 / 60, "min": 1 / 60, "h": 1.0, "d": 24.0, "w": 168.0}
    total = 0.0
    for num, u in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]+)", text):
        if u not in unit:
            raise ValueError(f"duration {text!r}: unit {u!r}")
        total += float(num) * unit[u]
    return total


def service_suppression(service: str) -> float:
    with open(os.path.join(SERVICES, f"{service}.toml"), "rb") as f:
        svc = tomllib.load(f)
    return duration_hours(svc.get("alerts", {}).get("suppress_for"))


def simulate(p, y, patient, t, warning, critical, suppress_h):
    """Cards shown (warning-or-critical, critical, true ones) and patient-days. Samples sorted by
    (patient, t)."""
    cards = crit = true = 0
    suppress = suppress_h * 3600.0
    last_p, last_t, last_band = None, -np.inf, 0
    for i in range(len(p)):
        if patient[i] != last_p:
            last_p, last_t, last_band = patient[i], -np.inf, 0
        band = 2 if p[i] >= critical else 1 if p[i] >= warning else 0
        if band == 0:
            continue
        in_window = t[i] - last_t < suppress
        if in_window and not (band == 2 and last_band == 1):
            continue
        cards += 1
        crit += band == 2
        true += int(y[i])
        last_t, last_band = t[i], band
    return cards, crit, true


def patient_days(patient, t, every_hours) -> float:
    days = 0.0
    for pid in np.unique(patient):
        tt = t[patient == pid]
        days += (tt.max() - tt.min()) / 86400.0 + every_hours / 24.0
    return days


def choose(cfg: dict, p, y, patient, t) -> dict | None:
    """The thresholds for train.toml's [alert_budget], or None when it has none."""
    budget = cfg.get("alert_budget")
    if not budget:
        return None
    order = np.lexsort((t, patient))
    p, y, patient, t = (np.asarray(a)[order] for a in (p, y, patient, t))
    suppress_h = service_suppression(budget["service"])
    days = patient_days(patient, t, cfg["sample_every_hours"])
    per_day = float(budget["cards_per_patient_day"])
    crit_per_day = float(budget.get("critical_cards_per_patient_day", per_day / 4))
    min_ppv = float(budget.get("min_ppv", 0.0))
    cands = np.unique(np.round(np.quantile(p, np.linspace(0.5, 0.999, 300)), 4))
    cands = cands[cands > 0]

    def rates(w, c):
        n, nc, tp = simulate(p, y, patient, t, w, c, suppress_h)
        return n / days, nc / days, (tp / n if n else 1.0)

    # Critical first (alone: what would be shown as critical), then the most sensitive warning
    # that keeps the whole budget with that critical's escalations counted.
    critical = None
    for c in cands:
        if rates(c, c)[1] <= crit_per_day:
            critical = float(c)
            break
    if critical is None:
        critical = float(cands[-1])
    warning = None
    for w in cands[cands <= critical]:  # ascending: the first that fits is the most sensitive
        r, rc, ppv = rates(w, critical)
        if r <= per_day and ppv >= min_ppv:
            warning, all_rate, c_rate, w_ppv = float(w), r, rc, ppv
            break
    if warning is None:  # nothing fits: warning = critical
        warning = critical
        all_rate, c_rate, w_ppv = rates(warning, critical)
    return {
        "warning": round(warning, 4),
        "critical": round(critical, 4),
        "service": budget["service"],
        "suppress_for_hours": suppress_h,
        "cards_per_patient_day": per_day,
        "critical_cards_per_patient_day": crit_per_day,
        "min_ppv": min_ppv,
        "validation_cards_per_patient_day": round(float(all_rate), 4),
        "validation_critical_cards_per_patient_day": round(float(c_rate), 4),
        "validation_ppv": round(float(w_ppv), 4),
        "calls_every_hours": float(cfg["sample_every_hours"]),
    }
