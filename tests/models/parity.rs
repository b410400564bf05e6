//! Training/serving parity: the Rust feature pipeline and the TorchScript model reproduce what
//! the Python reference (`models/legacy/deterioration_v1/fhir_features.py`) computed for each fixture.

use crate::common;

use std::time::{Duration, Instant};

use bedside::cds::wire::HookRequest;
use bedside::features::news2::{self, Vitals};
use bedside::features::{measurements, FeatureMatrix};
use bedside::fhir::projection;
use bedside::inference::InferenceSettings;
use bedside::inference::ModelRegistry;
use serde_json::Value;

/// Python rounds the expected tensor to 6 decimals; f32 adds < 5e-7 at these magnitudes.
const TOLERANCE: f32 = 1e-6;

#[tokio::test]
async fn rust_features_and_model_match_the_python_reference() {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(
            common::repo().join("models/legacy/deterioration_v1/parity_expected.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let now = expected["now"].as_str().unwrap().parse().unwrap();
    // Version 1.0.0 is retired (the gateway no longer loads it); its frozen pipeline is still
    // the reference this parity holds against, so it is loaded from a copy marked active.
    let dir = tempfile::tempdir().unwrap();
    let models = retired_v1_as_active(dir.path());
    let registry = ModelRegistry::load(&models, &InferenceSettings::cpu()).unwrap();
    let model = registry.get("deterioration", "1.0.0").unwrap();
    assert_eq!(
        model.manifest.sha256,
        expected["model_sha256"].as_str().unwrap()
    );
    let fixtures = expected["fixtures"].as_object().unwrap();
    assert_eq!(fixtures.len(), 4);
    for (name, want) in fixtures {
        let text = common::fixture(&format!("patients/{name}"));
        let request: HookRequest<'_> = serde_json::from_str(&text).unwrap();
        let vitals = request.prefetch.as_ref().unwrap()["vitals"];
        let projected = projection::observations(vitals).unwrap();
        let (found, _) = measurements(&model.features, &projected.observations);
        let matrix = FeatureMatrix::build(&model.features, &model.normalisation, &found, now);

        let want_tensor: Vec<f32> = want["tensor"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
            })
            .collect();
        assert_eq!(want_tensor.len(), matrix.values.len(), "{name}");
        for (i, (got, want)) in matrix.values.iter().zip(&want_tensor).enumerate() {
            assert!(
                (got - want).abs() <= TOLERANCE,
                "{name}: cell [{}][{}] = {got}, Python {want}",
                i / 12,
                i % 12
            );
        }

        let risk = model
            .handle
            .score(
                matrix.values.clone(),
                1,
                Instant::now() + Duration::from_secs(10),
            )
            .await
            .unwrap()[0];
        let want_risk = want["risk"].as_f64().unwrap() as f32;
        assert!(
            (risk - want_risk).abs() < 1e-5,
            "{name}: risk {risk}, Python {want_risk}"
        );

        let score = news2::score(&Vitals::latest(
            &model.features,
            &matrix,
            matrix.window_start,
        ));
        assert_eq!(
            i64::from(score.total),
            want["news2"].as_i64().unwrap(),
            "{name}: NEWS2"
        );
    }
}

/// A models folder with only deterioration 1.0.0 (retired in the repository), marked active.
fn retired_v1_as_active(dir: &std::path::Path) -> std::path::PathBuf {
    let src = common::repo().join("models/deterioration");
    let dst = dir.join("models/deterioration");
    std::fs::create_dir_all(dst.join("1.0.0")).unwrap();
    std::fs::copy(src.join("features.toml"), dst.join("features.toml")).unwrap();
    std::fs::copy(src.join("1.0.0/model.pt"), dst.join("1.0.0/model.pt")).unwrap();
    let manifest = std::fs::read_to_string(src.join("1.0.0/manifest.toml")).unwrap();
    assert!(
        manifest.contains("status = \"retired\""),
        "1.0.0 is retired"
    );
    std::fs::write(
        dst.join("1.0.0/manifest.toml"),
        manifest.replace("status = \"retired\"", "status = \"active\""),
    )
    .unwrap();
    dir.join("models")
}
