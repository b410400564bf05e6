//! The evidence a promotion rests on: how a version scored in the shadow on this site's own
//! calls — how many scores, how often it would have alerted exactly when the active version
//! did, and, where outcomes are known, how well it ranked them against the active version on
//! the same calls.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::GovernanceSettings;
use crate::store::{ShadowScore, Store, StoreError};

/// What was measured about one version, and whether it meets the criteria.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub model: String,
    pub version: String,
    pub evaluated_at: DateTime<Utc>,
    /// The oldest shadow record read.
    pub window_start: DateTime<Utc>,
    /// Where the evidence comes from, in words.
    pub data: String,
    /// Shadow scores of the version in the window.
    pub shadow_scores: u64,
    /// Distinct patients (pseudonyms) among them.
    pub patients: u64,
    /// Share of its shadow scores that would have shown a warning or critical card.
    pub alert_rate: Option<f64>,
    /// Against the version that was active on the same calls.
    pub comparison: Option<Comparison>,
    /// Against outcomes, where a feed was imported for the model's event.
    pub outcomes: Option<OutcomeMetrics>,
    /// Each criterion with what it asked and what was measured.
    pub criteria: Vec<Criterion>,
    /// Every criterion met.
    pub passed: bool,
}

/// The candidate against the active version on the calls both scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub active_version: String,
    /// Calls both versions scored.
    pub pairs: u64,
    /// Pairs where both alert or neither does.
    pub agreed: u64,
    pub agreement: f64,
    /// Alert share of the active version on the pairs.
    pub active_alert_rate: f64,
    /// Alert share of the candidate on the pairs.
    pub candidate_alert_rate: f64,
    /// Mean absolute difference of the two risks.
    pub mean_abs_risk_difference: f64,
}

/// The candidate (and the active version) against known outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeMetrics {
    /// The outcome event (the model's name).
    pub event: String,
    /// Outcomes are complete up to here; later predictions are unlabelled.
    pub known_through: DateTime<Utc>,
    pub horizon_hours: f64,
    /// Shadow scores whose horizon ended before `known_through`.
    pub labelled: u64,
    /// Of those, followed by the event within the horizon.
    pub events: u64,
    /// AUROC of the candidate over the labelled scores.
    pub auroc: Option<f64>,
    /// Labelled calls the active version scored too.
    pub paired_labelled: u64,
    /// Events among them.
    pub paired_events: u64,
    /// AUROC of the candidate on those calls.
    pub paired_auroc: Option<f64>,
    /// AUROC of the active version on the same calls.
    pub active_auroc: Option<f64>,
}

/// One promotion criterion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Criterion {
    pub name: String,
    pub required: String,
    pub measured: String,
    pub met: bool,
}

impl Evaluation {
    /// The evaluation as a few lines of text (the command line's summary).
    pub fn text(&self) -> String {
        let mut out = format!(
            "{} {}: {} shadow scores of {} patients since {} ({})\n",
            self.model,
            self.version,
            self.shadow_scores,
            self.patients,
            self.window_start.format("%Y-%m-%d %H:%M UTC"),
            self.data
        );
        if let Some(rate) = self.alert_rate {
            out.push_str(&format!(
                "  would alert on {:.1} % of its scores\n",
                rate * 100.0
            ));
        }
        match &self.comparison {
            Some(c) => out.push_str(&format!(
                "  vs active {}: {} calls, agreement {:.3}, alert rate {:.3} vs {:.3}, mean |Δrisk| {:.4}\n",
                c.active_version,
                c.pairs,
                c.agreement,
                c.candidate_alert_rate,
                c.active_alert_rate,
                c.mean_abs_risk_difference
            )),
            None => out.push_str("  no active version scored the same calls\n"),
        }
        if let Some(o) = &self.outcomes {
            let show = |a: Option<f64>| a.map_or("n/a".to_owned(), |a| format!("{a:.3}"));
            out.push_str(&format!(
                "  outcomes ({}, known through {}): {} labelled, {} events, AUROC {}; on calls both scored: {} events, {} vs active {}\n",
                o.event,
                o.known_through.format("%Y-%m-%d %H:%M UTC"),
                o.labelled,
                o.events,
                show(o.auroc),
                o.paired_events,
                show(o.paired_auroc),
                show(o.active_auroc)
            ));
        }
        for c in &self.criteria {
            out.push_str(&format!(
                "  [{}] {}: {} (required {})\n",
                if c.met { "met" } else { "NOT MET" },
                c.name,
                c.measured,
                c.required
            ));
        }
        out.push_str(if self.passed {
            "  passed: may be promoted\n"
        } else {
            "  failed: may not be promoted\n"
        });
        out
    }
}

/// Whether an indicator is an alert (warning or critical).
fn alerts(indicator: Option<&str>) -> bool {
    matches!(indicator, Some("warning" | "critical"))
}

/// Evaluates `model` `version` (its outcome horizon `horizon_hours`) on the shadow records
/// of the configured window before `now`. Stores nothing.
pub async fn evaluate(
    store: &Store,
    model: &str,
    version: &str,
    horizon_hours: f64,
    settings: &GovernanceSettings,
    now: DateTime<Utc>,
) -> Result<Evaluation, StoreError> {
    let window = Duration::from_std(settings.window).unwrap_or(Duration::days(30));
    let window_start = now.checked_sub_signed(window).unwrap_or(now);
    let scores = store.shadow_scores(model, version, window_start).await?;
    let outcomes = match store.outcomes_through(model).await? {
        Some(through) => {
            let events = store.outcomes_since(model, window_start).await?;
            Some(outcome_metrics(
                model,
                &scores,
                &events,
                through,
                horizon_hours,
            ))
        }
        None => None,
    };
    Ok(assess(
        model,
        version,
        &scores,
        outcomes,
        settings,
        now,
        window_start,
    ))
}

/// The evaluation of these scores (pure: what [`evaluate`] read, judged).
pub fn assess(
    model: &str,
    version: &str,
    scores: &[ShadowScore],
    outcomes: Option<OutcomeMetrics>,
    settings: &GovernanceSettings,
    now: DateTime<Utc>,
    window_start: DateTime<Utc>,
) -> Evaluation {
    let n = scores.len() as u64;
    let patients = scores
        .iter()
        .filter_map(|s| s.patient_hash.as_deref())
        .collect::<std::collections::BTreeSet<_>>()
        .len() as u64;
    let alerting = scores
        .iter()
        .filter(|s| alerts(s.indicator.as_deref()))
        .count();
    let comparison = comparison(scores);
    let mut criteria = vec![Criterion {
        name: "shadow scores".into(),
        required: format!("at least {}", settings.min_shadow_scores),
        measured: n.to_string(),
        met: n >= settings.min_shadow_scores,
    }];
    criteria.push(match &comparison {
        Some(c) => Criterion {
            name: "agreement with the active version".into(),
            required: format!("at least {:.3}", settings.min_agreement),
            measured: format!(
                "{:.3} over {} calls (active {})",
                c.agreement, c.pairs, c.active_version
            ),
            met: c.agreement >= settings.min_agreement,
        },
        None => Criterion {
            name: "agreement with the active version".into(),
            required: format!("at least {:.3}", settings.min_agreement),
            measured: "no active version scored the same calls".into(),
            met: settings.min_agreement <= 0.0,
        },
    });
    criteria.push(outcome_criterion(outcomes.as_ref(), settings));
    let passed = criteria.iter().all(|c| c.met);
    Evaluation {
        model: model.to_owned(),
        version: version.to_owned(),
        evaluated_at: now,
        window_start,
        data: "this site's own shadow records (scores the version made silently on live calls)"
            .into(),
        shadow_scores: n,
        patients,
        alert_rate: (n > 0).then(|| alerting as f64 / n as f64),
        comparison,
        outcomes,
        criteria,
        passed,
    }
}

/// The candidate against the version most often active on the same calls.
fn comparison(scores: &[ShadowScore]) -> Option<Comparison> {
    let mut by_version: BTreeMap<&str, u64> = BTreeMap::new();
    for s in scores {
        if let (Some(v), Some(_)) = (s.active_version.as_deref(), s.active_risk) {
            *by_version.entry(v).or_default() += 1;
        }
    }
    let (active, _) = by_version.into_iter().max_by_key(|(_, n)| *n)?;
    let pairs: Vec<(&ShadowScore, f64)> = scores
        .iter()
        .filter(|s| s.active_version.as_deref() == Some(active))
        .filter_map(|s| s.active_risk.map(|r| (s, r)))
        .collect();
    let n = pairs.len() as f64;
    let count = |f: &dyn Fn(&ShadowScore) -> bool| pairs.iter().filter(|(s, _)| f(s)).count();
    let agreed =
        count(&|s| alerts(s.indicator.as_deref()) == alerts(s.active_indicator.as_deref()));
    Some(Comparison {
        active_version: active.to_owned(),
        pairs: pairs.len() as u64,
        agreed: agreed as u64,
        agreement: agreed as f64 / n,
        active_alert_rate: count(&|s| alerts(s.active_indicator.as_deref())) as f64 / n,
        candidate_alert_rate: count(&|s| alerts(s.indicator.as_deref())) as f64 / n,
        mean_abs_risk_difference: pairs.iter().map(|(s, a)| (s.risk - a).abs()).sum::<f64>() / n,
    })
}

/// Labels each score whose horizon ended by `through` (event of the same patient within the
/// horizon after the score) and measures both versions' ranking.
fn outcome_metrics(
    event: &str,
    scores: &[ShadowScore],
    events: &[(String, DateTime<Utc>)],
    through: DateTime<Utc>,
    horizon_hours: f64,
) -> OutcomeMetrics {
    let horizon = Duration::milliseconds((horizon_hours * 3_600_000.0).round() as i64);
    let mut by_patient: HashMap<&str, Vec<DateTime<Utc>>> = HashMap::new();
    for (hash, at) in events {
        by_patient.entry(hash.as_str()).or_default().push(*at);
    }
    let mut labelled: Vec<(f64, Option<f64>, bool)> = Vec::new();
    for s in scores {
        let (Some(hash), Ok(at)) = (
            s.patient_hash.as_deref(),
            DateTime::parse_from_rfc3339(&s.at).map(|t| t.with_timezone(&Utc)),
        ) else {
            continue;
        };
        let Some(end) = at.checked_add_signed(horizon) else {
            continue;
        };
        if end > through {
            continue;
        }
        let event = by_patient
            .get(hash)
            .is_some_and(|times| times.iter().any(|t| *t > at && *t <= end));
        labelled.push((s.risk, s.active_risk, event));
    }
    let all: Vec<(f64, bool)> = labelled.iter().map(|(r, _, e)| (*r, *e)).collect();
    let paired: Vec<(f64, f64, bool)> = labelled
        .iter()
        .filter_map(|(r, a, e)| a.map(|a| (*r, a, *e)))
        .collect();
    OutcomeMetrics {
        event: event.to_owned(),
        known_through: through,
        horizon_hours,
        labelled: all.len() as u64,
        events: all.iter().filter(|(_, e)| *e).count() as u64,
        auroc: auroc(&all),
        paired_labelled: paired.len() as u64,
        paired_events: paired.iter().filter(|(_, _, e)| *e).count() as u64,
        paired_auroc: auroc(&paired.iter().map(|(r, _, e)| (*r, *e)).collect::<Vec<_>>()),
        active_auroc: auroc(&paired.iter().map(|(_, a, e)| (*a, *e)).collect::<Vec<_>>()),
    }
}

/// The outcome criterion: with enough events on calls both versions scored, the candidate
/// may rank them at most `max_auroc_drop` worse than the active version; otherwise the
/// metrics are reported and the criterion says why it could not apply.
fn outcome_criterion(
    outcomes: Option<&OutcomeMetrics>,
    settings: &GovernanceSettings,
) -> Criterion {
    let required = format!(
        "AUROC at least the active version's − {:.3} on the same calls, once {} outcome events are known",
        settings.max_auroc_drop, settings.min_outcome_events
    );
    let (measured, met) = match outcomes {
        None => (
            "no outcomes imported for this model's event".to_owned(),
            true,
        ),
        Some(o) if o.paired_events < settings.min_outcome_events => (
            format!(
                "{} events on calls both versions scored (fewer than {}): reported, not judged",
                o.paired_events, settings.min_outcome_events
            ),
            true,
        ),
        Some(o) => match (o.paired_auroc, o.active_auroc) {
            (Some(candidate), Some(active)) => (
                format!(
                    "{candidate:.3} vs active {active:.3} over {} calls, {} events",
                    o.paired_labelled, o.paired_events
                ),
                candidate >= active - settings.max_auroc_drop,
            ),
            _ => (
                "every labelled call had the same outcome: no AUROC".to_owned(),
                true,
            ),
        },
    };
    Criterion {
        name: "outcomes".into(),
        required,
        measured,
        met,
    }
}

/// Area under the ROC curve (ties count half); `None` without both classes.
pub fn auroc(scored: &[(f64, bool)]) -> Option<f64> {
    let positives = scored.iter().filter(|(_, y)| *y).count();
    let negatives = scored.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut sorted: Vec<(f64, bool)> = scored.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Mann–Whitney: the sum of the positives' mid-ranks.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1].0 == sorted[i].0 {
            j += 1;
        }
        let mid_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += mid_rank * sorted[i..=j].iter().filter(|(_, y)| *y).count() as f64;
        i = j + 1;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(
        risk: f64,
        indicator: Option<&str>,
        active: Option<(f64, Option<&str>)>,
    ) -> ShadowScore {
        ShadowScore {
            patient_hash: Some(format!("p{}", (risk * 1000.0) as i64)),
            at: "2026-01-01T00:00:00.000Z".into(),
            risk,
            indicator: indicator.map(str::to_owned),
            active_version: active.map(|_| "1.0.0".to_owned()),
            active_risk: active.map(|(r, _)| r),
            active_indicator: active.and_then(|(_, i)| i.map(str::to_owned)),
        }
    }

    #[test]
    fn auroc_counts_ties_half_and_needs_both_classes() {
        assert_eq!(auroc(&[(0.1, false), (0.9, true)]), Some(1.0));
        assert_eq!(auroc(&[(0.9, false), (0.1, true)]), Some(0.0));
        assert_eq!(auroc(&[(0.5, false), (0.5, true)]), Some(0.5));
        assert_eq!(auroc(&[(0.5, true), (0.7, true)]), None);
        let a = auroc(&[(0.1, false), (0.4, true), (0.35, false), (0.8, true)]).unwrap();
        assert!((a - 1.0).abs() < 1e-12);
        let b = auroc(&[(0.1, false), (0.3, true), (0.35, false), (0.8, true)]).unwrap();
        assert!((b - 0.75).abs() < 1e-12);
    }

    #[test]
    fn too_few_scores_fail_and_agreement_is_measured_on_pairs() {
        let settings = GovernanceSettings {
            min_shadow_scores: 4,
            min_agreement: 0.6,
            ..GovernanceSettings::default()
        };
        let now = Utc::now();
        let scores = vec![
            score(0.9, Some("warning"), Some((0.8, Some("critical")))),
            score(0.1, None, Some((0.2, None))),
            score(0.7, Some("warning"), Some((0.1, None))),
        ];
        let e = assess("m", "2.0.0", &scores, None, &settings, now, now);
        assert!(!e.passed);
        assert!(!e.criteria[0].met, "3 scores < 4");
        let c = e.comparison.as_ref().unwrap();
        assert_eq!((c.pairs, c.agreed), (3, 2));
        assert!(e.criteria[1].met, "2/3 ≥ 0.6");
        let mut more = scores.clone();
        more.push(score(0.05, None, None));
        let e = assess("m", "2.0.0", &more, None, &settings, now, now);
        assert!(e.passed, "{:?}", e.criteria);
        assert_eq!(
            e.comparison.unwrap().pairs,
            3,
            "the unpaired score is no pair"
        );
    }

    #[test]
    fn outcomes_label_only_finished_horizons_and_judge_against_the_active_version() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mk = |i: usize, risk: f64, active: f64| ShadowScore {
            patient_hash: Some(format!("p{i}")),
            at: (t0 + Duration::hours(i as i64)).to_rfc3339(),
            risk,
            indicator: None,
            active_version: Some("1.0.0".into()),
            active_risk: Some(active),
            active_indicator: None,
        };
        // p0, p1 have events 2 h after their score; the candidate ranks them first, the
        // active version last.
        let scores = vec![
            mk(0, 0.9, 0.1),
            mk(1, 0.8, 0.2),
            mk(2, 0.1, 0.9),
            mk(3, 0.2, 0.8),
            mk(40, 0.5, 0.5),
        ];
        let events = vec![
            ("p0".to_owned(), t0 + Duration::hours(2)),
            ("p1".to_owned(), t0 + Duration::hours(3)),
            ("p2".to_owned(), t0 + Duration::hours(30)), // after p2's horizon: not its event
        ];
        let through = t0 + Duration::hours(24);
        let o = outcome_metrics("m", &scores, &events, through, 12.0);
        assert_eq!(
            (o.labelled, o.events),
            (4, 2),
            "the score at +40 h is not labelled yet"
        );
        assert_eq!(o.paired_auroc, Some(1.0));
        assert_eq!(o.active_auroc, Some(0.0));
        let settings = GovernanceSettings {
            min_outcome_events: 2,
            ..GovernanceSettings::default()
        };
        assert!(outcome_criterion(Some(&o), &settings).met);
        let worse = OutcomeMetrics {
            paired_auroc: Some(0.70),
            active_auroc: Some(0.75),
            ..o.clone()
        };
        assert!(!outcome_criterion(Some(&worse), &settings).met);
        let few = GovernanceSettings {
            min_outcome_events: 3,
            ..settings
        };
        assert!(
            outcome_criterion(Some(&worse), &few).met,
            "2 events < 3: reported only"
        );
    }
}
