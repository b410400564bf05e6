-- State replicas share (issue 18): what one gateway process knew alone.
-- Client-JWT ids seen, until their token expires: a token replayed to another replica is
-- refused. Only tokens whose signature verified are written (no unauthenticated growth);
-- expired rows are purged with the retention schedule.
CREATE TABLE seen_tokens (
    iss   TEXT NOT NULL,
    jti   TEXT NOT NULL,
    until BIGINT NOT NULL,            -- Unix seconds: remembered until then
    PRIMARY KEY (iss, jti)
);
CREATE INDEX seen_tokens_until ON seen_tokens (until);
-- The run-time kill switch (`POST /admin/services/{id}/disable`): durable across restarts
-- and read by every replica.
CREATE TABLE service_switches (
    service_id TEXT PRIMARY KEY,
    disabled   BIGINT NOT NULL,       -- 1: switched off
    changed_at TEXT NOT NULL,
    changed_by TEXT NOT NULL          -- the admin token's name
);
