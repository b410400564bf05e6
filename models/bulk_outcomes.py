"""Outcomes for `bedside outcomes` from a FHIR Bulk Data export (stdlib only, plus `models.labels`).

    # a folder of NDJSON files a site's Bulk Data client already downloaded
    python -m models.bulk_outcomes --from-dir export/ --fhir-server https://ehr.example/fhir --out outcomes.ndjson
    # or kick off Patient/$export itself (FHIR Bulk Data Access 2.0: Prefer: respond-async, poll the
    # Content-Location with Retry-After, download every file of the manifest); the bearer token
    # (e.g. from SMART Backend Services) comes from the BULK_TOKEN environment variable
    python -m models.bulk_outcomes --kick-off https://ehr.example/fhir --out outcomes.ndjson
    bedside outcomes -c bedside.toml --file outcomes.ndjson --through <the export's transactionTime> \
        --event deterioration --event sepsis --event aki

Each patient's resources (Patient, Encounter, Observation, Condition, ServiceRequest,
MedicationAdministration, MedicationRequest, Location) become one Bundle, and `models.labels.derive_onsets`
reads the outcomes from what is recorded -- the same rules the models were trained and evaluated on
(deterioration: ICU bed or death; Sepsis-3: cultures + antibiotics + a SOFA rise; KDIGO AKI by creatinine).
One line per outcome: {"patient": "Patient/<id>", "fhirServer": <base>, "event": <name>, "at": <onset>}.
The file holds patient ids: it stays inside the site; `bedside outcomes` pseudonymises them on the way in.
Prints the export's `transactionTime` (what `--through` should be) and counts, never a patient id.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
import urllib.request
from collections import defaultdict

if __package__ in (None, ""):  # pragma: no cover - run as a file
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models.labels import derive_onsets  # noqa: E402

TYPES = ("Patient", "Encounter", "Observation", "Condition", "ServiceRequest", "MedicationAdministration",
         "MedicationRequest", "Location", "Medication")
#: How long a kick-off may run before the tool gives up.
EXPORT_TIMEOUT_S = 600


def _patient_of(resource: dict) -> str | None:
    """The id of the patient a resource is about (`Patient.id`, else `subject` / `patient` reference)."""
    if resource.get("resourceType") == "Patient":
        return resource.get("id")
    for key in ("subject", "patient"):
        ref = (resource.get(key) or {}).get("reference") or ""
        if ref.startswith("Patient/"):
            return ref.split("/", 1)[1].split("/", 1)[0]
    return None


def read_folder(folder: str):
    """{patient id: [resources]} and resources not about one patient (Location, Medication) from `*.ndjson`."""
    by_patient, shared = defaultdict(list), []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".ndjson"):
            continue
        with open(os.path.join(folder, name)) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    r = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SystemExit(f"{name} line {number}: not JSON ({e.msg})") from None
                if not isinstance(r, dict) or r.get("resourceType") not in TYPES:
                    continue
                pid = _patient_of(r)
                if pid is None:
                    shared.append(r)
                else:
                    by_patient[pid].append(r)
    return by_patient, shared


def outcome_lines(by_patient, shared, fhir_server: str):
    """Outcome lines, sorted by patient and event; and counts per event."""
    lines, counts = [], defaultdict(int)
    for pid in sorted(by_patient):
        bundle = {"resourceType": "Bundle", "type": "collection",
                  "entry": [{"resource": r} for r in by_patient[pid] + shared]}
        for event, onset in sorted(derive_onsets(bundle).items()):
            if onset is None:
                continue
            counts[event] += 1
            lines.append({"patient": f"Patient/{pid}", "fhirServer": fhir_server, "event": event,
                          "at": onset.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")})
    return lines, dict(counts)


def _request(url: str, token: str | None, headers: dict | None = None, method: str = "GET"):
    h = {"Accept": "application/fhir+json", **(headers or {})}
    if token:
        h["Authorization"] = f"Bearer {token}"
    return urllib.request.urlopen(urllib.request.Request(url, headers=h, method=method), timeout=60)


def kick_off(base: str, token: str | None, folder: str) -> str:
    """Runs Patient/$export on `base` into `folder`; returns the manifest's transactionTime."""
    types = ",".join(t for t in TYPES if t not in ("Location", "Medication"))
    url = f"{base.rstrip('/')}/Patient/$export?_type={types}"
    with _request(url, token, {"Prefer": "respond-async"}) as r:
        if r.status != 202:
            raise SystemExit(f"kick-off answered {r.status}, not 202")
        status_url = r.headers["Content-Location"]
    started = time.monotonic()
    while True:
        with _request(status_url, token) as r:
            if r.status == 200:
                manifest = json.load(r)
                break
            progress = r.headers.get("X-Progress", "")
            wait = float(r.headers.get("Retry-After", "2") or 2)
        if time.monotonic() - started > EXPORT_TIMEOUT_S:
            raise SystemExit(f"the export did not finish in {EXPORT_TIMEOUT_S} s")
        print(f"  export running ({progress})", file=sys.stderr)
        time.sleep(min(max(wait, 0.2), 30))
    os.makedirs(folder, exist_ok=True)
    for i, item in enumerate(manifest.get("output", [])):
        headers = {"Accept": "application/fhir+ndjson"}
        use_token = token if manifest.get("requiresAccessToken") else None
        with _request(item["url"], use_token, headers) as r, open(
                os.path.join(folder, f"{i:03d}-{item.get('type', 'Resource')}.ndjson"), "wb") as out:
            out.write(r.read())
        print(f"  downloaded {i + 1}/{len(manifest['output'])} ({item.get('type')})", file=sys.stderr)
    return manifest.get("transactionTime", "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-dir", help="a folder of Bulk Data NDJSON files")
    src.add_argument("--kick-off", metavar="FHIR_BASE", help="run Patient/$export on this server first")
    ap.add_argument("--download-to", help="where --kick-off puts the files (default: <out>.export/)")
    ap.add_argument("--fhir-server", help="the FHIR base the patient ids belong to (default: --kick-off's)")
    ap.add_argument("--out", required=True, help="the outcome NDJSON for `bedside outcomes --file`")
    args = ap.parse_args(argv)
    folder, through = args.from_dir, None
    if args.kick_off:
        folder = args.download_to or args.out + ".export"
        through = kick_off(args.kick_off, os.environ.get("BULK_TOKEN"), folder)
    fhir_server = args.fhir_server or args.kick_off
    if not fhir_server:
        raise SystemExit("--fhir-server is required with --from-dir")
    by_patient, shared = read_folder(folder)
    lines, counts = outcome_lines(by_patient, shared, fhir_server)
    with open(args.out, "w") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    print(json.dumps({"patients": len(by_patient), "outcomes": counts, "transactionTime": through}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
