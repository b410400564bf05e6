-- Governance (issue 20, part 4). A model version goes from shadow to active only through a
-- promotion that names a stored evaluation of it on this site's own records, who decided,
-- when and why; retirement likewise. The newest decision per (model, version) is the
-- version's status; the manifest's `status` only counts for versions never decided on.
CREATE TABLE model_evaluations (
    id          BIGSERIAL PRIMARY KEY,
    model       TEXT NOT NULL,
    version     TEXT NOT NULL,
    at          TEXT NOT NULL,      -- RFC 3339 UTC with milliseconds and `Z`
    passed      BIGINT NOT NULL,    -- 1: met the promotion criteria in force when it was made
    evaluation  TEXT NOT NULL       -- JSON: sample sizes, agreement, outcome metrics, criteria
);
CREATE INDEX model_evaluations_by_version ON model_evaluations (model, version, id);
CREATE TABLE model_decisions (
    id            BIGSERIAL PRIMARY KEY,
    model         TEXT NOT NULL,
    version       TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('active', 'shadow', 'retired')),
    previous      TEXT NOT NULL,    -- the status before
    at            TEXT NOT NULL,
    actor         TEXT NOT NULL,    -- the admin token's name, or the operator named on the CLI
    via           TEXT NOT NULL,    -- cli | admin-api | bedside (a reverted change)
    reason        TEXT NOT NULL,    -- the operator's words: never logged
    evaluation_id BIGINT REFERENCES model_evaluations (id)
);
CREATE INDEX model_decisions_by_version ON model_decisions (model, version, id);
-- Outcomes joined to predictions later (the event a model predicts, e.g. `deterioration`),
-- by the same patient pseudonym as the predictions; no patient id is stored.
CREATE TABLE outcomes (
    id           BIGSERIAL PRIMARY KEY,
    event        TEXT NOT NULL,
    patient_hash TEXT NOT NULL,
    at           TEXT NOT NULL,
    received_at  TEXT NOT NULL
);
CREATE UNIQUE INDEX outcomes_once ON outcomes (event, patient_hash, at);
-- Up to when each event's outcomes are complete: a prediction is labelled (event or no
-- event) only once its horizon ends before this instant.
CREATE TABLE outcome_feeds (
    event   TEXT PRIMARY KEY,
    through TEXT NOT NULL
);
