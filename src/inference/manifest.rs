//! `manifest.toml`: what a model file is, what it takes and what its output means.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::LoadError;

/// Lifecycle state. Only `active` models produce visible cards; `shadow` models score and
/// show nothing; `retired` ones are not loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelStatus {
    Active,
    Shadow,
    Retired,
}

impl ModelStatus {
    /// The status's name in manifests and governance records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Shadow => "shadow",
            Self::Retired => "retired",
        }
    }

    /// The status named `text`.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Active, Self::Shadow, Self::Retired]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A model's manifest, as written beside `model.pt`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub status: ModelStatus,
    /// TorchScript file, relative to the manifest.
    pub file: PathBuf,
    /// Hex sha256 of `file`; checked before loading.
    pub sha256: String,
    /// Feature spec (`features.toml`), relative to the manifest.
    pub features: PathBuf,
    pub description: String,
    /// Where the training data came from; shown on cards and the model card.
    pub training_data: String,
    pub input: InputSpec,
    pub output: OutputSpec,
    /// Serve this model from an Open Inference Protocol server instead of loading `file`.
    #[serde(default)]
    pub remote: Option<RemoteSpec>,
    /// Held-out metrics measured by the training script.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Where the model's answers can be trusted; outside it services abstain.
    #[serde(default)]
    pub validity: Validity,
    /// How a score is explained: by the model's own one-pass `attribute` method, or by
    /// re-scoring the input with each measurement left out (any model, local or remote).
    #[serde(default)]
    pub explanation: ExplanationMethod,
    /// The training architecture (`gru`, `summary`); informational, for the model card and
    /// the admin views.
    #[serde(default)]
    pub arch: Option<String>,
    /// The version this one was recalibrated from (`models.recalibrate`), if any.
    #[serde(default)]
    pub recalibrated_from: Option<String>,
    /// Thresholds the training script chose for an alert budget. Suggestions only: the
    /// service definition's `[thresholds]` decide what is shown (policy stays in
    /// `cds-services/`), and `bedside check` reports where the two differ.
    #[serde(default)]
    pub suggested_thresholds: Option<SuggestedThresholds>,
    /// How a recalibrated version was fitted (records, outcomes, prevalence); kept for audit.
    #[serde(default)]
    pub recalibration: Option<toml::Table>,
    /// The model this version was adapted from (a foundation-model head: `"foundation 1.0.0"`);
    /// informational, for the model card and the admin views.
    #[serde(default)]
    pub base_model: Option<String>,
}

/// Warning / critical thresholds chosen for an alert budget on the validation split, with the
/// budget and what it gave there.
#[derive(Debug, Clone, Deserialize)]
pub struct SuggestedThresholds {
    pub warning: f64,
    pub critical: f64,
    /// The rest of the table (service, budget, validation figures), kept as written.
    #[serde(flatten)]
    pub details: toml::Table,
}

/// How the gateway finds the observations that raised a score.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExplanationMethod {
    /// One forward pass per recent measurement, each with that measurement left out: works
    /// for every model, costs up to ~100 samples per shown card.
    #[default]
    Occlusion,
    /// The TorchScript module exports `attribute(x) -> [n, steps, channels]`: per-cell
    /// contributions to the logit (gradient × input, or the model's exact decomposition),
    /// computed in one pass with autograd enabled. The gateway sums a measurement's cells.
    Attribute,
}

/// The data a model was trained on, declared by its training script: a patient whose data
/// fall outside it gets no score (and a reason) instead of an extrapolation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validity {
    /// Fewest in-window measurements (all features together) a score needs.
    #[serde(default)]
    pub min_measurements: usize,
    /// Features that need at least one in-window measurement (e.g. creatinine for AKI).
    #[serde(default)]
    pub required: Vec<String>,
    /// Newest measurement older than this many hours: no score.
    #[serde(default)]
    pub max_staleness_hours: Option<f64>,
    /// Per feature, `[low, high]` in its canonical unit: the range seen in training. A value
    /// in the window outside it is out of distribution.
    #[serde(default)]
    pub range: BTreeMap<String, [f64; 2]>,
}

/// What one sample of a model's input holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    /// The feature grid `[steps, 2 × features]` of `features.toml` (normalised values, then
    /// observed masks).
    #[default]
    Grid,
    /// The foundation model's tokens (`features::tokens`): `[context, 2]`, one row per token,
    /// its id (an exact integer in float32) and its hours since the first kept token,
    /// right-padded with zeros. A head adapted from the foundation model reads this.
    Tokens,
}

/// Input tensor per sample.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    #[serde(default)]
    pub kind: InputKind,
    /// `[steps, channels]` (grid) or `[context, 2]` (tokens).
    pub shape: Vec<usize>,
    pub dtype: String,
    /// Per-feature normalisation, in `features.toml` order (grid; empty for tokens).
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// Token input: the vocabulary file, relative to the manifest, and its hex sha256.
    #[serde(default)]
    pub vocab: Option<PathBuf>,
    #[serde(default)]
    pub vocab_sha256: Option<String>,
}

/// Where a remotely served model lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSpec {
    /// Server root, e.g. `http://triton.internal:8000`.
    pub url: String,
    /// Model name on that server (default: this manifest's `name`).
    pub model: Option<String>,
    /// Version on that server (default: the server's choice).
    pub version: Option<String>,
    /// Upper bound of one call, below the hook's own deadline (default 1 s).
    #[serde(default = "default_remote_timeout", with = "humantime_serde")]
    pub timeout: std::time::Duration,
    /// Environment variable holding a bearer token for the server, if it needs one.
    pub bearer_token_env: Option<String>,
}

fn default_remote_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(1)
}

/// Output per sample.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub shape: Vec<usize>,
    /// What the number means, in words clinicians read on the card.
    pub meaning: String,
    pub horizon_hours: u32,
    pub calibration: String,
}

impl Manifest {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let manifest: Self = toml::from_str(&text).map_err(|e| LoadError::Manifest {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        if manifest.input.dtype != "float32" {
            return Err(LoadError::Manifest {
                path: path.display().to_string(),
                message: format!(
                    "input.dtype `{}`: only float32 is supported",
                    manifest.input.dtype
                ),
            });
        }
        if let Some((name, [lo, hi])) = manifest
            .validity
            .range
            .iter()
            .find(|(_, [lo, hi])| !(lo.is_finite() && hi.is_finite() && lo <= hi))
        {
            return Err(LoadError::Manifest {
                path: path.display().to_string(),
                message: format!("validity.range.{name} = [{lo}, {hi}] is not a range"),
            });
        }
        if manifest.input.kind == InputKind::Tokens {
            let problem = if manifest.input.shape.len() != 2 || manifest.input.shape[1] != 2 {
                Some("a token input's shape is [context, 2]")
            } else if manifest.input.vocab.is_none() || manifest.input.vocab_sha256.is_none() {
                Some("a token input names its vocab and vocab_sha256")
            } else if manifest.explanation != ExplanationMethod::Attribute {
                Some("a token model explains itself: explanation = \"attribute\"")
            } else if manifest.remote.is_some() {
                Some("token models are served locally")
            } else {
                None
            };
            if let Some(message) = problem {
                return Err(LoadError::Manifest {
                    path: path.display().to_string(),
                    message: message.into(),
                });
            }
        }
        if manifest.output.shape != [1] {
            return Err(LoadError::Manifest {
                path: path.display().to_string(),
                message: "output.shape must be [1] (one probability per sample)".into(),
            });
        }
        Ok(manifest)
    }
}
