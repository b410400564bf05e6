-- Who called what: one row per hook or feedback call, answered or refused. No PHI: the
-- patient id is a keyed hash (salt in `meta`, never leaves the database).
-- The PostgreSQL twin of sqlite/0002_audit.sql.
CREATE TABLE audit (
    id            BIGSERIAL        PRIMARY KEY,
    at            TEXT             NOT NULL,  -- RFC 3339 UTC with milliseconds and `Z`
    action        TEXT             NOT NULL,  -- hook | feedback
    service_id    TEXT             NOT NULL,
    hook_instance TEXT,
    client_iss    TEXT,
    tenant        TEXT,
    user_id       TEXT,
    patient_hash  TEXT,
    outcome       TEXT             NOT NULL,  -- answered | an error code (unauthorized, prefetch_missing…)
    http_status   BIGINT           NOT NULL,
    cards         BIGINT           NOT NULL DEFAULT 0,
    elapsed_ms    DOUBLE PRECISION NOT NULL
);
CREATE INDEX audit_at ON audit (at);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
