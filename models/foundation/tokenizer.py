"""The foundation model's tokeniser: a patient record (FHIR R4 Bundle or MEDS events) -> token ids.

Training (``models/foundation/pretrain.py``, ``adapt.py``) and serving (``src/features/tokens.rs``,
``POST /api/v1/embed``) use the same rules, held equal by ``tests/models/token_parity.rs``:

1. **Bundle -> MEDS events** (``events_of_bundle``). Observations go through the terminology map
   (``models/featurize.py`` with ``models/foundation/features.toml``: every code variant, unit
   conversion, GCS read as ACVPU, implausible values dropped and counted); each usable value becomes
   ``LOINC/<the concept's first code>`` with its value in the concept's unit (consciousness: the answer
   code as ``text_value``). Conditions -> ``ICD10/<3-character category>`` (ICD-10 or ICD-10-CM), else
   ``SNOMED/<code>``; medication requests and administrations -> ``RXNORM/<code>``; the encounter's
   start -> ``ENCOUNTER/INPATIENT``; each location -> ``LOCATION/ICU`` or ``LOCATION/WARD``; the patient
   -> ``GENDER/<gender>`` (static) and ``MEDS_BIRTH`` at the birth date.
2. **MEDS events -> tokens** (``encode``) at a prediction time ``now``: events after ``now`` are not
   read. A measurement becomes ``<concept>#<bin>`` (bins: deciles of the pretraining corpus, compared in
   float32), a coded answer ``<concept>=<code>``, any other code itself when the vocabulary has it,
   else ``[UNK]``. A gap of 1 h or more before an event adds ``DT#<k>`` (edges 1, 2, 4, 8, 12, 24,
   48 h). Events are ordered by (time, token id). The sequence opens with ``[BOS]``, the gender and
   ``AGE#<k>`` (completed years at ``now``, edges 30 ... 90), then the newest ``context - 3`` timed
   tokens. Each token carries its hours since the first kept timed token (statics: 0).
"""
from __future__ import annotations

import bisect
import datetime as dt
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from models import featurize  # noqa: E402
from models.fhir_time import instant_seconds  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC_PATH = os.path.join(HERE, "features.toml")
FORMAT = 1
DT_EDGES_HOURS = [1.0, 2.0, 4.0, 8.0, 12.0, 24.0, 48.0]
AGE_EDGES_YEARS = [30, 40, 50, 60, 70, 80, 90]
SPECIAL = ["[PAD]", "[UNK]", "[BOS]"]
PAD, UNK, BOS = 0, 1, 2
RXNORM_SYSTEMS = {"http://www.nlm.nih.gov/research/umls/rxnorm", "http://www.nlm.nih.gov/research/umls/rxnorm/"}
ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
SKIPPED_STATUS = {"entered-in-error"}


def load_spec(path: str = SPEC_PATH) -> dict:
    return featurize.load_spec(path)


def _canonical_codes(spec) -> list[tuple[str, str]]:
    """Per feature: its MEDS code (the concept's first LOINC code) and its name."""
    out = []
    for feat in spec["feature"]:
        concept = featurize.TERMINOLOGY["concept"][feat["concept"]]
        out.append(("LOINC/" + concept["loinc"][0], feat["name"]))
    return out


# ------------------------------------------------------------------------------ Bundle -> events
def _resources(bundle) -> list[dict]:
    if isinstance(bundle, dict) and bundle.get("resourceType") == "Bundle":
        return [e.get("resource") for e in bundle.get("entry", []) or [] if isinstance(e, dict)
                and isinstance(e.get("resource"), dict)]
    if isinstance(bundle, list):
        return [r for r in bundle if isinstance(r, dict)]
    return []


def _codings(cc) -> list[dict]:
    if not isinstance(cc, dict):
        return []
    return [c for c in cc.get("coding", []) or [] if isinstance(c, dict) and isinstance(c.get("code"), str)]


def condition_code(cc) -> str | None:
    """``ICD10/<category>`` from the first ICD-10(-CM) coding, else ``SNOMED/<code>``."""
    codings = _codings(cc)
    for c in codings:
        if featurize.system_of(c.get("system")) in ("icd10", "icd10cm"):
            category = c["code"].strip().upper().split(".")[0][:3]
            if category:
                return "ICD10/" + category
    for c in codings:
        if featurize.system_of(c.get("system")) == "snomed" and c["code"].strip():
            return "SNOMED/" + c["code"].strip()
    return None


def medication_code(r, by_ref) -> str | None:
    cc = r.get("medicationCodeableConcept")
    if cc is None and isinstance(r.get("medicationReference"), dict):
        med = by_ref.get(r["medicationReference"].get("reference") or "")
        cc = (med or {}).get("code")
    for c in _codings(cc):
        if c.get("system") in RXNORM_SYSTEMS and c["code"].strip():
            return "RXNORM/" + c["code"].strip()
    return None


def is_icu_text(text) -> bool:
    """"intensive care", or a word (a run of letters) that is "icu" or one letter + "icu" (MICU, SICU)."""
    if not isinstance(text, str):
        return False
    low = text.lower()
    if "intensive care" in low:
        return True
    word = []
    for ch in low + " ":
        if "a" <= ch <= "z":
            word.append(ch)
            continue
        w = "".join(word)
        if w == "icu" or (len(w) == 4 and w.endswith("icu")):
            return True
        word = []
    return False


def is_icu(entry, by_ref) -> bool:
    ref = entry.get("location") if isinstance(entry.get("location"), dict) else {}
    loc = by_ref.get(ref.get("reference") or "")
    if isinstance(loc, dict):
        for t in loc.get("type", []) or []:
            if any(c.get("system") == ROLE_CODE and c["code"] == "ICU" for c in _codings(t)):
                return True
        if is_icu_text(loc.get("name")):
            return True
    return is_icu_text(ref.get("display"))


def meds_event(t, code, value=None, text=None) -> dict:
    """A MEDS event as the tokeniser reads it (time: Unix seconds, or None for a static fact)."""
    return {"time": t, "code": code, "numeric_value": value, "text_value": text}


def events_of_bundle(spec, bundle) -> tuple[list[dict], dict]:
    """MEDS events (time: Unix seconds or None for static) and dropped observations by reason."""
    resources = _resources(bundle)
    by_ref = {f"{r.get('resourceType')}/{r.get('id')}": r for r in resources if r.get("id")}
    events: list[dict] = []
    codes = _canonical_codes(spec)
    found, rejected = featurize.extract(spec, resources)
    for f, t, v, _rid in found:
        feat = spec["feature"][f]
        code = codes[f][0]
        if feat["coded_values"]:
            answer = next((a for a, x in sorted(feat["coded_values"].items()) if float(x) == v), None)
            events.append(meds_event(t, code, None, answer))
        else:
            events.append(meds_event(t, code, float(v)))
    dropped: dict[str, int] = {}
    for _rid, why in rejected:
        dropped[why] = dropped.get(why, 0) + 1
    for r in resources:
        rt = r.get("resourceType")
        if r.get("status") in SKIPPED_STATUS:
            continue
        if rt == "Patient":
            if isinstance(r.get("gender"), str):
                events.append(meds_event(None, "GENDER/" + r["gender"]))
            birth = r.get("birthDate")
            if isinstance(birth, str) and len(birth) == 10:
                try:
                    b = dt.datetime.strptime(birth, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc)
                    events.append(meds_event(b.timestamp(), "MEDS_BIRTH"))
                except ValueError:
                    pass
        elif rt == "Condition":
            if any(c.get("code") == "entered-in-error" for c in _codings(r.get("verificationStatus"))):
                continue
            code = condition_code(r.get("code"))
            if code is None:
                continue
            t = instant_seconds(r.get("onsetDateTime"))
            if t is None:
                t = instant_seconds(r.get("recordedDate"))
            events.append(meds_event(t, code))
        elif rt in ("MedicationRequest", "MedicationAdministration"):
            code = medication_code(r, by_ref)
            if code is None:
                continue
            if rt == "MedicationRequest":
                t = instant_seconds(r.get("authoredOn"))
            else:
                t = instant_seconds(r.get("effectiveDateTime"))
                if t is None and isinstance(r.get("effectivePeriod"), dict):
                    t = instant_seconds(r["effectivePeriod"].get("start"))
            if t is not None:
                events.append(meds_event(t, code))
        elif rt == "Encounter":
            t = instant_seconds((r.get("period") or {}).get("start"))
            if t is not None:
                events.append(meds_event(t, "ENCOUNTER/INPATIENT"))
            for entry in r.get("location", []) or []:
                if not isinstance(entry, dict):
                    continue
                t = instant_seconds((entry.get("period") or {}).get("start"))
                if t is not None:
                    events.append(meds_event(t, "LOCATION/ICU" if is_icu(entry, by_ref) else "LOCATION/WARD"))
    return events, dropped


def observation_events(events: list[dict]) -> list[dict]:
    """The events read from Observations (``LOINC/`` codes): what a token head that reads a CDS
    service's gathered Observations sees (src/features/tokens.rs ``events_of_observations``)."""
    return [e for e in events if str(e["code"]).startswith("LOINC/")]


# ------------------------------------------------------------------------------ events -> tokens
class Vocab:
    """The vocabulary file (``vocab.json`` beside the model): tokens, decile edges, context length."""

    def __init__(self, data: dict):
        if data.get("format") != FORMAT:
            raise ValueError(f"vocab format {data.get('format')!r}, this tokeniser reads {FORMAT}")
        self.data = data
        self.tokens: list[str] = data["tokens"]
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.context: int = int(data["context"])
        self.concepts = {c["code"]: c for c in data["concepts"]}
        self.by_loinc = {}
        for c in data["concepts"]:
            for code in featurize.TERMINOLOGY["concept"][c["concept"]]["loinc"]:
                self.by_loinc.setdefault("LOINC/" + code, c)

    @classmethod
    def load(cls, path: str) -> "Vocab":
        with open(path) as f:
            return cls(json.load(f))

    def token_of(self, event) -> str:
        code = event.get("code")
        concept = self.by_loinc.get(code) if isinstance(code, str) else None
        if concept is not None:
            if "edges" in concept:
                v = event.get("numeric_value")
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v):
                    return "[UNK]"
                return f"{concept['name']}#{bisect.bisect_right(concept['edges'], float(np.float32(v)))}"
            answer = event.get("text_value")
            return f"{concept['name']}={answer}" if answer in concept["answers"] else "[UNK]"
        return code if isinstance(code, str) and code in self.index else "[UNK]"


def micros(seconds: float) -> int:
    """Unix seconds (a float that held a microsecond instant) -> integer microseconds. All of
    ``sequence``'s time arithmetic is on these integers, as the Rust side's, so gaps and hours agree
    bit for bit."""
    return int(round(seconds * 1_000_000))


def age_years(birth_seconds: float, now_seconds: float) -> int:
    b = dt.datetime.fromtimestamp(birth_seconds, dt.timezone.utc)
    n = dt.datetime.fromtimestamp(now_seconds, dt.timezone.utc)
    return n.year - b.year - ((n.month, n.day) < (b.month, b.day))


def sequence(vocab: Vocab, events: list[dict], now: float) -> tuple[list[int], list[tuple[int, int]], int, int]:
    """Static token ids, every timed (microseconds, id) up to ``now`` in order, events read and
    unknown codes."""
    now_us = micros(now)
    statics = [BOS]
    gender = next((e["code"] for e in events if e["time"] is None and str(e["code"]).startswith("GENDER/")), None)
    if gender is not None and gender in vocab.index:
        statics.append(vocab.index[gender])
    births = [e["time"] for e in events if e["code"] == "MEDS_BIRTH" and e["time"] is not None]
    if births and micros(births[0]) <= now_us:
        age = age_years(births[0], now)
        statics.append(vocab.index[f"AGE#{bisect.bisect_right(AGE_EDGES_YEARS, age)}"])
    timed = []
    unknown = 0
    for e in events:
        t = e["time"]
        if t is None or e["code"] == "MEDS_BIRTH" or micros(t) > now_us:
            continue
        tok = vocab.index[vocab.token_of(e)]
        unknown += tok == UNK
        timed.append((micros(t), tok))
    timed.sort()
    seq = []
    prev = None
    for t, tok in timed:
        if prev is not None and t > prev:
            k = bisect.bisect_right(DT_EDGES_HOURS, (t - prev) / 3.6e9)
            if k > 0:
                seq.append((t, vocab.index[f"DT#{k - 1}"]))
        seq.append((t, tok))
        prev = t
    return statics, seq, len(timed), unknown


def window(statics: list[int], seq: list[tuple[int, int]], context: int, end: int | None = None):
    """The model's input from ``sequence``'s output: statics then the newest timed tokens before index
    ``end`` (default: all) that fit ``context``; hours since the first kept timed token."""
    end = len(seq) if end is None else end
    keep = max(context - len(statics), 0)
    kept = seq[max(end - keep, 0):end] if keep else []
    t0 = kept[0][0] if kept else 0
    ids = statics + [tok for _, tok in kept]
    hours = [0.0] * len(statics) + [float(np.float32((t - t0) / 3.6e9)) for t, _ in kept]
    return ids, hours, kept


def encode(vocab: Vocab, events: list[dict], now: float) -> dict:
    """Token ids, hours since the first kept timed token, and what was read (counts, window)."""
    statics, seq, n_events, unknown = sequence(vocab, events, now)
    ids, hours, kept = window(statics, seq, vocab.context)
    return {"ids": ids, "hours": hours, "events": n_events, "unknown": unknown,
            "window": [kept[0][0] / 1e6, kept[-1][0] / 1e6] if kept else None}


def build_vocab(spec, records: list[tuple[list[dict], float]], context: int, min_count: int = 5) -> dict:
    """A vocabulary from pretraining records (events, now): decile edges per numeric concept (float32),
    coded concepts' answers, and every other code seen at least ``min_count`` times."""
    codes = _canonical_codes(spec)
    values: dict[str, list[float]] = {code: [] for code, _ in codes}
    counts: dict[str, int] = {}
    for events, now in records:
        for e in events:
            if e["time"] is not None and e["time"] > now:
                continue
            if e["code"] in values and e["numeric_value"] is not None:
                values[e["code"]].append(e["numeric_value"])
            elif e["code"] not in values and e["code"] != "MEDS_BIRTH":
                counts[e["code"]] = counts.get(e["code"], 0) + 1
    concepts, tokens = [], list(SPECIAL)
    tokens += [f"DT#{k}" for k in range(len(DT_EDGES_HOURS))]
    tokens += [f"AGE#{k}" for k in range(len(AGE_EDGES_YEARS) + 1)]
    for (code, name), feat in zip(codes, spec["feature"]):
        if feat["coded_values"]:
            answers = sorted(feat["coded_values"], key=lambda a: (feat["coded_values"][a], a))
            concepts.append({"name": name, "concept": feat["concept"], "code": code, "answers": answers})
            tokens += [f"{name}={a}" for a in answers]
            continue
        v = np.asarray(values[code], dtype=np.float64)
        edges = sorted(set(np.float32(np.quantile(v, np.arange(1, 10) / 10)).tolist())) if len(v) else []
        concepts.append({"name": name, "concept": feat["concept"], "code": code, "edges": edges})
        tokens += [f"{name}#{k}" for k in range(len(edges) + 1)]
    tokens += sorted(c for c, n in counts.items() if n >= min_count)
    return {"format": FORMAT, "context": int(context), "dt_edges_hours": DT_EDGES_HOURS,
            "age_edges_years": AGE_EDGES_YEARS, "concepts": concepts, "tokens": tokens}


def main(argv=None) -> int:
    """``python -m models.foundation.tokenizer <vocab.json> <pairs.json>``: pairs are [bundle path,
    RFC 3339 now]; prints one JSON line per pair with ids and hours (the parity test reads them)."""
    import argparse
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("vocab")
    ap.add_argument("pairs")
    a = ap.parse_args(argv)
    vocab = Vocab.load(a.vocab)
    spec = load_spec()
    with open(a.pairs) as f:
        pairs = json.load(f)
    cache = {}
    for path, now in pairs:
        if path not in cache:
            with open(path) as f:
                cache[path] = events_of_bundle(spec, json.load(f))[0]
        out = encode(vocab, cache[path], instant_seconds(now))
        print(json.dumps({"ids": out["ids"], "hours": out["hours"], "events": out["events"],
                          "unknown": out["unknown"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
