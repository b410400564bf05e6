//! `jti` replay protection: a token seen once is refused until it expires.
//!
//! In memory for a gateway on SQLite (one process); in the database when the store is shared
//! (PostgreSQL: several replicas behind a load balancer), so a token replayed to another
//! replica is refused too. Only tokens whose signature verified are remembered.

use std::collections::HashMap;
use std::sync::Mutex;

use super::AuthError;
use crate::store::Store;

/// Remembers `(iss, jti)` pairs until their token's expiry.
#[derive(Default)]
pub struct ReplayCache {
    seen: Mutex<Seen>,
    /// The shared store, when replicas share one.
    shared: Option<Store>,
}

#[derive(Default)]
struct Seen {
    until: HashMap<(String, String), i64>,
    prune_at: usize,
}

impl ReplayCache {
    /// A cache in `store` when the store is shared between replicas, else in memory.
    pub fn for_store(store: &Store) -> Self {
        Self {
            shared: store.is_shared().then(|| store.clone()),
            ..Self::default()
        }
    }

    /// Records the pair, or fails with [`AuthError::Replayed`] if it is still remembered
    /// (by any replica, with a shared store). `forget_after` and `now` are Unix seconds.
    pub async fn remember(
        &self,
        iss: &str,
        jti: &str,
        forget_after: i64,
        now: i64,
    ) -> Result<(), AuthError> {
        let Some(store) = &self.shared else {
            return self.remember_here(iss, jti, forget_after, now);
        };
        match store.remember_token(iss, jti, forget_after, now).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(AuthError::Replayed),
            Err(e) => {
                // Without the shared memory a replay cannot be ruled out: refuse, as 503.
                tracing::error!(error = %e, "token replay check unavailable");
                Err(AuthError::Setup)
            }
        }
    }

    fn remember_here(
        &self,
        iss: &str,
        jti: &str,
        forget_after: i64,
        now: i64,
    ) -> Result<(), AuthError> {
        // A poisoned lock only means another request panicked mid-insert; the map is intact.
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.until.len() >= seen.prune_at {
            seen.until.retain(|_, until| *until >= now);
            seen.prune_at = (seen.until.len() * 2).max(1024);
        }
        let key = (iss.to_owned(), jti.to_owned());
        match seen.until.get(&key) {
            Some(until) if *until >= now => Err(AuthError::Replayed),
            _ => {
                seen.until.insert(key, forget_after);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jti_is_refused_until_its_token_expires() {
        let cache = ReplayCache::default();
        cache.remember_here("a", "1", 100, 10).unwrap();
        assert!(matches!(
            cache.remember_here("a", "1", 100, 50),
            Err(AuthError::Replayed)
        ));
        // Same jti from another issuer is another token.
        cache.remember_here("b", "1", 100, 50).unwrap();
        // After expiry the memory may be dropped; an expired token fails `exp` anyway.
        cache.remember_here("a", "1", 300, 101).unwrap();
    }
}
