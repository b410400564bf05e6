"""Cases for the Rust <-> Python tokeniser and embedding parity test (``tests/models/token_parity.rs``).

    python -m models.foundation.parity --model models/foundation/1.0.0 --out DIR

writes Bundles from both generators (the ward generator sends the code variants real servers send:
SpO2 2708-6, HR 8889-8, GCS for consciousness, standalone systolic BP, microsecond timestamps) and one
hand-written Bundle with the other variants the tokeniser reads (ICD-10-CM and ICD-10 codes, SNOMED
only, a referenced Medication, an ICU found by its location type, entered-in-error resources, an
implausible value), and ``cases.json``: for each (Bundle, now) the ids, hours, counts and dropped
reasons Python makes, and the embedding the TorchScript model gives them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from models import generators  # noqa: E402
from models.fhir_time import instant_seconds  # noqa: E402
from models.foundation import tokenizer  # noqa: E402

LOINC = "http://loinc.org"


def _obs(i, code, value, unit, when, status="final", system=LOINC):
    return {"resourceType": "Observation", "id": f"v{i}", "status": status,
            "code": {"coding": [{"system": system, "code": code}]}, "effectiveDateTime": when,
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}


def variants_bundle() -> dict:
    """A record that uses the variants the generators do not."""
    res = [
        {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1941-03-09"},
        {"resourceType": "Encounter", "id": "e1", "status": "in-progress",
         "period": {"start": "2026-03-01T08:00:00.250+01:00"},
         "location": [{"location": {"reference": "Location/w"}, "period": {"start": "2026-03-01T07:10:00Z"}},
                      {"location": {"reference": "Location/u"}, "period": {"start": "2026-03-02T03:00:00Z"}},
                      {"location": {"display": "SICU bay 2"}, "period": {"start": "2026-03-02T09:00:00Z"}}]},
        {"resourceType": "Location", "id": "w", "name": "Ward 9 (Picus wing)"},
        {"resourceType": "Location", "id": "u", "name": "Unit 3",
         "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "ICU"}]}]},
        {"resourceType": "Condition", "id": "c1", "recordedDate": "2026-03-01T09:00:00Z",
         "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "n18.30"}]}},
        {"resourceType": "Condition", "id": "c2", "onsetDateTime": "2026-03-01T09:30:00Z",
         "code": {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.3", "code": "J44.1"}]}},
        {"resourceType": "Condition", "id": "c3",
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "709044004"}]}},
        {"resourceType": "Condition", "id": "c4", "onsetDateTime": "2026-03-01T10:00:00Z",
         "verificationStatus": {"coding": [{"code": "entered-in-error"}]},
         "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "A41.9"}]}},
        {"resourceType": "Medication", "id": "m1",
         "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "74169"}]}},
        {"resourceType": "MedicationRequest", "id": "r1", "status": "active", "authoredOn": "2026-03-01T12:00:00Z",
         "medicationReference": {"reference": "Medication/m1"}},
        {"resourceType": "MedicationAdministration", "id": "a1", "status": "completed",
         "effectivePeriod": {"start": "2026-03-01T12:40:00.123456Z"},
         "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm/",
                                                    "code": "2193"}]}},
        {"resourceType": "MedicationAdministration", "id": "a2", "status": "entered-in-error",
         "effectiveDateTime": "2026-03-01T13:00:00Z",
         "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                    "code": "11124"}]}},
        _obs(1, "20564-1", 91, "%", "2026-03-01T09:00:00Z"),
        _obs(2, "8867-4", 0, "/min", "2026-03-01T09:00:00Z"),  # implausible: dropped, counted
        _obs(3, "8310-5", 101.3, "[degF]", "2026-03-01T10:00:00.999999Z"),
        _obs(4, "14682-9", 162, "umol/L", "2026-03-01T11:00:00Z", system="http://loinc.org/"),
        _obs(5, "9279-1", 24, "/min", "2026-03-01T11:00:00Z", status="preliminary"),
        _obs(6, "3150-0", 35, "%", "2026-03-02T11:00:00Z"),
        {"resourceType": "Observation", "id": "v7", "status": "final",
         "code": {"coding": [{"system": LOINC, "code": "67775-7"}]}, "effectiveDateTime": "2026-03-02T12:00:00Z",
         "valueCodeableConcept": {"text": "Confused"}},
    ]
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in res]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=4)
    a = ap.parse_args(argv)
    vocab = tokenizer.Vocab.load(os.path.join(a.model, "vocab.json"))
    module = torch.jit.load(os.path.join(a.model, "model.pt"))
    module.eval()
    spec = tokenizer.load_spec()
    os.makedirs(a.out, exist_ok=True)
    bundles = []
    for gen, seed in (("ward", 5), ("cohort", 6)):
        for i, p in enumerate(generators.load(gen, n=a.n, seed=seed)):
            admit, end = p["admit"].timestamp(), p["discharge"].timestamp()
            nows = [admit + 5 * 3600 + 17.5, (admit + end) / 2, end]
            bundles.append((f"{gen}-{i}", p["bundle"], nows))
    v = variants_bundle()
    bundles.append(("variants", v, [instant_seconds("2026-03-01T12:40:00.123456Z"),
                                    instant_seconds("2026-03-03T00:00:00Z")]))
    cases = []
    for name, bundle, nows in bundles:
        path = os.path.join(a.out, f"{name}.json")
        with open(path, "w") as f:
            json.dump(bundle, f)
        events, dropped = tokenizer.events_of_bundle(spec, bundle)
        for now in nows:
            enc = tokenizer.encode(vocab, events, now)
            with torch.no_grad():
                emb = module(torch.tensor([enc["ids"]]), torch.tensor([enc["hours"]], dtype=torch.float32))
            cases.append({"bundle": path, "now_us": tokenizer.micros(now), "ids": enc["ids"], "hours": enc["hours"],
                          "events": enc["events"], "unknown": enc["unknown"], "dropped": dropped,
                          "embedding": emb[0].tolist()})
    with open(os.path.join(a.out, "cases.json"), "w") as f:
        json.dump(cases, f)
    print(json.dumps({"cases": len(cases)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
