//! Training/serving parity over the synthetic cohort: the same FHIR Bundles go through the Rust
//! feature pipeline and `models/featurize.py` (what training and evaluation use), for every model's
//! `features.toml`, and the tensors must agree to 1e-6 cell by cell. Unit mix-ups (°F, µmol/L,
//! lactate in mg/dL), irregular sampling, missing values and non-final statuses are all in the
//! cohort, so conversion, aggregation, forward-fill age and masks are all compared.

use crate::common;

use crate::common::cohort::Cohort;

use std::path::PathBuf;
use std::process::Command;

use bedside::features::{measurements, FeatureMatrix};
use bedside::fhir::projection;
use bedside::inference::InferenceSettings;
use bedside::inference::ModelRegistry;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::value::RawValue;
use serde_json::Value;

const TOLERANCE: f32 = 1e-6;

fn python() -> PathBuf {
    let python = common::repo().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run .ci/setup (it creates the venv)",
        python.display()
    );
    python
}

fn at(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

#[test]
fn rust_and_python_features_agree_on_cohort_bundles_for_every_model() {
    let cohort = Cohort::generate(8, 11);
    let (dir, index) = (&cohort.dir, &cohort.index);
    // Three reference times per patient: early (partly empty window), mid-stay, end of stay.
    let mut pairs: Vec<(PathBuf, DateTime<Utc>)> = Vec::new();
    for p in index {
        let bundle = dir
            .path()
            .join(format!("{}.json", p["id"].as_str().unwrap()));
        let (admit, discharge) = (at(&p["admit"]), at(&p["discharge"]));
        for now in [
            admit + Duration::hours(20),
            admit + Duration::minutes(50 * 60 + 17),
            discharge - Duration::hours(1),
        ] {
            pairs.push((bundle.clone(), now));
        }
    }
    let pairs_json: Vec<Value> = pairs
        .iter()
        .map(|(b, t)| {
            serde_json::json!([
                b.display().to_string(),
                t.to_rfc3339_opts(SecondsFormat::Secs, true)
            ])
        })
        .collect();
    let pairs_file = dir.path().join("pairs.json");
    std::fs::write(&pairs_file, serde_json::to_vec(&pairs_json).unwrap()).unwrap();

    let registry =
        ModelRegistry::load(&common::repo().join("models"), &InferenceSettings::cpu()).unwrap();
    let mut compared = 0;
    let versions = [
        ("sepsis", "3.0.1"),
        ("aki", "2.0.0"),
        ("deterioration", "2.0.0"),
        ("deterioration", "4.0.1"),
    ];
    for (name, version) in versions {
        let model = registry.get(name, version).unwrap();
        let repo = common::repo();
        let out = Command::new(python())
            .arg(repo.join("models/featurize.py"))
            .arg("--spec")
            .arg(
                model
                    .model_card
                    .parent()
                    .unwrap()
                    .join(&model.manifest.features),
            )
            .arg("--manifest")
            .arg(repo.join(format!("models/{name}/{version}/manifest.toml")))
            .arg("--pairs")
            .arg(&pairs_file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "featurize.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let python: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(python.len(), pairs.len());
        let mut nonzero_cells = 0;
        for ((bundle, now), want) in pairs.iter().zip(&python) {
            let text = std::fs::read_to_string(bundle).unwrap();
            let raw: Box<RawValue> = serde_json::from_str(&text).unwrap();
            let projected = projection::observations(&raw).unwrap();
            let (found, rejected) = measurements(&model.features, &projected.observations);
            assert_eq!(found.len() as u64, want["measurements"].as_u64().unwrap());
            assert_eq!(rejected.len() as u64, want["rejected"].as_u64().unwrap());
            let x = FeatureMatrix::build(&model.features, &model.normalisation, &found, *now);
            let want: Vec<f32> = want["tensor"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|row| row.as_array().unwrap().iter())
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(want.len(), x.values.len(), "{name}: tensor size");
            let channels = x.features * 2;
            for (i, (got, want)) in x.values.iter().zip(&want).enumerate() {
                assert!(
                    (got - want).abs() <= TOLERANCE,
                    "{name} {} at {now}: cell [{}][{}] Rust {got}, Python {want}",
                    bundle.display(),
                    i / channels,
                    i % channels
                );
                nonzero_cells += usize::from(*got != 0.0);
            }
            compared += 1;
        }
        // Guard against comparing two empty tensors.
        assert!(
            nonzero_cells > 1000,
            "{name}: only {nonzero_cells} non-zero cells"
        );
    }
    assert_eq!(compared, versions.len() * pairs.len());
}
