//! Step 4 of a probe: the report, as JSON (`--json`) and as text, and the exit status.
//!
//! The JSON shape is stable (README, "Probing your EHR's FHIR server"):
//!
//! ```text
//! { fhir_base, patient,
//!   capability: { reachable, status, fhir_version, software, fhir_r4,
//!                 resources: [{type, supported, used_params, undeclared_params,
//!                              sort_declared, count_declared}],
//!                 error, notes: [...], severity },
//!   encounter_lookup: <query> | null,
//!   services: [{ id, hook, model,
//!                queries: [{key, query, required, input, skipped, status, error,
//!                           outcome_issues: [{severity, code, diagnostics}], resources, pages,
//!                           page_sizes, sort_honoured, count_honoured, ms, severity}],
//!                terminology: { recognised: {<channel>: n},
//!                               unrecognised: [{code, unit, reason, count}],
//!                               not_used: {concept: count} },
//!                density: { window_hours, channels: {<channel>: {in_window, newest_age_minutes}},
//!                           used, dropped: {<reason>: n}, newest_age_minutes },
//!                verdict: "would-score" | "would-abstain" | "cannot-run", reasons: [...],
//!                severity }],
//!   severity: "ok" | "warning" | "error" }
//! ```
//!
//! Exit status by `severity`: 0 ok, 1 warning, 2 error. No patient data beyond the
//! `--patient` id the user gave is printed: counts, codes, units, times relative to now.

use std::fmt::Write as _;

use serde::Serialize;

use super::assess::{Density, TerminologyReport};
use super::capability::Capability;
use super::queries::QueryReport;
use crate::services::ServiceDef;

/// How bad a finding is; a report's is its worst finding's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Ready as far as the probe can tell.
    Ok,
    /// Works, but less well than it could: `_sort` ignored, unrecognised codes, the model
    /// would abstain for this patient, a template that cannot be filled.
    Warning,
    /// Does not work: server unreachable, not FHIR R4, a required prefetch failed.
    Error,
}

impl Severity {
    /// The process exit status for this severity.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Warning => 1,
            Self::Error => 2,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warning => "WARNING",
            Self::Error => "ERROR",
        }
    }
}

/// What a service would do with this server's data for this patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Enough usable data: the model would score.
    WouldScore,
    /// The data reach the model, but its guardrails would decline to score (`reasons`).
    WouldAbstain,
    /// A required prefetch failed or could not be filled: the service would answer 412.
    CannotRun,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Self::WouldScore => "would score",
            Self::WouldAbstain => "would abstain",
            Self::CannotRun => "cannot run",
        }
    }
}

/// One service's part of the report.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceReport {
    pub id: String,
    pub hook: String,
    /// `name version` of the model it scores with.
    pub model: String,
    pub queries: Vec<QueryReport>,
    pub terminology: TerminologyReport,
    pub density: Density,
    pub verdict: Verdict,
    /// Why it cannot run or would abstain.
    pub reasons: Vec<String>,
    pub severity: Severity,
}

impl ServiceReport {
    /// A service that was not tried because the server could not be reached.
    pub fn unreachable(def: &ServiceDef, why: &str) -> Self {
        Self {
            id: def.id.clone(),
            hook: def.hook.clone(),
            model: format!("{} {}", def.model_name, def.model_version),
            queries: Vec::new(),
            terminology: TerminologyReport::default(),
            density: Density::default(),
            verdict: Verdict::CannotRun,
            reasons: vec![why.to_owned()],
            severity: Severity::Error,
        }
    }
}

/// The whole probe's findings (the JSON document `--json` prints).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub fhir_base: String,
    /// The patient id given with `--patient`.
    pub patient: String,
    pub capability: Capability,
    /// The newest-Encounter look-up for `{{context.encounterId}}` (absent when unreachable).
    pub encounter_lookup: Option<QueryReport>,
    pub services: Vec<ServiceReport>,
    pub severity: Severity,
}

impl Report {
    /// A report with the capability findings and no services yet.
    pub fn new(fhir_base: &str, patient: &str, capability: Capability) -> Self {
        Self {
            fhir_base: fhir_base.to_owned(),
            patient: patient.to_owned(),
            severity: capability.severity,
            capability,
            encounter_lookup: None,
            services: Vec::new(),
        }
    }

    /// Sets the overall severity: the worst of every part.
    pub fn finish(&mut self) {
        self.severity = self
            .services
            .iter()
            .map(|s| s.severity)
            .chain(self.encounter_lookup.iter().map(|q| q.severity))
            .chain([self.capability.severity])
            .max()
            .unwrap_or(Severity::Ok);
    }
}

/// The report as text, one block per service.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "bedside probe of {} for patient {}\n",
        report.fhir_base, report.patient
    );
    capability_text(&mut out, &report.capability);
    if let Some(q) = &report.encounter_lookup {
        let found = if q.resources > 0 {
            "found, used for {{context.encounterId}}"
        } else if q.error.is_some() {
            "failed"
        } else {
            "none: templates with {{context.encounterId}} are skipped"
        };
        let _ = writeln!(out, "Newest Encounter ({}): {found}", q.query);
        if let Some(e) = &q.error {
            let _ = writeln!(out, "  {e}");
        }
        out.push('\n');
    }
    for s in &report.services {
        service_text(&mut out, s);
    }
    let _ = writeln!(
        out,
        "overall: {} (exit {})",
        report.severity.word(),
        report.severity.exit_code()
    );
    out
}

/// Text the server chose (software name, OperationOutcome diagnostics), as printed: control
/// characters (terminal escapes) removed, at most 300 characters.
fn server_text(text: &str) -> String {
    let mut clean: String = text.chars().filter(|c| !c.is_control()).take(300).collect();
    if text.chars().count() > 300 {
        clean.push('…');
    }
    clean
}

fn capability_text(out: &mut String, cap: &Capability) {
    let what = match (&cap.fhir_version, &cap.software) {
        (Some(v), Some(s)) => format!("FHIR {}, {}", server_text(v), server_text(s)),
        (Some(v), None) => format!("FHIR {}", server_text(v)),
        _ => "-".to_owned(),
    };
    let _ = writeln!(
        out,
        "CapabilityStatement: {what}  [{}]",
        cap.severity.word()
    );
    if let Some(e) = &cap.error {
        let _ = writeln!(out, "  {}", server_text(e));
    }
    for r in &cap.resources {
        if !r.supported {
            let _ = writeln!(out, "  {:<18} not supported", r.resource_type);
            continue;
        }
        let mut line = format!("  {:<18} search: ", r.resource_type);
        line.push_str(&if r.used_params.is_empty() {
            "(read only)".to_owned()
        } else {
            r.used_params
                .iter()
                .map(|p| {
                    if r.undeclared_params.contains(p) {
                        format!("{p} (undeclared)")
                    } else {
                        p.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        });
        let _ = write!(
            line,
            "; _sort {}, _count {}",
            declared(r.sort_declared),
            declared(r.count_declared)
        );
        let _ = writeln!(out, "{line}");
    }
    for n in &cap.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    out.push('\n');
}

fn declared(yes: bool) -> &'static str {
    if yes {
        "declared"
    } else {
        "not declared"
    }
}

fn service_text(out: &mut String, s: &ServiceReport) {
    let _ = writeln!(
        out,
        "service {} ({}, model {})  [{}]",
        s.id,
        s.hook,
        s.model,
        s.severity.word()
    );
    for q in &s.queries {
        query_text(out, q);
    }
    if !s.terminology.recognised.is_empty() || !s.terminology.unrecognised.is_empty() {
        let recognised: Vec<String> = s
            .terminology
            .recognised
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "  recognised: {}",
            if recognised.is_empty() {
                "nothing".to_owned()
            } else {
                recognised.join(", ")
            }
        );
        if !s.terminology.not_used.is_empty() {
            let not_used: Vec<String> = s
                .terminology
                .not_used
                .iter()
                .map(|(c, n)| format!("{c} {n}"))
                .collect();
            let _ = writeln!(
                out,
                "  known, not used by this model: {}",
                not_used.join(", ")
            );
        }
        for u in &s.terminology.unrecognised {
            let unit = u
                .unit
                .as_deref()
                .map(|u| format!(" [{u}]"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  unrecognised: {}{unit} ×{}: {}",
                u.code, u.count, u.reason
            );
        }
    }
    if !s.density.channels.is_empty() {
        let channels: Vec<String> = s
            .density
            .channels
            .iter()
            .map(|(c, d)| format!("{c} {}", d.in_window))
            .collect();
        let newest = s
            .density
            .newest_age_minutes
            .map(|m| format!("newest {}", age_words(m)))
            .unwrap_or_else(|| "nothing in the window".to_owned());
        let _ = writeln!(
            out,
            "  in the {} h window: {}; {newest}",
            trim_float(s.density.window_hours),
            channels.join(", ")
        );
        if !s.density.dropped.is_empty() {
            let dropped: Vec<String> = s
                .density
                .dropped
                .iter()
                .map(|(r, n)| format!("{n} {r}"))
                .collect();
            let _ = writeln!(out, "  dropped: {}", dropped.join("; "));
        }
    }
    let _ = writeln!(out, "  verdict: {}", s.verdict.word());
    for r in &s.reasons {
        let _ = writeln!(out, "    - {r}");
    }
    out.push('\n');
}

fn query_text(out: &mut String, q: &QueryReport) {
    let _ = writeln!(out, "  {:<11} {}", q.key, q.query);
    if let Some(why) = &q.skipped {
        let _ = writeln!(out, "              skipped: {why}  [{}]", q.severity.word());
        return;
    }
    let mut facts = vec![match q.status {
        Some(s) => format!("HTTP {s}"),
        None => "no answer".to_owned(),
    }];
    if q.error.is_none() || q.resources > 0 {
        facts.push(format!(
            "{} resource{}",
            q.resources,
            if q.resources == 1 { "" } else { "s" }
        ));
        facts.push(format!(
            "{} page{}",
            q.pages,
            if q.pages == 1 { "" } else { "s" }
        ));
    }
    match q.sort_honoured {
        Some(true) => facts.push("_sort honoured".into()),
        Some(false) => facts.push("_sort IGNORED".into()),
        None => {}
    }
    match q.count_honoured {
        Some(true) => facts.push("_count honoured".into()),
        Some(false) => facts.push(format!("_count NOT honoured (pages of {:?})", q.page_sizes)),
        None => {}
    }
    facts.push(format!("{} ms", q.ms));
    let _ = writeln!(
        out,
        "              {}  [{}]",
        facts.join(", "),
        q.severity.word()
    );
    if let Some(e) = &q.error {
        let _ = writeln!(out, "              error: {}", server_text(e));
    }
    for i in &q.outcome_issues {
        let _ = writeln!(
            out,
            "              OperationOutcome (server text): {} {}{}",
            server_text(&i.severity),
            server_text(&i.code),
            i.diagnostics
                .as_deref()
                .map(|d| format!(": {}", server_text(d)))
                .unwrap_or_default()
        );
    }
}

fn age_words(minutes: i64) -> String {
    if minutes < 120 {
        format!("{minutes} min ago")
    } else if minutes < 48 * 60 {
        format!("{} h ago", minutes / 60)
    } else {
        format!("{} days ago", minutes / (24 * 60))
    }
}

fn trim_float(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_loses_terminal_escapes_and_length() {
        assert_eq!(server_text("a\u{1b}[31mb\n"), "a[31mb");
        assert_eq!(server_text(&"x".repeat(400)).chars().count(), 301);
    }

    #[test]
    fn severities_order_and_map_to_exit_codes() {
        assert!(Severity::Ok < Severity::Warning && Severity::Warning < Severity::Error);
        assert_eq!(
            [Severity::Ok, Severity::Warning, Severity::Error].map(Severity::exit_code),
            [0, 1, 2]
        );
        assert_eq!(
            serde_json::to_string(&Verdict::WouldAbstain).unwrap(),
            "\"would-abstain\""
        );
        assert_eq!(
            serde_json::to_string(&Severity::Warning).unwrap(),
            "\"warning\""
        );
    }
}
