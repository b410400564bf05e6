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
    /// Held-out metrics measured by the training script.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

/// Input tensor per sample.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// `[steps, channels]`.
    pub shape: Vec<usize>,
    pub dtype: String,
    /// Per-feature normalisation, in `features.toml` order.
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
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
        if manifest.output.shape != [1] {
            return Err(LoadError::Manifest {
                path: path.display().to_string(),
                message: "output.shape must be [1] (one probability per sample)".into(),
            });
        }
        Ok(manifest)
    }
}
