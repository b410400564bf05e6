//! State that replicas behind a load balancer share through the database: client-JWT ids
//! already used (replay protection across replicas), the run-time kill switch (durable
//! across restarts, seen by every replica), and the newest model-lifecycle decision (a
//! replica that sees one it has not loaded reloads).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::{timestamp, Store, StoreError};

impl Store {
    /// Records client token `(iss, jti)` until `until` (Unix seconds). `false` if it is
    /// already recorded and not yet expired at `now`: a replay, whichever replica saw it first.
    pub async fn remember_token(
        &self,
        iss: &str,
        jti: &str,
        until: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO seen_tokens (iss, jti, until) VALUES ($1, $2, $3)
             ON CONFLICT (iss, jti) DO UPDATE SET until = excluded.until
             WHERE seen_tokens.until < $4",
        )
        .bind(iss)
        .bind(jti)
        .bind(until)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Forgets token ids whose tokens expired before `now` (Unix seconds).
    pub async fn forget_expired_tokens(&self, now: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM seen_tokens WHERE until < $1")
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Switches service `id` off (`true`) or on, on record.
    pub async fn set_service_switch(
        &self,
        id: &str,
        disabled: bool,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO service_switches (service_id, disabled, changed_at, changed_by)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (service_id) DO UPDATE SET disabled = excluded.disabled,
                changed_at = excluded.changed_at, changed_by = excluded.changed_by",
        )
        .bind(id)
        .bind(i64::from(disabled))
        .bind(timestamp(at))
        .bind(by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The services switched off.
    pub async fn disabled_services(&self) -> Result<BTreeSet<String>, StoreError> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT service_id FROM service_switches WHERE disabled = 1")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// The id of the newest model-lifecycle decision (0 when none): a replica compares it
    /// with the one its models were loaded under.
    pub async fn latest_decision_id(&self) -> Result<i64, StoreError> {
        let (id,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(id), 0) FROM model_decisions")
            .fetch_one(&self.pool)
            .await?;
        Ok(id)
    }
}
