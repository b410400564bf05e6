-- What each prediction was made from (issue 21): measurements used, and observations left out
-- by reason (unit, status, time, unreadable), as a JSON object. NULL for rows without a
-- scoring attempt (disabled) and for rows written before this migration.
ALTER TABLE predictions ADD COLUMN data_quality TEXT;
