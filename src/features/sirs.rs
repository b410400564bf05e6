//! SIRS, the systemic inflammatory response syndrome criteria (Bone et al., ACCP/SCCM Consensus
//! Conference, Chest 1992).
//!
//! Many sepsis protocols and older alerts still screen with SIRS, so the gateway shows it for
//! comparison: one point each for
//! - temperature > 38 °C or < 36 °C;
//! - heart rate > 90/min;
//! - respiratory rate > 20/min or PaCO2 < 32 mmHg;
//! - white cell count > 12 ×10⁹/L or < 4 ×10⁹/L, or more than 10% immature (band) forms;
//!
//! positive at 2 or more. The thresholds are strict (38.0 °C, 90/min, 20/min, 32 mmHg, 12.0 and
//! 4.0 ×10⁹/L and 10% do not count) and are applied to values read as they are charted and
//! reported: temperature and white cell count to one decimal, the rest to whole numbers (half
//! away from zero). A criterion with two inputs is met when either is, and counts as not
//! recorded only when neither was. `models/baselines.py` is the Python port;
//! `tests/models/baselines_parity.rs` holds the two equal.

use super::news2::Vitals;

/// The SIRS inputs, `None` when not recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Inputs {
    /// Degrees Celsius.
    pub temperature: Option<f64>,
    /// Beats per minute.
    pub heart_rate: Option<f64>,
    /// Breaths per minute.
    pub respiratory_rate: Option<f64>,
    /// Arterial PaCO2, mmHg.
    pub paco2: Option<f64>,
    /// White cell count, ×10⁹/L (= ×10³/µL).
    pub wbc: Option<f64>,
    /// Immature (band) neutrophils, percent of white cells; optional in the definition.
    pub bands: Option<f64>,
}

impl From<&Vitals> for Inputs {
    /// The vital-sign half of SIRS from the NEWS2 vitals; laboratory values stay `None`.
    fn from(v: &Vitals) -> Self {
        Self {
            temperature: v.temperature,
            heart_rate: v.heart_rate,
            respiratory_rate: v.respiratory_rate,
            ..Self::default()
        }
    }
}

/// A computed SIRS count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sirs {
    /// 0–4: the number of criteria met among those recorded.
    pub total: u8,
    /// `(criterion, points)` for each criterion with at least one input recorded.
    pub parts: Vec<(&'static str, u8)>,
    /// Criteria with no input recorded (scored 0, which can understate risk).
    pub missing: Vec<&'static str>,
    /// `total >= 2`, the consensus definition of SIRS.
    pub positive: bool,
}

impl Sirs {
    /// Whether every criterion had an input.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }

    /// Negative on what was recorded, but the criteria not recorded could still make it
    /// positive: a card must not call such a screen negative.
    pub fn is_undetermined(&self) -> bool {
        !self.positive && usize::from(self.total) + self.missing.len() >= 2
    }
}

/// Scores `x`. Criteria without any input score 0 and are listed in [`Sirs::missing`].
pub fn score(x: &Inputs) -> Sirs {
    let one_decimal = |v: f64| (v * 10.0).round() / 10.0;
    let temperature = x
        .temperature
        .map(one_decimal)
        .map(|t| !(36.0..=38.0).contains(&t));
    let heart_rate = x.heart_rate.map(|v| v.round() > 90.0);
    let respiratory = either(
        x.respiratory_rate.map(|v| v.round() > 20.0),
        x.paco2.map(|v| v.round() < 32.0),
    );
    let white_cells = either(
        x.wbc.map(one_decimal).map(|w| !(4.0..=12.0).contains(&w)),
        x.bands.map(|v| v.round() > 10.0),
    );

    let mut parts = Vec::new();
    let mut missing = Vec::new();
    for (name, met) in [
        ("temperature", temperature),
        ("heart rate", heart_rate),
        ("respiratory rate or PaCO2", respiratory),
        ("white cells", white_cells),
    ] {
        match met {
            Some(m) => parts.push((name, u8::from(m))),
            None => missing.push(name),
        }
    }
    let total: u8 = parts.iter().map(|(_, p)| p).sum();
    Sirs {
        total,
        parts,
        missing,
        positive: total >= 2,
    }
}

/// A two-input criterion: met when either input meets it; not met when one input was recorded
/// and does not; `None` only when neither was recorded.
fn either(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a == Some(true) || b == Some(true)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vitals(t: f64, hr: f64, rr: f64) -> Inputs {
        Inputs {
            temperature: Some(t),
            heart_rate: Some(hr),
            respiratory_rate: Some(rr),
            ..Inputs::default()
        }
    }

    fn labs(wbc: Option<f64>, bands: Option<f64>) -> Inputs {
        Inputs {
            wbc,
            bands,
            ..Inputs::default()
        }
    }

    #[test]
    fn every_threshold_of_the_consensus_definition_is_strict() {
        // Bone 1992: T > 38 or < 36 °C; HR > 90; RR > 20 or PaCO2 < 32; WBC > 12 or < 4 or > 10% bands.
        for (t, met) in [(35.9, 1), (36.0, 0), (38.0, 0), (38.1, 1)] {
            assert_eq!(score(&vitals(t, 80.0, 16.0)).total, met, "T {t}");
        }
        for (hr, met) in [(90.0, 0), (91.0, 1)] {
            assert_eq!(score(&vitals(37.0, hr, 16.0)).total, met, "HR {hr}");
        }
        for (rr, met) in [(20.0, 0), (21.0, 1)] {
            assert_eq!(score(&vitals(37.0, 80.0, rr)).total, met, "RR {rr}");
        }
        for (paco2, met) in [(32.0, 0), (31.0, 1)] {
            let x = Inputs {
                paco2: Some(paco2),
                ..Inputs::default()
            };
            assert_eq!(score(&x).total, met, "PaCO2 {paco2}");
        }
        for (wbc, met) in [(3.9, 1), (4.0, 0), (12.0, 0), (12.1, 1)] {
            assert_eq!(score(&labs(Some(wbc), None)).total, met, "WBC {wbc}");
        }
        for (bands, met) in [(10.0, 0), (11.0, 1)] {
            assert_eq!(score(&labs(None, Some(bands))).total, met, "bands {bands}");
        }
    }

    #[test]
    fn values_are_read_as_charted() {
        // 38.04 °C reads as 38.0 (not met), 38.06 as 38.1; 90.4/min as 90, 90.5 as 91;
        // WBC 12.04 as 12.0, 12.06 as 12.1.
        assert_eq!(score(&vitals(38.04, 90.4, 16.0)).total, 0);
        assert_eq!(score(&vitals(38.06, 90.5, 16.0)).total, 2);
        assert_eq!(score(&labs(Some(12.04), None)).total, 0);
        assert_eq!(score(&labs(Some(12.06), None)).total, 1);
    }

    #[test]
    fn a_febrile_tachycardic_patient_has_sirs() {
        // T 38.6, HR 112, RR 18, WBC 9.0: 2 criteria, SIRS.
        let s = score(&Inputs {
            wbc: Some(9.0),
            ..vitals(38.6, 112.0, 18.0)
        });
        assert_eq!((s.total, s.positive), (2, true));
        assert!(s.is_complete());
        // Hypothermia, RR 24, PaCO2 28, WBC 2.5 with 15% bands: 3 criteria (the two-input
        // criteria count once each).
        let s = score(&Inputs {
            temperature: Some(35.2),
            heart_rate: Some(88.0),
            respiratory_rate: Some(24.0),
            paco2: Some(28.0),
            wbc: Some(2.5),
            bands: Some(15.0),
        });
        assert_eq!((s.total, s.positive), (3, true));
    }

    #[test]
    fn either_input_meets_a_two_input_criterion() {
        // RR 16 but PaCO2 30: met. Normal WBC but 12% bands: met.
        let s = score(&Inputs {
            respiratory_rate: Some(16.0),
            paco2: Some(30.0),
            wbc: Some(8.0),
            bands: Some(12.0),
            ..Inputs::default()
        });
        assert_eq!((s.total, s.positive), (2, true));
        assert_eq!(s.missing, vec!["temperature", "heart rate"]);
    }

    #[test]
    fn missing_criteria_are_listed_and_can_leave_the_screen_undetermined() {
        let s = score(&Inputs::from(&Vitals {
            heart_rate: Some(104.0),
            respiratory_rate: Some(18.0),
            temperature: Some(37.2),
            ..Vitals::default()
        }));
        assert_eq!((s.total, s.positive), (1, false));
        assert_eq!(s.missing, vec!["white cells"]);
        assert!(s.is_undetermined());
        let s = score(&vitals(37.0, 70.0, 14.0));
        assert!(!s.positive && !s.is_undetermined());
    }
}
