//! Sign-ins waiting for the authorization server's redirect back, keyed by their `state`:
//! single use, expiring after a fixed time, at most so many per source and in all.
//!
//! Anyone can start a launch without signing in, so the table is what an attacker fills
//! first. A cap per source (the client address as the listener sees it; IPv6 grouped by /64,
//! what one subscriber is usually given) keeps one client from taking every slot; the global
//! cap bounds memory whatever the number of sources. `X-Forwarded-For` is not read: bedside
//! has no trusted-proxy setting, and a header anyone can write would make the cap per-header.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where a launch came from, as far as the caps are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Source(IpAddr);

impl Source {
    /// The source of a request from `peer`: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its
    /// /64 prefix; no address (not a TCP peer) is one source of its own.
    pub(crate) fn of(peer: Option<SocketAddr>) -> Self {
        let ip = match peer.map(|p| p.ip()) {
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let mut segments = v6.segments();
                    segments[4..].fill(0);
                    IpAddr::V6(Ipv6Addr::from(segments))
                }
            },
            Some(v4) => v4,
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        Self(ip)
    }
}

/// Why a launch was not taken; each says when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// This source has `max_per_source` launches waiting (answered 429).
    SourceFull { retry_after: Duration },
    /// The whole table is full (answered 503).
    Full { retry_after: Duration },
}

struct Entry<V> {
    value: V,
    source: Source,
    created: Instant,
}

struct Inner<V> {
    by_state: HashMap<String, Entry<V>>,
    /// Each source's waiting launches, oldest first (a launch's TTL is the same for all, so
    /// the expired ones are always at the front).
    by_source: HashMap<Source, VecDeque<(Instant, String)>>,
}

/// The waiting launches (see the module doc). `V` is what the callback needs back.
pub(crate) struct PendingTable<V> {
    inner: Mutex<Inner<V>>,
    ttl: Duration,
    max_total: usize,
    max_per_source: usize,
}

impl<V> PendingTable<V> {
    /// An empty table; entries live `ttl`.
    pub(crate) fn new(ttl: Duration, max_total: usize, max_per_source: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                by_state: HashMap::new(),
                by_source: HashMap::new(),
            }),
            ttl,
            max_total,
            max_per_source,
        }
    }

    /// Whether a launch from `source` would be taken now: checked before discovery, so a
    /// refused client costs no outbound request.
    pub(crate) fn admit(&self, source: Source, now: Instant) -> Result<(), Refused> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        self.room(&mut inner, source, now)
    }

    /// Remembers a started launch under its `state`, unless `source` or the table is full.
    pub(crate) fn insert(
        &self,
        source: Source,
        state: String,
        value: V,
        now: Instant,
    ) -> Result<(), Refused> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        self.room(&mut inner, source, now)?;
        inner
            .by_source
            .entry(source)
            .or_default()
            .push_back((now, state.clone()));
        inner.by_state.insert(
            state,
            Entry {
                value,
                source,
                created: now,
            },
        );
        Ok(())
    }

    /// Takes the launch started with `state` (single use): None when unknown, used or expired.
    pub(crate) fn take(&self, state: &str, now: Instant) -> Option<V> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let entry = inner.by_state.remove(state)?;
        if let Some(queue) = inner.by_source.get_mut(&entry.source) {
            queue.retain(|(_, s)| s != state);
            if queue.is_empty() {
                inner.by_source.remove(&entry.source);
            }
        }
        self.live(entry.created, now).then_some(entry.value)
    }

    fn live(&self, created: Instant, now: Instant) -> bool {
        now.saturating_duration_since(created) < self.ttl
    }

    /// Time until an entry created at `created` expires (at least 1 s, for `Retry-After`).
    fn left(&self, created: Instant, now: Instant) -> Duration {
        self.ttl
            .saturating_sub(now.saturating_duration_since(created))
            .max(Duration::from_secs(1))
    }

    fn room(&self, inner: &mut Inner<V>, source: Source, now: Instant) -> Result<(), Refused> {
        let Inner {
            by_state,
            by_source,
        } = inner;
        if let Some(queue) = by_source.get_mut(&source) {
            while queue.front().is_some_and(|(c, _)| !self.live(*c, now)) {
                if let Some((_, state)) = queue.pop_front() {
                    by_state.remove(&state);
                }
            }
            if queue.len() >= self.max_per_source {
                let oldest = queue.front().map_or(now, |(c, _)| *c);
                return Err(Refused::SourceFull {
                    retry_after: self.left(oldest, now),
                });
            }
            if queue.is_empty() {
                by_source.remove(&source);
            }
        }
        if by_state.len() >= self.max_total {
            by_state.retain(|_, e| now.saturating_duration_since(e.created) < self.ttl);
            by_source.retain(|_, queue| {
                queue.retain(|(created, _)| now.saturating_duration_since(*created) < self.ttl);
                !queue.is_empty()
            });
            if by_state.len() >= self.max_total {
                let oldest = by_state.values().map(|e| e.created).min().unwrap_or(now);
                return Err(Refused::Full {
                    retry_after: self.left(oldest, now),
                });
            }
        }
        Ok(())
    }
}

/// `Retry-After` seconds for `wait` (rounded up, at least 1).
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(600);

    fn src(ip: &str) -> Source {
        Source::of(Some(SocketAddr::new(ip.parse().unwrap(), 4000)))
    }

    #[test]
    fn one_source_is_capped_while_another_still_gets_in() {
        let table = PendingTable::new(TTL, 100, 3);
        let t0 = Instant::now();
        for i in 0..3 {
            let at = t0 + Duration::from_secs(i);
            table
                .insert(src("10.0.0.1"), format!("s{i}"), i, at)
                .unwrap();
        }
        let now = t0 + Duration::from_secs(10);
        assert_eq!(
            table.insert(src("10.0.0.1"), "s9".into(), 9, now),
            Err(Refused::SourceFull {
                retry_after: Duration::from_secs(590)
            })
        );
        assert!(table.admit(src("10.0.0.1"), now).is_err());
        table
            .insert(src("10.0.0.2"), "other".into(), 7, now)
            .unwrap();
        // A completed launch frees its slot, and is single use.
        assert_eq!(table.take("s1", now), Some(1));
        assert_eq!(table.take("s1", now), None);
        table.insert(src("10.0.0.1"), "s3".into(), 3, now).unwrap();
    }

    #[test]
    fn expired_launches_free_their_source_and_are_not_taken() {
        let table = PendingTable::new(TTL, 100, 2);
        let t0 = Instant::now();
        table.insert(src("10.0.0.1"), "a".into(), 1, t0).unwrap();
        table.insert(src("10.0.0.1"), "b".into(), 2, t0).unwrap();
        let later = t0 + TTL;
        assert_eq!(table.admit(src("10.0.0.1"), later), Ok(()));
        table.insert(src("10.0.0.1"), "c".into(), 3, later).unwrap();
        assert_eq!(table.take("a", later), None);
        assert_eq!(table.take("c", later), Some(3));
    }

    #[test]
    fn the_global_cap_holds_and_expired_entries_make_room() {
        let table = PendingTable::new(TTL, 2, 2);
        let t0 = Instant::now();
        table.insert(src("10.0.0.1"), "a".into(), 1, t0).unwrap();
        table
            .insert(
                src("10.0.0.2"),
                "b".into(),
                2,
                t0 + Duration::from_secs(100),
            )
            .unwrap();
        let now = t0 + Duration::from_secs(200);
        assert_eq!(
            table.insert(src("10.0.0.3"), "c".into(), 3, now),
            Err(Refused::Full {
                retry_after: Duration::from_secs(400)
            })
        );
        let later = t0 + TTL;
        table.insert(src("10.0.0.3"), "c".into(), 3, later).unwrap();
        assert_eq!(table.take("b", later), Some(2));
    }

    #[test]
    fn ipv6_sources_are_grouped_by_64_and_mapped_ipv4_is_ipv4() {
        assert_eq!(src("2001:db8:1:2:aaaa::1"), src("2001:db8:1:2:bbbb::9"));
        assert_ne!(src("2001:db8:1:2::1"), src("2001:db8:1:3::1"));
        assert_eq!(src("::ffff:192.0.2.7"), src("192.0.2.7"));
        assert_eq!(Source::of(None), Source::of(None));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(600)), 600);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
