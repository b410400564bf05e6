//! `jti` replay protection: a token seen once is refused until it expires.
//!
//! In memory, per process. Behind a load balancer each replica keeps its own memory, so a
//! replay to a different replica is not caught; moving this into `store` is the fix when
//! bedside runs as several replicas (noted in design.md's "State lives in store/").

use std::collections::HashMap;
use std::sync::Mutex;

use super::AuthError;

/// Remembers `(iss, jti)` pairs until their token's expiry.
#[derive(Default)]
pub struct ReplayCache {
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    until: HashMap<(String, String), i64>,
    prune_at: usize,
}

impl ReplayCache {
    /// Records the pair, or fails with [`AuthError::Replayed`] if it is still remembered.
    /// `forget_after` and `now` are Unix seconds.
    pub fn remember(
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
        cache.remember("a", "1", 100, 10).unwrap();
        assert!(matches!(
            cache.remember("a", "1", 100, 50),
            Err(AuthError::Replayed)
        ));
        // Same jti from another issuer is another token.
        cache.remember("b", "1", 100, 50).unwrap();
        // After expiry the memory may be dropped; an expired token fails `exp` anyway.
        cache.remember("a", "1", 300, 101).unwrap();
    }
}
