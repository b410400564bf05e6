//! NEWS2 (Royal College of Physicians, National Early Warning Score 2, 2017), SpO2 scales 1
//! and 2.
//!
//! Deterministic and shown beside the model's risk so clinicians can compare it with the score
//! they already use. Bands are the RCP chart's; values are rounded the way the chart is read
//! (whole numbers, half away from zero; temperature to one decimal). SpO2 scale 2 is the RCP
//! chart's scale for patients with hypercapnic respiratory failure and a prescribed target of
//! 88–92%; a clinician chooses it, so it is never inferred from the data: [`Vitals::spo2_scale`]
//! defaults to scale 1 and the result and the card name the scale used.
//! `models/baselines.py` is the Python port; `tests/models/baselines_parity.rs` holds the two equal.

use chrono::{DateTime, Utc};

use super::{FeatureMatrix, FeatureSpec};

/// Which SpO2 scale of the RCP chart scores oxygen saturation.
///
/// Scale 2 exists because a patient with hypercapnic respiratory failure (e.g. COPD) is kept at
/// 88–92% on purpose: scale 1 would give them 3 points for a saturation that is on target, and
/// points for over-oxygenation on supplemental oxygen instead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SpO2Scale {
    /// The default scale, for everyone not prescribed a 88–92% target.
    #[default]
    Scale1,
    /// Hypercapnic respiratory failure with a prescribed 88–92% target, chosen by a clinician.
    Scale2,
}

impl SpO2Scale {
    /// The scale's number as the chart prints it (1 or 2), for cards and the Python port.
    pub fn number(self) -> u8 {
        match self {
            Self::Scale1 => 1,
            Self::Scale2 => 2,
        }
    }
}

/// Latest value of each NEWS2 parameter, `None` when not recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Vitals {
    pub respiratory_rate: Option<f64>,
    pub spo2: Option<f64>,
    /// `Some(true)` when on supplemental oxygen; `None` when not recorded (scored as air).
    pub on_oxygen: Option<bool>,
    pub systolic_bp: Option<f64>,
    pub heart_rate: Option<f64>,
    /// `Some(false)` for new confusion, voice, pain or unresponsive (CVPU).
    pub alert: Option<bool>,
    /// Degrees Celsius.
    pub temperature: Option<f64>,
    /// The SpO2 scale to score [`Vitals::spo2`] on; scale 1 unless a clinician prescribed scale 2.
    pub spo2_scale: SpO2Scale,
}

impl Vitals {
    /// The latest in-window value of each feature whose `features.toml` name is a NEWS2
    /// parameter (`respiratory_rate`, `spo2`, `systolic_bp`, `heart_rate`,
    /// `consciousness_not_alert` or `consciousness`, `temperature`; consciousness reads ACVPU
    /// and GCS alike through its terminology concept). Oxygen therapy is no model's feature: it is `None` here, and
    /// callers set it from the observations ([`super::oxygen::on_oxygen`]: O2 flow, FiO2). No
    /// feature says which SpO2 scale was prescribed, so it is scale 1 (callers set scale 2 from
    /// the Conditions). Values measured before `not_before` are treated as not recorded.
    pub fn latest(spec: &FeatureSpec, matrix: &FeatureMatrix, not_before: DateTime<Utc>) -> Self {
        let latest = |name: &str| {
            spec.index_of(name)
                .and_then(|f| matrix.latest(f))
                .filter(|m| m.time >= not_before)
                .map(|m| m.value)
        };
        Self {
            respiratory_rate: latest("respiratory_rate"),
            spo2: latest("spo2"),
            on_oxygen: None,
            systolic_bp: latest("systolic_bp"),
            heart_rate: latest("heart_rate"),
            // `consciousness_not_alert` (0 alert, 1 not) or `consciousness` (the ACVPU level,
            // 0 alert to 4 unresponsive: the foundation model's spec).
            alert: latest("consciousness_not_alert")
                .or_else(|| latest("consciousness"))
                .map(|v| v < 0.5),
            temperature: latest("temperature"),
            spo2_scale: SpO2Scale::Scale1,
        }
    }
}

/// NEWS2 clinical risk bands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RiskBand {
    Low,
    /// Aggregate 0–4 but a single parameter scored 3.
    LowMedium,
    Medium,
    High,
}

impl RiskBand {
    /// Words used on cards.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::LowMedium => "low-medium",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

/// A computed NEWS2.
#[derive(Debug, Clone, PartialEq)]
pub struct News2 {
    pub total: u8,
    /// `(parameter, points)` for each parameter that was recorded.
    pub parts: Vec<(&'static str, u8)>,
    /// Parameters not recorded (scored 0, which can understate risk).
    pub missing: Vec<&'static str>,
    pub band: RiskBand,
    /// The SpO2 scale the score used, so a card never leaves it to be guessed.
    pub scale: SpO2Scale,
}

impl News2 {
    /// Whether all seven parameters were recorded.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }
}

/// Scores `v`. Missing parameters score 0 and are listed in [`News2::missing`].
pub fn score(v: &Vitals) -> News2 {
    let mut parts = Vec::new();
    let mut missing = Vec::new();
    let mut add = |name: &'static str, points: Option<u8>| match points {
        Some(p) => parts.push((name, p)),
        None => missing.push(name),
    };
    add(
        "respiratory rate",
        v.respiratory_rate.map(|x| respiration(x.round())),
    );
    let on_oxygen = v.on_oxygen.unwrap_or(false);
    add(
        "SpO2",
        v.spo2.map(|x| match v.spo2_scale {
            SpO2Scale::Scale1 => spo2_scale1(x.round()),
            SpO2Scale::Scale2 => spo2_scale2(x.round(), on_oxygen),
        }),
    );
    add("air or oxygen", v.on_oxygen.map(|o| if o { 2 } else { 0 }));
    add("systolic BP", v.systolic_bp.map(|x| systolic(x.round())));
    add("pulse", v.heart_rate.map(|x| pulse(x.round())));
    add("consciousness", v.alert.map(|a| if a { 0 } else { 3 }));
    add(
        "temperature",
        v.temperature
            .map(|x| temperature((x * 10.0).round() / 10.0)),
    );
    let total: u8 = parts.iter().map(|(_, p)| p).sum();
    let any_three = parts.iter().any(|(_, p)| *p == 3);
    let band = match total {
        t if t >= 7 => RiskBand::High,
        5 | 6 => RiskBand::Medium,
        _ if any_three => RiskBand::LowMedium,
        _ => RiskBand::Low,
    };
    News2 {
        total,
        parts,
        missing,
        band,
        scale: v.spo2_scale,
    }
}

fn respiration(x: f64) -> u8 {
    match x {
        x if x <= 8.0 => 3,
        x if x <= 11.0 => 1,
        x if x <= 20.0 => 0,
        x if x <= 24.0 => 2,
        _ => 3,
    }
}

fn spo2_scale1(x: f64) -> u8 {
    match x {
        x if x <= 91.0 => 3,
        x if x <= 93.0 => 2,
        x if x <= 95.0 => 1,
        _ => 0,
    }
}

/// RCP 2017 SpO2 scale 2. 88–92% is the target, and so is 93% or more on air; on oxygen, 93% or
/// more means too much oxygen for a patient at risk of hypercapnia and scores upwards. Oxygen not
/// recorded is read as air (that parameter is listed as missing).
fn spo2_scale2(x: f64, on_oxygen: bool) -> u8 {
    match x {
        x if x <= 83.0 => 3,
        x if x <= 85.0 => 2,
        x if x <= 87.0 => 1,
        x if x <= 92.0 => 0,
        _ if !on_oxygen => 0,
        x if x <= 94.0 => 1,
        x if x <= 96.0 => 2,
        _ => 3,
    }
}

fn systolic(x: f64) -> u8 {
    match x {
        x if x <= 90.0 => 3,
        x if x <= 100.0 => 2,
        x if x <= 110.0 => 1,
        x if x <= 219.0 => 0,
        _ => 3,
    }
}

fn pulse(x: f64) -> u8 {
    match x {
        x if x <= 40.0 => 3,
        x if x <= 50.0 => 1,
        x if x <= 90.0 => 0,
        x if x <= 110.0 => 1,
        x if x <= 130.0 => 2,
        _ => 3,
    }
}

fn temperature(x: f64) -> u8 {
    match x {
        x if x <= 35.0 => 3,
        x if x <= 36.0 => 1,
        x if x <= 38.0 => 0,
        x if x <= 39.0 => 1,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(rr: f64, spo2: f64, o2: bool, sbp: f64, hr: f64, alert: bool, t: f64) -> Vitals {
        Vitals {
            respiratory_rate: Some(rr),
            spo2: Some(spo2),
            on_oxygen: Some(o2),
            systolic_bp: Some(sbp),
            heart_rate: Some(hr),
            alert: Some(alert),
            temperature: Some(t),
            spo2_scale: SpO2Scale::Scale1,
        }
    }

    #[test]
    fn a_normal_adult_scores_zero() {
        let s = score(&all(16.0, 98.0, false, 125.0, 72.0, true, 36.8));
        assert_eq!((s.total, s.band), (0, RiskBand::Low));
        assert!(s.is_complete());
    }

    #[test]
    fn every_band_edge_of_the_rcp_chart() {
        // (value, points) at each boundary of the RCP 2017 chart.
        for (x, p) in [
            (8.0, 3),
            (9.0, 1),
            (11.0, 1),
            (12.0, 0),
            (20.0, 0),
            (21.0, 2),
            (24.0, 2),
            (25.0, 3),
        ] {
            assert_eq!(respiration(x), p, "RR {x}");
        }
        for (x, p) in [
            (91.0, 3),
            (92.0, 2),
            (93.0, 2),
            (94.0, 1),
            (95.0, 1),
            (96.0, 0),
        ] {
            assert_eq!(spo2_scale1(x), p, "SpO2 {x}");
        }
        for (x, p) in [
            (90.0, 3),
            (91.0, 2),
            (100.0, 2),
            (101.0, 1),
            (110.0, 1),
            (111.0, 0),
            (219.0, 0),
            (220.0, 3),
        ] {
            assert_eq!(systolic(x), p, "SBP {x}");
        }
        for (x, p) in [
            (40.0, 3),
            (41.0, 1),
            (50.0, 1),
            (51.0, 0),
            (90.0, 0),
            (91.0, 1),
            (110.0, 1),
            (111.0, 2),
            (130.0, 2),
            (131.0, 3),
        ] {
            assert_eq!(pulse(x), p, "HR {x}");
        }
        for (x, p) in [
            (35.0, 3),
            (35.1, 1),
            (36.0, 1),
            (36.1, 0),
            (38.0, 0),
            (38.1, 1),
            (39.0, 1),
            (39.1, 2),
        ] {
            assert_eq!(temperature(x), p, "T {x}");
        }
    }

    #[test]
    fn a_septic_picture_is_high_risk() {
        // RR 24 (2) + SpO2 93 (2) + oxygen (2) + SBP 105 (1) + HR 115 (2) + alert (0) + 38.5 (1) = 10
        let s = score(&all(24.0, 93.0, true, 105.0, 115.0, true, 38.5));
        assert_eq!((s.total, s.band), (10, RiskBand::High));
    }

    #[test]
    fn a_single_red_parameter_is_low_medium_and_five_is_medium() {
        let s = score(&all(16.0, 98.0, false, 125.0, 72.0, false, 36.8));
        assert_eq!((s.total, s.band), (3, RiskBand::LowMedium));
        // RR 22 (2) + SpO2 95 (1) + HR 105 (1) + T 38.3 (1) = 5
        let s = score(&all(22.0, 95.0, false, 125.0, 105.0, true, 38.3));
        assert_eq!((s.total, s.band), (5, RiskBand::Medium));
    }

    #[test]
    fn missing_parameters_are_listed_not_guessed() {
        let s = score(&Vitals {
            heart_rate: Some(135.0),
            ..Vitals::default()
        });
        assert_eq!(s.total, 3);
        assert_eq!(s.missing.len(), 6);
        assert!(!s.is_complete());
    }

    #[test]
    fn values_are_read_as_the_chart_is() {
        // 90.4 reads as 90 (0 points), 90.6 as 91 (1 point); 38.04 °C as 38.0.
        assert_eq!(
            score(&Vitals {
                heart_rate: Some(90.4),
                ..Default::default()
            })
            .total,
            0
        );
        assert_eq!(
            score(&Vitals {
                heart_rate: Some(90.6),
                ..Default::default()
            })
            .total,
            1
        );
        assert_eq!(
            score(&Vitals {
                temperature: Some(38.04),
                ..Default::default()
            })
            .total,
            0
        );
    }

    fn saturation(spo2: f64, on_oxygen: bool, spo2_scale: SpO2Scale) -> News2 {
        score(&Vitals {
            spo2: Some(spo2),
            on_oxygen: Some(on_oxygen),
            spo2_scale,
            ..Vitals::default()
        })
    }

    /// SpO2 points alone (the air/oxygen parameter scores separately).
    fn spo2_points(spo2: f64, on_oxygen: bool, scale: SpO2Scale) -> u8 {
        saturation(spo2, on_oxygen, scale).parts[0].1
    }

    #[test]
    fn scale_1_is_the_default_and_is_recorded() {
        assert_eq!(Vitals::default().spo2_scale, SpO2Scale::Scale1);
        let s = score(&all(16.0, 98.0, false, 125.0, 72.0, true, 36.8));
        assert_eq!((s.scale, s.scale.number()), (SpO2Scale::Scale1, 1));
        let s = saturation(90.0, false, SpO2Scale::Scale2);
        assert_eq!((s.scale, s.scale.number()), (SpO2Scale::Scale2, 2));
    }

    #[test]
    fn a_copd_patient_on_target_scores_nothing_on_scale_2() {
        // RCP 2017 chart: SpO2 90% is 3 points on scale 1 but inside the 88–92% target of
        // scale 2; on air that is the whole score.
        assert_eq!(saturation(90.0, false, SpO2Scale::Scale1).total, 3);
        let s = saturation(90.0, false, SpO2Scale::Scale2);
        assert_eq!((s.total, s.band), (0, RiskBand::Low));
        // 95% on oxygen: scale 2 gives 2 for SpO2 (over-oxygenation) + 2 for oxygen = 4,
        // scale 1 gives 1 + 2; 97% on oxygen: 3 + 2 on scale 2, 0 + 2 on scale 1.
        assert_eq!(spo2_points(95.0, true, SpO2Scale::Scale2), 2);
        assert_eq!(saturation(95.0, true, SpO2Scale::Scale2).total, 4);
        assert_eq!(saturation(95.0, true, SpO2Scale::Scale1).total, 3);
        assert_eq!(saturation(97.0, true, SpO2Scale::Scale2).total, 5);
        assert_eq!(saturation(97.0, true, SpO2Scale::Scale1).total, 2);
    }

    #[test]
    fn every_band_edge_of_scale_2() {
        // (SpO2, points on air, points on oxygen) at each boundary of the RCP 2017 scale 2.
        for (x, air, oxygen) in [
            (83.0, 3, 3),
            (84.0, 2, 2),
            (85.0, 2, 2),
            (86.0, 1, 1),
            (87.0, 1, 1),
            (88.0, 0, 0),
            (92.0, 0, 0),
            (93.0, 0, 1),
            (94.0, 0, 1),
            (95.0, 0, 2),
            (96.0, 0, 2),
            (97.0, 0, 3),
            (100.0, 0, 3),
        ] {
            assert_eq!(spo2_scale2(x, false), air, "SpO2 {x} on air");
            assert_eq!(spo2_scale2(x, true), oxygen, "SpO2 {x} on oxygen");
            assert_eq!(spo2_points(x, false, SpO2Scale::Scale2), air, "{x}");
            assert_eq!(spo2_points(x, true, SpO2Scale::Scale2), oxygen, "{x}");
        }
        // Read as the chart is: 92.4 is 92 (target), 92.5 is 93 (1 point on oxygen).
        assert_eq!(spo2_points(92.4, true, SpO2Scale::Scale2), 0);
        assert_eq!(spo2_points(92.5, true, SpO2Scale::Scale2), 1);
        assert_eq!(spo2_points(87.5, true, SpO2Scale::Scale2), 0);
    }

    #[test]
    fn oxygen_not_recorded_is_read_as_air_on_scale_2_and_listed() {
        let s = score(&Vitals {
            spo2: Some(97.0),
            spo2_scale: SpO2Scale::Scale2,
            ..Vitals::default()
        });
        assert_eq!(s.total, 0);
        assert!(s.missing.contains(&"air or oxygen"));
    }

    #[test]
    fn a_copd_exacerbation_on_scale_2() {
        // RR 24 (2) + SpO2 86 on oxygen (1 on scale 2; 3 on scale 1) + oxygen (2) + SBP 118 (0)
        // + HR 104 (1) + alert (0) + 37.9 (0) = 6, medium; scale 1 would say 8, high.
        let mut v = all(24.0, 86.0, true, 118.0, 104.0, true, 37.9);
        assert_eq!((score(&v).total, score(&v).band), (8, RiskBand::High));
        v.spo2_scale = SpO2Scale::Scale2;
        assert_eq!((score(&v).total, score(&v).band), (6, RiskBand::Medium));
    }
}
