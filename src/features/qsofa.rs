//! qSOFA, the quick Sequential Organ Failure Assessment (Seymour et al., JAMA 2016;
//! Sepsis-3, Singer et al., JAMA 2016).
//!
//! A bedside prompt, outside the ICU, that a patient with suspected infection is likely to do
//! badly: one point each for respiratory rate ≥ 22/min, systolic blood pressure ≤ 100 mmHg and
//! altered mentation; positive at 2 or more. It is shown beside the model's risk because it is
//! the sepsis screen clinicians already know, and because it needs no laboratory result.
//!
//! Altered mentation is GCS < 15 in the papers; the gateway has ACVPU, so anything other than
//! Alert counts. Values are rounded as NEWS2 rounds them (whole numbers, half away from zero),
//! so 21.6/min reads as 22. `models/baselines.py` is the Python port;
//! `tests/models/baselines_parity.rs` holds the two equal.

use super::news2::Vitals;

/// The three qSOFA inputs, `None` when not recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Inputs {
    /// Breaths per minute.
    pub respiratory_rate: Option<f64>,
    /// mmHg.
    pub systolic_bp: Option<f64>,
    /// `Some(false)` for anything other than Alert on ACVPU (GCS < 15 in the papers).
    pub alert: Option<bool>,
}

impl From<&Vitals> for Inputs {
    /// The NEWS2 vitals already hold every qSOFA input, so the two scores read the same values.
    fn from(v: &Vitals) -> Self {
        Self {
            respiratory_rate: v.respiratory_rate,
            systolic_bp: v.systolic_bp,
            alert: v.alert,
        }
    }
}

/// A computed qSOFA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qsofa {
    /// 0–3: the number of criteria met among those recorded.
    pub total: u8,
    /// `(criterion, points)` for each criterion that was recorded.
    pub parts: Vec<(&'static str, u8)>,
    /// Criteria not recorded (scored 0, which can understate risk).
    pub missing: Vec<&'static str>,
    /// `total >= 2`, the Sepsis-3 threshold for a positive screen.
    pub positive: bool,
}

impl Qsofa {
    /// Whether all three criteria were recorded.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }

    /// Negative on what was recorded, but the criteria not recorded could still make it
    /// positive: a card must not call such a screen negative.
    pub fn is_undetermined(&self) -> bool {
        !self.positive && usize::from(self.total) + self.missing.len() >= 2
    }
}

/// Scores `x`. Missing criteria score 0 and are listed in [`Qsofa::missing`].
pub fn score(x: &Inputs) -> Qsofa {
    let mut parts = Vec::new();
    let mut missing = Vec::new();
    let mut add = |name: &'static str, met: Option<bool>| match met {
        Some(m) => parts.push((name, u8::from(m))),
        None => missing.push(name),
    };
    add(
        "respiratory rate",
        x.respiratory_rate.map(|v| v.round() >= 22.0),
    );
    add("systolic BP", x.systolic_bp.map(|v| v.round() <= 100.0));
    add("mentation", x.alert.map(|a| !a));
    let total: u8 = parts.iter().map(|(_, p)| p).sum();
    Qsofa {
        total,
        parts,
        missing,
        positive: total >= 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(rr: f64, sbp: f64, alert: bool) -> Inputs {
        Inputs {
            respiratory_rate: Some(rr),
            systolic_bp: Some(sbp),
            alert: Some(alert),
        }
    }

    #[test]
    fn each_criterion_at_its_published_threshold() {
        // Seymour 2016: RR ≥ 22/min, SBP ≤ 100 mmHg, altered mentation.
        assert_eq!(score(&all(21.0, 101.0, true)).total, 0);
        assert_eq!(score(&all(22.0, 101.0, true)).total, 1);
        assert_eq!(score(&all(21.0, 100.0, true)).total, 1);
        assert_eq!(score(&all(21.0, 101.0, false)).total, 1);
        // Read as the chart is: 21.4 is 21, 21.5 is 22; 100.4 is 100, 100.5 is 101.
        assert_eq!(score(&all(21.4, 100.5, true)).total, 0);
        assert_eq!(score(&all(21.5, 100.4, true)).total, 2);
    }

    #[test]
    fn two_criteria_make_a_positive_screen() {
        // A confused patient breathing 24/min with SBP 118: qSOFA 2, positive.
        let s = score(&all(24.0, 118.0, false));
        assert_eq!((s.total, s.positive), (2, true));
        assert!(s.is_complete() && !s.is_undetermined());
        // All three: 3.
        let s = score(&all(30.0, 85.0, false));
        assert_eq!((s.total, s.positive), (3, true));
        // One: 1, negative.
        let s = score(&all(16.0, 95.0, true));
        assert_eq!((s.total, s.positive), (1, false));
        assert!(!s.is_undetermined());
    }

    #[test]
    fn missing_criteria_are_listed_and_can_leave_the_screen_undetermined() {
        let s = score(&Inputs {
            respiratory_rate: Some(25.0),
            ..Inputs::default()
        });
        assert_eq!((s.total, s.positive), (1, false));
        assert_eq!(s.missing, vec!["systolic BP", "mentation"]);
        assert!(s.is_undetermined());
        let s = score(&Inputs::default());
        assert_eq!((s.total, s.missing.len()), (0, 3));
        assert!(s.is_undetermined());
        let s = score(&Inputs {
            respiratory_rate: Some(16.0),
            systolic_bp: Some(120.0),
            alert: None,
        });
        assert!(!s.positive && !s.is_undetermined());
    }

    #[test]
    fn reads_the_same_values_as_news2() {
        let v = Vitals {
            respiratory_rate: Some(23.0),
            systolic_bp: Some(98.0),
            alert: Some(true),
            heart_rate: Some(120.0),
            ..Vitals::default()
        };
        let s = score(&Inputs::from(&v));
        assert_eq!((s.total, s.positive), (2, true));
    }
}
