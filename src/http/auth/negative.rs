//! Key lookups that just found nothing: answered "unknown" without another fetch for a while.
//!
//! Anyone can send a token naming a made-up `kid`, so this memory is bounded twice: entries
//! expire after `ttl`, and at most `max_entries` are kept (when full, expired entries go
//! first, then the oldest). A `kid` too long to be a real one is never remembered; it still
//! gets at most one fetch per back-off, like any other miss.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use url::Url;

use super::keys::Wanted;

/// Longest `kid` remembered (bytes). Real key ids are UUIDs, thumbprints or short names.
const MAX_KID_BYTES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Miss {
    Kid(String),
    SoleFit(Algorithm),
}

impl Miss {
    fn of(wanted: Wanted<'_>) -> Option<Self> {
        match wanted {
            Wanted::Kid(kid) if kid.len() <= MAX_KID_BYTES => Some(Self::Kid(kid.to_owned())),
            Wanted::Kid(_) => None,
            Wanted::SoleFit(alg) => Some(Self::SoleFit(alg)),
        }
    }
}

/// `(JWKS URL, what was looked for)` → when the lookup found nothing in a just-fetched set.
pub struct NegativeCache {
    ttl: Duration,
    max_entries: usize,
    seen: Mutex<HashMap<(Url, Miss), Instant>>,
}

impl NegativeCache {
    /// An empty cache keeping each miss `ttl`, at most `max_entries` at once.
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        Self {
            ttl,
            max_entries,
            seen: Mutex::default(),
        }
    }

    /// Whether `wanted` was looked up at `url`, and absent, less than `ttl` ago.
    pub fn is_recent(&self, url: &Url, wanted: Wanted<'_>) -> bool {
        let Some(miss) = Miss::of(wanted) else {
            return false;
        };
        // A poisoned lock only means another request panicked mid-insert; the map is intact.
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(&(url.clone(), miss))
            .is_some_and(|at| at.elapsed() < self.ttl)
    }

    /// Remembers that `wanted` is absent from the set just fetched from `url`.
    pub fn insert(&self, url: &Url, wanted: Wanted<'_>) {
        let Some(miss) = Miss::of(wanted) else {
            return;
        };
        if self.max_entries == 0 {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= self.max_entries {
            let ttl = self.ttl;
            seen.retain(|_, at| at.elapsed() < ttl);
        }
        if seen.len() >= self.max_entries {
            let oldest = seen
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                seen.remove(&oldest);
            }
        }
        seen.insert((url.clone(), miss), Instant::now());
    }

    /// How many misses are remembered.
    #[cfg(test)]
    pub fn remembered(&self) -> usize {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> Url {
        Url::parse("https://ehr.test/jwks").unwrap()
    }

    #[test]
    fn a_miss_is_remembered_per_url_and_kid_until_it_expires() {
        let cache = NegativeCache::new(Duration::from_millis(50), 10);
        cache.insert(&url(), Wanted::Kid("bogus"));
        assert!(cache.is_recent(&url(), Wanted::Kid("bogus")));
        // Another kid (the rotated key) is not blocked by the bogus one.
        assert!(!cache.is_recent(&url(), Wanted::Kid("rotated")));
        let other = Url::parse("https://other.test/jwks").unwrap();
        assert!(!cache.is_recent(&other, Wanted::Kid("bogus")));
        assert!(!cache.is_recent(&url(), Wanted::SoleFit(Algorithm::RS256)));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!cache.is_recent(&url(), Wanted::Kid("bogus")));
    }

    #[test]
    fn the_cache_stays_bounded_under_a_flood_of_made_up_kids() {
        let cache = NegativeCache::new(Duration::from_secs(60), 100);
        for i in 0..10_000 {
            cache.insert(&url(), Wanted::Kid(&format!("bogus-{i}")));
        }
        assert_eq!(cache.remembered(), 100);
        // The newest are kept, the oldest went first.
        assert!(cache.is_recent(&url(), Wanted::Kid("bogus-9999")));
        assert!(!cache.is_recent(&url(), Wanted::Kid("bogus-0")));
        // Absurdly long kids are not stored at all.
        cache.insert(&url(), Wanted::Kid(&"k".repeat(10_000)));
        assert!(!cache.is_recent(&url(), Wanted::Kid(&"k".repeat(10_000))));
        assert_eq!(cache.remembered(), 100);
    }
}
