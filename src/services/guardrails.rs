//! Whether a scored card reaches the clinician: suppression after a recent card (unless the
//! risk escalates), a longer silence after "already aware", the unit's alert budget per shift,
//! and one card per group of services firing on the same evidence. Every decision reads the
//! prediction record, so it holds across restarts and replicas sharing a store.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Duration as ChronoDuration, Timelike, Utc};

use super::policy::{AlertBudget, AlertPolicy};
use crate::cds::wire::Indicator;
use crate::store::{Scope, Store, StoreError};

/// What happens to a card that passed the thresholds.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Show(Indicator),
    /// Shown as info: the unit's warning/critical budget for this shift is spent.
    Downgrade {
        reason: String,
    },
    Suppress {
        reason: String,
    },
    Deduplicate {
        reason: String,
    },
}

/// The identity a decision is about.
pub struct Subject<'a> {
    /// Whose patient and unit (client, tenant, FHIR server): another EHR's cards and
    /// overrides never count.
    pub scope: &'a Scope,
    pub service_id: &'a str,
    pub patient_id: Option<&'a str>,
    pub unit: &'a str,
    pub now: DateTime<Utc>,
}

/// Suppression and budget for a card of `indicator`.
pub async fn decide(
    policy: &AlertPolicy,
    store: &Store,
    who: &Subject<'_>,
    indicator: Indicator,
) -> Result<Verdict, StoreError> {
    if let Some(patient) = who.patient_id {
        if let Some(reason) = suppression(policy, store, who, patient, indicator).await? {
            return Ok(Verdict::Suppress { reason });
        }
    }
    if let Some(budget) = &policy.budget {
        if indicator >= Indicator::Warning {
            let since = shift_start(budget, who.now);
            let shown = store.alerts_shown(who.scope, who.unit, since).await?;
            if shown >= i64::from(budget.per_shift) {
                return Ok(Verdict::Downgrade {
                    reason: format!(
                        "shown as information: {} has had {shown} warning or critical cards this shift (budget {})",
                        who.unit, budget.per_shift
                    ),
                });
            }
        }
    }
    Ok(Verdict::Show(indicator))
}

/// The record keys a decision reads and then adds to, which [`Store::lock_decision`] holds
/// until the decision is on record: the patient (suppression, "already aware"), the unit
/// (budget, for a warning or critical card) and the call within a dedup `group`. Each is
/// scoped to its client, tenant and FHIR server, like the records themselves.
pub fn decision_keys(
    policy: &AlertPolicy,
    who: &Subject<'_>,
    indicator: Indicator,
    group_call: Option<(&str, &str)>,
) -> Vec<String> {
    let scope = format!(
        "{}\u{1f}{}\u{1f}{}",
        who.scope.client_iss, who.scope.tenant, who.scope.fhir_server
    );
    let mut keys = Vec::new();
    let reads_patient = policy.suppress_for.is_some() || policy.already_aware_for.is_some();
    if let (Some(patient), true) = (who.patient_id, reads_patient) {
        keys.push(format!(
            "patient\u{1f}{scope}\u{1f}{}\u{1f}{patient}",
            who.service_id
        ));
    }
    if policy.budget.is_some() && indicator >= Indicator::Warning {
        // As the budget counts: per client, tenant and unit (any FHIR server).
        keys.push(format!(
            "unit\u{1f}{}\u{1f}{}\u{1f}{}",
            who.scope.client_iss, who.scope.tenant, who.unit
        ));
    }
    if let Some((group, hook_instance)) = group_call {
        keys.push(call_lock_key(who.scope, group, hook_instance));
    }
    keys
}

/// The decision key of one call within dedup `group`: the group's services decide it one at
/// a time.
pub fn call_lock_key(scope: &Scope, group: &str, hook_instance: &str) -> String {
    // As calls are keyed ([`Scope::call_key`]): client, tenant and hookInstance.
    format!("call\u{1f}{group}\u{1f}{}", scope.call_key(hook_instance))
}

async fn suppression(
    policy: &AlertPolicy,
    store: &Store,
    who: &Subject<'_>,
    patient: &str,
    indicator: Indicator,
) -> Result<Option<String>, StoreError> {
    if let Some(window) = policy.already_aware_for.and_then(to_chrono) {
        let since = who.now - window;
        if let Some(at) = store
            .last_override(
                who.scope,
                who.service_id,
                patient,
                &policy.already_aware_reason,
                since,
            )
            .await?
        {
            return Ok(Some(format!(
                "the clinician said \"{}\" at {} (quiet for {} h)",
                policy.already_aware_reason,
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                window.num_hours()
            )));
        }
    }
    let Some(window) = policy.suppress_for.and_then(to_chrono) else {
        return Ok(None);
    };
    let Some(last) = store
        .last_shown(who.scope, who.service_id, patient, who.now - window)
        .await?
    else {
        return Ok(None);
    };
    let last_indicator = last.indicator.as_deref().map(Indicator::parse_or_info);
    if last_indicator.is_some_and(|l| indicator > l) {
        return Ok(None); // escalation: warning → critical is always shown
    }
    Ok(Some(format!(
        "a card was shown at {} (quiet for {} h unless the risk escalates)",
        last.at,
        window.num_hours()
    )))
}

fn to_chrono(d: std::time::Duration) -> Option<ChronoDuration> {
    ChronoDuration::from_std(d).ok()
}

/// Start of the shift containing `now`: shifts of `budget.shift` from the start hour (UTC).
pub fn shift_start(budget: &AlertBudget, now: DateTime<Utc>) -> DateTime<Utc> {
    let shift_h = (budget.shift.as_secs() / 3600).max(1) as i64;
    let hours_since =
        (i64::from(now.hour()) - i64::from(budget.shift_start_hour_utc)).rem_euclid(24);
    let into_shift = hours_since % shift_h;
    let hour_start = now
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(now);
    hour_start - ChronoDuration::hours(into_shift)
}

/// (group, client, tenant, hookInstance): one EHR's call never meets another's.
type CallKey = (String, String, String, String);

fn call_key(group: &str, scope: &Scope, hook_instance: &str) -> CallKey {
    (
        group.to_owned(),
        scope.client_iss.clone(),
        scope.tenant.clone(),
        hook_instance.to_owned(),
    )
}

/// How long this process remembers the cards a call showed, for its group peers' calls.
const SHOWN_KEPT: std::time::Duration = std::time::Duration::from_secs(120);
/// Most calls remembered at once: the oldest are forgotten first, so memory stays bounded
/// whatever callers send.
const SHOWN_MAX_CALLS: usize = 10_000;

/// Remembers which cards each call showed on which observations, so a group peer's dedup
/// decision needs no database read (one process; replicas sharing a PostgreSQL store also
/// read the record). Decisions themselves are serialised by [`decision_keys`].
#[derive(Default)]
pub struct ShownInCalls {
    shown: Mutex<ShownCards>,
}

/// Cards shown per call: by call, the services and the FHIR references their tensors held.
#[derive(Default)]
struct ShownCards {
    by_call: HashMap<CallKey, Vec<(String, Vec<String>)>>,
    /// Calls in the order first remembered, for expiry.
    order: std::collections::VecDeque<(std::time::Instant, CallKey)>,
}

impl ShownCards {
    fn expire(&mut self, now: std::time::Instant) {
        while let Some((at, _)) = self.order.front() {
            let stale = now.duration_since(*at) > SHOWN_KEPT;
            if !stale && self.order.len() <= SHOWN_MAX_CALLS {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                self.by_call.remove(&key);
            }
        }
    }
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl ShownInCalls {
    /// Remembers that `service_id` showed a card in this call on the observations `refs`.
    pub fn remember_shown(
        &self,
        group: &str,
        scope: &Scope,
        hook_instance: &str,
        service_id: &str,
        refs: Vec<String>,
    ) {
        let now = std::time::Instant::now();
        let key = call_key(group, scope, hook_instance);
        let mut shown = locked(&self.shown);
        shown.expire(now);
        let entry = shown.by_call.entry(key.clone()).or_default();
        let first = entry.is_empty();
        // A repeated call (a retry) replaces its service's entry: one per service and call.
        match entry.iter_mut().find(|(s, _)| s == service_id) {
            Some(same) => same.1 = refs,
            None => entry.push((service_id.to_owned(), refs)),
        }
        if first {
            shown.order.push_back((now, key));
        }
    }

    /// Another service of `group` that showed a card in this call on any of `mine`, if any.
    pub fn shown_by_peer(
        &self,
        group: &str,
        scope: &Scope,
        hook_instance: &str,
        service_id: &str,
        mine: &[String],
    ) -> Option<String> {
        let mut shown = locked(&self.shown);
        shown.expire(std::time::Instant::now());
        let cards = shown.by_call.get(&call_key(group, scope, hook_instance))?;
        let mine: std::collections::HashSet<&str> = mine.iter().map(String::as_str).collect();
        cards
            .iter()
            .find(|(peer, refs)| {
                peer != service_id && refs.iter().any(|r| mine.contains(r.as_str()))
            })
            .map(|(peer, _)| peer.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn shown_cards_are_found_by_peers_only_and_stay_bounded() {
        let locks = ShownInCalls::default();
        let scope = Scope::new(Some("https://ehr.example"), Some("t1"), None);
        let other = Scope::new(Some("https://ehr.example"), Some("t2"), None);
        let refs = vec!["Observation/1".to_owned(), "Observation/2".to_owned()];
        locks.remember_shown("g", &scope, "h1", "deterioration", refs.clone());
        let peer = |scope: &Scope, hook: &str, me: &str, mine: &[String]| {
            locks.shown_by_peer("g", scope, hook, me, mine)
        };
        assert_eq!(
            peer(&scope, "h1", "sepsis-screen", &["Observation/2".to_owned()]),
            Some("deterioration".to_owned())
        );
        // Not itself, not on other observations, not another tenant's or call's.
        assert_eq!(peer(&scope, "h1", "deterioration", &refs), None);
        assert_eq!(
            peer(&scope, "h1", "sepsis-screen", &["Observation/9".to_owned()]),
            None
        );
        assert_eq!(peer(&other, "h1", "sepsis-screen", &refs), None);
        assert_eq!(peer(&scope, "h2", "sepsis-screen", &refs), None);
        // A retry of the same call replaces, not adds.
        for _ in 0..3 {
            locks.remember_shown("g", &scope, "h1", "deterioration", refs.clone());
        }
        assert_eq!(
            locked(&locks.shown).by_call[&call_key("g", &scope, "h1")].len(),
            1
        );
        // Bounded: the oldest calls are forgotten first.
        for i in 0..SHOWN_MAX_CALLS + 5 {
            locks.remember_shown("g", &scope, &format!("x{i}"), "deterioration", Vec::new());
        }
        let shown = locked(&locks.shown);
        assert!(
            shown.by_call.len() <= SHOWN_MAX_CALLS + 1,
            "{}",
            shown.by_call.len()
        );
        assert!(!shown.by_call.contains_key(&call_key("g", &scope, "h1")));
    }

    #[test]
    fn shifts_start_at_the_configured_hour() {
        let budget = AlertBudget {
            per_shift: 3,
            shift: Duration::from_secs(12 * 3600),
            shift_start_hour_utc: 7,
        };
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            shift_start(&budget, at("2026-03-01T08:30:00Z")),
            at("2026-03-01T07:00:00Z")
        );
        assert_eq!(
            shift_start(&budget, at("2026-03-01T18:59:59Z")),
            at("2026-03-01T07:00:00Z")
        );
        assert_eq!(
            shift_start(&budget, at("2026-03-01T19:00:00Z")),
            at("2026-03-01T19:00:00Z")
        );
        assert_eq!(
            shift_start(&budget, at("2026-03-02T03:10:00Z")),
            at("2026-03-01T19:00:00Z")
        );
        assert_eq!(
            shift_start(&budget, at("2026-03-02T06:59:00Z")),
            at("2026-03-01T19:00:00Z")
        );
    }
}
