-- The model input of a prediction, kept only for services that opt in (`[learning]
-- store_inputs = true`) and for its own retention (`[retention] inputs`): the feature matrix
-- the model saw (normalised values and observed masks on the time grid) and the patient's
-- quasi-identifiers, generalised when they were captured (5-year age band with 90+ pooled,
-- administrative sex, 3-digit ZIP with the small-population rule) — never a name, a date of
-- birth or a full address. `bedside export` reads it.
CREATE TABLE prediction_inputs (
    prediction_id TEXT PRIMARY KEY,   -- predictions.id
    at            TEXT NOT NULL,      -- as predictions.at: retention compares it
    window_start  TEXT NOT NULL,
    step_seconds  BIGINT NOT NULL,
    features      TEXT NOT NULL,      -- JSON array of feature names
    matrix        TEXT NOT NULL,      -- JSON [steps][2 x features]: values, then masks
    age_band      TEXT,
    sex           TEXT,
    zip3          TEXT
);
CREATE INDEX prediction_inputs_at ON prediction_inputs (at);
