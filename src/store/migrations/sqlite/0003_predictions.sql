-- Every call of a service that reached a model decision: scored, below threshold, abstained,
-- suppressed, downgraded, deduplicated, shadow, no score, disabled. The audit trail behind
-- each card, and what suppression (last shown, last override) and the alert budget read.
-- No PHI: the patient id is the same keyed hash as in `audit` (salt in `meta`).
CREATE TABLE predictions (
    id            TEXT PRIMARY KEY,   -- the prediction id = the card uuid
    at            TEXT NOT NULL,      -- RFC 3339 UTC with milliseconds and `Z`: sorts as text
    service_id    TEXT NOT NULL,
    hook          TEXT NOT NULL,
    hook_instance TEXT NOT NULL,
    model         TEXT NOT NULL,
    model_version TEXT NOT NULL,
    mode          TEXT NOT NULL CHECK (mode IN ('active', 'shadow')),
    patient_hash  TEXT,
    unit          TEXT,               -- ward/unit the alert budget counts against
    risk          REAL,               -- NULL when abstained / no score
    indicator     TEXT CHECK (indicator IN ('info', 'warning', 'critical')),
    -- shown | below_threshold | abstained | suppressed | downgraded | deduplicated | shadow
    -- | no_score | disabled (not a CHECK: new outcomes must not need a migration)
    outcome       TEXT NOT NULL,
    reason        TEXT,               -- why abstained / suppressed / downgraded (no PHI)
    input_refs    TEXT NOT NULL,      -- JSON array of "Observation/abc" references
    tensor_sha256 TEXT,
    latency_ms    REAL NOT NULL
);
-- last_shown, last_override: one service's cards for one patient, newest first.
CREATE INDEX predictions_by_patient ON predictions (service_id, patient_hash, at);
-- alerts_shown: the alert budget of a unit over a window.
CREATE INDEX predictions_by_unit ON predictions (unit, at);
-- The report's shadow/active pairs: predictions of the same hook call.
CREATE INDEX predictions_by_hook_instance ON predictions (hook_instance, model);
-- The report's window.
CREATE INDEX predictions_at ON predictions (at);
