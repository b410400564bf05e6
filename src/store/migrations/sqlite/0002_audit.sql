-- Who called what: one row per hook or feedback call, answered or refused. No PHI: the
-- patient id is a keyed hash (salt in `meta`, never leaves the database).
CREATE TABLE audit (
    id            INTEGER PRIMARY KEY,
    at            TEXT    NOT NULL,
    action        TEXT    NOT NULL,      -- hook | feedback
    service_id    TEXT    NOT NULL,
    hook_instance TEXT,
    client_iss    TEXT,
    tenant        TEXT,
    user_id       TEXT,
    patient_hash  TEXT,
    outcome       TEXT    NOT NULL,      -- answered | an error code (unauthorized, prefetch_missing…)
    http_status   INTEGER NOT NULL,
    cards         INTEGER NOT NULL DEFAULT 0,
    elapsed_ms    REAL    NOT NULL
);
CREATE INDEX audit_at ON audit (at);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
