"""Reference Python CDS service for `benches/compare.sh`: the job bedside's `deterioration` service does
on patient-view, written the way a careful Python team would write it (FastAPI + uvicorn, orjson, one
TorchScript GRU forward pass on one CPU thread). A small, honest peer, not a strawman.

    uvicorn benches.peer.service:app --workers 2 --port 8090      (from the repository root)

Per call (POST /cds-services/deterioration):
  1. parse the CDS Hooks request (orjson) and check hook, context.patientId, prefetch.patient and
     prefetch.vitals (both required, as in cds-services/deterioration.toml; no FHIR fetch fallback:
     a missing prefetch is answered 412);
  2. project the vitals Bundle's Observations into measurements with the project's own Python
     featurizer (`models/featurize.py`: same features.toml, terminology map, unit conversions and
     plausibility limits as the gateway), read them within the manifest's training ranges;
  3. the service's guardrails (min 4 observations, newest <= 12 h old, complete core set within 12 h):
     an info card saying why when it abstains, as bedside does with `abstain_card = true`;
  4. the [48, 12] grid (hourly bins, carry-forward, normalised with the manifest's mean/std, masks);
  5. NEWS2 (`models/baselines.py`, the Python port of bedside's Rust score) from the latest values of
     the last 12 h, air/oxygen from O2 flow / FiO2, SpO2 scale 2 from the Conditions prefetch;
  6. ONE forward pass of the TorchScript GRU deterioration 2.0.0 (torch.inference_mode, 1 thread);
  7. risk >= the service's warning threshold: one card (risk, NEWS2, model version, and a cheap
     explanation: the three signals whose latest values are furthest from the training mean);
     otherwise {"cards": []}.

What it does not do that bedside does: score a second (active) model, the model's own attribution,
persist a prediction record, dedup/suppression, audit, metrics. So the comparison flatters the peer.

Auth: off by default (compare with bedside `--insecure-no-auth`). PEER_JWT_JWKS=<JWKS file> turns on
the CDS Hooks client JWT check (RS384/ES384 signature by the header's `kid`, exp, iat, jti,
aud = this service's URL, iss = PEER_JWT_ISSUER when set); needs PyJWT and cryptography (`pip install
pyjwt cryptography`; not in requirements.txt because the main comparison runs with auth off). No
replay (jti) cache: with auth on the peer still does less than bedside.

Environment: PEER_ROOT (repository root; default: two levels above this file), PEER_MODEL_VERSION
(default 2.0.0), PEER_PUBLIC_URL (for card links and the JWT audience; default http://127.0.0.1).
"""
from __future__ import annotations

import os
import sys
import time
import tomllib
import uuid

import numpy as np
import orjson
import torch
from fastapi import FastAPI, Request
from fastapi.responses import Response

ROOT = os.environ.get("PEER_ROOT") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from models import baselines, featurize as fz  # noqa: E402  (the project's own Python featurizer and NEWS2)

torch.set_num_threads(1)
try:
    torch.set_num_interop_threads(1)
except RuntimeError:  # already set in this process
    pass

SERVICE_ID = "deterioration"
MODEL_VERSION = os.environ.get("PEER_MODEL_VERSION", "2.0.0")
PUBLIC_URL = os.environ.get("PEER_PUBLIC_URL", "http://127.0.0.1").rstrip("/")


def _load_toml(path: str) -> dict:
    with open(path, "rb") as f:
        return tomllib.load(f)


SERVICE = _load_toml(os.path.join(ROOT, "cds-services", f"{SERVICE_ID}.toml"))
MODEL_DIR = os.path.join(ROOT, "models", SERVICE["model"]["name"], MODEL_VERSION)
MANIFEST = _load_toml(os.path.join(MODEL_DIR, "manifest.toml"))
SPEC = fz.load_spec(os.path.normpath(os.path.join(MODEL_DIR, MANIFEST["features"])))
MEAN, STD = (np.array(MANIFEST["input"][k], dtype=np.float64) for k in ("mean", "std"))
VALIDITY = MANIFEST.get("validity", {})
RANGES = VALIDITY.get("range", {})
GUARD = SERVICE.get("guardrails", {})
MIN_OBS = int(GUARD.get("min_observations", 0))
MAX_STALE_H = float(str(GUARD.get("max_staleness", "12h")).rstrip("h"))
WARNING, CRITICAL = SERVICE["thresholds"]["warning"], SERVICE["thresholds"]["critical"]
HORIZON_H = MANIFEST["output"]["horizon_hours"]
RECENT_S = float(SPEC.get("require_recent", {}).get("hours", 12)) * 3600.0
SCALE2_CODES = tuple(SERVICE.get("news2", {}).get("scale2_conditions", []))
CARD = SERVICE["card"]
OVERRIDES = [{"code": r["code"], "system": CARD["override_reason_system"], "display": r["display"]}
             for r in CARD.get("override_reasons", [])]
FEATURES = SPEC["feature"]
NF = len(FEATURES)
NEWS2_FEATURE = {"heart_rate": "heart_rate", "respiratory_rate": "respiratory_rate", "spo2": "spo2",
                 "systolic_bp": "systolic_bp", "temperature": "temperature"}
INDEX = {f["name"]: i for i, f in enumerate(FEATURES)}

MODEL = torch.jit.load(os.path.join(MODEL_DIR, MANIFEST["file"]), map_location="cpu")
MODEL.eval()
with torch.inference_mode():  # warm-up: the first TorchScript calls optimise the graph
    for _ in range(3):
        MODEL(torch.zeros(1, *MANIFEST["input"]["shape"]))

DISCOVERY = orjson.dumps({"services": [{
    "hook": SERVICE["hook"],
    "title": SERVICE["title"],
    "description": SERVICE["description"],
    "id": SERVICE_ID,
    "prefetch": {k: v["query"] for k, v in SERVICE["prefetch"].items()},
    "usageRequirements": SERVICE.get("usage_requirements", ""),
}]})
EMPTY = b'{"cards":[]}'

AUTH = None
if os.environ.get("PEER_JWT_JWKS"):
    import jwt  # PyJWT

    with open(os.environ["PEER_JWT_JWKS"], "rb") as f:
        _jwks = jwt.PyJWKSet.from_json(f.read().decode())
    AUTH = {"keys": {k.key_id: k for k in _jwks.keys}, "issuer": os.environ.get("PEER_JWT_ISSUER")}

# ------------------------------------------------------------------------------- projection
# One pass over the Bundle with lookups built once. Same rules as models/featurize.py `extract`
# (which the gateway's parity tests pin): LOINC on Observation.code or a component's code (any
# spelling of the LOINC system), status final/amended/corrected, effective time with a zone,
# units converted to the feature's, plausibility limits; rare shapes (coded answers, GCS read as
# ACVPU, odd units) go through featurize's own functions.
LOINC_SYSTEMS = frozenset(fz.TERMINOLOGY["systems"]["loinc"])
BY_CODE: dict[str, list[tuple[int, str]]] = {}
for _f, _feat in enumerate(FEATURES):
    _score = (_feat["from_score"] or {}).get("loinc", [])
    for _code in _feat["loinc"]:
        BY_CODE.setdefault(_code, []).append((_f, "score" if _code in _score else "direct"))
_O2 = fz.TERMINOLOGY["oxygen"]
OXYGEN_CODES = frozenset(fz.TERMINOLOGY["concept"][_O2["flow_concept"]]["loinc"]
                         + fz.TERMINOLOGY["concept"][_O2["fio2_concept"]]["loinc"])
UCUM_SYSTEMS = frozenset(fz.TERMINOLOGY["systems"]["ucum"])
LIMITS = [(f["plausible"] or (-np.inf, np.inf)) for f in FEATURES]
CLAMP = [tuple(RANGES.get(f["name"], (-np.inf, np.inf))) for f in FEATURES]
_fromiso = __import__("datetime").datetime.fromisoformat


def _seconds(text) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        t = _fromiso(text)
    except ValueError:
        return fz.instant_seconds(text)
    return t.timestamp() if t.tzinfo is not None and "T" in text else fz.instant_seconds(text)


def _value(f: int, how: str, q, cc):
    feat = FEATURES[f]
    if how == "direct" and q is not None:
        v = q.get("value")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            system = q.get("system")
            unit = (q.get("code") or q.get("unit") or "") if system is None or system in UCUM_SYSTEMS else (q.get("unit") or "")
            if unit == feat["unit"]:
                lo, hi = LIMITS[f]
                return (float(v) if lo <= v <= hi else None)
    v, why = fz._value_of(feat, how, q, cc)
    return v if why is None else None


def project(bundle: dict, start: float, now: float):
    """In-window measurements (feature, time, value clamped to the training range, id), in time order,
    and the Observations that record O2 flow / FiO2 (for NEWS2 "air or oxygen")."""
    found, oxygen = [], []
    for entry in bundle.get("entry") or ():
        obs = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(obs, dict) or obs.get("resourceType") != "Observation":
            continue
        code = obs.get("code") or {}
        components = obs.get("component") or ()
        hits = []  # (feature, how, quantity, codeable answer)
        for c in components:
            for coding in (c.get("code") or {}).get("coding") or ():
                for f, how in BY_CODE.get(coding.get("code"), ()):
                    if coding.get("system") in LOINC_SYSTEMS:
                        hits.append((f, how, c.get("valueQuantity"), c.get("valueCodeableConcept")))
                if coding.get("code") in OXYGEN_CODES:
                    oxygen.append(obs)
        for coding in code.get("coding") or ():
            for f, how in BY_CODE.get(coding.get("code"), ()):
                if coding.get("system") in LOINC_SYSTEMS:
                    hits.append((f, how, obs.get("valueQuantity"), obs.get("valueCodeableConcept")))
            if coding.get("code") in OXYGEN_CODES:
                oxygen.append(obs)
        if not hits or obs.get("status") not in fz.USABLE_STATUS:
            continue
        eff = obs.get("effectiveDateTime") or obs.get("effectiveInstant")
        if eff is None and isinstance(obs.get("effectivePeriod"), dict):
            eff = obs["effectivePeriod"].get("end") or obs["effectivePeriod"].get("start")
        t = _seconds(eff)
        if t is None or not start <= t < now:
            continue
        rid = obs.get("id") or ""
        seen = set()
        for f, how, q, cc in sorted(hits, key=lambda h: h[0]):
            if (f, id(q), id(cc)) in seen:
                continue
            seen.add((f, id(q), id(cc)))
            v = _value(f, how, q, cc)
            if v is not None:
                found.append((f, t, v, rid))
    found.sort(key=lambda m: m[1])
    return found, oxygen


STEPS, STEP_S = SPEC["steps"], SPEC["step_minutes"] * 60.0
MEAN_L, STD_L = MEAN.tolist(), STD.tolist()
LAST_ONLY = all(f["aggregate"] == "last" and f["max_age_hours"] is None and f["transform"] == "none"
                for f in FEATURES)


def grid(measurements, start: float) -> np.ndarray:
    """[1, steps, 2F] as featurize.grids for one reference time: last value in each bin, carried
    forward, 0 (the mean) before the first; masks; values read within the training ranges."""
    if not LAST_ONLY:
        meas, _ = fz.clamp(SPEC, measurements, RANGES)
        return fz.grids(SPEC, MEAN, STD, meas, [start + SPEC["window_hours"] * 3600.0])
    values = [[0.0] * (2 * NF) for _ in range(STEPS)]
    for f, t, v, _ in measurements:  # time order: the last one in a bin wins
        lo, hi = CLAMP[f]
        row = values[int((t - start) // STEP_S)]
        row[f] = (min(max(v, lo), hi) - MEAN_L[f]) / STD_L[f]
        row[NF + f] = 1.0
    for f in range(NF):  # carry forward; 0.0 (the mean) before the first measurement
        carried = 0.0
        for row in values:
            if row[NF + f]:
                carried = row[f]
            else:
                row[f] = carried
    return np.array([values], dtype=np.float32)

app = FastAPI(title="peer deterioration service", docs_url=None, redoc_url=None, openapi_url=None)


def _json(body: bytes, status: int = 200) -> Response:
    return Response(content=body, status_code=status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    return _json(orjson.dumps({"error": message}), status)


def _check_jwt(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if not header.startswith("Bearer "):
        return "missing bearer token"
    try:
        key = AUTH["keys"].get(jwt.get_unverified_header(header[7:]).get("kid"))
        if key is None:
            return "unknown kid"
        claims = jwt.decode(header[7:], key, algorithms=["RS384", "ES384"],
                            audience=f"{PUBLIC_URL}/cds-services/{SERVICE_ID}", issuer=AUTH["issuer"],
                            options={"require": ["exp", "iat", "jti", "iss", "aud"]})
    except jwt.PyJWTError as e:
        return f"invalid token: {e}"
    return None if claims.get("jti") else "token without jti"


@app.get("/cds-services")
async def discovery() -> Response:
    return _json(DISCOVERY)


@app.post(f"/cds-services/{SERVICE_ID}")
async def call(request: Request) -> Response:
    if AUTH is not None:
        why = _check_jwt(request)
        if why:
            return _error(401, why)
    try:
        req = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return _error(400, "body is not JSON")
    if not isinstance(req, dict) or req.get("hook") != SERVICE["hook"] or not isinstance(req.get("hookInstance"), str):
        return _error(400, f"not a {SERVICE['hook']} request")
    context = req.get("context")
    patient_id = context.get("patientId") if isinstance(context, dict) else None
    if not isinstance(patient_id, str):
        return _error(400, "context.patientId missing")
    prefetch = req.get("prefetch") or {}
    patient, vitals = prefetch.get("patient"), prefetch.get("vitals")
    if not isinstance(patient, dict) or not isinstance(vitals, dict):
        return _error(412, "prefetch patient and vitals are required")
    if patient.get("resourceType") != "Patient" or patient.get("id") != patient_id:
        return _error(400, "prefetch.patient is not context.patientId's Patient")
    if vitals.get("resourceType") != "Bundle":
        return _error(400, "prefetch.vitals is not a Bundle")

    now = time.time()
    start = now - SPEC["window_hours"] * 3600.0
    raw, oxygen_obs = project(vitals, start, now)
    why = fz.abstain_reason(SPEC, VALIDITY, raw, now, MIN_OBS, MAX_STALE_H)
    if why is not None:
        if not GUARD.get("abstain_card", True):
            return _json(EMPTY)
        return _json(orjson.dumps({"cards": [{
            "uuid": str(uuid.uuid4()), "summary": CARD["abstain_summary"].format(reason=why)[:140],
            "indicator": "info", "source": {"label": _source_label()}}]}))
    x = grid(raw, start)  # float32 [1, 48, 12]
    with torch.inference_mode():
        risk = float(MODEL(torch.from_numpy(x)))
    if risk < WARNING:
        return _json(EMPTY)

    # NEWS2 from the latest measured (not clamped) value of each parameter in the last 12 h.
    recent = now - RECENT_S
    latest = {}
    for f, t, v, _ in raw:
        if t >= recent:
            latest[f] = v
    vit = {key: latest.get(INDEX[name]) for key, name in NEWS2_FEATURE.items()}
    not_alert = latest.get(INDEX["consciousness_not_alert"])
    vit["alert"] = None if not_alert is None else not_alert < 0.5
    vit["on_oxygen"] = baselines.on_oxygen(oxygen_obs, recent, now) if oxygen_obs else None
    scale = baselines.spo2_scale(prefetch.get("conditions") or [], SCALE2_CODES)
    news = baselines.news2(vit, scale)

    # Explanation: the signals whose latest (carried-forward) values are furthest from the training mean.
    last = x[0, -1, :NF]
    far = sorted((i for i in range(NF) if x[0, :, NF + i].any()), key=lambda i: -abs(float(last[i])))[:3]
    drivers = [f"- {FEATURES[i]['display']}: {_reading(i, float(last[i]) * STD[i] + MEAN[i])} "
               f"({float(last[i]):+.1f} SD from the training mean)" for i in far]
    band = "critical" if risk >= CRITICAL else "warning"
    words = {"model": SERVICE["model"]["name"], "version": MODEL_VERSION, "band": CARD["band_words"][band],
             "risk_pct": f"{risk * 100:.0f}", "horizon_hours": HORIZON_H, "news2": news["total"],
             "news2_band": news["band"]}
    parts = ", ".join(f"{name} {points}" for name, points in news["parts"] if points)
    detail = (f"**{words['risk_pct']}%**: {MANIFEST['output']['meaning']}.\n\n"
              "**Furthest from normal:**\n\n" + "\n".join(drivers) +
              f"\n\n**Next:** {CARD['action'].format(**words)}\n\n"
              f"**NEWS2 {news['total']} ({news['band']})**: {parts or 'all parameters 0'}. SpO2 scale {scale}.\n\n"
              f"_{CARD['footer'].format(**words)}_")
    return _json(orjson.dumps({"cards": [{
        "uuid": str(uuid.uuid4()),
        "summary": CARD["summary"].format(**words)[:140],
        "detail": detail,
        "indicator": band,
        "source": {"label": _source_label(),
                   "url": f"{PUBLIC_URL}/models/{SERVICE['model']['name']}/{MODEL_VERSION}/model-card"},
        "overrideReasons": OVERRIDES,
    }]}))


def _reading(i: int, value: float) -> str:
    words = FEATURES[i].get("value_words")
    if words:
        return words.get(str(int(round(value))), f"{value:.0f}")
    return f"{value:.1f} {FEATURES[i]['unit']}"


def _source_label() -> str:
    return f"Python peer: {SERVICE['model']['name']} v{MODEL_VERSION} (synthetic-data model)"
