//! Rust/Python parity on Bundles coded the way another hospital codes them (the variants of
//! `models/terminology.toml`): SpO2 as 2708-6 / 20564-1 with `http://loinc.org/`, heart rate as
//! 8889-8 in "beats/min", BP only as panel components under the LOINC OID, oral temperature in
//! °F, GCS instead of ACVPU, ACVPU as text, O2 flow and FiO2 as a fraction, creatinine in µmol/L,
//! lactate 59032-3 in mg/dL, microsecond timestamps with offsets, artefacts, values beyond the
//! training range, WHO ICD-10 J96.1. Both sides must give the same measurements, rejections by
//! reason, clamped counts, tensors (1e-6), abstentions and NEWS2 (on oxygen, scale 2).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use bedside::features::news2::{self, SpO2Scale, Vitals};
use bedside::features::terminology::terminology;
use bedside::features::{measurements, oxygen, FeatureMatrix};
use bedside::fhir::projection;
use bedside::inference::{InferenceSettings, ModelRegistry};
use bedside::services::{abstain, scoring};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::value::RawValue;
use serde_json::{json, Value};

const TOLERANCE: f32 = 1e-6;

fn now() -> DateTime<Utc> {
    "2026-03-01T12:00:00Z".parse().unwrap()
}

/// `minutes` before [`now`], written with microseconds and a +02:00 offset.
fn at(minutes: i64) -> String {
    let t = now() - Duration::minutes(minutes) + Duration::microseconds(123_456);
    let local = t.with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap());
    local.to_rfc3339_opts(SecondsFormat::Micros, false)
}

fn coding(system: &str, code: &str) -> Value {
    json!({ "coding": [{ "system": system, "code": code }] })
}

fn quantity(id: &str, system: &str, code: &str, minutes: i64, q: Value) -> Value {
    json!({ "resource": {
        "resourceType": "Observation", "id": id, "status": "final",
        "code": coding(system, code), "effectiveDateTime": at(minutes), "valueQuantity": q,
    }})
}

const LOINC_SLASH: &str = "http://loinc.org/";
const LOINC_OID: &str = "urn:oid:2.16.840.1.113883.6.1";

/// Hourly vitals over `hours` (every `every` minutes) in the variant codings.
fn vitals(entries: &mut Vec<Value>, hours: i64, every: i64, spo2_low: bool) {
    for (i, m) in (0..hours * 60).step_by(every as usize).enumerate() {
        let m = m + 7;
        let i = i as f64;
        entries.push(quantity(
            &format!("hr-{m}"),
            LOINC_SLASH,
            "8889-8",
            m,
            json!({ "value": 88.0 + i % 7.0, "unit": "beats/min" }),
        ));
        entries.push(quantity(
            &format!("rr-{m}"),
            LOINC_OID,
            "9279-1",
            m,
            json!({ "value": 18.0 + i % 5.0, "unit": "breaths/min" }),
        ));
        let spo2 = if spo2_low && m < 120 {
            84.0
        } else {
            94.0 - i % 3.0
        };
        let code = if m % 2 == 0 { "2708-6" } else { "20564-1" };
        entries.push(quantity(&format!("spo2-{m}"), LOINC_SLASH, code, m,
            json!({ "value": spo2, "unit": "%", "system": "http://unitsofmeasure.org/", "code": "%" })));
        entries.push(json!({ "resource": {
            "resourceType": "Observation", "id": format!("bp-{m}"), "status": "final",
            "code": coding(LOINC_OID, "85354-9"), "effectiveDateTime": at(m),
            "component": [
                { "code": coding(LOINC_OID, "8480-6"), "valueQuantity": { "value": 104.0 - i % 9.0, "unit": "mmHg" } },
                { "code": coding(LOINC_OID, "8462-4"), "valueQuantity": { "value": 61.0, "unit": "mmHg" } },
            ],
        }}));
        entries.push(quantity(
            &format!("t-{m}"),
            "http://loinc.org",
            "8331-1",
            m,
            json!({ "value": 100.2 + (i % 4.0) / 10.0, "unit": "°F" }),
        ));
    }
}

/// The patients: (name, entries).
fn patients() -> Vec<(&'static str, Vec<Value>)> {
    // A: dense variant vitals, GCS, text ACVPU, oxygen, labs, artefacts, WHO ICD-10 J96.1.
    let mut a = Vec::new();
    vitals(&mut a, 20, 60, true);
    a.push(quantity(
        "hr-artefact",
        LOINC_SLASH,
        "8889-8",
        95,
        json!({ "value": 0.0, "unit": "bpm" }),
    ));
    a.push(quantity(
        "spo2-artefact",
        LOINC_SLASH,
        "2708-6",
        65,
        json!({ "value": 12.0, "unit": "%" }),
    ));
    a.push(quantity(
        "gcs-1",
        "http://loinc.org",
        "9269-2",
        600,
        json!({ "value": 15.0, "unit": "{score}" }),
    ));
    a.push(quantity(
        "gcs-2",
        LOINC_OID,
        "9269-2",
        50,
        json!({ "value": 14.0 }),
    ));
    a.push(json!({ "resource": {
        "resourceType": "Observation", "id": "avpu-text", "status": "final",
        "code": coding(LOINC_SLASH, "67775-7"), "effectiveDateTime": at(400),
        "valueCodeableConcept": { "text": "Voice" },
    }}));
    a.push(quantity(
        "o2-1",
        "http://loinc.org",
        "3151-8",
        300,
        json!({ "value": 0.0, "unit": "L/min" }),
    ));
    a.push(quantity(
        "o2-2",
        "http://loinc.org",
        "3151-8",
        40,
        json!({ "value": 2.0, "unit": "l/min" }),
    ));
    a.push(quantity(
        "crea",
        LOINC_SLASH,
        "14682-9",
        200,
        json!({ "value": 132.6, "unit": "µmol/L" }),
    ));
    a.push(quantity(
        "crea-0",
        LOINC_SLASH,
        "14682-9",
        1500,
        json!({ "value": 88.4, "unit": "umol/L" }),
    ));
    a.push(quantity(
        "lact",
        LOINC_SLASH,
        "59032-3",
        180,
        json!({ "value": 27.0, "unit": "mg/dL" }),
    ));
    a.push(quantity(
        "wbc",
        LOINC_SLASH,
        "26464-8",
        190,
        json!({ "value": 14.2, "unit": "x10^9/L" }),
    ));
    a.push(quantity(
        "plt",
        LOINC_SLASH,
        "26515-7",
        190,
        json!({ "value": 151.0, "unit": "10^9/L" }),
    ));
    a.push(json!({ "resource": {
        "resourceType": "Condition", "clinicalStatus": coding("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
        "code": coding("http://hl7.org/fhir/sid/icd-10", "J96.1"),
    }}));
    // B: 12-hourly vitals, FiO2 0.21 (air), ICD-10-CM without the dot.
    let mut b = Vec::new();
    vitals(&mut b, 36, 720, false);
    b.push(quantity(
        "fio2",
        "http://loinc.org",
        "3150-0",
        30,
        json!({ "value": 0.21, "unit": "1" }),
    ));
    b.push(quantity(
        "gcs",
        "http://loinc.org",
        "9269-2",
        30,
        json!({ "value": 15.0 }),
    ));
    b.push(json!({ "resource": {
        "resourceType": "Condition",
        "code": coding("http://hl7.org/fhir/sid/icd-10-cm", "J9612"),
    }}));
    // C: the first hours of a stay, FiO2 40 %.
    let mut c = Vec::new();
    vitals(&mut c, 2, 60, false);
    c.push(quantity(
        "fio2",
        "http://loinc.org",
        "3150-0",
        20,
        json!({ "value": 40.0, "unit": "%" }),
    ));
    // D: no systolic BP in 12 h (only respiratory rate and heart rate): incomplete set.
    let mut d = Vec::new();
    for m in (30..600).step_by(60) {
        d.push(quantity(
            &format!("hr-{m}"),
            LOINC_SLASH,
            "8867-4",
            m,
            json!({ "value": 80.0, "unit": "/min" }),
        ));
        d.push(quantity(
            &format!("rr-{m}"),
            LOINC_SLASH,
            "9279-1",
            m,
            json!({ "value": 16.0, "unit": "/min" }),
        ));
    }
    vec![
        ("variants", a),
        ("twelve-hourly", b),
        ("first-hours", c),
        ("incomplete", d),
    ]
}

fn python() -> PathBuf {
    common::repo().join(".venv/bin/python")
}

fn run(args: &[&Path]) -> Value {
    let out = Command::new(python()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        args.first(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn rust_and_python_read_every_terminology_variant_alike() {
    let dir = tempfile::tempdir().unwrap();
    let bundles: Vec<(&str, PathBuf, String)> = patients()
        .into_iter()
        .map(|(name, entries)| {
            let text = json!({ "resourceType": "Bundle", "type": "collection", "entry": entries })
                .to_string();
            let path = dir.path().join(format!("{name}.json"));
            std::fs::write(&path, &text).unwrap();
            (name, path, text)
        })
        .collect();
    let stamp = now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let pairs: Vec<Value> = bundles
        .iter()
        .map(|(_, p, _)| json!([p.display().to_string(), stamp]))
        .collect();
    let pairs_file = dir.path().join("pairs.json");
    std::fs::write(&pairs_file, serde_json::to_vec(&pairs).unwrap()).unwrap();

    let repo = common::repo();
    let registry = ModelRegistry::load(&repo.join("models"), &InferenceSettings::cpu()).unwrap();
    for (name, version) in [
        ("sepsis", "3.0.1"),
        ("aki", "2.0.0"),
        ("deterioration", "2.0.0"),
        ("deterioration", "4.0.1"),
    ] {
        let model = registry.get(name, version).unwrap();
        let spec_path = model
            .model_card
            .parent()
            .unwrap()
            .join(&model.manifest.features);
        let manifest = repo.join(format!("models/{name}/{version}/manifest.toml"));
        let python = run(&[
            &repo.join("models/featurize.py"),
            Path::new("--spec"),
            &spec_path,
            Path::new("--manifest"),
            &manifest,
            Path::new("--clamp"),
            Path::new("--pairs"),
            &pairs_file,
        ]);
        for ((patient, _, text), want) in bundles.iter().zip(python.as_array().unwrap()) {
            let raw: Box<RawValue> = serde_json::from_str(text).unwrap();
            let projected = projection::observations(&raw).unwrap();
            let (found, rejected) = measurements(&model.features, &projected.observations);
            let what = format!("{name} {patient}");
            assert_eq!(
                found.len() as u64,
                want["measurements"].as_u64().unwrap(),
                "{what}"
            );
            let mut reasons = serde_json::Map::new();
            for r in &rejected {
                let n = reasons.get(r.reason).and_then(Value::as_u64).unwrap_or(0);
                reasons.insert(r.reason.to_owned(), json!(n + 1));
            }
            assert_eq!(Value::Object(reasons), want["rejected_by_reason"], "{what}");
            // The same values, feature by feature, in the same order.
            let values = want["values"].as_array().unwrap();
            for (m, v) in found.iter().zip(values) {
                assert_eq!(m.feature as u64, v[0].as_u64().unwrap(), "{what}");
                let py = v[2].as_f64().unwrap();
                assert!((m.value - py).abs() < 1e-9, "{what}: {} vs {py}", m.value);
            }
            // As the services prepare it: extraction, grid, clamping to the training range.
            let prepared = scoring::prepare(&model, &projected.observations, 0, now());
            let mut clamped = serde_json::Map::new();
            for (key, n) in &prepared.quality.clamped {
                let feature = key.rsplit(": ").next().unwrap();
                clamped.insert(feature.to_owned(), json!(n));
            }
            assert_eq!(Value::Object(clamped), want["clamped"], "{what}");
            let tensor: Vec<f32> = want["tensor"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|row| row.as_array().unwrap().iter())
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(tensor.len(), prepared.matrix.values.len(), "{what}");
            for (i, (got, want)) in prepared.matrix.values.iter().zip(&tensor).enumerate() {
                assert!(
                    (got - want).abs() <= TOLERANCE,
                    "{what}: cell {i} Rust {got}, Python {want}"
                );
            }
            let reason = abstain::reason(
                &model.manifest.validity,
                None,
                &model.features,
                &prepared.matrix,
                now(),
            );
            assert_eq!(json!(reason), want["abstain"], "{what}");
        }
    }

    // What the variants must give, not only alike on both sides.
    let model = registry.get("deterioration", "2.0.0").unwrap();
    let check = |patient: &str| {
        let (_, _, text) = bundles.iter().find(|(n, ..)| *n == patient).unwrap();
        let raw: Box<RawValue> = serde_json::from_str(text).unwrap();
        let projected = projection::observations(&raw).unwrap();
        let prepared = scoring::prepare(&model, &projected.observations, 0, now());
        let reason = abstain::reason(
            &model.manifest.validity,
            None,
            &model.features,
            &prepared.matrix,
            now(),
        );
        (prepared, reason)
    };
    let (a, reason) = check("variants");
    // Two artefacts among ~100 readings: dropped and counted, no abstention; SpO2 84 % (below
    // the training range) clamped and counted.
    assert_eq!(reason, None, "artefacts no longer block the window");
    assert_eq!(
        a.quality.dropped.get(bedside::features::IMPLAUSIBLE),
        Some(&2)
    );
    assert_eq!(
        a.quality
            .clamped
            .get("outside training range, clamped: spo2"),
        Some(&2)
    );
    for f in [
        "heart_rate",
        "respiratory_rate",
        "spo2",
        "systolic_bp",
        "temperature",
        "consciousness_not_alert",
    ] {
        let i = model.features.index_of(f).unwrap();
        assert!(a.matrix.count(i) > 0, "{f} read from its variant coding");
    }
    assert_eq!(
        check("twelve-hourly").1,
        None,
        "12-hourly vitals are scored"
    );
    assert_eq!(
        check("first-hours").1,
        None,
        "the first hours of a stay are scored"
    );
    assert!(check("incomplete").1.unwrap().starts_with(
        "no complete set of core observations in the last 12 h: no spo2 and systolic bp"
    ));

    // NEWS2 as gathered on both sides: on oxygen from O2 flow / FiO2, consciousness from GCS,
    // scale 2 from WHO ICD-10 J96.1 and ICD-10-CM J9612.
    let spec_path = repo.join("models/deterioration/features.toml");
    let not_before = now() - Duration::hours(6);
    let cases: Vec<Value> = bundles
        .iter()
        .map(|(_, p, _)| {
            json!({
                "spec": spec_path.display().to_string(),
                "bundle": p.display().to_string(),
                "now": stamp,
                "not_before": not_before.to_rfc3339_opts(SecondsFormat::Secs, true),
            })
        })
        .collect();
    let cases_file = dir.path().join("news2.json");
    std::fs::write(&cases_file, serde_json::to_vec(&cases).unwrap()).unwrap();
    let python = run(&[
        &repo.join("models/baselines.py"),
        Path::new("--inputs"),
        &cases_file,
    ]);
    let mut seen = Vec::new();
    for ((patient, _, text), want) in bundles.iter().zip(python.as_array().unwrap()) {
        let raw: Box<RawValue> = serde_json::from_str(text).unwrap();
        let projected = projection::observations(&raw).unwrap();
        let (found, _) = measurements(&model.features, &projected.observations);
        let matrix = FeatureMatrix::build(&model.features, &model.normalisation, &found, now());
        let scale2 =
            projection::has_active_condition(&raw, |s, c| terminology().is_scale2_condition(s, c));
        let vitals = Vitals {
            on_oxygen: oxygen::on_oxygen(
                &projected.observations,
                not_before.max(matrix.window_start),
                now(),
            ),
            spo2_scale: if scale2 {
                SpO2Scale::Scale2
            } else {
                SpO2Scale::Scale1
            },
            ..Vitals::latest(&model.features, &matrix, not_before)
        };
        let s = news2::score(&vitals);
        assert_eq!(
            json!(vitals.on_oxygen),
            want["vitals"]["on_oxygen"],
            "{patient}"
        );
        assert_eq!(json!(vitals.alert), want["vitals"]["alert"], "{patient}");
        assert_eq!(
            u64::from(s.scale.number()),
            want["scale"].as_u64().unwrap(),
            "{patient}"
        );
        assert_eq!(
            u64::from(s.total),
            want["news2"]["total"].as_u64().unwrap(),
            "{patient}"
        );
        assert_eq!(json!(s.missing), want["news2"]["missing"], "{patient}");
        seen.push((*patient, vitals.on_oxygen, vitals.alert, s.scale.number()));
    }
    assert_eq!(
        seen,
        [
            ("variants", Some(true), Some(false), 2),
            ("twelve-hourly", Some(false), Some(true), 2),
            ("first-hours", Some(true), None, 1),
            ("incomplete", None, None, 1),
        ]
    );
}
