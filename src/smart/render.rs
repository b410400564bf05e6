//! The app page as HTML: the layout from `smart-launch/templates/app.html`, a patient banner,
//! and one section per model (assessment now, trajectory, why, model card, feedback form).
//!
//! Everything from the EHR or the store is escaped here; links are relative to the page
//! (`{public prefix}/smart/app`), so bedside works behind any path prefix.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};

use super::chart::{self, Mark, RiskPoint, Threshold};
use super::view::{AppView, Banner, ModelSection};
use crate::cds::wire::Indicator;
use crate::html::{escape as esc, fill};
use crate::inference::{LoadedModel, ModelStatus};
use crate::services::review::Verdict;
use crate::services::CdsService;
use crate::store::{Outcome, StoredPrediction};

/// The page layout (head, header, footer), with `{{…}}` slots.
const LAYOUT: &str = include_str!("../../smart-launch/templates/app.html");

/// What the page is told beside the view: the signed-in user and one-off notices.
pub struct PageExtras<'a> {
    pub csrf: &'a str,
    pub user: Option<&'a str>,
    /// "Your feedback was recorded." after a post.
    pub notice: Option<&'a str>,
    /// Limitations from each model's card, by `(name, version)`.
    pub limitations: &'a [((String, String), Vec<String>)],
}

/// The whole page.
pub fn page(view: &AppView, extras: &PageExtras<'_>) -> String {
    let mut body = String::new();
    if let Some(notice) = extras.notice {
        let _ = write!(
            body,
            "<p class=\"notice\" role=\"status\">{}</p>",
            esc(notice)
        );
    }
    for problem in view.fhir_problem.iter().chain(view.store_problem.iter()) {
        let _ = write!(
            body,
            "<p class=\"problem\" role=\"alert\">Note: {}.</p>",
            esc(problem)
        );
    }
    if view.sections.len() > 1 {
        body.push_str("<nav aria-label=\"Models on this page\"><ul class=\"toc\">");
        for s in &view.sections {
            if let Some(service) = view.runtime.services.get(&s.service_id) {
                let _ = write!(
                    body,
                    "<li><a href=\"#{}\">{}</a></li>",
                    anchor(service),
                    esc(title(service))
                );
            }
        }
        body.push_str("</ul></nav>");
    }
    for s in &view.sections {
        if let Some(service) = view.runtime.services.get(&s.service_id) {
            section(&mut body, view, s, service, extras);
        }
    }
    if view.sections.is_empty() {
        body.push_str("<p>No decision-support services are configured.</p>");
    }
    fill(
        LAYOUT,
        &[
            (
                "banner",
                &view
                    .banner
                    .as_ref()
                    .map(|b| banner(b, &view.patient_id))
                    .unwrap_or_default(),
            ),
            ("user", &esc(extras.user.unwrap_or("signed in"))),
            ("csrf", &esc(extras.csrf)),
            ("body", &body),
        ],
    )
}

fn banner(b: &Banner, patient_id: &str) -> String {
    let mut out = String::from("<section class=\"banner\" aria-label=\"Patient\">");
    let _ = write!(
        out,
        "<p class=\"name\">{}</p><dl>",
        esc(b.name.as_deref().unwrap_or("Name not available"))
    );
    let mut item = |k: &str, v: &str| {
        let _ = write!(out, "<div><dt>{}</dt><dd>{}</dd></div>", esc(k), esc(v));
    };
    if let Some(birth) = &b.birth_date {
        let age = b.age_years.map(|a| format!(" ({a} y)")).unwrap_or_default();
        item("Born", &format!("{birth}{age}"));
    }
    if let Some(g) = &b.gender {
        item("Sex", g);
    }
    if let Some((kind, value)) = &b.identifier {
        item(kind, value);
    }
    item("FHIR id", patient_id);
    out.push_str("</dl>");
    if let Some(p) = &b.problem {
        let _ = write!(out, "<p class=\"problem\">{}</p>", esc(p));
    }
    out.push_str("</section>");
    out
}

fn title(service: &CdsService) -> &str {
    service
        .definition()
        .title
        .as_deref()
        .unwrap_or(service.id())
}

fn anchor(service: &CdsService) -> String {
    format!("model-{}", service.definition().model_name)
}

fn section(
    out: &mut String,
    view: &AppView,
    s: &ModelSection,
    service: &CdsService,
    extras: &PageExtras<'_>,
) {
    let model = service.model();
    let m = &model.manifest;
    let a = anchor(service);
    let _ = write!(
        out,
        "<section class=\"model\" id=\"{a}\" aria-labelledby=\"{a}-h\"><h2 id=\"{a}-h\">{} <span class=\"version\">model {} v{}</span></h2>",
        esc(title(service)),
        esc(&m.name),
        esc(&m.version)
    );
    if s.service_ids.len() > 1 {
        let _ = write!(
            out,
            "<p class=\"services\">Cards from {}.</p>",
            esc(&s.service_ids.join(", "))
        );
    }
    out.push_str("<div class=\"columns\"><div class=\"now\">");
    now_block(out, s, service);
    out.push_str("</div><div class=\"trajectory\">");
    trajectory(out, view, s, service);
    out.push_str("</div></div>");
    why(out, s, model);
    abstentions(out, s);
    about(out, model, extras);
    feedback_form(out, s, service, extras.csrf, &a);
    out.push_str("</section>");
}

fn thresholds(service: &CdsService) -> Vec<Threshold> {
    let t = &service.definition().thresholds;
    let mut v = Vec::new();
    if let Some(info) = t.info {
        v.push(Threshold {
            name: "info",
            value: f64::from(info),
        });
    }
    v.push(Threshold {
        name: "warning",
        value: f64::from(t.warning),
    });
    v.push(Threshold {
        name: "critical",
        value: f64::from(t.critical),
    });
    v
}

fn now_block(out: &mut String, s: &ModelSection, service: &CdsService) {
    out.push_str("<h3>Now</h3>");
    let review = match &s.review {
        Ok(r) => r,
        Err(e) => {
            let _ = write!(
                out,
                "<p class=\"problem\">No current assessment: {}.</p>",
                esc(e)
            );
            return;
        }
    };
    match &review.verdict {
        Verdict::Scored {
            risk, indicator, ..
        } => {
            let level = match indicator {
                Some(Indicator::Critical) => "critical",
                Some(Indicator::Warning) => "warning",
                Some(Indicator::Info) => "info",
                None => "below threshold",
            };
            let _ = write!(
                out,
                "<p class=\"risk risk-{}\"><span class=\"value\">{}%</span> <span class=\"level\">{}</span></p>",
                level.replace(' ', "-"),
                chart::percent(f64::from(*risk)),
                esc(level)
            );
            let m = &service.model().manifest;
            let _ = write!(
                out,
                "<p class=\"meaning\">{} ({} h horizon).</p>",
                esc(&capitalise(&m.output.meaning)),
                m.output.horizon_hours
            );
        }
        Verdict::Abstained(reason) => {
            let _ = write!(
                out,
                "<p class=\"risk risk-abstained\"><span class=\"value\">No score</span></p><p>The model declined to score: {}.</p>",
                esc(reason.trim_end_matches('.'))
            );
        }
        Verdict::NoScore(reason) => {
            let _ = write!(
                out,
                "<p class=\"risk risk-abstained\"><span class=\"value\">No score</span></p><p>The model gave no score: {}.</p>",
                esc(reason)
            );
        }
    }
    let _ = write!(
        out,
        "<p class=\"window\">Data window {} – {} (UTC), {} measurements{}.</p>",
        time(review.matrix.window_start),
        time(review.matrix.window_end),
        review.matrix.measurements.len(),
        if review.rejected > 0 {
            format!(", {} observations not usable", review.rejected)
        } else {
            String::new()
        }
    );
    if !review.baselines.lines.is_empty() {
        out.push_str("<h4>Bedside scores from the same data</h4><ul class=\"baselines\">");
        for line in &review.baselines.lines {
            let _ = write!(out, "<li>{}</li>", markdown_inline(line));
        }
        out.push_str("</ul>");
    }
}

fn trajectory(out: &mut String, view: &AppView, s: &ModelSection, service: &CdsService) {
    let mut points: Vec<RiskPoint> = Vec::new();
    for p in &s.history {
        let mark = match p.outcome {
            o if o.card_shown() => Mark::CardShown,
            o if o.unscored() => Mark::Abstained,
            Outcome::Disabled => continue,
            _ => Mark::Scored,
        };
        points.push(RiskPoint {
            at: p.at,
            risk: p.risk,
            mark,
            label: history_label(p),
        });
    }
    for f in &s.feedback {
        let Some(p) = s.history.iter().find(|p| p.id == f.card_uuid) else {
            continue;
        };
        let (mark, words) = if f.outcome == "overridden" {
            (Mark::Overridden, "overridden")
        } else {
            (Mark::Accepted, "accepted")
        };
        points.push(RiskPoint {
            at: p.at,
            risk: p.risk,
            mark,
            label: format!(
                "{} card {}{} at {}",
                time(p.at),
                words,
                f.reason_code
                    .as_deref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default(),
                time(f.at)
            ),
        });
    }
    if let Ok(Verdict::Scored { risk, .. }) = s.review.as_ref().map(|r| &r.verdict) {
        points.push(RiskPoint {
            at: view.now,
            risk: Some(f64::from(*risk)),
            mark: Mark::Now,
            label: format!(
                "now: {}% (this page, not recorded)",
                chart::percent(f64::from(*risk))
            ),
        });
    }
    let m = &service.model().manifest;
    let caption = format!(
        "{} risk over the last {} h: {} recorded assessments, {} cards shown, {} overridden",
        m.name,
        super::view::HISTORY.num_hours(),
        s.history.len(),
        points.iter().filter(|p| p.mark == Mark::CardShown).count(),
        points.iter().filter(|p| p.mark == Mark::Overridden).count()
    );
    let _ = write!(
        out,
        "<h3>Risk trajectory</h3><figure>{}<figcaption>{}. <span class=\"legend\"><span class=\"key key-shown\" aria-hidden=\"true\"></span> card shown <span class=\"key key-overridden\" aria-hidden=\"true\"></span> overridden <span class=\"key key-now\" aria-hidden=\"true\"></span> now <span class=\"key key-abstained\" aria-hidden=\"true\"></span> no score; dashed lines: thresholds.</span></figcaption></figure>",
        chart::trajectory(&caption, view.from, view.now, &points, &thresholds(service)),
        esc(&caption)
    );
    if !s.history.is_empty() {
        out.push_str("<details><summary>Trajectory as a table</summary><table><thead><tr><th scope=\"col\">Time (UTC)</th><th scope=\"col\">Risk</th><th scope=\"col\">Outcome</th><th scope=\"col\">Model</th><th scope=\"col\">Why</th></tr></thead><tbody>");
        for p in s.history.iter().rev() {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>v{}</td><td>{}</td></tr>",
                time(p.at),
                p.risk
                    .map_or("–".into(), |r| format!("{}%", chart::percent(r))),
                esc(&outcome_words(p)),
                esc(&p.model_version),
                esc(p.reason.as_deref().unwrap_or(""))
            );
        }
        out.push_str("</tbody></table></details>");
    }
}

fn history_label(p: &StoredPrediction) -> String {
    let risk = p
        .risk
        .map_or("no score".into(), |r| format!("{}%", chart::percent(r)));
    format!("{}: {risk}, {}", time(p.at), outcome_words(p))
}

fn outcome_words(p: &StoredPrediction) -> String {
    let base = match p.outcome {
        Outcome::Shown => format!("{} card shown", p.indicator.as_deref().unwrap_or("")),
        Outcome::Downgraded => "shown as info (downgraded)".into(),
        Outcome::BelowThreshold => "below threshold, no card".into(),
        Outcome::Suppressed => "card held back (suppressed)".into(),
        Outcome::Deduplicated => "card held back (duplicate)".into(),
        Outcome::Abstained => "abstained".into(),
        Outcome::NoScore => "no score".into(),
        other => other.as_str().replace('_', " "),
    };
    base.trim().to_owned()
}

fn why(out: &mut String, s: &ModelSection, model: &LoadedModel) {
    let Ok(review) = &s.review else {
        return;
    };
    let Verdict::Scored { explanation, .. } = &review.verdict else {
        return;
    };
    let spec = &model.features;
    let matrix = &review.matrix;
    out.push_str("<h3>Why: the observations that raised the risk</h3>");
    if explanation.drivers.is_empty() {
        out.push_str("<p>No single observation moved the risk by more than 0.2 points.</p>");
    } else {
        out.push_str("<ul class=\"drivers\">");
        for d in &explanation.drivers {
            let f = spec.index_of(&d.feature);
            let def = f.map(|f| &spec.features[f]);
            let series: Vec<(DateTime<Utc>, f64)> = matrix
                .measurements
                .iter()
                .filter(|m| Some(m.feature) == f)
                .map(|m| (m.time, m.value))
                .collect();
            let at = matrix
                .measurements
                .iter()
                .find(|m| {
                    Some(m.feature) == f && format!("Observation/{}", m.resource_id) == d.reference
                })
                .map(|m| m.time);
            let name = def.map_or(d.feature.as_str(), |d| d.display.as_str());
            let unit = def.map_or("", |d| d.unit.as_str());
            let label =
                format!("{name} ({unit}) over the data window, the contributing value ringed");
            let _ = write!(
                out,
                "<li><div class=\"driver-text\"><strong>{}</strong> <span class=\"points\">+{} risk points</span><br><span class=\"ref\">{}</span></div>{}</li>",
                esc(&capitalise(&d.words)),
                format_points(d.contribution),
                esc(&d.reference),
                chart::sparkline(&label, &series, matrix.window_start, matrix.window_end, at)
            );
        }
        out.push_str("</ul>");
    }
    if !explanation.trends.is_empty() {
        out.push_str(
            "<details><summary>Every signal over the window</summary><ul class=\"trends\">",
        );
        for t in &explanation.trends {
            let _ = write!(out, "<li>{}</li>", esc(&t.words));
        }
        out.push_str("</ul></details>");
    }
}

fn abstentions(out: &mut String, s: &ModelSection) {
    let mut reasons: Vec<(DateTime<Utc>, &str)> = s
        .history
        .iter()
        .filter(|p| p.outcome.unscored())
        .filter_map(|p| p.reason.as_deref().map(|r| (p.at, r)))
        .collect();
    if reasons.is_empty() {
        return;
    }
    reasons.reverse();
    out.push_str("<h3>When the model declined to score</h3><ul class=\"abstentions\">");
    for (at, reason) in reasons.into_iter().take(5) {
        let _ = write!(out, "<li>{}: {}</li>", time(at), esc(reason));
    }
    out.push_str("</ul>");
}

fn about(out: &mut String, model: &LoadedModel, extras: &PageExtras<'_>) {
    let m = &model.manifest;
    let status = match m.status {
        ModelStatus::Active => "active",
        ModelStatus::Shadow => "shadow (scored, never shown)",
        ModelStatus::Retired => "retired",
    };
    let card = format!("../models/{}/{}/model-card", esc(&m.name), esc(&m.version));
    let _ = write!(
        out,
        "<details class=\"about\"><summary>About this model and its limits</summary><p>{}</p><p><strong>Training data:</strong> {}. <strong>Status:</strong> {status}.</p>",
        esc(&m.description),
        esc(&m.training_data)
    );
    let key = (m.name.clone(), m.version.clone());
    if let Some((_, lines)) = extras.limitations.iter().find(|(k, _)| *k == key) {
        out.push_str("<h4>Limitations</h4><ul>");
        for l in lines {
            let _ = write!(out, "<li>{}</li>", markdown_inline(l));
        }
        out.push_str("</ul>");
    }
    let _ = write!(
        out,
        "<p><a href=\"{card}\">Full model card</a> · <a href=\"{card}/roc.svg\">ROC curve</a> · <a href=\"{card}/reliability.svg\">calibration</a></p></details>"
    );
}

fn feedback_form(
    out: &mut String,
    s: &ModelSection,
    service: &CdsService,
    csrf: &str,
    anchor: &str,
) {
    out.push_str("<h3>Your assessment</h3>");
    let Some(p) = &s.focus else {
        out.push_str("<p>No card was shown for this patient in the last 72 h; there is nothing to give feedback on.</p>");
        return;
    };
    let reasons = &service.definition().card.override_reasons;
    let _ = write!(
        out,
        "<form class=\"feedback\" method=\"post\" action=\"feedback\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"prediction\" value=\"{}\"><fieldset><legend>Do you agree with the {} card of {} (risk {})?</legend><div class=\"choice\"><input type=\"radio\" id=\"{anchor}-agree\" name=\"verdict\" value=\"agree\" required><label for=\"{anchor}-agree\">Agree</label></div><div class=\"choice\"><input type=\"radio\" id=\"{anchor}-disagree\" name=\"verdict\" value=\"disagree\"><label for=\"{anchor}-disagree\">Disagree</label></div><label for=\"{anchor}-reason\">Reason, if you disagree</label><select id=\"{anchor}-reason\" name=\"reason\"><option value=\"\">(choose a reason)</option>",
        esc(csrf),
        esc(&p.id),
        esc(p.indicator.as_deref().unwrap_or("")),
        time(p.at),
        p.risk.map_or("–".into(), |r| format!("{}%", chart::percent(r)))
    );
    for r in reasons {
        let _ = write!(
            out,
            "<option value=\"{}\">{}</option>",
            esc(&r.code),
            esc(r.display.as_deref().unwrap_or(&r.code))
        );
    }
    out.push_str("</select></fieldset><button type=\"submit\">Send feedback</button></form>");
}

/// `**bold**` and `` `code` `` of the card's markdown lines, the rest escaped.
fn markdown_inline(line: &str) -> String {
    let escaped = esc(line).replace('`', "");
    let mut out = String::new();
    for (i, part) in escaped.split("**").enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<strong>{part}</strong>");
        } else {
            out.push_str(part);
        }
    }
    out
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

fn format_points(c: f32) -> String {
    format!("{:.1}", c * 100.0)
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
        .replace('T', " ")
        .trim_end_matches('Z')
        .get(..16)
        .unwrap_or_default()
        .to_owned()
}

/// The bullets of a model card's `## Limitations` section, each one line.
pub fn limitations(model_card: &str) -> Vec<String> {
    let mut inside = false;
    let mut items: Vec<String> = Vec::new();
    for line in model_card.lines() {
        if line.starts_with("## ") {
            inside = line
                .trim_start_matches('#')
                .trim()
                .eq_ignore_ascii_case("limitations");
            continue;
        }
        if !inside {
            continue;
        }
        let trimmed = line.trim();
        if let Some(item) = trimmed
            .strip_prefix("- ")
            .or_else(|| trimmed.strip_prefix("* "))
        {
            items.push(item.to_owned());
        } else if !trimmed.is_empty() && line.starts_with(' ') {
            if let Some(last) = items.last_mut() {
                last.push(' ');
                last.push_str(trimmed);
            }
        } else if !trimmed.is_empty() && items.is_empty() {
            items.push(trimmed.to_owned());
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_replaces_slots_once_and_never_rescans_values() {
        let out = fill(
            "<a>{{x}}</a>{{y}}{{unknown}}",
            &[("x", "{{y}}"), ("y", "2")],
        );
        assert_eq!(out, "<a>{{y}}</a>2{{unknown}}");
        assert_eq!(fill("tail {{open", &[]), "tail {{open");
    }

    #[test]
    fn limitations_come_from_their_section_with_wrapped_lines_joined() {
        let card = "# Card\n## Intended use\n- not this\n## Limitations\n- **Synthetic** training data\n  only, no real patients.\n- Not validated.\n## Reproduce\n- nor this\n";
        assert_eq!(
            limitations(card),
            vec![
                "**Synthetic** training data only, no real patients.",
                "Not validated."
            ]
        );
        assert!(limitations("# nothing").is_empty());
    }

    #[test]
    fn markdown_bold_becomes_strong_and_html_stays_escaped() {
        assert_eq!(
            markdown_inline("**NEWS2 5** <b>`x`</b>"),
            "<strong>NEWS2 5</strong> &lt;b&gt;x&lt;/b&gt;"
        );
    }

    #[test]
    fn times_read_as_minutes_in_utc() {
        let t = DateTime::parse_from_rfc3339("2026-11-26T07:05:09Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(time(t), "2026-11-26 07:05");
    }
}
