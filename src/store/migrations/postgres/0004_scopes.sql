-- State is keyed by whom it belongs to (security review, issue 14): a prediction records the
-- client (JWT `iss`), tenant and FHIR server of the call, and the patient pseudonym covers the
-- FHIR server too. Suppression, "already aware", alert budgets, dedup, the SMART trajectory and
-- feedback only ever read the caller's own rows. Rows written before this migration belong to
-- the unauthenticated scope (empty strings).
ALTER TABLE predictions ADD COLUMN client_iss TEXT NOT NULL DEFAULT '';
ALTER TABLE predictions ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
ALTER TABLE predictions ADD COLUMN fhir_server TEXT NOT NULL DEFAULT '';
-- alerts_shown: the alert budget of one client's unit over a window.
DROP INDEX predictions_by_unit;
CREATE INDEX predictions_by_scope_unit ON predictions (client_iss, tenant, unit, at);
-- Refusals of unauthenticated calls are aggregated: one row stands for `calls` of them.
ALTER TABLE audit ADD COLUMN calls INTEGER NOT NULL DEFAULT 1;
ALTER TABLE audit ADD COLUMN fhir_server TEXT;
