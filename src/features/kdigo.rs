//! KDIGO acute kidney injury staging by serum creatinine (KDIGO Clinical Practice Guideline for
//! Acute Kidney Injury, Kidney International Supplements 2012; 2:1–138, section 2.1).
//!
//! Shown beside the model's risk because AKI is the other early-detection alert clinicians meet,
//! and its stage is defined by creatinine alone. Urine output criteria are not implemented (the
//! gateway has no urine output), so this stage can understate the guideline's.
//!
//! How the guideline's words are read here (the same in `models/baselines.py`, which
//! `tests/models/baselines_parity.rs` holds equal):
//! - Only measurements taken at or before `now`, finite and positive, count. Each is read to
//!   0.01 mg/dL (half away from zero) and the arithmetic below is done on whole hundredths, so
//!   0.9 → 1.2 is a rise of exactly 0.3 mg/dL, not 0.2999….
//! - The **latest** measurement is the one with the greatest time (ties: the later in the input).
//! - The **baseline** is the lowest of the other measurements taken within 7 days before the
//!   latest (`latest.time - 7 days <= t <= latest.time`, both ends included; ties: the most
//!   recent). Older values are not used: the guideline asks for a rise "known or presumed to have
//!   occurred within the prior 7 days".
//! - The **48-hour rise** is the latest minus the lowest of the other measurements within 48 h
//!   before the latest (both ends included).
//! - Stage 1: rise ≥ 0.3 mg/dL, or latest ≥ 1.5 × baseline. Stage 2: latest ≥ 2.0 × baseline.
//!   Stage 3: latest ≥ 3.0 × baseline, or latest ≥ 4.0 mg/dL with an acute rise (≥ 0.3 mg/dL in
//!   48 h or ≥ 1.5 × baseline), or renal replacement therapy. The guideline's "1.5–1.9 times" and
//!   "2.0–2.9 times" are read as the half-open ranges [1.5, 2.0) and [2.0, 3.0), so a ratio of
//!   1.95 is stage 1; the ratio is compared exactly (by cross-multiplying hundredths), never
//!   rounded.
//! - The stage describes the latest measurement; how old it may be is the caller's choice.

use chrono::{DateTime, Duration, Utc};

/// One criterion of the KDIGO creatinine staging, kept so a card can say why a stage was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Criterion {
    /// Stage 1: creatinine rose by ≥ 0.3 mg/dL within 48 h.
    Rise48h,
    /// Stage 1: latest ≥ 1.5 × baseline (and < 2.0 ×).
    Ratio1_5,
    /// Stage 2: latest ≥ 2.0 × baseline (and < 3.0 ×).
    Ratio2_0,
    /// Stage 3: latest ≥ 3.0 × baseline.
    Ratio3_0,
    /// Stage 3: latest ≥ 4.0 mg/dL with an acute rise (≥ 0.3 mg/dL in 48 h or ≥ 1.5 × baseline).
    Above4WithAcuteRise,
    /// Stage 3: on renal replacement therapy.
    Rrt,
}

impl Criterion {
    /// The stage this criterion alone gives.
    pub fn stage(self) -> u8 {
        match self {
            Self::Rise48h | Self::Ratio1_5 => 1,
            Self::Ratio2_0 => 2,
            Self::Ratio3_0 | Self::Above4WithAcuteRise | Self::Rrt => 3,
        }
    }

    /// Words used on cards (and compared with the Python port).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rise48h => "rise ≥ 0.3 mg/dL within 48 h",
            Self::Ratio1_5 => "≥ 1.5 × baseline",
            Self::Ratio2_0 => "≥ 2.0 × baseline",
            Self::Ratio3_0 => "≥ 3.0 × baseline",
            Self::Above4WithAcuteRise => "≥ 4.0 mg/dL with an acute rise",
            Self::Rrt => "renal replacement therapy",
        }
    }
}

/// Why the creatinine criteria could not be assessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStaged {
    /// Fewer than two usable measurements at or before `now`: a stage needs a change.
    TooFewMeasurements,
    /// No other measurement within 7 days before the latest, so no baseline and no rise.
    NoBaselineWithin7Days,
}

impl NotStaged {
    /// Words used on cards (and compared with the Python port).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooFewMeasurements => "fewer than two creatinine measurements",
            Self::NoBaselineWithin7Days => "no creatinine within 7 days before the latest",
        }
    }
}

/// A creatinine measurement as staged: when, and mg/dL read to 0.01.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// When the sample was taken.
    pub time: DateTime<Utc>,
    /// mg/dL, read to 0.01.
    pub mg_dl: f64,
}

/// A computed KDIGO creatinine stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Kdigo {
    /// 0–3; `None` when unknown: the creatinine criteria could not be assessed (see
    /// [`Kdigo::not_staged`]) and the patient is not on renal replacement therapy.
    pub stage: Option<u8>,
    /// Every criterion met, in stage order; empty for stage 0 or unknown.
    pub criteria: Vec<Criterion>,
    /// Set when the creatinine criteria could not be assessed (even if RRT gave stage 3).
    pub not_staged: Option<NotStaged>,
    /// The latest usable measurement.
    pub latest: Option<Reading>,
    /// The lowest other measurement within 7 days before the latest.
    pub baseline: Option<Reading>,
    /// latest / baseline.
    pub ratio: Option<f64>,
    /// mg/dL: latest minus the lowest other measurement within 48 h before it; `None` when there
    /// is none (negative when creatinine fell).
    pub rise_48h: Option<f64>,
}

/// Stages AKI from `creatinine` (`(time, mg/dL)`, any order) as of `now`; `on_rrt` when the
/// patient is on renal replacement therapy. See the module documentation for how each rule of
/// the guideline is read.
pub fn stage(creatinine: &[(DateTime<Utc>, f64)], now: DateTime<Utc>, on_rrt: bool) -> Kdigo {
    let mut usable: Vec<(DateTime<Utc>, i64)> = creatinine
        .iter()
        .filter(|(t, _)| *t <= now)
        .filter_map(|&(t, mg_dl)| hundredths(mg_dl).map(|c| (t, c)))
        .collect();
    // Stable: of equal times, the later in the input stays later and becomes the latest.
    usable.sort_by_key(|(t, _)| *t);
    let reading = |(time, c): (DateTime<Utc>, i64)| Reading {
        time,
        mg_dl: c as f64 / 100.0,
    };

    let mut out = Kdigo {
        stage: None,
        criteria: Vec::new(),
        not_staged: None,
        latest: usable.last().copied().map(reading),
        baseline: None,
        ratio: None,
        rise_48h: None,
    };
    match usable.split_last() {
        Some((&(latest_t, latest), earlier)) if !earlier.is_empty() => {
            let lowest_since = |from: DateTime<Utc>| {
                earlier
                    .iter()
                    .filter(|(t, _)| *t >= from)
                    // Keep the earlier only when strictly lower: of equal values the most
                    // recent wins (`earlier` is in time order).
                    .fold(
                        None,
                        |low: Option<(DateTime<Utc>, i64)>, &(t, c)| match low {
                            Some((_, l)) if l < c => low,
                            _ => Some((t, c)),
                        },
                    )
            };
            match lowest_since(latest_t - Duration::days(7)) {
                None => out.not_staged = Some(NotStaged::NoBaselineWithin7Days),
                Some(base) => {
                    let rise =
                        lowest_since(latest_t - Duration::hours(48)).map(|(_, c)| latest - c);
                    out.baseline = Some(reading(base));
                    out.ratio = Some(latest as f64 / base.1 as f64);
                    out.rise_48h = rise.map(|r| r as f64 / 100.0);
                    out.criteria = creatinine_criteria(latest, base.1, rise);
                }
            }
        }
        _ => out.not_staged = Some(NotStaged::TooFewMeasurements),
    }
    if on_rrt {
        out.criteria.push(Criterion::Rrt);
    }
    out.stage = match (out.not_staged, out.criteria.iter().map(|c| c.stage()).max()) {
        (_, Some(s)) => Some(s),
        (None, None) => Some(0),
        (Some(_), None) => None,
    };
    out
}

/// The creatinine criteria met by `latest` against `baseline` and the 48-hour `rise`, all in
/// hundredths of a mg/dL; exact integer comparisons, so no boundary is lost to rounding.
fn creatinine_criteria(latest: i64, baseline: i64, rise: Option<i64>) -> Vec<Criterion> {
    let (latest, baseline) = (i128::from(latest), i128::from(baseline));
    let rise_03 = rise.is_some_and(|r| r >= 30);
    let ratio_15 = 2 * latest >= 3 * baseline;
    let mut met = Vec::new();
    if rise_03 {
        met.push(Criterion::Rise48h);
    }
    if latest >= 3 * baseline {
        met.push(Criterion::Ratio3_0);
    } else if latest >= 2 * baseline {
        met.push(Criterion::Ratio2_0);
    } else if ratio_15 {
        met.push(Criterion::Ratio1_5);
    }
    if latest >= 400 && (rise_03 || ratio_15) {
        met.push(Criterion::Above4WithAcuteRise);
    }
    met.sort();
    met
}

/// mg/dL in whole hundredths (half away from zero); `None` for a value that is not finite or
/// not positive once read, which no laboratory reports.
fn hundredths(mg_dl: f64) -> Option<i64> {
    let c = (mg_dl * 100.0).round();
    // `as` saturates; a value that large is absurd but must not overflow the arithmetic.
    (c.is_finite() && c > 0.0).then_some(c as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-01-01T12:00:00Z".parse().unwrap()
    }

    fn ago(hours: i64) -> DateTime<Utc> {
        now() - Duration::hours(hours)
    }

    fn staged(series: &[(i64, f64)]) -> Kdigo {
        let series: Vec<_> = series.iter().map(|&(h, v)| (ago(h), v)).collect();
        stage(&series, now(), false)
    }

    #[test]
    fn an_absolute_rise_within_48_hours_is_stage_1() {
        // KDIGO 2012: increase ≥ 0.3 mg/dL within 48 h. 1.0 → 1.3 in 24 h (ratio 1.3).
        let k = staged(&[(24, 1.0), (0, 1.3)]);
        assert_eq!(k.stage, Some(1));
        assert_eq!(k.criteria, vec![Criterion::Rise48h]);
        assert_eq!(k.rise_48h, Some(0.3));
        assert_eq!(k.ratio, Some(1.3));
        assert_eq!(k.not_staged, None);
    }

    #[test]
    fn a_doubling_over_5_days_is_stage_2() {
        // 2.0–2.9 × baseline: 1.0 → 2.1 over 5 days; no measurement within 48 h before.
        let k = staged(&[(120, 1.0), (0, 2.1)]);
        assert_eq!(k.stage, Some(2));
        assert_eq!(k.criteria, vec![Criterion::Ratio2_0]);
        assert_eq!(k.rise_48h, None);
        assert_eq!(k.baseline.map(|b| (b.time, b.mg_dl)), Some((ago(120), 1.0)));
        assert_eq!(k.latest.map(|b| (b.time, b.mg_dl)), Some((now(), 2.1)));
    }

    #[test]
    fn above_4_and_tripled_is_stage_3() {
        // 1.2 → 4.1 in 48 h: ratio 3.4 and ≥ 4.0 with an acute rise, both stage 3.
        let k = staged(&[(48, 1.2), (0, 4.1)]);
        assert_eq!(k.stage, Some(3));
        assert_eq!(
            k.criteria,
            vec![
                Criterion::Rise48h,
                Criterion::Ratio3_0,
                Criterion::Above4WithAcuteRise
            ]
        );
    }

    #[test]
    fn small_rises_and_stable_ckd_are_stage_0() {
        // 0.9 → 1.1 (rise 0.2, ratio 1.22).
        let k = staged(&[(24, 0.9), (0, 1.1)]);
        assert_eq!((k.stage, k.criteria.len()), (Some(0), 0));
        // CKD stable at 3.0 → 3.1: rise 0.1, ratio 1.03; high, but not acute.
        let k = staged(&[(24, 3.0), (0, 3.1)]);
        assert_eq!(k.stage, Some(0));
        // 3.9 → 4.1: ≥ 4.0 but without an acute rise (0.2, ratio 1.05): stage 0.
        let k = staged(&[(24, 3.9), (0, 4.1)]);
        assert_eq!(k.stage, Some(0));
        // 3.8 → 4.1 in 24 h: rise 0.3 makes ≥ 4.0 acute: stage 3.
        let k = staged(&[(24, 3.8), (0, 4.1)]);
        assert_eq!(k.stage, Some(3));
        assert_eq!(
            k.criteria,
            vec![Criterion::Rise48h, Criterion::Above4WithAcuteRise]
        );
    }

    #[test]
    fn a_value_older_than_7_days_is_not_a_baseline() {
        // 0.8 ten days ago would make 1.5 a ratio of 1.9 (stage 1); the baseline is 1.2 from
        // 5 days ago instead (ratio 1.25), and nothing is within 48 h: stage 0.
        let k = staged(&[(240, 0.8), (120, 1.2), (0, 1.5)]);
        assert_eq!(k.stage, Some(0));
        assert_eq!(k.baseline.map(|b| b.mg_dl), Some(1.2));
        // With only the old value there is no baseline at all: unknown, not 0.
        let k = staged(&[(240, 0.8), (0, 1.5)]);
        assert_eq!(k.stage, None);
        assert_eq!(k.not_staged, Some(NotStaged::NoBaselineWithin7Days));
    }

    #[test]
    fn ratio_boundaries_are_exact() {
        // Over 5 days, so only the ratio counts. [1.5, 2.0) → 1, [2.0, 3.0) → 2, ≥ 3.0 → 3.
        for (base, latest, want) in [
            (1.0, 1.49, 0),
            (1.0, 1.5, 1),
            (1.0, 1.99, 1),
            (1.0, 2.0, 2),
            (1.0, 2.99, 2),
            (1.0, 3.0, 3),
            (0.8, 1.2, 1), // 1.2 / 0.8 is 1.4999… in floating point
            (0.8, 2.4, 3), // and 2.4 / 0.8 is 2.9999…
            (0.3, 0.6, 2),
        ] {
            assert_eq!(
                staged(&[(120, base), (0, latest)]).stage,
                Some(want),
                "{base} → {latest}"
            );
        }
    }

    #[test]
    fn rise_and_window_boundaries_are_inclusive() {
        // 0.9 → 1.2 is a rise of 0.3 (0.29999… in floating point).
        assert_eq!(staged(&[(24, 0.9), (0, 1.2)]).stage, Some(1));
        assert_eq!(staged(&[(24, 0.9), (0, 1.19)]).stage, Some(0));
        // Exactly 48 h before counts, a second more does not.
        assert_eq!(staged(&[(48, 1.0), (0, 1.3)]).stage, Some(1));
        let just_over = [(ago(48) - Duration::seconds(1), 1.0), (now(), 1.3)];
        assert_eq!(stage(&just_over, now(), false).stage, Some(0));
        // Exactly 7 days before is a baseline, a second more is not.
        assert_eq!(staged(&[(168, 1.0), (0, 1.5)]).stage, Some(1));
        let just_over = [(ago(168) - Duration::seconds(1), 1.0), (now(), 1.5)];
        assert_eq!(stage(&just_over, now(), false).stage, None);
    }

    #[test]
    fn the_lowest_value_in_the_window_is_the_reference() {
        // 1.0 → 1.4 → 1.3: the latest (1.3) is compared with 1.0, the lowest: rise 0.3.
        let k = staged(&[(40, 1.0), (20, 1.4), (0, 1.3)]);
        assert_eq!((k.stage, k.rise_48h), (Some(1), Some(0.3)));
        // Falling creatinine: negative rise, stage 0.
        let k = staged(&[(24, 2.0), (0, 1.2)]);
        assert_eq!((k.stage, k.rise_48h), (Some(0), Some(-0.8)));
    }

    #[test]
    fn fewer_than_two_measurements_cannot_be_staged() {
        let k = staged(&[(0, 5.0)]);
        assert_eq!(
            (k.stage, k.not_staged),
            (None, Some(NotStaged::TooFewMeasurements))
        );
        assert_eq!(k.latest.map(|r| r.mg_dl), Some(5.0));
        let k = stage(&[], now(), false);
        assert_eq!((k.stage, k.latest), (None, None));
        // Later than `now`, not finite or not positive: not usable.
        let series = [
            (ago(24), 1.0),
            (now() + Duration::hours(1), 2.0),
            (ago(10), f64::NAN),
            (ago(5), 0.0),
        ];
        assert_eq!(stage(&series, now(), false).stage, None);
    }

    #[test]
    fn renal_replacement_therapy_is_stage_3_whatever_the_creatinine() {
        let k = stage(&[], now(), true);
        assert_eq!(k.stage, Some(3));
        assert_eq!(k.criteria, vec![Criterion::Rrt]);
        assert_eq!(k.not_staged, Some(NotStaged::TooFewMeasurements));
        let series = [(ago(24), 1.0), (now(), 1.3)];
        let k = stage(&series, now(), true);
        assert_eq!(k.criteria, vec![Criterion::Rise48h, Criterion::Rrt]);
        assert_eq!(k.stage, Some(3));
    }

    #[test]
    fn the_latest_of_equal_times_is_the_later_in_the_input() {
        let series = [(ago(24), 1.0), (now(), 1.1), (now(), 1.4)];
        let k = stage(&series, now(), false);
        assert_eq!(k.latest.map(|r| r.mg_dl), Some(1.4));
        assert_eq!((k.stage, k.rise_48h), (Some(1), Some(0.4)));
    }

    #[test]
    fn every_criterion_has_words_and_a_stage() {
        for (c, s) in [
            (Criterion::Rise48h, 1),
            (Criterion::Ratio1_5, 1),
            (Criterion::Ratio2_0, 2),
            (Criterion::Ratio3_0, 3),
            (Criterion::Above4WithAcuteRise, 3),
            (Criterion::Rrt, 3),
        ] {
            assert_eq!(c.stage(), s);
            assert!(!c.as_str().is_empty());
        }
    }
}
