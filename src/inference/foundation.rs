//! The foundation model: a patient-timeline encoder (`models/foundation/<version>/`) that turns
//! a tokenised record into an embedding task heads and developers build on.
//!
//! It is not a task model (no risk, no thresholds): its folder holds `foundation.toml` instead
//! of `manifest.toml`, so the task-model registry never sees it. Like a task model it is
//! sha256-checked (model and vocabulary), warmed up at start-up, and run on its own OS thread
//! that owns the `CModule`; jobs carry a deadline and a full queue fails at once.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use serde::Deserialize;
use tch::{CModule, Device, Kind, Tensor};
use tokio::sync::oneshot;

use super::registry::verify_sha256;
use super::worker::AliveGuard;
use super::{select_device, InferenceError, InferenceSettings, LoadError};
use crate::features::tokens::Vocab;
use crate::features::FeatureSpec;

const QUEUE: usize = 64;

/// `foundation.toml`, as `models/foundation/pretrain.py` writes it.
#[derive(Debug, Clone, Deserialize)]
pub struct FoundationManifest {
    pub name: String,
    pub version: String,
    /// TorchScript file, relative to the manifest.
    pub file: PathBuf,
    pub sha256: String,
    /// `vocab.json`, relative to the manifest.
    pub vocab: PathBuf,
    pub vocab_sha256: String,
    /// The tokeniser's feature spec, relative to the manifest.
    pub features: PathBuf,
    pub embedding_dim: usize,
    pub context: usize,
    pub description: String,
    /// Where the pretraining data came from (synthetic only, so far); shown with every embedding.
    pub training_data: String,
    /// What pretraining measured; passed through to callers as it is.
    #[serde(default)]
    pub pretraining: toml::Table,
}

struct Job {
    ids: Vec<i64>,
    hours: Vec<f32>,
    deadline: Instant,
    reply: oneshot::Sender<Result<Vec<f32>, InferenceError>>,
}

/// A loaded foundation model: manifest, tokeniser inputs and the thread that runs it.
pub struct FoundationModel {
    pub manifest: FoundationManifest,
    pub vocab: Vocab,
    /// The tokeniser's feature spec (which Observations become events).
    pub spec: FeatureSpec,
    tx: SyncSender<Job>,
    alive: Arc<AtomicBool>,
}

impl std::fmt::Debug for FoundationModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FoundationModel")
            .field("version", &self.manifest.version)
            .finish_non_exhaustive()
    }
}

fn manifest_error(path: &Path, message: impl Into<String>) -> LoadError {
    LoadError::Manifest {
        path: path.display().to_string(),
        message: message.into(),
    }
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })
}

impl FoundationModel {
    /// The newest version under `models_dir/foundation/` (by semantic version), if any.
    pub fn find(
        models_dir: &Path,
        settings: &InferenceSettings,
    ) -> Result<Option<Self>, LoadError> {
        let root = models_dir.join("foundation");
        let Ok(entries) = std::fs::read_dir(&root) else {
            return Ok(None);
        };
        let newest = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().join("foundation.toml").is_file())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let parts: Option<Vec<u64>> = name.split('.').map(|p| p.parse().ok()).collect();
                parts.map(|p| (p, e.path()))
            })
            .max();
        match newest {
            Some((_, dir)) => Self::load(&dir.join("foundation.toml"), settings).map(Some),
            None => Ok(None),
        }
    }

    /// Loads, verifies and warms up the model described by `manifest_path`.
    pub fn load(manifest_path: &Path, settings: &InferenceSettings) -> Result<Self, LoadError> {
        let manifest: FoundationManifest = toml::from_str(&read(manifest_path)?)
            .map_err(|e| manifest_error(manifest_path, e.to_string()))?;
        let dir = manifest_path.parent().unwrap_or(Path::new("."));
        // As for task models: the signature covers this manifest (which holds the model's and
        // the vocabulary's sha256, checked below) and the feature spec it names.
        super::signature::check_trusted(
            manifest_path,
            &dir.join(&manifest.features),
            &settings.trusted_keys,
            (&manifest.name, &manifest.version),
        )?;
        let (model_path, vocab_path) = (dir.join(&manifest.file), dir.join(&manifest.vocab));
        verify_sha256(
            &manifest.name,
            &manifest.version,
            &model_path,
            &manifest.sha256,
        )?;
        verify_sha256(
            &manifest.name,
            &manifest.version,
            &vocab_path,
            &manifest.vocab_sha256,
        )?;
        let incompatible = |message: String| LoadError::Incompatible {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            message,
        };
        let vocab = Vocab::parse(&read(&vocab_path)?)
            .map_err(|e| incompatible(format!("vocab.json: {e}")))?;
        if vocab.context() != manifest.context {
            return Err(incompatible(format!(
                "vocab.json context {} ≠ manifest context {}",
                vocab.context(),
                manifest.context
            )));
        }
        let spec =
            FeatureSpec::load(&dir.join(&manifest.features)).map_err(|e| LoadError::Features {
                name: manifest.name.clone(),
                version: manifest.version.clone(),
                message: e.to_string(),
            })?;
        let device = select_device(settings.for_model(&manifest.name).device, &manifest.name);
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let alive = Arc::new(AtomicBool::new(true));
        let guard = AliveGuard(alive.clone());
        let (dim, threads) = (manifest.embedding_dim, settings.threads);
        thread::Builder::new()
            .name("infer-foundation".into())
            .spawn(move || {
                let _alive = guard;
                if let Ok(n) = i32::try_from(threads) {
                    if n > 0 {
                        tch::set_num_threads(n);
                    }
                }
                let _no_grad = tch::no_grad_guard();
                match warm_up(&model_path, device, dim) {
                    Ok(module) => {
                        let _ = ready_tx.send(Ok(()));
                        serve(&module, &rx, device, dim);
                    }
                    Err(message) => {
                        let _ = ready_tx.send(Err(message));
                    }
                }
            })
            .map_err(|e| LoadError::Torch {
                name: manifest.name.clone(),
                version: manifest.version.clone(),
                message: format!("cannot start the inference thread: {e}"),
            })?;
        let torch = |message: String| LoadError::Torch {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            message,
        };
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(message)) => return Err(torch(message)),
            Err(_) => return Err(torch("inference thread exited during load".into())),
        }
        Ok(Self {
            manifest,
            vocab,
            spec,
            tx,
            alive,
        })
    }

    /// The embedding of one tokenised record (`ids` and `hours` of equal length, at most
    /// the vocabulary's context).
    pub async fn embed(
        &self,
        ids: Vec<i64>,
        hours: Vec<f32>,
        deadline: Instant,
    ) -> Result<Vec<f32>, InferenceError> {
        if ids.is_empty() || ids.len() != hours.len() || ids.len() > self.vocab.context() {
            return Err(InferenceError::BadInput {
                expected: self.vocab.context(),
                got: ids.len(),
            });
        }
        let vocab_size = self.vocab.len() as i64;
        if ids.iter().any(|i| *i < 0 || *i >= vocab_size) || hours.iter().any(|h| !h.is_finite()) {
            return Err(InferenceError::Torch(
                "token ids must be in the vocabulary and hours finite".into(),
            ));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Job {
                ids,
                hours,
                deadline,
                reply,
            })
            .map_err(|e| match e {
                TrySendError::Full(_) => InferenceError::Overloaded,
                TrySendError::Disconnected(_) => InferenceError::WorkerGone,
            })?;
        rx.await.map_err(|_| InferenceError::WorkerGone)?
    }

    /// Whether the inference thread still takes jobs.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }
}

fn run(module: &CModule, device: Device, ids: &[i64], hours: &[f32]) -> Result<Vec<f32>, String> {
    let n = ids.len() as i64;
    let x = Tensor::from_slice(ids).view([1, n]).to_device(device);
    let h = Tensor::from_slice(hours).view([1, n]).to_device(device);
    let y = module.forward_ts(&[x, h]).map_err(|e| e.to_string())?;
    let y = y
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .f_view([-1])
        .map_err(|e| e.to_string())?;
    Vec::<f32>::try_from(&y).map_err(|e| e.to_string())
}

fn warm_up(path: &Path, device: Device, dim: usize) -> Result<CModule, String> {
    let mut module = CModule::load_on_device(path, device).map_err(|e| e.to_string())?;
    module.set_eval();
    for n in [1usize, 8] {
        let ids: Vec<i64> = (0..n).map(|i| if i == 0 { 2 } else { 1 }).collect();
        let hours: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let y = run(&module, device, &ids, &hours)
            .map_err(|e| format!("forward on {n} tokens failed: {e}"))?;
        if y.len() != dim {
            return Err(format!(
                "the model returned {} values, the manifest declares embedding_dim {dim}",
                y.len()
            ));
        }
    }
    Ok(module)
}

fn serve(module: &CModule, rx: &Receiver<Job>, device: Device, dim: usize) {
    while let Ok(job) = rx.recv() {
        if Instant::now() >= job.deadline {
            let _ = job.reply.send(Err(InferenceError::DeadlineExceeded));
            continue;
        }
        let result = run(module, device, &job.ids, &job.hours)
            .map_err(InferenceError::Torch)
            .and_then(|y| {
                if y.len() == dim {
                    Ok(y)
                } else {
                    Err(InferenceError::Torch(format!(
                        "embedding has {} values, expected {dim}",
                        y.len()
                    )))
                }
            });
        let _ = job.reply.send(result);
    }
}
