//! Entry points for fuzzing the parsers that face untrusted input: the hook request body, a
//! FHIR Bundle on its way to features, prefetch template rendering, and the client JWT before
//! verification. `fuzz/` (cargo fuzz) calls these; `tests/ops/fuzz_corpus.rs` replays the committed
//! corpus and every crash found through them, so a fixed crash stays fixed in CI.
//!
//! Each function must return normally for any input: an `Err` is fine, a panic is a bug.

use std::sync::OnceLock;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::value::RawValue;

use crate::cds::prefetch::PrefetchTemplate;
use crate::cds::wire::HookRequest;
use crate::features::{measurements, FeatureMatrix, FeatureSpec, Normalisation};
use crate::fhir::projection;
use crate::hooks::HookError;

/// Every model's spec: between them they use each unit conversion, aggregate, carry limit and
/// transform the grid knows.
const FEATURES: [&str; 3] = [
    include_str!("../models/deterioration/features.toml"),
    include_str!("../models/sepsis/features.toml"),
    include_str!("../models/aki/features.toml"),
];
const TEMPLATES: &[&str] = &[
    "Patient/{{context.patientId}}",
    "Observation?patient={{context.patientId}}&category=vital-signs&_sort=-date&_count=500",
    "Practitioner/{{userPractitionerId}}",
    "{{context.userId}}",
];

fn specs() -> &'static [FeatureSpec] {
    static SPECS: OnceLock<Vec<FeatureSpec>> = OnceLock::new();
    SPECS.get_or_init(|| {
        FEATURES
            .iter()
            .filter_map(|text| FeatureSpec::parse(text).ok())
            .collect()
    })
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0)
        .single()
        .unwrap_or_default()
}

/// A hook request body as the invoke route reads it, then every template rendered from its
/// context.
pub fn hook_request(data: &[u8]) {
    let Ok(request) = HookError::parse_body::<HookRequest<'_>>(data) else {
        return;
    };
    let _ = crate::cds::context::missing_field(&request.hook, &request.context);
    for t in TEMPLATES {
        if let Ok(template) = PrefetchTemplate::parse(t) {
            let _ = template.render(&request.context);
        }
    }
    for value in request.prefetch.iter().flat_map(|m| m.values()) {
        features_of(value);
    }
}

/// A prefetch value or fetched page (any JSON) through projection, extraction and the grid.
pub fn bundle_to_features(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(raw) = serde_json::from_str::<&RawValue>(text) {
        features_of(raw);
    }
}

fn features_of(raw: &RawValue) {
    let Ok(projected) = projection::observations(raw) else {
        return;
    };
    for spec in specs() {
        let (found, _) = measurements(spec, &projected.observations);
        let norm = Normalisation {
            mean: vec![0.0; spec.channels()],
            std: vec![1.0; spec.channels()],
        };
        let matrix = FeatureMatrix::build(spec, &norm, &found, now());
        let _ = matrix.with_each_feature_removed();
        let occluded = matrix.occludable(8);
        let _ = matrix.with_each_measurement_removed(spec, &norm, &occluded);
        // Made-up contributions: every measurement's words and every trend are rendered.
        let contributions: Vec<(usize, f32)> = (0..matrix.measurements.len())
            .map(|i| (i, 0.01 * (i % 7) as f32))
            .collect();
        let _ = crate::features::explain::explain(spec, &matrix, &contributions, 5);
    }
}

/// First line: a template; the rest: a JSON `context`.
pub fn prefetch_template(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (template, context) = text.split_once('\n').unwrap_or((text, "{}"));
    let Ok(template) = PrefetchTemplate::parse(template) else {
        return;
    };
    if let Ok(context) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(context)
    {
        let _ = template.render(&context);
    }
}

/// An `Authorization` header value through the pre-verification parsing.
pub fn client_jwt(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::http::auth::inspect(Some(text));
    }
}

/// The SMART callback's query string (first line) and token response (the rest).
pub fn smart_callback(data: &[u8]) {
    crate::smart::read_callback_and_token_response(data);
}
