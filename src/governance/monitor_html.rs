//! Monitoring as HTML: per model version, time-series charts (SVG, no scripts) of the score
//! distribution, abstention, data quality and alert rates, input drift and calibration, and the
//! alerts as a list — the section the admin report page shows next to today's tables.

use std::fmt::Write as _;

use super::monitor::{Monitoring, VersionWeeks};
use crate::html::escape as esc;

const COLOURS: [&str; 4] = ["#1f5fa8", "#c0392b", "#2e8b57", "#8e44ad"];

/// A line chart of `series` over `labels` (one point per week; `None`: no value that week).
fn line_chart(title: &str, labels: &[String], series: &[(&str, Vec<Option<f64>>)]) -> String {
    let (w, h, left, top, bottom) = (420.0, 190.0, 44.0, 22.0, 40.0);
    let plot_w = w - left - 10.0;
    let plot_h = h - top - bottom;
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .fold(0.0f64, |m, v| m.max(*v));
    let max = if max > 0.0 { max * 1.1 } else { 1.0 };
    let x = |i: usize| left + plot_w * i as f64 / (labels.len().max(2) - 1) as f64;
    let y = |v: f64| top + plot_h * (1.0 - v / max);
    let mut svg = format!(
        r##"<svg role="img" aria-label="{t}" width="{w}" height="{h}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title><text x="0" y="14" font-size="13" font-weight="bold" fill="#111">{t}</text><line x1="{left}" y1="{base}" x2="{right}" y2="{base}" stroke="#999"/><text x="0" y="{top2}" font-size="11" fill="#555">{max:.3}</text><text x="0" y="{base}" font-size="11" fill="#555">0</text>"##,
        t = esc(title),
        base = top + plot_h,
        right = left + plot_w,
        top2 = top + 10.0,
    );
    for (i, label) in labels.iter().enumerate() {
        if labels.len() <= 6 || i % 2 == 0 {
            let _ = write!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="#555" text-anchor="middle">{}</text>"##,
                x(i),
                top + plot_h + 14.0,
                esc(label)
            );
        }
    }
    for (s, (name, values)) in series.iter().enumerate() {
        let colour = COLOURS[s % COLOURS.len()];
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", x(i), y(v))))
            .collect();
        if points.len() > 1 {
            let _ = write!(
                svg,
                r##"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"##,
                points.join(" ")
            );
        }
        for p in &points {
            if let Some((px, py)) = p.split_once(',') {
                let _ = write!(
                    svg,
                    r##"<circle cx="{px}" cy="{py}" r="2.5" fill="{colour}"/>"##
                );
            }
        }
        let _ = write!(
            svg,
            r##"<rect x="{lx:.1}" y="{ly:.1}" width="10" height="10" fill="{colour}"/><text x="{tx:.1}" y="{ty:.1}" font-size="11" fill="#111">{n}</text>"##,
            lx = left + 100.0 * s as f64,
            ly = h - 14.0,
            tx = left + 14.0 + 100.0 * s as f64,
            ty = h - 5.0,
            n = esc(name)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn version_charts(v: &VersionWeeks) -> String {
    let labels: Vec<String> = v
        .weeks
        .iter()
        .map(|w| w.start.format("%m-%d").to_string())
        .collect();
    let col = |f: &dyn Fn(&super::monitor::Week) -> Option<f64>| {
        v.weeks.iter().map(f).collect::<Vec<_>>()
    };
    let title = |what: &str| format!("{} v{} ({}): {what}", v.model, v.version, v.mode);
    let mut out = String::from("<section>");
    out.push_str(&line_chart(
        &title("risk"),
        &labels,
        &[
            ("p10", col(&|w| w.risk_p10)),
            ("median", col(&|w| w.risk_p50)),
            ("p90", col(&|w| w.risk_p90)),
        ],
    ));
    out.push_str(&line_chart(
        &title("rates"),
        &labels,
        &[
            ("abstained", col(&|w| w.abstention_rate)),
            (
                "cards",
                col(&|w| (w.predictions > 0).then(|| w.cards_shown as f64 / w.predictions as f64)),
            ),
            ("input dropped", col(&|w| w.with_dropped_rate)),
            ("clamped", col(&|w| w.with_clamped_rate)),
        ],
    ));
    out.push_str(&line_chart(
        &title("input drift (largest PSI)"),
        &labels,
        &[("PSI", col(&|w| w.psi.values().copied().reduce(f64::max)))],
    ));
    out.push_str(&line_chart(
        &title("observed / expected"),
        &labels,
        &[("O/E", col(&|w| w.calibration.as_ref().and_then(|c| c.o_e)))],
    ));
    out.push_str("</section>");
    out
}

/// The monitoring section of the report page.
pub fn section(m: &Monitoring) -> String {
    let mut out = format!(
        "<h2>Monitoring, per model version and week (last {} weeks)</h2><p>Inputs are compared with the training mean and deviation of each model (PSI over training deciles); calibration counts predictions whose horizon ended before the imported outcomes' <code>through</code>.</p>",
        m.weeks
    );
    if m.alerts.is_empty() {
        out.push_str("<p>No threshold crossed.</p>");
    } else {
        out.push_str("<h3>Alerts</h3><ul>");
        for a in &m.alerts {
            let _ = write!(
                out,
                "<li><strong>{} v{} ({})</strong>, week of {}: {} ({} {})</li>",
                esc(&a.model),
                esc(&a.version),
                esc(&a.mode),
                a.week,
                esc(&a.message),
                esc(&a.metric),
                esc(&a.threshold)
            );
        }
        out.push_str("</ul>");
    }
    for v in &m.versions {
        out.push_str(&version_charts(v));
    }
    out
}
