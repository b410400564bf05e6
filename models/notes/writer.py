"""Nursing notes as FHIR DocumentReferences, written into a generator's Bundle (opt-in: `notes=True`).

Why: issue 19 asks whether free-text notes add anything to the structured record. Neither generator wrote
notes, so this module writes them, the same way for both, from two things only:
* the generator's **latent sickness** at the note's time, `concern_at(hours since admission)` (about 0 when
  well, about 1 when an event is at its peak). A nurse at the bedside sees the patient, not the chart: this
  is the "nurse worry" signal the literature reports as an early sign of deterioration (Douw et al., BMJ
  Open 2015;5:e007470; Romero-Brufau et al., 2019). The nurse perceives it with noise,
  `x = concern + N(0, PERCEPTION_SD)`, and writes sentences of the level `x` falls in;
* a **house style** per hospital: `"prose"` (full sentences, the cohort) or `"terse"` (ward abbreviations:
  "pt c/o", "SOB", "E+D"). The two generators are two hospitals that chart differently, so a text model
  trained on one is tested on words it never saw.

So whether notes add anything here is set by PERCEPTION_SD, the level cut-offs and the filler: a property
of this writer, not of real notes. The evaluation (`models/notes/evaluate.py`) measures it honestly for
this writer; a site would measure it on its own notes.

Notes are written at the end of each 12-h nursing shift (07:30 and 19:30 local), charted 5-90 min later
(`date` is the charting time), 12 % of shifts without a note (workload), plus an admission note 1-3 h
after admission. The random stream is the writer's own: the Bundle's other resources are unchanged.
"""
from __future__ import annotations

import base64
from datetime import datetime, timedelta

import numpy as np

LOINC = "http://loinc.org"
NURSE_NOTE = ("34746-8", "Nurse Note")
CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"
PERCEPTION_SD = 0.3
CUTS = (0.35, 0.75)  # perceived concern -> level 0 (settled), 1 (not right), 2 (worried)
SKIP_SHIFT = 0.12

PHRASES = {
    "prose": {
        0: ["Comfortable and settled this shift.", "Mobilising independently to the bathroom.",
            "Eating and drinking well.", "Pain well controlled with regular analgesia.",
            "No concerns raised by the patient or family.", "Slept well overnight.",
            "Denies shortness of breath or chest pain.", "Chatty and in good spirits."],
        1: ["Seems more tired than yesterday.", "Reduced appetite, only managed a few mouthfuls of lunch.",
            "Says they feel generally unwell.", "Needed prompting to drink.",
            "A little more breathless walking to the toilet.", "Slightly muddled at times this afternoon.",
            "Not quite themselves according to the family."],
        2: ["I am worried about this patient, looks unwell and clammy.",
            "Family concerned that they are not themselves at all.", "Much more drowsy than at the start of the shift.",
            "Breathless at rest, struggling to complete sentences.", "Looks pale and sweaty, doctor asked to review.",
            "Very little urine output this shift.", "Gut feeling that something is wrong, escalated to nurse in charge."],
        "filler": ["Pressure areas intact.", "Cannula site clean and dry.", "Bowels opened today.",
                   "Family visited this evening.", "Washed and dressed with assistance.", "Observations as charted.",
                   "Medications given as prescribed.", "Falls risk assessment reviewed."],
        "admission": "Nursing admission assessment completed. Orientated to the ward.",
    },
    "terse": {
        0: ["pt settled, NAD.", "mob indep.", "E+D well.", "pain controlled.", "no c/o.", "slept well.",
            "denies SOB/CP.", "in good spirits."],
        1: ["pt more lethargic than yesterday.", "poor oral intake.", "c/o feeling generally unwell.",
            "encouraged fluids, taking little.", "mildly SOB on exertion.", "intermittently confused.",
            "family feel pt not quite right."],
        2: ["RN concerned re pt, appears unwell + clammy.", "family v concerned pt not themselves.",
            "increasingly drowsy.", "SOB at rest, speaking in short sentences.", "pale + diaphoretic, r/v requested.",
            "minimal UO this shift.", "escalated to NIC, not happy with pt."],
        "filler": ["PA intact.", "IVC site clean, no phlebitis.", "BNO.", "family visited.", "assisted with ADLs.",
                   "obs as per chart.", "meds as charted.", "falls ax done."],
        "admission": "nursing adm ax done. orientated to ward.",
    },
}


def level(x: float) -> int:
    """Perceived concern -> 0, 1 or 2."""
    return 0 if x < CUTS[0] else (1 if x < CUTS[1] else 2)


def compose(rng: np.random.Generator, style: str, concern: float, perception_sd: float = PERCEPTION_SD) -> str:
    """One shift note: 1-3 sentences of the perceived level (now and then one of the level next to it),
    0-3 neutral ones, in random order."""
    bank = PHRASES[style]
    lv = level(concern + rng.normal(0.0, perception_sd))
    k = int(rng.integers(1, 4))
    said = []
    for _ in range(k):
        lvl = lv if rng.random() < 0.8 else int(np.clip(lv + rng.choice([-1, 1]), 0, 2))
        said.append(bank[lvl][int(rng.integers(len(bank[lvl])))])
    said += [bank["filler"][int(j)] for j in rng.choice(len(bank["filler"]), int(rng.integers(0, 4)), replace=False)]
    order = rng.permutation(len(said))
    return " ".join(dict.fromkeys(said[int(i)] for i in order))


def _document(pid: str, enc_ref: str | None, k: int, when: datetime, shift: tuple[datetime, datetime],
              text: str, fmt) -> dict:
    doc = {
        "resourceType": "DocumentReference", "id": f"{pid}-note-{k}", "status": "current", "docStatus": "final",
        "type": {"coding": [{"system": LOINC, "code": NURSE_NOTE[0], "display": NURSE_NOTE[1]}]},
        "category": [{"coding": [{"system": CATEGORY, "code": "clinical-note", "display": "Clinical Note"}]}],
        "subject": {"reference": f"Patient/{pid}"}, "date": fmt(when),
        "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                                    "data": base64.b64encode(text.encode("utf-8")).decode("ascii")}}],
        "context": {"period": {"start": fmt(shift[0]), "end": fmt(shift[1])}},
    }
    if enc_ref:
        doc["context"]["encounter"] = [{"reference": enc_ref}]
    return doc


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds").replace("+00:00", "Z")


def write_notes(bundle: dict, admit: datetime, end: datetime, concern_at, style: str,
                rng: np.random.Generator, local_admit_hour: float | None = None, fmt=_iso,
                full_url=None, perception_sd: float = PERCEPTION_SD, lead_hours: float = 0.0) -> int:
    """Appends nursing notes (DocumentReference) charted before `end` to `bundle`; returns how many.
    `concern_at(h)`: the latent sickness h hours after admission; `local_admit_hour`: the ward clock at
    admission (default the UTC hour); `fmt(datetime)`: the generator's instant format; `full_url(type, id)`:
    the generator's entry fullUrl (none when not given). `perception_sd` and `lead_hours` (the nurse sees
    the sickness of `lead_hours` later: information the chart does not hold yet) exist for the evaluation's
    positive control; the generators' defaults are PERCEPTION_SD and 0."""
    if not (perception_sd >= 0 and lead_hours >= 0):
        raise ValueError("perception_sd and lead_hours must be >= 0")
    seen = lambda h: concern_at(h + lead_hours)  # noqa: E731
    if style not in PHRASES:
        raise ValueError(f"unknown note style {style!r}")
    entries = bundle.setdefault("entry", [])
    pid = next((e["resource"]["id"] for e in entries if e["resource"].get("resourceType") == "Patient"), None)
    if pid is None:
        raise ValueError("the Bundle has no Patient")
    enc = next((e["resource"]["id"] for e in entries if e["resource"].get("resourceType") == "Encounter"), None)
    enc_ref = f"Encounter/{enc}" if enc else None
    stay_h = (end - admit).total_seconds() / 3600.0
    lh = admit.hour + admit.minute / 60.0 if local_admit_hour is None else local_admit_hour
    notes = []
    t_adm = float(rng.uniform(1.0, 3.0))
    if t_adm < stay_h:
        notes.append((t_adm, (0.0, t_adm), PHRASES[style]["admission"] + " "
                      + compose(rng, style, seen(t_adm), perception_sd)))
    first = (7.5 - lh) % 12.0  # the first shift end after admission (07:30 / 19:30 local)
    h = first if first > 0.5 else first + 12.0
    while h < stay_h:
        if rng.random() >= SKIP_SHIFT:
            charted = h + float(rng.uniform(5, 90)) / 60.0
            if charted < stay_h:
                notes.append((charted, (max(0.0, h - 12.0), h), compose(rng, style, seen(h), perception_sd)))
        h += 12.0
    for k, (t, (s0, s1), text) in enumerate(notes):
        at = lambda x: admit + timedelta(hours=x)  # noqa: E731
        entry = {"resource": _document(pid, enc_ref, k, at(t), (at(s0), at(s1)), text, fmt)}
        if full_url is not None:
            entry = {"fullUrl": full_url("DocumentReference", f"{pid}-note-{k}"), **entry}
        entries.append(entry)
    return len(notes)
