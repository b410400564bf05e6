"""Note text out of a FHIR R4 Bundle: the DocumentReferences a model may read, with their times.

Why: the evaluation must read notes the way a gateway would, from what an EHR sends, not from the writer's
memory. Rules:
* `DocumentReference` with `status` `current` (`superseded` and `entered-in-error` are skipped) and a
  `docStatus` that is absent, `final` or `amended` (`preliminary` and `entered-in-error` are skipped);
* its time is `date` (when it was charted), else `context.period.end`; a note without an instant is skipped;
* text from each `content[].attachment` with a `text/plain` contentType (charset from the contentType,
  default UTF-8) and inline `data` (base64). An attachment by `url` is not fetched (that would be an outbound
  call to an address the record chose), and other content types (PDF, RTF, HTML) are not read.
"""
from __future__ import annotations

import base64
import binascii

from models.fhir_time import parse_instant

READ_STATUS = {"current"}
READ_DOC_STATUS = {None, "final", "amended"}


def _charset(content_type: str) -> str:
    for part in content_type.split(";")[1:]:
        k, _, v = part.strip().partition("=")
        if k.strip().lower() == "charset" and v.strip():
            return v.strip().strip('"')
    return "utf-8"


def attachment_text(att: dict) -> str | None:
    """The plain text of an inline attachment, or None when it is not one (or does not decode)."""
    ct = att.get("contentType") or ""
    if ct.split(";")[0].strip().lower() != "text/plain" or not isinstance(att.get("data"), str):
        return None
    try:
        return base64.b64decode(att["data"], validate=True).decode(_charset(ct))
    except (binascii.Error, ValueError, LookupError):
        return None


def notes_of_bundle(bundle: dict) -> list[tuple[float, str]]:
    """[(Unix seconds, text)] of the readable notes, in time order."""
    out = []
    for e in bundle.get("entry") or []:
        r = e.get("resource") or {}
        if r.get("resourceType") != "DocumentReference":
            continue
        if r.get("status") not in READ_STATUS or r.get("docStatus") not in READ_DOC_STATUS:
            continue
        when = r.get("date") or ((r.get("context") or {}).get("period") or {}).get("end")
        t = parse_instant(when) if isinstance(when, str) else None
        if t is None:
            continue
        texts = [attachment_text(c.get("attachment") or {}) for c in r.get("content") or []]
        texts = [x for x in texts if x and x.strip()]
        if texts:
            out.append((t.timestamp(), "\n".join(texts)))
    out.sort(key=lambda x: x[0])
    return out
