//! Monitoring over time, per model version and week (what Epic's `seismometer` does for local
//! validation): the score distribution, each input's distribution against training (population
//! stability index), abstention and data-quality rates, the alert rate per unit, the override
//! rate by reason, and calibration against outcomes once they are known. A week that crosses a
//! threshold of `[governance.monitoring]` raises an alert: a line in the report and
//! `bedside_monitoring_alerts` in `/metrics`.
//!
//! The training distribution of an input is the manifest's mean and standard deviation (what
//! the model normalises with), read as a normal distribution: the PSI compares the week's
//! newest values with its deciles. Coded inputs (consciousness levels) have no PSI.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde::Serialize;

use super::MonitoringSettings;
use crate::features::FeatureSpec;
use crate::inference::{LoadedModel, Manifest};
use crate::store::{DataQuality, MonitoredPrediction, Store, StoreError};

/// Everything monitored, oldest week first.
#[derive(Debug, Clone, Serialize)]
pub struct Monitoring {
    pub generated_at: DateTime<Utc>,
    pub weeks: u32,
    pub versions: Vec<VersionWeeks>,
    pub alerts: Vec<MonitorAlert>,
}

/// One model version in one mode, week by week.
#[derive(Debug, Clone, Serialize)]
pub struct VersionWeeks {
    pub model: String,
    pub version: String,
    /// `active` (cards shown) or `shadow`.
    pub mode: String,
    pub weeks: Vec<Week>,
}

/// One week (Monday 00:00 UTC on) of one version.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Week {
    pub start: NaiveDate,
    pub predictions: u64,
    pub scored: u64,
    pub abstention_rate: Option<f64>,
    /// 10th, 50th and 90th percentile of the risk.
    pub risk_p10: Option<f64>,
    pub risk_p50: Option<f64>,
    pub risk_p90: Option<f64>,
    /// Share of predictions with an observation of an input left out (unit, status, value…).
    pub with_dropped_rate: Option<f64>,
    /// Share of predictions with a value read at the edge of the training range.
    pub with_clamped_rate: Option<f64>,
    /// Cards shown (shown + downgraded) and the rate per prediction, per unit.
    pub alerts_by_unit: BTreeMap<String, UnitAlerts>,
    pub cards_shown: u64,
    /// Overrides per reason code and their share of the cards shown.
    pub overrides_by_reason: BTreeMap<String, ReasonRate>,
    /// Population stability index of each input against training.
    pub psi: BTreeMap<String, f64>,
    /// Against outcomes, for predictions whose horizon ended before the feed's `through`.
    pub calibration: Option<Calibration>,
}

/// Alerts of one unit in one week.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UnitAlerts {
    pub predictions: u64,
    pub cards: u64,
    pub rate: f64,
}

/// Overrides for one reason.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReasonRate {
    pub overrides: u64,
    pub rate: f64,
}

/// Observed against expected outcomes.
#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    pub labelled: u64,
    pub events: u64,
    pub expected: f64,
    pub o_e: Option<f64>,
}

/// A threshold one week crossed.
#[derive(Debug, Clone, Serialize)]
pub struct MonitorAlert {
    pub model: String,
    pub version: String,
    pub mode: String,
    pub week: NaiveDate,
    /// `psi:<feature>`, `abstention`, `calibration`.
    pub metric: String,
    pub value: f64,
    pub threshold: String,
    pub message: String,
}

/// The Monday (UTC) of `t`'s week.
fn week_of(t: DateTime<Utc>) -> NaiveDate {
    let d = t.date_naive();
    d - Duration::days(i64::from(d.weekday().num_days_from_monday()))
}

/// What monitoring needs of a model version: the training distribution (manifest) and the
/// inputs (feature spec).
#[derive(Clone, Copy)]
pub struct ModelInfo<'a> {
    pub manifest: &'a Manifest,
    pub features: &'a FeatureSpec,
}

/// Monitors the last `settings.weeks` weeks before `now`, with `models` (the loaded versions:
/// their manifests give the training distribution and the horizon).
pub async fn monitor(
    store: &Store,
    models: &[std::sync::Arc<LoadedModel>],
    settings: &MonitoringSettings,
    now: DateTime<Utc>,
) -> Result<Monitoring, StoreError> {
    let first_week = week_of(now) - Duration::weeks(i64::from(settings.weeks) - 1);
    let since = first_week.and_hms_opt(0, 0, 0).map_or(now, |t| t.and_utc());
    let (predictions, feedback) = store.monitoring_rows(since).await?;
    let mut outcomes: HashMap<String, Feed> = HashMap::new();
    let names: std::collections::BTreeSet<&str> =
        predictions.iter().map(|p| p.model.as_str()).collect();
    for name in names {
        if let Some(through) = store.outcomes_through(name).await? {
            let mut by_patient: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
            for (hash, at) in store
                .outcomes_since(name, since - Duration::days(7))
                .await?
            {
                by_patient.entry(hash).or_default().push(at);
            }
            outcomes.insert(name.to_owned(), (through, by_patient));
        }
    }
    // Up to MAX_MONITORED rows, each with its data-quality JSON: off the async workers.
    let (models, settings) = (models.to_vec(), settings.clone());
    tokio::task::spawn_blocking(move || {
        let infos: Vec<ModelInfo<'_>> = models
            .iter()
            .map(|m| ModelInfo {
                manifest: &m.manifest,
                features: &m.features,
            })
            .collect();
        summarise(&predictions, &feedback, &outcomes, &infos, &settings, now)
    })
    .await
    .map_err(|e| StoreError::Malformed(format!("monitoring stopped: {e}")))
}

/// Outcome feed of one event: complete through, and onsets per patient pseudonym.
pub type Feed = (DateTime<Utc>, HashMap<String, Vec<DateTime<Utc>>>);

/// The weekly summaries and alerts of what [`monitor`] read (pure).
pub fn summarise(
    predictions: &[MonitoredPrediction],
    feedback: &[(String, String, Option<String>)],
    outcomes: &HashMap<String, Feed>,
    models: &[ModelInfo<'_>],
    settings: &MonitoringSettings,
    now: DateTime<Utc>,
) -> Monitoring {
    let mut overrides: HashMap<&str, Vec<&str>> = HashMap::new();
    for (card, outcome, reason) in feedback {
        if outcome == "overridden" {
            overrides
                .entry(card.as_str())
                .or_default()
                .push(reason.as_deref().unwrap_or("(no reason)"));
        }
    }
    type Key<'a> = (&'a str, &'a str, &'a str, NaiveDate);
    let mut groups: BTreeMap<Key<'_>, Vec<&MonitoredPrediction>> = BTreeMap::new();
    for p in predictions {
        let Ok(at) = DateTime::parse_from_rfc3339(&p.at) else {
            continue;
        };
        let week = week_of(at.with_timezone(&Utc));
        groups
            .entry((&p.model, &p.model_version, &p.mode, week))
            .or_default()
            .push(p);
    }
    let mut versions: BTreeMap<(String, String, String), Vec<Week>> = BTreeMap::new();
    let mut alerts = Vec::new();
    for ((model, version, mode, start), rows) in groups {
        let loaded = models
            .iter()
            .find(|m| m.manifest.name == model && m.manifest.version == version);
        let week = summarise_week(start, &rows, &overrides, outcomes.get(model), loaded);
        let mut alert = |metric: String, value: f64, threshold: String, message: String| {
            alerts.push(MonitorAlert {
                model: model.to_owned(),
                version: version.to_owned(),
                mode: mode.to_owned(),
                week: start,
                metric,
                value,
                threshold,
                message,
            })
        };
        if let Some(rate) = week
            .abstention_rate
            .filter(|r| *r > settings.abstention_alert)
        {
            alert(
                "abstention".into(),
                rate,
                format!("> {:.2}", settings.abstention_alert),
                format!("abstained on {:.0} % of calls", rate * 100.0),
            );
        }
        for (feature, psi) in &week.psi {
            if *psi > settings.psi_alert {
                alert(
                    format!("psi:{feature}"),
                    *psi,
                    format!("> {:.2}", settings.psi_alert),
                    format!("{feature} is distributed unlike training (PSI {psi:.2})"),
                );
            }
        }
        if let Some(c) = &week.calibration {
            if let Some(oe) = c.o_e.filter(|_| c.events >= settings.min_events) {
                if oe < settings.oe_low || oe > settings.oe_high {
                    alert(
                        "calibration".into(),
                        oe,
                        format!("outside {:.2}-{:.2}", settings.oe_low, settings.oe_high),
                        format!("observed/expected {oe:.2} over {} events", c.events),
                    );
                }
            }
        }
        versions
            .entry((model.to_owned(), version.to_owned(), mode.to_owned()))
            .or_default()
            .push(week);
    }
    Monitoring {
        generated_at: now,
        weeks: settings.weeks,
        versions: versions
            .into_iter()
            .map(|((model, version, mode), weeks)| VersionWeeks {
                model,
                version,
                mode,
                weeks,
            })
            .collect(),
        alerts,
    }
}

fn share(n: u64, of: u64) -> Option<f64> {
    (of > 0).then(|| n as f64 / of as f64)
}

fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(i).copied()
}

fn summarise_week(
    start: NaiveDate,
    rows: &[&MonitoredPrediction],
    overrides: &HashMap<&str, Vec<&str>>,
    feed: Option<&Feed>,
    loaded: Option<&ModelInfo<'_>>,
) -> Week {
    let n = rows.len() as u64;
    let mut risks: Vec<f64> = rows.iter().filter_map(|r| r.risk).collect();
    risks.sort_by(f64::total_cmp);
    let abstained = rows.iter().filter(|r| r.outcome == "abstained").count() as u64;
    let qualities: Vec<DataQuality> = rows
        .iter()
        .filter_map(|r| r.data_quality.as_deref())
        .filter_map(|q| serde_json::from_str(q).ok())
        .collect();
    let q = qualities.len() as u64;
    let mut week = Week {
        start,
        predictions: n,
        scored: risks.len() as u64,
        abstention_rate: share(abstained, n),
        risk_p10: percentile(&risks, 0.1),
        risk_p50: percentile(&risks, 0.5),
        risk_p90: percentile(&risks, 0.9),
        with_dropped_rate: share(
            qualities.iter().filter(|d| !d.dropped.is_empty()).count() as u64,
            q,
        ),
        with_clamped_rate: share(
            qualities.iter().filter(|d| !d.clamped.is_empty()).count() as u64,
            q,
        ),
        ..Week::default()
    };
    for r in rows {
        let unit = week
            .alerts_by_unit
            .entry(r.unit.clone().unwrap_or_else(|| "(no unit)".into()))
            .or_default();
        unit.predictions += 1;
        if matches!(r.outcome.as_str(), "shown" | "downgraded") {
            unit.cards += 1;
            week.cards_shown += 1;
            for reason in overrides.get(r.id.as_str()).into_iter().flatten() {
                week.overrides_by_reason
                    .entry((*reason).to_owned())
                    .or_default()
                    .overrides += 1;
            }
        }
    }
    for unit in week.alerts_by_unit.values_mut() {
        unit.rate = unit.cards as f64 / unit.predictions.max(1) as f64;
    }
    let cards = week.cards_shown;
    for r in week.overrides_by_reason.values_mut() {
        r.rate = r.overrides as f64 / cards.max(1) as f64;
    }
    if let Some(model) = loaded {
        week.psi = psi(model, &qualities);
        week.calibration = feed.map(|f| calibration(rows, f, model.manifest.output.horizon_hours));
    }
    week
}

/// The standard normal's deciles.
const NORMAL_DECILES: [f64; 9] = [
    -1.281_551_6,
    -0.841_621_2,
    -0.524_400_5,
    -0.253_347_1,
    0.0,
    0.253_347_1,
    0.524_400_5,
    0.841_621_2,
    1.281_551_6,
];

/// Fewest values of an input in a week for a PSI.
const MIN_PSI_VALUES: usize = 30;

/// PSI of each continuous input's newest values against the training mean and deviation.
fn psi(model: &ModelInfo<'_>, qualities: &[DataQuality]) -> BTreeMap<String, f64> {
    let m = &model.manifest.input;
    let mut out = BTreeMap::new();
    for (i, f) in model.features.features.iter().enumerate() {
        let (Some(mean), Some(std)) = (m.mean.get(i), m.std.get(i)) else {
            continue;
        };
        if !f.coded_values.is_empty() || *std <= 0.0 {
            continue;
        }
        let values: Vec<f64> = qualities
            .iter()
            .filter_map(|q| q.latest.get(&f.name))
            .copied()
            .collect();
        if values.len() < MIN_PSI_VALUES {
            continue;
        }
        let mut counts = [0usize; 10];
        for v in &values {
            let z = (v - mean) / std;
            counts[NORMAL_DECILES.iter().filter(|d| z > **d).count()] += 1;
        }
        let total = values.len() as f64;
        let index: f64 = counts
            .iter()
            .map(|c| {
                let actual = (*c as f64 / total).max(1e-4);
                (actual - 0.1) * (actual / 0.1).ln()
            })
            .sum();
        out.insert(f.name.clone(), index);
    }
    out
}

/// Observed against expected outcomes of the week's scored predictions whose horizon ended
/// before the feed's `through`.
fn calibration(
    rows: &[&MonitoredPrediction],
    (through, onsets): &Feed,
    horizon_hours: u32,
) -> Calibration {
    let horizon = Duration::hours(i64::from(horizon_hours));
    let (mut labelled, mut events, mut expected) = (0u64, 0u64, 0.0);
    for r in rows {
        let (Some(risk), Some(hash), Ok(at)) = (
            r.risk,
            r.patient_hash.as_deref(),
            DateTime::parse_from_rfc3339(&r.at),
        ) else {
            continue;
        };
        let at = at.with_timezone(&Utc);
        if at + horizon > *through {
            continue;
        }
        labelled += 1;
        expected += risk;
        if onsets
            .get(hash)
            .is_some_and(|times| times.iter().any(|t| *t > at && *t <= at + horizon))
        {
            events += 1;
        }
    }
    Calibration {
        labelled,
        events,
        expected,
        o_e: (expected > 0.0).then(|| events as f64 / expected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The midpoints (in z) of the standard normal's ten deciles.
    const MIDPOINTS: [f64; 10] = [
        -1.645, -1.036, -0.674, -0.385, -0.126, 0.126, 0.385, 0.674, 1.036, 1.645,
    ];

    fn row(
        i: usize,
        at: DateTime<Utc>,
        risk: Option<f64>,
        outcome: &str,
        spo2: f64,
    ) -> MonitoredPrediction {
        let quality = DataQuality {
            used: 40,
            latest: [
                ("spo2".to_owned(), spo2),
                (
                    "heart_rate".to_owned(),
                    78.962514 + 14.256289 * MIDPOINTS[i % 10],
                ),
            ]
            .into(),
            ..DataQuality::default()
        };
        MonitoredPrediction {
            id: format!("p{i}"),
            at: at.to_rfc3339(),
            model: "deterioration".into(),
            model_version: "4.0.1".into(),
            mode: "active".into(),
            unit: Some(if i.is_multiple_of(2) { "4B" } else { "5C" }.into()),
            patient_hash: Some(format!("h{i}")),
            risk,
            outcome: outcome.into(),
            data_quality: Some(serde_json::to_string(&quality).unwrap_or_default()),
        }
    }

    #[test]
    fn weeks_show_drift_abstention_calibration_and_overrides_and_alert_when_crossed() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/deterioration");
        let manifest = Manifest::load(&root.join("4.0.1/manifest.toml")).unwrap();
        let features = FeatureSpec::load(&root.join("features.toml")).unwrap();
        let info = ModelInfo {
            manifest: &manifest,
            features: &features,
        };
        let now = DateTime::parse_from_rfc3339("2026-12-09T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let last_week = now - Duration::days(7);
        let mut rows = Vec::new();
        // Last week: SpO2 as in training, every call scored, risk 0.1, 10 of 100 had the event.
        for i in 0..100 {
            let spo2 = 94.846743 + 4.087261 * MIDPOINTS[i % 10];
            rows.push(row(
                i,
                last_week,
                Some(0.1),
                if i < 30 { "shown" } else { "below_threshold" },
                spo2,
            ));
        }
        // This week: SpO2 all around 80 %, a third abstained.
        for i in 100..160 {
            let outcome = if i < 120 {
                "abstained"
            } else {
                "below_threshold"
            };
            let risk = (i >= 120).then_some(0.1);
            rows.push(row(i, now - Duration::hours(1), risk, outcome, 80.0));
        }
        let feedback = vec![
            (
                "p0".to_owned(),
                "overridden".to_owned(),
                Some("already-aware".to_owned()),
            ),
            (
                "p2".to_owned(),
                "overridden".to_owned(),
                Some("already-aware".to_owned()),
            ),
            ("p4".to_owned(), "accepted".to_owned(), None),
        ];
        // Outcomes known through now: last week's 12 h horizons are over, this week's are not.
        let onsets: HashMap<String, Vec<DateTime<Utc>>> = (0..10)
            .map(|i| (format!("h{i}"), vec![last_week + Duration::hours(2)]))
            .collect();
        let outcomes = HashMap::from([("deterioration".to_owned(), (now, onsets))]);
        let settings = MonitoringSettings {
            min_events: 5,
            ..MonitoringSettings::default()
        };
        let m = summarise(&rows, &feedback, &outcomes, &[info], &settings, now);
        let weeks = &m.versions[0].weeks;
        assert_eq!(weeks.len(), 2);
        let (before, after) = (&weeks[0], &weeks[1]);
        assert_eq!(before.predictions, 100);
        assert!(before.psi["spo2"] < 0.1, "{:?}", before.psi);
        assert!(after.psi["spo2"] > 1.0, "{:?}", after.psi);
        assert!((after.abstention_rate.unwrap() - 20.0 / 60.0).abs() < 1e-9);
        assert_eq!(before.cards_shown, 30);
        assert_eq!(before.overrides_by_reason["already-aware"].overrides, 2);
        assert_eq!(before.alerts_by_unit["4B"].cards, 15);
        let c = before.calibration.as_ref().unwrap();
        assert_eq!((c.labelled, c.events), (100, 10));
        assert!(
            (c.o_e.unwrap() - 1.0).abs() < 1e-9,
            "10 events, 100 × 0.1 expected"
        );
        assert_eq!(
            after.calibration.as_ref().unwrap().labelled,
            0,
            "horizons not over"
        );
        let metrics: Vec<&str> = m.alerts.iter().map(|a| a.metric.as_str()).collect();
        assert!(
            metrics.contains(&"psi:spo2") && metrics.contains(&"abstention"),
            "{metrics:?}"
        );
        assert!(
            m.alerts.iter().all(|a| a.week == week_of(now)),
            "last week crossed nothing"
        );
        let html = super::super::monitor_html::section(&m);
        assert!(html.contains("<svg") && html.contains("psi:spo2"));
    }
}
