//! The feedback-analytics report as people read it: a text table for `bedside report`, and an
//! HTML page with charts for `GET /admin/report` (no scripts, no external assets: it opens in
//! any hospital browser). The numbers come from [`crate::store::Report`] unchanged.

use std::fmt::Write as _;

use crate::html::escape as esc;
use crate::store::{Report, ServiceReport};

fn rate(r: Option<f64>) -> String {
    r.map_or_else(|| "–".into(), |v| format!("{:.0}%", v * 100.0))
}

fn per_day(r: Option<f64>) -> String {
    r.map_or_else(|| "–".into(), |v| format!("{v:.2}"))
}

fn reasons(s: &ServiceReport) -> String {
    if s.tally.override_reasons.is_empty() {
        return "–".into();
    }
    s.tally
        .override_reasons
        .iter()
        .map(|(code, n)| format!("{code} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Plain-text table, one row per service × model version × mode.
pub fn text(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32} {:<22} {:<6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7} {:>7} {:>8} {:>9}  override reasons",
        "service", "model", "mode", "scored", "shown", "suppr", "abst", "downgr", "dedup", "shadow", "accept", "overr", "sugg.acc", "alerts/pd"
    );
    for s in &r.services {
        let t = &s.tally;
        let _ = writeln!(
            out,
            "{:<32} {:<22} {:<6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7} {:>7} {:>8} {:>9}  {}",
            s.service_id,
            format!("{} v{}", s.model, s.model_version),
            s.mode,
            t.predictions,
            t.shown,
            t.suppressed,
            t.abstained,
            t.downgraded,
            t.deduplicated,
            t.shadow,
            rate(t.acceptance_rate),
            rate(t.override_rate),
            t.suggestions_accepted,
            per_day(t.alerts_per_patient_day),
            reasons(s)
        );
    }
    for a in &r.shadow_agreement {
        let _ = writeln!(
            out,
            "shadow agreement {} v{} vs v{}: {:.0}% of {} calls (alert / no alert)",
            a.model,
            a.active_version,
            a.shadow_version,
            a.agreement * 100.0,
            a.pairs
        );
    }
    out
}

/// A horizontal bar chart of `(label, value)`, accessible (title, labels as text).
fn bars(title: &str, items: &[(&str, i64)]) -> String {
    let max = items.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1) as f64;
    let row = 22.0;
    let height = 28.0 + row * items.len() as f64;
    let mut svg = format!(
        r##"<svg role="img" aria-label="{t}" width="420" height="{height}" viewBox="0 0 420 {height}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title><text x="0" y="14" font-size="13" font-weight="bold" fill="#111">{t}</text>"##,
        t = esc(title)
    );
    for (i, (label, value)) in items.iter().enumerate() {
        let y = 24.0 + row * i as f64;
        let w = 220.0 * (*value as f64) / max;
        let _ = write!(
            svg,
            r##"<text x="0" y="{ty}" font-size="12" fill="#111">{l}</text><rect x="120" y="{y}" width="{w:.1}" height="16" fill="#1f5fa8"/><text x="{tx:.1}" y="{ty}" font-size="12" fill="#111">{value}</text>"##,
            ty = y + 12.0,
            l = esc(label),
            tx = 126.0 + w,
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The report page; `more` is HTML placed after the tables (the monitoring section).
pub fn html(r: &Report, more: &str) -> String {
    let mut page = String::from(
        r##"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>bedside — feedback report</title>
<style>body{font:14px/1.4 system-ui,sans-serif;color:#111;margin:1.5rem;max-width:1200px}table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #999;padding:.25rem .5rem;text-align:right}th:first-child,td:first-child{text-align:left}section{display:inline-block;vertical-align:top;margin:0 1.5rem 1.5rem 0}</style>
</head><body><h1>bedside — feedback report</h1>
<p>Per CDS service and model version: what was scored, shown or held back by a guardrail, and what clinicians did with the cards. Models are trained on synthetic data only.</p>
<table><thead><tr><th scope="col">Service · model · mode</th><th scope="col">Scored</th><th scope="col">Shown</th><th scope="col">Suppressed</th><th scope="col">Abstained</th><th scope="col">Downgraded</th><th scope="col">Deduplicated</th><th scope="col">Shadow</th><th scope="col">Accepted</th><th scope="col">Overridden</th><th scope="col">Suggestions accepted</th><th scope="col">Alerts / patient-day</th><th scope="col">Override reasons</th></tr></thead><tbody>"##,
    );
    for s in &r.services {
        let t = &s.tally;
        let _ = write!(
            page,
            "<tr><td>{} · {} v{} · {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ({})</td><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.service_id),
            esc(&s.model),
            esc(&s.model_version),
            esc(&s.mode),
            t.predictions,
            t.shown,
            t.suppressed,
            t.abstained,
            t.downgraded,
            t.deduplicated,
            t.shadow,
            t.accepted,
            rate(t.acceptance_rate),
            t.overridden,
            rate(t.override_rate),
            t.suggestions_accepted,
            per_day(t.alerts_per_patient_day),
            esc(&reasons(s))
        );
    }
    page.push_str("</tbody></table>");
    for s in &r.services {
        let t = &s.tally;
        let title = format!(
            "{} · {} v{} ({})",
            s.service_id, s.model, s.model_version, s.mode
        );
        page.push_str("<section>");
        page.push_str(&bars(
            &format!("{title}: outcomes"),
            &[
                ("shown", t.shown),
                ("below threshold", t.below_threshold),
                ("suppressed", t.suppressed),
                ("abstained", t.abstained),
                ("downgraded", t.downgraded),
                ("deduplicated", t.deduplicated),
                ("shadow", t.shadow),
            ],
        ));
        let mut fb: Vec<(&str, i64)> = vec![("accepted", t.accepted), ("overridden", t.overridden)];
        fb.extend(t.override_reasons.iter().map(|(k, v)| (k.as_str(), *v)));
        page.push_str(&bars(&format!("{title}: feedback"), &fb));
        page.push_str("</section>");
    }
    if !r.shadow_agreement.is_empty() {
        page.push_str("<h2>Shadow vs active</h2><ul>");
        for a in &r.shadow_agreement {
            let _ = write!(
                page,
                "<li>{} v{} (shadow) agrees with v{} (active) on alert / no alert in {:.0}% of {} calls</li>",
                esc(&a.model),
                esc(&a.shadow_version),
                esc(&a.active_version),
                a.agreement * 100.0,
                a.pairs
            );
        }
        page.push_str("</ul>");
    }
    page.push_str(more);
    page.push_str("</body></html>");
    page
}
