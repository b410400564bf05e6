//! The foundation model's tokeniser and embedding, Rust (serving) against Python (pretraining):
//! the same Bundles — both generators' patients, whose records use the code variants real
//! servers send, and a hand-written record with the rest (ICD-10-CM and ICD-10, SNOMED only, a
//! referenced Medication, an ICU known by its location type, entered-in-error resources, an
//! implausible value, °F and µmol/L) — at early, mid-stay and end-of-stay times must give the
//! same token ids, hours, counts and dropped observations, and the shipped TorchScript model
//! the same embedding through `tch` as through PyTorch.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use bedside::features::tokens::{encode, events_of_bundle};
use bedside::inference::{FoundationModel, InferenceSettings};
use chrono::DateTime;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::common;

#[tokio::test]
async fn rust_and_python_tokenise_and_embed_the_same_records_alike() {
    let model_dir = common::repo().join("models/foundation/1.0.0");
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(common::repo().join(".venv/bin/python"))
        .current_dir(common::repo())
        .args(["-m", "models.foundation.parity", "--n", "3", "--model"])
        .arg(&model_dir)
        .arg("--out")
        .arg(out.path())
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "parity cases: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let cases: Vec<Value> =
        serde_json::from_slice(&std::fs::read(out.path().join("cases.json")).unwrap()).unwrap();
    assert_eq!(
        cases.len(),
        3 * 2 * 3 + 2,
        "cases from both generators and the variants"
    );
    let fm = FoundationModel::load(
        &model_dir.join("foundation.toml"),
        &InferenceSettings::cpu(),
    )
    .unwrap();
    let (mut tokens, mut dropped_total) = (0, 0);
    for case in &cases {
        let path = case["bundle"].as_str().unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        let raw: &RawValue = serde_json::from_str(&text).unwrap();
        let read = events_of_bundle(&fm.spec, raw).unwrap();
        let now = DateTime::from_timestamp_micros(case["now_us"].as_i64().unwrap()).unwrap();
        let enc = encode(&fm.vocab, &read.events, now);
        let want_ids: Vec<i64> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(enc.ids, want_ids, "{path} at {now}");
        let want_hours: Vec<f32> = serde_json::from_value(case["hours"].clone()).unwrap();
        assert_eq!(enc.hours.len(), want_hours.len());
        for (got, want) in enc.hours.iter().zip(&want_hours) {
            assert!(
                (got - want).abs() <= 1e-5,
                "{path} at {now}: hours {got} vs {want}"
            );
        }
        assert_eq!(
            enc.events as u64,
            case["events"].as_u64().unwrap(),
            "{path}"
        );
        assert_eq!(
            enc.unknown as u64,
            case["unknown"].as_u64().unwrap(),
            "{path}"
        );
        let want_dropped: BTreeMap<String, usize> =
            serde_json::from_value(case["dropped"].clone()).unwrap();
        let got_dropped: BTreeMap<String, usize> = read
            .dropped
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect();
        assert_eq!(got_dropped, want_dropped, "{path}");
        let embedding = fm
            .embed(
                enc.ids.clone(),
                enc.hours.clone(),
                Instant::now() + Duration::from_secs(10),
            )
            .await
            .unwrap();
        let want: Vec<f32> = serde_json::from_value(case["embedding"].clone()).unwrap();
        assert_eq!(embedding.len(), want.len());
        let worst = embedding
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst <= 1e-4,
            "{path} at {now}: embedding differs by {worst}"
        );
        tokens += enc.ids.len();
        if path.ends_with("variants.json") {
            let names: Vec<&str> = enc.ids.iter().filter_map(|i| fm.vocab.token(*i)).collect();
            for expected in ["GENDER/female", "ICD10/N18", "ICD10/J44", "RXNORM/74169"] {
                assert!(names.contains(&expected), "{expected} not in {names:?}");
            }
        }
        dropped_total += got_dropped.values().sum::<usize>();
    }
    // The comparison covered real records, not empty ones.
    assert!(tokens > 2000, "{tokens} tokens compared");
    assert!(dropped_total >= 2, "the dropped observations were compared");
}
