#!/usr/bin/env python3
"""Check conformance/schema/cds-hooks-2.0.schema.json against the spec examples, the
negative cases and the request vectors.

Usage (from anywhere; needs only the standard library and `jsonschema` >= 4.0):

    python3 -m venv /tmp/js && /tmp/js/bin/pip install jsonschema
    /tmp/js/bin/python conformance/schema/check_schema.py            # all checks
    /tmp/js/bin/python conformance/schema/check_schema.py -v         # also print each error
    /tmp/js/bin/python conformance/schema/check_schema.py --only negative   # examples|negative|vectors

What it checks:

1. The schema itself is a valid draft 2020-12 schema.
2. Every CDS Hooks 2.0 spec example under tests/fixtures/spec/cds-hooks-2.0/ validates against
   its def (table EXAMPLES below). Fragments (`{"context": ...}`, `{"prefetch": ...}` etc.) are
   checked against the matching sub-schema. Examples the spec itself gets wrong are listed in
   EXPECTED_FAIL and must fail. Every file in the fixture folder must be listed (or in SKIPPED),
   so a new fixture cannot be silently ignored.
3. Every conformance/schema/negative/*.json ({"def", "why", "instance"}) must FAIL its def.
4. Every conformance/vectors/*.json has the vector format and its `request` validates
   against HookRequest.

Formats: `uri` and `date-time` are checked here with the standard library (jsonschema only
checks them when optional extra packages are installed, so we do not rely on that).

Exit status 0 when every result is as expected, 1 otherwise.
"""

import argparse
import json
import re
import sys
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator, FormatChecker

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent  # repository root
SCHEMA_PATH = HERE / "cds-hooks-2.0.schema.json"
NEGATIVE_DIR = HERE / "negative"
VECTORS_DIR = ROOT / "conformance" / "vectors"
SPEC_DIR = ROOT / "tests" / "fixtures" / "spec" / "cds-hooks-2.0"

# file -> (schema pointer under #/$defs/, member to extract or None for the whole document)
EXAMPLES = {
    "discovery/discovery-example.json": ("DiscoveryResponse", None),
    "discovery/extension-discovery-example.json": ("DiscoveryResponse", None),
    "discovery/prefetch-fragment-patient-to-greet.json": ("CdsService/properties/prefetch", "prefetch"),
    "discovery/prefetch-template-hemoglobin-a1c.json": ("CdsService/properties/prefetch", "prefetch"),
    "discovery/prefetch-templates-example.json": ("CdsService/properties/prefetch", "prefetch"),
    "discovery/prefetch-user-read.json": ("CdsService/properties/prefetch", "prefetch"),
    "discovery/prefetch-user-search.json": ("CdsService/properties/prefetch", "prefetch"),
    "requests/patient-view-request.json": ("HookRequest", None),
    "requests/extension-request-example.json": ("HookRequest", None),
    "requests/fhir-authorization-example.json": ("FhirAuthorization", "fhirAuthorization"),
    "requests/prefetch-data-example.json": ("HookRequest/properties/prefetch", "prefetch"),
    "requests/context-draft-orders-first-level.json": ("HookRequest/properties/context", "context"),
    "requests/context-draft-orders-with-medicationRequestId.json": ("HookRequest/properties/context", "context"),
    "requests/context-fragment-hook-template.json": ("HookRequest/properties/context", "context"),
    "requests/context-fragment-patient-view.json": ("HookRequest/properties/context", "context"),
    "requests/context-prefetch-token-example.json": ("HookRequest/properties/context", "context"),
    "responses/action-create.json": ("Action", None),
    "responses/action-delete.json": ("Action", None),
    "responses/action-update.json": ("Action", None),
    "responses/empty-cards.json": ("CdsServiceResponse", None),
    "responses/example-response.json": ("CdsServiceResponse", None),
    "responses/override-reasons.json": ("Card/properties/overrideReasons", "overrideReasons"),
    "responses/source-example.json": ("Source", "source"),
    "responses/system-actions.json": ("CdsServiceResponse", None),
    "feedback/overridden-with-reason.json": ("FeedbackRequest", None),
    "feedback/overridden-without-reason.json": ("FeedbackRequest", None),
    "feedback/suggestion-accepted.json": ("FeedbackRequest", None),
}

# Spec examples that break the spec's own normative text; they must FAIL.
EXPECTED_FAIL = {
    "responses/system-actions.json":
        "the action has no `description`, which the Action table marks REQUIRED",
    "requests/prefetch-data-example.json":
        "`\"user\": \"123\"` is neither a FHIR resource nor null (prefetch carries \"The FHIR data "
        "that was prefetched\"; the only non-resource value the spec allows is null)",
}

# JWT material is not a CDS Hooks JSON document; the JWT checks live in the Rust tests.
SKIPPED = {
    "jwt/jwk-private.json": "JWK, not a CDS Hooks document",
    "jwt/jwks-public.json": "JWK Set, not a CDS Hooks document",
    "jwt/jwt-header.json": "JWT header, not a CDS Hooks document",
    "jwt/jwt-payload.json": "JWT payload, not a CDS Hooks document",
}

VECTOR_KEYS = {"name", "client", "description", "source", "jwt", "expect", "request"}
JWT_KEYS = {"alg", "jku", "nbf", "aud_array", "tenant"}

# --- formats (standard library only) -------------------------------------------------------

format_checker = FormatChecker(formats=())

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-](\d{2}):(\d{2}))$"
)


@format_checker.checks("date-time", raises=ValueError)
def _is_date_time(value):
    if not isinstance(value, str):
        return True
    m = _RFC3339.match(value)
    if not m:
        raise ValueError("not an RFC 3339 date-time")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    # second 60 is a leap second (RFC 3339 5.6); check the rest with datetime.
    datetime(year, month, day, hour, minute, min(second, 59))
    if m.group(9) is not None and (int(m.group(9)) > 23 or int(m.group(10)) > 59):
        raise ValueError("bad UTC offset")
    return True


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")


@format_checker.checks("uri", raises=ValueError)
def _is_uri(value):
    """An absolute URI (RFC 3986 `scheme ":" hier-part`), no whitespace or control chars."""
    if not isinstance(value, str):
        return True
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("whitespace or control character in URI")
    parts = urlsplit(value)
    if not parts.scheme or not _SCHEME.match(parts.scheme) or not value.startswith(parts.scheme + ":"):
        raise ValueError("no scheme: not an absolute URI")
    if parts.scheme.lower() in ("http", "https") and not parts.netloc:
        raise ValueError("http(s) URI without a host")
    return True


# --- helpers ------------------------------------------------------------------------------

def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def validator_for(schema, pointer):
    """A validator for `#/$defs/<pointer>`: the whole schema (so internal $refs resolve) plus a
    root-level $ref, which draft 2020-12 allows beside other keywords."""
    wrapped = dict(schema)
    wrapped["$ref"] = "#/$defs/" + pointer
    return Draft202012Validator(wrapped, format_checker=format_checker)


def errors_of(schema, pointer, instance):
    v = validator_for(schema, pointer)
    return sorted(v.iter_errors(instance), key=lambda e: list(e.absolute_path))


def fmt_error(e):
    where = "/".join(str(p) for p in e.absolute_path) or "(root)"
    msg = e.message if len(e.message) < 160 else e.message[:157] + "..."
    return f"{where}: {msg}"


class Report:
    def __init__(self, verbose):
        self.verbose = verbose
        self.bad = 0
        self.counts = {}

    def line(self, status, ok, label, detail="", errors=()):
        self.counts[status] = self.counts.get(status, 0) + 1
        if not ok:
            self.bad += 1
        mark = "ok  " if ok else "BAD "
        print(f"{mark}{status:<6} {label}" + (f"  -- {detail}" if detail else ""))
        if self.verbose or not ok:
            for e in errors[:8]:
                print(f"          {fmt_error(e)}")


# --- checks -------------------------------------------------------------------------------

def check_examples(schema, rep):
    print(f"== spec examples ({SPEC_DIR.relative_to(ROOT)})")
    on_disk = {str(p.relative_to(SPEC_DIR)) for p in SPEC_DIR.rglob("*.json")}
    for missing in sorted(on_disk - set(EXAMPLES) - set(SKIPPED)):
        rep.line("UNLIST", False, missing, "fixture not mapped in EXAMPLES or SKIPPED")
    for gone in sorted((set(EXAMPLES) | set(SKIPPED)) - on_disk):
        rep.line("NOFILE", False, gone, "listed but not on disk")
    for rel in sorted(SKIPPED):
        if rel in on_disk:
            rep.line("SKIP", True, rel, SKIPPED[rel])
    for rel, (pointer, member) in sorted(EXAMPLES.items()):
        if rel not in on_disk:
            continue
        doc = load(SPEC_DIR / rel)
        instance = doc[member] if member else doc
        errs = errors_of(schema, pointer, instance)
        label = f"{rel} -> {pointer}"
        if rel in EXPECTED_FAIL:
            rep.line("XFAIL", bool(errs), label,
                     EXPECTED_FAIL[rel] if errs else "expected to fail but PASSED", errs)
        else:
            rep.line("PASS" if not errs else "FAIL", not errs, label, "", errs)


def check_negative(schema, rep):
    print(f"== negative cases ({NEGATIVE_DIR.relative_to(ROOT)})")
    files = sorted(NEGATIVE_DIR.glob("*.json"))
    if not files:
        rep.line("EMPTY", False, str(NEGATIVE_DIR), "no negative cases")
    for path in files:
        case = load(path)
        if set(case) != {"def", "why", "instance"} or case["def"] not in schema["$defs"]:
            rep.line("FORMAT", False, path.name, 'must be {"def": <a $defs name>, "why", "instance"}')
            continue
        errs = errors_of(schema, case["def"], case["instance"])
        rep.line("REJECT" if errs else "ACCEPT", bool(errs), f"{path.name} -> {case['def']}",
                 case["why"] if errs else "should have been rejected: " + case["why"], errs)


def check_vectors(schema, rep):
    print(f"== request vectors ({VECTORS_DIR.relative_to(ROOT)})")
    files = sorted(VECTORS_DIR.glob("*.json"))
    if not files:
        rep.line("EMPTY", False, str(VECTORS_DIR), "no vectors")
    for path in files:
        v = load(path)
        problems = []
        if set(v) != VECTOR_KEYS:
            problems.append(f"keys {sorted(set(v) ^ VECTOR_KEYS)} differ from the vector format")
        if v.get("name") != path.stem:
            problems.append("name does not match the file name")
        jwt = v.get("jwt", {})
        if set(jwt) != JWT_KEYS or jwt.get("alg") not in ("RS384", "ES384") or \
                not all(isinstance(jwt.get(k), bool) for k in JWT_KEYS - {"alg"}):
            problems.append("jwt must be {alg: RS384|ES384, jku, nbf, aud_array, tenant: booleans}")
        exp = v.get("expect")
        if not (isinstance(exp, list) and exp and all(isinstance(s, int) and 100 <= s <= 599 for s in exp)):
            problems.append("expect must be a non-empty list of HTTP statuses")
        for k in ("client", "description", "source"):
            if not (isinstance(v.get(k), str) and v.get(k)):
                problems.append(f"{k} must be a non-empty string")
        errs = errors_of(schema, "HookRequest", v.get("request"))
        ok = not problems and not errs
        rep.line("PASS" if ok else "FAIL", ok, f"{path.name} -> HookRequest", "; ".join(problems), errs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-v", "--verbose", action="store_true", help="print the errors of every case")
    ap.add_argument("--only", choices=["examples", "negative", "vectors"])
    args = ap.parse_args()

    schema = load(SCHEMA_PATH)
    Draft202012Validator.check_schema(schema)
    print(f"schema {SCHEMA_PATH.relative_to(ROOT)} is valid draft 2020-12 "
          f"(jsonschema {_version()})")

    rep = Report(args.verbose)
    if args.only in (None, "examples"):
        check_examples(schema, rep)
    if args.only in (None, "negative"):
        check_negative(schema, rep)
    if args.only in (None, "vectors"):
        check_vectors(schema, rep)

    summary = ", ".join(f"{k} {n}" for k, n in sorted(rep.counts.items()))
    print(f"== {summary}; unexpected: {rep.bad}")
    return 1 if rep.bad else 0


def _version():
    try:
        from importlib.metadata import version
        return version("jsonschema")
    except Exception:  # pragma: no cover
        return "?"


if __name__ == "__main__":
    sys.exit(main())
