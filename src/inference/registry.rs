//! Every model under `models/<name>/<version>/`, verified and loaded at start-up.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::device::select_device;
use super::handle::ModelHandle;
use super::manifest::InputKind;
use super::manifest::{Manifest, ModelStatus};
use super::remote::RemoteModel;
use super::worker::{LocalWorker, WorkerSpec};
use super::InferenceSettings;
use super::Lifecycle;
use super::LoadError;
use crate::features::tokens::Vocab;
use crate::features::{FeatureSpec, Normalisation};
use crate::metrics::ModelMetrics;

/// A model ready to score.
pub struct LoadedModel {
    pub manifest: Manifest,
    pub features: FeatureSpec,
    pub normalisation: Normalisation,
    pub handle: ModelHandle,
    /// `MODEL_CARD.md` beside the manifest, served at `/models/{name}/{version}/model-card`.
    pub model_card: PathBuf,
    /// The vocabulary of a token-input model (a foundation-model head); `None`: a grid model.
    pub vocab: Option<Arc<Vocab>>,
}

/// Loaded models by `(name, version)`.
#[derive(Default)]
pub struct ModelRegistry {
    models: BTreeMap<(String, String), Arc<LoadedModel>>,
}

impl ModelRegistry {
    /// Finds every `manifest.toml` two levels under `dir`, verifies and loads each model that
    /// is not retired, in the status its manifest names. Any failure stops start-up with a
    /// message naming the model.
    pub fn load(dir: &Path, settings: &InferenceSettings) -> Result<Self, LoadError> {
        Self::load_governed(dir, settings, &Lifecycle::default())
    }

    /// [`Self::load`] with each version in the status `lifecycle` gives it (governance
    /// decisions first; see [`Lifecycle`]).
    pub fn load_governed(
        dir: &Path,
        settings: &InferenceSettings,
        lifecycle: &Lifecycle,
    ) -> Result<Self, LoadError> {
        if settings.threads > 0 {
            tch::set_num_threads(settings.threads as i32);
        }
        let mut models = BTreeMap::new();
        for manifest_path in find_manifests(dir)? {
            let mut manifest = Manifest::load(&manifest_path)?;
            manifest.status = lifecycle.status_of(&manifest);
            if manifest.status == ModelStatus::Retired {
                continue;
            }
            let key = (manifest.name.clone(), manifest.version.clone());
            if models.contains_key(&key) {
                return Err(LoadError::Duplicate {
                    name: key.0,
                    version: key.1,
                });
            }
            let base = manifest_path.parent().unwrap_or(Path::new("."));
            super::signature::check_trusted(
                &manifest_path,
                &base.join(&manifest.features),
                &settings.trusted_keys,
                (&key.0, &key.1),
            )?;
            let model = load_one(&manifest_path, manifest, settings)?;
            tracing::info!(
                model = %key.0,
                version = %key.1,
                device = %model.handle.device(),
                "model loaded and warmed up"
            );
            models.insert(key, Arc::new(model));
        }
        Ok(Self { models })
    }

    /// The model `name` at `version`.
    pub fn get(&self, name: &str, version: &str) -> Option<Arc<LoadedModel>> {
        self.models
            .get(&(name.to_owned(), version.to_owned()))
            .cloned()
    }

    /// The version of `name` that answers when no version is named: the highest active one
    /// (compared as dotted numbers), else the highest shadow one.
    pub fn default_version(&self, name: &str) -> Option<Arc<LoadedModel>> {
        let versions = self.versions(name);
        let pick = |status: ModelStatus| {
            versions
                .iter()
                .filter(|m| m.manifest.status == status)
                .max_by_key(|m| version_key(&m.manifest.version))
                .cloned()
        };
        pick(ModelStatus::Active).or_else(|| pick(ModelStatus::Shadow))
    }

    /// Every loaded version of `name`.
    pub fn versions(&self, name: &str) -> Vec<Arc<LoadedModel>> {
        self.models
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// Checks every remote model's server (metadata, input shape). Local models were checked
    /// by their warm-up pass while loading.
    pub async fn check_remotes(&self) -> Result<(), LoadError> {
        for model in self.models.values() {
            let m = &model.manifest;
            model
                .handle
                .check_remote(&m.input.shape)
                .await
                .map_err(|message| LoadError::Remote {
                    name: m.name.clone(),
                    version: m.version.clone(),
                    message,
                })?;
        }
        Ok(())
    }

    /// Whether every model can take jobs: what readiness reports.
    pub fn all_alive(&self) -> bool {
        self.models.values().all(|m| m.handle.is_alive())
    }

    /// All loaded models.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<LoadedModel>> {
        self.models.values()
    }
}

/// `1.10.0` sorts after `1.9.0`; non-numeric parts sort as 0.
fn version_key(version: &str) -> Vec<u64> {
    version
        .split(['.', '-'])
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

fn find_manifests(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let read = |p: &Path| {
        std::fs::read_dir(p).map_err(|source| LoadError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    let mut found = Vec::new();
    for model_dir in read(dir)?.flatten().filter(|e| e.path().is_dir()) {
        for version_dir in read(&model_dir.path())?
            .flatten()
            .filter(|e| e.path().is_dir())
        {
            let manifest = version_dir.path().join("manifest.toml");
            if manifest.is_file() {
                found.push(manifest);
            }
        }
    }
    found.sort();
    Ok(found)
}

fn load_one(
    manifest_path: &Path,
    manifest: Manifest,
    settings: &InferenceSettings,
) -> Result<LoadedModel, LoadError> {
    let serving = settings.for_model(&manifest.name);
    let base = manifest_path.parent().unwrap_or(Path::new("."));
    let (name, version) = (manifest.name.clone(), manifest.version.clone());
    let incompatible = |message: String| LoadError::Incompatible {
        name: name.clone(),
        version: version.clone(),
        message,
    };
    let model_path = base.join(&manifest.file);
    // A remote model's file may live only on the remote server; when it is here too, it
    // must still be the file the manifest names.
    if manifest.remote.is_none() || model_path.exists() {
        verify_sha256(&name, &version, &model_path, &manifest.sha256)?;
    }
    let features =
        FeatureSpec::load(&base.join(&manifest.features)).map_err(|e| LoadError::Features {
            name: name.clone(),
            version: version.clone(),
            message: e.to_string(),
        })?;
    let vocab = match manifest.input.kind {
        InputKind::Grid => {
            let expected_shape = vec![features.steps(), features.channels()];
            if manifest.input.shape != expected_shape {
                return Err(incompatible(format!(
                    "input.shape {:?} does not match the feature spec ({} steps × {} channels)",
                    manifest.input.shape,
                    features.steps(),
                    features.channels()
                )));
            }
            let n = features.features.len();
            if manifest.input.mean.len() != n || manifest.input.std.len() != n {
                return Err(incompatible(format!(
                    "input.mean/std need {n} values, one per feature"
                )));
            }
            None
        }
        InputKind::Tokens => Some(Arc::new(load_vocab(base, &manifest, &incompatible)?)),
    };
    let v = &manifest.validity;
    if let Some(unknown) = v
        .required
        .iter()
        .chain(v.range.keys())
        .find(|f| features.index_of(f).is_none())
    {
        return Err(incompatible(format!(
            "validity names `{unknown}`, which is not a feature of the spec"
        )));
    }
    if manifest
        .input
        .std
        .iter()
        .any(|s| !(s.is_finite() && *s > 0.0))
    {
        return Err(incompatible("input.std values must be positive".into()));
    }
    let sample_shape: Vec<i64> = manifest.input.shape.iter().map(|&d| d as i64).collect();
    let per_sample = manifest.input.shape.iter().product();
    let attribute = manifest.explanation == super::ExplanationMethod::Attribute;
    let metrics = Arc::new(ModelMetrics::default());
    let handle = match &manifest.remote {
        Some(remote) => {
            let bearer = remote
                .bearer_token_env
                .as_ref()
                .and_then(|var| std::env::var(var).ok());
            let client = RemoteModel::new(
                &remote.url,
                remote.model.as_deref().unwrap_or(&name),
                remote.version.as_deref(),
                bearer,
                remote.timeout,
                serving.queue_capacity,
                sample_shape,
            )
            .map_err(|message| LoadError::Remote {
                name: name.clone(),
                version: version.clone(),
                message,
            })?;
            ModelHandle::remote(client, per_sample, metrics)
        }
        None => {
            let worker = LocalWorker::spawn(
                WorkerSpec {
                    name: name.clone(),
                    version: version.clone(),
                    path: model_path,
                    device: select_device(serving.device, &manifest.name),
                    sample_shape,
                    queue_capacity: serving.queue_capacity,
                    max_batch: serving.max_batch,
                    max_wait: serving.max_wait,
                    attribute,
                    background: manifest.status == ModelStatus::Shadow,
                    intra_op_threads: settings.threads,
                },
                metrics.clone(),
            )?;
            ModelHandle::local(worker, per_sample, attribute, metrics)
        }
    };
    Ok(LoadedModel {
        normalisation: Normalisation {
            mean: manifest.input.mean.clone(),
            std: manifest.input.std.clone(),
        },
        model_card: base.join("MODEL_CARD.md"),
        features,
        handle,
        manifest,
        vocab,
    })
}

/// A token model's vocabulary: the file its manifest names, with that sha256, holding as many
/// tokens per input as the model's input shape.
fn load_vocab(
    base: &Path,
    manifest: &Manifest,
    incompatible: &dyn Fn(String) -> LoadError,
) -> Result<Vocab, LoadError> {
    let (Some(file), Some(expected)) = (&manifest.input.vocab, &manifest.input.vocab_sha256) else {
        return Err(incompatible("a token input names its vocab".into()));
    };
    let path = base.join(file);
    verify_sha256(&manifest.name, &manifest.version, &path, expected)?;
    let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let vocab = Vocab::parse(&text).map_err(|e| incompatible(format!("vocab: {e}")))?;
    if manifest.input.shape.first() != Some(&vocab.context()) {
        return Err(incompatible(format!(
            "input.shape {:?} does not hold the vocabulary's context of {} tokens",
            manifest.input.shape,
            vocab.context()
        )));
    }
    if i64::try_from(vocab.len()).map_or(true, |n| n > 1 << 24) {
        return Err(incompatible(
            "a vocabulary beyond 2^24 tokens cannot be carried exactly in float32".into(),
        ));
    }
    Ok(vocab)
}

/// The file a manifest names must be the one it hashed: the model of `name` `version` fails
/// to load otherwise, naming the file and both digests.
pub(super) fn verify_sha256(
    name: &str,
    version: &str,
    path: &Path,
    expected: &str,
) -> Result<(), LoadError> {
    let actual = sha256_file(path)?;
    if actual.eq_ignore_ascii_case(expected.trim()) {
        Ok(())
    } else {
        Err(LoadError::Sha256Mismatch {
            name: name.to_owned(),
            version: version.to_owned(),
            path: path.display().to_string(),
            expected: expected.to_owned(),
            actual,
        })
    }
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, LoadError> {
    let mut file = std::fs::File::open(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}
