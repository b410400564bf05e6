//! Serialises the card decisions that read the prediction record and then add to it
//! (suppression, "already aware", the unit's alert budget, dedup within a call). Two calls
//! deciding about the same patient, unit or call at once would otherwise both read "nothing
//! shown yet" and both show a card. Within one process a keyed mutex does it; on a shared
//! PostgreSQL store a transaction-scoped advisory lock per key does it across replicas too.
//! A decision holds its keys until its record is committed, then releases them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::OwnedMutexGuard;

use super::{Store, StoreError};

/// The keyed mutexes of one process; entries nobody holds are forgotten.
#[derive(Default)]
pub(super) struct LocalLocks {
    by_key: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl LocalLocks {
    fn handle(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = match self.by_key.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Decisions are short: forget the keys nobody holds, so the map stays small whatever
        // keys callers cause.
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry(key.to_owned()).or_default().clone()
    }
}

/// Held decision keys; [`DecisionGuard::release`] once the decision is on record. Dropped
/// without it (a cancelled call), the keys are released all the same.
pub struct DecisionGuard {
    local: Vec<(String, OwnedMutexGuard<()>)>,
    shared: Option<sqlx::Transaction<'static, sqlx::Any>>,
}

impl DecisionGuard {
    /// Releases `key` before the record is committed, where the next decider needs only what
    /// this process holds in memory. Only on a store no other process writes: across replicas
    /// every key is held until [`DecisionGuard::release`].
    pub fn release_early(&mut self, key: &str) {
        if self.shared.is_none() {
            self.local.retain(|(k, _)| k != key);
        }
    }

    /// Releases the keys: the decision's record is committed, so the next decider reads it.
    pub async fn release(self) {
        if let Some(tx) = self.shared {
            // Ending the transaction releases its advisory locks; a failed commit ends it too.
            let _ = tx.commit().await;
        }
    }
}

/// The advisory-lock number of `key`: the first 8 bytes of its SHA-256. A collision only
/// makes two unrelated decisions wait for each other.
fn advisory_key(key: &str) -> i64 {
    let digest = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

impl Store {
    /// Takes every key in `keys` (in one order, so two deciders never wait on each other in a
    /// circle), waiting at most `wait` in all. [`StoreError::Busy`] if another decision held
    /// one longer.
    pub async fn lock_decision(
        &self,
        keys: &[String],
        wait: Duration,
    ) -> Result<DecisionGuard, StoreError> {
        let mut keys: Vec<&String> = keys.iter().collect();
        keys.sort();
        keys.dedup();
        let take = async {
            let mut local = Vec::with_capacity(keys.len());
            for key in &keys {
                let held = self.decision_locks.handle(key).lock_owned().await;
                local.push(((*key).clone(), held));
            }
            let shared = match &self.lock_pool {
                Some(pool) => Some(advisory_locks(pool, &keys, wait).await?),
                None => None,
            };
            Ok(DecisionGuard { local, shared })
        };
        match tokio::time::timeout(wait, take).await {
            Ok(taken) => taken,
            Err(_) => Err(StoreError::Busy),
        }
    }
}

/// A transaction on `pool` holding PostgreSQL advisory locks on `keys`, each waited for at
/// most `wait` (the server's `lock_timeout`).
async fn advisory_locks(
    pool: &sqlx::AnyPool,
    keys: &[&String],
    wait: Duration,
) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
    let mut tx = pool.begin().await?;
    // Below the caller's own timeout, so that the server gives up first (55P03) and the
    // connection comes back clean rather than mid-statement.
    let ms = (wait.as_millis() * 3 / 4).clamp(1, 60_000);
    sqlx::query(&format!("SET LOCAL lock_timeout = '{ms}ms'"))
        .execute(&mut *tx)
        .await?;
    let mut numbers: Vec<i64> = keys.iter().map(|k| advisory_key(k)).collect();
    numbers.sort_unstable();
    numbers.dedup();
    for n in numbers {
        sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock($1)) AS held")
            .bind(n)
            .execute(&mut *tx)
            .await
            .map_err(|e| match &e {
                // 55P03 lock_not_available: lock_timeout passed.
                sqlx::Error::Database(d) if d.code().as_deref() == Some("55P03") => {
                    StoreError::Busy
                }
                _ => StoreError::Database(e),
            })?;
    }
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advisory_keys_are_stable_and_distinct() {
        assert_eq!(advisory_key("a"), advisory_key("a"));
        assert_ne!(advisory_key("a"), advisory_key("b"));
    }

    #[tokio::test]
    async fn one_decision_at_a_time_per_key_and_different_keys_do_not_wait() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).await.unwrap();
        let wait = Duration::from_millis(200);
        let key = |k: &str| vec![k.to_owned()];
        let held = store.lock_decision(&key("p1"), wait).await.unwrap();
        // The same key waits, then gives up.
        assert!(matches!(
            store.lock_decision(&key("p1"), wait).await,
            Err(StoreError::Busy)
        ));
        // Another key does not wait; several keys in any order are taken in one order.
        let other = store
            .lock_decision(&["u2".to_owned(), "p2".to_owned()], wait)
            .await
            .unwrap();
        drop(other);
        held.release().await;
        // A key released early is free while the others stay held.
        let mut both = store
            .lock_decision(&["p1".to_owned(), "c1".to_owned()], wait)
            .await
            .unwrap();
        both.release_early("c1");
        store.lock_decision(&key("c1"), wait).await.unwrap();
        assert!(store.lock_decision(&key("p1"), wait).await.is_err());
        drop(both);
        store.lock_decision(&key("p1"), wait).await.unwrap();
    }
}
