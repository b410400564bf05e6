"""Ready-to-post patient-view requests for `benches/compare.sh`, made the way `bedside demo` makes them
(src/demo.rs `patient_request`): a fixture of tests/fixtures/patients/ with every timestamp shifted so
the newest one is 10 minutes old, and a fresh hookInstance.

    python benches/peer/requests.py OUT_DIR [stable deteriorating ...]   -> OUT_DIR/<name>.json

The output keeps the fixture's layout (2-space indented JSON, about 200 KB for `deteriorating`), as an
EHR's request of that size.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import sys
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from models.fhir_time import parse_instant  # noqa: E402  (RFC 3339 with a zone, as src/fhir/time.rs)

# src/demo.rs TIME_KEYS: FHIR elements holding points in time. Dates without a time are left alone.
TIME_KEYS = {"effectiveDateTime", "effectiveInstant", "issued", "start", "end", "lastUpdated", "authoredOn"}


def _visit(value, f) -> None:
    if isinstance(value, dict):
        for key, v in value.items():
            if isinstance(v, str):
                if key in TIME_KEYS:
                    t = parse_instant(v)
                    if t is not None:
                        new = f(t)
                        if new is not None:
                            value[key] = new.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            else:
                _visit(v, f)
    elif isinstance(value, list):
        for v in value:
            _visit(v, f)


def patient_request(path: str, now: dt.datetime) -> dict:
    with open(path, encoding="utf-8") as f:
        request = json.load(f)
    times = []
    _visit(request, lambda t: times.append(t))
    if times:
        shift = now - dt.timedelta(minutes=10) - max(times)
        _visit(request, lambda t: t + shift)
    request["hookInstance"] = str(uuid.uuid4())
    return request


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    out, names = argv[0], argv[1:] or ["stable", "deteriorating"]
    os.makedirs(out, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    for name in names:
        request = patient_request(os.path.join(ROOT, "tests", "fixtures", "patients", f"{name}.json"), now)
        with open(os.path.join(out, f"{name}.json"), "w", encoding="utf-8") as f:
            json.dump(request, f, indent=2, ensure_ascii=False)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
