-- Clinician feedback on cards (CDS Hooks 2.0 "Feedback"), one row per feedback item.
-- `raw_json` keeps the item exactly as received, so nothing the EHR sent is lost even if a
-- later bedside version reads more of it.
CREATE TABLE feedback (
    id                      INTEGER PRIMARY KEY,
    service_id              TEXT NOT NULL,
    card_uuid               TEXT NOT NULL,
    outcome                 TEXT NOT NULL CHECK (outcome IN ('accepted', 'overridden')),
    accepted_suggestions    TEXT NOT NULL,           -- JSON array of suggestion uuids
    override_reason_system  TEXT,
    override_reason_code    TEXT,
    override_reason_display TEXT,
    override_user_comment   TEXT,                    -- clinician free text: never logged
    outcome_timestamp       TEXT NOT NULL,
    client_iss              TEXT,
    tenant                  TEXT,
    received_at             TEXT NOT NULL,
    raw_json                TEXT NOT NULL
);
-- The spec allows the same feedback to arrive more than once; a retry must not double-count.
CREATE UNIQUE INDEX feedback_once ON feedback (service_id, card_uuid, outcome, outcome_timestamp);
CREATE INDEX feedback_by_card ON feedback (card_uuid);
