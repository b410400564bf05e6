//! Rust/Python parity of the deterministic bedside baselines (NEWS2 on both SpO2 scales, qSOFA,
//! SIRS, KDIGO creatinine staging): a fixed grid of cases, dense at every published threshold
//! and rounding edge, is scored here and by `models/baselines.py --eval`, and every result must
//! be the same. A threshold moved on either side changes the result of the cases at that edge,
//! so this test fails; the coverage check at the end fails if the grid stops reaching an edge.

use crate::common;

use std::collections::BTreeMap;
use std::process::Command;

use bedside::features::news2::{self, SpO2Scale, Vitals};
use bedside::features::{kdigo, qsofa, sirs};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

const CASES: usize = 2000;
/// 2026-01-01T12:00:00Z, the reference time of every KDIGO case.
const NOW: i64 = 1_767_268_800;
const HOUR: i64 = 3600;

/// Knuth's MMIX LCG: deterministic across platforms, no dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }

    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
}

/// Offsets that straddle a threshold as charted to whole numbers (including the half that
/// Python's `round` would send the other way) and to one decimal.
const WHOLE: &[f64] = &[-1.0, -0.5, -0.49, 0.0, 0.0, 0.49, 0.5, 1.0];
const TENTH: &[f64] = &[-0.1, -0.06, -0.05, -0.04, 0.0, 0.0, 0.04, 0.05, 0.06, 0.1];

/// A value: 8% not recorded, else 65% at a threshold ± an edge offset, else anywhere in `lo..=hi`
/// (to one decimal).
fn value(rng: &mut Lcg, edges: &[f64], offsets: &[f64], lo: i64, hi: i64) -> Option<f64> {
    if rng.chance(8) {
        None
    } else if rng.chance(65) {
        Some(rng.pick(edges) + rng.pick(offsets))
    } else {
        Some(rng.between(lo * 10, hi * 10) as f64 / 10.0)
    }
}

fn flag(rng: &mut Lcg) -> Option<bool> {
    match rng.below(10) {
        0 => None,
        x => Some(x % 2 == 0),
    }
}

struct Case {
    vitals: Vitals,
    paco2: Option<f64>,
    wbc: Option<f64>,
    bands: Option<f64>,
    creatinine: Vec<(i64, f64)>,
    on_rrt: bool,
}

fn case(rng: &mut Lcg) -> Case {
    let vitals = Vitals {
        respiratory_rate: value(
            rng,
            &[8.0, 9.0, 11.0, 12.0, 20.0, 21.0, 22.0, 24.0, 25.0],
            WHOLE,
            4,
            40,
        ),
        spo2: value(
            rng,
            &[
                83.0, 84.0, 85.0, 86.0, 87.0, 88.0, 91.0, 92.0, 93.0, 94.0, 95.0, 96.0, 97.0,
            ],
            WHOLE,
            75,
            100,
        ),
        on_oxygen: flag(rng),
        systolic_bp: value(
            rng,
            &[90.0, 91.0, 100.0, 101.0, 110.0, 111.0, 219.0, 220.0],
            WHOLE,
            60,
            240,
        ),
        heart_rate: value(
            rng,
            &[
                40.0, 41.0, 50.0, 51.0, 90.0, 91.0, 110.0, 111.0, 130.0, 131.0,
            ],
            WHOLE,
            30,
            160,
        ),
        alert: flag(rng),
        temperature: value(
            rng,
            &[35.0, 35.1, 36.0, 36.1, 38.0, 38.1, 39.0, 39.1],
            TENTH,
            33,
            41,
        ),
        spo2_scale: if rng.chance(50) {
            SpO2Scale::Scale2
        } else {
            SpO2Scale::Scale1
        },
    };
    let paco2 = if rng.chance(40) {
        value(rng, &[31.0, 32.0, 33.0], WHOLE, 20, 50)
    } else {
        None
    };
    let wbc = value(rng, &[3.9, 4.0, 12.0, 12.1], TENTH, 1, 25);
    let bands = if rng.chance(30) {
        value(rng, &[10.0, 11.0], WHOLE, 0, 30)
    } else {
        None
    };
    Case {
        vitals,
        paco2,
        wbc,
        bands,
        creatinine: creatinine(rng),
        on_rrt: rng.chance(4),
    }
}

/// A creatinine series (epoch seconds, mg/dL) in shuffled order, built around a baseline `b`
/// and a latest value at one of the KDIGO edges, with earlier values at the window edges.
fn creatinine(rng: &mut Lcg) -> Vec<(i64, f64)> {
    let n = match rng.below(100) {
        0..=2 => 0,
        3..=9 => 1,
        10..=54 => 2,
        _ => rng.between(3, 5) as usize,
    };
    let b = rng.between(30, 250); // hundredths of a mg/dL
    let latest = match rng.below(7) {
        0 => b + rng.between(29, 31),
        1 => 3 * b / 2 + rng.between(-1, 1),
        2 => 2 * b + rng.between(-1, 1),
        3 => 3 * b + rng.between(-1, 1),
        4 => rng.between(399, 401),
        5 => b + rng.between(-100, 10),
        _ => b + rng.between(-50, 300),
    }
    .max(1);
    let latest_t = match rng.below(20) {
        0 => NOW + HOUR, // after `now`: not usable
        1 => NOW,
        _ => NOW - rng.between(0, 72) * HOUR,
    };
    let mut series = Vec::new();
    if n >= 1 {
        series.push((latest_t, latest as f64 / 100.0));
    }
    for i in 1..n {
        let before = match rng.below(10) {
            0 => 48 * HOUR,
            1 => 48 * HOUR + 1,
            2 => 48 * HOUR - 1,
            3 => 168 * HOUR,
            4 => 168 * HOUR + 1,
            5 => 168 * HOUR - 1,
            6 => 0, // same time as the latest
            _ => rng.between(1, 240) * HOUR,
        };
        // The first earlier value is the baseline `b`; later ones are at or above it.
        let c = if i == 1 { b } else { b + rng.between(0, 60) };
        let mg_dl = match rng.below(40) {
            0 => 0.0,
            1 => -1.0,
            2 => c as f64 / 100.0 + 0.005, // a half-hundredth: read to 0.01 on both sides
            _ => c as f64 / 100.0,
        };
        series.push((latest_t - before, mg_dl));
    }
    for i in (1..series.len()).rev() {
        series.swap(i, rng.below(i as u64 + 1) as usize);
    }
    series
}

fn instant(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).expect("test instants are in range")
}

fn parts(parts: &[(&str, u8)]) -> Value {
    parts.iter().map(|(n, p)| json!([n, p])).collect()
}

fn reading(r: Option<kdigo::Reading>) -> Value {
    r.map_or(Value::Null, |r| json!([r.time.timestamp(), r.mg_dl]))
}

/// The case as `models/baselines.py --eval` reads it.
fn input(c: &Case) -> Value {
    let v = &c.vitals;
    json!({
        "news2": {
            "vitals": {
                "respiratory_rate": v.respiratory_rate,
                "spo2": v.spo2,
                "on_oxygen": v.on_oxygen,
                "systolic_bp": v.systolic_bp,
                "heart_rate": v.heart_rate,
                "alert": v.alert,
                "temperature": v.temperature,
            },
            "scale": v.spo2_scale.number(),
        },
        "qsofa": {
            "respiratory_rate": v.respiratory_rate,
            "systolic_bp": v.systolic_bp,
            "alert": v.alert,
        },
        "sirs": {
            "temperature": v.temperature,
            "heart_rate": v.heart_rate,
            "respiratory_rate": v.respiratory_rate,
            "paco2": c.paco2,
            "wbc": c.wbc,
            "bands": c.bands,
        },
        "kdigo": { "creatinine": c.creatinine, "now": NOW, "on_rrt": c.on_rrt },
    })
}

/// Rust's results, in the shape `baselines.py` prints.
fn rust(c: &Case) -> Value {
    let n = news2::score(&c.vitals);
    let q = qsofa::score(&qsofa::Inputs::from(&c.vitals));
    let s = sirs::score(&sirs::Inputs {
        paco2: c.paco2,
        wbc: c.wbc,
        bands: c.bands,
        ..sirs::Inputs::from(&c.vitals)
    });
    let series: Vec<_> = c.creatinine.iter().map(|&(t, v)| (instant(t), v)).collect();
    let k = kdigo::stage(&series, instant(NOW), c.on_rrt);
    json!({
        "news2": {
            "total": n.total,
            "parts": parts(&n.parts),
            "missing": n.missing,
            "band": n.band.as_str(),
            "scale": n.scale.number(),
        },
        "qsofa": {
            "total": q.total,
            "parts": parts(&q.parts),
            "missing": q.missing,
            "positive": q.positive,
        },
        "sirs": {
            "total": s.total,
            "parts": parts(&s.parts),
            "missing": s.missing,
            "positive": s.positive,
        },
        "kdigo": {
            "stage": k.stage,
            "criteria": k.criteria.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            "not_staged": k.not_staged.map(|n| n.as_str()),
            "latest": reading(k.latest),
            "baseline": reading(k.baseline),
            "ratio": k.ratio,
            "rise_48h": k.rise_48h,
        },
    })
}

/// Equal as JSON, except that numbers compare by value (Python prints `1.0` where Rust may
/// print `1`) and non-integers may differ in the last bit from JSON parsing.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => {
                let (x, y) = (
                    x.as_f64().unwrap_or(f64::NAN),
                    y.as_f64().unwrap_or(f64::NAN),
                );
                (x - y).abs() <= 1e-12 * x.abs().max(1.0)
            }
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn rust_and_python_baselines_agree_on_every_case() {
    let mut rng = Lcg(0x00be_d51d_e000_2026);
    let cases: Vec<Case> = (0..CASES).map(|_| case(&mut rng)).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cases.json");
    let inputs: Vec<Value> = cases.iter().map(input).collect();
    std::fs::write(&path, json!({ "cases": inputs }).to_string()).unwrap();

    let python = common::repo().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run .ci/setup",
        python.display()
    );
    let out = Command::new(&python)
        .arg(common::repo().join("models/baselines.py"))
        .arg("--eval")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "baselines.py --eval failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let python: Value = serde_json::from_slice(&out.stdout).unwrap();
    let python = python["results"].as_array().unwrap();
    assert_eq!(python.len(), CASES);

    let mut mismatches = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, (c, py)) in cases.iter().zip(python).enumerate() {
        let rs = rust(c);
        for score in ["news2", "qsofa", "sirs", "kdigo"] {
            if !same(&rs[score], &py[score]) {
                mismatches.push(format!(
                    "case {i} {score}\n  input:  {}\n  rust:   {}\n  python: {}",
                    input(c)[score],
                    rs[score],
                    py[score]
                ));
            }
        }
        for outcome in outcomes(c, &rs) {
            *seen.entry(outcome).or_default() += 1;
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} scores differ; first ones:\n{}",
        mismatches.len(),
        4 * CASES,
        mismatches[..mismatches.len().min(10)].join("\n")
    );

    // The grid must keep reaching every edge, or a moved threshold could go unnoticed.
    let mut want: Vec<String> = ["low", "low-medium", "medium", "high"]
        .iter()
        .flat_map(|b| [format!("news2 scale 1 {b}"), format!("news2 scale 2 {b}")])
        .collect();
    want.extend((0..=3).map(|p| format!("news2 scale 2 on oxygen SpO2 points {p}")));
    want.extend((0..=3).map(|t| format!("qsofa {t}")));
    want.extend((0..=4).map(|t| format!("sirs {t}")));
    want.extend((0..=3).map(|s| format!("kdigo stage {s}")));
    want.extend(
        [
            "rise ≥ 0.3 mg/dL within 48 h",
            "≥ 1.5 × baseline",
            "≥ 2.0 × baseline",
            "≥ 3.0 × baseline",
            "≥ 4.0 mg/dL with an acute rise",
            "renal replacement therapy",
            "fewer than two creatinine measurements",
            "no creatinine within 7 days before the latest",
        ]
        .map(|w| format!("kdigo {w}")),
    );
    for w in &want {
        let n = seen.get(w).copied().unwrap_or(0);
        assert!(n >= 5, "only {n} cases reach `{w}`: {seen:#?}");
    }
}

/// Labels for the coverage check: which band, total, stage and criterion each case reached.
fn outcomes(c: &Case, rs: &Value) -> Vec<String> {
    let n = &rs["news2"];
    let scale = n["scale"].as_u64().unwrap_or(0);
    let mut out = vec![
        format!("news2 scale {scale} {}", n["band"].as_str().unwrap_or("")),
        format!("qsofa {}", rs["qsofa"]["total"]),
        format!("sirs {}", rs["sirs"]["total"]),
        format!("kdigo stage {}", rs["kdigo"]["stage"]),
    ];
    if scale == 2 && c.vitals.on_oxygen == Some(true) {
        if let Some(p) = n["parts"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p[0] == "SpO2"))
        {
            out.push(format!("news2 scale 2 on oxygen SpO2 points {}", p[1]));
        }
    }
    let k = &rs["kdigo"];
    for w in k["criteria"].as_array().into_iter().flatten() {
        out.push(format!("kdigo {}", w.as_str().unwrap_or("")));
    }
    if let Some(w) = k["not_staged"].as_str() {
        out.push(format!("kdigo {w}"));
    }
    out
}
