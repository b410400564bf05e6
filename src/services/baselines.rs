//! The bedside scores a service shows beside its model (`baselines = [...]` in its TOML), read
//! from the same measurements the model saw, so a clinician can compare the two.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::cards::BaselineReport;
use crate::features::news2::{self, SpO2Scale, Vitals};
use crate::features::{kdigo, qsofa, sirs, FeatureMatrix, FeatureSpec};

/// A deterministic score a service can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Baseline {
    News2,
    Qsofa,
    Sirs,
    Kdigo,
}

impl Baseline {
    /// Summary placeholders this baseline fills, with their widest possible value (for the
    /// start-up check that a summary stays under 140 characters).
    pub fn placeholders(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::News2 => &[("news2", "20"), ("news2_band", "low-medium")],
            Self::Qsofa => &[("qsofa", "3")],
            Self::Sirs => &[("sirs", "4")],
            Self::Kdigo => &[("kdigo_stage", "unknown")],
        }
    }
}

/// Computes `which` from the window's measurements; vital signs and laboratory values measured
/// before `recent` count as not recorded (a score describes the patient now). `spo2_scale`:
/// scale 2 for patients with hypercapnic respiratory failure. `on_oxygen`: NEWS2 "air or
/// oxygen" from O2 flow / FiO2 ([`crate::features::oxygen::on_oxygen`]), `None` when not recorded.
/// Consciousness counts ACVPU and GCS alike (the feature's concept reads both).
pub fn compute(
    which: &[Baseline],
    spec: &FeatureSpec,
    matrix: &FeatureMatrix,
    recent: DateTime<Utc>,
    spo2_scale: SpO2Scale,
    on_oxygen: Option<bool>,
) -> BaselineReport {
    let vitals = Vitals {
        spo2_scale,
        on_oxygen,
        ..Vitals::latest(spec, matrix, recent)
    };
    let mut report = BaselineReport::default();
    for b in which {
        match b {
            Baseline::News2 => {
                let s = news2::score(&vitals);
                report.values.push(("news2", s.total.to_string()));
                report
                    .values
                    .push(("news2_band", s.band.as_str().to_owned()));
                let mut line = format!(
                    "**NEWS2 {} ({} clinical risk)**{}",
                    s.total,
                    s.band.as_str(),
                    parts(&s.parts)
                );
                if !s.missing.is_empty() {
                    line += &format!(". Not recorded, scored 0: {}", s.missing.join(", "));
                }
                line += &format!(". SpO2 scale {}.", s.scale.number());
                report.lines.push(line);
            }
            Baseline::Qsofa => {
                let s = qsofa::score(&qsofa::Inputs::from(&vitals));
                report.values.push(("qsofa", s.total.to_string()));
                report.lines.push(screen(
                    "qSOFA",
                    s.total,
                    3,
                    s.positive,
                    s.is_undetermined(),
                    &s.parts,
                    &s.missing,
                ));
            }
            Baseline::Sirs => {
                let wbc = spec
                    .index_of("wbc")
                    .and_then(|f| matrix.latest(f))
                    .filter(|m| m.time >= recent)
                    .map(|m| m.value);
                let s = sirs::score(&sirs::Inputs {
                    wbc,
                    ..sirs::Inputs::from(&vitals)
                });
                report.values.push(("sirs", s.total.to_string()));
                report.lines.push(screen(
                    "SIRS",
                    s.total,
                    4,
                    s.positive,
                    s.is_undetermined(),
                    &s.parts,
                    &s.missing,
                ));
            }
            Baseline::Kdigo => {
                let series: Vec<(DateTime<Utc>, f64)> = spec
                    .index_of("creatinine")
                    .map(|f| {
                        matrix
                            .measurements
                            .iter()
                            .filter(|m| m.feature == f)
                            .map(|m| (m.time, m.value))
                            .collect()
                    })
                    .unwrap_or_default();
                let s = kdigo::stage(&series, matrix.window_end, false);
                let stage = s
                    .stage
                    .map_or_else(|| "unknown".to_owned(), |st| st.to_string());
                report.values.push(("kdigo_stage", stage.clone()));
                let mut line = format!("**KDIGO creatinine stage {stage}**");
                if let (Some(latest), Some(base)) = (s.latest, s.baseline) {
                    line += &format!(
                        ": latest {:.2} mg/dL, baseline {:.2} mg/dL (×{:.2})",
                        latest.mg_dl,
                        base.mg_dl,
                        latest.mg_dl / base.mg_dl
                    );
                }
                if !s.criteria.is_empty() {
                    let words: Vec<&str> = s.criteria.iter().map(|c| c.as_str()).collect();
                    line += &format!("; met: {}", words.join(", "));
                }
                if let Some(why) = s.not_staged {
                    line += &format!(" ({})", why.as_str());
                }
                line.push('.');
                report.lines.push(line);
            }
        }
    }
    report
}

fn parts(parts: &[(&str, u8)]) -> String {
    let scored: Vec<String> = parts
        .iter()
        .filter(|(_, p)| *p > 0)
        .map(|(n, p)| format!("{n} {p}"))
        .collect();
    if scored.is_empty() {
        String::new()
    } else {
        format!(": {}", scored.join(", "))
    }
}

fn screen(
    name: &str,
    total: u8,
    of: u8,
    positive: bool,
    undetermined: bool,
    met: &[(&str, u8)],
    missing: &[&str],
) -> String {
    let verdict = if positive {
        "positive"
    } else if undetermined {
        "not determined (criteria missing)"
    } else {
        "negative"
    };
    let mut line = format!("**{name} {total}/{of} ({verdict})**{}", parts(met));
    if !missing.is_empty() {
        line += &format!(". Not recorded: {}", missing.join(", "));
    }
    line.push('.');
    line
}
