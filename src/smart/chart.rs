//! Server-rendered SVG charts for the app: a service's risk trajectory with its thresholds and
//! what became of each card, and a small trend chart per contributing signal.
//!
//! No script and no chart library: the EHR pane may block both, and an SVG with a `<title>`
//! per mark is read by screen readers and shows a tooltip on hover. Every chart carries
//! `role="img"` and a text label; the page puts the same numbers in a table beside it.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::html::escape as escape_html;

/// Plot area of the trajectory (SVG user units; the SVG scales to its box).
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 34.0;

/// One recorded (or the live) assessment on the trajectory.
#[derive(Debug, Clone, PartialEq)]
pub struct RiskPoint {
    pub at: DateTime<Utc>,
    /// `None`: abstained or no score (drawn on the time axis, not on the line).
    pub risk: Option<f64>,
    pub mark: Mark,
    /// Tooltip and table text (already plain words, escaped here).
    pub label: String,
}

/// How a point is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Scored, no card (below threshold, suppressed, deduplicated).
    Scored,
    /// A card was shown.
    CardShown,
    /// A clinician overrode the card.
    Overridden,
    /// A clinician accepted / agreed with the card.
    Accepted,
    /// The model declined to score.
    Abstained,
    /// The assessment computed for this page, not recorded.
    Now,
}

/// A horizontal threshold line.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub name: &'static str,
    pub value: f64,
}

/// Risk over `[from, to]` with thresholds; `title` names the chart for assistive technology.
pub fn trajectory(
    title: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    points: &[RiskPoint],
    thresholds: &[Threshold],
) -> String {
    let top_risk = points
        .iter()
        .filter_map(|p| p.risk)
        .chain(thresholds.iter().map(|t| t.value))
        .fold(0.0_f64, f64::max);
    let y_max = nice_ceiling(top_risk * 1.15);
    let x = |t: DateTime<Utc>| scale_time(t, from, to, LEFT, WIDTH - RIGHT);
    let y = |v: f64| HEIGHT - BOTTOM - (v / y_max).clamp(0.0, 1.0) * (HEIGHT - TOP - BOTTOM);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{}\" xmlns=\"http://www.w3.org/2000/svg\"><title>{}</title>",
        escape_html(title),
        escape_html(title)
    );
    // Axes and gridlines.
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/><text class=\"tick\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}%</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y(v) + 4.0,
            percent(v),
            y = y(v)
        );
    }
    for i in 0..=4 {
        let t = from + (to - from) * i / 4;
        let _ = write!(
            svg,
            "<text class=\"tick\" x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x(t),
            HEIGHT - 12.0,
            t.format("%d %b %H:%M")
        );
    }
    for t in thresholds {
        let _ = write!(
            svg,
            "<line class=\"threshold threshold-{name}\" x1=\"{LEFT}\" x2=\"{x2}\" y1=\"{y:.1}\" y2=\"{y:.1}\"><title>{name} threshold {p}%</title></line><text class=\"threshold-label\" x=\"{x2}\" y=\"{ly:.1}\" text-anchor=\"end\">{name} {p}%</text>",
            name = t.name,
            x2 = WIDTH - RIGHT,
            y = y(t.value),
            ly = y(t.value) - 4.0,
            p = percent(t.value),
        );
    }
    // The line through every score, in time order.
    let path: Vec<String> = points
        .iter()
        .filter_map(|p| p.risk.map(|r| format!("{:.1},{:.1}", x(p.at), y(r))))
        .collect();
    if path.len() > 1 {
        let _ = write!(
            svg,
            "<polyline class=\"risk\" points=\"{}\"/>",
            path.join(" ")
        );
    }
    for p in points {
        let cx = x(p.at);
        let cy = p.risk.map_or(HEIGHT - BOTTOM, y);
        let label = escape_html(&p.label);
        let _ = match p.mark {
            Mark::Scored => write!(
                svg,
                "<circle class=\"mark scored\" cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"3\"><title>{label}</title></circle>"
            ),
            Mark::CardShown => write!(
                svg,
                "<rect class=\"mark shown\" x=\"{:.1}\" y=\"{:.1}\" width=\"9\" height=\"9\" transform=\"rotate(45 {cx:.1} {cy:.1})\"><title>{label}</title></rect>",
                cx - 4.5,
                cy - 4.5
            ),
            Mark::Overridden => write!(
                svg,
                "<path class=\"mark overridden\" d=\"M{:.1},{:.1}l10,10m0,-10l-10,10\"><title>{label}</title></path>",
                cx - 5.0,
                cy - 5.0
            ),
            Mark::Accepted => write!(
                svg,
                "<circle class=\"mark accepted\" cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"6\"><title>{label}</title></circle>"
            ),
            Mark::Abstained => write!(
                svg,
                "<path class=\"mark abstained\" d=\"M{cx:.1},{:.1}l5,8h-10z\"><title>{label}</title></path>",
                cy - 8.0
            ),
            Mark::Now => write!(
                svg,
                "<circle class=\"mark now\" cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"6\"><title>{label}</title></circle>"
            ),
        };
    }
    svg.push_str("</svg>");
    svg
}

/// A small trend chart of one signal over `[from, to]`; `highlight` rings the measurement
/// that contributed.
pub fn sparkline(
    title: &str,
    series: &[(DateTime<Utc>, f64)],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    highlight: Option<DateTime<Utc>>,
) -> String {
    const W: f64 = 260.0;
    const H: f64 = 64.0;
    const PAD: f64 = 6.0;
    let lo = series.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = series.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let span = if (hi - lo).abs() < f64::EPSILON {
        1.0
    } else {
        hi - lo
    };
    let x = |t: DateTime<Utc>| scale_time(t, from, to, PAD, W - PAD);
    let y = |v: f64| H - PAD - (v - lo) / span * (H - 2.0 * PAD);
    let mut svg = format!(
        "<svg class=\"spark\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\" xmlns=\"http://www.w3.org/2000/svg\"><title>{}</title>",
        escape_html(title),
        escape_html(title)
    );
    let points: Vec<String> = series
        .iter()
        .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
        .collect();
    match points.len() {
        0 => {}
        1 => {
            let _ = write!(
                svg,
                "<circle class=\"spark-point\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\"/>",
                x(series[0].0),
                y(series[0].1)
            );
        }
        _ => {
            let _ = write!(
                svg,
                "<polyline class=\"spark-line\" points=\"{}\"/>",
                points.join(" ")
            );
        }
    }
    if let Some((t, v)) = highlight.and_then(|h| series.iter().find(|(t, _)| *t == h)) {
        let _ = write!(
            svg,
            "<circle class=\"spark-driver\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"4.5\"/>",
            x(*t),
            y(*v)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// `t` placed on `[x0, x1]` as `[from, to]` (clamped: older points sit on the left edge).
fn scale_time(t: DateTime<Utc>, from: DateTime<Utc>, to: DateTime<Utc>, x0: f64, x1: f64) -> f64 {
    let total = (to - from).num_milliseconds().max(1) as f64;
    let at = (t - from).num_milliseconds() as f64;
    x0 + (at / total).clamp(0.0, 1.0) * (x1 - x0)
}

/// The smallest of 5 %, 10 %, 20 %, 25 %, 50 %, 75 %, 100 % at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    [0.05, 0.1, 0.2, 0.25, 0.5, 0.75, 1.0]
        .into_iter()
        .find(|c| *c >= v)
        .unwrap_or(1.0)
}

/// A probability as a percentage without needless decimals ("12", "2.5").
pub fn percent(v: f64) -> String {
    let p = v * 100.0;
    if (p - p.round()).abs() < 0.05 {
        format!("{:.0}", p)
    } else {
        format!("{:.1}", p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn at(hours_ago: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-26T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            - Duration::hours(hours_ago)
    }

    #[test]
    fn trajectory_draws_each_mark_threshold_and_the_line() {
        let points = vec![
            RiskPoint {
                at: at(48),
                risk: Some(0.05),
                mark: Mark::Scored,
                label: "5%".into(),
            },
            RiskPoint {
                at: at(30),
                risk: None,
                mark: Mark::Abstained,
                label: "too few".into(),
            },
            RiskPoint {
                at: at(24),
                risk: Some(0.31),
                mark: Mark::CardShown,
                label: "card <shown>".into(),
            },
            RiskPoint {
                at: at(23),
                risk: Some(0.31),
                mark: Mark::Overridden,
                label: "overridden".into(),
            },
            RiskPoint {
                at: at(0),
                risk: Some(0.42),
                mark: Mark::Now,
                label: "now".into(),
            },
        ];
        let svg = trajectory(
            "Deterioration risk",
            at(72),
            at(0),
            &points,
            &[
                Threshold {
                    name: "warning",
                    value: 0.2,
                },
                Threshold {
                    name: "critical",
                    value: 0.4,
                },
            ],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("role=\"img\" aria-label=\"Deterioration risk\""));
        for class in [
            "mark scored",
            "mark shown",
            "mark overridden",
            "mark abstained",
            "mark now",
        ] {
            assert_eq!(svg.matches(class).count(), 1, "{class}");
        }
        assert!(svg.contains("warning threshold 20%") && svg.contains("critical threshold 40%"));
        // Four scored points joined (the abstention is not on the line).
        let line = svg
            .split("<polyline class=\"risk\" points=\"")
            .nth(1)
            .unwrap();
        assert_eq!(line.split('"').next().unwrap().split(' ').count(), 4);
        assert!(svg.contains("card &lt;shown&gt;"), "labels are escaped");
        // y axis tops out at the nice ceiling above 42 % × 1.15.
        assert!(svg.contains(">50%</text>"));
    }

    #[test]
    fn the_newest_point_sits_at_the_right_edge_and_older_ones_are_clamped() {
        let from = at(72);
        let to = at(0);
        assert_eq!(scale_time(to, from, to, 0.0, 100.0), 100.0);
        assert_eq!(scale_time(at(100), from, to, 0.0, 100.0), 0.0);
        assert!((scale_time(at(36), from, to, 0.0, 100.0) - 50.0).abs() < 1e-9);
    }

    #[test]
    fn sparkline_rings_the_contributing_measurement() {
        let series = vec![(at(6), 16.0), (at(3), 22.0), (at(1), 28.0)];
        let svg = sparkline("Respiratory rate", &series, at(12), at(0), Some(at(1)));
        assert!(svg.contains("spark-line") && svg.contains("spark-driver"));
        assert!(sparkline("x", &series, at(12), at(0), Some(at(2)))
            .find("spark-driver")
            .is_none());
        assert!(sparkline("x", &[], at(12), at(0), None).ends_with("</svg>"));
    }

    #[test]
    fn percentages_keep_one_decimal_only_when_needed() {
        assert_eq!(percent(0.15), "15");
        assert_eq!(percent(0.025), "2.5");
        assert_eq!(nice_ceiling(0.48), 0.5);
        assert_eq!(nice_ceiling(3.0), 1.0);
    }
}
