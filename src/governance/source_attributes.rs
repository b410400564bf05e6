//! The model card a regulator and a governance committee expect: the source attributes of a
//! predictive decision support intervention (ONC HTI-1, 45 CFR 170.315(b)(11)(iv)) in their
//! groups — details and output, purpose, cautioned use, development and inputs, fairness
//! process, external validation, quantitative performance, ongoing maintenance — as JSON and
//! Markdown. What only the developer can say comes from `models/<name>/source_attributes.toml`;
//! everything measured comes from the version's `evaluation.json`, its cross-generator
//! evaluations (`crossgen/*/evaluation.json`) and this site's stored shadow evaluation and
//! decisions. A missing source is said, never filled in.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::features::FeatureSpec;
use crate::inference::Manifest;
use crate::store::{StoredDecision, StoredEvaluation};

/// What the model's developer wrote (`source_attributes.toml`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeveloperText {
    pub developer: String,
    pub developer_contact: String,
    pub funding: String,
    /// prediction | classification | recommendation | evaluation | analysis | other.
    pub output_type: String,
    pub intended_use: String,
    pub intended_population: String,
    pub intended_users: String,
    /// informs | augments | replaces clinical management, with how.
    pub decision_role: String,
    pub out_of_scope: Vec<String>,
    pub known_risks: Vec<String>,
    pub inclusion_exclusion: String,
    pub relevance_to_setting: String,
    pub fairness_approach: String,
    pub bias_management: String,
    pub external_validation_party: String,
    pub external_validation_process: String,
    pub update_schedule: String,
    pub outcome_evaluations: String,
}

impl DeveloperText {
    /// Reads `models/<name>/source_attributes.toml`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Everything the source attributes are made from.
pub struct Sources<'a> {
    pub manifest: &'a Manifest,
    pub features: &'a FeatureSpec,
    /// `None`: the developer wrote none (each of its attributes says so).
    pub developer: Option<&'a DeveloperText>,
    /// The version's `evaluation.json`.
    pub evaluation: Option<&'a Value>,
    /// `crossgen/<direction>/evaluation.json` of the version.
    pub external: &'a [Value],
    /// This site's newest stored evaluation of the version.
    pub local: Option<&'a StoredEvaluation>,
    /// This site's decisions about the version, oldest first.
    pub decisions: &'a [StoredDecision],
    /// Who to contact at this site (`[governance] contact`).
    pub site_contact: Option<&'a str>,
}

/// The HTI-1 demographic and health-status variables a source attribute must say whether the
/// model uses, with the feature concepts that would be one.
const HTI1_VARIABLES: &[(&str, &[&str])] = &[
    ("race", &["race"]),
    ("ethnicity", &["ethnicity"]),
    ("language", &["language"]),
    ("sexual orientation", &["sexual_orientation"]),
    ("gender identity", &["gender_identity"]),
    ("sex", &["sex"]),
    ("date of birth (age)", &["age", "birth_date"]),
    ("social determinants of health", &["sdoh"]),
    (
        "health status assessments",
        &["consciousness", "gcs", "functional_status"],
    ),
];

const NOT_PROVIDED: &str = "not provided by the model's developer";

/// The source attributes of one model version, grouped as HTI-1 groups them.
pub fn source_attributes(s: &Sources<'_>) -> Value {
    let m = s.manifest;
    let dev = |f: fn(&DeveloperText) -> &String| -> Value {
        s.developer
            .map_or(NOT_PROVIDED.into(), |d| f(d).clone().into())
    };
    let dev_list = |f: fn(&DeveloperText) -> &Vec<String>| -> Value {
        s.developer.map_or(json!([NOT_PROVIDED]), |d| json!(f(d)))
    };
    let mut risks = dev_list(|d| &d.known_risks);
    if let (Some(list), Some(e)) = (risks.as_array_mut(), s.evaluation) {
        for t in e["targets"].as_array().into_iter().flatten() {
            if t["met"] == false {
                list.push(
                    format!(
                        "target missed: {} (measured {})",
                        text(&t["target"]),
                        text(&t["value"])
                    )
                    .into(),
                );
            }
        }
    }
    json!({
        "model": m.name,
        "version": m.version,
        "status": m.status.as_str(),
        "notice": "Trained and evaluated on synthetic data only; not validated on real patients; not for clinical use.",
        "detailsAndOutput": {
            "developer": dev(|d| &d.developer),
            "developerContact": dev(|d| &d.developer_contact),
            "siteContact": s.site_contact.map_or(Value::from("not configured ([governance] contact)"), Value::from),
            "funding": dev(|d| &d.funding),
            "outputDescription": format!("{} (horizon {} h). {}", m.output.meaning, m.output.horizon_hours, m.output.calibration),
            "outputType": dev(|d| &d.output_type),
        },
        "purpose": {
            "intendedUse": dev(|d| &d.intended_use),
            "intendedPopulation": dev(|d| &d.intended_population),
            "intendedUsers": dev(|d| &d.intended_users),
            "decisionRole": dev(|d| &d.decision_role),
        },
        "cautionedOutOfScopeUse": {
            "outOfScope": dev_list(|d| &d.out_of_scope),
            "knownRisksAndLimitations": risks,
        },
        "developmentAndInputs": {
            "trainingData": m.training_data,
            "inclusionExclusion": dev(|d| &d.inclusion_exclusion),
            "inputFeatures": s.features.features.iter().map(|f| json!({"name": f.name, "display": f.display, "unit": f.unit, "loinc": f.loinc.join(", ")})).collect::<Vec<_>>(),
            "demographicAndStatusVariables": variables(s.features),
            "demographicRepresentativeness": representativeness(s.evaluation),
            "relevanceToDeployedSetting": dev(|d| &d.relevance_to_setting),
        },
        "fairnessProcess": {
            "approach": dev(|d| &d.fairness_approach),
            "biasManagement": dev(|d| &d.bias_management),
        },
        "externalValidation": {
            "dataSources": s.external.iter().map(|e| format!("trained on the `{}` generator, tested on `{}` ({} patients)", text(&e["generators"]["train"]), text(&e["generators"]["test"]), text(&e["cohort"]["n"]))).collect::<Vec<_>>(),
            "party": dev(|d| &d.external_validation_party),
            "process": dev(|d| &d.external_validation_process),
            "demographicRepresentativeness": s.external.iter().map(|e| representativeness(Some(e))).collect::<Vec<_>>(),
        },
        "quantitativePerformance": {
            "validitySameSource": s.evaluation.map_or(Value::from("no evaluation.json beside the manifest"), validity),
            "fairnessSameSource": s.evaluation.map_or(json!([]), fairness),
            "validityExternal": s.external.iter().map(validity).collect::<Vec<_>>(),
            "fairnessExternal": s.external.iter().map(fairness).collect::<Vec<_>>(),
            "outcomeEvaluations": dev(|d| &d.outcome_evaluations),
        },
        "ongoingMaintenance": {
            "updateSchedule": dev(|d| &d.update_schedule),
            "validityLocal": s.local.map_or(Value::from("not evaluated at this site yet (bedside evaluate)"), |l| json!({
                "evaluationId": l.id,
                "at": l.at,
                "passed": l.passed,
                "evaluation": l.evaluation,
            })),
            "fairnessLocal": "not measured: the gateway stores no patient demographics with its predictions",
            "outcomeEvaluationsLocal": s.local.map_or(Value::from("none"), |l| l.evaluation["outcomes"].clone()),
            "decisions": s.decisions.iter().map(|d| json!({
                "id": d.id, "at": d.at, "status": d.status, "previous": d.previous,
                "by": d.actor, "via": d.via, "reason": d.reason, "evaluationId": d.evaluation_id,
            })).collect::<Vec<_>>(),
            "recalibratedFrom": m.recalibrated_from,
        },
    })
}

/// A JSON value as plain text (strings without their quotes).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "n/a".into(),
        other => other.to_string(),
    }
}

/// Whether each HTI-1 variable is an input, from the feature spec.
fn variables(features: &FeatureSpec) -> Value {
    HTI1_VARIABLES
        .iter()
        .map(|(variable, concepts)| {
            let used: Vec<&str> = features
                .features
                .iter()
                .filter(|f| {
                    concepts.iter().any(|c| {
                        f.name.contains(c) || f.concept.as_deref().is_some_and(|k| k.contains(c))
                    })
                })
                .map(|f| f.display.as_str())
                .collect();
            json!({"variable": variable, "used": !used.is_empty(), "asFeatures": used.join(", ")})
        })
        .collect()
}

/// Patients and requests per subgroup level of an evaluation.
fn representativeness(evaluation: Option<&Value>) -> Value {
    let Some(e) = evaluation else {
        return "no evaluation".into();
    };
    let levels: Vec<Value> = e["subgroups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| json!({"group": g["group"], "level": g["level"], "requests": g["n"], "positives": g["positives"]}))
        .collect();
    let cohort = &e["cohort"];
    let patients = if cohort["test_patients"].is_null() {
        &cohort["n"]
    } else {
        &cohort["test_patients"]
    };
    json!({"data": e["generators"], "patients": patients, "requests": cohort["test_samples"], "levels": levels})
}

/// Discrimination, calibration and abstention of an evaluation.
fn validity(e: &Value) -> Value {
    let cal = &e["calibration"]["model"];
    json!({
        "data": e["generators"],
        "requests": e["cohort"]["test_samples"],
        "prevalence": e["cohort"]["prevalence"],
        "auroc": e["auroc"], "aurocCi95": e["auroc_ci"],
        "auprc": e["auprc"], "auprcCi95": e["auprc_ci"],
        "calibrationSlope": cal["slope"],
        "observedExpectedAlertingBand": cal["oe_alerting_band"]["o_e"],
        "brier": cal["brier"],
        "abstentionRate": e["abstention"]["rate"],
    })
}

/// Per-subgroup results of an evaluation.
fn fairness(e: &Value) -> Value {
    let rows: Vec<Value> = e["subgroups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| json!({"group": g["group"], "level": g["level"], "n": g["n"], "positives": g["positives"], "auroc": g["auroc"], "sensitivity": g["sensitivity"], "ppv": g["ppv"], "abstentionRate": g["abstention_rate"]}))
        .collect();
    json!({"data": e["generators"], "subgroups": rows})
}

/// A Markdown section: its title, the JSON group it shows, and `(field, label)` pairs.
type Section = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// The same attributes as Markdown, for filing and for reading.
pub fn markdown(attributes: &Value) -> String {
    let a = attributes;
    let mut out = format!(
        "# Source attributes: `{}` v{} ({})\n\n> **{}**\n\nPredictive decision support intervention source attributes (ONC HTI-1, 45 CFR 170.315(b)(11)(iv)), generated by the gateway from the model's manifest, its developer's `source_attributes.toml`, its measured evaluations and this site's records. JSON: the same URL with `Accept: application/json`.\n",
        text(&a["model"]),
        text(&a["version"]),
        text(&a["status"]),
        text(&a["notice"])
    );
    let sections: [Section; 8] = [
        (
            "Details and output",
            "detailsAndOutput",
            &[
                ("developer", "Developer"),
                ("developerContact", "Developer contact"),
                ("siteContact", "Site contact"),
                ("funding", "Funding"),
                ("outputDescription", "Output"),
                ("outputType", "Output type"),
            ],
        ),
        (
            "Purpose",
            "purpose",
            &[
                ("intendedUse", "Intended use"),
                ("intendedPopulation", "Intended population"),
                ("intendedUsers", "Intended users"),
                ("decisionRole", "Decision-making role"),
            ],
        ),
        (
            "Cautioned out-of-scope use",
            "cautionedOutOfScopeUse",
            &[
                ("outOfScope", "Out of scope"),
                ("knownRisksAndLimitations", "Known risks and limitations"),
            ],
        ),
        (
            "Development and input features",
            "developmentAndInputs",
            &[
                ("trainingData", "Training data"),
                ("inclusionExclusion", "Inclusion and exclusion"),
                ("inputFeatures", "Input features"),
                (
                    "demographicAndStatusVariables",
                    "Demographic and health-status variables",
                ),
                (
                    "demographicRepresentativeness",
                    "Demographic representativeness",
                ),
                (
                    "relevanceToDeployedSetting",
                    "Relevance to the deployed setting",
                ),
            ],
        ),
        (
            "Process to ensure fairness",
            "fairnessProcess",
            &[
                ("approach", "Approach"),
                ("biasManagement", "Managing bias"),
            ],
        ),
        (
            "External validation",
            "externalValidation",
            &[
                ("dataSources", "Data sources"),
                ("party", "Party"),
                ("process", "Process"),
                (
                    "demographicRepresentativeness",
                    "Demographic representativeness",
                ),
            ],
        ),
        (
            "Quantitative measures of performance",
            "quantitativePerformance",
            &[
                ("validitySameSource", "Validity, same source"),
                ("fairnessSameSource", "Fairness, same source"),
                ("validityExternal", "Validity, external"),
                ("fairnessExternal", "Fairness, external"),
                ("outcomeEvaluations", "Evaluations of outcomes"),
            ],
        ),
        (
            "Ongoing maintenance",
            "ongoingMaintenance",
            &[
                ("updateSchedule", "Update and validation schedule"),
                ("validityLocal", "Validity in local data"),
                ("fairnessLocal", "Fairness in local data"),
                ("outcomeEvaluationsLocal", "Outcomes in local data"),
                ("decisions", "Decisions at this site"),
            ],
        ),
    ];
    for (title, key, fields) in sections {
        out.push_str(&format!("\n## {title}\n"));
        for (field, label) in fields {
            out.push_str(&format!("\n**{label}.** "));
            out.push_str(&markdown_value(&a[key][field]));
            out.push('\n');
        }
    }
    out
}

/// A scalar as text, fractions to 3 decimals.
fn scalar(v: &Value) -> String {
    match v {
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.fract() != 0.0)
            .map_or(n.to_string(), |f| format!("{f:.3}")),
        other => text(other),
    }
}

/// An object whose values are all scalars (a table row).
fn is_flat_object(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|o| o.values().all(|x| !x.is_object() && !x.is_array()))
}

/// Rows of flat objects as a Markdown table (columns of the first row).
fn table(rows: &[Value]) -> String {
    let columns: Vec<&String> = rows[0]
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    let cell = |v: &Value| scalar(v).replace('|', "/");
    let mut out = format!(
        "\n\n| {} |\n|{}\n",
        columns
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(columns.len())
    );
    for row in rows {
        let cells: Vec<String> = columns.iter().map(|c| cell(&row[c.as_str()])).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}

/// A value as Markdown: text as text, lists as bullets, tables of objects as tables, other
/// structures as indented JSON.
fn markdown_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "n/a".into(),
        Value::Array(items) if !items.is_empty() && items.iter().all(is_flat_object) => {
            table(items)
        }
        Value::Object(o) => {
            let mut out = String::new();
            for (key, value) in o {
                match value {
                    Value::Array(rows) if !rows.is_empty() && rows.iter().all(is_flat_object) => {
                        out.push_str(&format!("\n\n{key}:{}", table(rows)));
                    }
                    Value::Array(items)
                        if items.iter().all(|i| !i.is_object() && !i.is_array()) =>
                    {
                        let parts: Vec<String> = items.iter().map(scalar).collect();
                        out.push_str(&format!("\n- {key}: {}", parts.join(" – ")));
                    }
                    Value::Object(_) | Value::Array(_) => {
                        out.push_str(&format!("\n- {key}: {}", value));
                    }
                    other => out.push_str(&format!("\n- {key}: {}", scalar(other))),
                }
            }
            out
        }
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => items
            .iter()
            .enumerate()
            .map(|(i, item)| format!("\n\n*{}.*{}", i + 1, markdown_value(item)))
            .collect(),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            if items.is_empty() {
                return "none".into();
            }
            let mut out = String::from("\n");
            for i in items {
                out.push_str(&format!("\n- {}", text(i)));
            }
            out
        }
        other => format!(
            "\n\n```json\n{}\n```",
            serde_json::to_string_pretty(other).unwrap_or_default()
        ),
    }
}

/// The source attributes of a loaded model version, read from its folder and the store
/// (`None` for a store that could not be read: said in the attributes, not an error).
pub fn assemble(
    model: &crate::inference::LoadedModel,
    local: Option<&StoredEvaluation>,
    decisions: &[StoredDecision],
    site_contact: Option<&str>,
) -> Result<Value, String> {
    let folder = model.model_card.parent().unwrap_or(Path::new("."));
    let developer_path = folder
        .parent()
        .unwrap_or(Path::new("."))
        .join("source_attributes.toml");
    let developer = if developer_path.is_file() {
        Some(DeveloperText::load(&developer_path)?)
    } else {
        None
    };
    let read_json = |path: &Path| -> Option<Value> {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    };
    let evaluation = read_json(&folder.join("evaluation.json"));
    let mut directions: Vec<_> = std::fs::read_dir(folder.join("crossgen"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("evaluation.json"))
        .collect();
    directions.sort();
    let external: Vec<Value> = directions.iter().filter_map(|p| read_json(p)).collect();
    Ok(source_attributes(&Sources {
        manifest: &model.manifest,
        features: &model.features,
        developer: developer.as_ref(),
        evaluation: evaluation.as_ref(),
        external: &external,
        local,
        decisions,
        site_contact,
    }))
}
